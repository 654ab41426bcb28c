# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Files inside a machine's tree, read and written from the host without following symlinks.

A container's root user owns its tree, so anything in it may be a symlink planted to make
a process on the host read or write the host's own files (``/etc/nixos -> /etc``; with the
host's path resolution that is the host's /etc). MachineDir opens a directory of the tree
one component at a time from the tree's root with O_NOFOLLOW, and refuses any symlink on
the way; every later operation is relative to that open directory (openat, renameat,
unlinkat), so swapping a component for a symlink after the check changes nothing.

Writes are atomic: a temporary file in the same directory (O_EXCL, O_NOFOLLOW), fsync,
rename over the target. module.atomic_move is not used here because it works on path
names, which are resolved again (following symlinks) at every call.

Private module: not a public API.
"""

from __future__ import annotations

import errno
import os
import stat
import time
import uuid
from typing import Any

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import ModuleFailure

MAX_READ_BYTES = 16 << 20
MAX_SYMLINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# open(2) O_PATH (Linux): a descriptor of the entry itself, for fstat, that opens no FIFO or device; elsewhere a plain
# read-only open (with O_NONBLOCK, so that a FIFO does not block).
_HAS_O_PATH = hasattr(os, "O_PATH")
_PATH = os.O_PATH if _HAS_O_PATH else os.O_RDONLY | os.O_NONBLOCK


class UnsafePath(ModuleFailure):
    """A symlink or a special file where the module expects a directory or a regular file."""


class MachineDir:
    """A directory of a machine's tree (``path`` as seen inside the machine, e.g. /etc/nixos).

    Use as a context manager; ``exists`` says whether the directory is there.
    """

    def __init__(self, root, path, machine=None):
        self.root = root
        self.path = f"/{path.strip('/')}"
        self.machine = machine or os.path.basename(root.rstrip("/"))
        self.host_path = os.path.join(root, path.strip("/"))
        self.fd: Any = None  # the opened directory's descriptor, None when it is not open

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def exists(self):
        return self.fd is not None

    def inside(self, name):
        return f"{self.path.rstrip('/')}/{name}"

    def _refuse(self, where, problem):
        raise UnsafePath("%s in machine %s %s; the module does not follow symlinks or open special files in a machine's "
                         "tree, which a container could point at the host's own files" % (where, self.machine, problem))

    def open(self):
        """Open the directory; False when a component does not exist. Refuses symlinks and non-directories."""
        fd: Any = os.open(self.root, _DIR_FLAGS)  # None once it is self.fd
        walked = ""
        try:
            for part in [part for part in self.path.split("/") if part]:
                walked += f"/{part}"
                try:
                    child = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        return False
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        info = os.stat(part, dir_fd=fd, follow_symlinks=False)
                        if stat.S_ISLNK(info.st_mode):
                            self._refuse(walked, f"is a symlink (to {os.readlink(part, dir_fd=fd)})")
                        self._refuse(walked, "is not a directory")
                    raise
                os.close(fd)
                fd = child
            self.fd, fd = fd, None
            return True
        finally:
            if fd is not None:
                os.close(fd)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def lstat(self, name):
        """os.lstat of an entry, None when it does not exist (or the directory does not)."""
        if self.fd is None:
            return None
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def readlink(self, name):
        """The target of the symlink name, None when there is no such symlink."""
        if self.fd is None:
            return None
        try:
            return os.readlink(name, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINVAL):
                return None
            raise

    def read(self, name, limit=MAX_READ_BYTES):
        """(text, os.stat_result) of the regular file name, (None, None) when it does not exist.

        A FIFO, socket or device node is refused without being opened for reading: opening a FIFO blocks until a
        writer comes (or, with O_NONBLOCK, counts as its reader and lets a waiting writer go on), and opening a device
        runs its driver. The entry is first opened with O_PATH|O_NOFOLLOW (open(2): no read access, no driver, a
        symlink itself), judged by fstat, and only a regular file is then opened for reading, through that same
        descriptor (/proc/self/fd/N), so that nothing swapped in meanwhile is opened instead.
        """
        if self.fd is None:
            return None, None
        try:
            path_fd = os.open(name, _PATH | os.O_CLOEXEC | _NOFOLLOW, dir_fd=self.fd)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # without O_PATH (not Linux), open(2) refuses a symlink with ELOOP
                self._refuse(self.inside(name), f"is a symlink (to {self.readlink(name)})")
            raise
        try:
            info = os.fstat(path_fd)
            if stat.S_ISLNK(info.st_mode):
                self._refuse(self.inside(name), f"is a symlink (to {self.readlink(name)})")
            if not stat.S_ISREG(info.st_mode):
                self._refuse(self.inside(name), "is not a regular file")
            fd = self._reopen(path_fd, name) if _HAS_O_PATH else path_fd
        except BaseException:
            os.close(path_fd)
            raise
        if fd != path_fd:
            os.close(path_fd)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise ModuleFailure("%s in machine %s is larger than %d bytes" % (self.inside(name), self.machine, limit))
        return data.decode("utf-8", "surrogateescape"), info

    def _reopen(self, path_fd, name):
        """The regular file behind an O_PATH descriptor, opened for reading (the same inode, whatever its name is now)."""
        try:
            return os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:  # no /proc: open the name again, and make sure it is still the file judged above
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | _NOFOLLOW, dir_fd=self.fd)
            before, after = os.fstat(path_fd), os.fstat(fd)
            if (before.st_dev, before.st_ino) != (after.st_dev, after.st_ino):
                os.close(fd)
                self._refuse(self.inside(name), "was replaced while it was read")
            return fd

    def write(self, name, text, mode, uid=None, gid=None):
        """Replace name by a file holding text, atomically (temporary file, fsync, rename)."""
        tmp: Any = f".{name}.{uuid.uuid4().hex[:12]}.tmp"  # None once renamed
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | _NOFOLLOW, 0o600, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode("utf-8", "surrogateescape"))
                if uid is not None and gid is not None:
                    try:
                        os.fchown(handle.fileno(), uid, gid)
                    except PermissionError:  # not root: the file stays ours
                        pass
                os.fchmod(handle.fileno(), mode)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            tmp = None
            os.fsync(self.fd)
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp, dir_fd=self.fd)
                except FileNotFoundError:
                    pass

    def remove(self, name):
        """Remove the entry name (a symlink itself, never its target); True when there was one."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    @staticmethod
    def backup_name(name):
        """The name of a backup copy of name, as module.backup_local() names them."""
        return "%s.%s.%s~" % (name, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S", time.localtime()))

    def backup(self, name, backup, text, info):
        """Write a copy of name (its text, mode and owner from info) as backup."""
        self.write(backup, text, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)


def read_in_root(root, path, machine=None, limit=MAX_READ_BYTES):
    """(text, os.stat_result) of the regular file at path inside the tree at root, (None, None) when missing.

    Symlinks on the way are followed as if root were '/' (NixOS links /etc/os-release and
    /etc/nix/registry.json to /etc/static/..., and /etc/static into /nix/store): each one is
    read with readlink and its target resolved again from the tree's root or from its own
    directory, never by the host's path resolution. Every directory is opened with the
    no-follow walk of MachineDir and the file itself with O_NOFOLLOW, so a link swapped in
    after the check is refused rather than followed. None also for a symlink loop.
    """
    pending = [part for part in path.split("/") if part]
    resolved: list = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        with MachineDir(root, f"/{'/'.join(resolved)}", machine) as directory:
            if not directory.exists:
                return None, None
            info = directory.lstat(part)
            if info is None:
                return None, None
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    return None, None
                target = directory.readlink(part)
                if target.startswith("/"):
                    resolved = []
                pending = [piece for piece in target.split("/") if piece] + pending
                continue
            if pending:
                if not stat.S_ISDIR(info.st_mode):
                    return None, None
                resolved.append(part)
                continue
            return directory.read(part, limit)
    return None, None
