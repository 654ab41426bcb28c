# Copyright: contributors to the nspawn.nixos collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Callback plugin of the benchmarks: how long every task took on every host, as JSON in a file."""

from __future__ import annotations

DOCUMENTATION = """
name: bench_timing
type: aggregate
short_description: write every task's duration per host to a JSON file (benchmarks)
description:
  - Used by benchmarks/ (module_noop.py, run.py); the normal stdout callback keeps printing.
  - Writes the file named by the environment variable E(NSPAWN_BENCH_TIMING) when the play
    recap is reached (ad-hoc commands send it too); does nothing when it is not set.
  - A task's time on a host runs from the moment its worker starts (runner start) to its
    result, so it includes the SSH round trip, the module run and, for async tasks, the polls.
options: {}
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Collects {task, action, host, status, changed, seconds, msg} per task result."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    # Loaded from ANSIBLE_CALLBACK_PLUGINS without being listed in callbacks_enabled.
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = os.environ.get("NSPAWN_BENCH_TIMING")
        self.started = {}
        self.task_started = time.monotonic()
        self.records = []

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.task_started = time.monotonic()

    def v2_playbook_on_handler_task_start(self, task):
        self.task_started = time.monotonic()

    def v2_runner_on_start(self, host, task):
        self.started[(host.get_name(), task._uuid)] = time.monotonic()

    def _record(self, result, status):
        host = result._host.get_name()
        started = self.started.pop((host, result._task._uuid), self.task_started)
        self.records.append({
            "task": result._task.get_name(),
            "action": result._task.action,
            "host": host,
            "status": status,
            "changed": bool(result._result.get("changed")),
            "seconds": round(time.monotonic() - started, 4),
            "msg": str(result._result.get("msg", ""))[:2000],
        })

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        if not self.path:
            return
        with open(self.path, "w", encoding="utf-8") as output:
            json.dump({"tasks": self.records}, output, indent=1)
