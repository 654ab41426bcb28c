# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nspawn_settings backend: /etc/systemd/nspawn/NAME.nspawn, merged or purged.

Private module: not a public API.
"""

from __future__ import annotations

import functools
import os
import tempfile

from ansible_collections.nspawn.nixos.plugins.module_utils._core._backend import Backend
from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._core._files import remove_file
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import Machinectl
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._nspawn_ini import (
    NspawnFile, NspawnSettingsError, edit, restart_required,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._nspawn_ini import desired_values as nspawn_desired_values
from ansible_collections.nspawn.nixos.plugins.module_utils._core._plan import Step, apply
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._records import settings_path
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._rootfs import MachineDir
from ansible_collections.nspawn.nixos.plugins.module_utils._core._validate import check_machine_name

FILE_MODE = 0o644
DIR_MODE = 0o755


def read_text(path):
    """The text of path, None when it does not exist."""
    if not os.path.lexists(path):
        return None
    with open(path, "r", encoding="utf-8", errors="surrogateescape", newline="") as handle:
        return handle.read()


def write_text_atomic(module, path, text, mode=FILE_MODE):
    """Write text to path through a temporary file in the same directory and module.atomic_move.

    A new file gets mode (root:root as the module runs as root); an existing one keeps its
    owner and mode (atomic_move copies them).
    """
    creating = not os.path.exists(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        module.atomic_move(tmp, path)
        if creating:
            os.chmod(path, mode)  # atomic_move applies the umask to a new file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def desired_values(settings, systemd_version):
    """_nspawn_ini.desired_values(), its refusal as the module's ValidationError (naming settings.SECTION.KEY)."""
    try:
        return nspawn_desired_values(settings, systemd_version)
    except NspawnSettingsError as exc:
        raise ValidationError(str(exc))


class SettingsBackend(Backend):
    """nspawn_settings: the .nspawn file of one machine in the trusted directory."""

    def run(self):
        params = self.module.params
        name = check_machine_name(params["name"])
        mc = Machinectl(self.runner)
        mc.require_tools()
        version = mc.version
        present = params["state"] == "present"
        desired = desired_values(params["settings"] or {}, version) if present else {}
        self.lock(name)

        path = settings_path(name)
        if os.path.isdir(path):
            raise ValidationError(f"name: {path} is a directory, not a settings file")
        before = read_text(path)
        after = self._edit(before, desired, params["purge"]) if present else None
        changed = before != after
        running = mc.is_running(name)

        self.result.update(
            changed=changed, path=path, backup_file=None,
            restart_required=bool(changed and running and restart_required(before, after)),
            settings=NspawnFile(after or "").to_dict(),
        )
        self.diff.text(path, before, after)
        if changed:
            self._apply(path, before, after)

    def _edit(self, before, desired, purge):
        after, warnings = edit(before, desired, purge)
        for warning in warnings:
            self.module.warn(warning)
        return after

    def _apply(self, path, before, after):
        steps = []
        directory = os.path.dirname(path)
        if after is not None and not os.path.isdir(directory):
            steps.append(Step("create_directory", functools.partial(self._create_directory, directory)))
        if before is not None and self.module.params["backup"]:
            steps.append(Step("backup", functools.partial(self._backup, path)))
        if after is None:
            steps.append(Step("remove", functools.partial(self._remove, path)))
        else:
            steps.append(Step("write", functools.partial(self._write, path, after)))
        if not apply(self, steps) and before is not None and self.module.params["backup"]:
            # Check mode: the name backup_local() would choose (not backup_local() itself: before ansible-core 2.17
            # it copies in check mode too).
            self.result["backup_file"] = MachineDir.backup_name(path)

    def _create_directory(self, directory):
        os.makedirs(directory, DIR_MODE)
        os.chmod(directory, DIR_MODE)

    def _backup(self, path):
        self.result["backup_file"] = self.module.backup_local(path)

    def _remove(self, path):
        remove_file(path)

    def _write(self, path, text):
        write_text_atomic(self.module, path, text)
