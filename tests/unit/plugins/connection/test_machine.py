# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nspawn.nixos.machine connection: the host command lines it builds and how it reads their results.

The ssh connection underneath is replaced by a recorder here; the lab runs the real one
(tests/integration/test_inside_sidecar.py)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from ansible.plugins.loader import init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader
from hypothesis import HealthCheck, given, settings, strategies as st

# The plugin loaders find this checkout's plugins by the collection's name (tests/unit/conftest.py's link).
if AnsibleCollectionConfig.collection_finder is None:
    init_plugin_loader([os.path.join(os.path.dirname(__file__), "..", "..", "..", "output", "collections")])

from ansible_collections.nspawn.nixos.plugins.connection import machine as machine_plugin  # noqa: E402 (after the loader)
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import Machinectl  # noqa: E402 (after the loader)


# A model of what the machine's service manager does to the arguments of ExecStart= (systemd's replace_env(),
# src/basic/env-util.c, as systemd.service(5) "Command lines" describes it): $$ is one $, ${NAME} and $NAME are the
# variable's value (none is set in a transient unit's environment here), any other $ stays.
_SYSTEMD_EXPANSION = re.compile(r"\$(\$|\{[^}]*\}|[A-Za-z0-9_]+)")


def expand_like_systemd(word):
    return _SYSTEMD_EXPANSION.sub(lambda match: "$" if match.group(1) == "$" else "", word)


class FakeSSH:
    """Records exec_command calls; answers from a list of (rc, stdout, stderr).

    A command inside the machine answers as the machine would: the wrapper's status line (the answer's rc after
    the call's mark) ends stderr, unless the answer is LOST (systemd-run lost the machine's bus: rc 0, no line).
    With RUN, the inside command really runs here: its argv as the service manager passes it on (the model above),
    without systemd-run's own options."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def exec_command(self, cmd, in_data=None, sudoable=True):
        argv = shlex.split(cmd)
        self.calls.append((argv, in_data, sudoable))
        answer = self.answers.pop(0)
        if "systemd-run" not in argv:
            return answer
        inside = [expand_like_systemd(word) for word in argv[argv.index("/bin/sh"):]]
        if answer is RUN:
            done = subprocess.run(inside, input=in_data, capture_output=True, check=False)
            return done.returncode, done.stdout, done.stderr
        rc, out, err = answer[:3]
        if len(answer) > 3 and answer[3] is LOST:
            return rc, out, err
        return rc, out, err + ("%s %d\n" % (inside[-1], rc)).encode()

    def _connect(self):
        return self

    def set_options(self, task_keys=None, var_options=None, direct=None):
        self.options = dict(direct or {})

    def close(self):
        pass


RUNNING = (0, b"running\n", b"")
GONE = (1, b"", b"Could not get path to machine: No machine 'nixos' known\n")
LOST = object()
RUN = object()


def command_of(argv):
    """The shell command that a recorded systemd-run argv runs inside (before the service manager's expansion)."""
    return argv[argv.index("/bin/sh") + 4]


def prefix_of(argv):
    """The recorded argv up to the wrapper."""
    return argv[:argv.index("/bin/sh")]


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


INSIDE = ["systemd-run", "-M", "nixos", "--wait", "--pipe", "--collect", "-q"]


def test_the_ssh_connection_reaches_the_host_not_the_sidecars_name():
    plugin = connection([], port=2222, remote_user="admin", ssh_common_args="-o ProxyCommand=x")
    assert plugin._ssh.options == {"host": "web1", "port": 2222, "remote_user": "admin", "ssh_common_args": "-o ProxyCommand=x",
                                   "pipelining": False}


def test_a_command_runs_inside_with_its_own_exit_code_and_stdin():
    plugin = connection([RUNNING, (3, b"out\n", b"err\n")])
    assert plugin.exec_command("echo 'a b'; exit 3", in_data=b"input") == (3, b"out\n", b"err\n")
    check, run = plugin._ssh.calls
    assert check == (["machinectl", "show", "--property=State", "--value", "nixos"], None, False)
    assert prefix_of(run[0]) == INSIDE and command_of(run[0]) == "echo 'a b'; exit 3"
    assert run[1:] == (b"input", False)  # no PTY: sudoable=False


def test_become_user_is_systemd_runs_uid_and_no_become_wraps_the_command():
    plugin = connection([RUNNING, (0, b"nobody\n", b"")], become_user="nobody")
    assert plugin.become is None  # Ansible does not wrap the command in sudo (there is none in the machine)
    plugin.exec_command("id -un")
    assert prefix_of(plugin._ssh.calls[1][0]) == INSIDE + ["--uid", "nobody"]


def test_machine_user_without_become():
    plugin = connection([RUNNING, (0, b"", b"")], machine_user="alice")
    plugin.exec_command("true")
    assert prefix_of(plugin._ssh.calls[1][0]) == INSIDE + ["--uid", "alice"]


def test_host_become_runs_systemd_run_and_machinectl_through_sudo():
    plugin = connection([RUNNING, (0, b"", b"")], host_become=True)
    plugin.exec_command("true")
    assert plugin._ssh.calls[0][0][:4] == ["sudo", "-n", "--", "machinectl"]
    assert prefix_of(plugin._ssh.calls[1][0]) == ["sudo", "-n", "--"] + INSIDE


def test_the_wrapper_really_runs_the_command_with_its_status_stdin_and_stderr():
    plugin = connection([RUNNING, RUN, RUN])
    assert plugin.exec_command("cat; echo err >&2; exit 5", in_data=b"in\x00put") == (5, b"in\x00put", b"err\n")
    # stderr that does not end with a newline keeps its last bytes; the status line is still found
    assert plugin.exec_command("printf 'no newline' >&2") == (0, b"", b"no newline")


@pytest.mark.parametrize("text", [
    "${HOME}", "$$", "pa$$w0rd-${HOME}-end", "$1 $@ $? $(id) `id`", "%n %% %i", "back\\slash \\$ \"q\" 'q'",
    "line\nbreak\ttab", "\u00e9\u4e2d\U0001f600", "$", "$$$", "${", "$}", "${unclosed",
])
def test_commands_arrive_byte_for_byte(text):
    """raw: printf '[%s]' TEXT prints TEXT: the service manager's expansion (the model) undoes unit_argv's."""
    plugin = connection([RUNNING, RUN])
    rc, out, dummy = plugin.exec_command("printf '[%%s]' %s" % shlex.quote(text))
    assert (rc, out.decode()) == (0, "[%s]" % text)


# What sd-bus carries in a string (systemd's unichar_is_valid()): no NUL, no surrogate, no noncharacter.
BUS_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00").filter(
    lambda char: not (0xFDD0 <= ord(char) <= 0xFDEF or (ord(char) & 0xFFFE) == 0xFFFE)), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=BUS_TEXT)
