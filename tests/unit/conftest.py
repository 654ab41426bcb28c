# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Make ansible_collections.nspawn.nixos importable from this checkout.

tests/output/collections/ansible_collections/nspawn/nixos is a relative symlink to the
checkout root (tests/output is git-ignored). Other tools create the same link, so this
tolerates it appearing at any moment.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COLLECTIONS = os.path.join(ROOT, "tests", "output", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "nspawn", "nixos")


def _ensure_link():
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    if os.path.islink(LINK) or os.path.exists(LINK):
        return
    try:
        os.symlink(os.path.join("..", "..", "..", "..", ".."), LINK)
    except FileExistsError:  # created by someone else in the meantime
        pass


_ensure_link()
if os.path.realpath(LINK) != os.path.realpath(ROOT):
    raise RuntimeError("%s does not point at this checkout (%s)" % (LINK, ROOT))
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
# The unit tests' own helpers (fake_clock.py).
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# -- a loopback HTTP server for the download tests (127.0.0.1 only) --------------------

import base64  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import tarfile  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

import pytest  # noqa: E402

AUTH_USER, AUTH_PASSWORD = "deploy", "s3cret-token"


def make_image_tar(os_release="ID=fixture\nNAME=Fixture\n"):
    """A small .tar.gz shaped like an OS tree."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for dirname in (".", "./etc", "./usr"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = os_release.encode()
        info = tarfile.TarInfo("./etc/os-release")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    files = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.startswith("/auth/"):
            token = base64.b64encode(("%s:%s" % (AUTH_USER, AUTH_PASSWORD)).encode()).decode()
            if self.headers.get("Authorization") != "Basic " + token:
                return self._send(401, b"unauthorized\n")
            path = "/files/" + path[len("/auth/"):]
        if path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/" + path[len("/redirect/"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if path.startswith("/echo-auth/"):
            return self._send(200, (self.headers.get("Authorization") or "none").encode())
        name = path.rsplit("/", 1)[-1]
        data = self.files.get(name)
        if data is None:
            return self._send(404, b"not found\n")
        if path.startswith("/cut/"):
            # Announce the whole body, send half of it, then hang up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        if path.startswith("/files/"):
            return self._send(200, data, etag=hashlib.sha256(data).hexdigest()[:16])
        return self._send(404, b"not found\n")

    def _send(self, code, body, etag=None):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", '"%s"' % etag)
        self.end_headers()
        self.wfile.write(body)
        return None


class ImageServer(object):
    def __init__(self, base, files):
        self.base = base
        self.files = files

    def sha256(self, name):
        return hashlib.sha256(self.files[name]).hexdigest()


@pytest.fixture(scope="session")
def image_server():
    image = make_image_tar()
    files = {
        "image.tar.gz": image,
        "disk.raw": b"\0" * 4096,
        "other.tar.gz": make_image_tar("ID=other\n"),
    }
    files["SHA256SUMS"] = ("%s  image.tar.gz\n%s *disk.raw\n" % (
        hashlib.sha256(image).hexdigest(), hashlib.sha256(files["disk.raw"]).hexdigest())).encode()
    files["SHA256SUMS.other"] = ("%s  other.tar.gz\n" % hashlib.sha256(files["other.tar.gz"]).hexdigest()).encode()
    handler = type("Handler", (_Handler,), {"files": files})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ImageServer("http://127.0.0.1:%d" % server.server_address[1], files)
    finally:
        server.shutdown()
        server.server_close()
