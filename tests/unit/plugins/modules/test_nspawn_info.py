# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.nspawn.nixos.plugins.modules import nspawn_info

from module_harness import check_expectations, load_cases, materialize, run_module, substitute

CASES = load_cases("test_nspawn_info.yaml")


def _mapping(tmp_path):
    return dict(tmp=str(tmp_path), store=str(tmp_path / "machines"), origin=str(tmp_path / "origin"),
                nspawn=str(tmp_path / "nspawn"))


@pytest.mark.parametrize("check_mode", [False, True], ids=["real", "check_mode"])
@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case(case, check_mode, tmp_path):
    case = materialize(case, tmp_path)
    outcome = run_module(nspawn_info.main, case, tmp_path, check_mode=check_mode)
    check_expectations(substitute(case, _mapping(tmp_path)), outcome)
    assert outcome.mutating_calls == []
    if outcome.failed:
        return
    assert outcome.result["changed"] is False
    assert outcome.result["actions"] == []
    assert "diff" not in outcome.result
    for key, names in (case.get("result_keys") or {}).items():
        assert sorted(outcome.result[key]) == sorted(names)
