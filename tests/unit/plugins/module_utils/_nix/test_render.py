# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""_nix: rendered values are read back by the real nix-instantiate; imports edits are parsed by it.

nix-instantiate runs only as ``nix-instantiate --store dummy://`` (no /nix, no daemon, no
network). Tests that need it are skipped with a reason when it is missing.
Hypothesis runs derandomized (the same examples every run, so a gate is reproducible);
set NSPAWN_NIXOS_RANDOM_TESTS=1 to explore new examples.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.nspawn.nixos.plugins.module_utils._nix import _render as _nix
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._render import (
    INT_MAX, INT_MIN, MODULE_ARGS, MODULE_HEADER, NixRaw, NixValueError, RAW_MARKER, attr_name, is_identifier, nix_error, nix_float,
    nix_string, parse_check_argv, render_module, to_nix,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._imports import (
    NixEditError, ensure_import, has_import, import_path, remove_import,
)

NIX = shutil.which("nix-instantiate")
needs_nix = pytest.mark.skipif(NIX is None, reason="nix-instantiate is not installed (Debian/Ubuntu package nix-bin)")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".."))
COUNT_FILE = os.path.join(ROOT, "tests", "output", "nix-roundtrip-count.txt")
RANDOM = os.environ.get("NSPAWN_NIXOS_RANDOM_TESTS") == "1"
PROPERTY = settings(deadline=None, derandomize=not RANDOM, database=None if not RANDOM else settings.default.database,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def examples(count):
    return settings(PROPERTY, max_examples=count)


def run_nix(*args, **kwargs):
    return subprocess.run([NIX, "--store", "dummy://"] + list(args), capture_output=True, text=True,
                          env=dict(os.environ, NO_COLOR="1"), check=False, **kwargs)


def nix_eval(tmp_path, expression, name="expr.nix"):
    path = tmp_path / name
    path.write_text(expression, encoding="utf-8")
    result = run_nix("--eval", "--strict", "--json", str(path))
    # rc first: stdout may hold partial JSON on failure.
    assert result.returncode == 0, result.stderr + "\n--- expression:\n" + expression
    return json.loads(result.stdout)


def nix_parse(*paths):
    result = run_nix("--parse", *[str(p) for p in paths])
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


# --- to_nix: exact text --------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (None, "null"), (True, "true"), (False, "false"), (0, "0"), (-5, "-5"), (INT_MAX, "9223372036854775807"),
    (INT_MIN, "(-9223372036854775807 - 1)"), (1.5, "1.5"), (-2.25, "-2.25"), (1e16, "1.0e+16"), (1e-7, "1.0e-07"),
    (1.5e300, "1.5e+300"), (0.0, "0.0"), (-0.0, "-0.0"), (100000.0, "100000.0"),
    ("", '""'), ('a"b\\c', '"a\\"b\\\\c"'), ("x${y}", '"x\\${y}"'), ("$", '"$"'), ("$$", '"$$"'), ("$${", '"$\\${"'),
    ("a\nb\r\tc", '"a\\nb\\r\\tc"'), ("''", "\"''\""), ("\U0001F600", '"\U0001F600"'),
    ([], "[ ]"), ({}, "{ }"), ([1, -1, "a"], '[ 1 (-1) "a" ]'), ([1.5, -0.5], "[ 1.5 (-0.5) ]"),
    (NixRaw("pkgs.hello"), "pkgs.hello"), ({RAW_MARKER: "lib.mkDefault 1"}, "lib.mkDefault 1"),
    ([NixRaw("pkgs.hello"), NixRaw("lib.mkForce true")], "[\n  pkgs.hello\n  (lib.mkForce true)\n]"),
    ((1, 2), "[ 1 2 ]"),
])
def test_to_nix_text(value, text):
    assert to_nix(value) == text


def test_keys_are_sorted_quoted_when_needed_and_never_split():
    value = {"b": 1, "a": 2, "services.nginx.enable": True, "let": 3, "a b": 4, "": 5, "${x}": 6, "x-y'": 7}
    assert to_nix(value) == "\n".join([
        "{",
        '  "" = 5;',
        '  "${x}" = 6;'.replace("${", "\\${"),
        "  a = 2;",
        '  "a b" = 4;',
        "  b = 1;",
        '  "let" = 3;',
        '  "services.nginx.enable" = true;',
        "  x-y' = 7;",
        "}",
    ])


