# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The pure helpers of the nixos_config backend."""

from __future__ import annotations

import pytest

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._nixpkgs import generation_number
from ansible_collections.nspawn.nixos.plugins.module_utils._core._validate import check_password_hash
from ansible_collections.nspawn.nixos.plugins.module_utils._backends.nixos_config import (
    check_dest, mutable_users, shadow_hash, with_root_password,
)


@pytest.mark.parametrize("link, number", [
    ("system-42-link", 42), ("system-1-link", 1), ("/nix/store/abc-nixos-system-nixos-24.11", None), (None, None),
    ("system-x-link", None),
])
def test_generation_number(link, number):
    assert generation_number(link) == number


def test_shadow_hash():
    text = "nobody:!:1::::::\nroot:$6$s$h:19000:0:99999:7:::\n"
    assert shadow_hash(text) == "$6$s$h"
    assert shadow_hash(text, "nobody") == "!"
    assert shadow_hash("root::1::::::\n") == ""
    assert shadow_hash("") is None and shadow_hash(None) is None


@pytest.mark.parametrize("dest, do_import, name", [
    ("/etc/nixos/ansible.nix", True, "ansible.nix"),
    ("/etc/nixos/configuration.nix", False, "configuration.nix"),
    ("/etc/nixos/my-module_2+x.nix", True, "my-module_2+x.nix"),
])
def test_check_dest(dest, do_import, name):
    assert check_dest(dest, do_import) == name


@pytest.mark.parametrize("dest, do_import, fragment", [
    ("etc/nixos/a.nix", True, "directly in /etc/nixos"),
    ("/etc/nixos//a.nix", True, "directly in /etc/nixos"),
    ("/etc/nixos/./a.nix", True, "directly in /etc/nixos"),
    ("/etc/nixos/a b.nix", True, "the file name must end in .nix"),
    ("/etc/nixos/a.nix.bak", True, "the file name must end in .nix"),
    ("/etc/nixos/flake.nix", False, "is the flake"),
    ("/etc/nixos/configuration.nix", True, "cannot import itself"),
])
def test_check_dest_refuses(dest, do_import, fragment):
    with pytest.raises(ValidationError, match=fragment.replace(".", r"\.")):
        check_dest(dest, do_import)


@pytest.mark.parametrize("value", ["$6$salt$hash", "$y$j9T$abc$def", "!", "!$6$s$h", "*"])
def test_password_hashes(value):
    assert check_password_hash(value) == value


@pytest.mark.parametrize("value", ["", "secret", "$6$a b", "$6$a:b", "$6$a\nb", "!x y"])
def test_password_hashes_refused_without_echo(value):
    with pytest.raises(ValidationError) as info:
        check_password_hash(value)
    assert value == "" or value not in str(info.value)


def test_mutable_users():
    assert mutable_users({}) is True
    assert mutable_users({"users": {"mutableUsers": True}}) is True
    assert mutable_users({"users": {"mutableUsers": False}}) is False
    assert mutable_users({"users": {"mutableUsers": "false"}}) is True  # only a real boolean counts


def test_with_root_password_copies():
    settings = {"users": {"mutableUsers": False, "users": {"alice": {"isNormalUser": True}}}}
    result = with_root_password(settings, "$6$s$h")
    assert result["users"]["users"]["root"] == {"hashedPassword": "$6$s$h"}
    assert "root" not in settings["users"]["users"]


def test_with_root_password_refuses_conflicts():
    with pytest.raises(ValidationError, match="hashedPassword is set too"):
        with_root_password({"users": {"users": {"root": {"hashedPassword": "x"}}}}, "$6$s$h")
    with pytest.raises(ValidationError, match=r"settings\.users\.users must be a dict"):
        with_root_password({"users": {"users": ["root"]}}, "$6$s$h")
