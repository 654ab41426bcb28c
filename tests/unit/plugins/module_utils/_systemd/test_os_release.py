# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

import pytest

from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._os_release import parse_os_release, read_os_release


def nixos_tree(root):
    """The os-release symlink chain of a NixOS image: absolute links into /nix/store."""
    store = root / "nix" / "store"
    (store / "aaa-os-release").parent.mkdir(parents=True)
    (store / "aaa-os-release").write_text('NAME=NixOS\nID=nixos\nVERSION_ID="24.11"\nPRETTY_NAME="NixOS 24.11 (Vicuna)"\n')
    (store / "bbb-etc" / "etc").mkdir(parents=True)
    os.symlink("/nix/store/aaa-os-release", str(store / "bbb-etc" / "etc" / "os-release"))
    (root / "etc").mkdir()
    os.symlink("/nix/store/bbb-etc/etc", str(root / "etc" / "static"))
    os.symlink("/etc/static/os-release", str(root / "etc" / "os-release"))


def test_read_os_release_nixos(tmp_path):
    nixos_tree(tmp_path)
    assert read_os_release(str(tmp_path)) == {
        "NAME": "NixOS", "ID": "nixos", "VERSION_ID": "24.11", "PRETTY_NAME": "NixOS 24.11 (Vicuna)"}


def test_read_os_release_falls_back_to_usr_lib(tmp_path):
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "os-release").write_text("ID=debian\nVERSION_ID='12'\n")
    assert read_os_release(str(tmp_path)) == {"ID": "debian", "VERSION_ID": "12"}


def test_read_os_release_does_not_read_the_hosts_file_through_a_link(tmp_path):
    root = tmp_path / "machine"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "host-os-release").write_text("ID=host\n")
    os.symlink(str(tmp_path / "host-os-release"), str(root / "etc" / "os-release"))  # absolute: the host's path
    os.symlink("../../../host-os-release", str(root / "usr" / "lib" / "os-release"))  # relative, up and out
    assert (root / "usr" / "lib" / "os-release").read_text() == "ID=host\n"  # what the host's resolution reads
    assert read_os_release(str(root)) == {}


def test_read_os_release_skips_what_is_not_a_regular_file(tmp_path):
    (tmp_path / "etc" / "os-release").mkdir(parents=True)
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "os-release").write_text("ID=fallback\n")
    assert read_os_release(str(tmp_path)) == {"ID": "fallback"}
    os.mkfifo(str(tmp_path / "etc" / "fifo"))
    os.rmdir(str(tmp_path / "etc" / "os-release"))
    os.symlink("fifo", str(tmp_path / "etc" / "os-release"))
    assert read_os_release(str(tmp_path)) == {"ID": "fallback"}


def test_read_os_release_missing(tmp_path):
    assert read_os_release(str(tmp_path)) == {}
    assert read_os_release(str(tmp_path / "nothing")) == {}
    assert read_os_release(None) == {}


def test_parse_os_release_quoting():
    text = '# comment\n\nNAME="Fixture \\"sidecar\\""\nID=fixture\nBROKEN="unterminated\nHOME_URL=\'https://x/\'\n'
    assert parse_os_release(text) == {
        "NAME": 'Fixture "sidecar"', "ID": "fixture", "BROKEN": "unterminated", "HOME_URL": "https://x/"}


@pytest.mark.parametrize("line, value", [
    # systemd's parse_env_file_internal() (src/basic/env-file.c), state by state:
    ('NAME="A \\"q\\" \\$n \\`x\\` \\\\ \\z"', 'A "q" $n `x` \\ \\z'),  # SHELL_NEED_ESCAPE unescaped, \z kept
    ("V='1 (x) \\$'", "1 (x) \\$"),  # single quotes: literal
    ("U=foo\\ bar  ", "foo bar"),  # unquoted: backslash escapes, trailing whitespace chomped
    ("W=  a  b\t ", "a  b"),  # leading whitespace skipped, inner runs kept
    ("X=\"a\" 'b' c", "abc"),  # whitespace after a closing quote skipped (PRE_VALUE)
    ('Y=foo"bar"', 'foo"bar"'),  # no quotes inside an unquoted run (VALUE)
    ("T=x\\  ", "x "),  # an escaped space is not trailing whitespace
    ("E=", ""),
    ('D="ends\\', "ends"),  # an escaped newline is eaten
])
def test_parse_os_release_like_systemd(line, value):
    assert parse_os_release(line) == {line.split("=", 1)[0]: value}


def test_parse_os_release_keys_and_comments():
    assert parse_os_release("# c\n; c\n  ID = debian \nnokey\n\n") == {"ID": "debian"}
