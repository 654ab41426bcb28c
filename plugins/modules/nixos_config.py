#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: nixos_config
short_description: Write NixOS configuration into a systemd-nspawn machine and activate it
description:
  - Writes a NixOS module file into the machine's C(/etc/nixos) from the host (the machine's tree is the C(Path) of
    C(machinectl show-image NAME), usually C(/var/lib/machines/NAME)), adds it once to the C(imports) of the
    machine's C(/etc/nixos/configuration.nix), and runs C(nixos-rebuild) inside the machine.
  - The user's own C(configuration.nix) is not otherwise touched - only the one C(./ansible.nix) entry is added to (or
    removed from) its top-level C(imports) list, every other byte stays. A file the module cannot edit safely is
    refused with a message that says what to add by hand.
  - B(Validation) - before anything is written, every new or changed file is parsed with
    C(nix-instantiate --store dummy:// --parse) - on the host when C(nix-instantiate) is installed there (Debian and
    Ubuntu package C(nix-bin)), else inside the running machine (C(systemd-run -M NAME --wait --pipe --collect -q
    /run/current-system/sw/bin/nix-instantiate ...), the text on stdin). A syntax error fails the task with the
    parser's message (file, line, column) and leaves every file as it was. When the host has no C(nix-instantiate) and
    the machine is not running (only possible with O(rebuild=none)), the files are written unchecked, with a warning.
  - B(Rebuild) - when a file changed, C(nixos-rebuild) runs in the machine through
    C(systemd-run -M NAME --wait --pipe --collect -q -p RuntimeMaxSec=TIMEOUT /bin/sh -lc "exec /run/current-system/sw/bin/nixos-rebuild ACTION")
    (a login shell gives it NixOS's PATH and NIX_PATH; never C(machinectl shell), which always exits 0). When
    C(/etc/nixos/flake.nix) exists, C(--flake /etc/nixos#nixos) is added (the upstream nspawn-nixos image ships such a
    flake).
  - Exit status 2 of switch-to-configuration whose only failed activation snippet is C(specialfs) is a success with a
    warning - it fails in every container of an image built with C(boot.isContainer) (it cannot mount C(/dev),
    C(/dev/pts), C(/dev/shm) and C(/run)). Any other failure (a build or evaluation error, status 2 with another
    snippet, 3, 4) fails the task; with O(rollback=true) after C(nixos-rebuild ACTION --rollback). After a failed rebuild
    the module puts the previous files back, so that the next run sees the change again and retries it.
author:
  - nspawn.nixos developers (@nspawn-nixos)
extends_documentation_fragment:
  - nspawn.nixos.attributes
  - nspawn.nixos.name
  - nspawn.nixos.lock
options:
  state:
    description:
      - V(present) writes O(dest) and imports it from C(configuration.nix).
      - V(absent) removes the import and then O(dest), and rebuilds when something changed. A machine without an image
        or without C(/etc/nixos) has nothing to remove.
    type: str
    choices: [present, absent]
    default: present
  settings:
    description:
      - NixOS options as a dict, rendered to a NixOS module (a function of C(config), C(pkgs) and C(lib) returning an
        attribute set) with sorted attribute names, so the same data always gives the same file.
      - Nested dicts are nested attribute sets. A key with dots in it is one quoted attribute name - nest the dicts
        (C(networking) holding C(hostName)) instead of writing C(networking.hostName) as one key.
      - Strings are escaped (also C(${)), booleans, integers, floats, lists and null map to their Nix forms.
      - A raw Nix expression is written as a dict with the single key C(__nix_raw__) whose value is the expression,
        for example C(with pkgs; [ git vim ]); see the examples.
      - Mutually exclusive with O(content).
    type: dict
  content:
    description:
      - The Nix text of O(dest), written as it is - a NixOS module, see the examples.
      - To use a file or a template from the controller, pass it through the P(ansible.builtin.file#lookup) or
        P(ansible.builtin.template#lookup) lookup (see the examples). The module has no C(src) option because it runs
        on the managed host, where a path on the controller would not exist.
      - Mutually exclusive with O(settings).
    type: str
  dest:
    description:
      - The file to manage, as a path inside the machine; it must be a C(.nix) file directly in C(/etc/nixos)
        whose name can be a Nix path literal (C(./NAME.nix)).
      - Set O(dest=/etc/nixos/configuration.nix) with O(import=false) to manage the whole configuration.
    type: str
    default: /etc/nixos/ansible.nix
  import:
    description:
      - Add C(./NAME.nix) (the name of O(dest)) to the C(imports) list of C(/etc/nixos/configuration.nix) (once), or
        remove it with O(state=absent).
      - With V(false), C(configuration.nix) is never read or changed.
    type: bool
    default: true
  rebuild:
    description:
      - The C(nixos-rebuild) action to run when a file changed - V(switch) (build, make it the boot default and
        activate it), V(boot) (build and make it the default for the next start of the machine), V(test) (build and
        activate, but keep the boot default), or V(none).
      - The machine must be running for any action but V(none).
    type: str
    choices: [switch, boot, test, none]
    default: switch
  rollback:
    description:
      - When the rebuild fails after it made a new generation, run C(nixos-rebuild switch --rollback) (C(boot
        --rollback) for O(rebuild=boot)) before failing. Nothing is rolled back after a build or evaluation error (no
        new generation exists) or with O(rebuild=test) (the boot default did not change; restarting the machine returns
        to it).
    type: bool
    default: false
  root_password_hash:
    description:
      - The root password of the machine, as a crypt(3) hash (C(mkpasswd -m sha-512)), or V(!) to lock the account.
        A plain password is refused.
      - With C(users.mutableUsers = false) in O(settings) (C(settings.users.mutableUsers=false)), it becomes
        C(users.users.root.hashedPassword) in O(dest) (which is then created with mode C(0600)).
      - Otherwise (NixOS's default, mutable users) it is set with C(chpasswd -e) inside the machine, the C(root:HASH)
        line on its stdin, only when the hash in the machine's C(/etc/shadow) (read from the host) differs. The
        machine must be running then. If your own C(configuration.nix) sets C(users.mutableUsers = false), set it in
        O(settings) too.
      - Never written to the output, the diff or the list of actions.
    type: str
  timeout:
    description:
      - Seconds that C(nixos-rebuild) (and a rollback) may run; the service manager of the machine stops it after that
        (C(RuntimeMaxSec=)).
    type: int
    default: 3600
  backup:
    description:
      - Before changing or removing a file, copy it to a file with a timestamp in its name beside it
        (C(NAME.nix.PID.DATE@TIME~), which Nix does not import).
    type: bool
    default: false
notes:
  - B(Symlinks) - the module opens the machine's C(/etc/nixos) (and C(/etc/shadow)) one path component at a time from
    the machine's root without following symlinks, and works relative to the opened directory; a symlink or special
    file on the way is refused with an error. A container's root owns its tree and could otherwise point
    C(/etc/nixos) at the host's own C(/etc). For the same reason files are written with a temporary file and a
    rename inside the opened directory rather than with C(atomic_move).
  - New files get the owner of C(/etc/nixos) (the container's root, also with user namespaces) and mode C(0644);
    changed files keep their owner and mode.
  - When C(/etc/nixos) is a git repository used by a flake, new files must be added to git (C(git add)) before
    nixos-rebuild can see them; the module warns when it creates one there.
  - Changes of C(/etc/systemd/nspawn/NAME.nspawn) belong to M(nspawn.nixos.nspawn_settings).
seealso:
  - module: nspawn.nixos.nspawn_machine
  - module: nspawn.nixos.nspawn_settings
  - name: nixos-rebuild(8)
    description: Reconfigure a NixOS machine.
    link: https://nixos.org/manual/nixos/stable/#sec-changing-config
"""

EXAMPLES = r"""
- name: NixOS settings in /etc/nixos/ansible.nix, imported from configuration.nix, then nixos-rebuild switch
  nspawn.nixos.nixos_config:
    name: nixos
    settings:
      services:
        openssh:
          enable: true
          settings: {PasswordAuthentication: false}
      environment:
        systemPackages: {__nix_raw__: "with pkgs; [ git htop ]"}
      time:
        timeZone: UTC

- name: Root password (mutable users, the default - set with chpasswd inside the machine)
  nspawn.nixos.nixos_config:
    name: nixos
    root_password_hash: "{{ vault_nixos_root_hash }}"

- name: Declarative users - the hash goes into the module file as users.users.root.hashedPassword
  nspawn.nixos.nixos_config:
    name: nixos
    settings:
      users: {mutableUsers: false}
    root_password_hash: "{{ vault_nixos_root_hash }}"
    rollback: true

- name: A module from a template on the controller, activated at the next start of the machine
  nspawn.nixos.nixos_config:
    name: nixos
    dest: /etc/nixos/services.nix
    content: "{{ lookup('ansible.builtin.template', 'services.nix.j2') }}"
    rebuild: boot

- name: A file from the controller as it is
  nspawn.nixos.nixos_config:
    name: nixos
    dest: /etc/nixos/hardening.nix
    content: "{{ lookup('ansible.builtin.file', 'files/hardening.nix') }}"

- name: Remove the managed file and its import, and switch
  nspawn.nixos.nixos_config:
    name: nixos
    state: absent
"""

RETURN = r"""
actions:
  description:
    - What the module did, in order (in check mode, what it would do); empty when nothing changed.
    - V(backup), V(write), V(add_import), V(remove_import), V(remove), V(rebuild), V(rollback), V(restore) (after a
      failed rebuild), V(set_root_password).
  returned: always
  type: list
  elements: str
  sample: [write, add_import, rebuild]
root:
  description: The machine's tree on the host.
  returned: success
  type: str
  sample: /var/lib/machines/nixos
files:
  description: The files that changed (or would change), as paths inside the machine.
  returned: success
  type: list
  elements: str
  sample: [/etc/nixos/ansible.nix, /etc/nixos/configuration.nix]
backup_files:
  description: The backup copies made, as paths inside the machine.
  returned: success
  type: list
  elements: str
  sample: [/etc/nixos/configuration.nix.4242.2025-01-01@12:00:00~]
validation:
  description:
    - Where the changed files were parsed - V(host), V(machine), or V(skipped) (see the description); null when no
      file changed.
  returned: success
  type: str
  sample: host
rebuild:
  description: What C(nixos-rebuild) did; null when it did not run.
  returned: success
  type: dict
  contains:
    action:
      description: The action (O(rebuild)).
      type: str
      sample: switch
    flake:
      description: Whether C(--flake /etc/nixos#nixos) was used.
      type: bool
      sample: true
    rc:
      description: Exit status of C(nixos-rebuild).
      type: int
      sample: 2
    failed_snippets:
      description: Activation script snippets reported as failed.
      type: list
      elements: str
      sample: [specialfs]
    warnings:
      description: What was accepted with a warning.
      type: list
      elements: str
    rolled_back:
      description: Whether a rollback ran and succeeded (only on failure).
      type: bool
      sample: false
    stdout:
      description: Standard output of C(nixos-rebuild).
      type: str
    stderr:
      description: Standard error of C(nixos-rebuild).
      type: str
generation:
  description:
    - Number of the generation the machine's system profile points at after the task (from
      C(/nix/var/nix/profiles/system -> system-N-link)); null when it points straight at a store path, as in a fresh
      upstream image.
  returned: success
  type: int
  sample: 3
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nspawn.nixos.plugins.module_utils._nixos import NixosBackend


def main():
    module = AnsibleModule(
        argument_spec={
            "name": dict(type="str", required=True),
            "state": dict(type="str", default="present", choices=["present", "absent"]),
            "settings": dict(type="dict"),
            "content": dict(type="str"),
            "dest": dict(type="str", default="/etc/nixos/ansible.nix"),
            "import": dict(type="bool", default=True),
            "rebuild": dict(type="str", default="switch", choices=["switch", "boot", "test", "none"]),
            "rollback": dict(type="bool", default=False),
            "root_password_hash": dict(type="str", no_log=True),
            "timeout": dict(type="int", default=3600),
            "backup": dict(type="bool", default=False),
            "lock_timeout": dict(type="int", default=600),
        },
        mutually_exclusive=[("settings", "content")],
        supports_check_mode=True,
    )
    NixosBackend(module).execute()


if __name__ == "__main__":
    main()
