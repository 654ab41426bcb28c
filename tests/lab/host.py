"""One lab host: a Debian root file system booted with systemd as PID 1 in systemd-nspawn.

How a host runs (tests/lab/README.md, "How a host runs" and "Measured here", on a machine whose PID 1 is not
systemd): its root is a private overlay (or copy) of a cached rootfs; `scripts/supervise`
starts `systemd-nspawn --boot --register=no --keep-unit --private-network
--console=read-only` in a new session, inside the host's own cgroup folder (see
cgroups.py), and starts it again when it exits with 133 (a reboot of the host).
--register=no and --keep-unit because there is no machined or D-Bus outside;
--private-network gives the host a network namespace with only `lo`, where sshd and the
image server listen on 127.0.0.1. The lab reaches it two ways:

- run(): nsenter into all namespaces of the host's PID 1 (the "leader"), clean env;
- ssh(): real SSH, through `proxy` (nsenter -n socat) as ProxyCommand, as Ansible does.
"""

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from . import cgroups, config, images
from .mounts import MountError, copy_tree, ensure_dir, mount_overlay, remove_tree, unmount_under

READY_STATES = ("running", "degraded")


class HostError(RuntimeError):
    """A host that does not boot, answer, reboot or stop as it should."""


@dataclass
class Host:
    """A lab host. Created by Lab; `boot()`, then `run()`/`ssh()`, `reboot()`, `poweroff()`."""

    name: str                 # machine name = hostname = inventory name
    version: str              # lab release, "12", "12-backports", "sid" (images.RELEASES)
    lab_dir: Path
    lower: Path               # the cached rootfs (never written)
    images_dir: Path          # bind-mounted read-only at /srv/images
    ssh_key: Path
    machine_id: str
    systemd_version: int
    root_mode: str = ""       # "overlay" or "copy", decided by prepare()
    boot_seconds: dict = field(default_factory=dict)
    log: Callable[[str], None] = print
    _process: Optional[subprocess.Popen] = field(default=None, repr=False)

    # -- paths ---------------------------------------------------------------------------

    @property
    def release(self):
        return images.release(self.version)

    @property
    def importd(self):
        """Whether systemd-importd is installed (False on the host built without it)."""
        return self.release.importd

    @property
    def dir(self):
        return Path(self.lab_dir) / "hosts" / self.name

    @property
    def root(self):
        """The host's root file system (an overlay mount, or a copy)."""
        return self.dir / "root"

    @property
    def console_log(self):
        return self.dir / "console.log"

    @property
    def cgroup(self):
        """Name of the host's cgroup folder (in every hierarchy)."""
        return cgroups.folder_name(self.name)

    @property
    def proxy(self):
        return Path(self.lab_dir) / "proxy"

    # -- boot ----------------------------------------------------------------------------

    def boot(self, timeout=180):
        """Prepare the root, start the host and wait until SSH answers; return seconds."""
        started = time.monotonic()
        self.prepare()
        self.start()
        self.wait_ready(timeout)
        self.boot_seconds["total"] = round(time.monotonic() - started, 2)
        return self.boot_seconds["total"]

    def prepare(self):
        """Give the host a private root: overlay of the cached rootfs (or a copy)."""
        ensure_dir(self.dir)
        self.root_mode = config.root_mode()
        if self.root_mode == "overlay":
            upper, work = ensure_dir(self.dir / "upper"), ensure_dir(self.dir / "work")
            ensure_dir(self.root)
            try:
                mount_overlay(self.lower, upper, work, self.root)
            except MountError as error:
                self.log("%s: %s; copying the rootfs instead" % (self.name, error))
                self.root_mode = "copy"
        if self.root_mode == "copy":
            copy_tree(self.lower, self.root)
        # Identity of this host: every boot of a lab is a first boot with its own id.
        (self.root / "etc/hostname").write_text(self.name + "\n")
        (self.root / "etc/machine-id").write_text(self.machine_id + "\n")
        (self.root / "etc/hosts").write_text(
            "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n" % self.name)

    @property
    def data_dir(self):
        """Bind-mounted at /srv/data: a folder on the state root's own file system (not the
        overlay), where idmapped bind mounts (Bind=...:idmap) of nested machines work;
        overlayfs refuses them ("Failed to map ids")."""
        return self.dir / "data"

    def nspawn_argv(self):
        """The systemd-nspawn command line of this host."""
        return ["systemd-nspawn", "--boot", "--directory=" + str(self.root), "--machine=" + self.name,
                "--register=no", "--keep-unit", "--private-network", "--console=read-only", "--link-journal=no",
                "--bind-ro=%s:/srv/images" % self.images_dir, "--bind=%s:/srv/data" % ensure_dir(self.data_dir)]

    def start(self):
        """Start the supervisor (and so systemd-nspawn) in the host's cgroup folders."""
        folders = cgroups.create(self.cgroup)
        env = config.clean_env(LAB_CGROUPS=" ".join(str(folder) for folder in folders))
        if self.release.unified_cgroup:
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        with open(self.console_log, "ab") as console:
            # A new session: no terminal signals from the caller reach the host, and the
            # host outlives the process that started it (`python -m lab up` returns).
            self._process = subprocess.Popen([str(Path(self.lab_dir) / "supervise"), *self.nspawn_argv()], stdin=subprocess.DEVNULL,
                                             stdout=console, stderr=subprocess.STDOUT, env=env, cwd="/", start_new_session=True)
        (self.dir / "supervisor.pid").write_text("%d\n" % self._process.pid)

    def wait_ready(self, timeout=180):
        """Wait until systemd inside is running (or degraded), then until SSH answers."""
        started = time.monotonic()
        deadline = started + timeout
        state = "not started"
        while True:
            if not self.is_alive():
                raise HostError("%s: systemd-nspawn exited during boot; console:\n%s" % (self.name, self.console_tail()))
            if self.leader_pid(required=False):
                state = self.run(["systemctl", "is-system-running"], timeout=15).stdout.strip() or "no answer"
                if state in READY_STATES:
                    break
            if time.monotonic() > deadline:
                raise HostError("%s: not running after %d s (state: %s); console:\n%s" % (self.name, timeout, state, self.console_tail()))
            time.sleep(0.1)
        self.boot_seconds["running"] = round(time.monotonic() - started, 2)
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip()
            self.log("%s: degraded, failed units: %s" % (self.name, failed))
        last = None
        while True:
            last = self.ssh("true", timeout=20)
            if last.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise HostError("%s: no SSH after %d s: %s" % (self.name, timeout, last.stderr.strip()))
            time.sleep(0.2)
        self.boot_seconds["ssh"] = round(time.monotonic() - started, 2)

    # -- processes -----------------------------------------------------------------------

    def supervisor_pid(self):
        """PID of the host's supervisor if it runs, else None."""
        try:
            pid = int((self.dir / "supervisor.pid").read_text())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path("/proc/%d/cmdline" % pid).read_bytes()
        except OSError:
            return None
        # The PID file may be stale and its number reused: check it is this host's.
        if b"supervise" not in cmdline or ("--directory=%s" % self.root).encode() not in cmdline or _state(pid) in ("Z", None):
            return None
        return pid

    def is_alive(self):
        """Whether the supervisor (and so the host, or its restart) is running."""
        if self._process is not None:
            return self._process.poll() is None
        return self.supervisor_pid() is not None

    def nspawn_pid(self):
        """PID of the current systemd-nspawn process, or None (between reboots)."""
        supervisor = self.supervisor_pid()
        if supervisor is None:
            return None
        return next((pid for pid in _children(supervisor) if _comm(pid) == "systemd-nspawn"), None)

    def leader_pid(self, required=True):
        """PID of the host's PID 1 (systemd), as seen from outside. It changes on reboot."""
        nspawn = self.nspawn_pid()
        leader = None
        if nspawn is not None:
            # Until it has exec'ed systemd, nspawn's child is still setting the container up.
            leader = next((pid for pid in _children(nspawn) if _comm(pid) == "systemd"), None)
        if leader is None and required:
            raise HostError("%s is not running" % self.name)
        return leader

    # -- access --------------------------------------------------------------------------

    def run(self, argv, check=False, timeout=120, input_text=None):
        """Run argv inside the host (all namespaces of its PID 1, clean environment) and
        return the CompletedProcess (text; `input_text` is fed to stdin)."""
        command = ["nsenter", "--target", str(self.leader_pid()), "--all", "env", "-i", *_env_assignments(), *argv]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=timeout, input=input_text,
                              stdin=None if input_text is not None else subprocess.DEVNULL, env=config.clean_env())

    @property
    def ssh_args(self):
        """ssh options that reach this host (add `root@NAME`, or use ssh())."""
        return ["-i", str(self.ssh_key), "-o", "IdentitiesOnly=yes", "-o", "User=root",
                "-o", "ProxyCommand=%s %s" % (self.proxy, self.name),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]

    @property
    def ssh_command(self):
        """A shell command line that logs into this host."""
        return shlex.join(["ssh", *self.ssh_args, "root@" + self.name])

    def ssh(self, command, check=False, timeout=120, input_text=None):
        """Run a command over real SSH (a string for the remote shell, or an argv list)."""
        if not isinstance(command, str):
            command = shlex.join(command)
        argv = ["ssh", *self.ssh_args, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "root@" + self.name, command]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout, input=input_text,
                              stdin=None if input_text is not None else subprocess.DEVNULL)

    def journal(self, unit=None, lines=200):
        """The last lines of the host's journal (of one unit, if given)."""
        argv = ["journalctl", "--no-pager", "-n", str(lines)] + (["-u", unit] if unit else [])
        return self.run(argv).stdout

    def console_tail(self, lines=30):
        """The end of the host's console output (systemd's boot messages)."""
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console log)"

    # -- reboot and stop -----------------------------------------------------------------

    def reboot(self, timeout=180):
        """Reboot the host itself (`systemctl reboot` inside) and wait until SSH answers
        again. systemd-nspawn --keep-unit exits 133; the supervisor starts it again, so
        the leader PID changes (the proxy looks it up at every connection)."""
        old_leader = self.leader_pid()
        started = time.monotonic()
        try:
            self.run(["systemctl", "reboot"], timeout=30)
        except subprocess.TimeoutExpired:
            pass  # nsenter'ed processes die with the host's PID namespace
        while True:
            leader = self.leader_pid(required=False)
            if leader is not None and leader != old_leader:
                break
            if not self.is_alive():
                raise HostError("%s: systemd-nspawn did not come back after reboot; console:\n%s" % (self.name, self.console_tail()))
            if time.monotonic() - started > timeout:
                raise HostError("%s: no new leader %d s after reboot" % (self.name, timeout))
            time.sleep(0.1)
        self.wait_ready(timeout)
        return round(time.monotonic() - started, 2)

    def poweroff(self, timeout=60):
        """Power the host off (`systemctl poweroff` inside); SIGTERM, then SIGKILL, if it
        does not stop in time. Returns how it ended: "poweroff", "sigterm", "sigkill"."""
        if not self.is_alive():
            return "not running"
        try:
            self.run(["systemctl", "poweroff"], timeout=15)
        except (HostError, subprocess.TimeoutExpired):
            pass
        if self._wait_stopped(timeout):
            return "poweroff"
        nspawn = self.nspawn_pid()
        if nspawn:
            os.kill(nspawn, signal.SIGTERM)  # nspawn asks the container's init to power off
            if self._wait_stopped(15):
                return "sigterm"
        cgroups.kill(self.cgroup)
        self._wait_stopped(10)
        return "sigkill"

    def _wait_stopped(self, timeout):
        deadline = time.monotonic() + timeout
        while self.is_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def destroy(self):
        """Remove everything of a stopped host: processes, cgroups, mounts, files."""
        cgroups.kill(self.cgroup)
        if self._process is not None:
            self._process.wait(timeout=10)
        cgroups.remove(self.cgroup)
        unmount_under(self.dir)
        remove_tree(self.dir)

    # -- state ---------------------------------------------------------------------------

    def to_json(self):
        """Description for lab.json (PIDs as of now; the leader changes on reboot)."""
        return {
            "name": self.name, "release": self.version, "codename": self.release.codename, "group": self.release.group,
            "systemd_version": self.systemd_version, "machine_id": self.machine_id,
            "supervisor_pid": self.supervisor_pid(), "nspawn_pid": self.nspawn_pid(), "leader_pid": self.leader_pid(required=False),
            "lower": str(self.lower), "root": str(self.root), "root_mode": self.root_mode, "images_dir": str(self.images_dir),
            "cgroups": [str(folder) for folder in cgroups.existing(self.cgroup)], "console_log": str(self.console_log),
            "ssh_key": str(self.ssh_key), "ssh_args": self.ssh_args, "ssh_command": self.ssh_command, "boot_seconds": self.boot_seconds,
        }

    @classmethod
    def from_json(cls, data, lab_dir, log=print):
        """A Host for a lab described by lab.json (possibly started by another process)."""
        return cls(name=data["name"], version=data["release"], lab_dir=Path(lab_dir), lower=Path(data["lower"]),
                   images_dir=Path(data["images_dir"]), ssh_key=Path(data["ssh_key"]), machine_id=data["machine_id"],
                   systemd_version=data["systemd_version"], root_mode=data.get("root_mode", ""),
                   boot_seconds=data.get("boot_seconds", {}), log=log)


def _env_assignments():
    """NAME=VALUE arguments of `env -i` for commands run inside a host."""
    return ["%s=%s" % item for item in config.clean_env().items()]


def _children(pid):
    """PIDs whose parent is `pid`."""
    children = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat_fields(int(entry.name))
            if stat and stat[1] == str(pid):
                children.append(int(entry.name))
    return sorted(children)


def _comm(pid):
    try:
        return Path("/proc/%d/comm" % pid).read_text().strip()
    except OSError:
        return None


def _state(pid):
    stat = _stat_fields(pid)
    return stat[0] if stat else None


def _stat_fields(pid):
    """(state, ppid) from /proc/PID/stat, or None if the process is gone."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[0], fields[1]
