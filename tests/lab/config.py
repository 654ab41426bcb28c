"""Where the lab keeps its build cache and its running labs, and how to override that.

Everything lives outside the checkout, so that a cache survives `git clean` and CI can
cache the directory between runs:

    NSPAWN_LAB_CACHE   build cache (root file systems, fixture images, the lab's SSH key)
                       default /var/cache/nspawn-nixos-lab
    NSPAWN_LAB_STATE   running labs, one folder per lab (overlay layers, inventory, JSON)
                       default /var/lib/nspawn-nixos-lab
    NSPAWN_LAB_MIRROR  Debian mirror for debootstrap, default http://deb.debian.org/debian
    NSPAWN_LAB_ROOT    how a host gets its own root file system: "overlay" (default, falls
                       back to a copy when the kernel refuses) or "copy"
"""

import os
from pathlib import Path

DEFAULT_CACHE = "/var/cache/nspawn-nixos-lab"
DEFAULT_STATE = "/var/lib/nspawn-nixos-lab"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# The lab's own source tree: recipes' files and helper scripts are read from here.
LAB_DIR = Path(__file__).resolve().parent

# Every process the lab starts gets this environment, not the caller's: a CI runner's
# locale or PATH must not change what debootstrap, systemd-nspawn or nsenter do.
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cache_root():
    """The build cache directory."""
    return Path(os.environ.get("NSPAWN_LAB_CACHE") or DEFAULT_CACHE)


def state_root():
    """The directory holding one folder per running lab."""
    return Path(os.environ.get("NSPAWN_LAB_STATE") or DEFAULT_STATE)


def mirror():
    """The Debian mirror debootstrap downloads from."""
    return os.environ.get("NSPAWN_LAB_MIRROR") or DEFAULT_MIRROR


def root_mode():
    """"overlay" or "copy": how each host gets a private root file system."""
    mode = os.environ.get("NSPAWN_LAB_ROOT") or "overlay"
    if mode not in ("overlay", "copy"):
        raise ValueError("NSPAWN_LAB_ROOT must be 'overlay' or 'copy', not %r" % mode)
    return mode


def clean_env(**extra):
    """A minimal, predictable environment for the commands the lab runs."""
    env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
    env.update(extra)
    return env
