# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One nixpkgs for the fleet: the nixpkgs node of /etc/nixos/flake.lock, what it should be, how to lock it.

The upstream nspawn-nixos image ships /etc/nixos/flake.nix with the input
`github:nixos/nixpkgs/nixos-unstable` and no flake.lock, so the first unmanaged
`nixos-rebuild switch` locks whatever that branch is that day. nixos_config owns the lock:
by default nixpkgs is locked (with the real `nix flake lock`, offline) to the source that
/etc/nix/registry.json pins, i.e. the nixpkgs the machine's system was built from; or to a
reference the user names. This file holds references, lock and registry parsing, whether a
lock already satisfies a request and the command that computes one, and the readers of a
machine's tree that go with them (through _systemd/_rootfs.py): the system profile and its
generations, and an image tree's NixOS state.

Private module: not a public API.
"""

from __future__ import annotations

import json
import posixpath
import re

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._rootfs import MachineDir, UnsafePath

IMAGE = "image"
UNMANAGED = "unmanaged"
LOCK_FILE = "flake.lock"
REGISTRY_PATH = "/etc/nix/registry.json"
INPUT = "nixpkgs"

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_GITHUB = re.compile(r"^github:([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)(?:/([A-Za-z0-9_./+-]+))?$")
_URL = re.compile(r"^(?:tarball\+)?(https?|file)://[^\s?#]+$")
_GIT = re.compile(r"^git\+(https?|ssh|file)://[^\s?#]+(?:\?(?:ref|rev)=[A-Za-z0-9_./+-]+(?:&(?:ref|rev)=[A-Za-z0-9_./+-]+)?)?$")
_PATH = re.compile(r"^path:(/[^\s?#]*)$")

REF_FORMS = ("image, unmanaged, github:OWNER/REPO/REVISION (or a branch), a tarball URL (https://, http://, file://), "
             "git+https://URL?rev=REVISION, or path:/nix/store/...")

# Where NixOS keeps its tools, for the `sh -c` scripts the collection runs in a machine (not a login
# shell, whose profile could print to stdout, which some of them return).
TOOL_PATH = "PATH=/run/current-system/sw/bin:/usr/bin:/bin; "

# The lock computed in a scratch copy of /etc/nixos inside the machine; nothing in /etc/nixos changes.
# Positional parameters: the extra arguments of `nix flake lock`.
LOCK_SCRIPT = TOOL_PATH + r"""export PATH; set -eu
tmp=$(mktemp -d /tmp/nspawn-nixos-lock.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cp /etc/nixos/flake.nix "$tmp/flake.nix"
if [ -f /etc/nixos/flake.lock ]; then cp /etc/nixos/flake.lock "$tmp/flake.lock"; fi
chmod u+w "$tmp"/*
nix --extra-experimental-features 'nix-command flakes' flake lock --option flake-registry '' "$@" "path:$tmp" >&2
cat "$tmp/flake.lock"
"""


def check_reference(value):
    """The nixpkgs option: image, unmanaged, or one of the flake references REF_FORMS names."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"nixpkgs: must be one of {REF_FORMS}, got {value!r}")
    if value in (IMAGE, UNMANAGED):
        return value
    if any(char.isspace() or ord(char) < 32 for char in value):
        raise ValidationError(f"nixpkgs: must not contain blanks or control characters, got {value!r}")
    if "://" in value and ":" in value.split("://", 1)[1].split("/", 1)[0].rpartition("@")[0]:
        raise ValidationError("nixpkgs: a URL with user:password@ would be written into flake.lock; give it without credentials "
                              "(use a netrc file in the machine)")
    if _GITHUB.match(value) or _URL.match(value) or _GIT.match(value) or _PATH.match(value):
        return value
    raise ValidationError(f"nixpkgs: {value!r} is not a flake reference this module can compare with a lock; use {REF_FORMS}")


def parse_lock(text):
    """flake.lock as a dict, None when text is None; ValueError when it is not a flake lock."""
    if text is None:
        return None
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
        raise ValueError("not a flake lock file (no nodes)")
    return data


def locked_input(lock, name=INPUT):
    """The node of the root flake's input `name` of a parsed lock (with its locked and original), or None."""
    if not lock:
        return None
    nodes = lock.get("nodes") or {}
    root = nodes.get(lock.get("root", "root")) or {}
    target = (root.get("inputs") or {}).get(name)
    if isinstance(target, list):  # a `follows` path: not a node of its own
        return None
    node = nodes.get(target) if isinstance(target, str) else None
    return node if isinstance(node, dict) and isinstance(node.get("locked"), dict) else None


def registry_pin(text, name=INPUT):
    """The `to` of the registry entry for flake id `name` in the text of registry.json (version 2), or None."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    for entry in (data.get("flakes") or []) if isinstance(data, dict) else []:
        source = entry.get("from") if isinstance(entry, dict) else None
        if isinstance(source, dict) and source.get("type") == "indirect" and source.get("id") == name:
            target = entry.get("to")
            return target if isinstance(target, dict) else None
    return None


PROFILES_DIR = "/nix/var/nix/profiles"
_GENERATION_RE = re.compile(r"^system-(\d+)-link$")


def generation_number(link):
    """42 from the target 'system-42-link' of the system profile; None for a store path or no link."""
    match = _GENERATION_RE.match(link or "")
    return int(match.group(1)) if match else None


def system_profile(root, machine=None):
    """(link, generation, system) of the machine's /nix/var/nix/profiles/system, read from the host without following
    its links: the link's target, its generation number (None while it points straight at a store path, as in a
    fresh upstream image) and the store path of the system. (None, None, None) without a profile."""
    try:
        with MachineDir(root, PROFILES_DIR, machine) as profiles:
            link = profiles.readlink("system")
            generation = generation_number(link)
            target = profiles.readlink(link) if generation is not None else link
    except UnsafePath:
        return None, None, None
    return link, generation, store_path(target)


def store_path(target, base=PROFILES_DIR):
    """The top-level store path a profile link's target names (absolute, or relative to base, as the upstream
    image's `system -> ../../../store/HASH-nixos-system-...`); None when it is not in /nix/store."""
    if not target:
        return None
    path = posixpath.normpath(posixpath.join(base, target))
    parts = path.split("/")
    if len(parts) < 4 or parts[1:3] != ["nix", "store"] or not parts[3]:
        return None
    return f"/nix/store/{parts[3]}"


def summary(node):
    """What a fleet compares: the locked source of a lock node (None without one).

    `id` is the revision when the source has one, else its narHash: equal ids mean the same nixpkgs.
    """
    if not node:
        return None
    locked = node.get("locked") or {}
    keys = ("type", "owner", "repo", "rev", "url", "path", "narHash", "lastModified")
    result = {key: locked.get(key) for key in keys if locked.get(key) is not None}
    result["id"] = locked.get("rev") or locked.get("narHash")
    result["original"] = node.get("original")
    return result


def nixos_state(root, name):
    """The NixOS side of an image tree, read from the host without following its symlinks: the system its profile
    points at, that generation's number, and the nixpkgs its /etc/nixos/flake.lock locks. None for a tree without
    /nix/var/nix/profiles/system (not NixOS)."""
    try:
        link, generation, system = system_profile(root, name)
        if link is None:
            return None
        with MachineDir(root, "/etc/nixos", name) as nixos:
            text, dummy = nixos.read(LOCK_FILE)
        try:
            nixpkgs = summary(locked_input(parse_lock(text)))
        except ValueError:
            nixpkgs = None
    except (UnsafePath, OSError):
        return None
    return dict(system=system, generation=generation, nixpkgs=nixpkgs)


def _same_name(left, right):
    """GitHub owner and repository names: case-insensitive."""
    return left is not None and right is not None and str(left).lower() == str(right).lower()


def is_branch(reference):
    """Whether reference names a branch (or a default branch) rather than one revision: its lock cannot say which."""
    match = _GITHUB.match(reference)
    if match:
        return not (match.group(3) and _HEX40.match(match.group(3)))
    if _GIT.match(reference):
        return "rev=" not in reference
    return False


def satisfies(node, reference, pin=None, record=None):
    """Whether the locked nixpkgs `node` is what `reference` asks for.

    pin: the registry's `to` (for IMAGE): its source must be the locked one (path, and narHash/rev where both
    have them). A branch is locked once, to its head then, and moved only by an explicit update: the lock keeps
    the flake's own input as `original`, so which branch it came from is known only from `record` (what
    nixos_config wrote when it locked it: reference and narHash).
    """
    if not node:
        return False
    locked = node["locked"]
    if reference == IMAGE:
        if not pin or pin.get("type") != locked.get("type"):
            return False
        keys = ("path", "url", "owner", "repo", "narHash", "rev")
        required = [key for key in ("path", "url") if pin.get(key) is not None]
        compared = required + [key for key in keys[2:] if pin.get(key) is not None and locked.get(key) is not None]
        return bool(compared) and all(_same_name(pin[key], locked.get(key)) if key in ("owner", "repo")
                                      else str(pin[key]) == str(locked.get(key)) for key in compared)
    if is_branch(reference) and not (record and record.get("reference") == reference
                                     and record.get("narHash") == locked.get("narHash")):
        return False
    match = _GITHUB.match(reference)
    if match:
        owner, repo, ref = match.groups()
        if locked.get("type") != "github" or not _same_name(owner, locked.get("owner")) or not _same_name(repo, locked.get("repo")):
            return False
        return locked.get("rev") == ref if ref and _HEX40.match(ref) else True
    match = _PATH.match(reference)
    if match:
        return locked.get("type") == "path" and locked.get("path") == match.group(1)
    if _GIT.match(reference):
        base, dummy, query = reference[len("git+"):].partition("?")
        params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        if locked.get("type") != "git" or (locked.get("url") or "").split("?")[0] != base:
            return False
        return "rev" not in params or locked.get("rev") == params["rev"]
    url = reference[len("tarball+"):] if reference.startswith("tarball+") else reference
    return locked.get("type") in ("tarball", "file") and url in (locked.get("url"), (node.get("original") or {}).get("url"))


def lock_arguments(reference):
    """The arguments of `nix flake lock` (after LOCK_SCRIPT's own) that lock nixpkgs to reference."""
    if reference == IMAGE:
        # flake:nixpkgs resolves through /etc/nix/registry.json; flake-registry '' (in the script) keeps the
        # global registry out, --offline the network.
        return ["--offline", "--override-input", INPUT, f"flake:{INPUT}"]
    return ["--override-input", INPUT, reference]
