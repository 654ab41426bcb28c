# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

import pytest

from ansible_collections.nspawn.nixos.plugins.modules import nspawn_settings

from module_harness import check_expectations, check_files, load_cases, materialize, run_module, tree_snapshot

CASES = load_cases("test_nspawn_settings.yaml")
SUCCESS = [case for case in CASES if not case.get("failed")]
FAILURES = [case for case in CASES if case.get("failed")]


def _prepare(case, tmp_path):
    """Write the case's files now; returns the case without them (so a snapshot can be taken first)."""
    return materialize(case, tmp_path)


def _snapshot(tmp_path):
    directory = tmp_path / "nspawn"
    return tree_snapshot(directory) if directory.exists() else None


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case(case, tmp_path):
    case = _prepare(case, tmp_path)
    before = _snapshot(tmp_path)
    outcome = run_module(nspawn_settings.main, case, tmp_path)
    check_expectations(case, outcome)
    check_files(case, tmp_path)
    assert outcome.mutating_calls == []
    result = outcome.result
    if outcome.failed:
        assert "actions" in result
        assert _snapshot(tmp_path) == before, "a failed run changed files"
        return
    for key in ("path", "settings", "restart_required", "backup_file", "actions", "diff"):
        assert key in result, key
    backups = [name for name in os.listdir(tmp_path / "nspawn") if name.endswith("~")] if (tmp_path / "nspawn").exists() else []
    if case.get("backup_of") is not None:
        assert result["backup_file"] == str(tmp_path / "nspawn" / backups[0])
        assert backups[0].startswith("nixos.nspawn.%d." % os.getpid())
        with open(result["backup_file"]) as handle:
            assert handle.read() == case["backup_of"]
    else:
        assert backups == []
        assert result["backup_file"] is None


@pytest.mark.parametrize("case", SUCCESS, ids=[case["id"] for case in SUCCESS])
def test_check_mode_predicts_and_changes_nothing(case, tmp_path):
    case = _prepare(case, tmp_path)
    before = _snapshot(tmp_path)
    check = run_module(nspawn_settings.main, case, tmp_path, check_mode=True)
    assert not check.failed, check.result.get("msg")
    assert _snapshot(tmp_path) == before, "check mode changed files"
    real = run_module(nspawn_settings.main, case, tmp_path)
    assert not real.failed, real.result.get("msg")
    for key in ("changed", "actions", "diff", "restart_required", "settings", "path"):
        assert check.result[key] == real.result[key], key
    assert (check.result["backup_file"] is None) == (real.result["backup_file"] is None)


@pytest.mark.parametrize("case", SUCCESS, ids=[case["id"] for case in SUCCESS])
def test_second_run_changes_nothing(case, tmp_path):
    case = _prepare(case, tmp_path)
    first = run_module(nspawn_settings.main, case, tmp_path)
    assert not first.failed
    snapshot = _snapshot(tmp_path)
    second = run_module(nspawn_settings.main, case, tmp_path)
    assert not second.failed
    assert second.result["changed"] is False
    assert second.result["actions"] == []
    assert second.result["restart_required"] is False
    assert second.result["settings"] == first.result["settings"]
    assert _snapshot(tmp_path) == snapshot, "the second run touched files"


def test_a_failed_move_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    from ansible.module_utils import basic

    def failing_move(self, src, dest, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(basic.AnsibleModule, "atomic_move", failing_move)
    case = dict(id="enospc", files={"{nspawn}/nixos.nspawn": "[Exec]\nBoot=yes\n"},
                input=dict(name="nixos", settings=dict(Exec=dict(Boot=False))),
                run_command=[dict(command=["systemctl", "--version"], out="systemd 252 (252.39)\n"),
                             dict(command=["machinectl", "show", "nixos"], rc=1, err="No machine 'nixos' known\n")])
    outcome = run_module(nspawn_settings.main, _prepare(case, tmp_path), tmp_path)
    assert outcome.failed
    assert outcome.result["msg"] == "OSError: [Errno 28] No space left on device"
    assert outcome.result["actions"] == ["write"]
    assert os.listdir(str(tmp_path / "nspawn")) == ["nixos.nspawn"]
    assert (tmp_path / "nspawn" / "nixos.nspawn").read_text() == "[Exec]\nBoot=yes\n"


def test_desired_values_needs_a_dict():
    from ansible_collections.nspawn.nixos.plugins.module_utils._backends.settings import desired_values
    from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ValidationError

    with pytest.raises(ValidationError, match="settings: must be a dict of sections"):
        desired_values(["Exec"], 252)
    assert desired_values({"Network": {"Port": [80, "tcp:443:443"]}}, 257) == {"Network": {"Port": ["80", "tcp:443:443"]}}
