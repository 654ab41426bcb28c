# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""argv-list command runner on AnsibleModule.run_command.

Commands never go through a shell; their output is parsed in the C locale;
every failure carries msg, cmd, rc, stdout and stderr. Private module.
"""

from __future__ import annotations

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import CommandError

# The C locale keeps the output of systemd tools parseable; no colours, no pager.
COMMAND_ENV = {
    "LANG": "C",
    "LC_ALL": "C",
    "LANGUAGE": "C",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_PAGER": "cat",
}


def output_tail(out, err, limit=2000):
    """The end of what a failed command said (its stderr, else its stdout), for a message."""
    return (err or out or "").strip()[-limit:]


class Runner:
    """Runs argv lists; history holds every argv in order (tests assert on it)."""

    def __init__(self, module):
        self.module = module
        self.history = []
        self.child = None  # the command running now (subprocess.Popen), for stop_child()

    def _started(self, process):
        self.child = process

    def stop_child(self, grace=5):
        """End the command that was running when a signal interrupted run(): SIGTERM, then SIGKILL."""
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(grace)
        except Exception:  # subprocess.TimeoutExpired
            child.kill()
            child.wait()

    def run(self, argv, check=True, msg=None, data=None):
        """Run argv (with data, a str sent as it is, on its stdin); with check, a non-zero exit raises
        CommandError. Returns (rc, out, err)."""
        argv = [str(arg) for arg in argv]
        self.history.append(argv)
        extra = dict(data=data, binary_data=True) if data is not None else {}
        rc, out, err = self.module.run_command(argv, check_rc=False, environ_update=dict(COMMAND_ENV),
                                               before_communicate_callback=self._started, **extra)
        self.child = None
        if check and rc != 0:
            raise CommandError(f"{msg or 'Command failed'} (rc={rc}): {output_tail(out, err)}", argv, rc, out, err)
        return rc, out, err

    def fail(self, error, **extra):
        """fail_json with the failure's msg (and cmd, rc, stdout, stderr for a command) plus extra keys."""
        result = error.result()
        result.update(extra)
        self.module.fail_json(**result)
