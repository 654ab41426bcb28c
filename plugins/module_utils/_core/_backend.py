# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one error boundary of every module (Backend), with the machine lock and diff mode.

Private module: not a public API.
"""

from __future__ import annotations

import traceback

from ansible_collections.nspawn.nixos.plugins.module_utils._core._diff import Diff
from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ModuleFailure, ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._core._lock import MachineLock
from ansible_collections.nspawn.nixos.plugins.module_utils._core._runner import Runner


def machine_argument_spec(**options):
    """The argument spec of a module that changes one machine: name and lock_timeout (the doc fragment
    nspawn.nixos.machine), and the module's own options."""
    spec = dict(name=dict(type="str", required=True), lock_timeout=dict(type="int", default=600))
    spec.update(options)
    return spec


class Backend:
    """The one error boundary of a module: run(), then exit_json or fail_json.

    Subclasses implement run(): they plan Steps and hand them to _plan.apply(), which records
    their actions (``self.actions``, in order), and fill self.result. What only a real run can
    find out (a terminate after a timeout, a transfer to cancel, a rollback, a restore) and the
    stages of a staged step are reported with report(). Failures carry the actions done so far.
    """

    # Whether the result's diff is a list of entries (a change of several files) or the one entry.
    DIFF_LIST = False

    def __init__(self, module):
        self.module = module
        self.runner = Runner(module)
        self.actions: list = []
        self.result = dict(changed=False, actions=self.actions)
        self.diff = Diff(list_form=self.DIFF_LIST)
        self.held_lock = None

    def run(self):
        raise NotImplementedError

    def report(self, action):
        """Record an action that the plan could not predict, or a stage of a staged Step, as it happens."""
        self.actions.append(action)

    def lock(self, name):
        """Hold the lock of machine `name` (see _lock) until the module exits: after the
        input is validated, before the state is read. Exclusive for a real run, shared in
        check mode. A wait of a second or more is reported as a warning."""
        timeout = self.module.params["lock_timeout"]
        if timeout is None or timeout < 0:
            raise ValidationError(f"lock_timeout: must be 0 (do not wait) or a positive number of seconds, got {timeout!r}")
        module_name = getattr(self.module, "_name", None) or "nspawn.nixos"
        self.held_lock = MachineLock(name, module_name.rsplit(".", 1)[-1], exclusive=not self.module.check_mode).acquire(timeout)
        if self.held_lock.waited >= 1:
            self.module.warn(f"Waited {self.held_lock.waited:.0f} s for another task that was changing machine {name} (lock {self.held_lock.path})")
        return self.held_lock

    def execute(self):
        try:
            try:
                self.run()
            except ValidationError as exc:
                self.module.fail_json(msg=str(exc), actions=self.actions)
            except ModuleFailure as exc:
                self.runner.fail(exc, actions=self.actions)
            except (IOError, OSError) as exc:  # a file operation of the module itself
                self.module.fail_json(msg=f"{type(exc).__name__}: {exc}", exception=traceback.format_exc(), actions=self.actions)
            diff = self.diff.render() if self.module._diff else None
            if diff is not None:
                self.result["diff"] = diff
            self.module.exit_json(**self.result)
        finally:
            # The process's exit would drop it too; explicit for callers that do not exit (unit tests).
            if self.held_lock is not None:
                self.held_lock.release()
