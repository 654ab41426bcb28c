# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The plan of a module: its steps, and the one place where check mode stops them.

Every module reads the state, plans a list of Steps, and hands them to apply(). A Step names
the actions it reports (the module's ``actions`` result) and holds what does it. In check mode
apply() reports the actions of every step and runs none; in a real run it runs each step in
order, and the step reports its actions as it does them, so that a failure carries the actions
done so far. The unit tests hold the two to each other (the actions of check mode are those of
the real run). Private module: not a public API.
"""

from __future__ import annotations


class Step:
    """One change: the actions it reports, and do() (a callable with no arguments) that makes it."""

    __slots__ = ("actions", "do")

    def __init__(self, actions, do):
        self.actions = (actions,) if isinstance(actions, str) else tuple(actions)
        self.do = do

    def __repr__(self):
        return f"Step({', '.join(self.actions)})"


def apply(backend, steps):
    """Check mode: report the actions of every step, change nothing. Otherwise do the steps in order.
    Returns whether the steps ran."""
    if backend.module.check_mode:
        for step in steps:
            backend.actions.extend(step.actions)
        return False
    for step in steps:
        step.do()
    return True
