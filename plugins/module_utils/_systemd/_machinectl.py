# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""machinectl, importctl and systemd-run: version probe, show, list, actions, waiting.

The command lines of the modules that talk to machined, importd or a machine's service
manager are built here, so that no module repeats them; commands inside a machine go through
inside_argv() and unit_argv() (byte for byte), which the connection plugin uses as well. Two
places run on the host without this module and build their own: the role's probe
(roles/sidecar/vars/main.yml) and the cleanup of importd's cache images (tasks/absent.yml).
Private module: not a public API.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time

from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import CommandError, ModuleFailure, ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._core._runner import output_tail

# systemd 256 moved image transfers to importctl; machinectl pull-tar/... still
# work there but only redirect to it.
IMPORTCTL_MIN_VERSION = 256
IMPORTD_BINARIES = ("/usr/lib/systemd/systemd-importd", "/lib/systemd/systemd-importd")
# importd downloads with libcurl. Up to systemd 257 it is linked in (a dependency of the
# package); from 258 on importd loads it at run time, and Debian's systemd-container only
# suggests libcurl4t64: without it `pull-tar` fails with "Failed to allocate puller: Operation
# not supported" (seen on the lab's debian-sid host, systemd 262).
LIBCURL_DLOPEN_VERSION = 258
LIBCURL_GLOBS = ("/usr/lib/*-linux-gnu/libcurl.so.4*", "/usr/lib64/libcurl.so.4*", "/usr/lib/libcurl.so.4*",
                 "/lib/*-linux-gnu/libcurl.so.4*", "/lib64/libcurl.so.4*")
POLL_INTERVAL = 0.2
# Right after a machine stopped, `machinectl remove` can fail with EBUSY for a moment (measured: up
# to a second or two on a loaded host, more when several labs share two CPUs): try for REMOVE_BUSY_SECONDS.
REMOVE_BUSY_SECONDS = 30
TERMINATE_GRACE = 10
# `machinectl show` of a machine that is being torn down can fail with EBADR for a moment.
VANISHING = "Invalid request descriptor"
VANISHING_ATTEMPTS = 10
# How long a failed start waits for the unit to finish stopping before its journal is read.
UNIT_SETTLE_SECONDS = 5
WAIT_INTERVAL = 0.5
# Tried in order inside the machine: NixOS keeps systemctl under /run/current-system/sw/bin,
# which the PATH of a systemd-run unit may not include.
SYSTEMCTL_PATHS = ("/run/current-system/sw/bin/systemctl", "/usr/bin/systemctl", "/bin/systemctl")
SYSTEM_UP_STATES = ("running", "degraded")
# The image types (machinectl show-image Type=) whose image is an OS tree the host can read and write.
TREE_TYPES = ("directory", "subvolume")

# Indirection so that unit tests can run the polling loops on a fake clock.
_monotonic = time.monotonic
_sleep = time.sleep


class WaitTimeout(ModuleFailure):
    """A polling loop ran out of time; the message says what it waited for."""


def parse_systemd_version(text):
    """'systemd 252 (252.39-1~deb12u2)' -> 252."""
    match = re.match(r"\s*systemd\s+(\d+)", text or "")
    if not match:
        raise ValueError(f"cannot read the systemd version from {(text or '').splitlines()[:1]!r}")
    return int(match.group(1))


def parse_properties(text):
    """key=value lines of 'machinectl show'/'show-image' -> dict (the value may contain '=')."""
    props = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            props[key] = value
    return props


def _json_rows(text):
    """The JSON array in the output of 'list -o json', or None when the output is a table."""
    stripped = (text or "").strip()
    for candidate in [stripped] + [line.strip() for line in stripped.splitlines()]:
        if candidate.startswith("["):
            try:
                rows = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(rows, list):
                return rows
    return None


def _dash_to_none(value):
    return None if value in (None, "", "-", "n/a") else value


