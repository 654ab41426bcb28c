# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Signals as exceptions, for the steps whose clean-up must run when the user or the service manager stops them.

Private module: not a public API.
"""

from __future__ import annotations

import contextlib
import signal

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import Interrupted


@contextlib.contextmanager
def interruptible():
    """Turn SIGINT/SIGTERM/SIGHUP into Interrupted, once: the clean-up that follows is not interrupted again."""
    def handler(signum, frame):
        for other in previous:
            signal.signal(other, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            previous[signum] = signal.signal(signum, handler)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
