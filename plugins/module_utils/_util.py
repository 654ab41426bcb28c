# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Small helpers shared by the backends: files inside a machine's tree, os-release,
atomic JSON files. Private module: not a public API.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import traceback

from ansible_collections.nspawn.nixos.plugins.module_utils._lock import MachineLock
from ansible_collections.nspawn.nixos.plugins.module_utils._rootfs import read_in_root
from ansible_collections.nspawn.nixos.plugins.module_utils._runner import ModuleFailure, Runner
from ansible_collections.nspawn.nixos.plugins.module_utils._validate import ValidationError


def parse_os_release(text):
    """os-release(5) KEY=value lines (shell-quoted values) -> dict."""
    result = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value.strip("\"'")]
        result[key.strip()] = " ".join(words)
    return result


def read_os_release(root):
    """The os-release of the OS tree at root (etc/os-release, then usr/lib/os-release), or {}."""
    if not root or not os.path.isdir(root):
        return {}
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text, dummy = read_in_root(root, candidate)
        except (IOError, OSError, ModuleFailure):  # not a regular file, unreadable
            continue
        if text is not None:
            return parse_os_release(text)
    return {}


def write_json_atomic(module, path, data, mode=0o644):
    """Write data as JSON to path through a temporary file in the same directory."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, mode)
        module.atomic_move(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path):
    """A JSON object from path, None when the file is missing or not a JSON object."""
    try:
        with open(path, "r") as handle:
            data = json.load(handle)
    except (IOError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_file(path):
    """Remove path if it exists; True when something was removed."""
    if not os.path.lexists(path):
        return False
    os.unlink(path)
    return True


class Backend(object):
    """The one error boundary of a module: run(), then exit_json or fail_json.

    Subclasses implement run(); they append to self.actions what they do, in order,
    and fill self.result. Failures carry the actions done so far.
    """

    def __init__(self, module):
        self.module = module
        self.runner = Runner(module)
        self.actions = []
        self.result = dict(changed=False, actions=self.actions)
        self.held_lock = None

    def run(self):
        raise NotImplementedError

    def lock(self, name):
        """Hold the lock of machine `name` (see _lock) until the module exits: after the
        input is validated, before the state is read. Exclusive for a real run, shared in
        check mode. A wait of a second or more is reported as a warning."""
        timeout = self.module.params["lock_timeout"]
        if timeout is None or timeout < 0:
            raise ValidationError("lock_timeout: must be 0 (do not wait) or a positive number of seconds, got %r" % (timeout,))
        module_name = getattr(self.module, "_name", None) or "nspawn.nixos"
        self.held_lock = MachineLock(name, module_name.rsplit(".", 1)[-1], exclusive=not self.module.check_mode).acquire(timeout)
        if self.held_lock.waited >= 1:
            self.module.warn("Waited %.0f s for another task that was changing machine %s (lock %s)"
                             % (self.held_lock.waited, name, self.held_lock.path))
        return self.held_lock

    def execute(self):
        try:
            try:
                self.run()
            except ValidationError as exc:
                self.module.fail_json(msg=str(exc), actions=self.actions)
            except ModuleFailure as exc:
                self.runner.fail(exc, actions=self.actions)
            except (IOError, OSError) as exc:  # a file operation of the module itself
                self.module.fail_json(msg="%s: %s" % (type(exc).__name__, exc), exception=traceback.format_exc(), actions=self.actions)
            self.module.exit_json(**self.result)
        finally:
            # The process's exit would drop it too; explicit for callers that do not exit (unit tests).
            if self.held_lock is not None:
                self.held_lock.release()

    def set_diff(self, before, after):
        if self.module._diff:
            self.result["diff"] = dict(before=before, after=after)


# Where nspawn_image records where each image came from. Not under /var/lib/machines:
# machined takes every hidden directory there for a hidden image, and `machinectl clean`
# removes those. Not in /etc/systemd/nspawn either: `machinectl remove` deletes NAME.nspawn.
ORIGIN_DIR = "/var/lib/nspawn-nixos/origin"


# Which flake reference nixos_config locked a machine's nixpkgs from, where flake.lock cannot say it (a branch: the
# lock keeps the flake's own input as its `original`). Beside the origin records, for the same reasons.
NIXPKGS_RECORD_DIR = "/var/lib/nspawn-nixos/nixpkgs"


def nixpkgs_record_path(name):
    return os.path.join(NIXPKGS_RECORD_DIR, "%s.json" % name)


def origin_path(name):
    return os.path.join(ORIGIN_DIR, "%s.json" % name)


# What nspawn_image is fetching right now, written before a transfer starts and removed when its origin
# is recorded or the transfer is cancelled and cleaned. One left behind (the module was killed with
# SIGKILL, the host lost power) tells the next run what the unrecorded image or transfer of NAME is.
PENDING_DIR = "/var/lib/nspawn-nixos/pending"


def pending_path(name):
    return os.path.join(PENDING_DIR, "%s.json" % name)


def read_origin(name):
    return read_json(origin_path(name))


def remove_origin(name):
    """Remove what the collection recorded about an image (its origin, the branch its nixpkgs was locked from)."""
    removed = remove_file(origin_path(name))
    return remove_file(nixpkgs_record_path(name)) or removed


# The trusted place of a machine's settings (systemd.nspawn(5)): Bind=, Port= and other
# privileged settings only take effect from here (or /run/systemd/nspawn).
NSPAWN_DIR = "/etc/systemd/nspawn"


def settings_path(name):
    return os.path.join(NSPAWN_DIR, "%s.nspawn" % name)


def text_diff(header, before, after):
    """A diff-mode entry of one text file; '' stands for a file that does not exist."""
    return dict(before_header=header, after_header=header, before=before or "", after=after or "")
