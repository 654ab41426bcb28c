# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""nixos-rebuild and garbage collection in a machine: command lines, verdicts, reports (_nixos_system)."""

from __future__ import annotations

import pytest

from ansible_collections.nspawn.nixos.plugins.module_utils._nix._system import (
    GC_SCRIPT, SYSTEMS_SCRIPT, deletable_generations, deleted_generations, failed_snippets, failed_units, failure_reasons,
    judge_rebuild, parse_gc, parse_systems, rebuild_command, switch_status,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._nixpkgs import LOCK_SCRIPT

# What NixOS prints inside nspawn for an image built with boot.isContainer (stdout and stderr of nixos-rebuild switch).
SPECIALFS_OUT = "Activation script snippet 'specialfs' failed (32)\nsetting up /etc...\n"
SPECIALFS_ERR = ("activating the configuration...\nmount: /dev: permission denied.\n"
                 "warning: error(s) occurred while switching to the new configuration\n")


def test_failed_snippets():
    assert failed_snippets(SPECIALFS_OUT, SPECIALFS_ERR) == ["specialfs"]
    assert failed_snippets("Activation script snippet 'users' failed (1)\n", SPECIALFS_OUT) == ["users", "specialfs"]
    assert failed_snippets("", None) == []


@pytest.mark.parametrize("kwargs, script", [
    (dict(action="switch"), "exec /run/current-system/sw/bin/nixos-rebuild switch"),
    (dict(action="boot", flake=True), "exec /run/current-system/sw/bin/nixos-rebuild boot --flake /etc/nixos#nixos"),
    (dict(action="switch", rollback=True), "exec /run/current-system/sw/bin/nixos-rebuild switch --rollback"),
    (dict(action="switch", flake=True, rollback=True),
     "exec /run/current-system/sw/bin/nixos-rebuild switch --flake /etc/nixos#nixos --rollback"),
    (dict(action="boot", flake=True, rollback=True),
     "exec /run/current-system/sw/bin/nixos-rebuild boot --flake /etc/nixos#nixos --rollback"),
])
def test_rebuild_command(kwargs, script):
    command = rebuild_command(**kwargs)
    assert command == ["/bin/sh", "-lc", script]
    assert "$" not in script  # the service manager would expand it in ExecStart=


# -- judging a rebuild -------------------------------------------------------------------------------------------

UNITS_ERR = ("activating the configuration...\nwarning: the following units failed: a.service, b.service\n"
             "warning: error(s) occurred while switching to the new configuration\n")
BUILD_ERR = "building the system configuration...\nerror: The option `x' does not exist.\n"
NG_EARLY = ("Command '['systemd-run', '-E', 'LOCALE_ARCHIVE', '--collect', '--no-ask-password', '--pipe', '--quiet', "
            "'--service-type=exec', '--unit=nixos-rebuild-switch-to-configuration', '--wait', "
            "'/nix/store/bbb-nixos-system-nixos-25.11/bin/switch-to-configuration', 'switch']' "
            "returned non-zero exit status %d.\n")
NG_BUILD = ("Command '['nix', '--extra-experimental-features', 'nix-command flakes', 'build', '--print-out-paths', "
            "'/etc/nixos#nixosConfigurations.\"nixos\".config.system.build.toplevel', '--no-link']' "
            "returned non-zero exit status 1.\n")
SAME = {"current": "/nix/store/bbb-nixos-system", "profile": "/nix/store/bbb-nixos-system"}
OLD_ACTIVE = {"current": "/nix/store/aaa-nixos-system", "profile": "/nix/store/bbb-nixos-system"}

# (flavour, rc, stderr) of a run whose only failed snippet is specialfs, and of one where units failed too.
SPECIALFS_RUNS = [("bash", 1, SPECIALFS_ERR, None), ("ng-early", 1, SPECIALFS_ERR + NG_EARLY % 2, 2),
                  ("ng-later", 2, SPECIALFS_ERR, 2)]
UNITS_RUNS = [("bash", 1, UNITS_ERR, None), ("ng-early", 1, UNITS_ERR + NG_EARLY % 4, 4), ("ng-later", 4, UNITS_ERR, 4)]
BUILD_RUNS = [("bash", 1, BUILD_ERR), ("ng-early", 1, BUILD_ERR + NG_BUILD), ("ng-later", 1, BUILD_ERR + "error: " + NG_BUILD)]


@pytest.mark.parametrize("flavour, rc, err, status", SPECIALFS_RUNS, ids=[run[0] for run in SPECIALFS_RUNS])
def test_judge_specialfs_only_is_ok(flavour, rc, err, status):
    for action in ("switch", "test"):
        ok, evidence = judge_rebuild(action, rc, SPECIALFS_OUT, err, SAME)
        assert ok is True
        assert evidence == dict(failed_snippets=["specialfs"], failed_units=[], switch_status=status, activated=True,
                                current_system=SAME["current"], profile_system=SAME["profile"])


@pytest.mark.parametrize("flavour, rc, err, status", SPECIALFS_RUNS, ids=[run[0] for run in SPECIALFS_RUNS])
def test_judge_switch_needs_the_profile_system_active(flavour, rc, err, status):
    assert judge_rebuild("switch", rc, SPECIALFS_OUT, err, OLD_ACTIVE)[0] is False
    assert judge_rebuild("switch", rc, SPECIALFS_OUT, err, None)[0] is False  # could not be read
    assert judge_rebuild("switch", rc, SPECIALFS_OUT, err, {"current": "", "profile": ""})[0] is False
    # test keeps the boot default: the profile is not compared
    assert judge_rebuild("test", rc, SPECIALFS_OUT, err, OLD_ACTIVE)[0] is True
    assert judge_rebuild("test", rc, SPECIALFS_OUT, err, None)[0] is True


@pytest.mark.parametrize("flavour, rc, err, status", UNITS_RUNS, ids=[run[0] for run in UNITS_RUNS])
def test_judge_failed_units_fail(flavour, rc, err, status):
    for action in ("switch", "test"):
        ok, evidence = judge_rebuild(action, rc, SPECIALFS_OUT, err, SAME)
        assert ok is False
        assert evidence["failed_units"] == ["a.service", "b.service"]
        assert evidence["switch_status"] == status and evidence["activated"] is True


@pytest.mark.parametrize("flavour, rc, err", BUILD_RUNS, ids=[run[0] for run in BUILD_RUNS])
def test_judge_build_error_fails(flavour, rc, err):
    for action in ("switch", "boot", "test"):
        ok, evidence = judge_rebuild(action, rc, "", err, SAME)
        assert ok is False
        assert evidence["activated"] is False and evidence["switch_status"] is None and evidence["failed_snippets"] == []


def test_judge_other_failures():
    # another snippet, besides specialfs
    assert judge_rebuild("switch", 2, SPECIALFS_OUT + "Activation script snippet 'users' failed (1)\n", SPECIALFS_ERR, SAME)[0] is False
    # an activation without a failed snippet, and status 3 (reloading systemd failed)
    assert judge_rebuild("switch", 3, "", "activating the configuration...\n", SAME)[0] is False
    assert judge_rebuild("switch", 1, SPECIALFS_OUT, SPECIALFS_ERR + NG_EARLY % 3, SAME)[0] is False
    # boot does not activate: a non-zero exit is a failure whatever it printed
    ok, evidence = judge_rebuild("boot", 2, SPECIALFS_OUT, SPECIALFS_ERR, SAME)
    assert ok is False and evidence["activated"] is False
    # rc 2 without any evidence of an activation
    assert judge_rebuild("switch", 2, "", "something else\n", SAME)[0] is False


def test_judge_exit_0_is_ok_without_reading_the_systems():
    ok, evidence = judge_rebuild("boot", 0, "", "building the system configuration...\n")
    assert ok is True and evidence["current_system"] is None and evidence["profile_system"] is None


@pytest.mark.parametrize("rc, texts, status", [
    (1, [SPECIALFS_ERR], None), (2, [SPECIALFS_ERR], 2), (3, [""], 3), (4, [""], 4), (1, ["", NG_EARLY % 4], 4),
    (1, [BUILD_ERR + NG_BUILD], None), (5, [""], None), (0, [""], None), (255, [None], None),
])
def test_switch_status(rc, texts, status):
    assert switch_status(rc, *texts) == status


def test_failed_units():
    assert failed_units("", UNITS_ERR) == ["a.service", "b.service"]
    assert failed_units("warning: the following units failed: a.service\n", UNITS_ERR) == ["a.service", "b.service"]
    assert failed_units(None, "") == []


@pytest.mark.parametrize("text, result", [
    ("3 store paths deleted, 1.23 MiB freed\n", (3, "1.23 MiB")),
    ("finding garbage collector roots...\n0 store paths deleted, 0.00 MiB freed\n", (0, "0.00 MiB")),
    ("1024 store paths deleted, 2.50 GiB freed", (1024, "2.50 GiB")),
    ("removing profile version 1\n", (None, None)), (None, (None, None)),
])
def test_parse_gc(text, result):
    assert parse_gc(text) == result


@pytest.mark.parametrize("script", [LOCK_SCRIPT, GC_SCRIPT, SYSTEMS_SCRIPT], ids=["lock", "gc", "systems"])
def test_scripts_survive_the_service_manager(script):
    """systemd expands ${VAR} anywhere and $VAR as a whole argument in ExecStart=, and turns $$ into $."""
    assert "${" not in script and "$$" not in script and not script.startswith("$")


def test_failure_reasons_name_each_kind_of_failure():
    evidence = dict(switch_status=4, failed_units=["a.service"], failed_snippets=["specialfs", "users"], activated=True,
                    current_system="/nix/store/new", profile_system="/nix/store/old")
    assert failure_reasons("switch", evidence) == [
        "switch-to-configuration status 4: units failed", "failed units: a.service",
        "failed activation snippets: users", "the active system /nix/store/new is not the profile's /nix/store/old"]
    assert failure_reasons("test", dict(evidence, failed_units=[], failed_snippets=[], switch_status=None, activated=False)) == [
        "the new configuration was not activated"]
    assert failure_reasons("switch", dict(evidence, failed_units=[], failed_snippets=[], switch_status=None, current_system=None)) == [
        "the active system could not be read in the machine"]
    assert failure_reasons("boot", dict(evidence, failed_units=[], failed_snippets=[], switch_status=None)) == []


def test_parse_systems():
    systems = {"current": "/nix/store/a-system", "profile": "/nix/store/b-system"}
    assert parse_systems(0, "/nix/store/a-system\n/nix/store/b-system\n") == systems
    assert parse_systems(1, "/nix/store/a\n/nix/store/b\n") == {}
    assert parse_systems(0, "/nix/store/a\n") == {}


@pytest.mark.parametrize("numbers, current, keep, rebuild, deleted", [
    ([1, 2, 3, 4], 4, 2, None, [1, 2]),
    ([1, 2, 3, 4], 4, 2, "switch", [1, 2, 3]),   # the rebuild adds 5 and makes it current
    ([1, 2, 3, 4], 2, 2, None, [1]),             # the current generation is never deleted
    ([1, 2], 2, 3, "boot", []),
    ([], None, 1, "switch", []),
    ([1, 2, 3], 3, 1, "test", [1, 2]),           # test makes no generation
])
def test_deletable_generations(numbers, current, keep, rebuild, deleted):
    assert deletable_generations(numbers, current, keep, rebuild) == deleted


def test_deleted_generations():
    text = "removing profile version 3\nremoving generation 1\nsomething else 7\n"
    assert deleted_generations(text) == [1, 3]
    assert deleted_generations(None) == []
