"""The cgroup folders of lab hosts.

Each host runs in its own folder, `nspawn-nixos-lab-<host>`, at the top of every mounted
cgroup hierarchy: on this kind of machine (PID 1 is not systemd, hybrid cgroups) that is
/sys/fs/cgroup/systemd (named v1) and /sys/fs/cgroup/unified (v2); on a pure cgroup2
machine it is /sys/fs/cgroup itself. systemd-nspawn --keep-unit then creates the
container's cgroups below that folder instead of at the root of the hierarchy, and every
process of the host, nested containers included, stays inside it: killing the folder's
processes is the fallback that always stops a host, and an empty folder is proof that it is
gone.
"""

import errno
import os
import signal
import time
from pathlib import Path

from .mounts import fs_type

CGROUP_ROOT = Path("/sys/fs/cgroup")
FOLDER_PREFIX = "nspawn-nixos-lab-"


def hierarchies():
    """The cgroup hierarchies to place a host in (the v1 controllers are not used)."""
    if fs_type(CGROUP_ROOT) == "cgroup2":
        return [CGROUP_ROOT]
    return [CGROUP_ROOT / name for name in ("systemd", "unified") if fs_type(CGROUP_ROOT / name) in ("cgroup", "cgroup2")]


def folder_name(host_name):
    """The name of a host's cgroup folder."""
    return FOLDER_PREFIX + host_name


def create(name):
    """Create the folder `name` in every hierarchy; return their paths."""
    folders = []
    for hierarchy in hierarchies():
        folder = hierarchy / name
        folder.mkdir(exist_ok=True)
        folders.append(folder)
    return folders


def existing(name):
    """The folders called `name` that exist."""
    return [hierarchy / name for hierarchy in hierarchies() if (hierarchy / name).is_dir()]


def lab_folder_names():
    """Names of every lab host folder on this machine, in any hierarchy."""
    names = set()
    for hierarchy in hierarchies():
        names.update(entry.name for entry in hierarchy.iterdir() if entry.is_dir() and entry.name.startswith(FOLDER_PREFIX))
    return sorted(names)


def pids(name):
    """PIDs of every process in the folders `name`, sub-folders included."""
    found = set()
    for folder in existing(name):
        for directory, _dirnames, _filenames in os.walk(folder):
            try:
                with open(os.path.join(directory, "cgroup.procs"), encoding="ascii") as procs:
                    found.update(int(line) for line in procs if line.strip())
            except FileNotFoundError:
                pass  # removed while walking
    return found


def any_process_mentions(name, text):
    """Whether the command line of a process in the folders `name` contains `text`."""
    for pid in pids(name):
        try:
            if text.encode() in Path("/proc/%d/cmdline" % pid).read_bytes():
                return True
        except OSError:
            pass
    return False


def kill(name, timeout=15):
    """SIGKILL every process in the folders `name` and wait until they are gone."""
    for folder in existing(name):
        kill_file = folder / "cgroup.kill"  # cgroup2, Linux >= 5.14: kills the whole subtree
        if kill_file.exists():
            try:
                kill_file.write_text("1")
            except OSError:
                pass
    deadline = time.monotonic() + timeout
    while True:
        left = pids(name)
        if not left:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("processes in cgroup %s survived SIGKILL: %s" % (name, sorted(left)))
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def remove(name, timeout=10):
    """Remove the (empty) folders `name` with all their sub-folders."""
    deadline = time.monotonic() + timeout
    for folder in existing(name):
        for directory, _dirnames, _filenames in sorted(os.walk(folder), key=lambda entry: entry[0].count("/"), reverse=True):
            while True:
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    # EBUSY for a moment after the last process exited.
                    if error.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
