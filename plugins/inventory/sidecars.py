# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: sidecars
short_description: The NixOS sidecars of an inventory's hosts, as hosts reached with nspawn.nixos.machine
version_added: 1.0.0
description:
  - Adds one host for every sidecar of every host in O(hosts_group), reached with the P(nspawn.nixos.machine#connection)
    connection through its host (the host's address, port, user, key and SSH arguments are copied).
  - Built from the inventory alone (the host groups and the variables C(sidecar_name), C(sidecar_names) and
    C(sidecar_state) that the R(nspawn.nixos.sidecar role,ansible_collections.nspawn.nixos.sidecar_role) reads) -
    nothing is contacted while the inventory is parsed. List it after the inventory that holds the hosts (C(-i hosts.ini -i sidecars.yml)), like
    P(ansible.builtin.constructed#inventory).
  - Groups - C(sidecars) (every sidecar), C(sidecar_NAME) per sidecar name (C(sidecar_nixos)), C(sidecars_of_HOST) per
    host; names made safe for groups.
author:
  - nspawn.nixos developers (@nspawn-nixos)
options:
  plugin:
    description:
      - The name of this plugin; set it to V(nspawn.nixos.sidecars) in a file whose name ends in C(sidecars.yml) or
        C(sidecars.yaml).
    required: true
    type: str
    choices: [nspawn.nixos.sidecars]
  hosts_group:
    description: The group of the hosts that carry sidecars (the collection's C(site.yml) uses C(sidecar_hosts)).
    type: str
    default: sidecar_hosts
  hostname_format:
    description: The inventory name of a sidecar; C({host}) is its host's inventory name, C({name}) the machine's.
    type: str
    default: "{host}-{name}"
  python_interpreter:
    description:
      - C(ansible_python_interpreter) of the sidecars - the Python of the NixOS system, there once its configuration
        adds C(pkgs.python3). P(ansible.builtin.raw#module) needs none.
    type: str
    default: /run/current-system/sw/bin/python3
  use_vars_plugins:
    description: Also read the hosts' variables from C(group_vars) and C(host_vars) folders (vars plugins).
    type: bool
    default: false
notes:
  - A host's sidecars are C(sidecar_names) (a list) if it has it, else its C(sidecar_name) (default C(nixos)); a host
    with C(sidecar_state=absent) has none.
seealso:
  - plugin: nspawn.nixos.machine
    plugin_type: connection
"""

EXAMPLES = r"""
# sidecars.yml, used as `ansible-playbook -i hosts.ini -i sidecars.yml play.yml`
plugin: nspawn.nixos.sidecars
hosts_group: sidecar_hosts

# Then, in a play:
# - hosts: sidecar_nixos          # every host's sidecar named nixos
#   gather_facts: false
#   tasks:
#     - ansible.builtin.raw: nixos-version
"""

from ansible.errors import AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.inventory.helpers import get_group_vars
from ansible.plugins.inventory import BaseInventoryPlugin
from ansible.utils.vars import combine_vars

# The variables of a host that say how to reach it; each sidecar of the host gets them.
REACH_VARS = ("ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port", "ansible_user", "ansible_ssh_user",
              "ansible_ssh_private_key_file", "ansible_private_key_file", "ansible_ssh_common_args", "ansible_ssh_extra_args",
              "ansible_ssh_args", "ansible_ssh_executable", "ansible_ssh_pipelining", "ansible_pipelining",
              "ansible_host_key_checking", "ansible_ssh_host_key_checking", "ansible_timeout", "ansible_ssh_timeout",
              "nspawn_machine_host_become")
DEFAULT_NAME = "nixos"


def sidecar_names(variables):
    """The machine names of a host's sidecars, from the role's variables."""
    if variables.get("sidecar_state", "present") == "absent":
        return []
    names = variables.get("sidecar_names")
    if names is None:
        names = [variables.get("sidecar_name", DEFAULT_NAME)]
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise AnsibleParserError(f"sidecar_names must be a list of machine names, got {names!r}")
    return [str(name) for name in names]


class InventoryModule(BaseInventoryPlugin):
    """Hosts for the sidecars of the hosts in a group, from the inventory's own data."""

    NAME = "nspawn.nixos.sidecars"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("sidecars.yml", "sidecars.yaml"))

    def _host_vars(self, host, sources):
        variables = combine_vars(get_group_vars(host.get_groups()), host.get_vars())
        if self.get_option("use_vars_plugins"):
            from ansible.vars.plugins import get_vars_from_inventory_sources  # pylint: disable=import-outside-toplevel
            plugin_vars = combine_vars(get_vars_from_inventory_sources(self.loader, sources, host.get_groups(), "all"),
                                       get_vars_from_inventory_sources(self.loader, sources, [host], "all"))
            variables = combine_vars(variables, plugin_vars)
        return variables

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        group = self.get_option("hosts_group")
        if group not in inventory.groups:
            raise AnsibleParserError("hosts_group: there is no group %r in the inventory so far; list the inventory of the "
                                     "hosts before %s" % (group, path))
        sources = getattr(inventory, "processed_sources", [])
        hostname_format = self.get_option("hostname_format")
        interpreter = self.get_option("python_interpreter")
        self.inventory.add_group("sidecars")
        for host in inventory.groups[group].get_hosts():
            variables = self._host_vars(host, sources)
            for name in sidecar_names(variables):
                try:
                    sidecar = hostname_format.format(host=host.name, name=name)
                except (KeyError, IndexError, ValueError) as exc:
                    raise AnsibleParserError("hostname_format: %r cannot be filled in (%s); use {host} and {name}" % (hostname_format, exc))
                self.inventory.add_host(sidecar, group="sidecars")
                for group_name in (f"sidecar_{name}", f"sidecars_of_{host.name}"):
                    safe = to_safe_group_name(group_name)
                    self.inventory.add_group(safe)
                    self.inventory.add_child(safe, sidecar)
                for key in REACH_VARS:
                    if key in variables:
                        self.inventory.set_variable(sidecar, key, variables[key])
                if "ansible_host" not in variables and "ansible_ssh_host" not in variables:
                    self.inventory.set_variable(sidecar, "ansible_host", host.name)
                self.inventory.set_variable(sidecar, "ansible_connection", "nspawn.nixos.machine")
                self.inventory.set_variable(sidecar, "nspawn_machine", name)
                self.inventory.set_variable(sidecar, "sidecar_host", host.name)
                self.inventory.set_variable(sidecar, "ansible_python_interpreter", interpreter)
