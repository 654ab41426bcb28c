# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

import pytest

from ansible_collections.nspawn.nixos.plugins.modules import nspawn_machine

from module_harness import check_expectations, check_mode_commands, load_cases, run_module

CASES = load_cases("test_nspawn_machine.yaml")
SUCCESS = [case for case in CASES if not case.get("failed")]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case(case, tmp_path):
    outcome = run_module(nspawn_machine.main, case, tmp_path)
    check_expectations(case, outcome)
    if not outcome.failed and not outcome.result["changed"]:
        assert outcome.mutating_calls == [], "a no-op ran commands that change the host"
    if case.get("origin_removed"):
        assert not os.path.exists(tmp_path / "origin" / ("%s.json" % case["origin_removed"]))


@pytest.mark.parametrize("case", SUCCESS, ids=[case["id"] for case in SUCCESS])
def test_check_mode_predicts_changed(case, tmp_path):
    real = run_module(nspawn_machine.main, case, _fresh(tmp_path / "real"))
    check = run_module(nspawn_machine.main, case, _fresh(tmp_path / "check"), check_mode=True, commands=check_mode_commands(case))
    assert not check.failed, check.result.get("msg")
    assert check.mutating_calls == []
    assert check.result["changed"] == real.result["changed"]
    assert check.result["actions"] == case.get("check_actions", [a for a in real.result["actions"] if a != "terminate"])
    assert check.result.get("diff") == real.result.get("diff")


def _fresh(path):
    os.makedirs(path)
    return path
