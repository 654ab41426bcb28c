# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Where the collection keeps what it knows about a machine, outside the machine's image: the
origin of its image, the pending transfer into it, the branch its nixpkgs was locked from, and
its settings file. Private module: not a public API.
"""

from __future__ import annotations

import os

from ansible_collections.nspawn.nixos.plugins.module_utils._core._files import read_json, remove_file
from ansible_collections.nspawn.nixos.plugins.module_utils._core._redact import redact_url


# Where nspawn_image records where each image came from. Not under /var/lib/machines:
# machined takes every hidden directory there for a hidden image, and `machinectl clean`
# removes those. Not in /etc/systemd/nspawn either: `machinectl remove` deletes NAME.nspawn.
ORIGIN_DIR = "/var/lib/nspawn-nixos/origin"


# Which flake reference nixos_config locked a machine's nixpkgs from, where flake.lock cannot say it (a branch: the
# lock keeps the flake's own input as its `original`). Beside the origin records, for the same reasons.
NIXPKGS_RECORD_DIR = "/var/lib/nspawn-nixos/nixpkgs"


def nixpkgs_record_path(name):
    return os.path.join(NIXPKGS_RECORD_DIR, f"{name}.json")


def origin_path(name):
    return os.path.join(ORIGIN_DIR, f"{name}.json")


# What nspawn_image is fetching right now, written before a transfer starts and removed when its origin
# is recorded or the transfer is cancelled and cleaned. One left behind (the module was killed with
# SIGKILL, the host lost power) tells the next run what the unrecorded image or transfer of NAME is.
STATE_DIR = "/var/lib/nspawn-nixos"
PENDING_DIR = "/var/lib/nspawn-nixos/pending"


def pending_path(name):
    return os.path.join(PENDING_DIR, f"{name}.json")


def remove_pending(name):
    """Remove NAME's pending record, and the pending directory (and /var/lib/nspawn-nixos) when that leaves them
    empty: a transfer that failed or was cancelled leaves the host as it was."""
    remove_file(pending_path(name))
    directories = [PENDING_DIR]
    if os.path.dirname(PENDING_DIR) == STATE_DIR:
        directories.append(STATE_DIR)
    for directory in directories:
        try:
            os.rmdir(directory)
        except OSError:  # not empty, or not there
            return


# What nixos_config is changing right now: written before the first file of a change that a rebuild is to activate,
# removed once the rebuild succeeded or the files were put back. One left behind (the module was killed during
# nixos-rebuild: an OOM kill, a power loss, an async timeout) tells the next run that the files it finds as wanted
# were never activated, so that it rebuilds instead of reporting nothing to do.
NIXOS_PENDING_DIR = "/var/lib/nspawn-nixos/nixos-pending"


def nixos_pending_path(name):
    return os.path.join(NIXOS_PENDING_DIR, f"{name}.json")


def requested_origin(url, checksum, checksum_text):
    """What an origin record of this request would say: the URL and checksum as recorded (secrets hidden), and the
    pinned sha256 (checksum: parse_checksum() of checksum_text; a SHA256SUMS URL pins none before its download)."""
    return dict(url=redact_url(url), checksum=redact_url(checksum_text),
                sha256=checksum[1] if checksum and checksum[0] == "hex" else None)


def origin_drift(origin, requested):
    """How the recorded origin differs from the requested url / pinned sha256 ({} when it does not).

    nspawn_image plans with it; the sidecar role's probe (filter nspawn.nixos.sidecar_current) skips the image step
    only when it is {} for the origin record it read.
    """
    if origin is None:
        return dict(url=dict(recorded=None, requested=requested["url"]))
    drift = {}
    if origin.get("url") != requested["url"]:
        drift["url"] = dict(recorded=origin.get("url"), requested=requested["url"])
    if requested["sha256"] and origin.get("sha256") != requested["sha256"]:
        drift["sha256"] = dict(recorded=origin.get("sha256"), requested=requested["sha256"])
    return drift


def read_origin(name):
    return read_json(origin_path(name))


def remove_origin(name):
    """Remove what the collection recorded about an image (its origin, the branch its nixpkgs was locked from)."""
    removed = remove_file(origin_path(name))
    removed = remove_file(nixos_pending_path(name)) or removed
    return remove_file(nixpkgs_record_path(name)) or removed


# The trusted place of a machine's settings (systemd.nspawn(5)): Bind=, Port= and other
# privileged settings only take effect from here (or /run/systemd/nspawn).
NSPAWN_DIR = "/etc/systemd/nspawn"


def settings_path(name):
    return os.path.join(NSPAWN_DIR, f"{name}.nspawn")
