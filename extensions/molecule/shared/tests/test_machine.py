# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What every scenario that converges nspawn.nixos.sidecar to state=present must find."""

from __future__ import annotations

import json

from sidecar import MACHINE, MACHINE_ROOT, SW_BIN, check_inside, inside

testinfra_hosts = ["sidecar_hosts"]


def test_systemd_container_is_installed(host):
    assert host.package("systemd-container").is_installed


def test_machine_is_running(host):
    state = host.check_output("machinectl show %s --property=State --value", MACHINE)
    assert state == "running"


def test_machine_is_enabled_at_boot(host):
    assert host.check_output("systemctl is-enabled systemd-nspawn@%s.service", MACHINE) == "enabled"
    assert host.service("systemd-nspawn@%s.service" % MACHINE).is_running


def test_system_inside_is_up(host):
    state = inside(host, SW_BIN + "/systemctl", "is-system-running").stdout.strip()
    assert state in ("running", "degraded")  # as nspawn_machine's wait accepts


def test_no_unit_failed_inside(host):
    # systemd-run --collect: the transient unit of nixos-rebuild (exit 2 for the harmless
    # specialfs snippet) does not stay behind as a failed unit.
    assert check_inside(host, SW_BIN + "/systemctl", "--failed", "--plain", "--no-legend").strip() == ""


def test_machine_runs_the_image(host):
    os_release = check_inside(host, SW_BIN + "/cat", "/etc/os-release")
    assert "ID=nixos" in os_release  # NixOS, or the lab's fixture (ID=nixos-fixture, ID_LIKE=nixos)


def test_image_is_a_directory_in_var_lib_machines(host):
    image = host.check_output("machinectl show-image %s --property=Path --value", MACHINE)
    assert image == MACHINE_ROOT
    assert host.file(MACHINE_ROOT + "/etc/nixos/configuration.nix").is_file


def test_origin_of_the_image_is_recorded(host):
    origin = json.loads(host.file("/var/lib/nspawn-nixos/origin/%s.json" % MACHINE).content_string)
    assert origin["name"] == MACHINE
    assert origin["url"].endswith(".tar.xz")
