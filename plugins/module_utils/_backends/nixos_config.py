# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nixos_config backend: NixOS configuration in a machine's /etc/nixos, written from the host.

Plan, validate, then act: every file is rendered and parsed (nix-instantiate --parse) before
the first byte is written; a rebuild that fails puts the previous files back (after an
optional rollback), so that the next run sees the difference and tries again.

Private module: not a public API.
"""

from __future__ import annotations

import copy
import functools
import os
import posixpath
import re
import stat
import time

from ansible_collections.nspawn.nixos.plugins.module_utils._core._backend import Backend
from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import CommandError, ModuleFailure, ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._core._files import read_json, remove_file, write_json_atomic
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import TREE_TYPES, Machinectl
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._render import (
    NixEditError, NixValueError, nix_error, parse_check_argv, render_module,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._imports import ensure_import, import_path, remove_import
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._system import (
    FLAKE_REF, GC_SCRIPT, SHELL, SW_BIN, SYSTEMS_SCRIPT, deletable_generations, deleted_generations,
    failure_reasons, judge_rebuild, parse_gc, parse_systems, rebuild_command,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._nix._nixpkgs import (
    IMAGE, LOCK_FILE, LOCK_SCRIPT, PROFILES_DIR, REGISTRY_PATH, UNMANAGED, check_reference, generation_number, is_branch,
    lock_arguments, locked_input, parse_lock, registry_pin, satisfies, summary, system_profile,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._core._plan import Step, apply
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._records import nixos_pending_path, nixpkgs_record_path
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._rootfs import MachineDir, UnsafePath, read_in_root
from ansible_collections.nspawn.nixos.plugins.module_utils._core._runner import output_tail
from ansible_collections.nspawn.nixos.plugins.module_utils._core._validate import (
    check_machine_name, check_password_hash, check_text, check_timeout,
)

NIXOS_DIR = "/etc/nixos"
CONFIG_FILE = "configuration.nix"
FLAKE_FILE = "flake.nix"
MASK = "********"
NEW_FILE_MODE = 0o644
SECRET_FILE_MODE = 0o600

_DEST_NAME_RE = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*\.nix$")


def check_dest(dest, do_import):
    """The file name of dest, which must be a .nix file directly in /etc/nixos."""
    check_text(dest, "dest")
    if not dest.startswith("/") or posixpath.normpath(dest) != dest or posixpath.dirname(dest) != NIXOS_DIR:
        raise ValidationError("dest: must be a file directly in %s, such as %s/ansible.nix, got %r" % (NIXOS_DIR, NIXOS_DIR, dest))
    name = posixpath.basename(dest)
    if not _DEST_NAME_RE.match(name):
        raise ValidationError("dest: the file name must end in .nix and consist of A-Z, a-z, 0-9 and . _ + - "
                              "(not starting with a dot), so that it can be imported as ./NAME, got %r" % name)
    if name == FLAKE_FILE:
        raise ValidationError("dest: %s is the flake, not a NixOS module" % dest)
    if name == CONFIG_FILE and do_import:
        raise ValidationError("import: configuration.nix cannot import itself; set import: false to manage the whole file")
    return name


def shadow_hash(text, user="root"):
    """The password field of user in the text of /etc/shadow, None when the user has no line."""
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) > 1 and fields[0] == user:
            return fields[1]
    return None


def mutable_users(settings):
    users = settings.get("users") if isinstance(settings, dict) else None
    return not (isinstance(users, dict) and users.get("mutableUsers") is False)


def with_root_password(settings, password_hash):
    """A copy of settings with users.users.root.hashedPassword (for users.mutableUsers = false)."""
    settings = copy.deepcopy(settings)
    node, where = settings, "settings"
    for key in ("users", "users", "root"):
        where += "." + key
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValidationError("root_password_hash: %s must be a dict to receive hashedPassword" % where)
    if "hashedPassword" in node:
        raise ValidationError("root_password_hash: settings.users.users.root.hashedPassword is set too; give only one of them")
    node["hashedPassword"] = password_hash
    return settings


def check_runs_from_image(name, root, machine):
    """Refuse to change a machine whose running system is not its image's tree.

    An ephemeral machine (systemd.nspawn(5) [Exec] Ephemeral=, systemd-nspawn --ephemeral) runs from a snapshot of
    its image, removed when it stops; machined reports that snapshot as the machine's RootDirectory. Files written
    into the image would not reach the running system, and nixos-rebuild in it would see neither them nor the lock.
    """
    running_root = machine.get("RootDirectory")
    if not running_root or os.path.realpath(running_root) == os.path.realpath(root):
        return
    raise ModuleFailure(
        "machine %s runs from %s, not from its image %s (an ephemeral machine: systemd.nspawn(5) Ephemeral=yes or "
        "systemd-nspawn --ephemeral): files written into the image would not reach the running system and nixos-rebuild "
        "in it would not see them; nothing was written. Configure it while it runs from its image: stop it, start it "
        "without Ephemeral=, apply the configuration, then make it ephemeral again"
        % (name, running_root, root))


class FileChange:
    """One file of /etc/nixos: its text (and stat) before, its text after (None: the file goes)."""

    def __init__(self, name, before, info, after, secret=False):
        self.name, self.before, self.info, self.after, self.secret = name, before, info, after, secret
        self.path = "%s/%s" % (NIXOS_DIR, name)
        # flake.lock only: the record of what nixpkgs was locked from, before and after (_plan_lock).
        self.record_before: dict | None = None
        self.record: dict | None = None

    @property
    def changed(self):
        return self.before != self.after


class NixosBackend(Backend):
    """nixos_config: a NixOS module file in the machine's /etc/nixos, its import, the root password, the rebuild."""

    DIFF_LIST = True  # one entry per file, and one for the root password

    def run(self):
        try:
            self._run()
        except ModuleFailure as exc:
            secret = self.module.params["root_password_hash"]
            if secret:  # a parser error quotes the source line; chpasswd might echo its input
                exc.msg = exc.msg.replace(secret, MASK)
                for key in ("stdout", "stderr"):
                    if isinstance(exc.details.get(key), str):
                        exc.details[key] = exc.details[key].replace(secret, MASK)
            raise

    def _run(self):
        params = self.module.params
        name = check_machine_name(params["name"])
        check_timeout(params["timeout"])
        present = params["state"] == "present"
        dest_name = check_dest(params["dest"], params["import"])
        secret = params["root_password_hash"]
        if secret is not None:
            check_password_hash(secret)
            if not present:
                raise ValidationError("root_password_hash: only applies with state=present")
        reference = check_reference(params["nixpkgs"])
        keep = params["keep_generations"]
        if keep is not None and keep < 1:
            raise ValidationError("keep_generations: must be 1 or more (the current generation is always kept), got %r" % keep)
        text, imperative_password = self._new_text(present, secret)
        self.lock(name)

        mc = Machinectl(self.runner)
        mc.require_tools()
        image = mc.show_image(name)
        self.result.update(root=None, files=[], backup_files=[], rebuild=None, resumed=False, validation=None, generation=None, system=None,
                           nixpkgs=None, garbage=None)
        if image is None and not present:
            return  # no machine, no configuration
        if image is None:
            raise ModuleFailure("name: there is no image named %s; create it with nspawn.nixos.nspawn_image" % name)
        if image.get("Type") not in TREE_TYPES or not image.get("Path"):
            raise ModuleFailure("image %s is of type %s: nixos_config writes into directory images only"
                                % (name, image.get("Type") or "unknown"))
        root = image["Path"]
        machine = mc.show(name)
        running = bool(machine) and machine.get("State") != "closing"
        self.result["root"] = root
        with MachineDir(root, NIXOS_DIR, name) as nixos:
            if not nixos.exists and not present:
                return
            if not nixos.exists:
                raise ModuleFailure("machine %s has no %s (looked in %s): is it a NixOS image?" % (name, NIXOS_DIR, nixos.host_path))
            changes = [change for change in self._plan_files(nixos, dest_name, text, present, secret) if change.changed]
            if present:
                lock_change = self._plan_lock(mc, name, root, nixos, reference, running)
                if lock_change is not None and lock_change.changed:
                    changes.append(lock_change)
            password = imperative_password and self._password_differs(root, name, secret)
            if changes and image.get("ReadOnly") == "yes":
                raise ModuleFailure("image %s is read-only; make it writable first (machinectl read-only %s false)" % (name, name))
            # A change an earlier run wrote but whose rebuild was cut off (its pending record is still there): the files
            # are as wanted, the running system is not; rebuild, so that it is.
            pending = read_json(nixos_pending_path(name))
            self._pending_before = bool(pending)
            self.result["resumed"] = bool(pending) and params["rebuild"] != "none"
            rebuild = params["rebuild"] if (changes or pending) and params["rebuild"] != "none" else None
            if (changes or password or rebuild) and running:
                check_runs_from_image(name, root, machine)
            if rebuild and not running:
                raise ValidationError("rebuild: machine %s is not running, so nixos-rebuild cannot run in it%s: start it first "
                                      "(nspawn.nixos.nspawn_machine) or set rebuild: none"
                                      % (name, "" if changes else " (an earlier rebuild of the same files was cut off)"))
            if password and not running:
                raise ValidationError("root_password_hash: machine %s is not running; the password is set with chpasswd inside "
                                      "it: start it first (nspawn.nixos.nspawn_machine)" % name)
            self._validate(mc, name, running, [change for change in changes if change.after is not None and change.name != LOCK_FILE])
            if any(change.before is None for change in changes) and nixos.lstat(".git") and nixos.lstat(FLAKE_FILE):
                self.module.warn("%s of machine %s is a git repository used by a flake: nixos-rebuild only sees files that "
                                 "git tracks, so add %s with git add" % (NIXOS_DIR, name, params["dest"]))
            generations = self._deletable_generations(root, name, keep, rebuild) if present and keep else []
            if generations and not running:
                raise ValidationError("keep_generations: machine %s is not running; old generations are deleted with nix-env "
                                      "inside it: start it first (nspawn.nixos.nspawn_machine)" % name)
            steps, backups = self._steps(mc, name, nixos, root, changes, password, rebuild)
            if generations:
                steps.append(self._step("collect_garbage", self._collect_garbage, mc, name, keep, generations))
                # What check mode predicts; the real run fills in what nix reports.
                self.result["garbage"] = dict(keep=keep, deleted_generations=generations, store_paths_deleted=None, freed=None)
            self._report(nixos, changes, password, steps, backups)
            apply(self, steps)
        dummy, self.result["generation"], self.result["system"] = system_profile(root, name)

    # -- planning ----------------------------------------------------------------

    def _new_text(self, present, secret):
        """(text of dest or None when no file is managed, whether chpasswd sets the password)."""
        params = self.module.params
        settings, content = params["settings"], params["content"]
        if not present:
            return None, False
        if settings is not None:
            mutable = mutable_users(settings)
            if secret is not None and not mutable:
                settings = with_root_password(settings, secret)
            try:
                return render_module(settings), secret is not None and mutable
            except NixValueError as exc:
                raise ValidationError(str(exc).replace(secret or "\0", MASK))
        if content is not None:
            if "\0" in content:
                raise ValidationError("content: must not contain a NUL character")
            if not content.strip():
                raise ValidationError("content: is empty; a Nix file needs an expression, such as { }")
            return content, secret is not None
        if secret is None:
            raise ValidationError("settings: give settings or content (or only root_password_hash) with state=present")
        return None, True

    def _plan_files(self, nixos, dest_name, text, present, secret):
        """The files in the order they are written: the module file before the import of it, the import gone before the file."""
        do_import = self.module.params["import"]
        before, info = nixos.read(dest_name)
        has_secret = bool(secret) and text is not None and secret in text
        dest = FileChange(dest_name, before, info, text if present and text is not None else (before if present else None),
                          has_secret)
        if not do_import or (present and text is None):
            return [dest]
        config_before, config_info = nixos.read(CONFIG_FILE)
        if config_before is None:
            if not present:
                return [dest]
            raise ModuleFailure("import: %s does not exist in machine %s; create it, or set import: false and import %s "
                                "yourself" % (nixos.inside(CONFIG_FILE), self.module.params["name"], dest.path))
        path = import_path(nixos.inside(CONFIG_FILE), dest.path)
        try:
            config_after = ensure_import(config_before, path) if present else remove_import(config_before, path)
        except NixEditError as exc:
            raise ValidationError("import: %s" % exc)
        config = FileChange(CONFIG_FILE, config_before, config_info, config_after)
        return [dest, config] if present else [config, dest]

    def _password_differs(self, root, name, secret):
        with MachineDir(root, "/etc", name) as etc:
            shadow, dummy = etc.read("shadow")
        return shadow_hash(shadow) != secret

    def _validate(self, mc, name, running, changes):
        """Parse every new text with nix-instantiate --parse, on the host if it has nix, else in the machine."""
        if not changes:
            return
        host = self.module.get_bin_path("nix-instantiate")
        if not host and not running:
            self.result["validation"] = "skipped"
            self.module.warn("the new Nix files were not checked: the host has no nix-instantiate and machine %s is not "
                             "running; nixos-rebuild reports any syntax error when it runs" % name)
            return
        self.result["validation"] = "host" if host else "machine"
        argv = parse_check_argv("-", nix_instantiate=host or SW_BIN + "/nix-instantiate")
        for change in changes:
            if host:
                full = argv
                rc, out, err = self.runner.run(argv, check=False, data=change.after)
            else:
                full = mc.inside_argv(name, argv)
                rc, out, err = mc.run_inside(name, argv, change.after, check=False)
            error = nix_error(rc, err, path=change.path)
            if error is None:
                continue
            if error["line"] is None:
                raise CommandError("Checking %s with nix-instantiate failed (rc=%s), nothing was written: %s"
                                   % (change.path, rc, output_tail(out, err)), full, rc, out, err)
            # The file of the module's own text is the user's input: name the option it came from.
            option = ("content: " if self.module.params["content"] is not None else "settings: ") if change.path == self.module.params["dest"] else ""
            raise CommandError("%s%s is not valid Nix, nothing was written: %s" % (option, change.path, error["summary"]), full, rc, out, err)

    @staticmethod
    def _step(action, function, *args):
        """A Step of `action` that calls function(*args)."""
        return Step(action, functools.partial(function, *args))

    def _steps(self, mc, name, nixos, root, changes, password, rebuild):
        """The plan (Steps), and the names of the backups it makes."""
        steps, backups = [], []
        dir_info = os.fstat(nixos.fd)
        for change in changes:
            if self.module.params["backup"] and change.before is not None:
                backup = nixos.backup_name(change.name)
                backups.append(backup)
                steps.append(self._step("backup", nixos.backup, change.name, backup, change.before, change.info))
            if change.name == LOCK_FILE:
                steps.append(self._step("lock", self._write_lock, name, nixos, change, dir_info))
            elif change.name == CONFIG_FILE and self.module.params["dest"] != change.path:
                action = "add_import" if self.module.params["state"] == "present" else "remove_import"
                steps.append(self._step(action, self._write, nixos, change, dir_info))
            elif change.after is None:
                steps.append(self._step("remove", nixos.remove, change.name))
            else:
                steps.append(self._step("write", self._write, nixos, change, dir_info))
        if rebuild:
            if changes:  # recorded before the first byte of the change, removed by _rebuild once it is active or undone
                steps.insert(0, Step((), functools.partial(self._record_pending, name, changes, rebuild)))
            steps.append(self._step("rebuild", self._rebuild, mc, name, nixos, root, changes, rebuild))
        if password:
            steps.append(self._step("set_root_password", self._set_root_password, mc, name))
        return steps, backups

    def _report(self, nixos, changes, password, steps, backups):
        secret = self.module.params["root_password_hash"]
        self.result.update(
            changed=bool(steps),
            files=[change.path for change in changes],
            backup_files=[nixos.inside(backup) for backup in backups],
        )
        self.diff.plan()
        for change in changes:
            before, after = change.before or "", change.after or ""
            if secret:
                before, after = before.replace(secret, MASK), after.replace(secret, MASK)
            self.diff.text(os.path.join(nixos.host_path, change.name), before, after)
        if password:
            self.diff.text("root password of machine %s" % self.module.params["name"], "(another hash)\n", "(the given hash)\n")

    # -- acting ------------------------------------------------------------------

    def _write_lock(self, name, nixos, change, dir_info):
        self._write(nixos, change, dir_info)
        if change.record != change.record_before:
            self._record_lock(name, change.record)

    def _set_root_password(self, mc, name):
        mc.run_inside(name, [SW_BIN + "/chpasswd", "-e"], "root:%s\n" % self.module.params["root_password_hash"],
                      msg="Setting the root password of machine %s with chpasswd failed" % name)

    @staticmethod
    def _write(nixos, change, dir_info):
        if change.info is not None:  # keeps its owner and mode
            uid, gid, mode = change.info.st_uid, change.info.st_gid, stat.S_IMODE(change.info.st_mode)
        else:  # owned like /etc/nixos: the container's root, also when its user IDs are shifted (-U)
            uid, gid, mode = dir_info.st_uid, dir_info.st_gid, NEW_FILE_MODE
        if change.secret:
            mode &= SECRET_FILE_MODE
        nixos.write(change.name, change.after, mode, uid, gid)

    def _record_pending(self, name, changes, action):
        """The pending record of a change: which files, and the rebuild that activates them."""
        write_json_atomic(self.module, nixos_pending_path(name), dict(
            name=name, files=[change.path for change in changes], rebuild=action,
            dest=self.module.params["dest"], time=int(time.time())))

    def _record_lock(self, name, record):
        """Write (or with None remove) the record of what nixpkgs was locked from."""
        if record is None:
            remove_file(nixpkgs_record_path(name))
        else:
            write_json_atomic(self.module, nixpkgs_record_path(name), record)

    def _restore(self, nixos, changes):
        self.report("restore")
        for change in reversed(changes):
            if change.name == LOCK_FILE and change.record != change.record_before:
                self._record_lock(self.module.params["name"], change.record_before)
            if change.before is None:
                nixos.remove(change.name)
            else:
                nixos.write(change.name, change.before, stat.S_IMODE(change.info.st_mode), change.info.st_uid, change.info.st_gid)

    def _timeout_properties(self):
        """systemd-run properties of the long commands in the machine: the service manager stops them after timeout."""
        return ["RuntimeMaxSec=%d" % self.module.params["timeout"]]

    def _systems(self, mc, name, properties):
        """{"current": active system, "profile": the profile's system}, read in the machine; {} when that fails."""
        rc, out, dummy = mc.run_inside(name, list(SHELL) + [SYSTEMS_SCRIPT], check=False, properties=properties)
        return parse_systems(rc, out)

    def _rebuild(self, mc, name, nixos, root, changes, action):
        flake = nixos.lstat(FLAKE_FILE) is not None
        properties = self._timeout_properties()
        command = rebuild_command(action, flake)
        link_before = system_profile(root, name)[0]
        rc, out, err = mc.run_inside(name, command, check=False, properties=properties)
        ok, evidence = judge_rebuild(action, rc, out, err, self._systems(mc, name, properties) if rc != 0 else None)
        info = dict(action=action, flake=flake, rc=rc, warnings=[], rolled_back=False, stdout=out, stderr=err, **evidence)
        self.result["rebuild"] = info
        if ok:
            remove_file(nixos_pending_path(name))
        if ok and rc == 0:
            return
        if ok:
            warning = ("nixos-rebuild %s in machine %s exited %s, but only the activation snippet specialfs failed, as it does in "
                       "every systemd-nspawn container of an image built with boot.isContainer (it cannot mount /dev, /dev/pts, "
                       "/dev/shm and /run there); the new configuration is active" % (action, name, rc))
            info["warnings"].append(warning)
            self.module.warn(warning)
            return
        reasons = "".join("; " + reason for reason in failure_reasons(action, evidence))
        msg = f"nixos-rebuild {action} in machine {name} failed (rc={rc}{reasons}): {output_tail(out, err)}"
        if self.module.params["rollback"]:
            msg += "\n" + self._rollback(mc, name, root, action, flake, link_before, properties, info)
        if changes:
            self._restore(nixos, changes)
            if not self._pending_before:  # the files are the ones the running system was built from again
                remove_file(nixos_pending_path(name))
            msg += "\nThe previous files in %s were put back, so that the next run tries again." % NIXOS_DIR
        else:  # a rebuild resumed after an earlier one was cut off: nothing of this run to put back
            msg += "\nThe files in %s were left as they are and the change stays pending, so that the next run tries the " \
                   "rebuild again." % NIXOS_DIR
        error = CommandError(msg, mc.inside_argv(name, command, properties), rc, out, err)
        error.details["rebuild"] = info
        raise error

    def _rollback(self, mc, name, root, action, flake, link_before, properties, info):
        if action == "test":
            return ("Not rolled back: nixos-rebuild test does not change the boot default, so restarting the machine returns "
                    "to the previous configuration.")
        if system_profile(root, name)[0] == link_before:
            return "Not rolled back: the failed rebuild made no new generation, so the previous one is still current."
        self.report("rollback")
        # With the flake's attribute: without it, nixos-rebuild re-executes itself through the attribute named after
        # the hostname, which a changed networking.hostName has just made a different one.
        command = rebuild_command(action, flake=flake, rollback=True)
        rc, out, err = mc.run_inside(name, command, check=False, properties=properties)
        ok, dummy = judge_rebuild(action, rc, out, err, self._systems(mc, name, properties) if rc != 0 else None)
        if ok:
            info["rolled_back"] = True
            return "Rolled back to the previous generation (nixos-rebuild %s --rollback%s)." % (
                action, " --flake " + FLAKE_REF if flake else "")
        return "The rollback failed too (nixos-rebuild %s --rollback, rc=%s): %s" % (action, rc, (err or out or "").strip()[-1000:])

    # -- nixpkgs, generations --------------------------------------------------------

    def _plan_lock(self, mc, name, root, nixos, reference, running):
        """The change of /etc/nixos/flake.lock that locks nixpkgs as asked, or None."""
        before, info = nixos.read(LOCK_FILE)
        try:
            node = locked_input(parse_lock(before))
        except ValueError:
            node = None
        self.result["nixpkgs"] = summary(node)
        if reference == UNMANAGED or nixos.lstat(FLAKE_FILE) is None:
            return None
        pin = None
        if reference == IMAGE:
            try:
                pin = registry_pin(read_in_root(root, REGISTRY_PATH, name)[0])
            except (UnsafePath, OSError):
                pin = None
        record = read_json(nixpkgs_record_path(name))
        if satisfies(node, reference, pin, record) and not self.module.params["nixpkgs_update"]:
            return None
        if not running:
            self.module.warn("nixpkgs: machine %s is not running, so flake.lock was not %s (nix runs inside the machine); "
                             "the next run with the machine running does it" % (name, "checked" if node else "written"))
            return None
        after = self._compute_lock(mc, name, reference)
        locked = locked_input(parse_lock(after))
        self.result["nixpkgs"] = summary(locked)
        change = FileChange(LOCK_FILE, before, info, after)
        # What locked a branch, for the next run (its lock cannot say); the record before, to put back with the lock.
        change.record_before = record
        change.record = record
        if is_branch(reference):
            change.record = dict(reference=reference, narHash=locked["locked"].get("narHash"), rev=locked["locked"].get("rev"))
        return change

    def _compute_lock(self, mc, name, reference):
        """The text of flake.lock with nixpkgs locked to reference, from the real `nix flake lock` in the machine."""
        argv = list(SHELL) + [LOCK_SCRIPT, "nspawn-nixos-lock"] + lock_arguments(reference)
        properties = self._timeout_properties()
        rc, out, err = mc.run_inside(name, argv, check=False, properties=properties)
        text = out if rc == 0 else None
        try:
            node = locked_input(parse_lock(text)) if text else None
        except ValueError:
            node = None
        if node is None:
            what = ("the nixpkgs that /etc/nix/registry.json of machine %s pins (the image's own; if the image has no such pin, "
                    "name a revision in nixpkgs)" % name) if reference == IMAGE else reference
            raise CommandError("nixpkgs: locking nixpkgs to %s failed (rc=%s), nothing was written: %s"
                               % (what, rc, output_tail(out, err)), mc.inside_argv(name, argv, properties), rc, out, err)
        return text

    def _generations(self, root, name):
        """(generation numbers of the system profile ascending, the current one or None), read from the host."""
        try:
            with MachineDir(root, PROFILES_DIR, name) as profiles:
                if not profiles.exists:
                    return [], None
                names = os.listdir(profiles.fd)
                current = generation_number(profiles.readlink("system"))
        except UnsafePath:
            return [], None
        numbers = sorted(generation_number(entry) for entry in names if generation_number(entry) is not None)
        return numbers, current

    def _deletable_generations(self, root, name, keep, rebuild):
        """The generations `nix-env --delete-generations +keep` would delete after this run's rebuild."""
        numbers, current = self._generations(root, name)
        return deletable_generations(numbers, current, keep, rebuild)

    def _collect_garbage(self, mc, name, keep, predicted):
        properties = self._timeout_properties()
        argv = list(SHELL) + [GC_SCRIPT, "nspawn-nixos-gc", str(keep)]
        dummy, out, err = mc.run_inside(name, argv, properties=properties,
                                        msg="nixos_config: deleting old generations or collecting garbage in machine %s failed" % name)
        deleted, freed = parse_gc(out + "\n" + err)
        found = deleted_generations(out + "\n" + err)
        self.result["garbage"] = dict(keep=keep, deleted_generations=found or predicted, store_paths_deleted=deleted, freed=freed)
