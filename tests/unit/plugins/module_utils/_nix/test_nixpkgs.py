# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The pure parts of nixpkgs locking: references, flake.lock and registry.json, satisfies, summary."""

from __future__ import annotations

import json

import pytest

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._nixpkgs import (
    IMAGE, UNMANAGED, check_reference, lock_arguments, locked_input, parse_lock, registry_pin, satisfies, store_path, summary,
)

REV_A = "8d4ddb19d03c65a36ad8d189d001dc32ffb0306b"
REV_B = "2222222222222222222222222222222222222222"


def lock_text(locked, original=None, inputs=None, extra_nodes=None, root="root"):
    nodes = {"nixpkgs": {"locked": locked, "original": original or {"id": "nixpkgs", "type": "indirect"}},
             root: {"inputs": inputs if inputs is not None else {"nixpkgs": "nixpkgs"}}}
    nodes.update(extra_nodes or {})
    return json.dumps({"nodes": nodes, "root": root, "version": 7}, indent=2) + "\n"


PATH_LOCKED = {"lastModified": 1, "narHash": "sha256-AAA=", "path": "/nix/store/aaa-source", "type": "path"}
GITHUB_LOCKED = {"lastModified": 1764500000, "narHash": "sha256-GGG=", "owner": "NixOS", "repo": "nixpkgs",
                 "rev": REV_A, "type": "github"}
TARBALL_LOCKED = {"lastModified": 1764500000, "narHash": "sha256-TTT=", "type": "tarball",
                  "url": "https://mirror.example/nixpkgs/archive/%s.tar.gz?narHash=sha256-TTT%%3D" % REV_A}
GIT_LOCKED = {"lastModified": 1764500000, "narHash": "sha256-III=", "ref": "refs/heads/nixos-25.11", "rev": REV_A,
              "revCount": 800000, "type": "git", "url": "https://git.example/nixpkgs.git"}
REGISTRY = json.dumps({"version": 2, "flakes": [
    {"from": {"type": "indirect", "id": "home-manager"}, "to": {"type": "github", "owner": "nix-community", "repo": "home-manager"}},
    {"from": {"type": "indirect", "id": "nixpkgs"},
     "to": {"type": "path", "path": "/nix/store/aaa-source", "narHash": "sha256-AAA="}},
]})


def node(locked, original=None):
    return {"locked": dict(locked), "original": original or {}}


# -- check_reference ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    IMAGE, UNMANAGED,
    "github:NixOS/nixpkgs/" + REV_A, "github:NixOS/nixpkgs/nixos-25.05", "github:nixos/nixpkgs",
    "https://mirror.example/nixpkgs.tar.gz", "http://10.0.0.1/nixpkgs-25.11.tar.gz", "file:///srv/nixpkgs.tar.gz",
    "tarball+https://mirror.example/nixpkgs", "git+https://git.example/nixpkgs.git?rev=" + REV_A,
    "git+https://git.example/nixpkgs.git?ref=nixos-25.11&rev=" + REV_A, "git+ssh://git.example/nixpkgs.git",
    "git+file:///srv/nixpkgs", "path:/nix/store/aaa-source",
])
def test_check_reference_accepts(value):
    assert check_reference(value) == value


@pytest.mark.parametrize("value, message", [
    ("", "nixpkgs: must be one of image, unmanaged, github:OWNER/REPO/REVISION"),
    (None, "nixpkgs: must be one of"),
    ("github:NixOS/nixpkgs/nixos 25.05", "nixpkgs: must not contain blanks or control characters"),
    ("github:NixOS/nixpkgs\n", "nixpkgs: must not contain blanks or control characters"),
    ("github:NixOS/nixpkgs/\tx", "nixpkgs: must not contain blanks"),
    ("https://deploy:s3cr3t@mirror.example/nixpkgs.tar.gz", "nixpkgs: a URL with user:password@"),
    ("git+https://deploy:t0ken@git.example/nixpkgs.git", "nixpkgs: a URL with user:password@"),
    ("flake:foo", "nixpkgs: 'flake:foo' is not a flake reference this module can compare with a lock"),
    ("flake:nixpkgs", "nixpkgs: 'flake:nixpkgs' is not a flake reference"),
    ("nixpkgs", "nixpkgs: 'nixpkgs' is not a flake reference"),
    ("Image", "nixpkgs: 'Image' is not a flake reference"),
    ("github:NixOS", "is not a flake reference"),
    ("github:NixOS/nixpkgs?rev=" + REV_A, "is not a flake reference"),
    ("https://mirror.example/nixpkgs.tar.gz?narHash=x", "is not a flake reference"),
    ("git+https://git.example/nixpkgs.git?dir=sub", "is not a flake reference"),
    ("path:relative/dir", "is not a flake reference"),
    ("ftp://mirror.example/nixpkgs.tar.gz", "is not a flake reference"),
    ("/nix/store/aaa-source", "is not a flake reference"),
])
def test_check_reference_refuses(value, message):
    with pytest.raises(ValidationError) as info:
        check_reference(value)
    assert str(info.value).startswith("nixpkgs:")
    assert message in str(info.value)
    if value and "@" in value:
        assert "s3cr3t" not in str(info.value) and "t0ken" not in str(info.value)  # the secret is not echoed


