# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""MachineDir: a machine's tree opened without following symlinks, atomic writes relative to it."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._rootfs import MachineDir, UnsafePath, read_in_root


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


def _in_thread(function, timeout=10):
    """function() in a thread: its result or exception, or AssertionError when it is still blocked after timeout."""
    outcome = {}

    def target():
        try:
            outcome["result"] = function()
        except BaseException as exc:  # pylint: disable=broad-except
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked for %d s" % timeout
    return outcome


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    """A FIFO with a writer waiting for a reader: read() neither blocks nor opens it (which would let the writer go on)."""
    root = tree(tmp_path)
    fifo = str(root / "etc" / "nixos" / "configuration.nix")
    os.unlink(fifo)
    os.mkfifo(fifo)
    writer_opened = threading.Event()

    def writer():
        fd = os.open(fifo, os.O_WRONLY)  # blocks until the FIFO has a reader
        writer_opened.set()
        os.close(fd)

    writing = threading.Thread(target=writer, daemon=True)
    writing.start()
    try:
        with MachineDir(str(root), "/etc/nixos") as nixos:
            outcome = _in_thread(lambda: nixos.read("configuration.nix"))
        assert isinstance(outcome.get("error"), UnsafePath), outcome
        assert "/etc/nixos/configuration.nix in machine nixos is not a regular file" in outcome["error"].msg
        assert not writer_opened.wait(0.5), "read() opened the FIFO for reading"
        outcome = _in_thread(lambda: read_in_root(str(root), "/etc/nixos/configuration.nix"))
        assert isinstance(outcome.get("error"), UnsafePath) and not writer_opened.wait(0.2), outcome
    finally:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer go
        writing.join(10)
        os.close(reader)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device node needs root")
def test_a_device_node_is_refused_without_being_opened_for_reading(tmp_path, monkeypatch):
    root = tree(tmp_path)
    device = root / "etc" / "nixos" / "device.nix"
    os.mknod(str(device), 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    real_open = os.open
    opened = []

    def recording_open(path, flags, *args, **kwargs):
        if os.path.basename(str(path)) == "device.nix":
            opened.append(flags)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    with MachineDir(str(root), "/etc/nixos") as nixos:
        with pytest.raises(UnsafePath, match="/etc/nixos/device.nix in machine nixos is not a regular file"):
            nixos.read("device.nix")
    assert opened and all(flags & os.O_PATH for flags in opened), "the device was opened with flags %r" % opened


def test_a_regular_file_swapped_after_the_check_is_not_read_by_its_new_name(tmp_path, monkeypatch):
    """The file judged regular is the one read, even when its name points at something else by then."""
    root = tree(tmp_path)
    nixos_dir = root / "etc" / "nixos"
    real_fstat = os.fstat

    def fstat_then_swap(fd):
        info = real_fstat(fd)
        if stat.S_ISREG(info.st_mode) and (nixos_dir / "configuration.nix").exists():
            os.rename(str(nixos_dir / "configuration.nix"), str(nixos_dir / "old.nix"))
            os.mkfifo(str(nixos_dir / "configuration.nix"))
        return info

    with MachineDir(str(root), "/etc/nixos") as nixos:
        monkeypatch.setattr(os, "fstat", fstat_then_swap)
        outcome = _in_thread(lambda: nixos.read("configuration.nix"))
    assert outcome.get("result", (None,))[0] == "{ }\n", outcome


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


# -- read_in_root: symlinks followed as if the tree's root were / ------------------------------------------------

def nixos_etc(root):
    """/etc/nix/registry.json -> /etc/static/nix/registry.json, /etc/static -> /nix/store/...-etc/etc, as on NixOS."""
    store_etc = root / "nix" / "store" / "eee-etc" / "etc"
    (store_etc / "nix").mkdir(parents=True)
    (store_etc / "nix" / "registry.json").write_text('{"version": 2}\n')
    (root / "etc" / "nix").mkdir(parents=True, exist_ok=True)
    os.symlink("/nix/store/eee-etc/etc", str(root / "etc" / "static"))
    os.symlink("/etc/static/nix/registry.json", str(root / "etc" / "nix" / "registry.json"))
    return store_etc


def test_read_in_root_plain_file(tmp_path):
    root = tree(tmp_path)
    text, info = read_in_root(str(root), "/etc/nixos/configuration.nix")
    assert text == "{ }\n" and stat.S_ISREG(info.st_mode)
    assert read_in_root(str(root), "etc/./nixos/../nixos/configuration.nix")[0] == "{ }\n"


def test_read_in_root_follows_an_absolute_chain_inside_the_tree(tmp_path):
    root = tree(tmp_path)
    nixos_etc(root)
    text, info = read_in_root(str(root), "/etc/nix/registry.json", "nixos")
    assert text == '{"version": 2}\n' and stat.S_ISREG(info.st_mode)


def test_read_in_root_follows_a_relative_chain_inside_the_tree(tmp_path):
    root = tree(tmp_path)
    store_etc = nixos_etc(root)
    os.unlink(str(root / "etc" / "static"))
    os.unlink(str(root / "etc" / "nix" / "registry.json"))
    os.symlink("../nix/store/eee-etc/etc", str(root / "etc" / "static"))
    os.symlink("../static/nix/./registry.json", str(root / "etc" / "nix" / "registry.json"))
    assert read_in_root(str(root), "/etc/nix/registry.json")[0] == '{"version": 2}\n'
    # a link in the middle of the path, and .. after a link resolves from the link's target
    os.symlink("static/nix", str(root / "etc" / "nixlink"))
    assert read_in_root(str(root), "/etc/nixlink/registry.json")[0] == '{"version": 2}\n'
    (store_etc / "os-release").write_text("ID=nixos\n")
    assert read_in_root(str(root), "/etc/nixlink/../os-release")[0] == "ID=nixos\n"


@pytest.mark.parametrize("path", ["/etc/missing", "/missing/dir/file", "/etc/nixos/configuration.nix/x", "/etc/nix/registry.json"])
def test_read_in_root_missing(tmp_path, path):
    root = tree(tmp_path)
    assert read_in_root(str(root), path) == (None, None)


def test_read_in_root_dangling_link(tmp_path):
    root = tree(tmp_path)
    nixos_etc(root)
    os.unlink(str(root / "etc" / "static"))
    os.symlink("/nix/store/fff-etc/etc", str(root / "etc" / "static"))
    assert read_in_root(str(root), "/etc/nix/registry.json") == (None, None)


@pytest.mark.parametrize("links", [
    {"etc/a": "/etc/a"},  # itself
    {"etc/a": "b", "etc/b": "/etc/a"},  # two links pointing at each other
    {"etc/a": "a/x"},  # through itself as a directory
])
def test_read_in_root_loop(tmp_path, links):
    root = tree(tmp_path)
    for link, target in links.items():
        os.symlink(target, str(root / link))
    assert read_in_root(str(root), "/etc/a") == (None, None)


def test_read_in_root_a_long_but_finite_chain(tmp_path):
    root = tree(tmp_path)
    for number in range(30):
        os.symlink("l%d" % (number + 1), str(root / "etc" / ("l%d" % number)))
    os.symlink("nixos/configuration.nix", str(root / "etc" / "l30"))
    assert read_in_root(str(root), "/etc/l0")[0] == "{ }\n"


@pytest.mark.parametrize("target, host_follows", [
    ("{outside}/secret", True), ("../../../secret", True), ("../../../../../../../../secret", False),
    ("/../../secret", False), ("/etc/../../../secret", False),
])
def test_read_in_root_cannot_escape(tmp_path, target, host_follows):
    root = tree(tmp_path)
    (tmp_path / "secret").write_text("host secret\n")
    os.symlink(target.replace("{outside}", str(tmp_path)), str(root / "etc" / "link"))
    assert os.path.isfile(str(root / "etc" / "link")) is host_follows  # what the host's own resolution would read
    assert read_in_root(str(root), "/etc/link") == (None, None)
    # the same name inside the tree is what the link means there
    (root / "secret").write_text("the machine's own\n")
    expected = None if target.startswith("{outside}") else "the machine's own\n"
    assert read_in_root(str(root), "/etc/link")[0] == expected


def test_read_in_root_an_absolute_host_path_resolves_inside_the_tree(tmp_path):
    root = tree(tmp_path)
    (tmp_path / "secret").write_text("host secret\n")
    os.symlink(str(tmp_path / "secret"), str(root / "etc" / "link"))
    inside = root / str(tmp_path).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "secret").write_text("inside\n")
    assert read_in_root(str(root), "/etc/link")[0] == "inside\n"


