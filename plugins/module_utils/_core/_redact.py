# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Secrets in URLs: find them (to mark them no_log) and hide them (in results, records and messages).

Private module: not a public API.
"""

from __future__ import annotations

import re

from urllib.parse import urlsplit, urlunsplit

CHECKSUM_PREFIX = "sha256:"
# user:password@ (or token@) right after the scheme of a URL anywhere in a text; group 2 is the userinfo.
_URL_USERINFO_RE = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@\s]*)@")


def url_secret(value):
    """The userinfo of a URL - or of a 'sha256:<URL>' checksum - when it has one, else None.

    Any userinfo is a secret: user:password@, and a token alone (https://TOKEN@host/, no colon), which a client sends
    as the user name of basic auth. This is the one notion of "this URL holds a secret" of the collection: the modules
    mark it no_log, nspawn_image never lets importd pull such a URL, and the role's no_log (the filter
    nspawn.nixos.url_secret) asks the same. redact_url() hides exactly this part.
    """
    if not value or not isinstance(value, str):
        return None
    if value.lower().startswith(CHECKSUM_PREFIX):
        value = value[len(CHECKSUM_PREFIX):]
    try:
        netloc = urlsplit(value).netloc
    except ValueError:  # e.g. an unbalanced [ of an IPv6 host: still look for scheme://userinfo@
        match = _URL_USERINFO_RE.match(value)
        return (match.group(2) or None) if match else None
    if "@" not in netloc:
        return None
    return netloc.rsplit("@", 1)[0] or None


def url_password(value):
    """The password part of the userinfo of a URL (or 'sha256:<URL>'), None without one (a token alone has none)."""
    userinfo = url_secret(value)
    return userinfo.split(":", 1)[1] if userinfo and ":" in userinfo else None


def redact_text(text):
    """Every user:password@ of a URL in a text (a journal line, a command's output) replaced by '********@'."""
    return _URL_USERINFO_RE.sub(r"\1********@", text) if text else text


def redact_url(value):
    """The URL - or 'sha256:<URL>' checksum - with any user:password@ replaced by '********@' (safe to return and to record)."""
    if not value or "://" not in value:
        return value
    if value.lower().startswith(CHECKSUM_PREFIX):
        return value[:len(CHECKSUM_PREFIX)] + redact_url(value[len(CHECKSUM_PREFIX):])
    try:
        parts = urlsplit(value)
    except ValueError:
        return redact_text(value)  # as url_secret() finds it
    if "@" not in parts.netloc:
        return value
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"********@{host}", parts.path, parts.query, parts.fragment))