def parse_machine_list(text):
    """Output of 'machinectl list --no-legend -o json' (or the plain table) -> list of dicts."""
    rows = _json_rows(text)
    keys = ("name", "class", "service", "os", "version", "addresses")
    if rows is not None:
        return [
            dict((key, _dash_to_none(row.get("machine" if key == "name" else key))) for key in keys)
            for row in rows if isinstance(row, dict)
        ]
    machines = []
    for line in (text or "").splitlines():
        fields = line.split(None, 5)
        if not fields or line.startswith(" "):  # continuation lines hold further addresses
            continue
        fields += [None] * (6 - len(fields))
        machines.append(dict((key, _dash_to_none(value)) for key, value in zip(keys, fields)))
    return machines


def parse_image_list(text):
    """Output of 'machinectl list-images --no-legend -o json' (or the plain table) -> list of dicts."""
    rows = _json_rows(text)
    if rows is not None:
        return [
            dict(name=row.get("name"), type=row.get("type"), read_only=bool(row.get("ro")),
                 usage=row.get("usage"), created=row.get("created"), modified=row.get("modified"))
            for row in rows if isinstance(row, dict)
        ]
    images = []
    for line in (text or "").splitlines():
        fields = line.split(None, 4)
        if len(fields) < 3:
            continue
        images.append(dict(name=fields[0], type=fields[1], read_only=fields[2] == "yes",
                           usage=_dash_to_none(fields[3]) if len(fields) > 3 else None,
                           created=None, modified=None))
    return images


