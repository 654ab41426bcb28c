#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: nspawn_settings
short_description: Manage the settings file /etc/systemd/nspawn/NAME.nspawn of a systemd-nspawn machine
version_added: 1.0.0
description:
  - Creates, edits or removes C(/etc/systemd/nspawn/NAME.nspawn), the settings of the machine O(name) that
    C(systemd-nspawn@NAME.service) reads when the machine starts (systemd.nspawn(5)).
  - This is the trusted location - privileged settings such as C(Bind=), C(Port=), C(VirtualEthernet=) or
    C(Capability=) only take effect from a file in C(/etc/systemd/nspawn) (or C(/run/systemd/nspawn)), not from
    a C(.nspawn) file next to the image in C(/var/lib/machines).
  - Edits keep every comment, blank line, the order of the keys and the spelling of the lines they do not touch.
  - Section and key names are checked against systemd.nspawn(5) for the systemd version of the host, values for
    what systemd would read back differently (newlines, NUL, leading or trailing blanks, a trailing backslash).
    Bad input fails before the file is touched.
  - systemd-nspawn reads the file only when the machine starts. When the effective settings of a running machine
    change, RV(restart_required) is true - reboot it with M(nspawn.nixos.nspawn_machine) (O(nspawn.nixos.nspawn_machine#module:state=restarted)).
author:
  - nspawn.nixos developers (@nspawn-nixos)
extends_documentation_fragment:
  - nspawn.nixos.attributes
  - nspawn.nixos.machine
options:
  state:
    description:
      - V(present) creates or edits the file (an empty file when O(settings) is empty).
      - V(absent) removes the file; O(settings) and O(purge) are ignored.
    type: str
    choices: [present, absent]
    default: present
  settings:
    description:
      - The settings, as sections V(Exec), V(Files) and V(Network), each a dict of key to value.
      - A value is a string, an integer, a boolean (written V(yes) or V(no)) or a list of those. A list writes the key
        once per item (C(Bind=), C(Port=), ... add up); keys of which systemd only uses the last line take one value.
      - V(null) or an empty list removes the key.
      - Keys not given are left as they are, unless O(purge=true).
    type: dict
    default: {}
  purge:
    description:
      - Remove every key that is not in O(settings) (a section left without keys loses its header too).
      - Comments stay.
    type: bool
    default: false
  backup:
    description:
      - Before changing or removing an existing file, copy it to a file with a timestamp in its name beside it
        (in C(/etc/systemd/nspawn); systemd only reads files that end in C(.nspawn)).
    type: bool
    default: false
notes:
  - C(machinectl remove NAME) (and M(nspawn.nixos.nspawn_machine) with O(nspawn.nixos.nspawn_machine#module:remove_image=true),
    M(nspawn.nixos.nspawn_image) with O(nspawn.nixos.nspawn_image#module:state=absent)) deletes this file too.
  - A new file is created C(root:root) with mode C(0644), and C(/etc/systemd/nspawn) with mode C(0755) when it is
    missing; an existing file keeps its owner and mode.
  - The settings of the machine come from this file only; a C(.nspawn) file next to the image is ignored while
    this one exists.
seealso:
  - module: nspawn.nixos.nspawn_machine
  - name: systemd.nspawn(5)
    description: Container settings.
    link: https://www.freedesktop.org/software/systemd/man/latest/systemd.nspawn.html
"""

EXAMPLES = r"""
- name: Share the host's network and bind a directory, as in the article
  nspawn.nixos.nspawn_settings:
    name: nixos
    settings:
      Network:
        VirtualEthernet: false
      Files:
        Bind:
          - /srv/data:/data
        BindReadOnly:
          - /etc/resolv.conf
  register: nixos_settings

- name: Reboot the machine when its settings changed while it was running
  nspawn.nixos.nspawn_machine:
    name: nixos
    state: restarted
  when: nixos_settings.restart_required

- name: A private network with a port forward, nothing else in the file
  nspawn.nixos.nspawn_settings:
    name: nixos
    purge: true
    backup: true
    settings:
      Network:
        VirtualEthernet: true
        Port:
          - tcp:8080:80

- name: Remove one key, keep the rest
  nspawn.nixos.nspawn_settings:
    name: nixos
    settings:
      Files:
        BindReadOnly: null

- name: Remove the settings file
  nspawn.nixos.nspawn_settings:
    name: nixos
    state: absent
"""

RETURN = r"""
actions:
  description:
    - What the module did, in order (in check mode, what it would do); empty when nothing changed.
    - V(create_directory), V(backup), V(write), V(remove).
  returned: always
  type: list
  elements: str
  sample: [backup, write]
path:
  description: The settings file.
  returned: success
  type: str
  sample: /etc/systemd/nspawn/nixos.nspawn
settings:
  description:
    - The settings in the file after the task, every key with the list of its values in file order
      (comments and keys outside a section left out). Empty when the file is absent.
  returned: success
  type: dict
  sample: {Network: {VirtualEthernet: ["no"]}, Files: {Bind: ["/srv/data:/data"]}}
restart_required:
  description:
    - True when the machine is running and its effective settings changed; they take effect after
      C(machinectl reboot NAME).
  returned: success
  type: bool
  sample: true
backup_file:
  description: The backup copy of the previous file; null when none was made.
  returned: success
  type: str
  sample: /etc/systemd/nspawn/nixos.nspawn.4242.2025-01-01@12:00:00~
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nspawn.nixos.plugins.module_utils._core._backend import machine_argument_spec
from ansible_collections.nspawn.nixos.plugins.module_utils._backends.settings import SettingsBackend


def main():
    module = AnsibleModule(
        argument_spec=machine_argument_spec(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            settings=dict(type="dict", default={}),
            purge=dict(type="bool", default=False),
            backup=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    SettingsBackend(module).execute()


if __name__ == "__main__":
    main()