# -- parse_lock, locked_input ------------------------------------------------------------------------------------

def test_parse_lock():
    assert parse_lock(None) is None
    lock = parse_lock(lock_text(PATH_LOCKED))
    assert lock["root"] == "root" and lock["nodes"]["nixpkgs"]["locked"] == PATH_LOCKED


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"version": 7}', '{"nodes": []}', "null"])
def test_parse_lock_refuses(text):
    with pytest.raises(ValueError):
        parse_lock(text)


def test_locked_input():
    assert locked_input(parse_lock(lock_text(PATH_LOCKED)))["locked"] == PATH_LOCKED
    assert locked_input(None) is None and locked_input({}) is None
    # the root node's name is the lock's "root"; the input may point at a node of another name (nixpkgs_2)
    lock = parse_lock(lock_text(GITHUB_LOCKED, inputs={"nixpkgs": "nixpkgs_2"}, root="top",
                                extra_nodes={"nixpkgs_2": {"locked": PATH_LOCKED, "original": {}}}))
    assert locked_input(lock)["locked"] == PATH_LOCKED
    # another input's node
    lock = parse_lock(lock_text(GITHUB_LOCKED, inputs={"nixpkgs": "nixpkgs", "home-manager": "nixpkgs"}))
    assert locked_input(lock, "home-manager")["locked"] == GITHUB_LOCKED
    assert locked_input(lock, "sops-nix") is None


@pytest.mark.parametrize("inputs, extra", [
    ({"nixpkgs": ["home-manager", "nixpkgs"]}, {}),  # a follows path is not a node of its own
    ({}, {}),  # the flake has no nixpkgs input
    ({"nixpkgs": "missing"}, {}),
    ({"nixpkgs": "nolock"}, {"nolock": {"original": {"id": "nixpkgs", "type": "indirect"}}}),
    ({"nixpkgs": "badlock"}, {"badlock": {"locked": "x"}}),
])
def test_locked_input_none(inputs, extra):
    assert locked_input(parse_lock(lock_text(PATH_LOCKED, inputs=inputs, extra_nodes=extra))) is None


def test_locked_input_of_a_lock_without_root_node():
    assert locked_input({"nodes": {"nixpkgs": {"locked": PATH_LOCKED}}, "root": "root"}) is None


# -- registry_pin --------------------------------------------------------------------------------------------------

def test_registry_pin():
    assert registry_pin(REGISTRY) == {"type": "path", "path": "/nix/store/aaa-source", "narHash": "sha256-AAA="}
    assert registry_pin(REGISTRY, "home-manager") == {"type": "github", "owner": "nix-community", "repo": "home-manager"}


@pytest.mark.parametrize("text", [
    None, "", "not json", "[]", '{"version": 2}', '{"version": 2, "flakes": []}',
    json.dumps({"version": 2, "flakes": [{"from": {"type": "indirect", "id": "nixpkgs-unstable"}, "to": {"type": "path"}}]}),
    json.dumps({"version": 2, "flakes": [{"from": {"type": "github", "id": "nixpkgs"}, "to": {"type": "path"}}]}),
    json.dumps({"version": 2, "flakes": [{"from": {"type": "indirect", "id": "nixpkgs"}, "to": "path:/nix/store/x"}]}),
    json.dumps({"version": 2, "flakes": ["nixpkgs"]}),
])
def test_registry_pin_none(text):
    assert registry_pin(text) is None


# -- satisfies -------------------------------------------------------------------------------------------------------

PIN = {"type": "path", "path": "/nix/store/aaa-source", "narHash": "sha256-AAA="}


