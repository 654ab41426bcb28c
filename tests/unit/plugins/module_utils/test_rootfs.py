# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""MachineDir: a machine's tree opened without following symlinks, atomic writes relative to it."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.nspawn.nixos.plugins.module_utils._rootfs import MachineDir, UnsafePath


def tree(tmp_path):
    root = tmp_path / "machines" / "nixos"
    (root / "etc" / "nixos").mkdir(parents=True)
    (root / "etc" / "nixos" / "configuration.nix").write_text("{ }\n")
    return root


def test_open_read_write_remove(tmp_path):
    root = tree(tmp_path)
    with MachineDir(str(root), "/etc/nixos") as nixos:
        assert nixos.exists and nixos.machine == "nixos"
        assert nixos.host_path == str(root / "etc" / "nixos")
        text, info = nixos.read("configuration.nix")
        assert text == "{ }\n" and stat.S_ISREG(info.st_mode)
        assert nixos.read("missing.nix") == (None, None)
        nixos.write("ansible.nix", "{ a = 1; }\n", 0o640)
        assert (root / "etc" / "nixos" / "ansible.nix").read_text() == "{ a = 1; }\n"
        assert stat.S_IMODE(os.stat(str(root / "etc" / "nixos" / "ansible.nix")).st_mode) == 0o640
        assert nixos.lstat("ansible.nix") is not None and nixos.lstat("nope") is None
        assert nixos.remove("ansible.nix") is True
        assert nixos.remove("ansible.nix") is False
        assert sorted(os.listdir(str(root / "etc" / "nixos"))) == ["configuration.nix"]
    assert nixos.fd is None


def test_missing_directory(tmp_path):
    root = tree(tmp_path)
    with MachineDir(str(root), "/nix/var/nix/profiles") as profiles:
        assert not profiles.exists
        assert profiles.readlink("system") is None
        assert profiles.lstat("system") is None
        assert profiles.read("x") == (None, None)


def test_readlink(tmp_path):
    root = tree(tmp_path)
    (root / "nix" / "var" / "nix" / "profiles").mkdir(parents=True)
    os.symlink("system-3-link", str(root / "nix" / "var" / "nix" / "profiles" / "system"))
    with MachineDir(str(root), "/nix/var/nix/profiles") as profiles:
        assert profiles.readlink("system") == "system-3-link"
        assert profiles.readlink("missing") is None
    with MachineDir(str(root), "/etc") as etc:
        assert etc.readlink("nixos") is None  # a directory, not a link


@pytest.mark.parametrize("link, target", [("etc", "/etc"), ("etc/nixos", "/etc"), ("etc/nixos", "../../../..")])
def test_symlinked_components_are_refused(tmp_path, link, target):
    root = tmp_path / "machines" / "nixos"
    (root / os.path.dirname(link)).mkdir(parents=True, exist_ok=True)
    os.symlink(target, str(root / link))
    with pytest.raises(UnsafePath) as info:
        MachineDir(str(root), "/etc/nixos").open()
    assert "/%s in machine nixos is a symlink (to %s)" % (link, target) in info.value.msg


def test_file_in_place_of_a_directory_is_refused(tmp_path):
    root = tmp_path / "machines" / "nixos"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nixos").write_text("")
    with pytest.raises(UnsafePath, match="/etc/nixos in machine nixos is not a directory"):
        MachineDir(str(root), "/etc/nixos").open()


def test_symlinked_and_special_files_are_refused(tmp_path):
    root = tree(tmp_path)
    nixos_dir = root / "etc" / "nixos"
    (tmp_path / "host-file").write_text("host secret\n")
    os.symlink(str(tmp_path / "host-file"), str(nixos_dir / "link.nix"))
    os.mkfifo(str(nixos_dir / "fifo.nix"))
    with MachineDir(str(root), "/etc/nixos") as nixos:
        with pytest.raises(UnsafePath, match="/etc/nixos/link.nix in machine nixos is a symlink"):
            nixos.read("link.nix")
        with pytest.raises(UnsafePath, match="/etc/nixos/fifo.nix in machine nixos is not a regular file"):
            nixos.read("fifo.nix")
        # Writing replaces the link itself, never its target.
        nixos.write("link.nix", "{ }\n", 0o644)
    assert (tmp_path / "host-file").read_text() == "host secret\n"
    assert not os.path.islink(str(nixos_dir / "link.nix"))


def test_swapping_the_directory_after_open_changes_nothing_outside(tmp_path):
    root = tree(tmp_path)
    outside = tmp_path / "host-etc"
    outside.mkdir()
    with MachineDir(str(root), "/etc/nixos") as nixos:
        # The container replaces /etc/nixos with a symlink to the host's directory after the check.
        os.rename(str(root / "etc" / "nixos"), str(root / "etc" / "nixos.old"))
        os.symlink(str(outside), str(root / "etc" / "nixos"))
        nixos.write("ansible.nix", "{ }\n", 0o644)
    assert os.listdir(str(outside)) == []
    assert (root / "etc" / "nixos.old" / "ansible.nix").read_text() == "{ }\n"


def test_too_large_file(tmp_path):
    root = tree(tmp_path)
    with MachineDir(str(root), "/etc/nixos") as nixos:
        with pytest.raises(Exception, match="larger than 3 bytes"):
            nixos.read("configuration.nix", limit=3)


def test_backup_keeps_mode_and_text(tmp_path):
    root = tree(tmp_path)
    os.chmod(str(root / "etc" / "nixos" / "configuration.nix"), 0o600)
    with MachineDir(str(root), "/etc/nixos") as nixos:
        text, info = nixos.read("configuration.nix")
        name = nixos.backup_name("configuration.nix")
        assert name.startswith("configuration.nix.%d." % os.getpid()) and name.endswith("~")
        nixos.backup("configuration.nix", name, text, info)
        assert nixos.inside(name) == "/etc/nixos/" + name
    backup = root / "etc" / "nixos" / name
    assert backup.read_text() == "{ }\n"
    assert stat.S_IMODE(os.stat(str(backup)).st_mode) == 0o600


def test_non_utf8_bytes_survive_a_round_trip(tmp_path):
    root = tree(tmp_path)
    (root / "etc" / "nixos" / "latin1.nix").write_bytes(b"# caf\xe9\n{ }\n")
    with MachineDir(str(root), "/etc/nixos") as nixos:
        text, dummy = nixos.read("latin1.nix")
        nixos.write("copy.nix", text, 0o644)
    assert (root / "etc" / "nixos" / "copy.nix").read_bytes() == b"# caf\xe9\n{ }\n"
