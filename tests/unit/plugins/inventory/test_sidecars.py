# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nspawn.nixos.sidecars inventory plugin: sidecar hosts from the inventory's own data (no connection)."""

from __future__ import annotations

import os

import pytest

from ansible.plugins.loader import init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

from ansible.errors import AnsibleParserError
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader

HOSTS = """
[debian]
web1 ansible_host=203.0.113.10 ansible_ssh_common_args='-o ProxyCommand="nc %h %p"'
web2 sidecar_names='["nixos", "ci"]'
old sidecar_state=absent

[sidecar_hosts:children]
debian

[sidecar_hosts:vars]
ansible_user=admin
ansible_python_interpreter=/usr/bin/python3
"""

# The plugin loaders find this checkout's plugins by the collection's name (tests/unit/conftest.py's link).
if AnsibleCollectionConfig.collection_finder is None:
    init_plugin_loader([os.path.join(os.path.dirname(__file__), "..", "..", "..", "output", "collections")])


def inventory(tmp_path, config="plugin: nspawn.nixos.sidecars\n", hosts=HOSTS):
    (tmp_path / "hosts.ini").write_text(hosts)
    (tmp_path / "sidecars.yml").write_text(config)
    return InventoryManager(loader=DataLoader(), sources=[str(tmp_path / "hosts.ini"), str(tmp_path / "sidecars.yml")])


def test_every_sidecar_is_a_host_reached_through_its_host(tmp_path):
    manager = inventory(tmp_path)
    names = sorted(host.name for host in manager.groups["sidecars"].get_hosts())
    assert names == ["web1-nixos", "web2-ci", "web2-nixos"]  # old: sidecar_state absent
    web1 = manager.get_host("web1-nixos").get_vars()
    assert web1["ansible_connection"] == "nspawn.nixos.machine" and web1["nspawn_machine"] == "nixos"
    assert web1["ansible_host"] == "203.0.113.10" and web1["ansible_user"] == "admin"
    assert web1["ansible_ssh_common_args"] == '-o ProxyCommand="nc %h %p"'
    assert web1["ansible_python_interpreter"] == "/run/current-system/sw/bin/python3" and web1["sidecar_host"] == "web1"
    assert manager.get_host("web2-ci").get_vars()["ansible_host"] == "web2"  # the host's name when it has no address


def test_groups_per_sidecar_name_and_per_host(tmp_path):
    manager = inventory(tmp_path)
    assert sorted(host.name for host in manager.groups["sidecar_nixos"].get_hosts()) == ["web1-nixos", "web2-nixos"]
    assert [host.name for host in manager.groups["sidecar_ci"].get_hosts()] == ["web2-ci"]
    assert sorted(host.name for host in manager.groups["sidecars_of_web2"].get_hosts()) == ["web2-ci", "web2-nixos"]
    # the sidecars are not hosts of the host group (site.yml would provision sidecars inside sidecars)
    assert "web1-nixos" not in [host.name for host in manager.groups["sidecar_hosts"].get_hosts()]


def test_options(tmp_path):
    config = "plugin: nspawn.nixos.sidecars\nhostname_format: '{name}.{host}'\npython_interpreter: /usr/bin/python3\n"
    manager = inventory(tmp_path, config)
    assert manager.get_host("nixos.web1").get_vars()["ansible_python_interpreter"] == "/usr/bin/python3"


@pytest.mark.parametrize("config, message", [
    ("plugin: nspawn.nixos.sidecars\nhosts_group: nope\n", "hosts_group: there is no group 'nope'"),
    ("plugin: nspawn.nixos.sidecars\nhostname_format: '{host}-{machine}'\n", "hostname_format: "),
])
def test_bad_options_name_themselves(tmp_path, config, message):
    (tmp_path / "hosts.ini").write_text(HOSTS)
    (tmp_path / "sidecars.yml").write_text(config)
    from ansible.plugins.loader import inventory_loader
    from ansible.inventory.data import InventoryData
    data = InventoryData()
    plugin = inventory_loader.get("nspawn.nixos.sidecars")
    manager = InventoryManager(loader=DataLoader(), sources=[str(tmp_path / "hosts.ini")])
    with pytest.raises(AnsibleParserError, match=message):
        plugin.parse(manager._inventory, DataLoader(), str(tmp_path / "sidecars.yml"), cache=False)
    assert data is not None


def test_sidecar_names_must_be_a_list(tmp_path):
    hosts = "[sidecar_hosts]\nweb1 sidecar_names=nixos\n"
    (tmp_path / "hosts.ini").write_text(hosts)
    (tmp_path / "sidecars.yml").write_text("plugin: nspawn.nixos.sidecars\n")
    from ansible.plugins.loader import inventory_loader
    plugin = inventory_loader.get("nspawn.nixos.sidecars")
    manager = InventoryManager(loader=DataLoader(), sources=[str(tmp_path / "hosts.ini")])
    with pytest.raises(AnsibleParserError, match="sidecar_names must be a list"):
        plugin.parse(manager._inventory, DataLoader(), str(tmp_path / "sidecars.yml"), cache=False)


def test_group_vars_folders_with_use_vars_plugins(tmp_path):
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "sidecar_hosts.yml").write_text("sidecar_name: ci\n")
    without = inventory(tmp_path, hosts="[sidecar_hosts]\nweb1\n")
    assert [host.name for host in without.groups["sidecars"].get_hosts()] == ["web1-nixos"]
    with_vars = inventory(tmp_path, "plugin: nspawn.nixos.sidecars\nuse_vars_plugins: true\n", hosts="[sidecar_hosts]\nweb1\n")
    assert [host.name for host in with_vars.groups["sidecars"].get_hosts()] == ["web1-ci"]