@pytest.mark.parametrize("locked, pin, result", [
    (PATH_LOCKED, PIN, True),
    (PATH_LOCKED, {"type": "path", "path": "/nix/store/aaa-source"}, True),  # NixOS's own registry entry: no narHash
    (dict(PATH_LOCKED, narHash="sha256-BBB="), PIN, False),
    (dict(PATH_LOCKED, path="/nix/store/bbb-source"), PIN, False),
    (GITHUB_LOCKED, PIN, False),  # the lock of an unmanaged first rebuild
    (PATH_LOCKED, None, False),  # no pin: a lock cannot be checked, the module computes one
    (PATH_LOCKED, {"type": "path"}, False),  # a pin that names nothing to compare
    (GITHUB_LOCKED, {"type": "github", "owner": "nixos", "repo": "nixpkgs", "rev": REV_A}, True),
    (GITHUB_LOCKED, {"type": "github", "owner": "NixOS", "repo": "nixpkgs", "rev": REV_B}, False),
])
def test_satisfies_image(locked, pin, result):
    assert satisfies(node(locked), IMAGE, pin) is result


@pytest.mark.parametrize("locked, reference, result", [
    (GITHUB_LOCKED, "github:NixOS/nixpkgs/" + REV_A, True),
    (GITHUB_LOCKED, "github:nixos/NIXPKGS/" + REV_A, True),  # GitHub names are case-insensitive
    (GITHUB_LOCKED, "github:NixOS/nixpkgs/" + REV_B, False),
    (GITHUB_LOCKED, "github:someone/nixpkgs/" + REV_A, False),
    (GITHUB_LOCKED, "github:NixOS/nixpkgs-fork/" + REV_A, False),
    # a branch: the lock cannot say which branch it came from; without the module's record it is locked anew
    (GITHUB_LOCKED, "github:NixOS/nixpkgs/nixos-unstable", False),
    (GITHUB_LOCKED, "github:NixOS/nixpkgs", False),
    (PATH_LOCKED, "github:NixOS/nixpkgs/nixos-unstable", False),
    (PATH_LOCKED, "github:NixOS/nixpkgs/" + REV_A, False),
    (PATH_LOCKED, "path:/nix/store/aaa-source", True),
    (PATH_LOCKED, "path:/nix/store/bbb-source", False),
    (GITHUB_LOCKED, "path:/nix/store/aaa-source", False),
    (GIT_LOCKED, "git+https://git.example/nixpkgs.git?rev=" + REV_A, True),
    (GIT_LOCKED, "git+https://git.example/nixpkgs.git?ref=nixos-25.11&rev=" + REV_A, True),
    (GIT_LOCKED, "git+https://git.example/nixpkgs.git?rev=" + REV_B, False),
    (GIT_LOCKED, "git+https://git.example/nixpkgs.git", False),  # no revision and no record
    (GIT_LOCKED, "git+https://git.example/other.git?rev=" + REV_A, False),
    (GITHUB_LOCKED, "git+https://git.example/nixpkgs.git", False),
    (TARBALL_LOCKED, "https://mirror.example/other.tar.gz", False),
    (PATH_LOCKED, "https://mirror.example/nixpkgs.tar.gz", False),
])
def test_satisfies_references(locked, reference, result):
    assert satisfies(node(locked), reference) is result


@pytest.mark.parametrize("locked, reference", [
    (GITHUB_LOCKED, "github:NixOS/nixpkgs/nixos-unstable"),
    (GITHUB_LOCKED, "github:NixOS/nixpkgs"),
    (GIT_LOCKED, "git+https://git.example/nixpkgs.git"),
])
def test_a_branch_is_locked_once_by_the_record_of_what_locked_it(locked, reference):
    """The module records the reference and narHash it locked from: the same branch is then satisfied, another
    branch, or a lock changed behind the module's back (another narHash), is not."""
    record = {"reference": reference, "narHash": locked["narHash"]}
    assert satisfies(node(locked), reference, record=record) is True
    assert satisfies(node(locked), reference + "-other", record=record) is False
    assert satisfies(node(locked), reference, record=dict(record, narHash="sha256-other=")) is False
    assert satisfies(node(locked), reference, record=dict(record, reference=reference + "-other")) is False


