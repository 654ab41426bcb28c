# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""absent.yml removes the staged copies of its own sidecar (image_controller.yml's names) and of no other sidecar,
also one whose name is NAME-<12 hex>-..."""

from __future__ import annotations

import os
import re

import jinja2
import pytest
import yaml

from ansible.plugins.filter.core import FilterModule as CoreFilters

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TASKS = os.path.join(ROOT, "roles", "sidecar", "tasks")


def _walk(tasks):
    for task in tasks or []:
        yield task
        for key in ("block", "always", "rescue"):
            yield from _walk(task.get(key))


def _load(name):
    with open(os.path.join(TASKS, name)) as handle:
        return list(_walk(yaml.safe_load(handle)))


def _render(template, **variables):
    env = jinja2.Environment()
    env.filters.update(CoreFilters().filters())
    return env.from_string(template).render(**variables).strip()


def _staged(name, url):
    [facts] = [task["ansible.builtin.set_fact"] for task in _load("image_controller.yml")
               if "_sidecar_image_staged" in task.get("ansible.builtin.set_fact", {})]
    # urlsplit is a filter of Ansible's templating, not of its core filter plugin: the URL's basename stands in for it.
    template = facts["_sidecar_image_staged"].replace("_sidecar_image_url | urlsplit('path') | basename", "_url_basename")
    path = _render(template, sidecar_image_stage_dir="/var/tmp/stage", sidecar_name=name, _sidecar_image_url=url,
                   _url_basename=url.rsplit("/", 1)[-1])
    return os.path.basename(path)


def _pattern(name):
    [find] = [task["ansible.builtin.find"] for task in _load("absent.yml") if "ansible.builtin.find" in task]
    return _render(find["patterns"], sidecar_name=name)


@pytest.mark.parametrize("other", ["web-0123456789ab-x", "web-deadbeefcafe-", "web.0123456789ab"])
def test_absent_finds_its_own_copies_only(other):
    url = "https://images.example.org/nixos-system-x86_64-linux.tar.xz"
    own, foreign = _staged("web", url), _staged(other, url)
    assert re.search(_pattern("web"), own), (own, _pattern("web"))
    assert not re.search(_pattern("web"), foreign), (foreign, _pattern("web"))
    assert re.search(_pattern(other), foreign)
