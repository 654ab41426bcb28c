# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""argv-list command runner on AnsibleModule.run_command.

Commands never go through a shell; their output is parsed in the C locale;
every failure carries msg, cmd, rc, stdout and stderr. Private module.
"""

from __future__ import annotations

from ansible_collections.nspawn.nixos.plugins.module_utils._validate import redact_url

# The C locale keeps the output of systemd tools parseable; no colours, no pager.
COMMAND_ENV = {
    "LANG": "C",
    "LC_ALL": "C",
    "LANGUAGE": "C",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_PAGER": "cat",
}


class ModuleFailure(Exception):
    """A failure the module reports with fail_json: a message plus details (returned keys)."""

    def __init__(self, msg, **details):
        super(ModuleFailure, self).__init__(msg)
        self.msg = msg
        self.details = details

    def result(self):
        result = dict(self.details)
        result["msg"] = self.msg
        return result


class CommandError(ModuleFailure):
    """A command that failed: result() holds msg, cmd, rc, stdout and stderr."""

    def __init__(self, msg, cmd=None, rc=None, stdout="", stderr=""):
        super(CommandError, self).__init__(
            msg, cmd=[redact_url(arg) for arg in (cmd or [])], rc=rc, stdout=stdout or "", stderr=stderr or "")

    @property
    def cmd(self):
        return self.details["cmd"]

    @property
    def rc(self):
        return self.details["rc"]


class Interrupted(BaseException):
    """A signal (SIGINT, SIGTERM, SIGHUP) arrived while the module changed something.

    A BaseException, like KeyboardInterrupt: AnsibleModule.run_command turns every Exception
    raised while it waits for a command into fail_json, which would skip the clean-up."""

    def __init__(self, signum):
        super(Interrupted, self).__init__(signum)
        self.signum = signum


class Runner(object):
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

    def run(self, argv, check=True, msg=None):
        """Run argv; with check, a non-zero exit raises CommandError. Returns (rc, out, err)."""
        argv = [str(arg) for arg in argv]
        self.history.append(argv)
        rc, out, err = self.module.run_command(argv, check_rc=False, environ_update=dict(COMMAND_ENV),
                                               before_communicate_callback=self._started)
        self.child = None
        if check and rc != 0:
            raise CommandError(
                "%s (rc=%s): %s" % (msg or "Command failed", rc, (err or out or "").strip()[-2000:]),
                argv, rc, out, err,
            )
        return rc, out, err

    def fail(self, error, **extra):
        """fail_json with the failure's msg (and cmd, rc, stdout, stderr for a command) plus extra keys."""
        result = error.result()
        result.update(extra)
        self.module.fail_json(**result)