def test_single_key_chains_become_attribute_paths():
    assert to_nix({"a": {"b": {"c": 1}}, "d": {"e": {}}, "f": {"g": {RAW_MARKER: "x"}}}) == (
        "{\n  a.b.c = 1;\n  d.e = { };\n  f.g = x;\n}")


def test_raw_with_comment_or_newline_cannot_swallow_what_follows():
    assert to_nix({"a": NixRaw("1 # one")}) == "{\n  a = 1 # one\n  ;\n}"
    assert to_nix([NixRaw("f 1 # one")]) == "[\n  (f 1 # one\n  )\n]"


@pytest.mark.parametrize("name, bare", [
    ("a", True), ("_a", True), ("a-b'c", True), ("A1", True), ("let", False), ("in", False), ("or", False),
    ("inherit", False), ("1a", False), ("-a", False), ("'a", False), ("", False), ("a.b", False), ("é", False),
    ("true", True), ("null", True),
])
def test_is_identifier(name, bare):
    assert is_identifier(name) is bare
    assert attr_name(name) == (name if bare else nix_string(name))


@pytest.mark.parametrize("value, fragment", [
    ("a\0b", "NUL"), ({"a\0": 1}, "NUL"), ({1: "a"}, "must be strings, not int"), ({None: 1}, "not NoneType"),
    (float("nan"), "NaN"), (float("inf"), "infinity"), (-float("inf"), "infinity"), (5e-324, "subnormal"),
    (INT_MAX + 1, "64-bit"), (INT_MIN - 1, "64-bit"), (b"x", "unsupported type bytes"), ({1, 2}, "unsupported type set"),
    ({RAW_MARKER: "x", "b": 1}, "no other keys"), ({RAW_MARKER: 1}, "non-empty string"), (NixRaw("  "), "non-empty"),
    (NixRaw("a\0"), "NUL"), ("\ud800", "surrogate"), (object(), "unsupported type object"),
])
def test_to_nix_rejects(value, fragment):
    with pytest.raises(NixValueError, match=fragment):
        to_nix(value)


def test_errors_name_the_place_in_the_data():
    with pytest.raises(NixValueError) as info:
        to_nix({"services": {"x": [1, {"y": "a\0"}]}, "z": 1}, path="settings")
    assert info.value.path == "settings.services.x[1].y"
    assert str(info.value).startswith("settings.services.x[1].y: ")


def test_render_module_requires_a_dict():
    for value in ([], "x", NixRaw("{ }"), {RAW_MARKER: "{ }"}):
        with pytest.raises(NixValueError, match="settings: must be a dict"):
            render_module(value)


def test_nix_float_needs_a_dot():
    assert nix_float(1e300) == "1.0e+300"
    assert nix_float(123.0) == "123.0"


# --- the article's example ------------------------------------------------------------------

ARTICLE = {"services": {"nginx": {"enable": True, "virtualHosts": {"default": {"listen": [{"port": 9000, "addr": ""}]}}}}}
ARTICLE_TEXT = """\
# Managed by Ansible (nspawn.nixos.nixos_config); local changes will be overwritten.
{ config, pkgs, lib, ... }:

{
  services.nginx = {
    enable = true;
    virtualHosts.default.listen = [
      {
        addr = "";
        port = 9000;
      }
    ];
  };
}
"""


def test_article_example_text():
    assert render_module(ARTICLE) == ARTICLE_TEXT
    assert ARTICLE_TEXT.splitlines()[0] == MODULE_HEADER and ARTICLE_TEXT.splitlines()[1] == MODULE_ARGS


@needs_nix
def test_article_example_evaluates(tmp_path):
    (tmp_path / "ansible.nix").write_text(render_module(ARTICLE), encoding="utf-8")
    expression = "import ./ansible.nix { config = { }; pkgs = { }; lib = { }; }"
    assert nix_eval(tmp_path, expression) == ARTICLE
    nix_parse(tmp_path / "ansible.nix")


