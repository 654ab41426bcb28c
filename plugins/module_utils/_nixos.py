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
import os
import posixpath
import re
import stat

from ansible_collections.nspawn.nixos.plugins.module_utils._machinectl import Machinectl
from ansible_collections.nspawn.nixos.plugins.module_utils._nix import (
    NixEditError, NixValueError, ensure_import, import_path, nix_error, parse_check_argv, remove_import, render_module,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._rootfs import MachineDir, UnsafePath
from ansible_collections.nspawn.nixos.plugins.module_utils._runner import CommandError, ModuleFailure
from ansible_collections.nspawn.nixos.plugins.module_utils._util import Backend, text_diff
from ansible_collections.nspawn.nixos.plugins.module_utils._validate import (
    ValidationError, check_machine_name, check_text, check_timeout,
)

NIXOS_DIR = "/etc/nixos"
CONFIG_FILE = "configuration.nix"
FLAKE_FILE = "flake.nix"
# The upstream nspawn-nixos image generates a flake whose nixosConfigurations attribute is `nixos`.
FLAKE_REF = "/etc/nixos#nixos"
# NixOS keeps its tools here; the PATH of a `systemd-run -M` unit may not include it.
SW_BIN = "/run/current-system/sw/bin"
# nixos-rebuild runs further tools (nix, nix-env, systemd-run) and needs NIX_PATH without a flake:
# a login shell sets up the same environment as `machinectl shell` would.
LOGIN_SHELL = ("/bin/sh", "-lc")
PROFILES_DIR = "/nix/var/nix/profiles"
# Fails in every nspawn container for images built with boot.isContainer (it cannot mount /dev,
# /dev/pts, /dev/shm and /run there) and is harmless.
HARMLESS_SNIPPETS = frozenset(("specialfs",))
SWITCH_EXIT_CODES = {
    2: "an activation script snippet failed",
    3: "reloading systemd or creating tmpfiles failed",
    4: "units failed",
}
MASK = "********"
NEW_FILE_MODE = 0o644
SECRET_FILE_MODE = 0o600

_DEST_NAME_RE = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*\.nix$")
_SNIPPET_RE = re.compile(r"Activation script snippet '([^']*)' failed")
_GENERATION_RE = re.compile(r"^system-(\d+)-link$")
_HASH_RE = re.compile(r"^(\$[^\s:]+|![^\s:]*|\*)$")


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


def check_password_hash(value):
    if not _HASH_RE.match(value or ""):
        raise ValidationError("root_password_hash: must be a crypt(3) hash such as the output of `mkpasswd -m sha-512` "
                              "(it starts with $; or ! to lock the account), without blanks or ':'; a plain password is refused")
    return value


def failed_snippets(*texts):
    """The activation script snippets that switch-to-configuration reported as failed, in order, once each."""
    found = []
    for text in texts:
        for name in _SNIPPET_RE.findall(text or ""):
            if name not in found:
                found.append(name)
    return found


def generation_number(link):
    """42 from the target 'system-42-link' of the system profile; None for a store path or no link."""
    match = _GENERATION_RE.match(link or "")
    return int(match.group(1)) if match else None


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


class FileChange(object):
    """One file of /etc/nixos: its text (and stat) before, its text after (None: the file goes)."""

    def __init__(self, name, before, info, after, secret=False):
        self.name, self.before, self.info, self.after, self.secret = name, before, info, after, secret
        self.path = "%s/%s" % (NIXOS_DIR, name)

    @property
    def changed(self):
        return self.before != self.after


class NixosBackend(Backend):
    """nixos_config: a NixOS module file in the machine's /etc/nixos, its import, the root password, the rebuild."""

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
        text, imperative_password = self._new_text(present, secret)
        self.lock(name)

        mc = Machinectl(self.runner)
        mc.require_tools()
        image = mc.show_image(name)
        self.result.update(root=None, files=[], backup_files=[], rebuild=None, validation=None, generation=None)
        if image is None and not present:
            return  # no machine, no configuration
        if image is None:
            raise ModuleFailure("name: there is no image named %s; create it with nspawn.nixos.nspawn_image" % name)
        if image.get("Type") not in ("directory", "subvolume") or not image.get("Path"):
            raise ModuleFailure("image %s is of type %s: nixos_config writes into directory images only"
                                % (name, image.get("Type") or "unknown"))
        root = image["Path"]
        running = mc.is_running(name)
        self.result["root"] = root
        with MachineDir(root, NIXOS_DIR, name) as nixos:
            if not nixos.exists and not present:
                return
            if not nixos.exists:
                raise ModuleFailure("machine %s has no %s (looked in %s): is it a NixOS image?" % (name, NIXOS_DIR, nixos.host_path))
            changes = [change for change in self._plan_files(nixos, dest_name, text, present, secret) if change.changed]
            password = imperative_password and self._password_differs(root, name, secret)
            if changes and image.get("ReadOnly") == "yes":
                raise ModuleFailure("image %s is read-only; make it writable first (machinectl read-only %s false)" % (name, name))
            rebuild = params["rebuild"] if changes and params["rebuild"] != "none" else None
            if rebuild and not running:
                raise ValidationError("rebuild: machine %s is not running, so nixos-rebuild cannot run in it: start it first "
                                      "(nspawn.nixos.nspawn_machine) or set rebuild: none" % name)
            if password and not running:
                raise ValidationError("root_password_hash: machine %s is not running; the password is set with chpasswd inside "
                                      "it: start it first (nspawn.nixos.nspawn_machine)" % name)
            self._validate(mc, name, running, [change for change in changes if change.after is not None])
            if any(change.before is None for change in changes) and nixos.lstat(".git") and nixos.lstat(FLAKE_FILE):
                self.module.warn("%s of machine %s is a git repository used by a flake: nixos-rebuild only sees files that "
                                 "git tracks, so add %s with git add" % (NIXOS_DIR, name, params["dest"]))
            steps = self._steps(nixos, changes, password, rebuild)
            self._report(nixos, changes, password, steps)
            if self.module.check_mode:
                self.actions.extend(step[0] for step in steps)
            else:
                self._apply(mc, name, nixos, root, changes, steps)
        self.result["generation"] = generation_number(self._profile_link(root, name))

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
                rc, out, err = mc.run_input(argv, change.after, check=False)
            else:
                full = mc.inside_argv(name, argv)
                rc, out, err = mc.run_inside(name, argv, change.after, check=False)
            error = nix_error(rc, err, path=change.path)
            if error is None:
                continue
            if error["line"] is None:
                raise CommandError("Checking %s with nix-instantiate failed (rc=%s), nothing was written: %s"
                                   % (change.path, rc, (err or out).strip()[-2000:]), full, rc, out, err)
            # The file of the module's own text is the user's input: name the option it came from.
            option = ("content: " if self.module.params["content"] is not None else "settings: ") if change.path == self.module.params["dest"] else ""
            raise CommandError("%s%s is not valid Nix, nothing was written: %s" % (option, change.path, error["summary"]), full, rc, out, err)

    def _steps(self, nixos, changes, password, rebuild):
        steps = []
        for change in changes:
            if self.module.params["backup"] and change.before is not None:
                steps.append(("backup", change, nixos.backup_name(change.name)))
            if change.name == CONFIG_FILE and self.module.params["dest"] != change.path:
                steps.append(("add_import" if self.module.params["state"] == "present" else "remove_import", change))
            else:
                steps.append(("remove" if change.after is None else "write", change))
        if rebuild:
            steps.append(("rebuild", rebuild))
        if password:
            steps.append(("set_root_password",))
        return steps

    def _report(self, nixos, changes, password, steps):
        secret = self.module.params["root_password_hash"]
        self.result.update(
            changed=bool(steps),
            files=[change.path for change in changes],
            backup_files=[nixos.inside(step[2]) for step in steps if step[0] == "backup"],
        )
        if not self.module._diff:
            return
        diffs = []
        for change in changes:
            before, after = change.before or "", change.after or ""
            if secret:
                before, after = before.replace(secret, MASK), after.replace(secret, MASK)
            diffs.append(text_diff(os.path.join(nixos.host_path, change.name), before, after))
        if password:
            header = "root password of machine %s" % self.module.params["name"]
            diffs.append(dict(before_header=header, after_header=header, before="(another hash)\n", after="(the given hash)\n"))
        self.result["diff"] = diffs

    # -- acting ------------------------------------------------------------------

    def _apply(self, mc, name, nixos, root, changes, steps):
        dir_info = os.fstat(nixos.fd)
        for step in steps:
            self.actions.append(step[0])
            if step[0] == "backup":
                nixos.backup(step[1].name, step[2], step[1].before, step[1].info)
            elif step[0] == "remove":
                nixos.remove(step[1].name)
            elif step[0] in ("write", "add_import", "remove_import"):
                self._write(nixos, step[1], dir_info)
            elif step[0] == "rebuild":
                self._rebuild(mc, name, nixos, root, changes, step[1])
            else:
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

    def _restore(self, nixos, changes):
        self.actions.append("restore")
        for change in reversed(changes):
            if change.before is None:
                nixos.remove(change.name)
            else:
                nixos.write(change.name, change.before, stat.S_IMODE(change.info.st_mode), change.info.st_uid, change.info.st_gid)

    @staticmethod
    def rebuild_command(action, flake=False, rollback=False):
        words = [SW_BIN + "/nixos-rebuild", action]
        if flake:
            words += ["--flake", FLAKE_REF]
        if rollback:
            words.append("--rollback")
        return list(LOGIN_SHELL) + ["exec " + " ".join(words)]

    def _profile_link(self, root, name):
        try:
            with MachineDir(root, PROFILES_DIR, name) as profiles:
                return profiles.readlink("system")
        except UnsafePath:
            return None

    def _rebuild(self, mc, name, nixos, root, changes, action):
        flake = nixos.lstat(FLAKE_FILE) is not None
        properties = ["RuntimeMaxSec=%d" % self.module.params["timeout"]]
        command = self.rebuild_command(action, flake)
        link_before = self._profile_link(root, name)
        rc, out, err = mc.run_inside(name, command, check=False, properties=properties)
        snippets = failed_snippets(out, err)
        info = dict(action=action, flake=flake, rc=rc, failed_snippets=snippets, warnings=[], rolled_back=False,
                    stdout=out, stderr=err)
        self.result["rebuild"] = info
        if rc == 0:
            return
        if rc == 2 and snippets and set(snippets) <= HARMLESS_SNIPPETS:
            warning = ("nixos-rebuild %s: the activation snippet specialfs failed, as it does in every systemd-nspawn container "
                       "(it cannot mount /dev, /dev/pts, /dev/shm and /run there); the new configuration is active" % action)
            info["warnings"].append(warning)
            self.module.warn(warning)
            return
        meaning = SWITCH_EXIT_CODES.get(rc, "")
        if rc == 2 and snippets:
            meaning += ": " + ", ".join(snippets)
        msg = "nixos-rebuild %s in machine %s failed (rc=%s%s): %s" % (
            action, name, rc, ", " + meaning if meaning else "", (err or out or "").strip()[-2000:])
        if self.module.params["rollback"]:
            msg += "\n" + self._rollback(mc, name, root, action, link_before, properties, info)
        self._restore(nixos, changes)
        msg += "\nThe previous files in %s were put back, so that the next run tries again." % NIXOS_DIR
        error = CommandError(msg, mc.inside_argv(name, command, properties), rc, out, err)
        error.details["rebuild"] = info
        raise error

    def _rollback(self, mc, name, root, action, link_before, properties, info):
        if action == "test":
            return ("Not rolled back: nixos-rebuild test does not change the boot default, so restarting the machine returns "
                    "to the previous configuration.")
        if self._profile_link(root, name) == link_before:
            return "Not rolled back: the failed rebuild made no new generation, so the previous one is still current."
        self.actions.append("rollback")
        command = self.rebuild_command(action, rollback=True)
        rc, out, err = mc.run_inside(name, command, check=False, properties=properties)
        snippets = failed_snippets(out, err)
        if rc == 0 or (rc == 2 and snippets and set(snippets) <= HARMLESS_SNIPPETS):
            info["rolled_back"] = True
            return "Rolled back to the previous generation (nixos-rebuild %s --rollback)." % action
        return "The rollback failed too (nixos-rebuild %s --rollback, rc=%s): %s" % (action, rc, (err or out or "").strip()[-1000:])
