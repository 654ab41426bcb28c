# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Argument checks shared by the modules.

Every check raises ValidationError with a message that names the option and
the rule, so that bad input fails before anything on the host changes.
Private module: not a public API.
"""

from __future__ import annotations

import re

from urllib.parse import urlsplit

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._core._redact import redact_url

SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_-]+$")

MACHINE_NAME_RULE = (
    "machine names are 1-64 characters from a-z, A-Z, 0-9, '-', '_' and '.', "
    "do not start or end with '-' or '.', and contain no '..'"
)
URL_SCHEMES = ("http", "https", "file")


def check_text(value, option):
    """No newline, carriage return or NUL: such values could end up in files or command lines."""
    if value is None:
        return value
    for char, label in (("\n", "newline"), ("\r", "carriage return"), ("\0", "NUL")):
        if char in value:
            raise ValidationError(f"{option}: must not contain a {label} character")
    return value


def check_machine_name(value, option="name"):
    """machinectl's hostname rules (machinectl(1), MACHINE AND IMAGE NAMES)."""
    check_text(value, option)
    problem = None
    if not value or len(value) > 64:
        problem = f"is {len(value or '')} characters long"
    elif value[0] in "-." or value[-1] in "-.":
        problem = "starts or ends with '-' or '.'"
    elif ".." in value:
        problem = "contains '..'"
    elif not all(_LABEL_RE.match(label) for label in value.split(".")):
        problem = "contains a character other than a-z, A-Z, 0-9, '-', '_' and '.'"
    if problem:
        raise ValidationError(f"{option}: {value!r} is not a valid machine name (it {problem}): {MACHINE_NAME_RULE}")
    return value


def check_url(value, option="url", schemes=URL_SCHEMES):
    """An absolute URL of one of the allowed schemes, with a host (or a path for file://)."""
    check_text(value, option)
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7f for char in value):
        raise ValidationError(f"{option}: {redact_url(value)!r} contains blanks or control characters; percent-encode them (a space is %20)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValidationError(f"{option}: {redact_url(value)!r} is not a valid URL ({exc})")
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise ValidationError(
            "%s: URL scheme %r is not allowed; use one of %s" % (option, parts.scheme or "", ", ".join("%s://" % s for s in schemes))
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValidationError(f"{option}: a file:// URL needs an absolute local path, e.g. file:///var/tmp/image.tar.xz")
    elif not parts.hostname:
        raise ValidationError(f"{option}: {redact_url(value)!r} has no host name")
    if not parts.path.rstrip("/"):
        raise ValidationError(f"{option}: {redact_url(value)!r} names no file")
    return value


def parse_checksum(value, option="checksum"):
    """Parse 'sha256:<64 hex>' or 'sha256:<URL of a SHA256SUMS file>'.

    Returns ('hex', lowercase digest) or ('url', url), or None when value is empty.
    """
    if not value:
        return None
    check_text(value, option)
    algo, sep, rest = value.partition(":")
    if not sep or algo.lower() != "sha256" or not rest:
        raise ValidationError(
            f"{option}: must be 'sha256:<64 hex digits>' or 'sha256:<http(s):// or file:// URL of a SHA256SUMS file>', got {redact_url(value)!r}"
        )
    if "://" in rest:
        check_url(rest, option)
        return ("url", rest)
    if not SHA256_RE.match(rest):
        raise ValidationError(f"{option}: the sha256 digest must be 64 hexadecimal digits, got {len(rest)} characters")
    return ("hex", rest.lower())


def check_timeout(value, option="timeout"):
    if value is None or value < 1:
        raise ValidationError(f"{option}: must be a positive number of seconds, got {value!r}")
    return value


_HASH_RE = re.compile(r"^(\$[^\s:]+|![^\s:]*|\*)$")


def check_password_hash(value):
    if not _HASH_RE.match(value or ""):
        raise ValidationError("root_password_hash: must be a crypt(3) hash such as the output of `mkpasswd -m sha-512` "
                              "(it starts with $; or ! to lock the account), without blanks or ':'; a plain password is refused")
    return value
