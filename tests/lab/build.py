"""Build the lab's root file systems and the fixture sidecar image, cached and atomic.

Cache layout (see config.py for its location):

    ssh/id_ed25519[.pub]            the lab's SSH key (root logs into every host with it)
    base/<recipe>-<key>/            debootstrap output, per recipe (slow stage)
    rootfs/<recipe>-<key>/          configured host root file systems (overlay lower dirs)
    images/nixos-fixture-<key>/     nixos-fixture-x86_64-linux.tar.{xz,gz} + SHA256SUMS, and
                                    the nixpkgs stand-ins nixpkgs-fixture-<flavour>.tar.gz
    logs/                           debootstrap and tool output of the last builds
    tmp/                            builds in progress: renamed into place only on success

Nothing half-built is ever used: an interrupted build leaves at most a tmp/ entry, which
the next build deletes. The cache is locked while building, so parallel test runs wait for
one build instead of racing.
"""

import fcntl
import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import config, images
from .files import sha256_file
from .mounts import copy_tree, ensure_dir, remove_tree

# Commands the lab needs on the machine that runs it, and the Debian package of each.
REQUIRED_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "mount": "mount",
    "socat": "socat",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "xz": "xz-utils",
    "tar": "tar",
    "pgrep": "procps",
    "chattr": "e2fsprogs",
}
BUILD_INFO = "etc/nspawn-nixos-lab.json"  # inside every built root: what built it
APT_TIMERS = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer")


class BuildError(RuntimeError):
    """A build step failed; the message says which and where its log is."""


@dataclass
class Artifacts:
    """The built things a lab boots from."""

    host_roots: dict          # release version -> rootfs directory (read-only lower dir)
    images_dir: Path          # served at /srv/images inside every host
    ssh_key: Path             # private key; the .pub is in every host's authorized_keys
    timings: dict = field(default_factory=dict)  # step -> seconds, of what was built now

    def image_sha256(self):
        """{file name: sha256} from the images' SHA256SUMS."""
        sums = {}
        for line in (self.images_dir / "SHA256SUMS").read_text().splitlines():
            digest, name = line.split(None, 1)
            sums[name.lstrip("*")] = digest
        return sums


def missing_tools():
    """Names of required commands that are not installed, with their packages."""
    return {tool: package for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool, path=config.CLEAN_PATH) is None}


def host_info(root):
    """The build info of a built root (recipe, key, release, systemd version)."""
    return json.loads((Path(root) / BUILD_INFO).read_text())


