# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Nix for the nixos_config module: values to Nix text, parser errors.

Two pure parts, no I/O:

* ``to_nix()`` / ``render_module()`` turn Ansible data (dict, list, str, int,
  float, bool, None) into a Nix expression or a whole NixOS module file.
  Attribute names are sorted, so the same data always gives the same bytes
  (idempotency), whatever order a playbook built its dicts in. A key is one
  attribute name even when it contains dots: ``{"a.b": 1}`` is ``"a.b" = 1;``;
  nest dicts to nest attributes (single-key chains are printed as ``a.b.c``).
  Raw Nix is inserted verbatim when marked explicitly: ``NixRaw("pkgs.hello")``
  in Python, ``{"__nix_raw__": "pkgs.hello"}`` from a playbook.
* ``parse_check_argv()`` / ``nix_error()`` build the ``nix-instantiate --parse``
  command line and read its error (line, column, message).

Editing the imports list of configuration.nix (``ensure_import()``, ``remove_import()``,
``has_import()``, ``import_path()``) lives in _imports.py, which builds on the
names here (identifiers, keywords, errors).

Private module: not a public API.
"""

from __future__ import annotations

import json
import math
import re

__all__ = (
    "RAW_MARKER", "MODULE_ARGS", "MODULE_HEADER", "NIX_KEYWORDS", "ID_PATTERN", "INT_MIN", "INT_MAX", "NixError", "NixValueError",
    "NixEditError", "NixRaw", "is_identifier", "nix_string", "attr_name", "nix_float", "to_nix", "render_module",
    "parse_check_argv", "nix_error",
)

NIX_KEYWORDS = frozenset(("assert", "else", "if", "in", "inherit", "let", "or", "rec", "then", "with"))
# An identifier of the Nix lexer (src/libexpr/lexer.l).
ID_PATTERN = r"[a-zA-Z_][a-zA-Z0-9_'-]*"
RAW_MARKER = "__nix_raw__"
MODULE_ARGS = "{ config, pkgs, lib, ... }:"
MODULE_HEADER = "# Managed by Ansible (nspawn.nixos.nixos_config); local changes will be overwritten."
INT_MIN = -(2 ** 63)
INT_MAX = 2 ** 63 - 1
# Scalar lists up to this width stay on one line.
INLINE_LIST_WIDTH = 72

_ID_RE = re.compile(r"^%s$" % ID_PATTERN)
_SIMPLE_RAW_RE = re.compile(r"^%s(\.%s)*$" % (ID_PATTERN, ID_PATTERN))
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "$": "\\$"}
_ESCAPE_RE = re.compile(r'["\\\n\r\t]|\$(?=\{)')


class NixError(ValueError):
    """Base class of the errors of _nix and _nix_imports."""


class NixEditError(NixError):
    """configuration.nix cannot be edited safely; the message says how to do it by hand."""


class NixValueError(NixError):
    """A value that cannot be written as Nix; ``path`` says where it is in the data."""

    def __init__(self, path, problem):
        self.path = path
        self.problem = problem
        super(NixValueError, self).__init__("%s: %s" % (path or "value", problem))


class NixRaw:
    """A Nix expression written into the output exactly as given (``pkgs.hello``, ``lib.mkForce true``)."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, NixRaw) and other.text == self.text

    def __hash__(self):
        return hash((NixRaw, self.text))

    def __repr__(self):
        return "NixRaw(%r)" % (self.text,)


# --- values to Nix ---------------------------------------------------------------------------

def is_identifier(name):
    """True when ``name`` can be written as a bare attribute name."""
    return bool(_ID_RE.match(name)) and name not in NIX_KEYWORDS


def _check_text(text, path):
    if "\0" in text:
        raise NixValueError(path, "contains a NUL character, which Nix strings cannot hold")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NixValueError(path, "is not valid Unicode text (lone surrogate)")


def nix_string(text, path=""):
    """A double-quoted Nix string; escapes \\, ", ${ and the \\n \\r \\t control characters."""
    _check_text(text, path)
    # "${" would start an interpolation; "\${" is a literal one. A lone "$" needs no escape.
    return '"' + _ESCAPE_RE.sub(lambda match: _ESCAPES[match.group(0)], text) + '"'