def test_read_in_root_refuses_special_files_and_directories(tmp_path):
    root = tree(tmp_path)
    os.mkfifo(str(root / "etc" / "fifo"))
    with pytest.raises(UnsafePath, match="/etc/fifo in machine nixos is not a regular file"):
        read_in_root(str(root), "/etc/fifo")
    os.symlink("/etc/fifo", str(root / "etc" / "to-fifo"))
    with pytest.raises(UnsafePath, match="is not a regular file"):
        read_in_root(str(root), "/etc/to-fifo")
    # a directory is not a regular file either (and its descriptor is closed)
    with pytest.raises(UnsafePath, match="/etc/nixos in machine nixos is not a regular file"):
        read_in_root(str(root), "/etc/nixos")


def test_read_in_root_final_component_swapped_for_a_symlink_is_refused(tmp_path, monkeypatch):
    """Between the check (lstat: a regular file) and the open, the file becomes a link to the host's file."""
    root = tree(tmp_path)
    (tmp_path / "secret").write_text("host secret\n")
    target = root / "etc" / "nixos" / "configuration.nix"
    real_lstat = MachineDir.lstat

    def lstat_then_swap(self, name):
        info = real_lstat(self, name)
        if name == "configuration.nix":
            os.unlink(str(target))
            os.symlink(str(tmp_path / "secret"), str(target))
        return info

    monkeypatch.setattr(MachineDir, "lstat", lstat_then_swap)
    with pytest.raises(UnsafePath, match="/etc/nixos/configuration.nix in machine nixos is a symlink"):
        read_in_root(str(root), "/etc/nixos/configuration.nix")


def test_read_in_root_directory_swapped_for_a_symlink_is_refused(tmp_path, monkeypatch):
    """A directory on the way that becomes a link after its check is refused by the no-follow walk."""
    root = tree(tmp_path)
    (tmp_path / "host-etc").mkdir()
    (tmp_path / "host-etc" / "configuration.nix").write_text("host\n")
    real_lstat = MachineDir.lstat

    def lstat_then_swap(self, name):
        info = real_lstat(self, name)
        if name == "nixos":
            os.rename(str(root / "etc" / "nixos"), str(root / "etc" / "nixos.old"))
            os.symlink(str(tmp_path / "host-etc"), str(root / "etc" / "nixos"))
        return info

    monkeypatch.setattr(MachineDir, "lstat", lstat_then_swap)
    with pytest.raises(UnsafePath, match="/etc/nixos in machine nixos is a symlink"):
        read_in_root(str(root), "/etc/nixos/configuration.nix")


def test_read_in_root_too_large(tmp_path):
    root = tree(tmp_path)
    with pytest.raises(Exception, match="is larger than 2 bytes"):
        read_in_root(str(root), "/etc/nixos/configuration.nix", limit=2)