class Builder:
    """Builds what is missing from the cache; `ensure()` is the one entry point."""

    def __init__(self, cache=None, log=print, force=False):
        self.cache = Path(cache or config.cache_root())
        log_lock = threading.Lock()

        def locked_log(message):  # build steps log from several threads
            with log_lock:
                log(message)
        self.log = locked_log
        self.force = force
        self.timings = {}
        # Set when a build step failed or the build was interrupted: the steps running in
        # other threads kill their processes and clean up instead of finishing.
        self._cancelled = threading.Event()

    # -- the plan --------------------------------------------------------------------

    def ensure(self, releases=None):
        """Build whatever the current recipes of `releases` (default: every release) and the
        fixture image need and the cache lacks; return Artifacts with the roots of those
        releases. Entries of the other releases' current recipes are kept, not pruned."""
        missing = missing_tools()
        if missing:
            raise BuildError("missing commands: %s; install the Debian packages %s"
                             % (", ".join(sorted(missing)), " ".join(sorted(set(missing.values())))))
        ensure_dir(self.cache)
        with self._locked():
            start = time.monotonic()
            remove_tree(self.cache / "tmp")
            ssh_key = self._ssh_key()
            pubkey = ssh_key.with_suffix(".pub").read_text()
            targets = {}
            for recipe in images.all_recipes():
                extra = pubkey if recipe.kind == "host" else ""
                parent = "images" if recipe.kind == "fixture" else "rootfs"
                targets[recipe.name] = (recipe, self.cache / parent / ("%s-%s" % (recipe.name, recipe.key(extra))))
            wanted = {images.release(version).recipe_name for version in (releases or images.RELEASES)} | {images.FIXTURE_RECIPE.name}
            todo = [(recipe, target) for recipe, target in targets.values()
                    if recipe.name in wanted and (self.force or not target.exists())]
            if todo:
                self._build_bases([recipe for recipe, _target in todo])
                self._parallel(self._finish, [(recipe, target, pubkey) for recipe, target in todo])
                self.timings["total"] = time.monotonic() - start
                self._prune({target for _recipe, target in targets.values()}, {recipe.base_key() for recipe, _target in targets.values()})
        host_roots = {images.release(version).version: targets[images.release(version).recipe_name][1]
                      for version in (releases or images.RELEASES)}
        return Artifacts(host_roots, targets[images.FIXTURE_RECIPE.name][1], ssh_key, self.timings)

    @contextmanager
    def _locked(self):
        with open(self.cache / ".lock", "w", encoding="ascii") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log("waiting for another build of %s to finish ..." % self.cache)
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _ssh_key(self):
        """The lab's ed25519 key pair, generated once."""
        key = self.cache / "ssh" / "id_ed25519"
        if not key.exists():
            ensure_dir(key.parent, 0o700)
            self._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nspawn-nixos-lab", "-f", str(key)], "ssh-keygen")
        return key

    # -- stage 1: debootstrap ------------------------------------------------------------

    def _base_dir(self, recipe):
        return self.cache / "base" / ("%s-%s" % (recipe.base_name, recipe.base_key()))

    def _build_bases(self, recipes):
        """debootstrap every missing base, all at once (network and dpkg overlap well)."""
        needed = {}
        for recipe in recipes:
            if self.force or not self._base_dir(recipe).exists():
                needed.setdefault(recipe.base_key(), recipe)
        if needed:
            self._parallel(self._debootstrap, [(recipe,) for recipe in needed.values()])

    def _parallel(self, function, argument_tuples):
        """function(*arguments) for each tuple in threads; the first failure (or Ctrl-C)
        cancels the others, which clean up before this raises."""
        with ThreadPoolExecutor(max_workers=len(argument_tuples)) as pool:
            futures = [pool.submit(function, *arguments) for arguments in argument_tuples]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self._cancelled.set()
                raise

    def _debootstrap(self, recipe):
        target = self._base_dir(recipe)
        with self._staging(target) as root:
            self.log("[%s] debootstrap %s (%d packages) from %s ..." % (recipe.name, recipe.suite, len(recipe.packages), config.mirror()))
            started = time.monotonic()
            self._run(["debootstrap", "--variant=minbase", "--include=" + ",".join(recipe.packages), recipe.suite, str(root), config.mirror()],
                      recipe.name + "-debootstrap", debootstrap_log=root / "debootstrap" / "debootstrap.log")
            if recipe.backports:
                self._install_backports(root, recipe)
            for deb in (root / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            self._timing(recipe.name, "debootstrap", started)

    def _install_backports(self, root, recipe):
        """Upgrade recipe.backports from <suite>-backports (debootstrap cannot mix suites)."""
        suite = recipe.suite + "-backports"
        self.log("[%s] apt-get install -t %s %s ..." % (recipe.name, suite, " ".join(recipe.backports)))
        (root / "etc/apt/sources.list.d/backports.list").write_text("deb %s %s main\n" % (config.mirror(), suite))
        chroot = ["unshare", "--mount", "--pid", "--fork", "--mount-proc=%s" % (root / "proc"), "chroot", str(root),
                  "env", "DEBIAN_FRONTEND=noninteractive"]
        self._run(chroot + ["apt-get", "update", "-q"], recipe.name + "-apt-update")
        self._run(chroot + ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-t", suite, *recipe.backports],
                  recipe.name + "-backports")

    # -- stage 2: configure (and pack) -----------------------------------------------------

    def _finish(self, recipe, target, pubkey):
        with self._staging(target) as staging:
            started = time.monotonic()
            root = staging / "root" if recipe.kind == "fixture" else staging
            copy_tree(self._base_dir(recipe), root)
            if recipe.kind == "host":
                self._configure_host(root, recipe, pubkey)
                self._timing(recipe.name, "configure", started)
                return
            self._configure_fixture(root, recipe)
            self._timing(recipe.name, "configure", started)
            started = time.monotonic()
            self._pack(root, staging)
            self._pack_nixpkgs_standins(root, staging)
            remove_tree(root)
            self._timing(recipe.name, "pack", started)

    def _configure_host(self, root, recipe, pubkey):
        """A lab host: sshd on 127.0.0.1 for the lab key, the image server, no apt timers."""
        install_tree(recipe.tree, root)
        ensure_dir(root / "srv/images")
        (root / "etc/hostname").write_text("nspawn-nixos-lab\n")
        ssh_dir = ensure_dir(root / "root/.ssh", 0o700)
        (ssh_dir / "authorized_keys").write_text(pubkey)
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        # Fresh host keys for this build (not the ones debootstrap's postinst made in base).
        for old_key in (root / "etc/ssh").glob("ssh_host_*"):
            old_key.unlink()
        self._run(["ssh-keygen", "-A", "-f", str(root)], recipe.name + "-hostkeys")
        self._systemctl(root, recipe, "enable", "nspawn-nixos-lab-images.service")
        removed = remove_importd(root) if recipe.remove_importd else []
        if recipe.remove_importd:
            self.log("[%s] removed systemd-importd: %s" % (recipe.name, " ".join(removed)))
        self._finish_root(root, recipe, {"importd_removed": removed} if recipe.remove_importd else {})

    def _configure_fixture(self, root, recipe):
        """The fixture image, laid out like the upstream tarball (tests/lab/fixture/README.md):
        /etc/nixos of v1.3.0 (0444), the nixos-rebuild double, sw/bin, the nixpkgs stand-in
        and the initial system in the store, /nix-path-registration, root locked."""
        install_tree(recipe.tree, root)
        (root / "README.md").unlink()  # fixture/README.md documents the tree, it is not in it
        link_sw_bin(root)
        self._systemctl(root, recipe, "enable", "nixos-fixture-current-system.service")
        # NixOS has the nixbld group (nix.conf's build-users-group); the tarball has no
        # /etc/hostname (activation links it) and a locked root ("!", no initial password).
        self._run(["chroot", str(root), "groupadd", "--system", "nixbld"], recipe.name + "-groupadd")
        self._run(["chroot", str(root), "usermod", "--password", "!", "root"], recipe.name + "-lock-root")
        hostname = root / "etc/hostname"
        if hostname.exists() or hostname.is_symlink():
            hostname.unlink()
        # make-system-tarball.sh copies /etc/nixos/* from the store: read-only files.
        for path in (root / "etc/nixos").iterdir():
            os.chmod(path, 0o444)
        # The nixpkgs stand-in and the initial system in the store (real nix needs /proc),
        # `system` straight at the system, /nix-path-registration, no nix DB yet.
        self._run(["unshare", "--mount", "--pid", "--fork", "--mount-proc=%s" % (root / "proc"), "chroot", str(root),
                   "/usr/lib/nixos-fixture/nixos-rebuild", "--fixture-install-image"], recipe.name + "-install-image")
        self._finish_root(root, recipe)
        # A clean image: nothing of apt, docs or logs, nothing left in /run.
        for pattern in ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc/*",
                        "usr/share/man/*", "usr/share/info/*", "var/log/*.log", "var/log/apt/*", "run/*", "tmp/*"):
            for path in root.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    remove_tree(path)
                else:
                    path.unlink()

    def _pack_nixpkgs_standins(self, root, out_dir):
        """nixpkgs-fixture-<flavour>.tar.gz: the image's nixpkgs stand-in with another
        fixture-flavour, one top-level directory each (served by the lab's image server,
        not listed in SHA256SUMS). Deterministic: fixed owner and mtime, sorted."""
        source = root / "usr/lib/nixos-fixture/nixpkgs"
        for flavour in images.NIXPKGS_STANDIN_FLAVOURS:
            top = "nixpkgs-fixture-" + flavour
            contents = {"fixture-flavour": flavour.encode() + b"\n",
                        "fixture-version": images.NIXPKGS_STANDIN_VERSIONS[flavour].encode() + b"\n"}
            for path in sorted(source.rglob("*")):
                relative = path.relative_to(source).as_posix()
                if path.is_file() and relative not in contents:
                    contents[relative] = path.read_bytes()
            with open(out_dir / (top + ".tar.gz"), "wb") as raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", mtime=1) as compressed:
                    with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
                        directories = {top} | {top + "/" + parent for name in contents
                                               for parent in _parents(name)}
                        for name in sorted(directories):
                            info = tarfile.TarInfo(name)
                            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1
                            tar.addfile(info)
                        for name in sorted(contents):
                            info = tarfile.TarInfo(top + "/" + name)
                            info.size, info.mode, info.mtime = len(contents[name]), 0o644, 1
                            tar.addfile(info, io.BytesIO(contents[name]))

    def _finish_root(self, root, recipe, extra_info=None):
        """Steps every root gets: masked apt timers, an empty machine-id, build info."""
        self._systemctl(root, recipe, "mask", *APT_TIMERS)
        # Empty: systemd treats the first boot as such and every host gets its own id
        # (the lab writes one per host; importd/nspawn give nested machines one).
        (root / "etc/machine-id").write_text("")
        dbus_id = root / "var/lib/dbus/machine-id"
        if dbus_id.exists() and not dbus_id.is_symlink():
            dbus_id.unlink()
        info = {"recipe": recipe.name, "suite": recipe.suite, "packages": list(recipe.packages),
                "systemd_version": systemd_version(root), "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "recipe_version": images.RECIPE_VERSION, "importd": importd_installed(root), **(extra_info or {})}
        (root / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")

    def _pack(self, root, out_dir):
        """The image tarballs, compressed in parallel, and their SHA256SUMS."""
        tar = ["tar", "--numeric-owner", "--sort=name", "-C", str(root), "-cf", "-", "."]
        gzip = ["pigz", "-1"] if shutil.which("pigz") else ["gzip", "-1"]
        # xz -1: decompression speed does not depend on the level, and -6 takes minutes.
        compressors = {images.FIXTURE_IMAGE_STEM + ".tar.xz": ["xz", "-T0", "-1"], images.FIXTURE_IMAGE_STEM + ".tar.gz": gzip}
        self._parallel(self._pipe, [(tar, compressor, out_dir / name) for name, compressor in compressors.items()])
        lines = ["%s  %s\n" % (sha256_file(out_dir / name), name) for name in sorted(compressors)]
        (out_dir / "SHA256SUMS").write_text("".join(lines))

    # -- helpers ---------------------------------------------------------------------

    def _pipe(self, producer, consumer, out_path):
        """producer | consumer > out_path, failing if either fails."""
        with open(out_path, "wb") as out:
            first = subprocess.Popen(producer, stdout=subprocess.PIPE, env=config.clean_env(), start_new_session=True)
            second = subprocess.Popen(consumer, stdin=first.stdout, stdout=out, env=config.clean_env(), start_new_session=True)
            first.stdout.close()  # so that the producer sees EPIPE if the consumer dies
            if self._wait([first, second], producer[0]) != [0, 0]:
                raise BuildError("%s | %s failed" % (" ".join(producer), " ".join(consumer)))

    @contextmanager
    def _staging(self, target):
        """A fresh directory under tmp/, renamed to `target` if the block succeeds."""
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=ensure_dir(self.cache / "tmp")))
        os.chmod(staging, 0o755)
        try:
            yield staging
            ensure_dir(target.parent)
            if target.exists():
                remove_tree(target)  # --force rebuild
            os.rename(staging, target)
        finally:
            remove_tree(staging)

    def _systemctl(self, root, recipe, *args):
        self._run(["systemctl", "--root=" + str(root), "--quiet", *args], recipe.name + "-systemctl")

    def _run(self, argv, log_name, debootstrap_log=None):
        """Run a build command with its output in logs/<log_name>.log; raise BuildError."""
        log_path = ensure_dir(self.cache / "logs") / (log_name + ".log")
        with open(log_path, "wb") as log:
            # Own process group: an interrupted build kills debootstrap with its dpkg,
            # wget and chroot children, not only the debootstrap shell script.
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=config.clean_env(),
                                       start_new_session=True)
            returncode = self._wait([process], argv[0])[0]
        if returncode != 0:
            tail = _tail(debootstrap_log if debootstrap_log and debootstrap_log.exists() else log_path)
            raise BuildError("%s failed (exit %d), log %s:\n%s" % (argv[0], returncode, log_path, tail))

    def _wait(self, processes, what):
        """Wait for processes (each leading its own process group); kill their groups if
        the build is cancelled or interrupted meanwhile. Returns their exit statuses."""
        try:
            while any(process.poll() is None for process in processes):
                if self._cancelled.is_set():
                    raise BuildError("%s cancelled" % what)
                time.sleep(0.2)
        except BaseException:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            raise
        return [process.returncode for process in processes]

    def _timing(self, name, step, started):
        seconds = time.monotonic() - started
        self.timings["%s %s" % (name, step)] = seconds
        self.log("[%s] %s done in %.1f s" % (name, step, seconds))

    def _prune(self, keep, keep_bases):
        """Delete cache entries of older recipes, unless a lab still boots from them."""
        in_use = _paths_used_by_labs()
        for parent in ("rootfs", "images"):
            for entry in (self.cache / parent).glob("*"):
                if entry not in keep and str(entry) not in in_use:
                    self.log("removing outdated %s" % entry)
                    remove_tree(entry)
        for entry in (self.cache / "base").glob("*"):
            if entry.name.rsplit("-", 1)[-1] not in keep_bases:
                self.log("removing outdated %s" % entry)
                remove_tree(entry)


def install_tree(tree, root):
    """Copy a recipe's file tree into `root`: directories 0755, files 0644 or 0755 (if
    executable in the checkout), owned by root; existing files and links are replaced."""
    root = Path(root)
    for directory, _dirnames, filenames in os.walk(tree):
        relative = Path(directory).relative_to(tree)
        target_dir = root / relative
        if not str(target_dir.resolve()).startswith(str(root.resolve())):
            raise BuildError("%s leads out of the root through a symlink" % relative)
        ensure_dir(target_dir)
        for name in filenames:
            source, target = Path(directory, name), target_dir / name
            if target.is_symlink() or target.exists():
                target.unlink()
            shutil.copyfile(source, target)
            os.chmod(target, 0o755 if os.access(source, os.X_OK) else 0o644)
            os.chown(target, 0, 0)


def link_sw_bin(root):
    """Fill /usr/lib/nixos-fixture/sw/bin with links to the tools in sw-bin.list, and sw-python/bin with the
    same and python3: the system path of a configuration that adds pkgs.python3 (the double picks it)."""
    fixture_dir = root / "usr/lib/nixos-fixture"
    names = [line.strip() for line in (fixture_dir / "sw-bin.list").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    for sw, extra in (("sw", []), ("sw-python", ["python3"])):
        bin_dir = ensure_dir(fixture_dir / sw / "bin")
        for name in names + extra:
            for directory in ("/usr/lib/nixos-fixture", "/usr/sbin", "/usr/bin"):
                if os.path.lexists(root / directory.lstrip("/") / name):
                    (bin_dir / name).symlink_to(directory + "/" + name)
                    break
            else:
                raise BuildError("sw-bin.list: no %s in the fixture image" % name)


# What makes systemd-importd (and so `machinectl pull-*`, `import-*`, `export-*` and importctl)
# work, by file name in systemd-container's file list: the daemon, the helpers it runs, its
# units (service, and the socket of newer versions), its D-Bus service and policy files and
# its polkit actions. Removing them leaves a host as one whose systemd was built without
# importd: machinectl and importctl are there, D-Bus cannot activate org.freedesktop.import1.
IMPORTD_FILE_NAMES = ("systemd-importd", "systemd-import", "systemd-import-fs", "systemd-pull", "systemd-export",
                      "systemd-importd.service", "systemd-importd.socket", "dbus-org.freedesktop.import1.service",
                      "org.freedesktop.import1.service", "org.freedesktop.import1.conf", "org.freedesktop.import1.policy")


def remove_importd(root):
    """Delete systemd-importd's files (IMPORTD_FILE_NAMES, as listed by dpkg for
    systemd-container) from `root`; return their paths. Fails if the daemon is not among them."""
    root = Path(root)
    listed = (root / "var/lib/dpkg/info/systemd-container.list").read_text().splitlines()
    removed = []
    for path in sorted(set(listed)):
        if Path(path).name in IMPORTD_FILE_NAMES and os.path.lexists(root / path.lstrip("/")):
            if (root / path.lstrip("/")).is_dir() and not (root / path.lstrip("/")).is_symlink():
                continue
            (root / path.lstrip("/")).unlink()
            removed.append(path)
    if importd_installed(root) or not any(path.endswith("/systemd-importd") for path in removed):
        raise BuildError("could not remove systemd-importd from %s (removed: %s)" % (root, removed))
    return removed


def importd_installed(root):
    """Whether the systemd-importd binary is in `root` (where the collection looks for it)."""
    return any(os.path.lexists(Path(root) / directory / "systemd-importd") for directory in ("usr/lib/systemd", "lib/systemd"))


def systemd_version(root):
    """Major version of the systemd package installed in `root` (from dpkg's status)."""
    status = (Path(root) / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    for paragraph in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in paragraph.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Package") == "systemd" and "installed" in fields.get("Status", ""):
            return int(fields["Version"].split(".")[0].split("-")[0])
    raise BuildError("no systemd package installed in %s" % root)


def _paths_used_by_labs():
    """Cache paths named in the JSON of every lab under the state root."""
    used = set()
    for state in config.state_root().glob("*/lab.json"):
        try:
            lab = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        used.add(lab.get("images_dir", ""))
        used.update(host.get("lower", "") for host in lab.get("hosts", []))
    return used


def _parents(name):
    """The parent directories of a relative path, outermost first ("a/b/c" -> a, a/b)."""
    parts = name.split("/")[:-1]
    return ["/".join(parts[:index + 1]) for index in range(len(parts))]


def _tail(path, lines=25):
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
