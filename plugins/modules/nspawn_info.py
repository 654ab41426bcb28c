#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: nspawn_info
short_description: Facts about systemd-nspawn machines and images
version_added: 1.0.0
description:
  - Returns the running machines (C(machinectl list) and C(machinectl show)) and the images
    (C(machinectl list-images) and C(machinectl show-image)) of the host as data, with what the host knows about
    each - whether it starts at boot, its C(os-release), the recorded origin of the image, its settings file.
  - Changes nothing.
author:
  - nspawn.nixos developers (@nspawn-nixos)
extends_documentation_fragment:
  - nspawn.nixos.attributes.INFO_MODULE
  - nspawn.nixos.attributes
options:
  name:
    description:
      - Only these machines and images. By default all of them, except the host itself (V(.host)), which is returned
        when named here.
    type: list
    elements: str
  gather:
    description:
      - What to return - V(machines), V(images), or both.
    type: list
    elements: str
    choices: [machines, images]
    default: [machines, images]
notes:
  - C(machinectl list) only shows running machines; a stopped machine is an image (RV(images)) with C(running=false).
seealso:
  - module: nspawn.nixos.nspawn_machine
  - module: nspawn.nixos.nspawn_image
"""

EXAMPLES = r"""
- name: Read the machines and images of the host
  nspawn.nixos.nspawn_info:
  register: nspawn

- name: Start the NixOS machine only where its image exists and it is not running
  nspawn.nixos.nspawn_machine:
    name: nixos
  when:
    - "'nixos' in nspawn.images"
    - not nspawn.images.nixos.running

- name: Only the image of one machine
  nspawn.nixos.nspawn_info:
    name: [nixos]
    gather: [images]
  register: nixos_image

- name: Show where it came from
  ansible.builtin.debug:
    msg: "{{ nixos_image.images.nixos.origin.url | default('unknown origin') }}"
"""

RETURN = r"""
systemd_version:
  description: The host's systemd version.
  returned: always
  type: int
  sample: 252
importctl:
  description: Whether image transfers go through C(importctl) (systemd 256 and later, when installed).
  returned: always
  type: bool
  sample: false
machines:
  description: Running machines by name; empty unless O(gather) contains V(machines).
  returned: always
  type: dict
  sample:
    nixos:
      name: nixos
      state: running
      leader: 4242
      class: container
      service: systemd-nspawn
      unit: systemd-nspawn@nixos.service
      root_directory: /var/lib/machines/nixos
      os: nixos
      version: "24.11"
      addresses: null
      os_release: {ID: nixos, NAME: NixOS}
      enabled: true
      properties: {Name: nixos, Leader: "4242", State: running}
  contains:
    state:
      description: The machine's state in machined (V(opening), V(running), V(closing)).
      type: str
    leader:
      description: PID (on the host) of the machine's init process.
      type: int
    root_directory:
      description: The machine's tree on the host.
      type: str
    os_release:
      description: The container's C(os-release), read on the host from its tree.
      type: dict
    enabled:
      description: Whether C(systemd-nspawn@NAME.service) starts at boot (C(machinectl enable)).
      type: bool
    properties:
      description: Every property of C(machinectl show NAME).
      type: dict
images:
  description: Images by name; empty unless O(gather) contains V(images).
  returned: always
  type: dict
  sample:
    nixos:
      name: nixos
      type: directory
      path: /var/lib/machines/nixos
      read_only: false
      usage: null
      created: 1764086740000000
      modified: null
      running: true
      enabled: true
      os_release: {ID: nixos, NAME: NixOS}
      nixos:
        system: /nix/store/0c7kq7ky4zwc4hblv4p7bxlmr9p9g9l6-nixos-system-nixos-25.11pre
        generation: 2
        nixpkgs: {type: path, id: "sha256-qqIJ3yxPiB0ZQTT9//nFGQYn8X/PBoJbofA7hRKZnmE="}
      origin: {url: "https://github.com/tfc/nspawn-nixos/releases/latest/download/nixos-system-x86_64-linux.tar.xz"}
      settings_file: /etc/systemd/nspawn/nixos.nspawn
      properties: {Name: nixos, Path: /var/lib/machines/nixos, Type: directory}
  contains:
    type:
      description: V(directory), V(subvolume), V(raw) or V(block).
      type: str
    path:
      description: Where the image is on the host.
      type: str
    running:
      description: Whether a machine of that name is running.
      type: bool
    enabled:
      description: Whether the machine starts at boot.
      type: bool
    os_release:
      description: The image's C(os-release) (directory and subvolume images); empty otherwise.
      type: dict
    nixos:
      description:
        - The NixOS side of a directory or subvolume image, read on the host from its tree (no symlink followed); null
          for a tree without C(/nix/var/nix/profiles/system).
      type: dict
      contains:
        system:
          description: The store path the system profile points at (the system the machine boots).
          type: str
        generation:
          description: The profile's generation number; null while it points straight at a store path (a fresh image).
          type: int
        nixpkgs:
          description:
            - The nixpkgs that C(/etc/nixos/flake.lock) locks (see M(nspawn.nixos.nixos_config)'s O(nspawn.nixos.nixos_config#module:nixpkgs));
              null without a lock. Its C(id) is the revision, or the source's narHash - equal ids are the same nixpkgs.
          type: dict
    origin:
      description: Where M(nspawn.nixos.nspawn_image) got the image from; null when it did not record it.
      type: dict
    settings_file:
      description: C(/etc/systemd/nspawn/NAME.nspawn) when it exists, else null.
      type: str
    properties:
      description: Every property of C(machinectl show-image NAME).
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nspawn.nixos.plugins.module_utils._backends.info import InfoBackend


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="list", elements="str"),
            gather=dict(type="list", elements="str", choices=["machines", "images"], default=["machines", "images"]),
        ),
        supports_check_mode=True,
    )
    InfoBackend(module).execute()


if __name__ == "__main__":
    main()
