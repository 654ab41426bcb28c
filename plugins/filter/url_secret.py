# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The role's URL filters, each the modules' own function: url_secret, redact_url, importd_cache_escape.

url_secret: whether image URLs or checksums hold a secret. The role decides its no_log with it, and nspawn_image
decides what it hides and whether importd may pull a URL with module_utils._core._redact.url_secret(): one notion of
"this URL holds a secret" for the whole collection. redact_url: the URL as the modules report it.
importd_cache_escape: the URL as importd spells it in the name of its cache image.
"""

from __future__ import annotations

from ansible_collections.nspawn.nixos.plugins.module_utils._core._redact import redact_url
from ansible_collections.nspawn.nixos.plugins.module_utils._core._redact import url_secret as _userinfo
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import importd_cache_escape


def _values(value):
    """The strings of a value: itself, the items of a list, the values of a dict (per architecture), recursively."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _values(item)


def url_secret(value):
    """True when any URL in value (a URL, a 'sha256:<URL>' checksum, or lists and dicts of them) has a userinfo."""
    return any(_userinfo(text) is not None for text in _values(value))


class FilterModule:
    """nspawn.nixos.url_secret, nspawn.nixos.redact_url, nspawn.nixos.importd_cache_escape"""

    def filters(self):
        return {"url_secret": url_secret, "redact_url": redact_url, "importd_cache_escape": importd_cache_escape}
