# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Nix for the nixos_config module: values to Nix text, the imports list, parser errors.

Three pure parts, no I/O:

* ``to_nix()`` / ``render_module()`` turn Ansible data (dict, list, str, int,
  float, bool, None) into a Nix expression or a whole NixOS module file.
  Attribute names are sorted, so the same data always gives the same bytes
  (idempotency), whatever order a playbook built its dicts in. A key is one
  attribute name even when it contains dots: ``{"a.b": 1}`` is ``"a.b" = 1;``;
  nest dicts to nest attributes (single-key chains are printed as ``a.b.c``).
  Raw Nix is inserted verbatim when marked explicitly: ``NixRaw("pkgs.hello")``
  in Python, ``{"__nix_raw__": "pkgs.hello"}`` from a playbook.
* ``ensure_import()`` / ``remove_import()`` edit the top-level ``imports`` list
  of the user's configuration.nix at the text level with a small tokenizer that
  knows Nix comments and strings, so every other byte stays as it was. When no
  safe place is found they raise NixEditError instead of guessing.
* ``parse_check_argv()`` / ``nix_error()`` build the ``nix-instantiate --parse``
  command line and read its error (line, column, message).

Private module: not a public API.
"""

from __future__ import annotations

import json
import math
import posixpath
import re

RAW_MARKER = "__nix_raw__"
MODULE_ARGS = "{ config, pkgs, lib, ... }:"
MODULE_HEADER = "# Managed by Ansible (nspawn.nixos.nixos_config); local changes will be overwritten."
NIX_KEYWORDS = frozenset(("assert", "else", "if", "in", "inherit", "let", "or", "rec", "then", "with"))
INT_MIN = -(2 ** 63)
INT_MAX = 2 ** 63 - 1
# Scalar lists up to this width stay on one line.
INLINE_LIST_WIDTH = 72

# Token shapes of the Nix lexer (src/libexpr/lexer.l), enough to find the structure of a file.
_ID = r"[a-zA-Z_][a-zA-Z0-9_'-]*"
_PATH_CHAR = r"[a-zA-Z0-9._+-]"
_TOKEN_RES = (
    ("id", re.compile(_ID)),
    ("number", re.compile(r"(([1-9][0-9]*\.[0-9]*)|(0?\.[0-9]+))([Ee][+-]?[0-9]+)?|[0-9]+")),
    ("path", re.compile(r"%s*(/%s+)+/?" % (_PATH_CHAR, _PATH_CHAR))),
    ("path", re.compile(r"~(/%s+)+/?" % _PATH_CHAR)),
    ("spath", re.compile(r"<%s+(/%s+)*>" % (_PATH_CHAR, _PATH_CHAR))),
    ("uri", re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:[a-zA-Z0-9%/?:@&=+$,_.!~*'-]+")),
)
_ID_RE = re.compile(r"^%s$" % _ID)
_IMPORT_PATH_RE = re.compile(r"^(%s*(/%s+)+|~(/%s+)+)$" % (_PATH_CHAR, _PATH_CHAR, _PATH_CHAR))
_SIMPLE_RAW_RE = re.compile(r"^%s(\.%s)*$" % (_ID, _ID))
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "$": "\\$"}
_ESCAPE_RE = re.compile(r'["\\\n\r\t]|\$(?=\{)')
_OPERATORS = ("...", "==", "!=", "<=", ">=", "&&", "||", "->", "//", "++")
_CLOSERS = {"}": ("{", "${"), "]": ("[",), ")": ("(",)}


class NixError(ValueError):
    """Base class of this module's errors."""


class NixValueError(NixError):
    """A value that cannot be written as Nix; ``path`` says where it is in the data."""

    def __init__(self, path, problem):
        self.path = path
        self.problem = problem
        super(NixValueError, self).__init__("%s: %s" % (path or "value", problem))


class NixEditError(NixError):
    """configuration.nix cannot be edited safely; the message says how to do it by hand."""


class NixRaw(object):
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


class _Renderer(object):
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


# --- tokenizer ---------------------------------------------------------------------------

class _Token(object):
    __slots__ = ("kind", "text", "start", "end")

    def __init__(self, kind, text, start, end):
        self.kind, self.text, self.start, self.end = kind, text, start, end


