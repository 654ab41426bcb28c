"""Large files for the tests and benchmarks: random bytes written and hashed in 1 MiB blocks, in constant memory."""

import hashlib
import os

BLOCK = 1 << 20


def random_file(path, mib):
    """Write mib MiB of random bytes to path; returns their sha256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for dummy in range(mib):
            block = os.urandom(BLOCK)
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def sha256_file(path):
    """The sha256 (hex) of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
