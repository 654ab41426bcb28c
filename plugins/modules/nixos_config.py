#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: nixos_config
short_description: Write NixOS configuration into a systemd-nspawn machine and activate it
version_added: 1.0.0
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
  - B(A rebuild cut off) - before the first file of a change that a rebuild is to activate, the module writes a pending
    record (C(/var/lib/nspawn-nixos/nixos-pending/NAME.json)) and removes it once the rebuild succeeded or the files
    were put back. When the module is killed meanwhile (an OOM kill, a power loss, the async timeout), the next run
    finds the record, rebuilds although the files are already as wanted, and reports RV(resumed).
  - B(Ephemeral machines) - a machine that runs from a snapshot of its image (systemd.nspawn(5) C(Ephemeral=yes),
    C(systemd-nspawn --ephemeral); machined's C(RootDirectory) is then not the image) is refused before anything is
    written, as the running system would see neither the new files nor C(flake.lock). Configure it while it runs from its
    image, then make it ephemeral.
  - B(Judging a rebuild) - C(nixos-rebuild) does not report a failed activation the same way in every NixOS release
    (the bash script of NixOS 25.05 and earlier exits 1 after the warning C(error(s) occurred while switching to the new
    configuration); early C(nixos-rebuild-ng) exits 1 printing C(Command '[...switch-to-configuration', 'switch']'
    returned non-zero exit status 2.); later C(nixos-rebuild-ng) exits with switch-to-configuration's status), so the
    module judges by evidence, not by the exit status - the activation ran, the only failed activation snippet is
    C(specialfs), no unit failed, and (V(switch)) the system of the profile is the active one (read in the machine
    after the run). That is a success with a warning - C(specialfs) fails in every nspawn container of an image built
    with C(boot.isContainer), as the upstream images are (it cannot mount C(/dev), C(/dev/pts), C(/dev/shm) and
    C(/run)). Anything else (a build or evaluation error, failed units, another snippet) fails the task; with
    O(rollback=true) after C(nixos-rebuild ACTION --rollback --flake /etc/nixos#nixos). After a failed rebuild the
    module puts the previous files back, so that the next run sees the change again and retries it.
  - B(One nixpkgs for the fleet) - the upstream image's C(/etc/nixos/flake.nix) follows the C(nixos-unstable) branch and
    comes without C(flake.lock), so an unmanaged first rebuild locks whatever that branch is that day (and needs the
    network). The module owns C(/etc/nixos/flake.lock) - see O(nixpkgs). The lock is computed by the real
    C(nix flake lock) inside the machine, in a scratch copy of C(/etc/nixos), and written like the other files (check
    and diff mode included); a changed lock is a changed configuration and triggers O(rebuild).
author:
  - nspawn.nixos developers (@nspawn-nixos)
extends_documentation_fragment:
  - nspawn.nixos.attributes
  - nspawn.nixos.machine
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
      - When the rebuild fails after it made a new generation, run C(nixos-rebuild switch --rollback --flake /etc/nixos#nixos) (C(boot
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
        C(users.users.root.hashedPassword) in O(dest) (which is then created with mode C(0600)). Like every value of
        a NixOS configuration, the hash is then also copied into the machine's C(/nix/store), which every user and
        every service of the machine can read; use mutable users (below) where that matters.
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
  nixpkgs:
    description:
      - How C(/etc/nixos/flake.lock) locks the flake's C(nixpkgs) input (only when C(/etc/nixos/flake.nix) exists and
        O(state=present)).
      - V(image) locks it, offline, to the nixpkgs source that the machine's C(/etc/nix/registry.json) pins - the
        nixpkgs its running system was built from (the image's own until another one is locked and switched to). No
        network, no upgrade of the OS by the first rebuild, the same revision on every host of the same image.
      - A flake reference locks it to that source, the same on every host - C(github:NixOS/nixpkgs/REVISION) (40 hex
        digits), a tarball URL (C(https://), C(http://), C(file://); an air-gapped mirror), C(git+https://URL?rev=REVISION)
        or C(path:/nix/store/...). A branch (C(github:NixOS/nixpkgs/nixos-25.05)) is locked to its head once and moved
        only with O(nixpkgs_update=true).
      - V(unmanaged) leaves C(flake.lock) alone (C(nixos-rebuild) then locks whatever the flake's input resolves to).
      - The lock is only computed when the current one does not already match (no command runs then); the machine
        must be running for that (otherwise a warning, and the next run does it).
    type: str
    default: image
  nixpkgs_update:
    description:
      - Compute the lock again even if the current one matches O(nixpkgs) - an explicit upgrade, e.g. to the new head of
        a branch. Changes (and rebuilds) only when the locked revision changes.
    type: bool
    default: false
  keep_generations:
    description:
      - After the rebuild, delete all but the last N generations of the system profile
        (C(nix-env -p /nix/var/nix/profiles/system --delete-generations +N); the current one is always kept) and
        collect garbage (C(nix-store --gc)), reporting what was freed in RV(garbage). Only when there is a generation
        to delete (counted from the host), so an unchanged machine runs nothing.
      - Unset (the default) never deletes generations.
    type: int
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

- name: The same nixpkgs revision on every host, and only the last 5 generations kept
  nspawn.nixos.nixos_config:
    name: nixos
    settings:
      services:
        nginx: {enable: true}
    nixpkgs: github:NixOS/nixpkgs/8d4ddb19d03c65a36ad8d189d001dc32ffb0306b
    keep_generations: 5

- name: Upgrade a fleet that follows a branch, on purpose
  nspawn.nixos.nixos_config:
    name: nixos
    settings: "{{ nixos_settings }}"
    nixpkgs: github:NixOS/nixpkgs/nixos-25.05
    nixpkgs_update: true

- name: Remove the managed file and its import, and switch
  nspawn.nixos.nixos_config:
    name: nixos
    state: absent
"""

RETURN = r"""
actions:
  description:
    - What the module did, in order (in check mode, what it would do); empty when nothing changed.
    - V(backup), V(write), V(add_import), V(remove_import), V(remove), V(lock) (C(flake.lock)), V(rebuild),
      V(rollback), V(restore) (after a failed rebuild), V(set_root_password), V(collect_garbage).
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
resumed:
  description:
    - Whether this run finished a change an earlier run had written but whose rebuild was cut off (its pending record
      was there) - C(nixos-rebuild) ran although no file changed.
  returned: success
  type: bool
  sample: false
  version_added: 1.1.0
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
    failed_units:
      description: Units that switch-to-configuration reported as failed.
      type: list
      elements: str
      sample: []
    switch_status:
      description:
        - Exit status of switch-to-configuration as far as the output or exit status of C(nixos-rebuild) shows it
          (null for the bash C(nixos-rebuild), which prints only a warning).
      type: int
      sample: 2
    activated:
      description: Whether the activation ran (V(switch), V(test)).
      type: bool
    current_system:
      description: The active system in the machine after a non-zero exit (C(readlink -f /run/current-system)).
      type: str
    profile_system:
      description: The system of the profile in the machine after a non-zero exit.
      type: str
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
system:
  description:
    - The store path of the system that the machine's system profile points at after the task (the one it boots, and
      after a successful V(switch) the active one); compare it across a fleet.
  returned: success
  type: str
  sample: /nix/store/0c7kq7ky4zwc4hblv4p7bxlmr9p9g9l6-nixos-system-nixos-25.11pre
nixpkgs:
  description:
    - The nixpkgs that C(/etc/nixos/flake.lock) locks after the task (what it would lock, in check mode); null without
      a lock.
  returned: success
  type: dict
  contains:
    id:
      description: The revision when the source has one, else its C(narHash) - equal ids are the same nixpkgs.
      type: str
      sample: sha256-qqIJ3yxPiB0ZQTT9//nFGQYn8X/PBoJbofA7hRKZnmE=
    type:
      description: The locked source's type (C(path), C(github), C(tarball), C(git)).
      type: str
      sample: path
    rev:
      description: The locked revision, when the source has one.
      type: str
    narHash:
      description: The locked source's hash.
      type: str
    path:
      description: The store path of a C(path) source.
      type: str
    url:
      description: The URL of a C(tarball) or C(git) source.
      type: str
    original:
      description: The input as the flake names it.
      type: dict
garbage:
  description:
    - What O(keep_generations) deleted; null when nothing was deleted. In check mode, the generations it would delete,
      counting one new generation for a V(switch) or V(boot) rebuild (nix reuses the newest generation instead when the
      rebuild produces the same system, and then deletes one fewer).
  returned: success
  type: dict
  contains:
    keep:
      description: O(keep_generations).
      type: int
    deleted_generations:
      description: The generation numbers deleted.
      type: list
      elements: int
    store_paths_deleted:
      description: Store paths that C(nix-store --gc) deleted (null in check mode).
      type: int
    freed:
      description: The space freed, as nix prints it.
      type: str
      sample: 12.34 MiB
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

from ansible_collections.nspawn.nixos.plugins.module_utils._core._backend import machine_argument_spec
from ansible_collections.nspawn.nixos.plugins.module_utils._backends.nixos_config import NixosBackend


def main():
    module = AnsibleModule(
        argument_spec=machine_argument_spec(**{
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
            "nixpkgs": dict(type="str", default="image"),
            "nixpkgs_update": dict(type="bool", default=False),
            "keep_generations": dict(type="int"),
        }),
        mutually_exclusive=[("settings", "content")],
        supports_check_mode=True,
    )
    NixosBackend(module).execute()


if __name__ == "__main__":
    main()