@needs_nix
def test_module_with_raw_values_evaluates(tmp_path):
    settings_ = {"environment": {"systemPackages": [NixRaw("pkgs.hello"), {RAW_MARKER: "builtins.head [ pkgs.vim ]"}]},
                 "x": {RAW_MARKER: "lib.id 3 # three"}, "y": [NixRaw("lib.id (-2)")]}
    (tmp_path / "ansible.nix").write_text(render_module(settings_, header="line one\n# line two"), encoding="utf-8")
    expression = 'import ./ansible.nix { config = { }; pkgs = { hello = "h"; vim = "v"; }; lib = { id = x: x; }; }'
    assert nix_eval(tmp_path, expression) == {"environment": {"systemPackages": ["h", "v"]}, "x": 3, "y": [-2]}
    assert (tmp_path / "ansible.nix").read_text().startswith("# line one\n# line two\n{ config")


# --- round trip of arbitrary values through the real nix-instantiate -------------------------

# Nix 2.8 prints floats in JSON with 6 digits, so the expression turns every float into an
# exact (mantissa, exponent) pair of integers before printing.
DECODE_FLOATS = """\
let
  up = x: e: if x == builtins.floor x then { m = builtins.floor x; inherit e; } else up (x * 2.0) (e - 1);
  down = x: e: if x >= 9007199254740992.0 then down (x / 2.0) (e + 1) else up x e;
  parts = x: if x == 0.0 then { m = 0; e = 0; }
    else if x < 0.0 then (let r = parts (0.0 - x); in { m = 0 - r.m; inherit (r) e; })
    else down x 0;
  walk = v: if builtins.isFloat v then { "__float__" = parts v; }
    else if builtins.isAttrs v then builtins.mapAttrs (name: walk) v
    else if builtins.isList v then map walk v
    else v;
in
map walk [
"""


def canonical_parts(mantissa, exponent):
    while mantissa and mantissa % 2 == 0:
        mantissa, exponent = mantissa // 2, exponent + 1
    return {"m": mantissa, "e": exponent if mantissa else 0}


