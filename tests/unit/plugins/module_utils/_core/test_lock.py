# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The per-machine lock: real flock(2) on files in a temporary directory, a fake clock for the waits."""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest
from fake_clock import FakeClock

from ansible_collections.nspawn.nixos.plugins.module_utils._core import _lock
from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ModuleFailure


@pytest.fixture
def clock(tmp_path):
    fake = FakeClock()
    with mock.patch.object(_lock, "LOCK_DIR", str(tmp_path / "locks")), \
            mock.patch.object(_lock, "_monotonic", fake.monotonic), mock.patch.object(_lock, "_sleep", fake.sleep):
        yield fake


def test_exclusive_lock_records_its_holder(clock, tmp_path):
    lock = _lock.MachineLock("nixos", "nspawn_image").acquire(timeout=5)
    path = tmp_path / "locks" / "nixos.lock"
    assert lock.path == str(path) and lock.waited == 0
    assert oct(os.stat(str(tmp_path / "locks")).st_mode & 0o777) == "0o700"
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert json.loads(path.read_text())["module"] == "nspawn_image"
    lock.release()
    assert lock.fd is None


def test_second_exclusive_lock_waits_then_fails_naming_the_holder(clock):
    first = _lock.MachineLock("nixos", "nixos_config").acquire(timeout=5)
    with pytest.raises(ModuleFailure) as caught:
        _lock.MachineLock("nixos", "nspawn_machine").acquire(timeout=3)
    message = caught.value.msg
    assert message.startswith("lock_timeout: machine nixos is being changed by another task (nixos_config, pid %d" % os.getpid())
    assert "after 3 s" in message and caught.value.details["lock"] == first.path
    assert clock.now >= 3 and clock.sleeps == int(round(3 / _lock.POLL_SECONDS))
    first.release()


def test_timeout_zero_fails_at_once(clock):
    first = _lock.MachineLock("web-1", "nspawn_settings").acquire(timeout=0)
    with pytest.raises(ModuleFailure, match="^lock_timeout: machine web-1 "):
        _lock.MachineLock("web-1", "nspawn_settings").acquire(timeout=0)
    assert clock.sleeps == 0
    first.release()


def test_other_machines_do_not_wait(clock):
    first = _lock.MachineLock("a", "nspawn_image").acquire(timeout=0)
    second = _lock.MachineLock("b", "nspawn_image").acquire(timeout=0)
    assert first.path != second.path
    first.release()
    second.release()


def test_check_mode_plans_share_and_wait_for_a_change(clock):
    plans = [_lock.MachineLock("nixos", "nspawn_image", exclusive=False).acquire(timeout=0) for _plan in range(2)]
    with pytest.raises(ModuleFailure, match="a task in check mode"):  # a plan holds it and wrote nothing
        _lock.MachineLock("nixos", "nspawn_image").acquire(timeout=0)
    for plan in plans:
        plan.release()
    change = _lock.MachineLock("nixos", "nspawn_image").acquire(timeout=0)
    with pytest.raises(ModuleFailure, match="nspawn_image, pid"):
        _lock.MachineLock("nixos", "nspawn_image", exclusive=False).acquire(timeout=0)
    change.release()


def test_lock_is_free_again_after_release(clock):
    _lock.MachineLock("nixos", "nspawn_image").acquire(timeout=0).release()
    again = _lock.MachineLock("nixos", "nspawn_image").acquire(timeout=0)
    assert again.waited == 0
    again.release()


def test_holder_of_a_dead_process_is_not_named(clock, tmp_path):
    (tmp_path / "locks").mkdir(mode=0o700)
    (tmp_path / "locks" / "nixos.lock").write_text(json.dumps(dict(pid=2 ** 22 + 1, module="nspawn_image", since=0)))
    plan = _lock.MachineLock("nixos", "nspawn_image", exclusive=False).acquire(timeout=0)
    with pytest.raises(ModuleFailure, match="a task in check mode"):
        _lock.MachineLock("nixos", "nspawn_image").acquire(timeout=0)
    plan.release()


def test_a_symlinked_lock_file_is_refused(clock, tmp_path):
    (tmp_path / "locks").mkdir(mode=0o700)
    os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / "locks" / "nixos.lock"))
    with pytest.raises(OSError):
        _lock.MachineLock("nixos", "nspawn_image").acquire(timeout=0)
    assert not (tmp_path / "elsewhere").exists()
