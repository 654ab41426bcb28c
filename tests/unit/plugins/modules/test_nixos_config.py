# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from ansible_collections.nspawn.nixos.plugins.modules import nixos_config

from module_harness import (
    check_expectations, check_files, check_mode_commands, load_cases, materialize, refused_by_core, run_module,
    tree_snapshot,
)

CASES = load_cases("test_nixos_config.yaml")
SUCCESS = [case for case in CASES if not case.get("failed")]
NIX = shutil.which("nix-instantiate")


def _ids(cases):
    return [case["id"] for case in cases]


def _prepare(case, tmp_path):
    if case.get("needs_nix") and NIX is None:
        pytest.skip("nix-instantiate is not installed (Debian/Ubuntu package nix-bin)")
    case = materialize(case, tmp_path)
    for path in case.get("fifos") or []:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkfifo(path)
    return case


def _snapshot(tmp_path):
    return tree_snapshot(tmp_path)


def _etc_nixos(tmp_path):
    return tmp_path / "machines" / "nixos" / "etc" / "nixos"


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_case(case, tmp_path):
    case = _prepare(case, tmp_path)
    before = _snapshot(tmp_path)
    outcome = run_module(nixos_config.main, case, tmp_path)
    check_expectations(case, outcome)
    check_files(case, tmp_path)
    result = outcome.result
    for path, target in (case.get("expect_links") or {}).items():
        assert os.readlink(path) == target
    for key, value in (case.get("rebuild") or {}).items():
        assert result["rebuild"][key] == value, "rebuild.%s: %r != %r" % (key, result["rebuild"][key], value)
    if case.get("secret"):
        everything = json.dumps(result) + json.dumps(outcome.warnings)
        assert case["secret"] not in everything, "the password hash leaked into the result"
    if outcome.failed:
        assert "actions" in result or case.get("argument_spec_error") or refused_by_core(case)
        if not {"restore", "set_root_password"} & set(result.get("actions", [])):
            assert _snapshot(tmp_path) == before, "a failed run changed files"
        return
    if not result["changed"]:
        assert outcome.mutating_calls == []
        assert _snapshot(tmp_path) == before, "a run without changes touched files"
    for key in ("root", "files", "backup_files", "rebuild", "validation", "generation", "actions"):
        assert key in result, key
    listing = os.listdir(str(_etc_nixos(tmp_path))) if _etc_nixos(tmp_path).is_dir() else []
    backups = sorted(name for name in listing if name.endswith("~"))
    expected = case.get("backups") or {}
    assert [name.split(".%d." % os.getpid())[0] for name in backups] == sorted(expected)
    assert sorted(result["backup_files"]) == ["/etc/nixos/" + name for name in backups]
    for name in backups:
        assert (_etc_nixos(tmp_path) / name).read_text() == expected[name.split(".%d." % os.getpid())[0]]
    assert [name for name in listing if name.endswith(".tmp")] == []


@pytest.mark.parametrize("case", SUCCESS, ids=_ids(SUCCESS))
def test_check_mode_predicts_and_writes_nothing(case, tmp_path):
    case = _prepare(case, tmp_path)
    before = _snapshot(tmp_path)
    check = run_module(nixos_config.main, case, tmp_path, check_mode=True, commands=check_mode_commands(case))
    assert not check.failed, check.result.get("msg")
    assert check.mutating_calls == []
    assert _snapshot(tmp_path) == before, "check mode changed files"
    real = run_module(nixos_config.main, case, tmp_path)
    assert not real.failed, real.result.get("msg")
    for key in ("changed", "actions", "diff", "files", "validation", "root"):
        assert check.result.get(key) == real.result.get(key), key
    assert len(check.result["backup_files"]) == len(real.result["backup_files"])
    assert check.warnings == [w for w in real.warnings if "activation snippet specialfs" not in w]


@pytest.mark.parametrize("case", SUCCESS, ids=_ids(SUCCESS))
def test_second_run_changes_nothing(case, tmp_path):
    case = _prepare(case, tmp_path)
    first = run_module(nixos_config.main, case, tmp_path)
    assert not first.failed, first.result.get("msg")
    snapshot = _snapshot(tmp_path)
    # Only the machinectl queries, unless the case says otherwise (nixpkgs_update computes the lock on every run).
    queries = case.get("second_run_commands",
                       [entry for entry in case["run_command"] if entry["command"][0] == "machinectl"])
    second = run_module(nixos_config.main, case, tmp_path, commands=queries)
    assert not second.failed, second.result.get("msg")
    assert second.result["changed"] is False
    assert second.result["actions"] == []
    assert second.result["rebuild"] is None
    assert _snapshot(tmp_path) == snapshot, "the second run touched files"


def _plain_case(**input_):
    return dict(
        id="plain", input=dict(dict(name="nixos", rebuild="none"), **input_),
        run_command=[
            dict(command=["machinectl", "show-image", "nixos"], out="Name=nixos\nPath={root}\nType=directory\n"),
            dict(command=["machinectl", "show", "nixos"], rc=1, err="No machine 'nixos' known\n"),
        ])