def parse_transfer_list(text):
    """The rows of `machinectl list-transfers` / `importctl list-transfers` as dicts of the ID, TYPE,
    LOCAL and REMOTE columns (lower-case keys); [] for "No transfers." or an empty table."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((index for index, line in enumerate(lines) if line.split()[:1] == ["ID"]), None)
    if header is None:
        return []
    columns = [column.lower() for column in lines[header].split()]
    rows = []
    for line in lines[header + 1:]:
        fields = line.split(None, len(columns) - 1)
        if len(fields) != len(columns) or not fields[0].isdigit():
            break  # the legend ("1 transfers listed.")
        row = dict(zip(columns, fields))
        rows.append(dict(id=int(row["id"]), type=row.get("type"), local=row.get("local"), remote=row.get("remote")))
    return rows


class Machinectl:
    """One host's machined and importd, through their command line tools."""

    def __init__(self, runner):
        self.runner = runner
        self.module = runner.module
        self._version = None
        self._importctl = None

    # -- probes -------------------------------------------------------------

    def require_tools(self):
        if not self.module.get_bin_path("machinectl"):
            raise ModuleFailure("machinectl was not found: install systemd-container (same package name on Debian, Ubuntu, Fedora and Rocky)")

    @property
    def version(self):
        if self._version is None:
            argv = ["systemctl", "--version"]
            rc, out, err = self.runner.run(argv, msg="Cannot read the systemd version")
            try:
                self._version = parse_systemd_version(out)
            except ValueError as exc:
                raise CommandError(str(exc), argv, rc, out, err)
        return self._version

    def probe_version(self):
        return self.version

    @property
    def uses_importctl(self):
        """Transfers go through importctl on systemd >= 256 when it is installed."""
        if self._importctl is None:
            self._importctl = self.version >= IMPORTCTL_MIN_VERSION and bool(self.module.get_bin_path("importctl"))
        return self._importctl

    @staticmethod
    def importd_available():
        return any(os.path.exists(path) for path in IMPORTD_BINARIES)

    def importd_can_download(self):
        """Whether importd can download: before 258 libcurl is linked in (the package depends on
        it, under whatever name, e.g. Debian 11's libcurl3-gnutls); from 258 on it must be found
        at run time (see LIBCURL_GLOBS). Needs probe_version() first."""
        if self.version < LIBCURL_DLOPEN_VERSION:
            return True
        return any(glob.glob(pattern) for pattern in LIBCURL_GLOBS)

    # -- queries ------------------------------------------------------------

    def _show(self, verb, name, missing):
        for attempt in range(VANISHING_ATTEMPTS):
            rc, out, err = self.runner.run(["machinectl", verb, name], check=False)
            if rc == 0:
                return parse_properties(out)
            if missing in err:
                return None
            if verb != "show" or VANISHING not in err:
                break
            # machined answers so while the machine it still lists is going away (measured on systemd 257 right
            # after a poweroff): ask again; a machine that stays in that state is as good as gone.
            if attempt == VANISHING_ATTEMPTS - 1:
                return None
            _sleep(POLL_INTERVAL)
        raise CommandError(f"machinectl {verb} {name} failed (rc={rc}): {err.strip()}",
                           ["machinectl", verb, name], rc, out, err)

    def show(self, name):
        """Properties of a registered (running) machine, None when it is not running."""
        return self._show("show", name, "No machine")

    def show_image(self, name):
        """Properties of an image, None when there is none by that name."""
        return self._show("show-image", name, "No image")

    def list_machines(self):
        dummy, out, dummy = self.runner.run(["machinectl", "list", "--no-legend", "--no-pager", "-o", "json"])
        return parse_machine_list(out)

    def list_images(self):
        dummy, out, dummy = self.runner.run(["machinectl", "list-images", "--no-legend", "--no-pager", "-o", "json"])
        return parse_image_list(out)

    def is_enabled(self, name):
        dummy, out, dummy = self.runner.run(["systemctl", "is-enabled", unit_name(name)], check=False)
        return (out.strip().splitlines() or [""])[0] in ("enabled", "enabled-runtime")

    def leader(self, name):
        """The machine's leader PID, None when the machine is not running."""
        props = self.show(name)
        return int_or_none(props.get("Leader")) if props else None

    def wait_unit_settled(self, name, timeout=UNIT_SETTLE_SECONDS):
        """After a failed start: wait (briefly) while the machine's unit is still starting or stopping, so
        that its journal holds how it ended (PID 1's "Main process exited", "Failed with result")."""
        deadline = _monotonic() + timeout
        while True:
            dummy, out, dummy_err = self.runner.run(["systemctl", "is-active", unit_name(name)], check=False)
            if out.strip() not in ("activating", "deactivating") or _monotonic() >= deadline:
                return out.strip()
            _sleep(POLL_INTERVAL)

    def journal_tail(self, name, lines=20):
        dummy, out, err = self.runner.run(
            ["journalctl", "-u", unit_name(name), "-n", str(lines), "--no-pager"], check=False)
        return (out or err).strip()

    # -- machine actions ----------------------------------------------------

    def act(self, verb, name):
        """start, poweroff, reboot, terminate, enable, disable, remove."""
        self.runner.run(["machinectl", verb, name], msg=f"machinectl {verb} {name} failed")

    def remove(self, name):
        """machinectl remove, tried again while the image is busy (a machine that just stopped)."""
        deadline = _monotonic() + REMOVE_BUSY_SECONDS
        while True:
            rc, out, err = self.runner.run(["machinectl", "remove", name], check=False)
            if rc == 0:
                return
            if "Device or resource busy" not in err or _monotonic() >= deadline:
                raise CommandError(f"machinectl remove {name} failed (rc={rc}): {output_tail(out, err)}",
                                   ["machinectl", "remove", name], rc, out, err)
            _sleep(POLL_INTERVAL)

    def wait_gone(self, name, timeout):
        """Poll until machined no longer knows the machine (poweroff returns before it finishes), then until its unit
        is no longer stopping: machined forgets the machine when its leader exits, about 3 s before
        systemd-nspawn@NAME.service has stopped (measured on systemd 252), and a start or remove in between fails."""
        deadline = _monotonic() + timeout
        while True:
            if self.show(name) is None:
                break
            if _monotonic() >= deadline:
                raise WaitTimeout(f"machine {name} was still running {timeout} seconds after it was told to stop")
            _sleep(POLL_INTERVAL)
        while True:
            dummy, out, dummy_err = self.runner.run(["systemctl", "is-active", unit_name(name)], check=False)
            if out.strip() not in ("deactivating", "active", "reloading"):
                return
            if _monotonic() >= deadline:
                raise WaitTimeout(f"the unit {unit_name(name)} of machine {name} was still {out.strip()} {timeout} "
                                  "seconds after the machine was told to stop")
            _sleep(POLL_INTERVAL)

    def wait_new_leader(self, name, old_leader, timeout):
        """Poll until the machine runs again with a leader other than old_leader (reboot returns early)."""
        deadline = _monotonic() + timeout
        while True:
            leader = self.leader(name)
            if leader and leader != old_leader:
                return leader
            if _monotonic() >= deadline:
                raise WaitTimeout(f"machine {name} did not come back from its reboot within {timeout} seconds (leader {old_leader})")
            _sleep(POLL_INTERVAL)

    def system_state_argv(self, name):
        script = "; ".join(f"[ -x {path} ] && exec {path} is-system-running" for path in SYSTEMCTL_PATHS) + "; exit 127"
        return self.inside_argv(name, ["/bin/sh", "-c", script])

    def wait_system_running(self, name, timeout):
        """Poll the container's own systemd until it reports running or degraded; returns that state."""
        deadline = _monotonic() + timeout
        last = ""
        while True:
            rc, out, err = self.runner.run(self.system_state_argv(name), check=False)
            state = (out.strip().splitlines() or [""])[-1].strip()
            if state in SYSTEM_UP_STATES:
                return state
            last = state or err.strip() or f"rc={rc}"
            # EHOSTDOWN: machined no longer knows the machine (its init died while booting): fail now, not at the timeout.
            if not state and "Host is down" in err and self.show(name) is None:
                raise ModuleFailure(f"machine {name} stopped before its system manager reached running or degraded (last: {last[-500:]})")
            if _monotonic() >= deadline:
                raise WaitTimeout("the system manager in machine %s did not reach running or degraded within %s seconds (last: %s)"
                                  % (name, timeout, last[-500:]))
            _sleep(WAIT_INTERVAL)

    # -- transfers ----------------------------------------------------------

    def _transfer_argv(self, verb, args):
        if self.uses_importctl:
            return ["importctl", verb, "--class=machine", "-q"] + args
        return ["machinectl", verb] + args

    def list_transfers(self):
        """importd's transfers: [{"id", "type", "local", "remote"}]. Read from the table (neither machinectl
        nor importctl prints list-transfers as JSON on every version: 252 ignores -o json, 257's importctl
        has no -o); the columns are found by their headers (252: ID PERCENT TYPE LOCAL REMOTE, 257: ID
        PROGRESS TYPE CLASS LOCAL REMOTE), and no value of them contains a blank."""
        tool = "importctl" if self.uses_importctl else "machinectl"
        dummy, out, dummy_err = self.runner.run([tool, "list-transfers", "--no-pager"], msg="Listing importd's transfers failed")
        return parse_transfer_list(out)

    def cancel_transfers(self, name, timeout):
        """Cancel importd's transfers into image `name` and wait until they ended (importd then has removed
        their temporary copies). Returns the ids cancelled."""
        tool = "importctl" if self.uses_importctl else "machinectl"
        deadline = _monotonic() + timeout
        cancelled: list = []
        while True:
            transfers = [transfer for transfer in self.list_transfers() if transfer["local"] == name]
            if not transfers:
                return cancelled
            for transfer in transfers:
                if transfer["id"] not in cancelled:
                    self.runner.run([tool, "cancel-transfer", str(transfer["id"])], check=False)
                    cancelled.append(transfer["id"])
            if _monotonic() >= deadline:
                raise WaitTimeout("importd's transfer %s into %s did not end within %s seconds of its cancellation"
                                  % (", ".join(str(transfer["id"]) for transfer in transfers), name, timeout))
            _sleep(POLL_INTERVAL)

    def pull_argv(self, kind, url, name, verify):
        return self._transfer_argv(f"pull-{kind}", [url, name, f"--verify={verify}"])

    def import_argv(self, kind, path, name):
        return self._transfer_argv(f"import-{kind}", [path, name])

    def export_argv(self, kind, name, path):
        return self._transfer_argv(f"export-{kind}", [name, path])

    # -- commands inside a running machine -----------------------------------

    def is_running(self, name):
        """True when machined knows the machine and it is not on its way down."""
        props = self.show(name)
        return bool(props) and props.get("State") != "closing"

    @staticmethod
    def inside_argv(name, argv, properties=(), user=None):
        """systemd-run in the machine, waiting for the command, with its stdin/stdout/stderr and exit status.

        argv arrives byte for byte (unit_argv). Never `machinectl shell`: it always exits 0 and merges the output
        through a PTY.
        """
        options = []
        for prop in properties:
            options += ["-p", prop]
        if user and user != "root":
            options += ["--uid", user]
        return ["systemd-run", "-M", name, "--wait", "--pipe", "--collect", "-q"] + options + unit_argv(argv)

    def run_inside(self, name, argv, data=None, check=True, msg=None, properties=()):
        """Run argv in the machine (inside_argv), with data on its stdin. Returns (rc, out, err)."""
        return self.runner.run(self.inside_argv(name, argv, properties), check=check, msg=msg, data=data)


