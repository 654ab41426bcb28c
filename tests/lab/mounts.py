"""Mounts and file trees: overlay roots, unmounting, and deleting trees safely."""

import os
import re
import subprocess
import time
from pathlib import Path

from .config import clean_env


class MountError(RuntimeError):
    """A mount or unmount that did not happen."""


def mount_points():
    """(mount point, file system type) of every mount in this mount namespace."""
    entries = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-")
            entries.append((_unescape(fields[4]), fields[separator + 1]))
    return entries


def fs_type(path):
    """File system type of the mount at exactly `path`, or None."""
    found = None
    for point, kind in mount_points():
        if point == str(path):
            found = kind  # the last one stacked on the path is the visible one
    return found


def mounts_under(path):
    """Mount points at or below `path`, deepest first (the order to unmount them in)."""
    prefix = str(path).rstrip("/") + "/"
    points = {point for point, _kind in mount_points() if point == str(path) or point.startswith(prefix)}
    return sorted(points, key=lambda point: point.count("/"), reverse=True)


def mount_overlay(lower, upper, work, target):
    """Mount an overlay of `lower` (read-only, shared) and `upper` (this host's) at `target`."""
    options = "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, upper, work)
    result = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
                            capture_output=True, text=True, env=clean_env(), check=False)
    if result.returncode != 0:
        raise MountError("overlay mount of %s failed: %s" % (target, result.stderr.strip()))


def unmount_under(path, timeout=10):
    """Unmount everything at or below `path`; lazily if a mount stays busy."""
    deadline = time.monotonic() + timeout
    while mounts_under(path):
        for point in mounts_under(path):
            subprocess.run(["umount", point], capture_output=True, env=clean_env(), check=False)
        if mounts_under(path) and time.monotonic() > deadline:
            # Busy for good (a process we do not know holds it): detach it so that the tree
            # can go; the kernel frees the mount when its last user is gone.
            for point in mounts_under(path):
                subprocess.run(["umount", "-l", point], capture_output=True, env=clean_env(), check=False)
            left = mounts_under(path)
            if left:
                raise MountError("still mounted: %s" % ", ".join(left))
        elif mounts_under(path):
            time.sleep(0.2)


def remove_tree(path):
    """Delete a directory tree, never crossing into a mount (unmount first)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    unmount_under(path)
    # rm --one-file-system: if a mount appeared meanwhile, its content survives.
    argv = ["rm", "-rf", "--one-file-system", "--", str(path)]
    if subprocess.run(argv, capture_output=True, env=clean_env(), check=False).returncode != 0:
        # importd marks its hidden ".tar-<url>" images immutable (chattr +i) where the
        # file system allows it, e.g. in a host's /var/lib/machines on a copied root.
        subprocess.run(["chattr", "-R", "-f", "-i", "-a", "--", str(path)], capture_output=True, env=clean_env(), check=False)
        result = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), check=False)
        if result.returncode != 0:
            raise OSError("cannot remove %s: %s" % (path, result.stderr.strip()[-2000:]))


def copy_tree(source, target):
    """Copy the content of directory `source` into `target` (created if missing) with
    owners, modes, links, ACLs and xattrs (cp -a)."""
    subprocess.run(["cp", "-a", "--no-target-directory", "--", str(source), str(target)], env=clean_env(), check=True)


def _unescape(field):
    """Undo mountinfo's octal escapes (\\040 is a space)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def ensure_dir(path, mode=0o755):
    """mkdir -p with a mode."""
    os.makedirs(path, mode=mode, exist_ok=True)
    return Path(path)
