# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The lab's release matrix (tests/lab/images.py) and the removal of systemd-importd
(tests/lab/build.py), without building or booting anything."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from lab import build, images  # noqa: E402  (needs sys.path above)


def test_every_host_is_named_after_what_it_is():
    names = {release.version: release.name for release in images.RELEASES.values()}
    assert names == {"11": "debian11", "12": "debian12", "12-backports": "debian12-backports",
                     "12-noimportd": "debian12-noimportd", "13": "debian13", "sid": "debian-sid"}
    for release in images.RELEASES.values():
        assert release.name.startswith("debian")
        assert "-" not in release.group  # an Ansible group name
        assert images.release(release.name) is release and images.release(release.group) is release


def test_releases_from():
    assert images.releases_from("all") == tuple(images.RELEASES)
    assert images.releases_from("13 debian-sid bookworm") == ("13", "sid", "12")
    with pytest.raises(ValueError, match="unknown lab release"):
        images.releases_from("22.04")


def test_variants_share_or_extend_the_debian12_build():
    plain, noimportd, backports = (images.host_recipe(version) for version in ("12", "12-noimportd", "12-backports"))
    # Without importd: the same debootstrap (one download), another configured rootfs.
    assert (noimportd.base_name, noimportd.base_key()) == (plain.base_name, plain.base_key())
    assert noimportd.key("k") != plain.key("k")
    # Backports: its own debootstrap stage (the upgrade is part of it).
    assert backports.base_key() != plain.base_key() and backports.backports and not plain.backports


def _fake_root(tmp_path, files):
    listed = []
    for path in files:
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x")
        listed.append(path)
    info = tmp_path / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "systemd-container.list").write_text("\n".join(["/.", "/lib/systemd"] + listed) + "\n")
    return tmp_path


def test_remove_importd_removes_importd_and_nothing_else(tmp_path):
    importd = ["/lib/systemd/systemd-importd", "/lib/systemd/systemd-pull", "/lib/systemd/system/systemd-importd.service",
               "/usr/share/dbus-1/system-services/org.freedesktop.import1.service",
               "/usr/share/dbus-1/system.d/org.freedesktop.import1.conf",
               "/usr/share/polkit-1/actions/org.freedesktop.import1.policy"]
    kept = ["/usr/bin/machinectl", "/lib/systemd/systemd-machined", "/usr/bin/systemd-nspawn",
            "/usr/share/dbus-1/system.d/org.freedesktop.machine1.conf"]
    root = _fake_root(tmp_path, importd + kept)
    assert build.importd_installed(root)
    assert build.remove_importd(root) == sorted(importd)
    assert not build.importd_installed(root)
    assert all((root / path.lstrip("/")).exists() for path in kept)


def test_remove_importd_fails_where_there_is_no_importd(tmp_path):
    root = _fake_root(tmp_path, ["/usr/bin/machinectl"])
    with pytest.raises(build.BuildError, match="could not remove systemd-importd"):
        build.remove_importd(root)
