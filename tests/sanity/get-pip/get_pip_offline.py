# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline stand-in for the get-pip bootstrap script that ansible-test downloads.

ansible-test sanity builds a virtual environment per test and bootstraps pip in it by running
``get_pip_<version>.py`` from ``~/.ansible/test/cache/``, which it otherwise downloads from a
host that is not reachable from our machines. This script does the same job with what is
reachable: ``ensurepip`` from the standard library, then ``pip install`` of the requested
packages (e.g. ``pip==24.2``) from the configured package index.

``make sanity`` copies it into the cache under every name ansible-test may look for.
"""

from __future__ import annotations

import subprocess
import sys

# Options of get-pip itself that ``pip install`` does not know.
GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
    return subprocess.call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args)


if __name__ == "__main__":
    sys.exit(main())
