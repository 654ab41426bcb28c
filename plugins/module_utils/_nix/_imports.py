# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The imports list of a NixOS configuration.nix, edited at the text level.

``ensure_import()`` / ``remove_import()`` edit the top-level ``imports`` list of the
user's configuration.nix with a small tokenizer that knows Nix comments and strings,
so every other byte stays as it was. When no safe place is found they raise
NixEditError instead of guessing. It builds on the lexical basics of _render.py
(identifiers, keywords, the error types); nothing there depends on this file.

Pure functions, no I/O. Private module: not a public API.
"""

from __future__ import annotations

import posixpath
import re

from ansible_collections.nspawn.nixos.plugins.module_utils._nix._render import ID_PATTERN, NIX_KEYWORDS, NixEditError


# Token shapes of the Nix lexer (src/libexpr/lexer.l), enough to find the structure of a file.
_PATH_CHAR = r"[a-zA-Z0-9._+-]"
_TOKEN_RES = (
    ("id", re.compile(ID_PATTERN)),
    ("number", re.compile(r"(([1-9][0-9]*\.[0-9]*)|(0?\.[0-9]+))([Ee][+-]?[0-9]+)?|[0-9]+")),
    ("path", re.compile(rf"{_PATH_CHAR}*(/{_PATH_CHAR}+)+/?")),
    ("path", re.compile(rf"~(/{_PATH_CHAR}+)+/?")),
    ("spath", re.compile(rf"<{_PATH_CHAR}+(/{_PATH_CHAR}+)*>")),
    ("uri", re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:[a-zA-Z0-9%/?:@&=+$,_.!~*'-]+")),
)
_IMPORT_PATH_RE = re.compile(rf"^({_PATH_CHAR}*(/{_PATH_CHAR}+)+|~(/{_PATH_CHAR}+)+)$")
_OPERATORS = ("...", "==", "!=", "<=", ">=", "&&", "||", "->", "//", "++")
_CLOSERS = {"}": ("{", "${"), "]": ("[",), ")": ("(",)}


# --- tokenizer ---------------------------------------------------------------------------

class _Token:
    __slots__ = ("kind", "text", "start", "end")

    def __init__(self, kind, text, start, end):
        self.kind, self.text, self.start, self.end = kind, text, start, end


class _Scanner:
    """Splits Nix source into tokens; strings (with their interpolations) and comments are one token each."""

    def __init__(self, text):
        self.text = text

    def fail(self, pos, problem):
        line = self.text.count("\n", 0, pos) + 1
        raise NixEditError("line %d: %s" % (line, problem))

    def tokens(self):
        tokens: list = []
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
                    self.fail(pos, f"unbalanced {char!r}")
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


class _Module:
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
    return re.match(r"[ \t]*", text[start:]).group(0)  # type: ignore[union-attr]  # matches the empty string too


def _newline(text, pos):
    return "\r\n" if text.startswith("\r\n", pos) else "\n"


def _check_import_path(path):
    if not isinstance(path, str) or not _IMPORT_PATH_RE.match(path):
        raise NixEditError(f"{path!r} is not a Nix path literal such as ./ansible.nix")
    return path


def _parse_module(text, path, action):
    try:
        return _Module(text)
    except NixEditError as exc:
        raise NixEditError(f"cannot safely {action} the imports list of configuration.nix ({exc}); edit it by hand: imports = [ {path} ];")


def import_path(config_file, module_file):
    """The Nix path literal that imports ``module_file`` from ``config_file`` (./ansible.nix)."""
    relative = posixpath.relpath(module_file, posixpath.dirname(config_file))
    return _check_import_path(relative if relative.startswith("../") else f"./{relative}")


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
        addition = f"imports = [ {path} ];"
        if line_break is None:
            spacer = "" if text[brace.end:brace.end + 1] in (" ", "\t", "\n", "\r") else " "
            return f"{text[:brace.end]} {addition}{spacer}{text[brace.end:]}"
        after = [token for token in module.all_tokens if token.start > line_break]
        if after[0] is tokens[module.body[1]]:
            indent = f"{_leading_blanks(text, brace.start)}  "
        else:
            indent = _leading_blanks(text, after[0].start)
        newline = _newline(text, line_break)
        at = line_break + len(newline)
        return text[:at] + indent + addition + newline + text[at:]
    opening, closing = module.imports_list
    if closing == opening + 1:
        at = tokens[opening].end
        return f"{text[:at]} {path}{' ' if text[at:at + 1] == ']' else ''}{text[at:]}"
    last = tokens[closing - 1]
    first = tokens[module.match.get(closing - 1, closing - 1)]
    line_break = _line_break_after(text, last.end)
    if line_break is None:
        return f"{text[:last.end]} {path}{text[last.end:]}"
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
    after = re.match(r"[ \t]*", text[end:]).group(0)  # type: ignore[union-attr]  # matches the empty string too
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
