# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.nspawn.nixos.plugins.modules import nspawn_image

from module_harness import check_expectations, check_mode_commands, load_cases, run_module, substitute

CASES = load_cases("test_nspawn_image.yaml")
SUCCESS = [case for case in CASES if not case.get("failed")]


def _prepare(case, tmp_path, server):
    """Fill the placeholders that depend on the loopback server and write the file:// sources."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for name, data in server.files.items():
        (src / name).write_bytes(data)
    (tmp_path / "out").mkdir(exist_ok=True)
    case = dict(case)
    case["_mapping"] = dict(
        http=server.base, http_hostport=server.base.split("://", 1)[1],
        sha_good=server.sha256("image.tar.gz"), sha_raw=server.sha256("disk.raw"), sha_other=server.sha256("other.tar.gz"))
    return case


def _run(case, tmp_path, server, **kwargs):
    case = _prepare(case, tmp_path, server)
    return case, run_module(nspawn_image.main, case, tmp_path, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case(case, tmp_path, image_server):
    case, outcome = _run(case, tmp_path, image_server)
    mapping = dict(case["_mapping"], tmp=str(tmp_path), store=str(tmp_path / "machines"), origin=str(tmp_path / "origin"))
    case = substitute(case, mapping)
    check_expectations(case, outcome)
    result = outcome.result
    if not outcome.failed and not result["changed"]:
        assert outcome.mutating_calls == [], "a no-op ran commands that change the host"
    origin_file = tmp_path / "origin" / "nixos.json"
    if "origin_recorded" in case:
        record = json.loads(origin_file.read_text())
        for key, value in case["origin_recorded"].items():
            assert record[key] == value, "origin %s: %r != %r" % (key, record[key], value)
        assert set(record) >= {"name", "url", "sha256", "method", "verify", "time", "kind"}
        assert stat.S_IMODE(os.stat(origin_file).st_mode) == 0o644
        if not outcome.failed:
            assert result["origin"] == record
    if case.get("no_origin"):
        assert not origin_file.exists()
    pending_file = tmp_path / "pending" / "nixos.json"
    if "pending_left" in case:  # the stage of the pending record left for the next run, or null for none
        stage = json.loads(pending_file.read_text())["stage"] if pending_file.exists() else None
        assert stage == case["pending_left"], "pending record: %r" % stage
    elif not outcome.failed:
        assert not pending_file.exists(), "a successful run left its pending record"
    if not pending_file.exists():  # a failed or cancelled transfer leaves the host as it was: no empty directory
        assert not (tmp_path / "pending").exists(), "the empty pending directory was left"
    if case.get("secret"):
        everything = json.dumps(result) + json.dumps(outcome.warnings)
        if origin_file.exists():
            everything += origin_file.read_text()
        assert case["secret"] not in everything
    if case.get("store_clean"):
        leftovers = [n for n in os.listdir(tmp_path / "machines") if n.startswith(".")]
        assert leftovers == [], "temporary files left in the image store: %r" % leftovers
    if case.get("unpacked"):
        assert os.path.exists(case["unpacked"])
    if case.get("exported"):
        assert os.path.isfile(case["exported"])
        assert stat.S_IMODE(os.stat(case["exported"]).st_mode) == 0o600
        assert [n for n in os.listdir(os.path.dirname(case["exported"])) if n.startswith(".")] == []
    for directory, names in (case.get("only_files_in") or {}).items():
        assert sorted(os.listdir(directory)) == sorted(names)


@pytest.mark.parametrize("case", SUCCESS, ids=[case["id"] for case in SUCCESS])
def test_check_mode_predicts_changed(case, tmp_path, image_server):
    # Check mode first, then the real run in the same directory: check mode must leave nothing behind.
    dummy, check = _run(case, tmp_path, image_server, check_mode=True, commands=check_mode_commands(case))
    assert not check.failed, check.result.get("msg")
    assert check.mutating_calls == []
    given = sorted(path.split("/", 1)[1] for path in case.get("files") or {} if path.startswith("{store}/"))
    assert sorted(os.listdir(tmp_path / "machines")) == given
    assert (tmp_path / "origin" / "nixos.json").exists() == bool(case.get("origin_records"))
    dummy, real = _run(case, tmp_path, image_server)
    assert not real.failed, real.result.get("msg")
    assert check.result["changed"] == real.result["changed"]
    assert check.result["actions"] == real.result["actions"]
    real_diff, check_diff = real.result.get("diff"), check.result.get("diff")
    # A real download knows the sha256 that check mode cannot predict.
    if real_diff and real_diff["after"].get("sha256") and not check_diff["after"].get("sha256"):
        check_diff["after"]["sha256"] = real_diff["after"]["sha256"]
    assert check_diff == real_diff


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit])
def test_interrupted_download_leaves_no_partial_file(tmp_path, image_server, monkeypatch, interruption):
    from ansible_collections.nspawn.nixos.plugins.module_utils._backends import image as _image

    def broken_download(url, handle, timeout):
        handle.write(b"partial data")
        handle.flush()
        raise interruption()

    monkeypatch.setattr(_image, "download", broken_download)
    case = dict(id="interrupted", input=dict(name="nixos", url="{http}/files/image.tar.gz", checksum="sha256:{sha_good}"),
                run_command=[dict(command=["systemctl", "--version"], out="systemd 257 (257.9)\n"),
                             dict(command=["machinectl", "show-image", "nixos"], rc=1, err="No image 'nixos' known\n")])
    with pytest.raises(interruption):
        _run(case, tmp_path, image_server)
    assert os.listdir(tmp_path / "machines") == []
    assert not (tmp_path / "origin" / "nixos.json").exists()


def test_file_operation_failure_is_reported_with_actions(tmp_path, image_server, monkeypatch):
    from ansible_collections.nspawn.nixos.plugins.module_utils._backends import image as _image

    write_json_atomic = _image.write_json_atomic

    def no_space(module, path, data, **kwargs):
        if "/origin/" not in path:  # the pending record is written, the origin record is not
            return write_json_atomic(module, path, data, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_image, "write_json_atomic", no_space)
    case = dict(id="enospc", input=dict(name="nixos", url="https://example.org/n.tar.xz"),
                run_command=[dict(command=["systemctl", "--version"], out="systemd 252 (252.39)\n"),
                             dict(command=["machinectl", "show-image", "nixos"], rc=1, err="No image 'nixos' known\n"),
                             dict(command=["machinectl", "pull-tar", "https://example.org/n.tar.xz", "nixos", "--verify=no"]),
                             ])
    dummy, outcome = _run(case, tmp_path, image_server)
    assert outcome.failed
    assert outcome.result["msg"] == "OSError: [Errno 28] No space left on device"
    assert outcome.result["actions"] == ["pull", "record_origin"]
    assert "Traceback" in outcome.result["exception"]
    # The image is there without its record: the pending record stays, so that the next run records it.
    assert json.loads((tmp_path / "pending" / "nixos.json").read_text())["stage"] == "pull"


@pytest.mark.parametrize("fails", [False, True], ids=["exported", "export_failed"])
def test_export_file_is_private_from_its_first_byte(tmp_path, image_server, monkeypatch, fails):
    """machinectl/importctl create the export file themselves (0666 minus their umask): while they run, the file
    is in a 0700 directory of its own and the umask is 077; the directory is gone afterwards, also on failure."""
    import module_harness

    seen = {}
    apply_effect = module_harness.apply_effect

    def look_then_write(effect, args):
        directory = os.path.dirname(args[-1])
        seen["umask"] = os.umask(0o077)
        os.umask(seen["umask"])
        seen["dir_mode"] = stat.S_IMODE(os.stat(directory).st_mode)
        seen["dir"] = directory
        apply_effect(effect, args)
        seen["file_mode"] = stat.S_IMODE(os.stat(args[-1]).st_mode)

    monkeypatch.setattr(module_harness, "apply_effect", look_then_write)
    umask = os.umask(0o022)
    try:
        case = next(case for case in CASES if case["id"] == "export_tar_gz_252")
        script = [dict(entry) for entry in case["run_command"]]
        script[3].update(rc=1 if fails else 0)
        case = dict(case, run_command=script[:4] if fails else script)
        dummy, outcome = _run(case, tmp_path, image_server)
        assert os.umask(0o022) == 0o022, "the module's umask was not restored"
    finally:
        os.umask(umask)
    assert outcome.failed == fails, outcome.result
    assert seen["umask"] == 0o077 and seen["dir_mode"] == 0o700 and seen["file_mode"] == 0o600, seen
    assert os.path.dirname(seen["dir"]) == str(tmp_path / "out")
    assert os.listdir(tmp_path / "out") == ([] if fails else ["nixos.tar.gz"])
    if not fails:
        assert stat.S_IMODE(os.stat(tmp_path / "out" / "nixos.tar.gz").st_mode) == 0o600
