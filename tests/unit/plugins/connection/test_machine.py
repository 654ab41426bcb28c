# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nspawn.nixos.machine connection: the host command lines it builds and how it reads their results.

The ssh connection underneath is replaced by a recorder here; the lab runs the real one
(tests/integration/test_inside_sidecar.py)."""

from __future__ import annotations

import os

import shlex

import pytest

from ansible.plugins.loader import init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

from ansible.errors import AnsibleConnectionFailure
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader

# The plugin loaders find this checkout's plugins by the collection's name (tests/unit/conftest.py's link).
if AnsibleCollectionConfig.collection_finder is None:
    init_plugin_loader([os.path.join(os.path.dirname(__file__), "..", "..", "..", "output", "collections")])


class FakeSSH:
    """Records exec_command calls; answers from a list of (rc, stdout, stderr)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def exec_command(self, cmd, in_data=None, sudoable=True):
        self.calls.append((shlex.split(cmd), in_data, sudoable))
        return self.answers.pop(0)

    def _connect(self):
        return self

    def set_options(self, task_keys=None, var_options=None, direct=None):
        self.options = dict(direct or {})

    def close(self):
        pass


RUNNING = (0, b"running\n", b"")


def connection(answers, become_user=None, **options):
    play_context = PlayContext()
    if become_user:
        play_context.become_user = become_user
    plugin = connection_loader.get("nspawn.nixos.machine", play_context)
    plugin._ssh = FakeSSH(answers)
    plugin.set_options(direct=dict({"machine": "nixos", "host": "web1"}, **options))
    if become_user:
        plugin.set_become_plugin(object())
    return plugin


INSIDE = ["systemd-run", "-M", "nixos", "--wait", "--pipe", "--quiet", "--collect"]


def test_the_ssh_connection_reaches_the_host_not_the_sidecars_name():
    plugin = connection([], port=2222, remote_user="admin", ssh_common_args="-o ProxyCommand=x")
    assert plugin._ssh.options == {"host": "web1", "port": 2222, "remote_user": "admin", "ssh_common_args": "-o ProxyCommand=x",
                                   "pipelining": False}


def test_a_command_runs_inside_with_its_own_exit_code_and_stdin():
    plugin = connection([RUNNING, (3, b"out\n", b"err\n")])
    assert plugin.exec_command("echo 'a b'; exit 3", in_data=b"input") == (3, b"out\n", b"err\n")
    check, run = plugin._ssh.calls
    assert check == (["machinectl", "show", "--property=State", "--value", "nixos"], None, False)
    assert run == (INSIDE + ["/bin/sh", "-c", "echo 'a b'; exit 3"], b"input", False)  # no PTY: sudoable=False


def test_become_user_is_systemd_runs_uid_and_no_become_wraps_the_command():
    plugin = connection([RUNNING, (0, b"nobody\n", b"")], become_user="nobody")
    assert plugin.become is None  # Ansible does not wrap the command in sudo (there is none in the machine)
    plugin.exec_command("id -un")
    assert plugin._ssh.calls[1][0] == INSIDE + ["--uid", "nobody", "/bin/sh", "-c", "id -un"]


def test_machine_user_without_become():
    plugin = connection([RUNNING, (0, b"", b"")], machine_user="alice")
    plugin.exec_command("true")
    assert plugin._ssh.calls[1][0] == INSIDE + ["--uid", "alice", "/bin/sh", "-c", "true"]


def test_host_become_runs_systemd_run_and_machinectl_through_sudo():
    plugin = connection([RUNNING, (0, b"", b"")], host_become=True)
    plugin.exec_command("true")
    assert plugin._ssh.calls[0][0][:4] == ["sudo", "-n", "--", "machinectl"]
    assert plugin._ssh.calls[1][0] == ["sudo", "-n", "--"] + INSIDE + ["/bin/sh", "-c", "true"]


@pytest.mark.parametrize("answer, message", [
    ((1, b"", b"Could not get path to machine: No machine 'nixos' known\n"),
     "machine nixos on host web1 is missing or not running (Could not get path to machine: No machine 'nixos' known)"),
    ((0, b"closing\n", b""), "machine nixos on host web1 is not running (state closing)"),
    # machinectl 247 (Debian 11) colors the message even into a pipe (seen on the lab's debian11 host).
    ((1, b"", b"\x1b[0;1;31mCould not get path to machine: No machine 'nixos' known\x1b[0m\n"),
     "machine nixos on host web1 is missing or not running (Could not get path to machine: No machine 'nixos' known)"),
])
def test_a_missing_or_stopped_machine_is_one_line(answer, message):
    plugin = connection([answer])
    with pytest.raises(AnsibleConnectionFailure) as failure:
        plugin.exec_command("true")
    assert str(failure.value) == message


def test_a_machine_gone_between_tasks_is_unreachable_not_a_failed_command():
    plugin = connection([RUNNING, (1, b"", b"Failed to connect to bus: Host is down\n")])
    with pytest.raises(AnsibleConnectionFailure, match="machine nixos on host web1 is not reachable: Failed to connect to bus"):
        plugin.exec_command("true")


def test_a_command_that_fails_is_not_a_connection_failure():
    plugin = connection([RUNNING, (1, b"", b"cat: /nope: No such file or directory\n")])
    assert plugin.exec_command("cat /nope")[0] == 1


def test_files_travel_through_the_pipe(tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(b"\x00\x01binary\xff")
    plugin = connection([RUNNING, (0, b"", b""), (0, b"\x00\x01binary\xff", b"")])
    plugin.put_file(str(source), "/root/a file")
    assert plugin._ssh.calls[1] == (INSIDE + ["/bin/sh", "-c", "cat > '/root/a file'"], b"\x00\x01binary\xff", False)
    target = tmp_path / "out.bin"
    plugin.fetch_file("/root/a file", str(target))
    assert plugin._ssh.calls[2][0] == INSIDE + ["/bin/sh", "-c", "cat '/root/a file'"]
    assert target.read_bytes() == b"\x00\x01binary\xff"


def test_a_failed_transfer_names_the_path_and_the_machine(tmp_path):
    source = tmp_path / "in"
    source.write_text("x")
    plugin = connection([RUNNING, (1, b"", b"sh: 1: cannot create /ro/x: Read-only file system\n")])
    with pytest.raises(AnsibleConnectionFailure, match="failed to write /ro/x in machine nixos on host web1 .rc=1.: .*Read-only"):
        plugin.put_file(str(source), "/ro/x")
