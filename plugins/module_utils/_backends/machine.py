# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""nspawn_machine's backend: plan and carry out state running/stopped/restarted/absent
and enabled of one machine, on the commands of _machinectl. Private module.
"""

from __future__ import annotations

import functools

from ansible_collections.nspawn.nixos.plugins.module_utils._core._backend import Backend
from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ModuleFailure, ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._os_release import read_os_release
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import (
    TERMINATE_GRACE, TREE_TYPES, Machinectl, WaitTimeout, int_or_none, unit_name,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._nixpkgs import nixos_state
from ansible_collections.nspawn.nixos.plugins.module_utils._core._plan import Step, apply
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._records import remove_origin
from ansible_collections.nspawn.nixos.plugins.module_utils._core._validate import check_machine_name, check_timeout


class MachineBackend(Backend):
    """nspawn_machine: state running/stopped/restarted/absent and enabled of one machine."""

    def run(self):
        params = self.module.params
        name = check_machine_name(params["name"])
        timeout = check_timeout(params["timeout"])
        state = params["state"]
        if state == "absent" and params["enabled"]:
            raise ValidationError("enabled: cannot be true with state=absent (an absent machine is also disabled)")
        if params["remove_image"] and state != "absent":
            raise ValidationError("remove_image: only applies with state=absent")
        want_enabled = False if state == "absent" else params["enabled"]
        self.lock(name)

        mc = Machinectl(self.runner)
        mc.require_tools()
        info = mc.show(name)
        if info and info.get("State") == "closing":
            # Already on its way down: a real run lets it finish, check mode treats it as stopped.
            if not self.module.check_mode:
                mc.wait_gone(name, timeout)
            info = None
        enabled = mc.is_enabled(name)
        image = mc.show_image(name)

        plan = self._plan(state, info is not None, want_enabled, enabled, image is not None, params["remove_image"])
        if "start" in plan and image is None:
            raise ModuleFailure(f"machine {name} cannot start: there is no image named {name} (create it with nspawn.nixos.nspawn_image)")

        before = dict(state=_machine_state(info, image), enabled=enabled)
        after_enabled = enabled if want_enabled is None else want_enabled
        if "remove_image" in plan:
            after_state = "absent"
        elif state in ("running", "restarted"):
            after_state = "running"
        else:
            after_state = before["state"] if before["state"] == "absent" else "stopped"
        self.result.update(changed=bool(plan), name=name)
        self.diff.state(before, dict(state=after_state, enabled=after_enabled))

        steps = [Step(step, functools.partial(self._do, mc, step, name, info, timeout)) for step in plan]
        if apply(self, steps):
            info = mc.show(name) if plan else info
            if "remove_image" in plan:
                image = None
        self.result.update(
            state=after_state,
            enabled=after_enabled,
            leader=int_or_none(info.get("Leader")) if info and after_state == "running" else None,
            os_release=read_os_release(image.get("Path")) if image else {},
            # As nspawn_info's images.NAME.nixos: what the role records in sidecar_status without another call.
            nixos=nixos_state(image.get("Path"), name) if image and image.get("Path") and image.get("Type") in TREE_TYPES else None,
        )

    @staticmethod
    def _plan(state, running, want_enabled, enabled, has_image, remove_image):
        plan = []
        if state == "running" and not running:
            plan.append("start")
        elif state == "restarted":
            plan.append("reboot" if running else "start")
        elif state in ("stopped", "absent") and running:
            plan.append("stop")
        if want_enabled is True and not enabled:
            plan.append("enable")
        elif want_enabled is False and enabled:
            plan.append("disable")
        if state == "absent" and remove_image and has_image:
            plan.append("remove_image")
        return plan

    def _do(self, mc, step, name, info, timeout):
        if step == "start":
            try:
                mc.act("start", name)
                self._wait_up(mc, name, timeout)
            except ModuleFailure as exc:
                mc.wait_unit_settled(name)
                exc.msg = f"{exc.msg}\nLast lines of the journal of {unit_name(name)}:\n{mc.journal_tail(name)}"
                raise
        elif step == "reboot":
            mc.act("reboot", name)
            mc.wait_new_leader(name, int_or_none((info or {}).get("Leader")), timeout)
            self._wait_up(mc, name, timeout)
        elif step == "stop":
            mc.act("poweroff", name)
            try:
                mc.wait_gone(name, timeout)
            except WaitTimeout:
                self.module.warn(f"machine {name} did not power off within {timeout} seconds: terminating it")
                self.report("terminate")
                mc.act("terminate", name)
                mc.wait_gone(name, TERMINATE_GRACE)
        elif step == "remove_image":
            mc.remove(name)
            remove_origin(name)
        else:
            mc.act(step, name)

    def _wait_up(self, mc, name, timeout):
        if self.module.params["wait"]:
            self.result["system_state"] = mc.wait_system_running(name, timeout)


def _machine_state(info, image):
    if info:
        return "running"
    return "stopped" if image else "absent"
