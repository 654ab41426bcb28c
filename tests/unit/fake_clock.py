# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one fake clock of the unit tests: polling loops (_machinectl, _lock) run on it instead of waiting."""

from __future__ import annotations


class FakeClock:
    """monotonic() and sleep() of a clock that only moves when slept on; counts the sleeps."""

    def __init__(self, start=0.0):
        self.now = start
        self.sleeps = 0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps += 1
        self.now = round(self.now + seconds, 6)
