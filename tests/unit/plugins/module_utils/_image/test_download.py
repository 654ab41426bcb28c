# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Downloads and verification against real files and a real loopback HTTP server (127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import os
import signal

import pytest

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import Interrupted
from ansible_collections.nspawn.nixos.plugins.module_utils._core._signals import interruptible
from ansible_collections.nspawn.nixos.plugins.module_utils._image._download import (
    DownloadError, download, expected_from_sums, fetch_text, url_basename,
)

HEX_A = "a" * 64
HEX_B = "0123456789ABCDEF" * 4


def test_download_http_streams_and_hashes(image_server):
    sink = io.BytesIO()
    digest, size = download(image_server.base + "/files/image.tar.gz", sink, 10)
    data = image_server.files["image.tar.gz"]
    assert (digest, size, sink.getvalue()) == (hashlib.sha256(data).hexdigest(), len(data), data)


def test_download_file_url(tmp_path):
    (tmp_path / "img.tar").write_bytes(b"x" * 3000000)  # more than one chunk
    sink = io.BytesIO()
    digest, size = download("file://%s/img.tar" % tmp_path, sink, 10)
    assert size == 3000000 and digest == hashlib.sha256(b"x" * 3000000).hexdigest()


def test_download_cut_mid_stream_is_an_error(image_server):
    sink = io.BytesIO()
    with pytest.raises(DownloadError) as exc:
        download(image_server.base + "/cut/image.tar.gz", sink, 10)
    total = len(image_server.files["image.tar.gz"])
    assert "cut short: received %d of %d bytes" % (total // 2, total) in exc.value.msg


@pytest.mark.parametrize("path, fragment", [
    ("/files/missing.tar.gz", "HTTP Error 404"),
    ("/auth/image.tar.gz", "HTTP Error 401"),
])
def test_download_http_errors(image_server, path, fragment):
    with pytest.raises(DownloadError) as exc:
        download(image_server.base + path, io.BytesIO(), 10)
    assert fragment in exc.value.msg and exc.value.result()["url"] == image_server.base + path


def test_download_refused_connection():
    with pytest.raises(DownloadError) as exc:
        download("http://127.0.0.1:9/x.tar", io.BytesIO(), 5)
    assert "Downloading http://127.0.0.1:9/x.tar failed after 0 bytes" in exc.value.msg


def test_download_missing_file(tmp_path):
    with pytest.raises(DownloadError):
        download("file://%s/none.tar" % tmp_path, io.BytesIO(), 5)


def test_basic_auth_from_url_and_redaction(image_server):
    host = image_server.base.split("://", 1)[1]
    sink = io.BytesIO()
    download("http://deploy:s3cret-token@%s/auth/image.tar.gz" % host, sink, 10)
    assert sink.getvalue() == image_server.files["image.tar.gz"]
    with pytest.raises(DownloadError) as exc:
        download("http://deploy:wrong@%s/auth/image.tar.gz" % host, io.BytesIO(), 10)
    assert "wrong" not in exc.value.msg and "********@" in exc.value.msg


def test_credentials_are_not_forwarded_on_redirect(image_server):
    host = image_server.base.split("://", 1)[1]
    assert fetch_text("http://deploy:s3cret-token@%s/echo-auth/x" % host, 10).startswith("Basic ")
    assert fetch_text("http://deploy:s3cret-token@%s/redirect/echo-auth/x" % host, 10) == "none"


def test_fetch_text_limit(image_server):
    assert fetch_text(image_server.base + "/files/SHA256SUMS", 10).endswith("image.tar.gz\n%s *disk.raw\n" % image_server.sha256("disk.raw"))
    with pytest.raises(DownloadError, match="larger than 100 bytes"):
        fetch_text(image_server.base + "/files/image.tar.gz", 10, limit=100)
    with pytest.raises(DownloadError, match="Fetching .* failed"):
        fetch_text(image_server.base + "/files/nope", 10)


@pytest.mark.parametrize("line", [
    "%s  image.tar.xz" % HEX_A, "%s *image.tar.xz" % HEX_A, "%s  ./image.tar.xz" % HEX_A,
    "SHA256 (image.tar.xz) = %s" % HEX_A, "  %s  image.tar.xz  " % HEX_A.upper(),
])
def test_expected_from_sums_formats(line):
    text = "# signed\n\nnot a line\n%s  other.tar.xz\n%s\n" % (HEX_B, line)
    assert expected_from_sums(text, "image.tar.xz") == HEX_A


def test_expected_from_sums_missing_name():
    with pytest.raises(DownloadError) as exc:
        expected_from_sums("%s  image.tar.gz\n%s  xz\n" % (HEX_A, "zz" * 32), "image.tar.xz", "https://u:p@x/SHA256SUMS")
    assert exc.value.msg == "https://********@x/SHA256SUMS lists no sha256 for image.tar.xz"


def test_url_basename():
    assert url_basename("https://x/dl/nixos%20image.tar.xz?raw=1#f") == "nixos image.tar.xz"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interruptible_turns_a_signal_into_interrupted_once(signum):
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Interrupted) as exc:
        with interruptible():
            os.kill(os.getpid(), signum)  # the handler runs before the next statement
    assert exc.value.signum == signum
    # not an Exception: AnsibleModule.run_command would turn it into fail_json and skip the clean-up
    assert not isinstance(exc.value, Exception)
    assert {number: signal.getsignal(number) for number in before} == before


def test_interruptible_ignores_a_second_signal_during_the_clean_up():
    with pytest.raises(Interrupted):
        with interruptible():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                os.kill(os.getpid(), signal.SIGINT)  # ignored: the clean-up goes on
                os.kill(os.getpid(), signal.SIGHUP)
