# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: machine
short_description: Run tasks inside a systemd-nspawn machine (a NixOS sidecar) on a remote host
version_added: 1.0.0
description:
  - Reaches the host that runs the machine the way Ansible's P(ansible.builtin.ssh#connection) connection does - it uses
    that plugin for the SSH part, so the host's address, port, user, key, C(ssh_common_args) (a C(ProxyCommand)),
    C(ssh_extra_args) and every other C(ansible_ssh_*) variable work as they do for the host itself.
  - Every command runs inside the machine with
    C(systemd-run -M MACHINE --wait --pipe --quiet --collect [--uid USER] /bin/sh -c COMMAND) on the host - its
    stdout, stderr and stdin are the command's own (C(machinectl shell) always exits 0, systemd issue 5879).
  - The command arrives byte for byte - every C($) is doubled for the machine's service manager, which would otherwise
    expand C($VAR), C(${VAR}) and C($$) in the arguments of a transient service (systemd.service(5), "Command lines").
  - The result is judged by evidence, not by C(systemd-run)'s exit code alone (it exits 0 when it loses the machine's
    bus) - a small wrapper writes the command's own exit status to stderr after a random marker, which the plugin
    removes. A task whose status line never came - the machine stopped while it ran - fails as unreachable, naming
    the host and the machine.
  - Files travel through that pipe (C(cat) in the machine on the other end), never through the machine's tree on the
    host - a container's root could point a path in it at the host's own files with a symlink. They are streamed
    from and to the local file in constant memory (a fetched file is written beside its destination and renamed,
    so that a failed fetch leaves no partial file); only with an SSH password (C(sshpass)) are they held in memory.
  - Pipelining works, and P(ansible.builtin.raw#module) needs no Python in the machine. Modules need the Python the
    machine's NixOS configuration provides (C(environment.systemPackages = [ pkgs.python3 ];)), at
    C(/run/current-system/sw/bin/python3) (the C(ansible_python_interpreter) that the
    P(nspawn.nixos.sidecars#inventory) inventory plugin sets).
  - C(become) with C(become_user) runs the commands as that user inside the machine (C(systemd-run --uid)); no C(sudo)
    is needed inside. O(host_become) runs C(systemd-run) itself through C(sudo -n) on the host, for a host user that is
    not root.
  - A machine that is missing or not running fails the task as unreachable, with one line naming the host and the
    machine.
author:
  - nspawn.nixos developers (@nspawn-nixos)
extends_documentation_fragment:
  - connection_pipelining
options:
  machine:
    description: The name of the machine on the host (C(machinectl list)).
    type: str
    default: nixos
    vars:
      - name: nspawn_machine
      - name: ansible_nspawn_machine
  host:
    description:
      - The host that runs the machine, as Ansible's P(ansible.builtin.ssh#connection) connection reaches it.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_ssh_host
  port:
    description: SSH port of the host.
    type: int
    vars:
      - name: ansible_port
      - name: ansible_ssh_port
  remote_user:
    description: The user to log in to the host as.
    type: str
    vars:
      - name: ansible_user
      - name: ansible_ssh_user
  private_key_file:
    description: The SSH key for the host.
    type: path
    vars:
      - name: ansible_private_key_file
      - name: ansible_ssh_private_key_file
  ssh_common_args:
    description: Extra arguments of C(ssh) (and C(sftp)/C(scp)) for the host, e.g. a C(ProxyCommand).
    type: str
    vars:
      - name: ansible_ssh_common_args
  ssh_extra_args:
    description: Extra arguments of C(ssh) only.
    type: str
    vars:
      - name: ansible_ssh_extra_args
  host_become:
    description:
      - Run C(systemd-run) on the host through C(sudo -n) (passwordless sudo), for a host user that is not root.
    type: bool
    default: false
    vars:
      - name: nspawn_machine_host_become
  machine_user:
    description:
      - The user inside the machine that commands run as when the task does not use C(become); C(become_user)
        overrides it.
    type: str
    default: root
    vars:
      - name: nspawn_machine_user
notes:
  - Needs C(systemd-run) with C(-M) on the host (systemd-container); the machine's own systemd runs the commands as
    transient services, collected when they end.
  - Options of P(ansible.builtin.ssh#connection) that are not listed here are passed on to it from the same variables
    (ansible-core 2.19 and later).
seealso:
  - name: Running tasks inside a sidecar
    description: The collection's README, with a playbook that provisions sidecars and configures inside them.
    link: https://github.com/nspawn-nixos/nspawn.nixos#run-tasks-inside-a-sidecar
  - plugin: nspawn.nixos.sidecars
    plugin_type: inventory
"""

EXAMPLES = r"""
# In an inventory: the sidecar "nixos" of host web1, reached through web1's SSH.
# (The nspawn.nixos.sidecars inventory plugin writes such entries for every sidecar host.)
# web1-nixos ansible_connection=nspawn.nixos.machine ansible_host=203.0.113.10 nspawn_machine=nixos
#            ansible_python_interpreter=/run/current-system/sw/bin/python3

- name: Look inside the sidecar
  hosts: web1-nixos
  gather_facts: false
  tasks:
    - name: Without Python
      ansible.builtin.raw: cat /etc/os-release
      changed_when: false

    - name: A file in, with the machine's Python
      ansible.builtin.copy:
        dest: /etc/motd
        content: "managed by Ansible\n"
        mode: "0644"
"""

import os
import re
import secrets
import shlex
import subprocess
import tempfile
import time

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.plugins.loader import connection_loader
from ansible.utils.display import Display

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import Machinectl

display = Display()

# SGR sequences (ESC [ ... m): machinectl 247 colors its error messages also when stderr is a pipe.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

# How systemd-run itself begins when it cannot reach the machine (it stopped after the check at connect).
_UNREACHABLE = ("Failed to connect to bus", "Failed to create bus connection")

# The command runs under a shell that writes its exit status, after a mark of this call's own, as the last
# line of stderr: the evidence that the command ended, and how. systemd-run --wait exits 0 when it loses the
# machine's bus while it waits ("Failed to query unit state: Connection reset by peer" on systemd 252,
# "Transport endpoint is not connected" on 257), so its own exit status proves nothing.
# Positional parameters: $1 the command, $2 the mark.
_WRAPPER = '/bin/sh -c "$1"; rc=$?; printf "%s %d\\n" "$2" "$rc" >&2; exit "$rc"'
_MARK_PREFIX = "nspawn-nixos-exit-"
# How long a lost command's machine is watched for going down, and how often.
_SETTLE_SECONDS = 10
_SETTLE_INTERVAL = 0.5


def split_status(err, mark):
    """(stderr without the wrapper's status line, the command's exit status or None when that line is missing).

    The line may follow stderr that does not end with a newline; the mark is random, so no output forges it."""
    found = None
    for found in re.finditer(re.escape(to_bytes(mark)) + rb" (\d+)\n", err):
        pass
    if found is None:
        return err, None
    return err[:found.start()] + err[found.end():], int(found.group(1))


class Connection(ConnectionBase):
    """Runs commands and moves files inside a machine through `systemd-run -M` on its host, over Ansible's ssh."""

    transport = "nspawn.nixos.machine"
    has_pipelining = True
    # Output of a command must stay the command's own: no PTY (ssh -tt merges stderr into stdout).
    has_tty = False

    def __init__(self, play_context, *args, **kwargs):
        super().__init__(play_context, *args, **kwargs)
        self._ssh = None
        self._ssh_var_options = None
        self._inside_become = None
        self._checked = False
        self._connected = False

    # -- the SSH part -------------------------------------------------------------

    def _host_connection(self):
        if self._ssh is None:
            self._ssh = connection_loader.get("ssh", self._play_context, shell=self._shell)
            if self._ssh is None:
                raise AnsibleConnectionFailure("nspawn.nixos.machine needs Ansible's ssh connection plugin")
        return self._ssh

    def _resolve_option_variables(self, variables, templar):
        """Ours, and (kept for the ssh connection) every variable the ssh plugin itself reads."""
        ours = super()._resolve_option_variables(variables, templar)
        resolve = getattr(self._host_connection(), "_resolve_option_variables", None)
        self._ssh_var_options = resolve(variables, templar) if resolve else None
        return ours

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        ssh = self._host_connection()
        ssh_vars = dict(self._ssh_var_options or var_options or {})
        # The host of the machine, not the sidecar's inventory name.
        host = self.get_option("host")
        direct_ssh = {"host": host}
        for option in ("port", "remote_user", "private_key_file", "ssh_common_args", "ssh_extra_args", "pipelining"):
            value = self.get_option(option)
            if value is not None:
                direct_ssh[option] = value
        ssh.set_options(task_keys=task_keys, var_options=ssh_vars, direct=direct_ssh)

    def set_become_plugin(self, plugin):
        """become inside the machine is systemd-run's --uid, not a sudo in the machine: keep the plugin to ourselves."""
        self._inside_become = plugin
        self.become = None

    def _connect(self):
        if not self._connected:
            self._host_connection()._connect()
            self._connected = True
        if not self._checked:
            self._check_machine()
            self._checked = True
        return self

    def close(self):
        if self._ssh is not None:
            self._ssh.close()
        self._connected = False

    def reset(self):
        if self._ssh is not None:
            self._ssh.reset()
        self._checked = False

    # -- inside the machine -------------------------------------------------------

    def _where(self):
        return f"machine {self.get_option('machine')} on host {self.get_option('host')}"

    def _user(self):
        """The user inside the machine: become_user when the task becomes (its become plugin is kept from Ansible, so
        the play context holds the task's become_user), else machine_user."""
        if self._inside_become is not None:
            return getattr(self._play_context, "become_user", None) or "root"
        return self.get_option("machine_user") or "root"

    def _host_argv(self, argv):
        """argv as a command line for the host's shell, through sudo -n when asked."""
        if self.get_option("host_become"):
            argv = ["sudo", "-n", "--"] + argv
        return " ".join(shlex.quote(word) for word in argv)

    def _inside(self, command, mark):
        """The host's command line that runs the shell command `command` inside the machine, byte for byte, under
        the shell that reports its exit status after `mark`."""
        try:
            argv = Machinectl.inside_argv(self.get_option("machine"), ["/bin/sh", "-c", _WRAPPER, "sh", command, mark],
                                          user=self._user())
        except ValidationError as exc:  # a command D-Bus cannot carry: the task fails, the machine is reachable
            raise AnsibleError(f"{self._where()}: {exc}") from None
        return self._host_argv(argv)

    def _run_inside(self, command, in_data=None):
        """rc, stdout, stderr of `command` inside the machine, judged by the wrapper's status line."""
        mark = _MARK_PREFIX + secrets.token_hex(8)
        rc, out, err = self._host_connection().exec_command(self._inside(command, mark), in_data=in_data,
                                                            sudoable=False)
        err, status = split_status(err, mark)
        return self._judge(rc, status, err), out, err

    def _judge(self, rc, status, err):
        """The command's own exit status; without the wrapper's status line the command's end was not seen: the
        machine stopped or vanished while it ran, or systemd-run lost it."""
        if status is not None:
            return status
        text = self._tool_text(err)
        if text.startswith(_UNREACHABLE):
            raise AnsibleConnectionFailure(f"{self._where()} is not reachable: {text.splitlines()[0]}")
        # A machine that is powering off may still be "running" in machined for a moment after its bus went away.
        deadline = time.monotonic() + _SETTLE_SECONDS
        while True:
            found, state, dummy = self._machine_state()
            if found != 0 or state != "running" or time.monotonic() >= deadline:
                break
            time.sleep(_SETTLE_INTERVAL)
        why = (text.splitlines() or ["no message"])[-1]
        if found != 0 or state != "running":
            raise AnsibleConnectionFailure("%s stopped while the command ran (%s; systemd-run: rc=%s, %s)" % (
                self._where(), "state %s" % state if found == 0 else "machine gone", rc, why))
        raise AnsibleConnectionFailure("%s: the command's exit status was lost (systemd-run: rc=%s, %s)" % (
            self._where(), rc, why))

    @staticmethod
    def _tool_text(err):
        """A host tool's stderr as text, without the color escapes systemd 247's tools write even into a pipe."""
        return _ANSI_ESCAPE.sub("", to_text(err, errors="surrogate_or_strict")).strip()

    def _machine_state(self):
        """(rc, machined's State of the machine, stderr) of `machinectl show` on the host."""
        argv = ["machinectl", "show", "--property=State", "--value", self.get_option("machine")]
        rc, out, err = self._host_connection().exec_command(self._host_argv(argv), sudoable=False)
        return rc, to_text(out, errors="surrogate_or_strict").strip(), err

    def _check_machine(self):
        """Fail with one line unless machined knows the machine as running."""
        rc, state, err = self._machine_state()
        if rc != 0 or state != "running":
            why = self._tool_text(err).splitlines()
            raise AnsibleConnectionFailure("%s is %s%s" % (
                self._where(), "not running (state %s)" % state if rc == 0 else "missing or not running",
                " (%s)" % why[-1] if why else ""))

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        display.vvv(f"EXEC in {self._where()}: {cmd}", host=self.get_option("host"))
        return self._run_inside(cmd, in_data=in_data)

    # -- files --------------------------------------------------------------------

    def _ssh_argv(self, command):
        """The ssh command line of the host connection for a host command line, or None where the ssh plugin must
        run it itself (a password: sshpass or SSH_ASKPASS is fed by the plugin)."""
        ssh = self._host_connection()
        build = getattr(ssh, "_build_command", None)
        if build is None or getattr(self._play_context, "password", None):
            return None
        try:
            password = ssh.get_option("password")
        except KeyError:
            password = None
        if password:
            return None
        ssh.host = self.get_option("host")
        return build(ssh.get_option("ssh_executable"), "ssh", ssh.host, command)

    def _stream(self, command, source=None, target=None):
        """Run `command` inside the machine with the file object source on its stdin and its stdout into target,
        through ssh directly: the kernel moves the bytes, in constant memory. Returns (rc, stderr)."""
        mark = _MARK_PREFIX + secrets.token_hex(8)
        host_command = self._inside(command, mark)
        argv = self._ssh_argv(host_command)
        if argv is None:
            # Held in memory, as the ssh plugin's exec_command holds them.
            rc, out, err = self._host_connection().exec_command(host_command, in_data=source.read() if source else None,
                                                                sudoable=False)
            if target is not None:
                target.write(out)
        else:
            # stderr into a file, not a pipe: a ControlPersist master that ssh starts keeps a pipe open after ssh ends.
            with tempfile.TemporaryFile() as errors:
                done = subprocess.run(argv, stdin=source if source is not None else subprocess.DEVNULL,
                                      stdout=target if target is not None else subprocess.DEVNULL, stderr=errors,
                                      check=False)
                errors.seek(0)
                rc, err = done.returncode, errors.read()
        err, status = split_status(err, mark)
        return self._judge(rc, status, err), err

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        self._connect()
        display.vvv(f"PUT {in_path} TO {out_path} in {self._where()}", host=self.get_option("host"))
        with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as source:
            rc, err = self._stream(f"cat > {shlex.quote(out_path)}", source=source)
        if rc != 0:
            raise AnsibleConnectionFailure("failed to write %s in %s (rc=%s): %s" % (
                out_path, self._where(), rc, to_text(err, errors="surrogate_or_strict").strip()))

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        self._connect()
        display.vvv(f"FETCH {in_path} TO {out_path} from {self._where()}", host=self.get_option("host"))
        b_out_path = to_bytes(out_path, errors="surrogate_or_strict")
        # Into a file beside out_path, renamed when complete: a failed fetch leaves no half file at out_path.
        fd, partial = tempfile.mkstemp(prefix=b".nspawn-nixos-fetch-", dir=os.path.dirname(b_out_path) or b".")
        try:
            with os.fdopen(fd, "wb") as target:
                rc, err = self._stream(f"cat {shlex.quote(in_path)}", target=target)
            if rc != 0:
                raise AnsibleConnectionFailure("failed to read %s in %s (rc=%s): %s" % (
                    in_path, self._where(), rc, to_text(err, errors="surrogate_or_strict").strip()))
            os.chmod(partial, 0o666 & ~_umask())
            os.rename(partial, b_out_path)
        finally:
            if os.path.lexists(partial):
                os.unlink(partial)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
