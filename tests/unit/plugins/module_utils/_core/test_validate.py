# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._core._redact import redact_text, redact_url, url_password
from ansible_collections.nspawn.nixos.plugins.module_utils._core._validate import (
    check_machine_name, check_text, check_timeout, check_url, parse_checksum,
)

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize("name", ["nixos", "a", "ci1-chk", "my_box.lan", "A" * 64, "x.y.z", "0nixos"])
def test_valid_machine_names(name):
    assert check_machine_name(name) == name


@pytest.mark.parametrize("name, fragment", [
    ("", "0 characters"), ("a" * 65, "65 characters"), ("-a", "starts or ends"), ("a-", "starts or ends"),
    (".a", "starts or ends"), ("a.", "starts or ends"), ("a..b", "'..'"), ("a b", "character other"),
    ("a/b", "character other"), ("ä", "character other"), (".host", "starts or ends"), ("a\nb", "newline"),
])
def test_invalid_machine_names(name, fragment):
    with pytest.raises(ValidationError) as exc:
        check_machine_name(name)
    assert fragment in str(exc.value)
    assert str(exc.value).startswith("name:")


NAME_RE = re.compile(r"(?![-.])(?!.*\.\.)[A-Za-z0-9_.-]{1,64}(?<![-.])", re.DOTALL)


@given(st.text(alphabet="ab-_.\n/", max_size=70))
def test_machine_name_rule_matches_reference(name):
    try:
        check_machine_name(name)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == bool(NAME_RE.fullmatch(name))


@pytest.mark.parametrize("value", ["a\0b", "a\rb", "a\nb"])
def test_check_text_rejects_control_characters(value):
    with pytest.raises(ValidationError, match="^opt: must not contain"):
        check_text(value, "opt")


@pytest.mark.parametrize("url", [
    "https://example.org/a.tar.xz", "http://127.0.0.1:8000/image.tar.gz", "file:///var/tmp/a.tar",
    "file://localhost/var/tmp/a.tar", "https://user:tok@example.org/a.tar.xz", "HTTPS://EXAMPLE.ORG/a.tar",
])
def test_valid_urls(url):
    assert check_url(url) == url


@pytest.mark.parametrize("url, fragment", [
    ("ftp://example.org/a.tar", "scheme 'ftp' is not allowed"), ("example.org/a.tar", "scheme '' is not allowed"),
    ("https:///a.tar", "no host name"), ("file://host/a.tar", "absolute local path"), ("https://example.org/", "names no file"),
    ("https://example.org:99999/a.tar", "not a valid URL"), ("https://example.org/a\n", "newline"),
])
def test_invalid_urls(url, fragment):
    with pytest.raises(ValidationError) as exc:
        check_url(url)
    assert fragment in str(exc.value) and str(exc.value).startswith("url:")


def test_invalid_url_message_hides_password():
    with pytest.raises(ValidationError) as exc:
        check_url("https://u:secret@:99999/a.tar")
    assert "secret" not in str(exc.value)


def test_parse_checksum():
    assert parse_checksum(None) is None
    assert parse_checksum("sha256:" + HEX.upper()) == ("hex", HEX)
    assert parse_checksum("SHA256:" + HEX) == ("hex", HEX)
    assert parse_checksum("sha256:https://example.org/SHA256SUMS") == ("url", "https://example.org/SHA256SUMS")
    assert parse_checksum("sha256:file:///srv/SHA256SUMS") == ("url", "file:///srv/SHA256SUMS")


@pytest.mark.parametrize("value, fragment", [
    (HEX, "must be 'sha256:"), ("sha1:" + HEX[:40], "must be 'sha256:"), ("sha256:", "must be 'sha256:"),
    ("sha256:" + HEX[:63], "got 63 characters"), ("sha256:" + HEX[:63] + "g", "64 hexadecimal"),
    ("sha256:ftp://x/SHA256SUMS", "scheme 'ftp'"),
])
def test_invalid_checksums(value, fragment):
    with pytest.raises(ValidationError) as exc:
        parse_checksum(value)
    assert fragment in str(exc.value) and str(exc.value).startswith("checksum:")


def test_redaction():
    assert redact_url("https://u:p@example.org:8443/a?x=1") == "https://********@example.org:8443/a?x=1"
    assert redact_url("https://token@example.org/a") == "https://********@example.org/a"
    assert redact_url("https://example.org/a@b") == "https://example.org/a@b"
    assert redact_url("nixos") == "nixos"
    assert redact_url(None) is None
    assert url_password("https://u:p%40ss@example.org/a") == "p%40ss"
    assert url_password("https://example.org/a") is None


def test_redaction_of_sha256sums_urls_and_texts():
    assert redact_url("sha256:https://u:tok@example.org/SHA256SUMS") == "sha256:https://********@example.org/SHA256SUMS"
    assert redact_url("SHA256:http://tok@example.org/S") == "SHA256:http://********@example.org/S"
    assert redact_url("sha256:" + "a" * 64) == "sha256:" + "a" * 64
    assert url_password("sha256:https://u:tok@example.org/SHA256SUMS") == "tok"
    assert url_password("sha256:" + "a" * 64) is None
    text = "Pulling 'https://u:tok@example.org/x.tar', saving as 'n'.\nand ftp://t@h/y but not a@b or https://example.org/a@b"
    assert redact_text(text) == ("Pulling 'https://********@example.org/x.tar', saving as 'n'.\nand ftp://********@h/y but not a@b "
                                 "or https://example.org/a@b")
    assert redact_text("") == ""


@pytest.mark.parametrize("value", [0, -1, None])
def test_timeout(value):
    with pytest.raises(ValidationError, match="^timeout:"):
        check_timeout(value)
