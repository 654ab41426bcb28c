#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: nspawn_machine
short_description: Start, stop, restart, enable or remove a systemd-nspawn machine
version_added: 1.0.0
description:
  - Runs a machine from its image in C(/var/lib/machines) as C(systemd-nspawn@NAME.service) with
    C(machinectl start), stops it with C(machinectl poweroff), restarts it with C(machinectl reboot),
    and enables it at boot with C(machinectl enable) (C(systemd-nspawn@NAME.service) in C(machines.target)).
  - C(machinectl poweroff) and C(machinectl reboot) return before the machine has stopped or come back;
    the module polls C(machinectl show) until it has, for at most O(timeout) seconds.
  - With O(wait=true) the module waits until the container's own systemd reports V(running) or
    V(degraded) (C(systemd-run -M NAME --wait --pipe --collect -q ... systemctl is-system-running)), so that
    later tasks can run commands inside it.
  - A machine that does not power off within O(timeout) seconds is terminated (C(machinectl terminate)),
    with a warning.
  - Create the image first with M(nspawn.nixos.nspawn_image).
author:
  - nspawn.nixos developers (@nspawn-nixos)
extends_documentation_fragment:
  - nspawn.nixos.attributes
  - nspawn.nixos.machine
options:
  state:
    description:
      - V(running) starts the machine when it is not running.
      - V(stopped) powers it off when it is running.
      - V(restarted) reboots a running machine (always a change) or starts a stopped one.
      - V(absent) powers it off and disables it; its image stays unless O(remove_image=true).
    type: str
    choices: [running, stopped, restarted, absent]
    default: running
  enabled:
    description:
      - Whether the machine starts at boot (C(machinectl enable) / C(machinectl disable)).
      - Checked with C(systemctl is-enabled systemd-nspawn@NAME.service).
      - Left as it is when not given, except with O(state=absent), which disables the machine.
    type: bool
  wait:
    description:
      - After a start or a reboot, wait until the system manager inside the machine reports
        V(running) or V(degraded).
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each step to finish - power off, come back from a reboot, boot up (O(wait)).
    type: int
    default: 120
  remove_image:
    description:
      - With O(state=absent), also remove the image (C(machinectl remove)) and the record of its origin.
      - C(machinectl remove) also deletes C(/etc/systemd/nspawn/NAME.nspawn).
    type: bool
    default: false
notes:
  - A failed start reports the last 20 lines of C(journalctl -u systemd-nspawn@NAME.service).
seealso:
  - module: nspawn.nixos.nspawn_image
  - name: machinectl(1)
    description: Control the systemd machine manager.
    link: https://www.freedesktop.org/software/systemd/man/latest/machinectl.html
"""

EXAMPLES = r"""
- name: Run the NixOS machine and start it at boot
  nspawn.nixos.nspawn_machine:
    name: nixos
    state: running
    enabled: true

- name: Reboot it, e.g. after its .nspawn settings changed
  nspawn.nixos.nspawn_machine:
    name: nixos
    state: restarted
    timeout: 300

- name: Stop it
  nspawn.nixos.nspawn_machine:
    name: nixos
    state: stopped

- name: Remove the machine and its image
  nspawn.nixos.nspawn_machine:
    name: nixos
    state: absent
    remove_image: true
"""

RETURN = r"""
actions:
  description: What the module did, in order (in check mode, what it would do); empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample: [start, enable]
name:
  description: The machine's name.
  returned: success
  type: str
  sample: nixos
state:
  description: The machine's state after the task - V(running), V(stopped) or V(absent) (no image either).
  returned: success
  type: str
  sample: running
enabled:
  description: Whether the machine starts at boot, after the task.
  returned: success
  type: bool
  sample: true
leader:
  description: PID (on the host) of the machine's init process; null when it is not running.
  returned: success
  type: int
  sample: 4242
system_state:
  description: What C(systemctl is-system-running) reported inside the machine after a start or reboot with O(wait=true).
  returned: when the module started or rebooted the machine and O(wait=true)
  type: str
  sample: running
os_release:
  description:
    - The container's C(os-release) (C(/etc/os-release), else C(/usr/lib/os-release) of its image), read on the
      host, with symlinks resolved inside the image. Empty when the image is not a directory tree or is gone.
  returned: success
  type: dict
  sample: {ID: nixos, NAME: NixOS, PRETTY_NAME: "NixOS 24.11 (Vicuna)", VERSION_ID: "24.11"}
nixos:
  description:
    - The NixOS side of the machine's image tree, as M(nspawn.nixos.nspawn_info) returns it as C(nixos) of each of its
      RV(nspawn.nixos.nspawn_info#module:images); null when the image is not a NixOS tree or is gone.
  returned: success
  type: dict
  contains:
    system:
      description: The store path the system profile points at (the system the machine boots).
      type: str
    generation:
      description: The profile's generation number; null while it points straight at a store path (a fresh image).
      type: int
    nixpkgs:
      description: The nixpkgs that C(/etc/nixos/flake.lock) locks; null without a lock.
      type: dict
  sample: {system: /nix/store/0c7kq7ky4zwc4hblv4p7bxlmr9p9g9l6-nixos-system-nixos-25.11pre, generation: 2, nixpkgs: null}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nspawn.nixos.plugins.module_utils._core._backend import machine_argument_spec
from ansible_collections.nspawn.nixos.plugins.module_utils._backends.machine import MachineBackend


def main():
    module = AnsibleModule(
        argument_spec=machine_argument_spec(
            state=dict(type="str", default="running", choices=["running", "stopped", "restarted", "absent"]),
            enabled=dict(type="bool"),
            wait=dict(type="bool", default=True),
            timeout=dict(type="int", default=120),
            remove_image=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    MachineBackend(module).execute()


if __name__ == "__main__":
    main()
