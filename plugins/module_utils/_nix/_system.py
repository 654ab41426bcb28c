# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The NixOS system inside a machine: nixos-rebuild and garbage collection, run in it from the host.

What the command lines are, and how a run is judged: from what nixos-rebuild printed and the
system it left active, not from its exit status alone (the activation snippet specialfs fails
in every systemd-nspawn container of an image built with boot.isContainer, harmlessly); which
generations keep_generations deletes, and what nix-store --gc reports. Pure functions: the
nixos_config backend runs the commands.

Private module: not a public API.
"""

from __future__ import annotations

import re

from ansible_collections.nspawn.nixos.plugins.module_utils._nix._nixpkgs import TOOL_PATH

# The upstream nspawn-nixos image generates a flake whose nixosConfigurations attribute is `nixos`.
FLAKE_REF = "/etc/nixos#nixos"
# NixOS keeps its tools here; the PATH of a `systemd-run -M` unit may not include it.
SW_BIN = "/run/current-system/sw/bin"
# nixos-rebuild runs further tools (nix, nix-env, systemd-run) and needs NIX_PATH without a flake:
# a login shell sets up the same environment as `machinectl shell` would.
LOGIN_SHELL = ("/bin/sh", "-lc")
# Fails in every nspawn container for images built with boot.isContainer but not
# boot.isNspawnContainer (nixpkgs nixos/modules/tasks/filesystems.nix: /dev, /dev/pts, /dev/shm and
# /run are only left out for isNspawnContainer; mount gets "permission denied" there) and is harmless.
HARMLESS_SNIPPETS = frozenset(("specialfs",))
# switch-to-configuration's exit statuses (switch-to-configuration-ng main.rs; 3 only in the old Perl script).
SWITCH_EXIT_CODES = {
    2: "an activation script snippet failed",
    3: "reloading systemd or creating tmpfiles failed",
    4: "units failed",
}
# Reads, inside the machine, the system that is active and the one the profile points at.
# Scripts run with `sh -c` and NixOS's tool path: not a login shell, whose profile could print to stdout.
SHELL = ("/bin/sh", "-c")
SYSTEMS_SCRIPT = f"{TOOL_PATH}readlink -f /run/current-system; readlink -f /nix/var/nix/profiles/system"
GC_SCRIPT = f"{TOOL_PATH}set -e; nix-env -p /nix/var/nix/profiles/system --delete-generations \"+$1\"; exec nix-store --gc"

_SNIPPET_RE = re.compile(r"Activation script snippet '([^']*)' failed")
_UNITS_RE = re.compile(r"the following units failed: ([^\n]*)")
# nixos-rebuild-ng prints the CalledProcessError of switch-to-configuration (run through systemd-run).
_STATUS_RE = re.compile(r"switch-to-configuration[^\n]*returned non-zero exit status (\d+)")
_ACTIVATING = "activating the configuration"
_FREED_RE = re.compile(r"(\d+) store paths deleted, ([0-9.]+ [KMGT]?i?B) freed")
_DELETED_GEN_RE = re.compile(r"removing (?:profile version|generation) (\d+)")


def failed_snippets(*texts):
    """The activation script snippets that switch-to-configuration reported as failed, in order, once each."""
    found = []
    for text in texts:
        for name in _SNIPPET_RE.findall(text or ""):
            if name not in found:
                found.append(name)
    return found


def failed_units(*texts):
    """The units switch-to-configuration reported as failed ("warning: the following units failed: a, b")."""
    found = []
    for text in texts:
        for line in _UNITS_RE.findall(text or ""):
            for unit in line.split(","):
                unit = unit.strip()
                if unit and unit not in found:
                    found.append(unit)
    return found


def switch_status(rc, *texts):
    """switch-to-configuration's exit status as far as nixos-rebuild lets it show, else None.

    The bash nixos-rebuild (NixOS 25.05 and earlier) exits 1 after "warning: error(s) occurred while switching
    to the new configuration"; early nixos-rebuild-ng exits 1 printing "Command '[... switch-to-configuration',
    'switch']' returned non-zero exit status N."; later nixos-rebuild-ng exits with N itself.
    """
    for text in texts:
        match = _STATUS_RE.search(text or "")
        if match:
            return int(match.group(1))
    return rc if rc in SWITCH_EXIT_CODES else None


def judge_rebuild(action, rc, out, err, systems=None):
    """(ok, evidence) of a nixos-rebuild run, from what it printed and the state it left, not from rc alone.

    Success: rc 0; or an activation that ran (switch, test) whose only failed snippets are harmless in
    nspawn, with no failed unit, no other switch-to-configuration failure, and (switch) the profile's
    system active. systems: {"current": ..., "profile": ...} read in the machine after the run.
    """
    snippets = failed_snippets(out, err)
    units = failed_units(out, err)
    status = switch_status(rc, out, err)
    activated = action in ("switch", "test") and (_ACTIVATING in (out or "") + (err or "") or bool(snippets))
    systems = systems or {}
    evidence = dict(failed_snippets=snippets, failed_units=units, switch_status=status, activated=activated,
                    current_system=systems.get("current"), profile_system=systems.get("profile"))
    if rc == 0:
        return True, evidence
    ok = (activated and bool(snippets) and set(snippets) <= HARMLESS_SNIPPETS and not units and status in (None, 2)
          and (action != "switch" or (bool(systems.get("current")) and systems.get("current") == systems.get("profile"))))
    return ok, evidence


def parse_gc(text):
    """(store paths deleted, size freed as nix prints it) from nix-store --gc's summary line."""
    match = _FREED_RE.search(text or "")
    return (int(match.group(1)), match.group(2)) if match else (None, None)


