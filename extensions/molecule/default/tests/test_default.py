# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The default scenario: settings file, binds, NixOS configuration and generation, root password."""

from __future__ import annotations

import json
import os
import re

import pytest

from sidecar import MACHINE, MACHINE_ROOT, SW_BIN, check_inside, inside

testinfra_hosts = ["sidecar_hosts"]

ROOT_HASH = "$6$molecule1$TBjjo02kw9XS.DWrlZZvpSmCu4JhcPe1NsIpva9MHtdnusl55cUQjK.IgI8xEHr2vq779V6SCJ8opSIKUQ2B.0"
AUTHORIZED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwsCjthusqr+HPCdUsE2oNbgxJEO6PeXWrr/b6QMVFR molecule@nspawn.nixos"


def settings_of(text):
    """The .nspawn file as {section: [(key, value), ...]} (comments and blank lines left out)."""
    sections, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, value = line.split("=", 1)
            current.append((key, value))
    return sections


def test_settings_file_is_the_articles_with_binds(host):
    settings = host.file("/etc/systemd/nspawn/%s.nspawn" % MACHINE)
    assert settings.is_file
    assert (settings.user, settings.group, settings.mode) == ("root", "root", 0o644)
    assert settings_of(settings.content_string) == {
        "Network": [("VirtualEthernet", "no")],
        "Files": [("Bind", "/srv/sidecar-data:/data"), ("BindReadOnly", "/srv/sidecar-ro:/srv/ro")],
    }


def test_machine_shares_the_host_network(host):
    """VirtualEthernet=no: no private network namespace, the host's interfaces inside."""
    leader = host.check_output("machinectl show %s --property=Leader --value", MACHINE)
    assert host.check_output("readlink /proc/%s/ns/net", leader) == host.check_output("readlink /proc/1/ns/net")


def test_bind_is_visible_and_writable_inside(host):
    assert check_inside(host, SW_BIN + "/cat", "/data/from-host.txt") == "written on %s\n" % host.backend.get_hostname()
    check_inside(host, SW_BIN + "/sh", "-c", "echo written inside > /data/from-machine.txt")
    written = host.file("/srv/sidecar-data/from-machine.txt")
    assert written.content_string == "written inside\n"
    # The machine's root is an unprivileged user on the host (systemd-nspawn@.service runs with -U).
    assert written.uid >= 65536
    host.run("rm -f /srv/sidecar-data/from-machine.txt")


def test_read_only_bind_is_read_only_inside(host):
    assert check_inside(host, SW_BIN + "/test", "-d", "/srv/ro") == ""
    result = inside(host, SW_BIN + "/sh", "-c", "echo x > /srv/ro/nope")
    assert result.rc != 0
    assert "Read-only file system" in result.stderr + result.stdout
    assert not host.file("/srv/sidecar-ro/nope").exists


def test_nixos_module_is_imported_from_configuration_nix(host):
    nixos = MACHINE_ROOT + "/etc/nixos/"
    module = host.file(nixos + "ansible.nix").content_string
    assert 'timeZone = "UTC";' in module
    assert '"%s"' % AUTHORIZED_KEY in module
    assert "sidecar-molecule" in module
    configuration = host.file(nixos + "configuration.nix").content_string
    imports = re.search(r"imports\s*=\s*\[(.*?)\];", configuration, re.DOTALL).group(1)
    assert imports.split().count("./ansible.nix") == 1
    assert "./nspawn-image.nix" in imports  # the image's own import is still there


def os_id(host):
    """ID of the machine's os-release: nixos on the real image, nixos-fixture on the lab's fixture."""
    text = check_inside(host, SW_BIN + "/cat", "/etc/os-release")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)["ID"].strip('"')


def test_new_generation_is_active(host):
    """The image comes without generations (system -> a store path); the rebuild made one, switched to it."""
    profile = host.check_output("readlink %s/nix/var/nix/profiles/system", MACHINE_ROOT)
    assert re.match(r"^system-\d+-link$", profile), profile
    active = check_inside(host, SW_BIN + "/readlink", "-f", "/run/current-system").strip()
    default = check_inside(host, SW_BIN + "/readlink", "-f", "/nix/var/nix/profiles/system").strip()
    assert active == default
    if os_id(host) == "nixos":
        # Real NixOS built environment.etc."sidecar-molecule" into the active system's /etc.
        assert check_inside(host, SW_BIN + "/cat", "/etc/sidecar-molecule") == "configured by nspawn.nixos.sidecar\n"
    else:
        # The fixture's nixos-rebuild double builds no /etc from the settings: its system holds a copy of /etc/nixos.
        assert 'timeZone = "UTC";' in check_inside(host, SW_BIN + "/cat", active + "/configuration/ansible.nix")


def test_flake_lock_pins_the_images_nixpkgs(host):
    """nixpkgs is locked, offline, to the source /etc/nix/registry.json pins: no branch head of the day."""
    lock = json.loads(host.file(MACHINE_ROOT + "/etc/nixos/flake.lock").content_string)
    locked = lock["nodes"][lock["nodes"]["root"]["inputs"]["nixpkgs"]]["locked"]
    registry = json.loads(check_inside(host, SW_BIN + "/cat", "/etc/nix/registry.json"))
    pin = [entry["to"] for entry in registry["flakes"] if entry["from"].get("id") == "nixpkgs"][0]
    assert (locked["type"], locked["path"]) == (pin["type"], pin["path"]), (locked, pin)


def test_root_password_hash_is_set(host):
    shadow = host.file(MACHINE_ROOT + "/etc/shadow").content_string
    root = [line.split(":") for line in shadow.splitlines() if line.startswith("root:")]
    assert root and root[0][1] == ROOT_HASH


def test_pinned_image_was_downloaded_and_verified(host):
    if os.environ.get("NSPAWN_REAL_IMAGE_URL"):
        pytest.skip("make test-real: the real image came through the controller (sidecar_image_source: controller)")
    origin = json.loads(host.file("/var/lib/nspawn-nixos/origin/%s.json" % MACHINE).content_string)
    expected = host.ansible.get_variables()["lab_image_sha256"]
    assert (origin["method"], origin["sha256"], origin["checksum"]) == ("download", expected, "sha256:" + expected)