def test_new_file_gets_the_owner_of_etc_nixos_and_changed_files_keep_theirs(tmp_path):
    nixos_dir = _etc_nixos(tmp_path)
    nixos_dir.mkdir(parents=True)
    (nixos_dir / "configuration.nix").write_text("{ ... }:\n{\n  imports = [ ];\n}\n")
    os.chown(str(nixos_dir), 100000, 100000)  # a container with private users (-U)
    os.chown(str(nixos_dir / "configuration.nix"), 100000, 100001)
    os.chmod(str(nixos_dir / "configuration.nix"), 0o640)
    outcome = run_module(nixos_config.main, materialize(_plain_case(settings={}), tmp_path), tmp_path)
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["actions"] == ["write", "add_import"]
    new = os.stat(str(nixos_dir / "ansible.nix"))
    assert (new.st_uid, new.st_gid, stat.S_IMODE(new.st_mode)) == (100000, 100000, 0o644)
    edited = os.stat(str(nixos_dir / "configuration.nix"))
    assert (edited.st_uid, edited.st_gid, stat.S_IMODE(edited.st_mode)) == (100000, 100001, 0o640)
    assert (nixos_dir / "configuration.nix").read_text() == "{ ... }:\n{\n  imports = [ ./ansible.nix ];\n}\n"


def test_without_diff_mode_there_is_no_diff(tmp_path):
    nixos_dir = _etc_nixos(tmp_path)
    nixos_dir.mkdir(parents=True)
    (nixos_dir / "configuration.nix").write_text("{ imports = [ ]; }\n")
    case = dict(_plain_case(settings={}), diff=False)
    outcome = run_module(nixos_config.main, materialize(case, tmp_path), tmp_path)
    assert not outcome.failed
    assert "diff" not in outcome.result


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    nixos_dir = _etc_nixos(tmp_path)
    nixos_dir.mkdir(parents=True)
    (nixos_dir / "configuration.nix").write_text("{ imports = [ ]; }\n")
    (nixos_dir / "ansible.nix").write_text("{ old = true; }\n")
    real_fsync = os.fsync

    def failing_fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    outcome = run_module(nixos_config.main, materialize(_plain_case(content="{ new = true; }\n"), tmp_path), tmp_path)
    assert outcome.failed
    assert outcome.result["msg"] == "OSError: [Errno 28] No space left on device"
    assert outcome.result["actions"] == ["write"]
    assert (nixos_dir / "ansible.nix").read_text() == "{ old = true; }\n"
    assert sorted(os.listdir(str(nixos_dir))) == ["ansible.nix", "configuration.nix"]