def rebuild_command(action, flake=False, rollback=False):
    """The argv of nixos-rebuild ACTION in the machine (a login shell: nixos-rebuild needs NIX_PATH without a flake)."""
    words = [f"{SW_BIN}/nixos-rebuild", action]
    if flake:
        words += ["--flake", FLAKE_REF]
    if rollback:
        words.append("--rollback")
    return list(LOGIN_SHELL) + [f"exec {' '.join(words)}"]


def failure_reasons(action, evidence):
    """Why a rebuild judged not ok failed, in words, from judge_rebuild's evidence."""
    status = evidence["switch_status"]
    reasons = []
    if status in SWITCH_EXIT_CODES:
        reasons.append(f"switch-to-configuration status {status}: {SWITCH_EXIT_CODES[status]}")
    if evidence["failed_units"]:
        reasons.append(f"failed units: {', '.join(evidence['failed_units'])}")
    harmful = [snippet for snippet in evidence["failed_snippets"] if snippet not in HARMLESS_SNIPPETS]
    if harmful:
        reasons.append(f"failed activation snippets: {', '.join(harmful)}")
    if not evidence["activated"] and action in ("switch", "test"):
        reasons.append("the new configuration was not activated")
    elif action == "switch" and not evidence["current_system"]:
        reasons.append("the active system could not be read in the machine")
    elif action == "switch" and evidence["current_system"] != evidence["profile_system"]:
        reasons.append(f"the active system {evidence['current_system']} is not the profile's {evidence['profile_system']}")
    return reasons


def parse_systems(rc, out):
    """{"current": active system, "profile": the profile's system} from SYSTEMS_SCRIPT's output; {} when it failed."""
    lines = out.splitlines() if rc == 0 else []
    return {"current": lines[0].strip(), "profile": lines[1].strip()} if len(lines) >= 2 else {}


def deletable_generations(numbers, current, keep, rebuild):
    """The generations `nix-env --delete-generations +keep` would delete after this run's rebuild.

    numbers: the system profile's generations, ascending; current: the current one (or None).
    """
    if rebuild in ("switch", "boot"):  # the rebuild adds one and makes it current
        current = (numbers[-1] if numbers else 0) + 1
        numbers = numbers + [current]
    return [number for number in numbers[:-keep] if number != current] if len(numbers) > keep else []


def deleted_generations(text):
    """The generation numbers nix-env reported deleting, ascending."""
    return sorted(int(number) for number in _DELETED_GEN_RE.findall(text or ""))
