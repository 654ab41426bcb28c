# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sidecar role's preflight: the modules' own rules, applied to the role's variables on the controller.

Every rule here is the function a module runs on the option the variable reaches (RULES names the
module option beside each variable), so that a value the module would refuse is refused before the
role changes anything, and the message names the role variable instead of the module option.
tests/unit/plugins/filter/test_sidecar_errors.py fails when the role passes a variable to a module
option that has a rule but no twin here.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._render import NixValueError, render_module
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._nixpkgs import check_reference
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._nspawn_ini import NspawnSettingsError, check_setting, to_values
from ansible_collections.nspawn.nixos.plugins.module_utils._core._validate import (
    check_machine_name, check_password_hash, check_text, check_timeout, check_url, parse_checksum,
)


def _per_arch(value):
    """A value for every host, or a dict of architecture -> value: the values to check."""
    return list(value.values()) if isinstance(value, dict) else [value]


def _settings_lines(section, key, values, systemd_version):
    for value in values:
        check_text(value, key)
        check_setting(section, key, to_values(value, section, key), systemd_version)


def _nspawn_settings(value, systemd_version):
    if not isinstance(value, dict):
        raise ValidationError("must be a dict of sections ({Files: {Bind: [...]}}), got a %s" % type(value).__name__)
    for section, keys in value.items():
        if not isinstance(keys, dict):
            raise ValidationError(f"[{section}] must be a dict of keys")
        for key, item in keys.items():
            check_setting(section, key, to_values(item, section, key), systemd_version)


def _int(value):
    """Integers as templating gives them: an int, or its text where templates render to strings (ansible-core < 2.19)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _keep_generations(value):
    value = _int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(f"must be 0 (keep all) or a positive number of generations, got {value!r}")


def _checksum(value):
    """The role also takes a bare 64-hex digest, which it passes on as sha256:<hex> (preflight.yml)."""
    text = str(value)
    if len(text) == 64 and all(char in "0123456789abcdefABCDEF" for char in text):
        text = f"sha256:{text.lower()}"
    parse_checksum(text, "checksum")


def _stage_dir(value):
    """Where the controller's copy is staged on the host: it becomes the file:// URL that nspawn_image imports."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValidationError(f"must be an absolute path on the host (it becomes a file:// URL), got {value!r}")
    check_url(f"file://{value.rstrip('/')}/image.tar.xz", "url")


def _text_list(value, what):
    if not isinstance(value, list):
        raise ValidationError(f"must be a list of {what}")
    for item in value:
        check_text(str(item), "item")


# variable -> (module option it reaches, rule(value, systemd_version)). Empty strings mean "not set" where the
# role's default is ''.
RULES = {
    "sidecar_name": ("nspawn_image/nspawn_machine/nspawn_settings/nixos_config name",
                     lambda value, version: check_machine_name(value, "name")),
    "sidecar_image_url": ("nspawn_image url", lambda value, version: [check_url(url, "url") for url in _per_arch(value) if url]),
    "sidecar_image_checksum": ("nspawn_image checksum", lambda value, version: [_checksum(item) for item in _per_arch(value) if item]),
    "sidecar_image_stage_dir": ("nspawn_image url (file://STAGE_DIR/...)", lambda value, version: _stage_dir(value)),
    "sidecar_binds": ("nspawn_settings settings.Files.Bind",
                      lambda value, version: _settings_lines("Files", "Bind", value, version)),
    "sidecar_binds_ro": ("nspawn_settings settings.Files.BindReadOnly",
                         lambda value, version: _settings_lines("Files", "BindReadOnly", value, version)),
    "sidecar_ports": ("nspawn_settings settings.Network.Port",
                      lambda value, version: _settings_lines("Network", "Port", value, version)),
    "sidecar_nspawn_settings": ("nspawn_settings settings", _nspawn_settings),
    "sidecar_wait_timeout": ("nspawn_machine timeout", lambda value, version: check_timeout(_int(value), "timeout")),
    "sidecar_root_password_hash": ("nixos_config root_password_hash",
                                   lambda value, version: check_password_hash(value) if value else None),
    "sidecar_authorized_keys": ("nixos_config settings (users.users.root.openssh.authorizedKeys.keys)",
                                lambda value, version: _text_list(value, "SSH public keys")),
    "sidecar_nixos_settings": ("nixos_config settings", lambda value, version: render_module(value)),
    "sidecar_nixos_rebuild_timeout": ("nixos_config timeout", lambda value, version: check_timeout(_int(value), "timeout")),
    "sidecar_nixpkgs": ("nixos_config nixpkgs", lambda value, version: check_reference(value)),
    "sidecar_nixos_keep_generations": ("nixos_config keep_generations", lambda value, version: _keep_generations(value)),
}


def _named(variable, message):
    """The module's message with the role variable in place of the option it names first."""
    head, sep, rest = message.partition(": ")
    if sep and " " not in head.strip("[]") or head.startswith("[") or head in ("name", "url", "checksum", "timeout"):
        return f"{variable}: {message if head.startswith('[') else rest}"
    return f"{variable}: {message}"


def sidecar_errors(values, systemd_version=None):
    """The messages of every rule a value in `values` (role variable -> value) breaks; [] when all pass."""
    if not isinstance(values, dict):
        raise AnsibleFilterError(f"sidecar_errors: expects a dict of sidecar_* variables, got {type(values).__name__}")
    errors = []
    for variable, value in values.items():
        if variable not in RULES:
            raise AnsibleFilterError(f"sidecar_errors: no rule for {variable} (known: {', '.join(sorted(RULES))})")
        try:
            RULES[variable][1](value, _int(systemd_version))
        except (ValidationError, NspawnSettingsError, NixValueError) as exc:
            errors.append(_named(variable, str(exc)))
        except (TypeError, AttributeError) as exc:
            errors.append(f"{variable}: {value!r} is not a value of the right type ({exc})")
    return errors


class FilterModule:
    """nspawn.nixos.sidecar_errors"""

    def filters(self):
        return {"sidecar_errors": sidecar_errors}
