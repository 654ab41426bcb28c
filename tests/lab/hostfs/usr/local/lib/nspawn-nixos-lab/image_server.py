"""Image server of the nspawn.nixos test lab (runs inside every lab host, stdlib only).

Serves the files of one directory (the fixture sidecar images and their SHA256SUMS) over
HTTP the way a release download server does, plus fault modes that tests ask for by
path prefix:

    /FILE           200 with Content-Length, Last-Modified and an ETag; 304 when the
                    request's If-None-Match holds that ETag. systemd-importd names its
                    hidden ".tar-<url>" cache after the ETag; without one, a second pull
                    of the same URL fails ("Failed to rename ... File exists").
    /noetag/FILE    the same file without ETag and Last-Modified (a plain server).
    /cut/FILE       announces the full Content-Length, sends half of the body, then
                    closes the connection (an interrupted download).
    /corrupt/FILE   the whole file, same length and validators, with 64 KiB of zeros
                    written over the middle of the body (a damaged tarball: its
                    compression's checksum fails, and so does any sha256 pin).
    /slow/FILE      the whole file, same length and validators, sent at SLOW_RATE bytes
                    a second (a slow mirror: long enough for a test to interrupt a
                    transfer in the middle). The first chunk is logged as "slow start".

Every request is logged to stderr (the journal of nspawn-nixos-lab-images.service), so
tests can tell whether a download happened; every body sent is logged as
"sent N body bytes of /PATH" (benchmarks add them up). Readiness is reported with
sd_notify.
"""

import argparse
import email.utils
import http.server
import os
import posixpath
import shutil
import socket
import sys
import time
import urllib.parse

FAULT_MODES = ("cut", "noetag", "corrupt", "slow")
CORRUPT_BYTES = 64 * 1024
SLOW_RATE = 4 * 1024 * 1024
SLOW_CHUNK = 256 * 1024
CONTENT_TYPES = {
    ".xz": "application/x-xz",
    ".gz": "application/gzip",
    ".raw": "application/octet-stream",
    ".qcow2": "application/octet-stream",
}


class ImageRequestHandler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of the files in `server.directory`, with the fault modes above."""

    server_version = "nspawn-nixos-lab-images/1"
    # HTTP/1.1 keeps connections alive like real download servers; every response
    # therefore carries a Content-Length (or is a 304 without body).
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.serve(send_body=True)

    def do_HEAD(self):
        self.serve(send_body=False)

    def serve(self, send_body):
        """Answer one request for a file, an index, or an error."""
        mode, name = self.parse_path()
        if name == "" and mode == "plain":
            self.send_index(send_body)
            return
        path = os.path.join(self.server.directory, name) if name else None
        if path is None or not os.path.isfile(path):
            self.send_error(404, "No such image file")
            return
        stat = os.stat(path)
        etag = '"%x-%x"' % (stat.st_mtime_ns, stat.st_size)
        with_validators = mode != "noetag"
        if with_validators and etag in self.if_none_match():
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPES.get(os.path.splitext(name)[1], "text/plain; charset=utf-8"))
        self.send_header("Content-Length", str(stat.st_size))
        if with_validators:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        self.end_headers()
        if not send_body:
            return
        with open(path, "rb") as source:
            if mode == "cut":
                self.send_part_and_hang_up(source, stat.st_size // 2)
            elif mode == "corrupt":
                self.send_corrupted(source, stat.st_size)
            elif mode == "slow":
                self.send_slowly(source, stat.st_size)
            else:
                shutil.copyfileobj(source, self.wfile, 1024 * 1024)
                self.log_message("sent %d body bytes of %s", stat.st_size, self.path)

    def parse_path(self):
        """Return (mode, file name) of the request; the name is "" for the index and
        None for anything that is not a plain file name in the served directory."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = [part for part in path.split("/") if part]
        mode = "plain"
        if parts and parts[0] in FAULT_MODES:
            mode = parts.pop(0)
        if not parts:
            return mode, ""
        name = posixpath.join(*parts)
        if any(part in (".", "..") for part in parts) or name.startswith("."):
            return mode, None
        return mode, name

    def send_corrupted(self, source, size):
        """Send the file with CORRUPT_BYTES zero bytes in place of the middle of it."""
        start = max(0, size // 2 - CORRUPT_BYTES // 2)
        length = min(CORRUPT_BYTES, size - start)
        self.wfile.write(source.read(start))
        self.wfile.write(b"\0" * length)
        source.seek(start + length)
        shutil.copyfileobj(source, self.wfile, 1024 * 1024)
        self.log_message("sent %d body bytes of %s (%d bytes zeroed at %d)", size, self.path, length, start)

    def send_slowly(self, source, size):
        """Send the file at SLOW_RATE bytes a second, in SLOW_CHUNK pieces."""
        self.log_message("slow start of %s (%d bytes at %d bytes/s)", self.path, size, SLOW_RATE)
        sent = 0
        try:
            while True:
                chunk = source.read(SLOW_CHUNK)
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                time.sleep(len(chunk) / SLOW_RATE)
        except OSError as exc:  # the client went away (an interrupted transfer)
            self.close_connection = True
            self.log_message("sent %d body bytes of %s, then the client went away (%s)", sent, self.path, exc)
            return
        self.log_message("sent %d body bytes of %s", sent, self.path)

    def if_none_match(self):
        """The ETags listed in the request's If-None-Match header."""
        header = self.headers.get("If-None-Match", "")
        return [tag.strip() for tag in header.split(",") if tag.strip()]

    def send_part_and_hang_up(self, source, length):
        """Send `length` bytes of the body, then close the connection mid-transfer."""
        self.wfile.write(source.read(length))
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.log_message("sent %d body bytes of %s, then cut the connection", length, self.path)

    def send_index(self, send_body):
        """A plain text list of the served files (for humans and curl)."""
        names = sorted(entry.name for entry in os.scandir(self.server.directory) if entry.is_file())
        body = ("\n".join(names) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, *args):
        """Log to stderr, i.e. the journal (args: a %-format and its values)."""
        sys.stderr.write("%s %s\n" % (self.address_string(), args[0] % args[1:]))


class ImageServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that knows the directory it serves."""

    daemon_threads = True

    def __init__(self, address, directory):
        self.directory = os.path.abspath(directory)
        super().__init__(address, ImageRequestHandler)


def notify_ready():
    """Tell systemd (Type=notify) that the socket is listening."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_socket:
        notify_socket.connect(address)
        notify_socket.sendall(b"READY=1")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--directory", default=".")
    args = parser.parse_args()
    server = ImageServer((args.bind, args.port), args.directory)
    notify_ready()
    server.serve_forever()


if __name__ == "__main__":
    main()
