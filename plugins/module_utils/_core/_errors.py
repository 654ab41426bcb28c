# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The errors of the collection's modules, and what each module reports for them.

Private module: not a public API.
"""

from __future__ import annotations

from ansible_collections.nspawn.nixos.plugins.module_utils._core._redact import redact_url


class ValidationError(ValueError):
    """Bad module input; the message names the option and the rule."""


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
