"""What the lab builds: the Debian releases of its hosts and the recipes of its images.

A recipe is everything that decides the content of a build: the suite, the package list,
the tree of files copied in, and RECIPE_VERSION for the build steps in build.py. Its key
(a hash of all that) names the cache entry, so a changed recipe is rebuilt and an
unchanged one never is. Builds happen in two stages with their own keys: `base` (the
debootstrap, slow, depends only on suite and packages) and the configured result (fast,
depends on the files too), so that editing a fixture file does not re-run debootstrap.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .config import LAB_DIR

# Bump when a build step in build.py changes what it produces (the hashes cannot see code).
RECIPE_VERSION = "2"

FIXTURE_IMAGE_STEM = "nixos-fixture-x86_64-linux"
FIXTURE_IMAGE_FILES = (FIXTURE_IMAGE_STEM + ".tar.xz", FIXTURE_IMAGE_STEM + ".tar.gz")

# nixpkgs stand-ins served next to the images (nixpkgs-fixture-<flavour>.tar.gz, not in
# SHA256SUMS): the image's own stand-in (fixture/usr/lib/nixos-fixture/nixpkgs, flavour
# ng-late) with another fixture-flavour and fixture-version, so each has its own narHash.
# The flavour names the nixos-rebuild implementation such a nixpkgs ships (fixture/README.md).
NIXPKGS_STANDIN_FLAVOURS = ("bash", "ng-early", "ng-late")
NIXPKGS_STANDIN_VERSIONS = {"bash": "24.11.20250101.fixture-bash", "ng-early": "25.05.20250501.fixture-ng-early",
                            "ng-late": "25.11.20251001.fixture-ng-late"}

# Lab hosts: a systemd host with machinectl/importctl (systemd-container), sshd for
# Ansible, python3 and python3-apt so that Ansible's apt/package modules work offline,
# gpg for importd's --verify=signature, and the small tools the tests call.
HOST_PACKAGES = (
    "systemd", "systemd-sysv", "systemd-container", "dbus",
    "python3", "python3-apt", "openssh-server",
    "iproute2", "procps", "xz-utils", "gpg", "less",
)

# The fixture sidecar image: a bootable systemd rootfs with nix-bin for a real
# nix-instantiate. debootstrap does not resolve virtual packages: nix-bin needs
# perl-dbdabi-94, which only libdbi-perl provides.
# Upgraded from <suite>-backports on a backports host (apt pulls in what they need).
BACKPORTS_PACKAGES = ("systemd", "systemd-sysv", "systemd-container", "libsystemd0", "libpam-systemd", "libudev1")

# Bump when what build.py removes from a host without importd changes.
IMPORTD_REMOVE_VERSION = "1"

FIXTURE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "nix-bin", "libdbi-perl", "python3")


@dataclass(frozen=True)
class Release:
    """A lab host flavour: a Debian release (optionally with systemd from its backports, or
    with systemd-importd removed) that the lab can boot as a host.

    Each is named after what it really is (nothing claims to be another distribution);
    `stands_for` says which systemd of the support matrix (README) it gives a real
    counterpart of, and is documentation only.
    """

    version: str          # what `--release` and NSPAWN_LAB_RELEASES take: "12", "12-backports", "sid"
    name: str             # host names and test ids: "debian12", "debian12-backports", "debian-sid"
    codename: str         # the debootstrap suite: "bookworm"
    unified_cgroup: bool  # boot with SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 (pure cgroup2 inside)
    major: str            # ansible_distribution_major_version; "" for sid (Ansible says "<next codename>/sid")
    backports: bool = False  # systemd (and what it needs) from <codename>-backports
    importd: bool = True  # False: systemd-importd's files removed from systemd-container
    stands_for: str = ""
    extra_packages: tuple = ()  # installed on this release's hosts besides HOST_PACKAGES

    @property
    def group(self):
        """Inventory group of the release's hosts, e.g. "debian12", "debian12_backports"."""
        return self.name.replace("-", "_")

    @property
    def recipe_name(self):
        return self.name


