# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Diff mode for every module, one type: what a module changes, as states (before/after dicts) and as texts (files).

A backend adds entries while it plans (Backend.diff); Backend.execute() puts them into the result when Ansible runs
with --diff: the one entry (image, machine, settings), or the list of them for a module whose change spans several
files (nixos_config, list_form=True). Private module: not a public API.
"""

from __future__ import annotations


class Diff:
    """The diff-mode entries of one module run."""

    def __init__(self, list_form=False):
        self.list_form = list_form
        self.entries: list = []
        self.planned = False

    def plan(self):
        """The run got as far as planning a change: it has a diff, empty when nothing changes."""
        self.planned = True

    def state(self, before, after):
        """A change of state: two dicts of the same keys (state, url, enabled, ...)."""
        self.planned = True
        self.entries.append(dict(before=before, after=after))

    def text(self, header, before, after):
        """A change of one text file; None or '' stands for a file that does not exist."""
        self.planned = True
        self.entries.append(dict(before_header=header, after_header=header, before=before or "", after=after or ""))

    def update_after(self, **values):
        """Values of the state after the change that only the real run learns (the sha256 of a download)."""
        for entry in self.entries:
            if isinstance(entry.get("after"), dict):
                entry["after"].update(values)

    def render(self):
        """The result's diff: the list of entries, or the one entry; None when the run planned no change."""
        if not self.planned:
            return None
        if self.list_form:
            return list(self.entries)
        return self.entries[-1] if self.entries else None