class _Scanner(object):
    """Splits Nix source into tokens; strings (with their interpolations) and comments are one token each."""

    def __init__(self, text):
        self.text = text

    def fail(self, pos, problem):
        line = self.text.count("\n", 0, pos) + 1
        raise NixEditError("line %d: %s" % (line, problem))

    def tokens(self):
        tokens = []
        self.code(0, tokens, nested=False)
        return tokens

    def code(self, pos, tokens, nested):
        """Scans code up to EOF, or (nested) the '}' that closes an interpolation; returns the end."""
        text, stack = self.text, []
        while pos < len(text):
            char = text[pos]
            if char in " \t\r\n":
                pos += 1
                continue
            start = pos
            if char == "#":
                end = text.find("\n", pos)
                pos, kind = (len(text) if end < 0 else end), "comment"
            elif text.startswith("/*", pos):
                end = text.find("*/", pos + 2)
                if end < 0:
                    self.fail(pos, "unterminated /* comment")
                pos, kind = end + 2, "comment"
            elif char == '"':
                pos, kind = self.string(pos + 1), "string"
            elif text.startswith("''", pos):
                pos, kind = self.indented_string(pos + 2), "string"
            elif text.startswith("${", pos) or char in "{[(":
                opener = "${" if char == "$" else char
                stack.append(opener)
                pos, kind = pos + len(opener), "punct"
            elif char in _CLOSERS:
                if not stack and nested and char == "}":
                    return pos + 1
                if not stack or stack.pop() not in _CLOSERS[char]:
                    self.fail(pos, "unbalanced %r" % char)
                pos, kind = pos + 1, "punct"
            else:
                pos, kind = self.word(pos)
            tokens.append(_Token(kind, text[start:pos], start, pos))
        if nested or stack:
            self.fail(pos, "unexpected end of file (unclosed bracket or interpolation)")
        return pos

    def word(self, pos):
        best = None
        for kind, regex in _TOKEN_RES:
            match = regex.match(self.text, pos)
            # The Nix lexer takes the longest match (a/b is a path, x:y a URI).
            if match and (best is None or match.end() > best[0]):
                best = (match.end(), kind)
        if best:
            return best
        for operator in _OPERATORS:
            if self.text.startswith(operator, pos):
                return pos + len(operator), "punct"
        return pos + 1, "punct"

    def string(self, pos):
        text = self.text
        while pos < len(text):
            char, following = text[pos], text[pos + 1:pos + 2]
            if char == '"':
                return pos + 1
            if char == "\\":
                pos += 2
            elif char == "$" and following == "{":
                pos = self.code(pos + 2, [], nested=True)
            elif char == "$" and following == "\\":
                pos += 3
            elif char == "$" and following not in ('"', ""):
                pos += 2  # "$$" is two literal dollars: "$${x}" is no interpolation
            else:
                pos += 1
        return self.fail(pos, "unterminated string")

    def indented_string(self, pos):
        text = self.text
        while pos < len(text):
            if text.startswith("'''", pos) or text.startswith("''$", pos):
                pos += 3
            elif text.startswith("''\\", pos):
                pos += 4
            elif text.startswith("''", pos):
                return pos + 2
            elif text.startswith("${", pos):
                pos = self.code(pos + 2, [], nested=True)
            elif text[pos] == "$" and text[pos + 1:pos + 2] not in ("{", "'", ""):
                pos += 2  # "$$" is two literal dollars
            elif text[pos] == "'" and text[pos + 1:pos + 2] not in ("'", "$", ""):
                pos += 2
            else:
                pos += 1
        return self.fail(pos, "unterminated ''indented string''")


# --- the imports list of configuration.nix -----------------------------------------------

_OPENERS = ("{", "${", "[", "(")


