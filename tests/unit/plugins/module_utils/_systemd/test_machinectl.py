# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest
from fake_clock import FakeClock

from ansible_collections.nspawn.nixos.plugins.module_utils._systemd import _machinectl
from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import CommandError
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import (
    Machinectl, parse_image_list, parse_machine_list, parse_properties, parse_systemd_version, parse_transfer_list,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._core._runner import Runner
from ansible_collections.nspawn.nixos.plugins.module_utils._image._download import export_kind, image_kind


class FakeModule(object):
    """Just enough of AnsibleModule for the command layer: scripted run_command and get_bin_path."""

    def __init__(self, script, bins=("machinectl", "importctl", "systemctl")):
        self.script = list(script)
        self.bins = bins
        self.calls = []
        self.envs = []

    def run_command(self, argv, check_rc=False, environ_update=None, before_communicate_callback=None):
        self.calls.append(argv)
        self.envs.append(environ_update)
        rc, out, err = self.script.pop(0)
        return rc, out, err

    def get_bin_path(self, name, required=False):
        return "/usr/bin/" + name if name in self.bins else None


def make(script, **kwargs):
    module = FakeModule(script, **kwargs)
    return module, Machinectl(Runner(module))


@pytest.mark.parametrize("text, version", [
    ("systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT\n", 252),
    ("systemd 257 (257.9-1~deb13u1)\n+PAM\n", 257),
    ("systemd 239 (239-82.el8_10.5)\n", 239),
    ("systemd 256.5\n", 256),
])
def test_parse_systemd_version(text, version):
    assert parse_systemd_version(text) == version


def test_parse_systemd_version_rejects_garbage():
    with pytest.raises(ValueError):
        parse_systemd_version("bash: systemctl: command not found")


def test_parse_properties_keeps_equals_in_values():
    props = parse_properties("Name=nixos\nLeader=4242\nRootDirectory=/var/lib/machines/nixos\nX=a=b\n\nnoise\n")
    assert props == {"Name": "nixos", "Leader": "4242", "RootDirectory": "/var/lib/machines/nixos", "X": "a=b"}


def test_parse_machine_list_json_as_measured():
    # machinectl list -o json --no-legend --no-pager, identical on systemd 252.39 and 257.13 (lab)
    text = '[{"machine":"fx","class":"container","service":"systemd-nspawn","os":"nixos-fixture","version":"24.05","addresses":null}]\n'
    assert parse_machine_list(text) == [dict(name="fx", service="systemd-nspawn", os="nixos-fixture", version="24.05",
                                             addresses=None, **{"class": "container"})]
    assert parse_machine_list("[]\n") == []


def test_parse_image_list_json_as_measured():
    text = '[{"name":"fx","type":"directory","ro":false,"usage":null,"created":1795622740937133,"modified":0}]\n'
    assert parse_image_list(text) == [dict(name="fx", type="directory", read_only=False, usage=None,
                                           created=1795622740937133, modified=0)]


def test_parse_machine_list_json():
    text = ('[{"machine":"ci1","class":"container","service":"systemd-nspawn","os":"debian","version":"12",'
            '"addresses":null},{"machine":"nixos","class":"container","service":"systemd-nspawn","os":"nixos",'
            '"version":"24.11","addresses":"192.168.1.5"}]\n')
    assert parse_machine_list(text) == [
        dict(name="ci1", **{"class": "container"}, service="systemd-nspawn", os="debian", version="12", addresses=None),
        dict(name="nixos", **{"class": "container"}, service="systemd-nspawn", os="nixos", version="24.11", addresses="192.168.1.5"),
    ]


def test_parse_machine_list_json_with_legend_and_empty():
    assert parse_machine_list("[]\n\nNo machines.\n") == []
    text = '[{"machine":"ci1","class":"container","service":"systemd-nspawn","os":null,"version":null}]\n\n1 machines listed.\n'
    assert parse_machine_list(text)[0]["name"] == "ci1"


def test_parse_machine_list_columns():
    # machinectl list --no-legend without JSON support: whitespace columns, '-' for empty
    text = ("ci1   container systemd-nspawn debian 12    -\n"
            "nixos container systemd-nspawn nixos  24.11 10.0.0.2\n"
            "                                            fe80::1\n")
    machines = parse_machine_list(text)
    assert [m["name"] for m in machines] == ["ci1", "nixos"]
    assert machines[0]["addresses"] is None and machines[1]["addresses"] == "10.0.0.2"
    assert machines[1]["version"] == "24.11"


def test_parse_image_list_json():
    text = ('[{"name":"ci1","type":"directory","ro":false,"usage":null,"created":1732528752000000,'
            '"modified":1732528752000000},{"name":"disk","type":"raw","ro":true,"usage":4096,"created":null,"modified":null}]\n')
    images = parse_image_list(text)
    assert images[0] == dict(name="ci1", type="directory", read_only=False, usage=None, created=1732528752000000,
                             modified=1732528752000000)
    assert images[1]["read_only"] is True and images[1]["usage"] == 4096


def test_parse_image_list_columns():
    text = ("ci1   directory no  n/a Tue 2025-11-25 09:59:12 UTC n/a\n"
            "disk  raw       yes 4.0K Tue 2025-11-25 09:59:12 UTC Tue 2025-11-25 10:00:00 UTC\n")
    images = parse_image_list(text)
    assert [(i["name"], i["type"], i["read_only"], i["usage"]) for i in images] == [
        ("ci1", "directory", False, None), ("disk", "raw", True, "4.0K")]


@pytest.mark.parametrize("url, kind", [
    ("https://x/nixos-system-x86_64-linux.tar.xz", "tar"), ("https://x/a.tar", "tar"), ("https://x/a.tgz", "tar"),
    ("https://x/a.tar.zst?download=1", "tar"), ("https://x/disk.raw", "raw"), ("https://x/disk.raw.xz", "raw"),
    ("https://x/disk.qcow2", "raw"), ("https://x/disk.img.gz", "raw"), ("file:///srv/IMAGE.RAW", "raw"),
    ("https://x/unknown", "tar"),
])
def test_image_kind(url, kind):
    assert image_kind(url) == kind


@pytest.mark.parametrize("path, kind", [
    ("/b/n.tar", "tar"), ("/b/n.tar.gz", "tar"), ("/b/n.tar.xz", "tar"), ("/b/n.tar.bz2", "tar"), ("/b/n.raw", "raw"),
    ("/b/n.raw.xz", "raw"), ("/b/n.tar.zst", None), ("/b/n.tgz", None), ("/b/n.qcow2", None), ("/b/n", None),
])
def test_export_kind(path, kind):
    assert export_kind(path) == kind


@pytest.mark.parametrize("version, bins, pull, imp, exp", [
    ("systemd 252 (252.39)", ("machinectl",),
     ["machinectl", "pull-tar", "https://x/n.tar.xz", "nixos", "--verify=no"],
     ["machinectl", "import-tar", "/f", "nixos"], ["machinectl", "export-tar", "nixos", "/o.tar.gz"]),
    ("systemd 257 (257.9)", ("machinectl", "importctl"),
     ["importctl", "pull-tar", "--class=machine", "-q", "https://x/n.tar.xz", "nixos", "--verify=no"],
     ["importctl", "import-tar", "--class=machine", "-q", "/f", "nixos"],
     ["importctl", "export-tar", "--class=machine", "-q", "nixos", "/o.tar.gz"]),
    ("systemd 256 (256.5)", ("machinectl",),  # importctl not installed: machinectl still redirects
     ["machinectl", "pull-tar", "https://x/n.tar.xz", "nixos", "--verify=no"],
     ["machinectl", "import-tar", "/f", "nixos"], ["machinectl", "export-tar", "nixos", "/o.tar.gz"]),
])
def test_transfer_argv(version, bins, pull, imp, exp):
    module, mc = make([(0, version + "\n", "")], bins=bins)
    assert mc.pull_argv("tar", "https://x/n.tar.xz", "nixos", "no") == pull
    assert mc.import_argv("tar", "/f", "nixos") == imp
    assert mc.export_argv("tar", "nixos", "/o.tar.gz") == exp
    assert module.calls == [["systemctl", "--version"]]  # probed once


def test_version_probe_failure_carries_command_details():
    module, mc = make([(0, "garbage\n", "")])
    with pytest.raises(CommandError) as exc:
        mc.probe_version()
    assert exc.value.result()["cmd"] == ["systemctl", "--version"] and "systemd version" in exc.value.msg


def test_show_absent_present_and_error():
    module, mc = make([
        (1, "", "Could not get path to machine: No machine 'nixos' known\n"),
        (0, "Name=nixos\nLeader=42\nState=running\n", ""),
        (1, "", "Failed to connect to bus: Permission denied\n"),
    ])
    assert mc.show("nixos") is None
    assert mc.show("nixos")["Leader"] == "42"
    with pytest.raises(CommandError) as exc:
        mc.show("nixos")
    assert exc.value.result() == dict(msg=exc.value.msg, cmd=["machinectl", "show", "nixos"], rc=1, stdout="",
                                      stderr="Failed to connect to bus: Permission denied\n")
    assert all(env["LANG"] == "C" and env["LC_ALL"] == "C" for env in module.envs)


def test_show_image():
    module, mc = make([(1, "", "Could not get path to image: No image 'x' known\n"), (0, "Name=x\nType=raw\n", "")])
    assert mc.show_image("x") is None
    assert mc.show_image("x") == {"Name": "x", "Type": "raw"}


def test_list_commands():
    module, mc = make([(0, '[{"machine":"a","class":"container","service":"systemd-nspawn"}]\n', ""),
                       (0, '[{"name":"a","type":"directory","ro":false}]\n', "")])
    assert mc.list_machines()[0]["name"] == "a"
    assert mc.list_images()[0]["name"] == "a"
    assert module.calls == [["machinectl", "list", "--no-legend", "--no-pager", "-o", "json"],
                            ["machinectl", "list-images", "--no-legend", "--no-pager", "-o", "json"]]


@pytest.mark.parametrize("out, rc, enabled", [
    ("enabled\n", 0, True), ("enabled-runtime\n", 0, True), ("disabled\n", 1, False), ("", 1, False), ("static\n", 0, False),
])
def test_is_enabled(out, rc, enabled):
    module, mc = make([(rc, out, "")])
    assert mc.is_enabled("nixos") is enabled
    assert module.calls == [["systemctl", "is-enabled", "systemd-nspawn@nixos.service"]]


@pytest.fixture
def clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(_machinectl, "_monotonic", clock.monotonic)
    monkeypatch.setattr(_machinectl, "_sleep", clock.sleep)
    return clock


RUNNING = (0, "Name=nixos\nLeader=100\nState=running\n", "")
GONE = (1, "", "Could not get path to machine: No machine 'nixos' known\n")


def test_wait_gone(clock):
    module, mc = make([RUNNING, RUNNING, GONE, (0, "deactivating\n", ""), (3, "inactive\n", "")])
    mc.wait_gone("nixos", 5)
    assert clock.now == pytest.approx(0.6)
    assert module.calls[-1] == ["systemctl", "is-active", "systemd-nspawn@nixos.service"]


def test_wait_gone_waits_for_the_unit_within_the_timeout(clock):
    module, mc = make([GONE] + [(0, "deactivating\n", "")] * 11)
    with pytest.raises(_machinectl.WaitTimeout) as exc:
        mc.wait_gone("nixos", 2)
    assert "systemd-nspawn@nixos.service of machine nixos was still deactivating 2 seconds" in exc.value.msg


def test_wait_gone_timeout(clock):
    module, mc = make([RUNNING] * 11)
    with pytest.raises(_machinectl.WaitTimeout) as exc:
        mc.wait_gone("nixos", 2)
    assert "still running 2 seconds" in exc.value.msg
    assert len(module.calls) == 11


def test_wait_new_leader(clock):
    module, mc = make([RUNNING, GONE, (0, "Leader=200\n", "")])
    assert mc.wait_new_leader("nixos", 100, 5) == 200


def test_wait_system_running_accepts_degraded(clock):
    module, mc = make([(1, "", "Failed to connect to bus\n"), (1, "starting\n", ""), (1, "degraded\n", "")])
    assert mc.wait_system_running("nixos", 10) == "degraded"
    argv = module.calls[0]
    assert argv[:9] == ["systemd-run", "-M", "nixos", "--wait", "--pipe", "--collect", "-q", "/bin/sh", "-c"]
    assert "$" not in argv[9]  # the service manager would expand it
    assert argv[9].startswith("[ -x /run/current-system/sw/bin/systemctl ] && exec /run/current-system/sw/bin/systemctl")


def test_wait_system_running_timeout_reports_last_state(clock):
    module, mc = make([(1, "maintenance\n", "")] * 3)
    with pytest.raises(_machinectl.WaitTimeout) as exc:
        mc.wait_system_running("nixos", 1)
    assert "last: maintenance" in exc.value.msg


def test_act_failure():
    module, mc = make([(1, "", "Failed to start machine: Access denied\n")])
    with pytest.raises(CommandError) as exc:
        mc.act("start", "nixos")
    assert exc.value.cmd == ["machinectl", "start", "nixos"] and exc.value.rc == 1
    assert "machinectl start nixos failed (rc=1): Failed to start machine: Access denied" == exc.value.msg


class InputModule(FakeModule):
    def run_command(self, argv, check_rc=False, environ_update=None, before_communicate_callback=None, data=None, binary_data=False):
        self.data = (data, binary_data)
        return FakeModule.run_command(self, argv, check_rc, environ_update, before_communicate_callback)


def test_inside_argv_and_run_inside_with_stdin():
    module = InputModule([(0, "ok\n", "")])
    mc = Machinectl(Runner(module))
    assert mc.inside_argv("n", ["/bin/true"], ["RuntimeMaxSec=5"]) == [
        "systemd-run", "-M", "n", "--wait", "--pipe", "--collect", "-q", "-p", "RuntimeMaxSec=5", "/bin/true"]
    assert mc.run_inside("n", ["/run/current-system/sw/bin/chpasswd", "-e"], "root:x\n") == (0, "ok\n", "")
    assert module.calls == [["systemd-run", "-M", "n", "--wait", "--pipe", "--collect", "-q", "/run/current-system/sw/bin/chpasswd", "-e"]]
    assert module.data == ("root:x\n", True)
    assert module.envs[0]["LANG"] == "C"
    assert mc.runner.history == module.calls


def test_run_with_stdin_failure_carries_the_command():
    module = InputModule([(1, "", "boom\n")])
    runner = Runner(module)
    with pytest.raises(CommandError) as info:
        runner.run(["nix-instantiate", "--parse", "-"], msg="Parsing failed", data="{")
    assert module.data == ("{", True)
    assert info.value.result() == dict(msg="Parsing failed (rc=1): boom", cmd=["nix-instantiate", "--parse", "-"], rc=1,
                                       stdout="", stderr="boom\n")
    module = InputModule([(3, "", "x")])
    assert Runner(module).run(["false"], check=False, data="") == (3, "", "x")


@pytest.mark.parametrize("out, rc, running", [
    ("Name=n\nState=running\n", 0, True), ("Name=n\nState=closing\n", 0, False), ("", 1, False),
])
def test_is_running(out, rc, running):
    module, mc = make([(rc, out, "No machine 'n' known\n" if rc else "")])
    assert mc.is_running("n") is running


def test_show_of_a_vanishing_machine_asks_again(clock):
    """machined answers EBADR ("Invalid request descriptor") while a machine it still lists goes away."""
    vanishing = (1, "", "Could not get properties: Invalid request descriptor\n")
    module, mc = make([vanishing, vanishing, (1, "", "Could not get path to machine: No machine 'nixos' known\n")])
    assert mc.show("nixos") is None
    assert len(module.calls) == 3
    module, mc = make([vanishing, (0, "Name=nixos\nState=running\n", "")])
    assert mc.show("nixos")["State"] == "running"
    module, mc = make([vanishing] * _machinectl.VANISHING_ATTEMPTS)
    assert mc.show("nixos") is None  # still going away after 2 s: gone for the caller's purposes
    module, mc = make([(1, "", "Could not get properties: Invalid request descriptor\n")])
    with pytest.raises(CommandError, match="show-image nixos failed"):
        mc.show_image("nixos")  # images: not retried, an error


# list-transfers as systemd 252's machinectl and 257's importctl print it (seen on the lab hosts); 252
# prints this table even with -o json, 257's importctl has no -o.
TRANSFERS_252 = """ID PERCENT TYPE     LOCAL REMOTE
 1     n/a pull-tar slowt http://127.0.0.1:8080/slow/nixos-fixture-x86_64-linux.tar.gz

1 transfers listed.
"""
TRANSFERS_257 = """ID PROGRESS TYPE       CLASS   LOCAL REMOTE
 1       8% pull-tar   machine slowt http://127.0.0.1:8080/slow/nixos-fixture-x86_64-linux.tar.gz
12      41% import-tar machine nixos /var/lib/machines/.nspawn-nixos-nixos@x.part

2 transfers listed.
"""


@pytest.mark.parametrize("text, expected", [
    (TRANSFERS_252, [dict(id=1, type="pull-tar", local="slowt", remote="http://127.0.0.1:8080/slow/nixos-fixture-x86_64-linux.tar.gz")]),
    (TRANSFERS_257, [dict(id=1, type="pull-tar", local="slowt", remote="http://127.0.0.1:8080/slow/nixos-fixture-x86_64-linux.tar.gz"),
                     dict(id=12, type="import-tar", local="nixos", remote="/var/lib/machines/.nspawn-nixos-nixos@x.part")]),
    ("No transfers.\n", []),
    ("", []),
])
def test_parse_transfer_list(text, expected):
    assert parse_transfer_list(text) == expected


@pytest.mark.parametrize("version, libcurl, expected", [
    (247, False, True), (257, False, True), (258, False, False), (262, False, False), (262, True, True),
])
def test_importd_can_download(tmp_path, monkeypatch, version, libcurl, expected):
    """Before 258 importd links libcurl (whatever its file is called); from 258 on it loads libcurl.so.4."""
    lib = tmp_path / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    if libcurl:
        (lib / "libcurl.so.4.8.0").write_text("")
    monkeypatch.setattr(_machinectl, "LIBCURL_GLOBS", (str(tmp_path / "usr/lib/*-linux-gnu/libcurl.so.4*"),))
    machinectl = _machinectl.Machinectl.__new__(_machinectl.Machinectl)
    machinectl._version = version  # what probe_version() read from systemctl --version
    assert machinectl.importd_can_download() is expected