def expected_json(value):
    if isinstance(value, float):
        mantissa, exponent = math.frexp(value)
        return {"__float__": canonical_parts(int(mantissa * 2 ** 53), exponent - 53)}
    if isinstance(value, dict):
        return dict((key, expected_json(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return [expected_json(item) for item in value]
    return value


def from_nix(value):
    if isinstance(value, dict) and set(value) == {"__float__"} and set(value["__float__"]) == {"m", "e"}:
        return {"__float__": canonical_parts(value["__float__"]["m"], value["__float__"]["e"])}
    if isinstance(value, dict):
        return dict((key, from_nix(item)) for key, item in value.items())
    if isinstance(value, list):
        return [from_nix(item) for item in value]
    return value


def same(expected, actual):
    """Equality that tells True from 1 (Python's == does not)."""
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, dict):
        return set(expected) == set(actual) and all(same(expected[k], actual[k]) for k in expected)
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(same(e, a) for e, a in zip(expected, actual))
    return expected == actual


TRICKY_TEXT = ["", '"', "\\", "${", "$", "$${", "\\${", "''", "''${", "'''", "\n", "\r\n", "\r", "\t", "é", "\U0001F600",
               "${x}", "$\\", 'a"b\\c', "#", "/*", "*/", "\x01", "\x7f", "\u2028", "\ufeff", " ", "{", "}", ";", "\\n"]
TRICKY_KEYS = ["", " ", "a b", "a.b", "services.nginx.enable", "let", "in", "rec", "if", "then", "else", "or", "inherit",
               "assert", "with", "true", "null", "__curPos", "a'b", "a-b", "-a", "1a", "_", "'", "x"]
characters = st.characters(exclude_characters="\0", exclude_categories=("Cs",))
texts = st.one_of(st.sampled_from(TRICKY_TEXT), st.text(characters, max_size=12),
                  st.lists(st.sampled_from(TRICKY_TEXT), max_size=6).map("".join))
keys = st.one_of(st.sampled_from(TRICKY_KEYS), texts).filter(lambda key: key != RAW_MARKER)
scalars = st.one_of(
    st.none(), st.booleans(), texts,
    st.integers(INT_MIN, INT_MAX), st.sampled_from([INT_MIN, INT_MAX, -1, 0, 2 ** 53 + 1]),
    st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False),
    st.sampled_from([0.1, -0.0, 1e16, 1e-300, 2.2250738585072014e-308, 1.7976931348623157e308, 2.0 ** 53 + 2, 0.30000000000000004]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=16)


@needs_nix
def test_values_round_trip_through_nix(tmp_path):
    stats = {"values": 0, "calls": 0}

    @examples(150)
    @given(st.lists(values, min_size=10, max_size=40))
    def check(batch):
        expression = DECODE_FLOATS + "".join("(\n%s\n)\n" % to_nix(value) for value in batch) + "]\n"
        result = nix_eval(tmp_path, expression)
        stats["calls"] += 1
        assert len(result) == len(batch)
        for value, actual in zip(batch, result):
            assert same(expected_json(value), from_nix(actual)), (value, actual, to_nix(value))
        stats["values"] += len(batch)

    started = time.monotonic()
    check()
    elapsed = time.monotonic() - started
    report = "%d values checked against nix-instantiate in %d calls, %.1f s\n" % (stats["values"], stats["calls"], elapsed)
    os.makedirs(os.path.dirname(COUNT_FILE), exist_ok=True)
    with open(COUNT_FILE, "w") as handle:
        handle.write(report)
    print(report)
    assert stats["values"] >= 1000


@needs_nix
@examples(60)
@given(st.dictionaries(keys, values, max_size=6))
def test_rendered_modules_parse(tmp_path_factory, settings_):
    path = tmp_path_factory.mktemp("module") / "ansible.nix"
    text = render_module(settings_)
    assert text.endswith("}\n") and render_module(settings_) == text
    path.write_text(text, encoding="utf-8")
    nix_parse(path)


# --- imports in configuration.nix -----------------------------------------------------------

UPSTREAM = """\
{ pkgs, modulesPath, ... }:

{
  imports = [
    (modulesPath + "/profiles/minimal.nix")
    ./nspawn-image.nix
  ];

  networking.hostName = "nixos";

  # activate Nix Flakes
  nix.extraOptions = ''
    experimental-features = nix-command flakes
  '';

  environment.systemPackages = with pkgs; [
    git
    vim
    wget
  ];

  system.stateVersion = "24.05";

  # Set an initial password here or at runtime do `machinectl shell nixos` and
  # run `passwd` there.
  # users.users.root.initialHashedPassword = "";
}
"""
UPSTREAM_AFTER = UPSTREAM.replace("    ./nspawn-image.nix\n", "    ./nspawn-image.nix\n    ./ansible.nix\n")

GENERATED = """\
# Edit this configuration file to define what should be installed on
# your system.  Help is available in the configuration.nix(5) man page
{ config, pkgs, ... }:

{
  imports =
    [ # Include the results of the hardware scan.
      ./hardware-configuration.nix
    ];

  boot.loader.grub.device = "/dev/sda"; # or "nodev" for efi only
}
"""

NO_IMPORTS = """\
{ config, lib, pkgs, ... }:
{
  boot.isContainer = true;
  networking.firewall.allowedTCPPorts = [ 80 443 ];
}
"""

# Braces and brackets in strings and comments must not move the insertion point.
TRICKY = r"""{ config, pkgs, lib, modulesPath, ... }@args:
/* { imports = [ ./wrong.nix ]; } */
let
  imports = [ ./not-this.nix ];
  brace = "}{ ] [ ${"nested ${"}"}"} \" \${ imports = [";
in
with lib;
{ # the module { [
  environment.etc."x".text = ''
    imports = [ ${brace} ''${not} ''' ]
  '';
  imports = [ "${modulesPath}/virtualisation/lxc-container.nix" <nixpkgs/nixos/modules/profiles/minimal.nix>
    ./a.nix # trailing { comment
  ];
  y = let imports = [ ]; in imports; # } ]
}
"""

CASES = [
    ("upstream", UPSTREAM, UPSTREAM_AFTER),
    ("generated", GENERATED, GENERATED.replace("      ./hardware-configuration.nix\n",
                                               "      ./hardware-configuration.nix\n      ./ansible.nix\n")),
    ("no imports", NO_IMPORTS, NO_IMPORTS.replace("{\n  boot", "{\n  imports = [ ./ansible.nix ];\n  boot")),
    ("tricky", TRICKY, TRICKY.replace("./a.nix # trailing { comment\n", "./a.nix # trailing { comment\n    ./ansible.nix\n")),
    ("one line", "{ imports = [ ./a.nix ./b.nix ]; }", "{ imports = [ ./a.nix ./b.nix ./ansible.nix ]; }"),
    ("one line body", "x: { a = 1; }", "x: { imports = [ ./ansible.nix ]; a = 1; }"),
    ("no space", "{ imports = [./a.nix]; }", "{ imports = [./a.nix ./ansible.nix]; }"),
    ("rec and with", "{ pkgs, ... }: with pkgs; rec {\n\ta = 1;\n}\n", "{ pkgs, ... }: with pkgs; rec {\n\timports = [ ./ansible.nix ];\n\ta = 1;\n}\n"),
    ("args at", "args@{ ... }:\n{\n}\n", "args@{ ... }:\n{\n  imports = [ ./ansible.nix ];\n}\n"),
    ("crlf", "{ ... }:\r\n{\r\n  imports = [\r\n    ./a.nix\r\n  ];\r\n}\r\n",
     "{ ... }:\r\n{\r\n  imports = [\r\n    ./a.nix\r\n    ./ansible.nix\r\n  ];\r\n}\r\n"),
    ("comment after bracket", "{\n  imports = [ ./a.nix # hw\n  ];\n}\n", "{\n  imports = [ ./a.nix # hw\n              ./ansible.nix\n  ];\n}\n"),
    ("group last", "{\n  imports = [\n    (import ./x.nix {\n      a = 1;\n    })\n  ];\n}\n",
     "{\n  imports = [\n    (import ./x.nix {\n      a = 1;\n    })\n    ./ansible.nix\n  ];\n}\n"),
    ("dollar strings", '{ a = "$${"; b = "\\${x"; c = \'\'$${ x \'\'; }', '{ imports = [ ./ansible.nix ]; a = "$${"; b = "\\${x"; c = \'\'$${ x \'\'; }'),
    ("quoted imports", '{ "imports" = [ ./a.nix ]; }', '{ "imports" = [ ./a.nix ./ansible.nix ]; }'),
]


@pytest.mark.parametrize("name, before, after", CASES, ids=[case[0] for case in CASES])
def test_ensure_import(name, before, after):
    assert ensure_import(before, "./ansible.nix") == after
    assert ensure_import(after, "./ansible.nix") == after
    assert has_import(after, "./ansible.nix") and not has_import(before, "./ansible.nix")
    assert remove_import(after, "./ansible.nix") == before
    assert remove_import(before, "./ansible.nix") == before


@needs_nix
@pytest.mark.parametrize("name, before, after", CASES, ids=[case[0] for case in CASES])
def test_ensure_import_parses(tmp_path, name, before, after):
    (tmp_path / "before.nix").write_text(before)
    (tmp_path / "after.nix").write_text(ensure_import(before, "./ansible.nix"))
    parsed_before, parsed_after = nix_parse(tmp_path / "before.nix", tmp_path / "after.nix")
    assert str(tmp_path / "ansible.nix") in parsed_after and str(tmp_path / "ansible.nix") not in parsed_before


@needs_nix
def test_upstream_imports_evaluate(tmp_path):
    (tmp_path / "configuration.nix").write_text(ensure_import(UPSTREAM, "./ansible.nix"))
    expression = 'map toString (import ./configuration.nix { pkgs = { }; modulesPath = "/m"; }).imports'
    assert nix_eval(tmp_path, expression) == ["/m/profiles/minimal.nix", str(tmp_path / "nspawn-image.nix"), str(tmp_path / "ansible.nix")]


@pytest.mark.parametrize("before, after, removed", [
    ("{ imports = [ ]; }", "{ imports = [ ./ansible.nix ]; }", "{ }"),
    ("{ imports = []; }", "{ imports = [ ./ansible.nix ]; }", "{ }"),
    ("{}", "{ imports = [ ./ansible.nix ]; }", "{ }"),
    ("{ imports = [\n  ];\n}", "{ imports = [ ./ansible.nix\n  ];\n}", "{\n}"),
])
def test_ensure_import_into_empty(before, after, removed):
    assert ensure_import(before, "./ansible.nix") == after
    assert remove_import(after, "./ansible.nix") == removed


@pytest.mark.parametrize("text, expected", [
    ("{ imports = [ ./ansible.nix ./a.nix ./ansible.nix ]; }", "{ imports = [ ./a.nix ]; }"),
    ("{ imports = [\n  ./ansible.nix\n  ./a.nix\n];\n}", "{ imports = [\n  ./a.nix\n];\n}"),
    ("{ imports = [ # keep me\n  ./ansible.nix\n];\n}", "{ imports = [ # keep me\n];\n}"),
    ("{\n  imports = [ ./ansible.nix ];\n  a = 1;\n}\n", "{\n  a = 1;\n}\n"),
    ("{ imports = [ ./ansible.nix/x ./ansible.nixx ]; }", "{ imports = [ ./ansible.nix/x ./ansible.nixx ]; }"),
    ("{ imports = [ (./ansible.nix) ]; }", "{ imports = [ (./ansible.nix) ]; }"),
])
def test_remove_import(text, expected):
    assert remove_import(text, "./ansible.nix") == expected


@pytest.mark.parametrize("text, fragment", [
    ("{ config, ... }: lib.mkMerge [ { } ]", "body is not an attribute set"),
    ("{ ... }: { a = 1; } // { b = 2; }", "something follows"),
    ("{ imports = [ ./a.nix ] ++ extra; }", "not a plain list"),
    ("{ imports = extra; }", "not a plain list"),
    ("{ inherit (x) imports; }", "inherited"),
    ('{ a = "unterminated; }', "unterminated string"),
    ("{ a = ''unterminated; }", "unterminated ''indented string''"),
    ("{ a = 1; /* open", "unterminated /\\* comment"),
    ("{ a = [ 1 }; }", "unbalanced"),
    ("{ a = ( 1; }", "unbalanced"),
    ("{ a = \"${ x\"; }", "unterminated string|unexpected end"),
    ("{ a = 1;", "unexpected end of file"),
    ("let a = 1; { }", "'let' without 'in'"),
    ("with pkgs { }", "missing ';'"),
    ("", "body is not an attribute set"),
])
def test_edit_refuses_unsafe_files(text, fragment):
    for edit in (ensure_import, remove_import):
        with pytest.raises(NixEditError, match=fragment) as info:
            edit(text, "./ansible.nix")
        assert "edit it by hand: imports = [ ./ansible.nix ];" in str(info.value)


@pytest.mark.parametrize("path", ["ansible.nix", "./a b.nix", "", "./x/", None, '"./x.nix"', "<nixpkgs>"])
def test_import_path_must_be_a_path_literal(path):
    with pytest.raises(NixEditError, match="not a Nix path literal"):
        ensure_import("{ }", path)


@pytest.mark.parametrize("config, module, expected", [
    ("/etc/nixos/configuration.nix", "/etc/nixos/ansible.nix", "./ansible.nix"),
    ("/etc/nixos/configuration.nix", "/etc/nixos/ansible/web.nix", "./ansible/web.nix"),
    ("/etc/nixos/configuration.nix", "/etc/ansible.nix", "../ansible.nix"),
])
def test_import_path(config, module, expected):
    assert import_path(config, module) == expected


# Configuration files built from pieces: every combination must take the import exactly once,
# parse, and give back the original bytes when the import is removed again.
HEADERS = ["", "{ config, pkgs, ... }:\n\n", "args@{ pkgs, ... }:\n", "{ pkgs, lib, ... }@args: ", "{pkgs,...}:"]
PRELUDES = ["", "let\n  x = { imports = [ ./no.nix ]; };\nin\n", "with pkgs;\n", "let b = \"}\"; in with pkgs; ", "# c {\n"]
AFTER_BRACE = ["\n", " # comment { [\n", "\n\n", " "]
BINDINGS = ['  networking.hostName = "a{b";\n', "  s = ''\n    ''${x} } ]\n  '';\n", "  /* { */ x = 1;\n",
            "  y = let imports = [ ]; in 1;\n", '  t = "${"}"}";\n']
ENTRIES = ["./a.nix", "./b/c.nix", '"${./d}/e.nix"', "(import ./f.nix)", "<nixpkgs/nixos/modules/profiles/minimal.nix>",
           "/etc/nixos/g.nix", "./ansible.nix/h.nix"]


@st.composite
def configurations(draw):
    header = draw(st.sampled_from(HEADERS))
    prelude = draw(st.sampled_from(PRELUDES if header else PRELUDES[:2] + PRELUDES[4:]))
    bindings = draw(st.lists(st.sampled_from(BINDINGS), max_size=3, unique=True))
    entries = draw(st.lists(st.sampled_from(ENTRIES), min_size=1, max_size=4))
    style = draw(st.sampled_from(["none", "inline", "lines", "bracket-line", "comment"]))
    if style == "none":
        imports = ""
    elif style == "inline":
        imports = "  imports = [ %s ];\n" % " ".join(entries)
    elif style == "lines":
        imports = "  imports = [\n%s  ];\n" % "".join("    %s\n" % entry for entry in entries)
    elif style == "bracket-line":
        imports = "  imports =\n    [ # hardware\n%s    ];\n" % "".join("      %s # why\n" % entry for entry in entries)
    else:
        imports = "  imports = [ /* a ] */ %s ]; # ]\n" % " ".join(entries)
    position = draw(st.integers(0, len(bindings)))
    body = "".join(bindings[:position]) + imports + "".join(bindings[position:])
    text = header + prelude + draw(st.sampled_from(["{", "rec {"])) + draw(st.sampled_from(AFTER_BRACE)) + body + "}\n"
    return text, style != "none"


@needs_nix
@examples(80)
@given(configurations())
def test_generated_configurations(tmp_path_factory, case):
    text, had_imports = case
    directory = tmp_path_factory.mktemp("config")
    added = ensure_import(text, "./ansible.nix")
    assert ensure_import(added, "./ansible.nix") == added
    assert remove_import(added, "./ansible.nix") == text
    assert remove_import(text, "./ansible.nix") == text
    assert has_import(added, "./ansible.nix")
    (directory / "before.nix").write_text(text)
    (directory / "after.nix").write_text(added)
    parsed_before, parsed_after = nix_parse(directory / "before.nix", directory / "after.nix")
    target = "(%s)" % (directory / "ansible.nix")
    assert parsed_after.count(target) == 1 and target not in parsed_before
    # Nothing else changed: the parsed forms are the same once the new entry is taken out.
    if had_imports:
        assert parsed_after.replace(" " + target + " ]", " ]") == parsed_before
    else:
        assert parsed_after.replace(" imports = [ %s ];" % target, "") == parsed_before


# --- nix-instantiate --parse errors ---------------------------------------------------------

BAD = "{ config, pkgs, ... }:\n{\n  imports = [ ./a.nix\n  foo = 1;\n}\n"


def test_parse_check_argv():
    assert parse_check_argv("/etc/nixos/ansible.nix") == [
        "nix-instantiate", "--store", "dummy://", "--parse", "--log-format", "internal-json", "/etc/nixos/ansible.nix"]
    assert parse_check_argv("-", nix_instantiate="/run/current-system/sw/bin/nix-instantiate", json_log=False) == [
        "/run/current-system/sw/bin/nix-instantiate", "--store", "dummy://", "--parse", "-"]


@needs_nix
@pytest.mark.parametrize("json_log", [True, False])
def test_nix_error_from_real_nix(tmp_path, json_log):
    path = tmp_path / "configuration.nix"
    path.write_text(BAD)
    argv = parse_check_argv(str(path), nix_instantiate=NIX, json_log=json_log)
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    error = nix_error(result.returncode, result.stderr)
    assert result.returncode == 1
    assert error["message"] == "syntax error, unexpected '='"
    assert (error["file"], error["line"], error["column"]) == (str(path), 4, 7)
    assert error["summary"] == "%s:4:7: syntax error, unexpected '='" % path
    assert "\x1b" not in error["text"]


@needs_nix
def test_nix_error_from_stdin():
    argv = parse_check_argv("-", nix_instantiate=NIX)
    result = subprocess.run(argv, input=BAD, capture_output=True, text=True, check=False)
    error = nix_error(result.returncode, result.stderr, path="/var/lib/machines/n/etc/nixos/configuration.nix")
    assert error["summary"] == "/var/lib/machines/n/etc/nixos/configuration.nix:4:7: syntax error, unexpected '='"
    parsed = subprocess.run(argv, input="{ a = 1; }", capture_output=True, text=True, check=False)
    assert nix_error(parsed.returncode, parsed.stderr) is None


@pytest.mark.parametrize("stderr, expected", [
    # Nix 2.26 text (ANSI colours when stderr was a terminal)
    ("\x1b[31;1merror:\x1b[0m syntax error, unexpected '=', expecting ']'\n\n       at \x1b[35;1m/etc/nixos/a.nix:4:7\x1b[0m:\n\n"
     "            3|   imports = [ ./a.nix\n", ("syntax error, unexpected '=', expecting ']'", "/etc/nixos/a.nix", 4, 7)),
    # Nix 2.3: the position on the message line
    ("error: syntax error, unexpected '=', expecting ']', at /etc/nixos/a.nix:4:7\n",
     ("syntax error, unexpected '=', expecting ']'", "/etc/nixos/a.nix", 4, 7)),
    # internal-json with a warning before the error
    ('@nix {"action":"msg","level":1,"msg":"warning: x"}\n@nix {"action":"msg","column":3,"file":"«stdin»","level":0,'
     '"line":2,"msg":"error: undefined variable","raw_msg":"undefined variable \'x\'"}\n',
     ("undefined variable 'x'", "«stdin»", 2, 3)),
    ('@nix {"action":"msg","column":null,"file":null,"level":0,"line":null,"msg":"\\u001b[31;1merror:\\u001b[0m out of memory"}\n',
     ("out of memory", None, None, None)),
    # Nix 2.26: the position repeated in "file", colours in raw_msg
    ('@nix {"action":"msg","column":7,"file":"/etc/nixos/a.nix:4:7","level":0,"line":4,"msg":"error: x",'
     '"raw_msg":"syntax error, unexpected \'=\'"}\n', ("syntax error, unexpected '='", "/etc/nixos/a.nix", 4, 7)),
    ('@nix {"action":"msg","column":null,"file":null,"level":0,"line":null,"msg":"error: x",'
     '"raw_msg":"path \'\\u001b[35;1m/bad.nix\\u001b[0m\' does not exist"}\n', ("path '/bad.nix' does not exist", None, None, None)),
    ("@nix not json\nsomething went wrong\n", ("something went wrong", None, None, None)),
    ("", ("nix-instantiate exited with 1", None, None, None)),
])
def test_nix_error_formats(stderr, expected):
    error = nix_error(1, stderr)
    assert (error["message"], error["file"], error["line"], error["column"]) == expected


def test_nix_error_success_is_none():
    assert nix_error(0, "warning: something") is None


def test_imports_editing_builds_on_nix_and_not_the_other_way():
    from ansible_collections.nspawn.nixos.plugins.module_utils._nix import _imports as _nix_imports
    # One error family: what editing raises is a NixError of _nix.
    assert _nix_imports.NixEditError is _nix.NixEditError and issubclass(NixEditError, _nix.NixError)
    assert issubclass(NixValueError, _nix.NixError)
    assert _nix_imports.ID_PATTERN is _nix.ID_PATTERN and _nix_imports.NIX_KEYWORDS is _nix.NIX_KEYWORDS
    # _nix (values) imports nothing of _nix_imports (editing): the dependency runs one way.
    with open(_nix.__file__) as handle:
        assert "_nix_imports" not in "".join(line for line in handle if line.startswith(("from ", "import ")))
    assert set(_nix.__all__) <= set(dir(_nix))