def test_any_text_arrives_byte_for_byte(text):
    """Property: every text D-Bus can carry (no NUL, which argv cannot hold; valid for sd-bus) survives unit_argv
    and the service manager's expansion unchanged, in every argument of the inside argv."""
    argv = Machinectl.inside_argv("nixos", ["/bin/sh", "-c", text, "sh", text])
    assert [expand_like_systemd(word) for word in argv[argv.index("/bin/sh"):]] == ["/bin/sh", "-c", text, "sh", text]


@pytest.mark.parametrize("char", ["\x00", "\ufdd0", "\ufdef", "\ufffe", "\uffff", "\U0001fffe", "\U0010ffff"])
def test_a_command_dbus_cannot_carry_fails_the_task_before_anything_runs(char):
    """sd-bus refuses the string (systemd-run: "Failed to create bus message: Invalid argument", measured with
    U+FDEF on systemd 252 and 257): the task fails with the character named, the machine is not unreachable."""
    plugin = connection([RUNNING])  # only the check that the machine runs: nothing is sent to it
    with pytest.raises(AnsibleError, match="holds U[+]%04X, which systemd's D-Bus cannot carry" % ord(char)) as raised:
        plugin.exec_command("printf '%s' " + shlex.quote("a" + char))
    assert not isinstance(raised.value, AnsibleConnectionFailure)


def test_a_machine_stopped_while_the_command_ran_is_unreachable_not_ok():
    """systemd-run --wait exits 0 when it loses the machine's bus (systemd 252: Connection reset by peer)."""
    lost = (0, b"", b"Failed to query unit state: Connection reset by peer\n", LOST)
    plugin = connection([RUNNING, lost, RUNNING, GONE])  # machined forgets the machine a moment later
    with pytest.raises(AnsibleConnectionFailure, match="machine nixos on host web1 stopped while the command ran "
                                                       "[(]machine gone; systemd-run: rc=0, Failed to query unit state"):
        plugin.exec_command("sleep 40")
    plugin = connection([RUNNING, lost, (0, b"closing\n", b"")])
    with pytest.raises(AnsibleConnectionFailure, match="stopped while the command ran [(]state closing"):
        plugin.exec_command("sleep 40")


def test_a_lost_status_of_a_running_machine_is_a_connection_failure(monkeypatch):
    monkeypatch.setattr(machine_plugin, "_SETTLE_SECONDS", 0)
    plugin = connection([RUNNING, (0, b"partial", b"Transport endpoint is not connected\n", LOST), RUNNING])
    with pytest.raises(AnsibleConnectionFailure, match="the command's exit status was lost .systemd-run: rc=0, Transport"):
        plugin.exec_command("true")


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
    plugin = connection([RUNNING, (1, b"", b"Failed to connect to bus: Host is down\n", LOST)])
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
    assert command_of(plugin._ssh.calls[1][0]) == "cat > '/root/a file'"
    assert plugin._ssh.calls[1][1:] == (b"\x00\x01binary\xff", False)
    target = tmp_path / "out.bin"
    plugin.fetch_file("/root/a file", str(target))
    assert command_of(plugin._ssh.calls[2][0]) == "cat '/root/a file'"
    assert target.read_bytes() == b"\x00\x01binary\xff"
    assert sorted(os.listdir(tmp_path)) == ["in.bin", "out.bin"]  # no partial file left beside it


def test_a_failed_fetch_leaves_no_file(tmp_path):
    plugin = connection([RUNNING, (1, b"", b"cat: /nope: No such file or directory\n")])
    with pytest.raises(AnsibleConnectionFailure, match="failed to read /nope"):
        plugin.fetch_file("/nope", str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []


def test_a_failed_transfer_names_the_path_and_the_machine(tmp_path):
    source = tmp_path / "in"
    source.write_text("x")
    plugin = connection([RUNNING, (1, b"", b"sh: 1: cannot create /ro/x: Read-only file system\n")])
    with pytest.raises(AnsibleConnectionFailure, match="failed to write /ro/x in machine nixos on host web1 .rc=1.: .*Read-only"):
        plugin.put_file(str(source), "/ro/x")
