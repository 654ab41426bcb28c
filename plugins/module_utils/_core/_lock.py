# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One lock per machine name on the managed host, so that two runs at once take turns.

Two playbook runs against one host (two operators, a cron job and a person, two
controllers) would otherwise both see "no image" and both pull it, or both rewrite a
settings file. Every module that can change a machine, its image, its settings file
or its NixOS configuration holds an flock(2) on /run/nspawn-nixos/locks/NAME.lock from
before it reads the state until it exits: exclusive for a real run, shared in check
mode (a plan waits for a change in progress; plans do not wait for each other). The
kernel drops the lock when the module's process ends, also when it is killed, so a
stale lock cannot exist. A module that waited longer than lock_timeout seconds fails,
naming the holder (its PID and module, written into the lock file).

Private module: not a public API.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from typing import Any

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ModuleFailure

# /run: a tmpfs, so that nothing of a lock survives a reboot of the host.
LOCK_DIR = "/run/nspawn-nixos/locks"
POLL_SECONDS = 0.2

# Indirection so that unit tests can run the wait on a fake clock.
_monotonic = time.monotonic
_sleep = time.sleep


class MachineLock:
    """flock(2) of LOCK_DIR/NAME.lock; held until the process exits (or release())."""

    def __init__(self, name, module_name, exclusive=True):
        self.name = name
        self.module_name = module_name
        self.exclusive = exclusive
        self.path = os.path.join(LOCK_DIR, f"{name}.lock")
        self.fd: Any = None  # the lock file's descriptor while it is held
        self.waited = 0.0

    def acquire(self, timeout):
        """Take the lock, waiting up to `timeout` seconds; ModuleFailure naming the holder after that."""
        os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        operation = (fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        started = _monotonic()
        while True:
            try:
                fcntl.flock(self.fd, operation)
                break
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):  # someone else holds it
                    raise
            self.waited = _monotonic() - started
            if self.waited >= timeout:
                holder = self.holder()
                os.close(self.fd)
                self.fd = None
                raise ModuleFailure(
                    "lock_timeout: machine %s is being changed by another task (%s) and it still held the lock %s after %d s; "
                    "is another playbook run managing this host? Retry when it has finished, or raise lock_timeout"
                    % (self.name, holder, self.path, timeout), lock=self.path, lock_holder=holder)
            _sleep(POLL_SECONDS)
        self.waited = _monotonic() - started
        if self.exclusive:
            # Who holds it, for the message of a task that waits in vain (shared holders do not write).
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps(dict(pid=os.getpid(), module=self.module_name, since=int(time.time()))).encode(), 0)
        return self

    def holder(self):
        """Who holds the lock, as far as the lock file tells: 'nspawn_image, pid 42, for 12 s'."""
        try:
            data = json.loads(os.pread(self.fd, 4096, 0).decode() or "{}")
            if os.path.exists(f"/proc/{int(data['pid'])}"):
                return "%s, pid %s, for %d s" % (data["module"], data["pid"], max(0, int(time.time()) - int(data["since"])))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # The last writer has exited: the holder is a task in check mode (shared holders do not write).
        return "a task in check mode"

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
