# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One notion of "this URL holds a secret": the role's filter, nspawn_image's no_log and its refusal to let importd
pull agree, and redact_url() hides exactly what they call secret."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.nspawn.nixos.plugins.filter.url_secret import url_secret
from ansible_collections.nspawn.nixos.plugins.module_utils._core import _redact
SECRET = [
    "https://TOKEN@images.example.org/nixos.tar.xz",
    "https://user:pass@images.example.org/nixos.tar.xz",
    "https://user:@images.example.org/nixos.tar.xz",
    "sha256:https://TOKEN@images.example.org/SHA256SUMS",
    "SHA256:http://u:p@[::1]:8080/SHA256SUMS",
    ["https://example.org/a.tar", "sha256:https://TOKEN@example.org/SHA256SUMS"],
    {"x86_64": "https://example.org/a.tar", "aarch64": "https://T0K3N@example.org/a.tar"},
]
PLAIN = [
    "https://images.example.org/nixos.tar.xz",
    "file:///var/tmp/stage/web@0123456789ab-nixos.tar.xz",
    "https://example.org/path@with-at/nixos.tar.xz",
    "sha256:" + "a" * 64,
    "", None, 42, [], {}, ["https://example.org/a.tar", ""],
]


@pytest.mark.parametrize("value", SECRET, ids=str)
def test_secret(value):
    assert url_secret(value) is True


@pytest.mark.parametrize("value", PLAIN, ids=str)
def test_not_secret(value):
    assert url_secret(value) is False


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["http", "https", "file"]), st.text(alphabet="abcXYZ019:_-.~%", max_size=12),
       st.booleans(), st.text(alphabet="abc/-.@", max_size=12))
def test_the_filter_the_module_and_redaction_agree(scheme, userinfo, with_at, path):
    url = "%s://%s%sexample.org/%s.tar" % (scheme, userinfo, "@" if with_at else "", path)
    secret = _redact.url_secret(url)
    assert url_secret(url) is (secret is not None)
    assert (secret is not None) is (with_at and userinfo != "" and "/" not in userinfo), url
    redacted = _redact.redact_url(url)
    if secret:  # what is secret is gone from the URL as the modules report it
        assert redacted == "%s://********@example.org/%s.tar" % (scheme, path), (url, redacted)
    elif not with_at:
        assert redacted == url


def _old_jinja_escape(url):
    """What absent.yml spelled with six replace filters before importd_cache_escape (ASCII URLs)."""
    for char, code in (("\\", "x5c"), ("/", "x2f"), (".", "x2e"), ("#", "x23"), ('"', "x22"), ("'", "x27")):
        url = url.replace(char, "\\" + code)
    return url


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40))
def test_importd_cache_escape_spells_printable_urls_as_before(url):
    from ansible_collections.nspawn.nixos.plugins.filter.url_secret import FilterModule

    assert FilterModule().filters()["importd_cache_escape"](url) == _old_jinja_escape(url)


def test_importd_cache_escape_escapes_bytes_outside_printable_ascii():
    from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import importd_cache_escape

    assert importd_cache_escape("https://h/\u00e9\t") == "https:\\x2f\\x2fh\\x2f\\xc3\\xa9\\x09"


def test_redact_url_filter_is_the_modules_redaction():
    from ansible_collections.nspawn.nixos.plugins.filter.url_secret import FilterModule

    redact = FilterModule().filters()["redact_url"]
    assert redact("https://TOKEN@example.org/a.tar") == "https://********@example.org/a.tar"
    assert redact("https://u:p@example.org/a.tar") == "https://********@example.org/a.tar"
    assert redact("https://example.org/a.tar") == "https://example.org/a.tar"
