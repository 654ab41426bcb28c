# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""nspawn_image's backend: the plan, the transfer (pull, or download, verify and import) with its pending record
and its recovery, export, and the record of an image's origin. The HTTP(S) client and SHA256SUMS are
_image/_download.py's.

Private module: not a public API.
"""

from __future__ import annotations

import datetime
import functools
import os
import posixpath
import shutil
import tempfile
import time
from urllib.parse import unquote, urlsplit, urlunsplit

from ansible_collections.nspawn.nixos.plugins.module_utils._core._backend import Backend
from ansible_collections.nspawn.nixos.plugins.module_utils._core._errors import CommandError, Interrupted, ModuleFailure, ValidationError
from ansible_collections.nspawn.nixos.plugins.module_utils._core._files import read_json, remove_file, write_json_atomic
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import Machinectl
from ansible_collections.nspawn.nixos.plugins.module_utils._core._plan import Step, apply
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._records import (
    nixpkgs_record_path, origin_drift, origin_path, pending_path, read_origin, remove_pending, requested_origin,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._core._redact import redact_text, redact_url, url_secret
from ansible_collections.nspawn.nixos.plugins.module_utils._core._signals import interruptible
from ansible_collections.nspawn.nixos.plugins.module_utils._core._validate import (
    check_machine_name, check_text, check_timeout, check_url, parse_checksum,
)
from ansible_collections.nspawn.nixos.plugins.module_utils._image._download import (
    DownloadError, download, expected_from_sums, export_kind, fetch_text, image_kind, url_basename, url_path,
)

IMAGE_STORE = "/var/lib/machines"
# The actions each step of the plan reports, in order (what check mode predicts).
STEP_ACTIONS = {
    "adopt": ("record_origin",),
    "pull": ("pull", "record_origin"),
    "download": ("download", "import", "record_origin"),
    "replace": ("download", "remove", "import", "record_origin"),
}
# Hidden, and not ending in .raw, so machined never takes a partial download for an image. The machine's
# name and an "@" (which no machine name contains) follow, so that the next run that holds the machine's
# lock can remove what a killed run left: temp_prefix(name).
TEMP_PREFIX = ".nspawn-nixos-"
# How long a cancelled importd transfer may take to end.
CANCEL_SECONDS = 60


def temp_prefix(name):
    return f"{TEMP_PREFIX}{name}@"


class ImageBackend(Backend):
    """nspawn_image: an image in /var/lib/machines from a URL, verified, with its origin recorded."""

    def run(self):
        params = self.module.params
        # First: a failure of any check below returns the module's arguments (invocation) too.
        for value in (params["url"], params["checksum"]):
            self._hide_secret(value)
        name = check_machine_name(params["name"])
        check_timeout(params["timeout"])
        url, export_to = params["url"], params["export_to"]
        if url:
            check_url(url)
        checksum = parse_checksum(params["checksum"])
        if checksum and params["method"] == "pull":  # also when the image is there already: the task is wrong either way
            raise ValidationError("checksum: needs method=download or auto; importd cannot verify a pinned checksum")
        if export_to:
            self._check_export_to(export_to, params["state"])
        self.lock(name)

        mc = Machinectl(self.runner)
        mc.require_tools()
        mc.probe_version()  # first, so that check mode runs the same reads as a real run
        image = mc.show_image(name)
        origin = read_origin(name)
        pending = read_json(pending_path(name))
        if pending is not None:
            image, origin = self._recover(mc, name, image, origin, pending)
        if params["state"] == "absent":
            self._absent(mc, name, image)
        else:
            self._present(mc, name, image, origin, url, checksum, export_to)

    def _hide_secret(self, value):
        """Mark the userinfo of a URL (user:password, or a token alone) no_log, and its password part on its own."""
        userinfo = url_secret(value)
        if userinfo:
            self.module.no_log_values.update(part for part in {userinfo, unquote(userinfo), *userinfo.split(":", 1)[1:]}
                                             if part)

    # -- state=absent --------------------------------------------------------

    def _absent(self, mc, name, image):
        plan = []
        if image is not None:
            if mc.show(name) is not None:
                raise ModuleFailure("state: absent: image %s is in use by the running machine %s: stop it first with nspawn.nixos.nspawn_machine "
                                    "(state: stopped)" % (name, name))
            plan.append("remove")
        if os.path.lexists(origin_path(name)) or os.path.lexists(nixpkgs_record_path(name)):
            plan.append("remove_origin")
        self.result.update(changed=bool(plan) or "recover" in self.actions, image=None, origin=None, drift={})
        self.diff.state(dict(state="absent" if image is None else "present"), dict(state="absent"))
        apply(self, [Step(step, functools.partial(self._remove, mc, name) if step == "remove" else
                          functools.partial(self._remove_records, name)) for step in plan])

    @staticmethod
    def _remove(mc, name):
        mc.remove(name)

    def _remove_records(self, name):
        """The records of where the image came from and which branch nixos_config locked its nixpkgs to."""
        remove_file(origin_path(name))
        remove_file(nixpkgs_record_path(name))

    # -- state=present -------------------------------------------------------

    def _present(self, mc, name, image, origin, url, checksum, export_to):
        params = self.module.params
        requested = requested_origin(url, checksum, params["checksum"])
        plan, drift, how = [], {}, None
        if image is None:
            if not url:
                raise ValidationError(f"url: required to create the image {name}, which does not exist")
            how = self._method(mc, url, checksum)
            plan.append(how)
        elif url:
            drift = origin_drift(origin, requested)
            if drift and params["adopt"]:
                if params["force"]:
                    raise ValidationError("adopt: keeps the image as it is; force replaces it: give only one of them")
                plan.append("adopt")
            elif drift and not params["force"]:
                if origin is None:
                    self.module.warn(
                        "image %s exists but has no origin record: it was not imported by nspawn_image, or an import was "
                        "interrupted before its origin was recorded; it was left as it is. If it is the image of this request "
                        "(e.g. you pinned its checksum when you imported it), set adopt: true to record this request as its "
                        "origin without touching the image; force: true replaces it (the container's data in it is lost)."
                        % name)
                else:
                    self.module.warn(
                        "image %s exists but its recorded origin differs from the request (%s); it was left as it is. "
                        "Set force: true to replace it (the container's data in it is lost), or adopt: true to record this "
                        "request as its origin and keep the image as it is." % (name, ", ".join(sorted(drift))))
            elif drift:
                if mc.show(name) is not None:
                    raise ModuleFailure("image %s differs from the request but the machine %s is running: stop it first with "
                                        "nspawn.nixos.nspawn_machine, then replace the image with force: true" % (name, name))
                how = self._method(mc, url, checksum)
                # A download is verified before the old image goes; importd can only pull over a removed one.
                plan.extend(["remove", "pull"] if how == "pull" else ["replace"])
        exported = bool(export_to) and os.path.exists(export_to)
        if export_to and (not exported or params["force"]):
            if not mc.importd_available():
                # machinectl/importctl export-* are importd's: fail before any step of the plan runs.
                raise ValidationError("export_to: exporting needs systemd-importd, which this host does not have "
                                      "(not installed, or not shipped by the distribution); nothing was changed")
            plan.append("export")
            if image is not None and mc.show(name) is not None:
                self.module.warn(f"machine {name} is running: the export of its image may be inconsistent")

        before = dict(state="absent" if image is None else "present",
                      url=(origin or {}).get("url"), sha256=(origin or {}).get("sha256"))
        after = dict(state="present", url=requested["url"], sha256=requested["sha256"]) if how or "adopt" in plan else dict(before)
        if export_to:
            before["exported"], after["exported"] = exported, True
        self.diff.state(before, after)
        self.result.update(changed=bool(plan) or "recover" in self.actions, drift=drift, origin=origin,
                           sha256=(origin or {}).get("sha256"))

        do = dict(
            adopt=lambda: self._record(name, url, requested, sha256=requested["sha256"], how="adopt", verify="no", report=False),
            remove=lambda: self._remove(mc, name),
            pull=lambda: self._acquire(mc, name, url, checksum, how, requested),
            download=lambda: self._acquire(mc, name, url, checksum, how, requested),
            replace=lambda: self._acquire(mc, name, url, checksum, how, requested, replace=True),
            export=lambda: self._export(mc, name, export_to),
        )
        # A transfer (pull, download, replace) is staged: it reports each stage as it reaches it.
        ran = apply(self, [Step(STEP_ACTIONS.get(step, step), do[step], staged=step in ("pull", "download", "replace"))
                           for step in plan])
        # adopt leaves the image as it is
        self.result["image"] = mc.show_image(name) if ran and set(plan) - {"adopt"} else image

    def _method(self, mc, url, checksum):
        """'pull' (importd downloads) or 'download' (this module downloads, verifies, then imports)."""
        params = self.module.params
        method, verify = params["method"], params["verify"]
        scheme = urlsplit(url).scheme.lower()
        importd = mc.importd_available()
        # importd without libcurl can import and export, but not download.
        importd_downloads = importd and mc.importd_can_download()
        if url_secret(url):
            # importd would keep the URL, credentials included, in the name of its hidden cache image
            # (.tar-<url>, systemd's pull_make_path()) and write it to the journal: such a URL is downloaded
            # by the module. A token alone (https://TOKEN@host/) is as secret as user:password@.
            if method == "pull":
                raise ValidationError("method: pull cannot be used with credentials in the URL (user@ or user:password@): "
                                      "systemd-importd keeps the URL in the name of its cache image and logs it; "
                                      "use method=auto or download")
            method = "download"
        if method == "pull":
            if checksum:
                raise ValidationError("checksum: needs method=download or auto; importd cannot verify a pinned checksum")
            if scheme == "file" or not importd:
                raise ValidationError("method: pull needs systemd-importd and an http(s) URL; use method=auto or download")
            if not importd_downloads:
                raise ValidationError("method: pull needs libcurl, which systemd-importd loads at run time and this host lacks "
                                      "(install it, e.g. Debian's libcurl4t64, or use method=auto or download)")
            return "pull"
        if method == "auto" and not checksum and scheme != "file" and importd_downloads:
            return "pull"
        if verify == "signature":
            raise ValidationError("verify: signature is only checked by importd (method=pull, no checksum); "
                                  "give checksum: sha256:... to verify a download")
        if not importd and image_kind(url) == "raw" and not url_path(url).lower().endswith((".raw", ".img")):
            raise ValidationError("url: systemd-importd is not installed, so only .tar images and uncompressed .raw images "
                                  "can be imported; this one needs importd to be unpacked")
        return "download"

    def _acquire(self, mc, name, url, checksum, how, requested, replace=False):
        """Fetch and import, with a pending record from before the transfer starts until the origin is recorded.
        Whatever stops it (a failure, SIGINT/SIGTERM/SIGHUP) ends in one of two states: the image complete with
        its origin recorded, or no trace of the transfer (importd's cancelled, partial files removed)."""
        verify = self.module.params["verify"]
        pending = dict(name=name, url=requested["url"], checksum=requested["checksum"], sha256=requested["sha256"],
                       method=how, verify=verify, kind=image_kind(url))
        if how == "download":
            pending["verify"] = "sha256" if checksum or verify == "checksum" else "no"
        try:
            with interruptible():
                if how == "pull":
                    self._pending(pending, "pull")
                    self.report("pull")
                    self._pull(mc, name, url, verify)
                    sha256 = None
                else:
                    sha256 = self._download_import(mc, name, url, checksum, replace, pending)
                    verify = pending["verify"]
                if not checksum and verify == "no":
                    self.module.warn("image %s from %s is not verified%s" % (
                        name, redact_url(url),
                        "; its sha256 is %s: pin it with checksum: sha256:%s" % (sha256, sha256) if sha256 else
                        ": give checksum: sha256:<hex> (or verify: checksum where the server publishes SHA256SUMS)"))
                self._record(name, url, requested, sha256 or requested["sha256"], how, verify)
                remove_pending(name)
        except ModuleFailure:
            # The command that failed has ended, and with it any transfer it started (machinectl and importctl
            # wait for their transfer): what is left are the module's own partial files and the pending record.
            self._remove_leftovers(name)
            raise
        except (IOError, OSError):
            # A file operation of the module (no command runs): after an import, the pending record stays for the
            # next run to record the image by (_recover), as the record could not be written now.
            stage = (read_json(pending_path(name)) or {}).get("stage")
            self._remove_leftovers(name, keep_pending=stage in ("pull", "import"))
            raise
        except BaseException as exc:  # Interrupted, or anything unforeseen: a transfer may still run
            outcome = self._settle(mc, name)
            if isinstance(exc, Interrupted):
                raise ModuleFailure("Interrupted by signal %d while fetching image %s: %s" % (exc.signum, name, outcome),
                                    signal=exc.signum)
            raise

    def _pending(self, pending, stage):
        """Record what is being fetched, and how far: "download" (an old image is still there), "pull" or
        "import" (an image of NAME that appears from here on is this transfer's)."""
        pending["stage"] = stage
        write_json_atomic(self.module, pending_path(pending["name"]), pending)

    def _settle(self, mc, name):
        """After a fetch stopped early: end the command and importd's transfer it started, then record the
        image if it is complete, or remove every trace of the transfer. Returns what it did, for the message."""
        self.runner.stop_child()
        try:
            recorded, dummy = self._conclude(mc, name, read_json(pending_path(name)))
        except (ModuleFailure, IOError, OSError) as exc:
            return f"cleaning up after it failed too: {getattr(exc, 'msg', exc)}"
        if recorded:
            return "the image was complete and its origin is recorded"
        return "nothing of the transfer was left (no partial image, no importd transfer, no pending record)"

    def _conclude(self, mc, name, pending):
        """The end of a transfer that stopped early (this run's, or a killed run's): once importd had it (stage pull
        or import), cancel importd's transfers into NAME and record the image if it is there (importd only puts a
        complete image in place); otherwise remove every trace. Returns (recorded, the image when it was read)."""
        image = None
        if pending is not None and pending.get("stage") in ("pull", "import"):
            self._cancel_transfers(mc, name)
            image = mc.show_image(name)
            if image is not None:
                self._record_pending(pending)
                return True, image
        self._remove_leftovers(name)
        return False, image

    def _cancel_transfers(self, mc, name):
        """Cancel importd's transfers into NAME (there is none without importd)."""
        if mc.importd_available() and mc.cancel_transfers(name, CANCEL_SECONDS):
            self.report("cancel_transfer")

    def _remove_leftovers(self, name, keep_pending=False):
        """The partial files of NAME's transfers (the module's own) and its pending record."""
        prefix = temp_prefix(name)
        if os.path.isdir(IMAGE_STORE):
            for entry in os.listdir(IMAGE_STORE):
                if entry.startswith(prefix):
                    path = os.path.join(IMAGE_STORE, entry)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
        if not keep_pending:
            remove_pending(name)

    def _record_pending(self, pending):
        """Record the origin a pending record describes: its transfer completed, the run did not."""
        requested = dict(url=pending.get("url"), checksum=pending.get("checksum"), sha256=pending.get("sha256"))
        url = pending.get("url") or ""
        self._record(pending["name"], url, requested, pending.get("sha256"), pending.get("method"), pending.get("verify"),
                     kind=pending.get("kind"))
        remove_pending(pending["name"])

    def _recover(self, mc, name, image, origin, pending):
        """A pending record at the start: an earlier run was killed while fetching NAME (SIGKILL, a lost host).
        Its transfer is cancelled, and its image recorded when it had completed, or its traces removed.
        In check mode, the outcome is predicted. Returns the (image, origin) the run goes on from."""
        self.report("recover")
        transfers = [t for t in mc.list_transfers() if t["local"] == name] if mc.importd_available() else []
        complete = image is not None and not transfers and pending.get("stage") in ("pull", "import")
        # The actions a real run reports (_conclude reports them as it does them).
        predicted = (["cancel_transfer"] if transfers else []) + (["record_origin"] if complete else [])
        outcome = []
        if not apply(self, [Step(predicted, lambda: outcome.extend(self._conclude(mc, name, pending)), staged=True)]):
            if complete:  # check mode: the state a real run goes on from
                origin = dict(pending, time=None)
                origin.pop("stage", None)
            return image, origin
        recorded, shown = outcome
        if recorded:
            self.module.warn("an earlier run was interrupted while fetching image %s, after the image was complete: its "
                             "origin is recorded now from that run's request (%s)" % (name, pending.get("url")))
            return shown, read_origin(name)
        if pending.get("stage") in ("pull", "import"):
            image = shown  # importd's transfer was cancelled: no image of it
        self.module.warn("an earlier run was interrupted while fetching image %s: its unfinished transfer was cancelled "
                         "and its partial files removed" % name)
        return image, origin

    def _record(self, name, url, requested, sha256, how, verify, kind=None, report=True):
        """Write the origin record. method "adopt": an existing image taken as the request's, not fetched or verified.
        report: the record is a stage of a transfer, or an outcome only the real run finds (not a step of its own)."""
        origin = dict(name=name, url=requested["url"], checksum=requested["checksum"], sha256=sha256,
                      method=how, verify=verify, kind=kind or image_kind(url),
                      time=datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat())
        if report:
            self.report("record_origin")
        write_json_atomic(self.module, origin_path(name), origin)
        self.result.update(origin=origin, sha256=origin["sha256"])
        self.diff.update_after(sha256=origin["sha256"])

    def _pull(self, mc, name, url, verify):
        """importd's pull. importd does the work in its own service, so on failure the reason (a damaged
        tarball, a refused connection) is in its journal rather than in importctl's output: quote it."""
        started = int(time.time()) - 1
        try:
            self.runner.run(mc.pull_argv(image_kind(url), url, name, verify), msg=f"Pulling {redact_url(url)} as {name} failed")
        except CommandError as exc:
            dummy, out, dummy_err = self.runner.run(
                ["journalctl", "-u", "systemd-importd.service", "--since=@%d" % started, "-n", "20", "-o", "cat", "--no-pager"],
                check=False)
            if out.strip():
                exc.msg += f"; the last lines of systemd-importd's journal:\n{redact_text(out.strip())}"
            raise

    def _download_import(self, mc, name, url, checksum, replace, pending):
        timeout = self.module.params["timeout"]
        sums_url = expected = None
        if checksum:
            expected, sums_url = (checksum[1], None) if checksum[0] == "hex" else (None, checksum[1])
        elif self.module.params["verify"] == "checksum":
            parts = urlsplit(url)
            sums_url = urlunsplit(parts._replace(path=f"{posixpath.dirname(parts.path)}/SHA256SUMS", query="", fragment=""))
        if not os.path.isdir(IMAGE_STORE):
            os.makedirs(IMAGE_STORE, 0o700)
        self._pending(pending, "download")
        if sums_url:
            expected = expected_from_sums(fetch_text(sums_url, timeout), url_basename(url), sums_url)
        fd, part = tempfile.mkstemp(prefix=temp_prefix(name), suffix=".part", dir=IMAGE_STORE)
        try:
            self.report("download")
            with os.fdopen(fd, "wb") as handle:
                sha256, dummy = download(url, handle, timeout)
            if expected and sha256 != expected:
                raise DownloadError("Checksum mismatch for %s: expected sha256 %s, got %s; the download was discarded"
                                    % (redact_url(url), expected, sha256), url=redact_url(url), sha256=sha256)
            if replace:
                self.report("remove")
                mc.remove(name)
            pending["sha256"] = sha256 if pending["verify"] == "sha256" else pending["sha256"]
            self._pending(pending, "import")
            self.report("import")
            kind = image_kind(url)
            if mc.importd_available():
                self.runner.run(mc.import_argv(kind, part, name), msg=f"Importing the download of {redact_url(url)} as {name} failed")
            else:
                self._unpack(part, name, kind)
        finally:
            remove_file(part)
        return sha256

    def _unpack(self, part, name, kind):
        """Import without importd (RHEL family): unpack next to the final place, then rename."""
        dest = os.path.join(IMAGE_STORE, name + (".raw" if kind == "raw" else ""))
        if os.path.lexists(dest):
            raise ModuleFailure(f"{dest} already exists but machined does not list it as an image: move it away first")
        if kind == "raw":
            os.rename(part, dest)
            return
        tree = tempfile.mkdtemp(prefix=temp_prefix(name), suffix=".d", dir=IMAGE_STORE)
        try:
            os.chmod(tree, 0o755)
            self.runner.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", part, "-C", tree],
                            msg=f"Unpacking the image {name} failed")
            os.rename(tree, dest)
        finally:
            if os.path.lexists(tree):
                shutil.rmtree(tree, ignore_errors=True)

    # -- export_to ---------------------------------------------------------------

    def _check_export_to(self, path, state):
        check_text(path, "export_to")
        if state == "absent":
            raise ValidationError("export_to: only applies with state=present")
        if not os.path.isabs(path):
            raise ValidationError(f"export_to: must be an absolute path, got {path!r}")
        if not export_kind(path):
            raise ValidationError("export_to: the file name must end in .tar, .tar.gz, .tar.xz, .tar.bz2 (export-tar) or "
                                  ".raw, .raw.gz, .raw.xz, .raw.bz2 (export-raw), got %r" % os.path.basename(path))
        if not os.path.isdir(os.path.dirname(path)):
            raise ValidationError(f"export_to: the directory {os.path.dirname(path)} does not exist")

    def _export(self, mc, name, path):
        """Export into a private directory beside path (same file name, so importd picks the same compression),
        then rename into place. machinectl and importctl open the output file themselves, in the client process,
        with mode 0666 minus the client's umask, and pass the descriptor to importd (systemd's
        src/machine/machinectl.c and src/import/importctl.c, export_tar()/export_raw()): the directory is 0700 and
        the client runs with umask 077, so that no other user can open the file - an image holds /etc/shadow - at
        any moment, not only after the chmod to 0600."""
        directory, base = os.path.split(path)
        private = tempfile.mkdtemp(prefix=TEMP_PREFIX, suffix=".d", dir=directory)  # mode 0700
        partial = os.path.join(private, base)
        umask = os.umask(0o077)
        try:
            self.runner.run(mc.export_argv(export_kind(path), name, partial), msg=f"Exporting {name} to {path} failed")
            os.chmod(partial, 0o600)
            os.rename(partial, path)
        finally:
            os.umask(umask)
            shutil.rmtree(private, ignore_errors=True)
        self.result["export_to"] = path
