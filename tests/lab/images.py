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
FIXTURE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "nix-bin", "libdbi-perl", "python3")


@dataclass(frozen=True)
class Release:
    """A Debian release the lab can boot as a host."""

    version: str          # "12"
    codename: str         # "bookworm"
    unified_cgroup: bool  # boot with SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 (pure cgroup2 inside)

    @property
    def group(self):
        """Inventory group of the release's hosts, e.g. "debian12"."""
        return "debian" + self.version

    @property
    def recipe_name(self):
        return "debian" + self.version


# Debian 12 runs fine on the hybrid hierarchy nspawn 252 gives it by default; Debian 13's
# systemd 257 is safer on pure cgroup2 (measured: both boot in about a second).
RELEASES = {
    "12": Release("12", "bookworm", unified_cgroup=False),
    "13": Release("13", "trixie", unified_cgroup=True),
}


def release(version):
    """The Release for "12"/"13" (also accepts "debian12" or a codename)."""
    for candidate in RELEASES.values():
        if version in (candidate.version, candidate.group, candidate.codename):
            return candidate
    raise ValueError("unknown Debian release %r (known: %s)" % (version, ", ".join(sorted(RELEASES))))


@dataclass(frozen=True)
class Recipe:
    """How to build one root file system: debootstrap, then copy `tree` in and configure."""

    name: str                 # "debian12", "debian13", "nixos-fixture"
    kind: str                 # "host" or "fixture": selects the configure steps
    suite: str
    packages: tuple
    tree: Path                # files copied into the root, paths relative to /

    def base_key(self):
        """Key of the debootstrap stage."""
        return _digest({"suite": self.suite, "variant": "minbase", "packages": sorted(self.packages), "version": RECIPE_VERSION})

    def key(self, extra=""):
        """Key of the finished build; `extra` adds inputs that are not files (the SSH key)."""
        return _digest({"base": self.base_key(), "tree": tree_digest(self.tree), "kind": self.kind, "extra": extra,
                        "version": RECIPE_VERSION})


def host_recipe(version):
    """The recipe of the lab host rootfs of a Debian release."""
    rel = release(version)
    return Recipe(rel.recipe_name, "host", rel.codename, HOST_PACKAGES, LAB_DIR / "hostfs")


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
