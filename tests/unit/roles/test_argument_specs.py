# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Every role default is documented in meta/argument_specs.yml, with the same value, and the
other way round; every sidecar_* variable the role uses is a default (no typos, no hidden options)."""

from __future__ import annotations

import os
import re

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ROLES = os.path.join(ROOT, "roles")
ROLE_NAMES = sorted(name for name in os.listdir(ROLES) if os.path.isfile(os.path.join(ROLES, name, "meta", "argument_specs.yml")))

# Python types of the values YAML gives for each argument spec type.
TYPES = {"str": (str,), "bool": (bool,), "int": (int,), "float": (float, int), "list": (list,), "dict": (dict,),
         "path": (str,), "raw": (object,)}
# A variable name, not part of a longer name, an attribute, or a YAML anchor or alias.
USE_RE = re.compile(r"(?<![A-Za-z0-9_.&*])(%s_[a-z0-9_]+)")
TAGS_RE = re.compile(r"^\s*tags:.*$", re.MULTILINE)


def load(role, *parts):
    with open(os.path.join(ROLES, role, *parts)) as handle:
        return yaml.safe_load(handle)


def options(role):
    return load(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]


def used_variables(role):
    """Names like ROLE_* (not _ROLE_*) used anywhere in the role outside defaults and meta."""
    pattern = re.compile(USE_RE.pattern % re.escape(role))
    found = set()
    for folder in ("tasks", "handlers", "templates", "vars"):
        directory = os.path.join(ROLES, role, folder)
        for dirpath, dirnames, filenames in os.walk(directory):
            for filename in filenames:
                with open(os.path.join(dirpath, filename)) as handle:
                    text = TAGS_RE.sub("", handle.read())  # tags are named after the role too
                    found.update(match.group(1) for match in pattern.finditer(text))
    return found


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_default_is_documented_with_its_value(role):
    defaults, specs = load(role, "defaults", "main.yml"), options(role)
    assert sorted(set(defaults) - set(specs)) == [], "defaults without an argument spec"
    assert sorted(set(specs) - set(defaults)) == [], "argument specs without a default"
    for name, spec in specs.items():
        assert "default" in spec, "%s: no default in the argument spec" % name
        assert spec["default"] == defaults[name], "%s: default %r in defaults/main.yml, %r in argument_specs.yml" % (
            name, defaults[name], spec["default"])


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_option_has_a_description_and_a_matching_type(role):
    for name, spec in options(role).items():
        assert name.startswith(role + "_"), "%s: not prefixed with %s_" % (name, role)
        assert spec.get("description"), "%s: no description" % name
        assert spec.get("type") in TYPES, "%s: type %r" % (name, spec.get("type"))
        assert isinstance(spec["default"], TYPES[spec["type"]]), "%s: default %r is not a %s" % (name, spec["default"], spec["type"])
        if spec["type"] == "int":
            assert not isinstance(spec["default"], bool), name
        if "choices" in spec:
            assert spec["default"] in spec["choices"], "%s: default %r not in choices" % (name, spec["default"])
        if spec["type"] == "list":
            assert "elements" in spec, "%s: list without elements" % name


# Facts a role sets for the tasks and plays after it (results, not options); each is documented in the role's README.
RESULT_FACTS = {"sidecar": {"sidecar_status", "sidecar_host"}}


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_variable_used_is_an_option(role):
    unknown = used_variables(role) - set(options(role)) - RESULT_FACTS.get(role, set())
    assert sorted(unknown) == [], "variables used by the role but not documented (typo, or a missing option)"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_result_facts_are_set_and_documented(role):
    with open(os.path.join(ROLES, role, "README.md")) as handle:
        readme = handle.read()
    for fact in RESULT_FACTS.get(role, ()):
        assert fact not in options(role), "%s is a result, not an option" % fact
        assert fact in used_variables(role), "%s is never set by the role" % fact
        assert "`%s`" % fact in readme, "%s is not documented in roles/%s/README.md" % (fact, role)


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_private_variables_are_prefixed(role):
    for filename in os.listdir(os.path.join(ROLES, role, "vars")):
        for name in load(role, "vars", filename) or {}:
            assert name.startswith("_%s_" % role), "vars/%s: %s is not prefixed with _%s_" % (filename, name, role)
