"""A lab: a named set of hosts, its inventory, its state on disk, and its teardown.

State of a lab (under config.state_root()/<name>/, so that a later process can find it):

    lab.json          what runs: hosts, PIDs, roots, SSH arguments, image URLs and sha256s,
                      and the run that started it ($NSPAWN_LAB_RUN_ID, e.g. one `make test`)
    inventory.ini     Ansible inventory (a group per release: debian12, debian12_backports, ...;
                      sidecar_hosts; host vars lab_release, lab_systemd_version, lab_importd)
    host_vars/        localhost's controller-side Python
    ssh_config        `ssh -F ssh_config HOST`
    proxy, supervise  copies of scripts/ (the lab keeps working if the checkout moves)
    hosts/<host>/     root (overlay mount point), upper, work, console.log, supervisor.pid
"""

import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import cgroups, config, images
from .build import Builder, host_info
from .host import Host
from .mounts import ensure_dir, remove_tree, unmount_under

IMAGE_SERVER = "http://127.0.0.1:8080/"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class LabError(RuntimeError):
    """A lab that cannot be started, found or described."""


class Lab:
    """A named set of lab hosts. `Lab(name).up(...)`, use `hosts`/`host()`, then `down()`.

    Also a context manager: `with Lab("x").up(["12"]) as lab: ...` downs it at the end.
    """

    def __init__(self, name="lab", state_root=None, log=print):
        if not NAME_PATTERN.match(name):
            raise LabError("lab name %r: use 1-40 of a-z, 0-9 and '-', starting with a letter or digit" % name)
        self.name = name
        self.dir = Path(state_root or config.state_root()) / name
        self.log = log
        self.hosts = []
        self.images = {}
        self.seconds = {}
        # Which run started the lab: `make test` downs the labs of its own run only.
        self.run_id = os.environ.get("NSPAWN_LAB_RUN_ID", "")
        self._save_lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------

    @property
    def json_path(self):
        return self.dir / "lab.json"

    @property
    def inventory(self):
        """Path of the Ansible inventory."""
        return self.dir / "inventory.ini"

    @property
    def ssh_config(self):
        return self.dir / "ssh_config"

    def exists(self):
        return self.dir.exists()

    # -- finding labs and hosts ------------------------------------------------------------

    @classmethod
    def names(cls, state_root=None):
        """Names of the labs under the state root (running, or stale)."""
        root = Path(state_root or config.state_root())
        if not root.is_dir():
            return []
        return sorted(entry.name for entry in root.iterdir() if entry.is_dir() and NAME_PATTERN.match(entry.name))

    @classmethod
    def load(cls, name, state_root=None, log=print):
        """The lab `name` as described by its lab.json (started by any process)."""
        lab = cls(name, state_root, log)
        try:
            data = json.loads(lab.json_path.read_text())
        except (OSError, ValueError) as error:
            raise LabError("no lab %r (%s)" % (name, error)) from error
        lab.hosts = [Host.from_json(host, lab.dir, log) for host in data.get("hosts", [])]
        lab.images = data.get("images", {})
        lab.seconds = data.get("seconds", {})
        lab.run_id = data.get("run_id", "")
        return lab

    @classmethod
    def find_host(cls, host_name, state_root=None):
        """(lab, host) for a host name, searching every lab."""
        for name in cls.names(state_root):
            try:
                lab = cls.load(name, state_root)
            except LabError:
                continue
            for host in lab.hosts:
                if host.name == host_name:
                    return lab, host
        raise LabError("no lab host %r" % host_name)

    def host(self, key):
        """The host named `key`, or the first host of release `key` ("12", "debian12")."""
        for host in self.hosts:
            if host.name == key:
                return host
        wanted = images.release(key).version
        for host in self.hosts:
            if host.version == wanted:
                return host
        raise LabError("lab %s has no host %r" % (self.name, key))

    # -- up ------------------------------------------------------------------------------

    def up(self, releases=images.DEFAULT_RELEASES, count=1, replace=False, timeout=180):
        """Build what is missing, then boot `count` hosts per release in parallel and wait
        until each answers SSH. Returns the lab. On failure nothing is left running."""
        versions = list(dict.fromkeys(images.release(str(version)).version for version in releases))
        if self.exists():
            if not replace:
                raise LabError("lab %r exists (%s); `python -m lab down --name %s` first" % (self.name, self.dir, self.name))
            self.down()
        started = time.monotonic()
        _raise_inotify_limit()
        artifacts = Builder(log=self.log).ensure(versions)
        self.seconds = {"build": round(time.monotonic() - started, 2)}
        ensure_dir(self.dir)
        for script in ("supervise", "proxy"):
            shutil.copy(config.LAB_DIR / "scripts" / script, self.dir / script)
            os.chmod(self.dir / script, 0o755)
        self.images = _describe_images(artifacts)
        self.hosts = []
        for version in versions:
            lower = artifacts.host_roots[version]
            for index in range(1, count + 1):
                self.hosts.append(Host(
                    name="%s-%s-%d" % (self.name, images.release(version).name, index), version=version, lab_dir=self.dir, lower=lower,
                    images_dir=artifacts.images_dir, ssh_key=artifacts.ssh_key, machine_id=uuid.uuid4().hex,
                    systemd_version=host_info(lower)["systemd_version"], log=self.log))
        self.save()  # before booting: `down` of a killed run finds the hosts
        booting = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
                for future in [pool.submit(host.boot, timeout) for host in self.hosts]:
                    future.result()
        except BaseException:
            if os.environ.get("NSPAWN_LAB_KEEP_FAILED"):
                self.log("NSPAWN_LAB_KEEP_FAILED is set: lab %s left running for inspection" % self.name)
            else:
                self.down()
            raise
        self.seconds["boot"] = round(time.monotonic() - booting, 2)
        self.seconds["up"] = round(time.monotonic() - started, 2)
        self._write_inventory()
        self._write_ssh_config()
        self.save()
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.down()

    # -- down ----------------------------------------------------------------------------

    def down(self):
        """Stop every host and remove all the lab left: processes, cgroup folders, mounts,
        files. Works on a lab started by another process, and on the debris of a killed one."""
        if not self.hosts and self.json_path.exists():
            try:
                self.hosts = Lab.load(self.name, self.dir.parent, self.log).hosts
            except LabError:
                pass
        if self.hosts:
            with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
                for host, (how, seconds) in zip(self.hosts, pool.map(_timed_poweroff, self.hosts)):
                    self.log("%s: %s (%.1f s)" % (host.name, how, seconds))
            for host in self.hosts:
                host.destroy()
        # Debris a killed `up` may have left before lab.json named it.
        pattern = re.compile(r"^%s%s-debian[a-z0-9-]*-\d+$" % (re.escape(cgroups.FOLDER_PREFIX), re.escape(self.name)))
        _remove_cgroups([name for name in cgroups.lab_folder_names() if pattern.match(name)])
        unmount_under(self.dir)
        remove_tree(self.dir)
        self.hosts = []

    @classmethod
    def down_all(cls, state_root=None, log=print, prefixes=None, run_id=None):
        """Down every lab under the state root (also those of killed runs), then sweep lab
        cgroup folders whose processes run from this state root but that no lab names any
        more. Labs of other state roots are left alone. Returns the labs' names.

        With `prefixes`, only the labs whose names start with one of them are downed (the
        labs a test run starts, e.g. "pytest-" and "molecule-"), and nothing else is swept:
        a developer's own labs keep running. With `run_id`, only the labs started with that
        NSPAWN_LAB_RUN_ID (and nothing else is swept either): a second `make test` on the
        same machine keeps its labs."""
        root = Path(state_root or config.state_root())
        names = cls.names(root)
        if prefixes:
            names = [name for name in names if name.startswith(tuple(prefixes))]
        if run_id:
            names = [name for name in names if _run_id_of(name, root) == run_id]
        for name in names:
            log("down %s" % name)
            cls(name, root, log).down()
        if prefixes or run_id:
            return names
        marker = "--directory=%s/" % root
        _remove_cgroups([name for name in cgroups.lab_folder_names() if cgroups.any_process_mentions(name, marker)])
        if root.is_dir():
            unmount_under(root)
            for leftover in root.iterdir():  # not a lab: a name `Lab` would refuse
                remove_tree(leftover)
            root.rmdir()
        return names

    # -- description ---------------------------------------------------------------------

    def describe(self):
        """The lab as data (the content of lab.json)."""
        return {
            "name": self.name, "state_dir": str(self.dir), "inventory": str(self.inventory), "ssh_config": str(self.ssh_config),
            "proxy": str(self.dir / "proxy"), "images_dir": self.images.get("directory", ""), "images": self.images,
            "seconds": self.seconds, "run_id": self.run_id, "hosts": [host.to_json() for host in self.hosts],
        }

    def save(self):
        """Write lab.json atomically (also called after a host rebooted: new PIDs)."""
        with self._save_lock:
            temporary = self.json_path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.describe(), indent=2) + "\n")
            os.replace(temporary, self.json_path)

    def reboot(self, host_key, timeout=180):
        """Reboot one host (see Host.reboot) and record its new PIDs; return seconds."""
        seconds = self.host(host_key).reboot(timeout)
        self.save()
        return seconds

    def _write_inventory(self):
        lines = ["# nspawn.nixos test lab %r, written by `python -m lab up`, removed by `down`." % self.name]
        for release in images.RELEASES.values():
            lines += ["", "[%s]" % release.group]
            for host in self.hosts:
                if host.version == release.version:
                    ssh_common_args = " ".join(
                        "-o %s" % option for option in ('ProxyCommand="%s %s"' % (host.proxy, host.name), "StrictHostKeyChecking=no",
                                                        "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"))
                    lines.append("%s ansible_host=%s ansible_ssh_common_args='%s' lab_release=%s lab_systemd_version=%d lab_importd=%s"
                                 % (host.name, host.name, ssh_common_args, host.version, host.systemd_version, host.importd))
        lines += ["", "[sidecar_hosts:children]"] + [release.group for release in images.RELEASES.values()]
        lines += ["", "[sidecar_hosts:vars]",
                  "ansible_user=root",
                  "ansible_ssh_private_key_file=%s" % self.hosts[0].ssh_key,
                  "ansible_python_interpreter=/usr/bin/python3"]
        files = self.images["files"]
        xz, gz = images.FIXTURE_IMAGE_FILES
        lines += ["lab_image_url=%s" % files[xz]["url"], "lab_image_sha256=%s" % files[xz]["sha256"],
                  "lab_image_gz_url=%s" % files[gz]["url"], "lab_image_gz_sha256=%s" % files[gz]["sha256"],
                  "lab_image_sha256sums_url=%s" % self.images["sha256sums_url"], "lab_image_base_url=%s" % IMAGE_SERVER]
        self.inventory.write_text("\n".join(lines) + "\n")
        # The implicit localhost (controller-side tasks) must use this Python, not whatever
        # interpreter discovery finds on the controller (pyenv shims, ...).
        host_vars = ensure_dir(self.dir / "host_vars")
        (host_vars / "localhost.yml").write_text("ansible_connection: local\nansible_python_interpreter: %s\n" % sys.executable)

    def _write_ssh_config(self):
        text = "# nspawn.nixos test lab %r: ssh -F %s HOST\n" % (self.name, self.ssh_config)
        for host in self.hosts:
            text += ("\nHost %s\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n  ProxyCommand %s %s\n"
                     "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
                     % (host.name, host.ssh_key, host.proxy, host.name))
        self.ssh_config.write_text(text)


