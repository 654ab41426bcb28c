# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils is one folder a layer, and imports run one way: _backends -> _image -> _nix -> _systemd -> _core.

Prints the import graph by folder (pytest -s), so that a change of the layering shows in the output too.
"""

from __future__ import annotations

import ast
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
MODULE_UTILS = os.path.join(ROOT, "plugins", "module_utils")
PREFIX = "ansible_collections.nspawn.nixos.plugins.module_utils."
LAYERS = ["_core", "_systemd", "_nix", "_image", "_backends"]  # each may import the ones before it, and itself


def _imports(path):
    with open(path) as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            yield node.module[len(PREFIX):].split(".")[0]


def _graph():
    graph = {}
    for entry in sorted(os.listdir(MODULE_UTILS)):
        folder = os.path.join(MODULE_UTILS, entry)
        if not os.path.isdir(folder) or entry.startswith("__"):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                for target in _imports(os.path.join(folder, name)):
                    graph.setdefault(entry, {}).setdefault(target, set()).add(name)
    return graph


def test_every_module_is_in_a_layer():
    loose = [name for name in os.listdir(MODULE_UTILS) if name.endswith(".py") and name != "__init__.py"]
    folders = sorted(name for name in os.listdir(MODULE_UTILS)
                     if os.path.isdir(os.path.join(MODULE_UTILS, name)) and not name.startswith("__"))
    assert loose == [], "modules outside a layer: %s" % loose
    assert folders == sorted(LAYERS)


def test_imports_run_one_way():
    graph = _graph()
    for source, targets in sorted(graph.items()):
        print("%-10s -> %s" % (source, ", ".join("%s (%d files)" % (target, len(files)) for target, files in sorted(targets.items()))))
    upward = [(source, target, sorted(files)) for source, targets in graph.items() for target, files in targets.items()
              if LAYERS.index(target) > LAYERS.index(source)]
    assert upward == [], "imports against the layering: %s" % upward