def attr_name(name, path=""):
    """One attribute name: bare when it is an identifier, else quoted (dots stay inside the name)."""
    if not isinstance(name, str):
        raise NixValueError(path, "attribute names must be strings, not %s %r" % (type(name).__name__, name))
    return name if is_identifier(name) else nix_string(name, path)


def nix_float(value, path=""):
    """A float literal that reads back as the same double (Nix parses float literals with strtod)."""
    if math.isnan(value) or math.isinf(value):
        raise NixValueError(path, "%r has no Nix float literal (Nix has no NaN or infinity)" % value)
    if value != 0.0 and abs(value) < 2.2250738585072014e-308:
        raise NixValueError(path, "%r is a subnormal float, which the Nix parser rejects ('invalid float')" % value)
    text = repr(value)
    mantissa, exp, exponent = text.partition("e")
    if "." not in mantissa:
        # Nix needs a dot in every float literal: 1e+16 is written 1.0e+16.
        mantissa += ".0"
    return mantissa + exp + exponent


def _raw_text(value, path):
    if isinstance(value, NixRaw):
        text = value.text
    else:
        text = value[RAW_MARKER]
        if len(value) != 1:
            raise NixValueError(path, "a dict with %r must have no other keys" % RAW_MARKER)
    if not isinstance(text, str) or not text.strip():
        raise NixValueError(path, "a raw Nix expression must be a non-empty string")
    _check_text(text, path)
    return text


def _is_raw(value):
    return isinstance(value, NixRaw) or (isinstance(value, dict) and RAW_MARKER in value)


class _Renderer:
    """Renders one value; ``indent`` is the number of spaces per nesting level."""

    def __init__(self, indent):
        self.unit = " " * indent

    def expr(self, value, level, path):
        if _is_raw(value):
            return _raw_text(value, path)
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                raise NixValueError(path, "%d does not fit in a Nix integer (64-bit signed)" % value)
            # -9223372036854775808 would be negation of an out-of-range literal.
            return "(%d - 1)" % (value + 1) if value == INT_MIN else str(value)
        if isinstance(value, float):
            return nix_float(value, path)
        if isinstance(value, str):
            return nix_string(value, path)
        if isinstance(value, dict):
            return self.attrs(value, level, path)
        if isinstance(value, (list, tuple)):
            return self.list(value, level, path)
        raise NixValueError(path, "cannot be written as Nix: unsupported type %s" % type(value).__name__)

    def _end(self, text, level):
        # A raw expression may end in a '#' comment, which would swallow what follows on its line.
        return text + "\n" + self.unit * level if "#" in text or "\n" in text else text

    def attrs(self, value, level, path):
        if not value:
            return "{ }"
        lines = ["{"]
        inner = self.unit * (level + 1)
        for key in sorted(value, key=lambda k: (not isinstance(k, str), str(k))):
            names = [attr_name(key, path)]
            child, child_path = value[key], _join(path, key)
            # {"a": {"b": 1}} is printed a.b = 1; the same attribute set, shorter.
            while isinstance(child, dict) and len(child) == 1 and not _is_raw(child):
                (key,) = child.keys()
                names.append(attr_name(key, child_path))
                child, child_path = child[key], _join(child_path, key)
            text = self.expr(child, level + 1, child_path)
            if _is_raw(child):
                text = self._end(text, level + 1)
            lines.append("%s%s = %s;" % (inner, ".".join(names), text))
        lines.append(self.unit * level + "}")
        return "\n".join(lines)

    def item(self, value, level, path):
        text = self.expr(value, level, path)
        if _is_raw(value):
            # Function application (lib.mkForce x) would become several list elements.
            return text if _SIMPLE_RAW_RE.match(text) else "(" + self._end(text, level) + ")"
        if text.startswith("-"):
            return "(" + text + ")"
        return text

    def list(self, value, level, path):
        if not value:
            return "[ ]"
        items = [self.item(v, level + 1, "%s[%d]" % (path, i)) for i, v in enumerate(value)]
        scalar = all(not isinstance(v, (dict, list, tuple)) and not _is_raw(v) for v in value)
        inline = "[ " + " ".join(items) + " ]"
        if scalar and len(inline) <= INLINE_LIST_WIDTH:
            return inline
        inner = self.unit * (level + 1)
        return "[\n" + "".join(inner + item + "\n" for item in items) + self.unit * level + "]"