def _describe_images(artifacts):
    """URLs (as seen inside every host) and sha256s of the fixture images."""
    files = {name: {"url": IMAGE_SERVER + name, "sha256": digest} for name, digest in sorted(artifacts.image_sha256().items())}
    return {
        "directory": str(artifacts.images_dir), "base_url": IMAGE_SERVER, "files": files,
        "sha256sums_url": IMAGE_SERVER + "SHA256SUMS",
        "fault_urls": {mode: IMAGE_SERVER + mode + "/" for mode in ("cut", "noetag", "corrupt")},
    }


def _run_id_of(name, root):
    """The NSPAWN_LAB_RUN_ID a lab was started with ("" when none, or unreadable)."""
    try:
        return json.loads((Path(root) / name / "lab.json").read_text()).get("run_id", "")
    except (OSError, ValueError):
        return ""


def _timed_poweroff(host):
    started = time.monotonic()
    return host.poweroff(), time.monotonic() - started


def _remove_cgroups(names):
    for name in names:
        cgroups.kill(name)
        cgroups.remove(name)


# Every lab host's systemd, and every machine inside it, takes inotify instances of the
# machine's root user; the kernel default (128) runs out with a few labs at once and a
# host then fails to boot with "Too many open files".
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_MIN_INSTANCES = 1024


def _raise_inotify_limit():
    try:
        if int(INOTIFY_INSTANCES.read_text()) < INOTIFY_MIN_INSTANCES:
            INOTIFY_INSTANCES.write_text("%d\n" % INOTIFY_MIN_INSTANCES)
    except (OSError, ValueError):
        pass  # a read-only /proc/sys: boot anyway, as before
