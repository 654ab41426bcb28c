# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""os-release(5) of an OS tree (the host's, a machine's), read as systemd reads it.

Private module: not a public API.
"""

from __future__ import annotations

import os

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ModuleFailure
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._rootfs import read_in_root


# systemd's parse_env_file_internal() (src/basic/env-file.c) reads os-release; _env_value() follows its states for one
# line. Inside double quotes a backslash escapes only SHELL_NEED_ESCAPE (src/basic/escape.h) and stays before anything
# else, "like the real shell does".
_SHELL_NEED_ESCAPE = '"\\`$'


def _env_value(value):
    """The value after KEY= on one line, read as systemd reads os-release (src/basic/env-file.c).

    Leading whitespace and whitespace after a closing quote are skipped; quotes open only there, not inside an unquoted
    run; unquoted, a backslash escapes any character and trailing whitespace is dropped; single quotes are literal;
    in double quotes a backslash escapes only " \\ ` $. systemd continues a quote left open onto the next lines; here
    it ends with its line, so that one broken line cannot swallow the keys after it.
    """
    out = []
    state = "pre"
    trailing = None  # where the unquoted run's trailing whitespace starts
    chars = iter(value)
    for char in chars:
        if state == "single":
            if char == "'":
                state = "pre"
            else:
                out.append(char)
        elif state == "double":
            if char == '"':
                state = "pre"
            elif char == "\\":
                escaped = next(chars, "")  # a backslash ending the line escapes the newline: nothing is kept
                if escaped:
                    out.append(escaped if escaped in _SHELL_NEED_ESCAPE else "\\" + escaped)
            else:
                out.append(char)
        elif char == "\\":
            state, trailing = "unquoted", None
            out.append(next(chars, ""))
        elif state == "pre" and char in "'\"":
            state = "single" if char == "'" else "double"
        elif state == "pre" and char.isspace():
            continue
        else:
            state = "unquoted"
            if not char.isspace():
                trailing = None
            elif trailing is None:
                trailing = len(out)
            out.append(char)
    if state == "unquoted" and trailing is not None:
        del out[trailing:]
    return "".join(out)


def parse_os_release(text):
    """os-release(5) KEY=value lines -> dict; comment lines (# or ;) and lines without = are skipped."""
    result = {}
    for line in (text or "").splitlines():
        line = line.lstrip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        result[key.rstrip()] = _env_value(value)
    return result


def read_os_release(root):
    """The os-release of the OS tree at root (etc/os-release, then usr/lib/os-release), or {}."""
    if not root or not os.path.isdir(root):
        return {}
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text, dummy = read_in_root(root, candidate)
        except (IOError, OSError, ModuleFailure):  # not a regular file, unreadable
            continue
        if text is not None:
            return parse_os_release(text)
    return {}