class _Module(object):
    """A NixOS module's source: tokens, its body attribute set and its ``imports = [ ... ];``.

    ``body`` and ``imports_list`` are (open, close) indexes into ``tokens``; ``binding`` is
    (first, last) of the whole ``imports = [ ... ];`` binding, or None when there is none.
    """

    def __init__(self, text):
        self.text = text
        self.all_tokens = _Scanner(text).tokens()
        self.tokens = [token for token in self.all_tokens if token.kind != "comment"]
        self.match = {}
        stack = []
        for index, token in enumerate(self.tokens):
            if token.kind == "punct" and token.text in _OPENERS:
                stack.append(index)
            elif token.kind == "punct" and token.text in _CLOSERS:
                opener = stack.pop()
                self.match[opener], self.match[index] = index, opener
        self.body = self._find_body()
        self.binding, self.imports_list = self._find_imports()

    def _is(self, index, kind, text=None):
        if index >= len(self.tokens):
            return False
        token = self.tokens[index]
        return token.kind == kind and (text is None or token.text == text)

    def _next(self, index):
        """The index after the token at ``index``, or after its whole group when it opens one."""
        return self.match.get(index, index) + 1 if self.tokens[index].text in _OPENERS else index + 1

    def _skip_let(self, index):
        depth = 0
        while index < len(self.tokens):
            if self._is(index, "id", "let"):
                depth += 1
            elif self._is(index, "id", "in"):
                depth -= 1
                if not depth:
                    return index + 1
            index = self._next(index)
        raise NixEditError("'let' without 'in'")

    def _skip_statement(self, index):
        """Past the ';' that ends ``with EXPR;``, ``assert EXPR;`` or ``inherit ...;``."""
        while index < len(self.tokens) and not self._is(index, "punct", ";"):
            index = self._next(index)
        if index >= len(self.tokens):
            raise NixEditError("missing ';'")
        return index + 1

    def _find_body(self):
        index = 0
        while index < len(self.tokens):
            if self._is(index, "punct", "{") and self._is(self.match[index] + 1, "punct", ":"):
                index = self.match[index] + 2  # { config, pkgs, ... }:
            elif self._is(index, "punct", "{") and self._is(self.match[index] + 1, "punct", "@") \
                    and self._is(self.match[index] + 3, "punct", ":"):
                index = self.match[index] + 4  # { ... }@args:
            elif self._is(index, "id") and self._is(index + 1, "punct", ":") and self.tokens[index].text not in NIX_KEYWORDS:
                index += 2  # args:
            elif self._is(index, "id") and self._is(index + 1, "punct", "@") and self._is(index + 2, "punct", "{") \
                    and self._is(self.match[index + 2] + 1, "punct", ":"):
                index = self.match[index + 2] + 2  # args@{ ... }:
            elif self._is(index, "id", "let"):
                index = self._skip_let(index)
            elif self._is(index, "id", "with") or self._is(index, "id", "assert"):
                index = self._skip_statement(index)
            elif self._is(index, "id", "rec"):
                index += 1
            else:
                break
        if not self._is(index, "punct", "{"):
            raise NixEditError("the module's body is not an attribute set { ... }")
        if self.match[index] != len(self.tokens) - 1:
            raise NixEditError("something follows the module's attribute set (such as // or a function call)")
        return index, self.match[index]

    def _find_imports(self):
        index, close = self.body[0] + 1, self.body[1]
        at_binding_start = True
        while index < close:
            token = self.tokens[index]
            if at_binding_start and self._is(index, "id", "inherit"):
                end = self._skip_statement(index)
                if any(self._is(i, "id", "imports") for i in range(index, end)):
                    raise NixEditError("imports is inherited, not a list literal")
                index = end
                continue
            if at_binding_start and token.text in ("imports", '"imports"') and self._is(index + 1, "punct", "="):
                if not self._is(index + 2, "punct", "[") or not self._is(self.match[index + 2] + 1, "punct", ";"):
                    raise NixEditError("imports is not a plain list literal 'imports = [ ... ];'")
                return (index, self.match[index + 2] + 1), (index + 2, self.match[index + 2])
            # A let inside a value has bindings of its own; they are not the module's.
            index = self._skip_let(index) if self._is(index, "id", "let") else self._next(index)
            at_binding_start = token.text == ";" and token.kind == "punct"
        return None, None

    def elements(self):
        """Indexes of the tokens directly inside the imports list (groups count as one)."""
        if self.imports_list is None:
            return []
        index, close, found = self.imports_list[0] + 1, self.imports_list[1], []
        while index < close:
            found.append(index)
            index = self._next(index)
        return found

    def imported(self, path):
        return [i for i in self.elements() if self._is(i, "path", path)]


def _line_break_after(text, pos):
    """Where the line that ``pos`` is on ends, when only blanks and comments follow; else None."""
    while pos < len(text):
        if text[pos] in " \t":
            pos += 1
        elif text[pos] == "#":
            end = text.find("\n", pos)
            return None if end < 0 else (end - 1 if text[end - 1] == "\r" else end)
        elif text.startswith("\r\n", pos) or text[pos] == "\n":
            return pos
        elif text.startswith("/*", pos) and "\n" not in text[pos:text.find("*/", pos)] and "*/" in text[pos:]:
            pos = text.find("*/", pos) + 2
        else:
            return None
    return None


def _indent_at(text, pos):
    """Blanks lining a new line up with ``pos`` (tabs kept, other characters as spaces)."""
    prefix = text[text.rfind("\n", 0, pos) + 1:pos]
    return re.sub(r"[^\t]", " ", prefix)


