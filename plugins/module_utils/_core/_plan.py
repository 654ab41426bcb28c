# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The plan of a module: its steps, and the one place that runs them and records their actions.

Every module reads the state, plans a list of Steps, and hands them to apply(). A Step names
the actions it reports (the module's ``actions`` result) and holds what does it. apply()
records a step's actions before it runs it, in check mode (where it runs nothing) and in a
real run alike, so that check mode reports the real run's actions by construction, and a
failure carries the actions done so far (the failed step's included). A staged step (a
transfer: download, import, record) names its stages for check mode and reports each one
itself, with Backend.report(), when it reaches it, so that a failure names the stage that
failed. Private module: not a public API.
"""

from __future__ import annotations


class Step:
    """One change: the actions it reports, and do() (a callable with no arguments) that makes it."""

    __slots__ = ("actions", "do", "staged")

    def __init__(self, actions, do, staged=False):
        self.actions = (actions,) if isinstance(actions, str) else tuple(actions)
        self.do = do
        self.staged = staged

    def __repr__(self):
        return f"Step({', '.join(self.actions)})"


def apply(backend, steps):
    """Record the actions of every step and, outside check mode, do the steps in order.
    Returns whether the steps ran."""
    check = backend.module.check_mode
    for step in steps:
        if check or not step.staged:
            backend.actions.extend(step.actions)
        if not check:
            step.do()
    return not check
