# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nspawn_info backend: machines and images as data, read-only.

Private module: not a public API.
"""

from __future__ import annotations

import os

from ansible_collections.nspawn.nixos.plugins.module_utils._core._backend import Backend
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._os_release import read_os_release
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import TREE_TYPES, Machinectl, int_or_none
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._nixpkgs import nixos_state
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._records import read_origin, settings_path
from ansible_collections.nspawn.nixos.plugins.module_utils._core._validate import check_machine_name

# machined's name for the host itself, which list-images shows as a (hidden) image.
HOST = ".host"


class InfoBackend(Backend):
    """nspawn_info: `machinectl list`/`show` and `list-images`/`show-image`, plus what the host knows about each."""

    def __init__(self, module):
        super(InfoBackend, self).__init__(module)
        self._enabled = {}

    def run(self):
        params = self.module.params
        names = [name if name == HOST else check_machine_name(name, "name") for name in params["name"] or []]
        mc = Machinectl(self.runner)
        mc.require_tools()
        self.result.update(systemd_version=mc.version, importctl=mc.uses_importctl, machines={}, images={})
        gather = params["gather"]
        rows = mc.list_machines() if gather else []
        if "machines" in gather:
            self.result["machines"] = self._machines(mc, rows, names)
        if "images" in gather:
            self.result["images"] = self._images(mc, names, set(row["name"] for row in rows))

    def _wanted(self, name, names):
        if not name:
            return False
        if names:
            return name in names
        return not name.startswith(".")  # .host and hidden images only when asked for by name

    def _is_enabled(self, mc, name):
        if name not in self._enabled:
            self._enabled[name] = mc.is_enabled(name)
        return self._enabled[name]

    def _shown(self, rows, names, show):
        """(row, name, properties) of the listed rows that are wanted and still there when shown."""
        for row in rows:
            name = row["name"]
            if self._wanted(name, names):
                props = show(name)
                if props is not None:
                    yield row, name, props

    def _machines(self, mc, rows, names):
        machines = {}
        for row, name, props in self._shown(rows, names, mc.show):  # a machine stopped between list and show is left out
            root = props.get("RootDirectory") or None
            machines[name] = {
                "name": name,
                "state": props.get("State"),
                "leader": int_or_none(props.get("Leader")),
                "class": props.get("Class") or row.get("class"),
                "service": props.get("Service") or row.get("service"),
                "unit": props.get("Unit"),
                "root_directory": root,
                "os": row.get("os"),
                "version": row.get("version"),
                "addresses": row.get("addresses"),
                "os_release": read_os_release(root) if root else {},
                "enabled": self._is_enabled(mc, name),
                "properties": props,
            }
        return machines

    def _images(self, mc, names, running):
        images = {}
        for row, name, props in self._shown(mc.list_images(), names, mc.show_image):  # or removed between list and show
            path = props.get("Path") or None
            settings = settings_path(name)
            image_type = props.get("Type") or row.get("type")
            images[name] = dict(
                row,
                type=image_type,
                path=path,
                read_only=props.get("ReadOnly", "yes" if row.get("read_only") else "no") == "yes",
                running=name in running,
                enabled=self._is_enabled(mc, name),
                os_release=read_os_release(path) if path and image_type in TREE_TYPES else {},
                nixos=nixos_state(path, name) if path and image_type in TREE_TYPES else None,
                origin=read_origin(name),
                settings_file=settings if os.path.isfile(settings) else None,
                properties=props,
            )
        return images