def _leading_blanks(text, pos):
    start = text.rfind("\n", 0, pos) + 1
    return re.match(r"[ \t]*", text[start:]).group(0)


def _newline(text, pos):
    return "\r\n" if text.startswith("\r\n", pos) else "\n"


def _check_import_path(path):
    if not isinstance(path, str) or not _IMPORT_PATH_RE.match(path):
        raise NixEditError("%r is not a Nix path literal such as ./ansible.nix" % (path,))
    return path


def _parse_module(text, path, action):
    try:
        return _Module(text)
    except NixEditError as exc:
        raise NixEditError("cannot safely %s the imports list of configuration.nix (%s); edit it by hand: imports = [ %s ];"
                           % (action, exc, path))


def import_path(config_file, module_file):
    """The Nix path literal that imports ``module_file`` from ``config_file`` (./ansible.nix)."""
    relative = posixpath.relpath(module_file, posixpath.dirname(config_file))
    return _check_import_path(relative if relative.startswith("../") else "./" + relative)


def has_import(text, path):
    """True when the module's top-level imports list holds the path literal ``path``."""
    return bool(_parse_module(text, _check_import_path(path), "read").imported(path))


def ensure_import(text, path):
    """``text`` with ``path`` in the top-level imports list, added once; unchanged when it is there.

    A new entry goes on its own line after the last one (same indentation) when the list
    spans lines, else after the last entry on the same line. Without any imports binding,
    ``imports = [ PATH ];`` is added as the first binding of the module's attribute set.
    Raises NixEditError when the file has no place that is certainly safe.
    """
    module = _parse_module(text, _check_import_path(path), "extend")
    tokens = module.tokens
    if module.imported(path):
        return text
    if module.imports_list is None:
        brace = tokens[module.body[0]]
        line_break = _line_break_after(text, brace.end)
        addition = "imports = [ %s ];" % path
        if line_break is None:
            spacer = "" if text[brace.end:brace.end + 1] in (" ", "\t", "\n", "\r") else " "
            return text[:brace.end] + " " + addition + spacer + text[brace.end:]
        after = [token for token in module.all_tokens if token.start > line_break]
        if after[0] is tokens[module.body[1]]:
            indent = _leading_blanks(text, brace.start) + "  "
        else:
            indent = _leading_blanks(text, after[0].start)
        newline = _newline(text, line_break)
        at = line_break + len(newline)
        return text[:at] + indent + addition + newline + text[at:]
    opening, closing = module.imports_list
    if closing == opening + 1:
        at = tokens[opening].end
        return text[:at] + " " + path + (" " if text[at:at + 1] == "]" else "") + text[at:]
    last = tokens[closing - 1]
    first = tokens[module.match.get(closing - 1, closing - 1)]
    line_break = _line_break_after(text, last.end)
    if line_break is None:
        return text[:last.end] + " " + path + text[last.end:]
    insertion = _newline(text, line_break) + _indent_at(text, first.start) + path
    return text[:line_break] + insertion + text[line_break:]


def _cut(text, start, end):
    """Removes text[start:end] with its whole line when nothing else is on it, else with the blanks before it."""
    line_start = text.rfind("\n", 0, start) + 1
    rest = re.match(r"[ \t]*(\r?\n|$)", text[end:])
    if not text[line_start:start].strip(" \t") and rest:
        return text[:line_start] + text[end + len(rest.group(0)):]
    before = len(text[line_start:start]) - len(text[line_start:start].rstrip(" \t"))
    if before:
        return text[:start - before] + text[end:]
    after = re.match(r"[ \t]*", text[end:]).group(0)
    return text[:start] + text[end + len(after):]


def remove_import(text, path):
    """``text`` without ``path`` in the top-level imports list; unchanged when it is not there.

    When nothing else (no other entry, no comment) is left in the list, the whole
    ``imports = [ ... ];`` binding goes, so ensure_import() then remove_import() gives back
    the original file.
    """
    module = _parse_module(text, _check_import_path(path), "edit")
    found = module.imported(path)
    if not found:
        return text
    opening, closing = module.imports_list
    tokens = module.tokens
    commented = any(token.kind == "comment" and tokens[opening].end <= token.start < tokens[closing].start
                    for token in module.all_tokens)
    if len(found) == len(module.elements()) and not commented:
        first, last = module.binding
        return _cut(text, tokens[first].start, tokens[last].end)
    for index in reversed(found):
        text = _cut(text, tokens[index].start, tokens[index].end)
    return text


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
