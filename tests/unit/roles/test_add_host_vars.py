# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A sidecar the role adds to the running inventory (verify.yml, add_host) gets the same variables of its host as
one the nspawn.nixos.sidecars inventory plugin adds: the same way to reach the host (address, user, key, SSH
arguments, host become), whichever of the two made it."""

from __future__ import annotations

import os
import re

import yaml

from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

from ansible_collections.nspawn.nixos.plugins.inventory.sidecars import REACH_VARS

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
VERIFY = os.path.join(ROOT, "roles", "sidecar", "tasks", "verify.yml")
# add_host's own options, not host variables.
ADD_HOST_OPTIONS = {"name", "groups"}

if AnsibleCollectionConfig.collection_finder is None:
    init_plugin_loader([os.path.join(ROOT, "tests", "output", "collections")])


def _tasks(tasks):
    for task in tasks or []:
        yield task
        yield from _tasks(task.get("block"))
        yield from _tasks(task.get("always"))


def _add_host_args():
    with open(VERIFY) as handle:
        tasks = yaml.safe_load(handle)
    [task] = [task for task in _tasks(tasks) if "ansible.builtin.add_host" in task]
    return task["ansible.builtin.add_host"]


def _plugin_vars(tmp_path, host_vars):
    """The variables the inventory plugin gives the sidecar of a host that has host_vars."""
    line = " ".join(f"{key}={value}" for key, value in host_vars.items())
    (tmp_path / "hosts.ini").write_text(f"[sidecar_hosts]\nweb1 {line}\n")
    (tmp_path / "sidecars.yml").write_text("plugin: nspawn.nixos.sidecars\n")
    manager = InventoryManager(loader=DataLoader(), sources=[str(tmp_path / "hosts.ini"), str(tmp_path / "sidecars.yml")])
    return dict(manager.get_host("web1-nixos").vars)  # the variables set, without the magic ones


def test_the_role_copies_the_host_variables_the_inventory_plugin_copies(tmp_path):
    args = _add_host_args()
    role = set(args) - ADD_HOST_OPTIONS
    # A host with every variable a host can be reached by, and secrets that neither copies.
    offered = {key: "x" for key in REACH_VARS}
    offered.update(ansible_password="pw", ansible_ssh_pass="pw", ansible_become_password="pw", ansible_become="true")
    plugin = set(_plugin_vars(tmp_path, offered)) - {"inventory_file", "inventory_dir"}
    assert role == plugin, "only the role: %s; only the inventory plugin: %s" % (sorted(role - plugin), sorted(plugin - role))
    # Each one is the host's own variable of that name.
    for key in REACH_VARS:
        assert re.match(r"^\{\{ hostvars\[item\]\.%s \| default\(" % re.escape(key), str(args[key])), (key, args[key])
    assert args["ansible_connection"] == "nspawn.nixos.machine"
    assert args["ansible_python_interpreter"] == _plugin_vars(tmp_path, {})["ansible_python_interpreter"]