def _join(path, key):
    return "%s.%s" % (path, key) if path else str(key)


def to_nix(value, indent=2, path=""):
    """The Nix expression for ``value``, starting at column 0, without a trailing newline.

    Raises NixValueError (naming where in ``value``) for NUL characters, non-string keys,
    integers outside 64 bits, NaN/infinity/subnormal floats and unsupported types.
    Negative zero is written -0.0, which Nix evaluates to 0.0 (equal in both languages).
    """
    return _Renderer(indent).expr(value, 0, path)


def render_module(settings, indent=2, header=MODULE_HEADER, path="settings"):
    """A whole NixOS module file: header comment, ``{ config, pkgs, lib, ... }:``, the attribute set."""
    if not isinstance(settings, dict) or _is_raw(settings):
        raise NixValueError(path, "must be a dict (a NixOS module is an attribute set)")
    lines = [line if line.startswith("#") else "# " + line for line in header.splitlines()] if header else []
    lines += [MODULE_ARGS, "", to_nix(settings, indent, path)]
    return "\n".join(lines) + "\n"


# --- checking files with nix-instantiate --------------------------------------------------

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_POSITION_RE = re.compile(r"\bat (.+?):(\d+):(\d+)(?::|$)", re.M)


def parse_check_argv(path, nix_instantiate="nix-instantiate", json_log=True):
    """argv that parses (never evaluates or builds) a Nix file, '-' for stdin.

    ``--store dummy://`` keeps nix-instantiate from creating /nix or needing a daemon;
    ``--log-format internal-json`` (Nix >= 2.4) makes the error position machine-readable.
    """
    argv = [nix_instantiate, "--store", "dummy://", "--parse"]
    if json_log:
        argv += ["--log-format", "internal-json"]
    return argv + [path]


def _plain(text):
    return _ANSI_RE.sub("", text or "")


def nix_error(rc, stderr, path=None):
    """The error of a failed nix-instantiate run as a dict, or None when rc is 0.

    Keys: ``message`` (the parser's own words, e.g. "syntax error, unexpected '='"), ``line``
    and ``column`` (int or None), ``file`` (``path`` when given, else what Nix said),
    ``text`` (the full plain-text message) and ``summary`` ("FILE:LINE:COL: message").
    Reads ``@nix {...}`` JSON lines (--log-format internal-json, Nix 2.4 .. 2.26+) and falls
    back to the text format ("error: ... at FILE:LINE:COL:", Nix 2.3 puts it on one line).
    """
    if rc == 0:
        return None
    error = {"rc": rc, "message": None, "line": None, "column": None, "file": None, "text": ""}
    text_lines = []
    for line in (stderr or "").splitlines():
        if not line.startswith("@nix "):
            text_lines.append(line)
            continue
        try:
            data = json.loads(line[5:])
        except ValueError:
            continue
        if error["message"] is None and isinstance(data, dict) and data.get("action") == "msg" and data.get("level") == 0:
            error["message"] = _plain(data.get("raw_msg")) or _plain(data.get("msg")).replace("error: ", "", 1)
            error["line"], error["column"] = data.get("line"), data.get("column")
            # Nix 2.8 puts the source text itself in "file" when it read stdin; 2.26 appends ":LINE:COL".
            if isinstance(data.get("file"), str) and "\n" not in data["file"]:
                error["file"] = re.sub(r":%s:%s$" % (error["line"], error["column"]), "", data["file"])
            error["text"] = _plain(data.get("msg"))
    if error["message"] is None:
        plain = _plain("\n".join(text_lines)).strip()
        error["text"] = plain
        first = re.search(r"^error:\s*(.*)$", plain, re.M)
        lines = [line for line in plain.splitlines() if line.strip()]
        message = first.group(1) if first else (lines[-1] if lines else "nix-instantiate exited with %d" % rc)
        error["message"] = re.sub(r",? at \S+:\d+:\d+:?$", "", message.strip())
        position = _POSITION_RE.search(plain)
        if position:
            error["file"], error["line"], error["column"] = position.group(1), int(position.group(2)), int(position.group(3))
    error["file"] = path or error["file"]
    where = ":".join(str(part) for part in (error["file"], error["line"], error["column"]) if part is not None)
    error["summary"] = "%s: %s" % (where, error["message"]) if where else error["message"]
    return error