# Every host flavour of the lab (README "Support matrix" says what each stands for).
# Debian 12 runs fine on the hybrid hierarchy nspawn 252 gives it by default, and so does
# 11 (systemd 247 predates the cgroup2-only default); 13 and newer are safer on pure cgroup2.
RELEASES = {
    "11": Release("11", "debian11", "bullseye", unified_cgroup=False, major="11",
                  stands_for="systemd 247, Python 3.9: the oldest systemd with JSON from machinectl"),
    "12": Release("12", "debian12", "bookworm", unified_cgroup=False, major="12",
                  stands_for="systemd 252 as in RHEL/Rocky 9; Ubuntu 22.04 (249) is between 247 and 252"),
    "12-backports": Release("12-backports", "debian12-backports", "bookworm", unified_cgroup=False, major="12", backports=True,
                            stands_for="systemd 254 from bookworm-backports, near Ubuntu 24.04 (255)"),
    "12-noimportd": Release("12-noimportd", "debian12-noimportd", "bookworm", unified_cgroup=False, major="12", importd=False,
                            stands_for="a host where systemd-importd is missing or denied (SELinux on Fedora)"),
    "13": Release("13", "debian13", "trixie", unified_cgroup=True, major="13",
                  stands_for="systemd 257 as in Fedora 42 and RHEL/Rocky 10, importctl"),
    # systemd >= 258 loads libcurl at run time and sid's systemd-container only suggests it:
    # without libcurl4t64 importd fails every pull ("Failed to allocate puller: Operation not
    # supported"). Installed here as an administrator would; nspawn_image downloads by itself
    # where it is missing (unit-tested).
    "sid": Release("sid", "debian-sid", "sid", unified_cgroup=True, major="",
                   stands_for="the newest systemd Debian has (Fedora 43 ships 258)", extra_packages=("libcurl4t64",)),
}

# What a lab boots when nothing says otherwise (`lab up`, pytest without
# NSPAWN_LAB_RELEASES); `make integration` and the default molecule scenario run all.
DEFAULT_RELEASES = ("12", "13")


def release(version):
    """The Release for "12"/"12-backports"/"sid" (also accepts its name, group or codename)."""
    for candidate in RELEASES.values():
        if version in (candidate.version, candidate.name, candidate.group):
            return candidate
    for candidate in RELEASES.values():
        if version == candidate.codename and not candidate.backports and candidate.importd:
            return candidate
    raise ValueError("unknown lab release %r (known: %s)" % (version, ", ".join(RELEASES)))


def releases_from(text):
    """Release versions from a space-separated list; "all" means every release."""
    words = text.split()
    if words == ["all"]:
        return tuple(RELEASES)
    return tuple(release(word).version for word in words)


@dataclass(frozen=True)
class Recipe:
    """How to build one root file system: debootstrap, then copy `tree` in and configure."""

    name: str                 # "debian12", "debian12-backports", "nixos-fixture"
    kind: str                 # "host" or "fixture": selects the configure steps
    suite: str
    packages: tuple
    tree: Path                # files copied into the root, paths relative to /
    backports: tuple = ()     # packages upgraded from <suite>-backports after debootstrap
    remove_importd: bool = False  # configure step: delete systemd-importd's files

    @property
    def base_name(self):
        """Recipes that differ only in the configure step share one debootstrap."""
        return self.name.replace("-noimportd", "")

    def base_key(self):
        """Key of the debootstrap stage."""
        data = {"suite": self.suite, "variant": "minbase", "packages": sorted(self.packages), "version": RECIPE_VERSION}
        if self.backports:  # only then: the keys of the other recipes stay what they were
            data["backports"] = sorted(self.backports)
        return _digest(data)

    def key(self, extra=""):
        """Key of the finished build; `extra` adds inputs that are not files (the SSH key)."""
        data = {"base": self.base_key(), "tree": tree_digest(self.tree), "kind": self.kind, "extra": extra, "version": RECIPE_VERSION}
        if self.remove_importd:
            data["remove_importd"] = IMPORTD_REMOVE_VERSION
        return _digest(data)


def host_recipe(version):
    """The recipe of the lab host rootfs of a release."""
    rel = release(version)
    return Recipe(rel.recipe_name, "host", rel.codename, HOST_PACKAGES + rel.extra_packages, LAB_DIR / "hostfs",
                  backports=BACKPORTS_PACKAGES if rel.backports else (), remove_importd=not rel.importd)


FIXTURE_RECIPE = Recipe("nixos-fixture", "fixture", "trixie", FIXTURE_PACKAGES, LAB_DIR / "fixture")


def all_recipes():
    """The host recipes of every release, then the fixture image's."""
    return [host_recipe(version) for version in sorted(RELEASES)] + [FIXTURE_RECIPE]


def tree_digest(tree):
    """Hash of a file tree: relative paths, file types, executable bits and contents."""
    sha = hashlib.sha256()
    for directory, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(directory, name)
            relative = path.relative_to(tree).as_posix()
            if path.is_symlink():
                sha.update(b"L %s -> %s\0" % (relative.encode(), os.readlink(path).encode()))
                continue
            executable = os.access(path, os.X_OK)
            sha.update(b"F %s %d\0" % (relative.encode(), executable))
            sha.update(path.read_bytes())
    return sha.hexdigest()


def _digest(data):
    """A short, stable hash of a JSON-serialisable value (cache directory names)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
