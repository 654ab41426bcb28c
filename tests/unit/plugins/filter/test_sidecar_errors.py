# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The role's preflight rules (filter nspawn.nixos.sidecar_errors) are the modules' own, with a twin for every rule.

test_every_module_rule_has_a_preflight_twin reads the role's tasks: every sidecar_* variable that reaches an
option of a collection module (directly or through the role's private _sidecar_* variables) whose value the
module checks (every option that is not a boolean or a fixed choice, which the role's argument spec checks
the same way) must have a rule in RULES, or a reason in NO_RULE. It fails when a module option with a rule
gets a value from a new variable and nobody added the preflight twin.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from ansible_collections.nspawn.nixos.plugins.filter.sidecar_errors import RULES, sidecar_errors

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
ROLE = os.path.join(ROOT, "roles", "sidecar")
NAME_RE = re.compile(r"(?<![A-Za-z0-9_.])(_?sidecar_[a-z0-9_]+)")

# Variables that reach module options without a value rule of their own, and why that is safe.
NO_RULE = {
    "sidecar_state": "a choice (present, absent): the argument spec checks it",
    "sidecar_enabled": "a boolean",
    "sidecar_image_verify": "a choice (no, checksum, signature)",
    "sidecar_image_method": "a choice (auto, pull, download)",
    "sidecar_image_force": "a boolean",
    "sidecar_image_source": "a choice (host, controller)",
    "sidecar_network": "a choice (host, veth); it selects fixed settings",
    "sidecar_nspawn_settings_purge": "a boolean",
    "sidecar_restart_on_change": "a boolean",
    "sidecar_nixos_rebuild": "a choice (switch, boot, test, none)",
    "sidecar_nixos_rollback": "a boolean",
    "sidecar_nixpkgs_update": "a boolean",
    "sidecar_pull_async": "async/poll keywords of Ansible, not module options",
    "sidecar_pull_poll": "async/poll keywords of Ansible, not module options",
    "sidecar_image_cache_dir": "a path on the controller, used by ansible.builtin tasks only",
}


def load_tasks():
    tasks = []

    def walk(items):
        for task in items or []:
            if isinstance(task, dict):
                tasks.append(task)
                for key in ("block", "rescue", "always"):
                    walk(task.get(key))

    for name in sorted(os.listdir(os.path.join(ROLE, "tasks"))):
        with open(os.path.join(ROLE, "tasks", name)) as handle:
            walk(yaml.safe_load(handle))
    return tasks


def definitions(tasks):
    """Private variable -> the text that defines it (set_fact, vars of tasks, vars/main.yml)."""
    found = {}
    for task in tasks:
        for source in (task.get("ansible.builtin.set_fact") or {}, task.get("vars") or {}):
            if isinstance(source, dict):
                for key, value in source.items():
                    found[key] = found.get(key, "") + " " + str(value)
        if "register" in task:
            found.setdefault(task["register"], "")
    with open(os.path.join(ROLE, "vars", "main.yml")) as handle:
        for key, value in (yaml.safe_load(handle) or {}).items():
            found[key] = found.get(key, "") + " " + str(value)
    return found


def public_sources(text, defined, seen=None):
    """The sidecar_* variables a template text depends on, following private _sidecar_* definitions."""
    seen = set() if seen is None else seen
    result = set()
    for name in NAME_RE.findall(str(text)):
        if not name.startswith("_"):
            result.add(name)
        elif name not in seen and name in defined:
            seen.add(name)
            result |= public_sources(defined[name], defined, seen)
    return result


def module_options(module):
    path = os.path.join(ROOT, "plugins", "modules", "%s.py" % module)
    with open(path) as handle:
        source = handle.read()
    doc = yaml.safe_load(re.search(r'DOCUMENTATION = r"""(.*?)"""', source, re.S).group(1))
    options = dict(doc.get("options") or {})
    options.setdefault("name", {"type": "str"})  # from the doc fragment nspawn.nixos.machine
    options.setdefault("lock_timeout", {"type": "int"})
    return options


def checked(option):
    """Whether the module checks the option's value beyond its type (not a boolean, not a fixed choice)."""
    return option.get("type") not in ("bool",) and not option.get("choices")


def test_every_module_rule_has_a_preflight_twin():
    tasks = load_tasks()
    defined = definitions(tasks)
    missing = {}
    reached = set()
    for task in tasks:
        for key, args in task.items():
            if not key.startswith("nspawn.nixos.") or not isinstance(args, dict):
                continue
            options = module_options(key.split(".")[-1])
            for option, value in args.items():
                for variable in public_sources(value, defined):
                    reached.add(variable)
                    if option in options and checked(options[option]) and variable not in RULES and variable not in NO_RULE:
                        missing.setdefault(variable, set()).add("%s %s" % (key, option))
    assert missing == {}, "role variables that reach checked module options without a preflight rule: %s" % missing
    # and the rules are not dead: every variable with a rule reaches a module
    assert set(RULES) - reached - {"sidecar_authorized_keys"} == set(), sorted(set(RULES) - reached)


def test_the_forms_the_role_documents_pass():
    digest = "88baea59327963956d9111872866f520b48f98533fd87c9ca31179479b7dfa02"
    assert sidecar_errors({"sidecar_image_checksum": digest, "sidecar_image_url": "https://example.org/a.tar.xz"}) == []
    assert sidecar_errors({"sidecar_image_checksum": {"x86_64": "sha256:" + digest, "aarch64": ""}}) == []
    assert sidecar_errors({"sidecar_image_checksum": "sha256:https://example.org/SHA256SUMS"}) == []
    assert sidecar_errors({"sidecar_binds": ["/srv/data:/data:idmap", "+/var/cache:/cache", ":/scratch"]}) == []
    assert sidecar_errors({"sidecar_wait_timeout": "300", "sidecar_nixos_keep_generations": "0"}) == []


def test_the_role_defaults_pass():
    with open(os.path.join(ROLE, "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)
    assert sidecar_errors({name: defaults[name] for name in RULES}) == []


@pytest.mark.parametrize("variable, value, fragment", [
    ("sidecar_name", "bad name", "not a valid machine name"),
    ("sidecar_name", "a..b", "not a valid machine name"),
    ("sidecar_image_url", "ftp://example.org/x.tar.xz", "scheme"),
    ("sidecar_image_url", {"x86_64": "https://example.org/a b.tar.xz"}, "blanks"),
    ("sidecar_image_checksum", "sha256:abc", "64 hexadecimal digits"),
    ("sidecar_image_checksum", {"x86_64": "md5:abc"}, "sha256"),
    ("sidecar_image_stage_dir", "var/tmp", "absolute path"),
    ("sidecar_image_stage_dir", "/var/tmp/my images", "blanks"),
    ("sidecar_binds", ["data:/data"], "not an absolute path"),
    ("sidecar_binds", ["/srv/data:data"], "destination 'data' is not an absolute path"),
    ("sidecar_binds", ["/srv/data:/data:ro"], "unknown bind option 'ro'"),
    ("sidecar_binds", ["/srv/a\nBind=/etc:/x"], "newline"),
    ("sidecar_binds_ro", ["+data:/data"], "after \"+\""),
    ("sidecar_ports", ["tcp:8080:80:443"], "HOSTPORT"),
    ("sidecar_ports", ["0"], "1-65535"),
    ("sidecar_nspawn_settings", {"Files": {"Bindx": "/a"}}, "not a setting"),
    ("sidecar_nspawn_settings", {"Files": {"TemporaryFileSystem": "tmp"}}, "not an absolute path"),
    ("sidecar_nspawn_settings", {"Exec": {"WorkingDirectory": "srv"}}, "not an absolute path"),
    ("sidecar_nspawn_settings", ["Files"], "must be a dict"),
    ("sidecar_wait_timeout", 0, "positive"),
    ("sidecar_wait_timeout", "-5", "positive"),
    ("sidecar_root_password_hash", "hunter2", "plain password"),
    ("sidecar_authorized_keys", ["ssh-ed25519 AAA\nssh-rsa BBB"], "newline"),
    ("sidecar_nixos_settings", {"services": {"x": {1.5j: True}}}, ""),
    ("sidecar_nixos_rebuild_timeout", 0, "positive"),
    ("sidecar_nixpkgs", "flake:nixpkgs", "not a flake reference"),
    ("sidecar_nixpkgs", "https://u:p@mirror.example/n.tar.gz", "user:password"),
    ("sidecar_nixos_keep_generations", -1, "0 (keep all)"),
])
def test_each_rule_names_the_variable(variable, value, fragment):
    errors = sidecar_errors({variable: value})
    assert len(errors) == 1 and errors[0].startswith(variable + ": ") and fragment in errors[0], errors


def test_a_version_gated_key_uses_the_hosts_systemd():
    assert sidecar_errors({"sidecar_nspawn_settings": {"Files": {"BindUser": "alice"}}}, 252) == []
    errors = sidecar_errors({"sidecar_nspawn_settings": {"Files": {"BindUser": "alice"}}}, 247)
    assert errors and "needs systemd 249" in errors[0], errors


def test_unknown_variables_are_a_programming_error():
    from ansible.errors import AnsibleFilterError
    with pytest.raises(AnsibleFilterError, match="no rule for sidecar_nope"):
        sidecar_errors({"sidecar_nope": 1})


def test_the_roles_paths_are_the_modules():
    """Paths the role uses beside the modules (check-mode stand-ins, settings) are the modules' own."""
    from ansible_collections.nspawn.nixos.plugins.module_utils._systemd import _records
    with open(os.path.join(ROLE, "vars", "main.yml")) as handle:
        private = yaml.safe_load(handle)
    assert private["_sidecar_origin_dir"] == _records.ORIGIN_DIR
    assert private["_sidecar_settings_dir"] == _records.NSPAWN_DIR
