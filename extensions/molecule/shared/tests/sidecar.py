# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Helpers of the molecule verifiers (testinfra, over the lab's SSH inventory)."""

from __future__ import annotations

import shlex

MACHINE = "nixos"
MACHINE_ROOT = "/var/lib/machines/" + MACHINE
# Where NixOS keeps its tools (the fixture image lays out the same path).
SW_BIN = "/run/current-system/sw/bin"


def inside(host, *argv):
    """Run argv in the machine as the collection does (systemd-run -M, never machinectl shell,
    which always exits 0); --collect so that a failing command leaves no failed unit behind."""
    command = "systemd-run -M %s --wait --pipe -q --collect %s" % (MACHINE, " ".join(shlex.quote(arg) for arg in argv))
    return host.run(command)


def check_inside(host, *argv):
    result = inside(host, *argv)
    assert result.rc == 0, "%s: rc=%s stdout=%r stderr=%r" % (" ".join(argv), result.rc, result.stdout, result.stderr)
    return result.stdout
