# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What an image is and where it comes from: its kind by name, an HTTP(S)/file client that streams and hashes,
and SHA256SUMS files.

Private module: not a public API.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import posixpath
import re
import socket
from urllib.parse import unquote, urlsplit

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ModuleFailure
from ansible_collections.nspawn.nixos.plugins.module_utils._core._redact import redact_url

CHUNK_SIZE = 1 << 20
SUMS_MAX_BYTES = 1 << 20
USER_AGENT = "nspawn.nixos (Ansible collection)"
_RAW_RE = re.compile(r"\.(raw|img|qcow2)(\.(gz|xz|bz2|zst))?$", re.IGNORECASE)
# Suffixes importd's export picks a compression from (machinectl(1), importctl(1)).
_EXPORT_RE = re.compile(r"\.(tar|raw)(\.(gz|xz|bz2))?$")


def url_path(url):
    return re.split(r"[?#]", url, maxsplit=1)[0]


def image_kind(url_or_path):
    """'raw' for .raw/.img/.qcow2 (optionally compressed), else 'tar'."""
    return "raw" if _RAW_RE.search(url_path(url_or_path)) else "tar"


def export_kind(path):
    """'tar' or 'raw' from an export file name, None when importd cannot write that format."""
    match = _EXPORT_RE.search(path)
    return match.group(1) if match else None


class DownloadError(ModuleFailure):
    """A download that failed, was cut short, or did not match its checksum."""


def _open(url, timeout):
    """GET url (http, https or file). A user:password@ in the URL becomes a basic auth header that is
    not forwarded on redirects (release assets redirect to other hosts); no transparent gunzip,
    so that the sha256 is the one of the bytes served."""
    # Imported here, not at the top: ansible.module_utils.urls (with http.client, ssl, ...) costs about 0.1 s at
    # every start of the module, and a plan or a no-op never downloads.
    from ansible.module_utils.urls import open_url  # pylint: disable=import-outside-toplevel

    return open_url(url, timeout=timeout, http_agent=USER_AGENT, force_basic_auth=True,
                    unredirected_headers=["Authorization"], follow_redirects="safe", decompress=False)


@functools.lru_cache(maxsize=None)
def _network_errors():
    """The exceptions a download can raise (imported when one runs, see _open)."""
    import http.client  # pylint: disable=import-outside-toplevel
    import urllib.error  # pylint: disable=import-outside-toplevel

    from ansible.module_utils.urls import ConnectionError as UrlsConnectionError  # pylint: disable=import-outside-toplevel

    return (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError, ValueError, UrlsConnectionError)


def download(url, handle, timeout):
    """Stream url into handle, hashing on the way. Returns (sha256 hex, size).

    A body shorter than its Content-Length is an error, not a smaller image.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with contextlib.closing(_open(url, timeout)) as response:
            length = response.headers.get("Content-Length")
            while True:
                chunk = response.read(CHUNK_SIZE)
                if not chunk:
                    break
                handle.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    except _network_errors() as exc:
        raise DownloadError("Downloading %s failed after %d bytes: %s" % (redact_url(url), size, exc), url=redact_url(url))
    if length is not None and length.isdigit() and int(length) != size:
        raise DownloadError("Downloading %s was cut short: received %d of %s bytes" % (redact_url(url), size, length),
                            url=redact_url(url))
    return digest.hexdigest(), size


def fetch_text(url, timeout, limit=SUMS_MAX_BYTES):
    """A small text file (a SHA256SUMS file) from url."""
    try:
        with contextlib.closing(_open(url, timeout)) as response:
            data = response.read(limit + 1)
    except _network_errors() as exc:
        raise DownloadError(f"Fetching {redact_url(url)} failed: {exc}", url=redact_url(url))
    if len(data) > limit:
        raise DownloadError("%s is larger than %d bytes: not a SHA256SUMS file" % (redact_url(url), limit), url=redact_url(url))
    return data.decode("utf-8", "replace")


def expected_from_sums(text, filename, sums_url=""):
    """The digest for filename in a SHA256SUMS file ('HEX  name', 'HEX *name' or 'SHA256 (name) = HEX')."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("SHA256 (") and ") = " in line:
            name, digest = line[len("SHA256 ("):].rsplit(") = ", 1)
        else:
            fields = line.split(None, 1)
            if len(fields) != 2:
                continue
            digest, name = fields
            name = name[1:] if name.startswith("*") else name
        if name.strip() in (filename, f"./{filename}") and len(digest) == 64:
            try:
                int(digest, 16)
            except ValueError:
                continue
            return digest.lower()
    raise DownloadError(f"{redact_url(sums_url) or 'the SHA256SUMS file'} lists no sha256 for {filename}",
                        url=redact_url(sums_url))


def url_basename(url):
    return unquote(posixpath.basename(urlsplit(url).path))