def test_satisfies_tarball_by_locked_or_original_url():
    url = "https://mirror.example/nixpkgs-25.11.tar.gz"
    assert satisfies(node(dict(TARBALL_LOCKED, url=url)), url) is True
    assert satisfies(node(dict(TARBALL_LOCKED, url=url)), "tarball+" + url) is True
    # a server may lock to an immutable URL (Link header): the original names what was asked for
    assert satisfies(node(TARBALL_LOCKED, {"type": "tarball", "url": url}), url) is True
    assert satisfies(node(dict(TARBALL_LOCKED, type="file", url="file:///srv/nixpkgs.tar.gz")), "file:///srv/nixpkgs.tar.gz") is True
    assert satisfies(node(dict(GITHUB_LOCKED, url=url)), url) is False  # the type must be a tarball or file


@pytest.mark.parametrize("reference", [IMAGE, "github:NixOS/nixpkgs/" + REV_A, "path:/nix/store/aaa-source",
                                       "https://mirror.example/nixpkgs.tar.gz", "git+https://git.example/nixpkgs.git"])
def test_satisfies_without_a_lock(reference):
    assert satisfies(None, reference, PIN) is False


def test_a_computed_image_lock_satisfies_its_pin():
    """The lock `nix flake lock --override-input nixpkgs flake:nixpkgs` writes matches the registry it came from."""
    lock = locked_input(parse_lock(lock_text(PATH_LOCKED)))
    assert satisfies(lock, IMAGE, registry_pin(REGISTRY)) is True


def test_another_branch_is_not_satisfied_by_the_lock_of_a_branch():
    unstable = node(dict(GITHUB_LOCKED, owner="nixos"), {"owner": "nixos", "repo": "nixpkgs", "ref": "nixos-unstable", "type": "github"})
    assert satisfies(unstable, "github:NixOS/nixpkgs/nixos-25.05") is False


def test_nar_hashes_are_case_sensitive():
    assert satisfies(node(dict(PATH_LOCKED, narHash="sha256-aaa=")), IMAGE, PIN) is False


# -- summary, lock_arguments -------------------------------------------------------------------------------------

def test_summary_id_is_the_revision():
    result = summary(node(GITHUB_LOCKED, {"owner": "NixOS", "repo": "nixpkgs", "type": "github"}))
    assert result == {"type": "github", "owner": "NixOS", "repo": "nixpkgs", "rev": REV_A, "narHash": "sha256-GGG=",
                      "lastModified": 1764500000, "id": REV_A,
                      "original": {"owner": "NixOS", "repo": "nixpkgs", "type": "github"}}


def test_summary_id_is_the_nar_hash_without_revision():
    result = summary(locked_input(parse_lock(lock_text(PATH_LOCKED))))
    assert result == {"type": "path", "path": "/nix/store/aaa-source", "narHash": "sha256-AAA=", "lastModified": 1,
                      "id": "sha256-AAA=", "original": {"id": "nixpkgs", "type": "indirect"}}
    assert summary(node(TARBALL_LOCKED))["url"] == TARBALL_LOCKED["url"]
    assert "revCount" not in summary(node(GIT_LOCKED)) and summary(node(GIT_LOCKED))["id"] == REV_A


def test_summary_none():
    assert summary(None) is None
    assert summary({"locked": {"type": "path"}}) == {"type": "path", "id": None, "original": None}


def test_lock_arguments():
    assert lock_arguments(IMAGE) == ["--offline", "--override-input", "nixpkgs", "flake:nixpkgs"]
    assert lock_arguments("github:NixOS/nixpkgs/" + REV_A) == ["--override-input", "nixpkgs", "github:NixOS/nixpkgs/" + REV_A]


@pytest.mark.parametrize("target, result", [
    ("/nix/store/aaa-nixos-system-nixos-25.11", "/nix/store/aaa-nixos-system-nixos-25.11"),
    ("/nix/store/aaa-nixos-system-nixos-25.11/", "/nix/store/aaa-nixos-system-nixos-25.11"),
    # the upstream image: make-system-tarball's `ln -s --relative` from /nix/var/nix/profiles
    ("../../../store/aaa-nixos-system-nixos-25.11", "/nix/store/aaa-nixos-system-nixos-25.11"),
    ("../../../../nix/store/aaa-nixos-system-nixos-25.11", "/nix/store/aaa-nixos-system-nixos-25.11"),
    ("system-3-link", None),
    ("/etc/passwd", None),
    ("../../../store", None),
    ("", None),
    (None, None),
])
def test_store_path_of_a_profile_link(target, result):
    assert store_path(target) == result
