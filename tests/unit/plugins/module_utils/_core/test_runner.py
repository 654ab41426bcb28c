# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import CommandError, ModuleFailure
from ansible_collections.nspawn.nixos.plugins.module_utils._core._runner import Runner


class Module(object):
    def __init__(self, rc=0, out="", err=""):
        self.answer = (rc, out, err)
        self.seen = []
        self.failed = None

    def run_command(self, args, check_rc=False, environ_update=None, before_communicate_callback=None):
        self.seen.append((args, check_rc, environ_update))
        return self.answer

    def fail_json(self, **kwargs):
        self.failed = kwargs


def test_run_records_history_and_forces_c_locale():
    module = Module(0, "out\n", "")
    runner = Runner(module)
    assert runner.run(["machinectl", "show", 42]) == (0, "out\n", "")
    assert runner.history == [["machinectl", "show", "42"]]
    args, check_rc, env = module.seen[0]
    assert args == ["machinectl", "show", "42"] and check_rc is False
    assert env["LANG"] == env["LC_ALL"] == env["LANGUAGE"] == "C"


def test_run_failure_carries_command_details_with_secrets_redacted():
    module = Module(1, "partial\n", "boom\n")
    runner = Runner(module)
    with pytest.raises(CommandError) as exc:
        runner.run(["machinectl", "pull-tar", "https://u:tok@x/a.tar", "a"], msg="Pulling failed")
    assert exc.value.result() == dict(msg="Pulling failed (rc=1): boom", cmd=["machinectl", "pull-tar", "https://********@x/a.tar", "a"],
                                      rc=1, stdout="partial\n", stderr="boom\n")
    runner.fail(exc.value, actions=["pull"])
    assert module.failed["actions"] == ["pull"] and module.failed["rc"] == 1 and module.failed["msg"].startswith("Pulling failed")


def test_run_without_check_returns_failures():
    runner = Runner(Module(3, "", "x"))
    assert runner.run(["false"], check=False) == (3, "", "x")


def test_module_failure_result():
    assert ModuleFailure("nope", url="u").result() == {"msg": "nope", "url": "u"}
