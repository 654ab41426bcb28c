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
# user:password@ (or token@) right after the scheme of a URL anywhere in a text.
_URL_USERINFO_RE = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")


def url_password(value):
    """The password (token) part of a URL - or of a 'sha256:<URL>' checksum - if any, so the caller can mark it no_log."""
    if value and value.lower().startswith(CHECKSUM_PREFIX):
        value = value[len(CHECKSUM_PREFIX):]
    try:
        return urlsplit(value).password
    except ValueError:
        return None


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
        return value
    if "@" not in parts.netloc:
        return value
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"********@{host}", parts.path, parts.query, parts.fragment))
