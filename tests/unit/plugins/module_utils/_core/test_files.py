# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import shutil

from ansible_collections.nspawn.nixos.plugins.module_utils._core._files import read_json, remove_file, write_json_atomic


class AtomicModule(object):
    def atomic_move(self, src, dest):
        shutil.move(src, dest)


def test_write_json_atomic_and_read(tmp_path):
    path = str(tmp_path / "new" / "dir" / "x.json")
    write_json_atomic(AtomicModule(), path, {"b": 1, "a": [1, 2]})
    assert json.loads(open(path).read()) == {"a": [1, 2], "b": 1}
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert os.listdir(os.path.dirname(path)) == ["x.json"]
    assert read_json(path) == {"a": [1, 2], "b": 1}


def test_write_json_atomic_cleans_up_on_failure(tmp_path):
    class Broken(object):
        def atomic_move(self, src, dest):
            raise OSError("disk full")

    try:
        write_json_atomic(Broken(), str(tmp_path / "x.json"), {})
    except OSError:
        pass
    assert os.listdir(str(tmp_path)) == []


def test_read_json_bad_content(tmp_path):
    (tmp_path / "a.json").write_text("[1]")
    (tmp_path / "b.json").write_text("{nope")
    assert read_json(str(tmp_path / "a.json")) is None
    assert read_json(str(tmp_path / "b.json")) is None
    assert read_json(str(tmp_path / "c.json")) is None


def test_remove_file(tmp_path):
    (tmp_path / "f").write_text("")
    assert remove_file(str(tmp_path / "f")) is True
    assert remove_file(str(tmp_path / "f")) is False


def test_settings_path_and_text_diff(monkeypatch):
    from ansible_collections.nspawn.nixos.plugins.module_utils._systemd import _records
    from ansible_collections.nspawn.nixos.plugins.module_utils._core._diff import Diff
    monkeypatch.setattr(_records, "NSPAWN_DIR", "/tmp/x")
    assert _records.settings_path("nixos") == "/tmp/x/nixos.nspawn"
    diff = Diff()
    diff.text("/p", None, "a\n")
    assert diff.render() == dict(before_header="/p", after_header="/p", before="", after="a\n")


def test_diff_forms():
    from ansible_collections.nspawn.nixos.plugins.module_utils._core._diff import Diff
    assert Diff().render() is None and Diff(list_form=True).render() is None
    planned = Diff(list_form=True)
    planned.plan()
    assert planned.render() == []
    state = Diff()
    state.state(dict(state="absent"), dict(state="present", sha256=None))
    state.update_after(sha256="ab")
    assert state.render() == dict(before=dict(state="absent"), after=dict(state="present", sha256="ab"))
