# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The absent scenario: after sidecar_state=absent nothing of the sidecar is left."""

from __future__ import annotations

from sidecar import MACHINE, MACHINE_ROOT

testinfra_hosts = ["sidecar_hosts"]


def test_machine_is_gone(host):
    result = host.run("machinectl show %s", MACHINE)
    assert result.rc != 0 and "No machine" in result.stderr
    assert not host.service("systemd-nspawn@%s.service" % MACHINE).is_running


def test_machine_is_not_enabled(host):
    assert host.run("systemctl is-enabled systemd-nspawn@%s.service", MACHINE).stdout.strip() == "disabled"
    assert not host.file("/etc/systemd/system/machines.target.wants/systemd-nspawn@%s.service" % MACHINE).exists


def test_image_is_gone(host):
    result = host.run("machinectl show-image %s", MACHINE)
    assert result.rc != 0 and "No image" in result.stderr
    assert not host.file(MACHINE_ROOT).exists


def test_no_hidden_copy_of_importd_is_left(host):
    """importd's .tar-<URL> copy of the pulled image is removed too (only .host remains)."""
    names = [line.split()[0] for line in host.check_output("machinectl list-images --all --no-legend").splitlines() if line.strip()]
    assert names == [".host"], names


def test_settings_file_is_gone(host):
    assert not host.file("/etc/systemd/nspawn/%s.nspawn" % MACHINE).exists


def test_origin_record_is_gone(host):
    assert not host.file("/var/lib/nspawn-nixos/origin/%s.json" % MACHINE).exists


def test_systemd_container_stays_installed(host):
    """absent removes what the role made for the machine, not the host's tools."""
    assert host.package("systemd-container").is_installed
