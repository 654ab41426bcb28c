# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The controller_image scenario: one download on the controller, a verified copy imported on each host, veth."""

from __future__ import annotations

import json
import os

import testinfra

from sidecar import MACHINE, SW_BIN, check_inside

testinfra_hosts = ["sidecar_hosts"]

STAGE_DIR = "/var/tmp/nspawn-nixos"
CACHE_DIR = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "image-cache")


def test_controller_downloaded_the_image_once():
    controller = testinfra.get_host("local://")
    cached = controller.check_output("ls -1 %s", CACHE_DIR).split()
    assert len(cached) == 1 and cached[0].endswith("-nixos-fixture-x86_64-linux.tar.xz"), cached


def test_hosts_imported_a_verified_copy(host):
    origin = json.loads(host.file("/var/lib/nspawn-nixos/origin/%s.json" % MACHINE).content_string)
    expected = host.ansible.get_variables()["lab_image_file_sha256"]
    assert origin["url"].startswith("file://%s/%s@" % (STAGE_DIR, MACHINE))  # NAME@HASH-FILE (image_controller.yml)
    assert origin["url"].endswith("-nixos-fixture-x86_64-linux.tar.xz")
    assert (origin["method"], origin["sha256"], origin["verify"]) == ("download", expected, "sha256")


def test_copy_was_removed_after_the_import(host):
    assert host.run("ls -A %s", STAGE_DIR).stdout.strip() == ""


def test_settings_file_has_a_private_network_and_a_port(host):
    content = host.file("/etc/systemd/nspawn/%s.nspawn" % MACHINE).content_string
    assert content == "[Network]\nVirtualEthernet=yes\nPort=tcp:8080:80\n"


def test_machine_has_its_own_network(host):
    leader = host.check_output("machinectl show %s --property=Leader --value", MACHINE)
    assert host.check_output("readlink /proc/%s/ns/net", leader) != host.check_output("readlink /proc/1/ns/net")
    check_inside(host, SW_BIN + "/test", "-e", "/sys/class/net/host0")
    assert host.run("ip link show ve-%s", MACHINE).rc == 0