def importd_cache_escape(url):
    """The URL as systemd-importd spells it in the name of its hidden cache image (.tar-URL, .raw-URL).

    systemd's pull_make_path() (src/import/pull-common.c) escapes the URL with xescape(url, FILENAME_ESCAPE): a
    backslash, / . # " and ', and every byte below 0x20 or from 0x7f on, become \\xNN (lower-case hex); the cleanup
    of sidecar_state=absent finds the copy by it.
    """
    return "".join("\\x%02x" % byte if byte < 0x20 or byte >= 0x7f or chr(byte) in "\\/.#\"'" else chr(byte)
                   for byte in url.encode("utf-8", "surrogateescape"))


def unit_argv(argv):
    """argv as the ExecStart= of a transient unit, so that the program receives it byte for byte.

    The service manager substitutes $NAME and ${NAME} in every argument of a command line and turns $$ into
    one $ (systemd.service(5), "Command lines"; also for the units systemd-run creates over D-Bus, where no
    specifier is expanded and no word is split). So every '$' is doubled, and nothing else needs care. Every
    command the collection hands to a machine's service manager passes through here.

    What D-Bus cannot carry is refused here, with a message, before anything runs (ValidationError): a NUL ends
    an argument, and sd-bus refuses a string with a character its unichar_is_valid() rejects (systemd's
    src/basic/utf8.c: surrogates and the Unicode noncharacters U+FDD0..U+FDEF and U+xFFFE, U+xFFFF), so systemd-run
    would fail with "Failed to create bus message: Invalid argument".
    """
    words = [str(word) for word in argv]
    refused = sorted({char for word in words for char in word if not _bus_char(char)})
    if refused:
        raise ValidationError("a command for the service manager of a machine holds %s, which systemd's D-Bus cannot "
                              "carry (NUL, surrogates and the Unicode noncharacters U+FDD0-U+FDEF, U+xFFFE, U+xFFFF); "
                              "nothing was run" % ", ".join("U+%04X" % ord(char) for char in refused))
    return [word.replace("$", "$$") for word in words]


def _bus_char(char):
    """Whether sd-bus carries char in a string (systemd's unichar_is_valid(), and no NUL)."""
    code = ord(char)
    return not (code == 0 or 0xD800 <= code <= 0xDFFF or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE)


def unit_name(name):
    return f"systemd-nspawn@{name}.service"


def int_or_none(value):
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value or None
