# Copyright: contributors to the nspawn.nixos collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Callback plugin of the tests and the benchmarks: every task result, and how long it took, as JSON in a file."""

from __future__ import annotations

DOCUMENTATION = """
name: lab_json
type: aggregate
short_description: write every task result of a run, with its duration, to a JSON file (tests, benchmarks)
description:
  - Used by tests/lab/ansible_runner.py (integration, reliability) and benchmarks/; the normal stdout
    callback keeps printing.
  - Writes the file named by the environment variable E(NSPAWN_LAB_ANSIBLE_JSON) when the
    play recap is reached (ad-hoc commands send it too); does nothing when it is not set.
  - A task's C(seconds) on a host run from the moment its worker starts (runner start) to its
    result, so they include the SSH round trip, the module run and, for async tasks, the polls.
options: {}
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Collects {play, task, action, host, status, ignored, changed, seconds, result} per task and host, and the stats."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "lab_json"
    # Loaded from ANSIBLE_CALLBACK_PLUGINS without being listed in callbacks_enabled.
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = os.environ.get("NSPAWN_LAB_ANSIBLE_JSON")
        self.play = None
        self.tasks = []
        self.started = {}
        self.task_started = time.monotonic()

    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.task_started = time.monotonic()

    def v2_playbook_on_handler_task_start(self, task):
        self.task_started = time.monotonic()

    def v2_runner_on_start(self, host, task):
        self.started[(host.get_name(), task._uuid)] = time.monotonic()

    def _record(self, result, status):
        data = dict(result._result)
        host = result._host.get_name()
        started = self.started.pop((host, result._task._uuid), self.task_started)
        if status == "ok" and data.get("changed"):
            status = "changed"
        self.tasks.append({
            "play": self.play,
            "task": result._task.get_name(),
            "action": result._task.action,
            "host": host,
            "status": status,
            "ignored": False,
            "changed": bool(data.get("changed")),
            "seconds": round(time.monotonic() - started, 4),
            "result": data,
        })

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")
        if ignore_errors:
            self.tasks[-1]["ignored"] = True

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        if not self.path:
            return
        hosts = sorted(stats.processed.keys())
        summary = {host: stats.summarize(host) for host in hosts}
        with open(self.path, "w", encoding="utf-8") as output:
            json.dump({"tasks": self.tasks, "stats": summary}, output, indent=1, default=str)