def _lock_case(tmp_path):
    cases = {case["id"]: case for case in CASES}
    return materialize(cases["lock_image_computed_written_and_rebuilt"], tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_new_flake_lock_gets_the_owner_of_etc_nixos(tmp_path):
    case = _lock_case(tmp_path)
    nixos_dir = _etc_nixos(tmp_path)
    os.chown(str(nixos_dir), 100000, 100000)  # a container with private users (-U)
    outcome = run_module(nixos_config.main, case, tmp_path)
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["actions"] == ["lock", "rebuild"]
    lock = os.stat(str(nixos_dir / "flake.lock"))
    assert (lock.st_uid, lock.st_gid, stat.S_IMODE(lock.st_mode)) == (100000, 100000, 0o644)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_replaced_flake_lock_keeps_its_owner_and_mode(tmp_path):
    case = _lock_case(tmp_path)
    nixos_dir = _etc_nixos(tmp_path)
    (nixos_dir / "flake.lock").write_text('{"nodes": {"root": {}}, "root": "root", "version": 7}\n')
    os.chown(str(nixos_dir / "flake.lock"), 100000, 100001)
    os.chmod(str(nixos_dir / "flake.lock"), 0o664)
    outcome = run_module(nixos_config.main, case, tmp_path)
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["files"] == ["/etc/nixos/flake.lock"]
    lock = os.stat(str(nixos_dir / "flake.lock"))
    assert (lock.st_uid, lock.st_gid, stat.S_IMODE(lock.st_mode)) == (100000, 100001, 0o664)
    assert json.loads((nixos_dir / "flake.lock").read_text())["nodes"]["nixpkgs"]["locked"]["path"] == "/nix/store/aaa-source"


def test_the_registry_is_read_through_its_links_inside_the_tree_only(tmp_path):
    """A registry.json link that points outside the tree resolves inside it: the host's file is never read."""
    case = _lock_case(tmp_path)
    root = tmp_path / "machines" / "nixos"
    os.unlink(str(root / "etc" / "nix" / "registry.json"))
    host_registry = tmp_path / "host-registry.json"
    host_registry.write_text((root / "nix" / "store" / "eee-etc" / "etc" / "nix" / "registry.json").read_text())
    os.symlink("../../../../host-registry.json", str(root / "etc" / "nix" / "registry.json"))
    (root / "etc" / "nixos" / "flake.lock").write_text(case["run_command"][2]["out"])  # would satisfy the host's pin
    # Without a pin the lock does not match: the module computes it again (and it comes out the same).
    outcome = run_module(nixos_config.main, case, tmp_path, commands=case["run_command"][:3])
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["changed"] is False
    assert outcome.calls[2][-4:] == ["--offline", "--override-input", "nixpkgs", "flake:nixpkgs"]


class _Killed(BaseException):
    """The module's process dies while nixos-rebuild runs (SIGKILL, OOM kill, power loss): nothing after it runs."""


def _killing_effect(apply_effect):
    def effect(what, args):
        if what == "kill":
            raise _Killed()
        apply_effect(what, args)
    return effect


def test_rebuild_cut_off_is_finished_by_the_next_run(tmp_path, monkeypatch):
    """The pending record is written before the first file; a rebuild cut off leaves it, and the next run, which finds
    the files as wanted, rebuilds (resumed) instead of reporting nothing to do; the run after that has nothing to do."""
    import module_harness

    monkeypatch.setattr(module_harness, "apply_effect", _killing_effect(module_harness.apply_effect))
    [case] = [case for case in CASES if case["id"] == "switch_exit_0"]
    case = materialize(case, tmp_path)
    pending = tmp_path / "nixos-pending" / "nixos.json"
    image, running, parse, switch = case["run_command"]
    with pytest.raises(_Killed):
        run_module(nixos_config.main, dict(case, run_command=[image, running, parse, dict(switch, effect="kill")]), tmp_path)
    record = json.loads(pending.read_text())
    assert record["files"] == ["/etc/nixos/ansible.nix"] and record["rebuild"] == "switch", record
    assert (_etc_nixos(tmp_path) / "ansible.nix").read_text() == case["input"]["content"]

    check = run_module(nixos_config.main, dict(case, run_command=[image, running]), tmp_path, check_mode=True)
    assert (check.result["changed"], check.result["actions"], check.result["resumed"]) == (True, ["rebuild"], True), check.result
    assert pending.exists()

    resumed = run_module(nixos_config.main, dict(case, run_command=[image, running, switch]), tmp_path)
    assert not resumed.failed, resumed.result.get("msg")
    assert (resumed.result["changed"], resumed.result["actions"], resumed.result["resumed"]) == (True, ["rebuild"], True)
    assert resumed.result["files"] == [] and resumed.result["rebuild"]["rc"] == 0
    assert not pending.exists()

    again = run_module(nixos_config.main, dict(case, run_command=[image, running]), tmp_path)
    assert (again.result["changed"], again.result["actions"], again.result["resumed"]) == (False, [], False)


def _systems_same():
    """The YAML's *systems_same: the module reads the active and the profile's system after a failed rebuild."""
    import yaml

    with open(os.path.join(os.path.dirname(__file__), "test_nixos_config.yaml")) as handle:
        return yaml.safe_load(handle)[0]["_outputs"]["systems_same"]


def test_resumed_rebuild_needs_a_running_machine_and_keeps_its_record_when_it_fails(tmp_path):
    [case] = [case for case in CASES if case["id"] == "switch_exit_0"]
    case = materialize(case, tmp_path)
    image, running, parse, switch = case["run_command"]
    first = run_module(nixos_config.main, case, tmp_path)
    assert not first.failed, first.result.get("msg")
    pending = tmp_path / "nixos-pending" / "nixos.json"
    assert not pending.exists(), "a rebuild that succeeded left its pending record"
    pending.parent.mkdir(exist_ok=True)
    pending.write_text(json.dumps(dict(name="nixos", files=["/etc/nixos/ansible.nix"], rebuild="switch")))
    stopped = dict(command=["machinectl", "show", "nixos"], rc=1, err="Could not get path to machine: No machine 'nixos' known\n")
    refused = run_module(nixos_config.main, dict(case, run_command=[image, stopped]), tmp_path)
    assert refused.failed and "(an earlier rebuild of the same files was cut off)" in refused.result["msg"], refused.result
    # A resumed rebuild that fails has no files of its own to put back: the record stays for the run after it.
    failing = dict(switch, rc=1, out="", err="error: builder for '/nix/store/x.drv' failed\n")
    script = [image, running, failing, _systems_same()]
    failed = run_module(nixos_config.main, dict(case, input=dict(case["input"], rollback=False), run_command=script), tmp_path)
    assert failed.failed and failed.result["actions"] == ["rebuild"], failed.result
    assert "the change stays pending" in failed.result["msg"], failed.result["msg"]
    assert pending.exists()
    assert (_etc_nixos(tmp_path) / "ansible.nix").read_text() == case["input"]["content"]
