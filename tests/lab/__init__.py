"""The nspawn.nixos test lab: real systemd hosts (Debian 12 and 13) booted with systemd-nspawn.

One API for everyone (tests, molecule's create/destroy playbooks, `make demo`, benchmarks):

    from lab import Lab
    with Lab("demo").up(releases=["12", "13"]) as lab:
        host = lab.host("13")
        host.run(["machinectl", "list"])
        host.ssh("systemctl is-system-running")
        print(lab.inventory)

CLI: `PYTHONPATH=tests python -m lab --help`. See tests/lab/README.md.
"""

from .build import Artifacts, Builder, BuildError
from .host import Host, HostError
from .images import RELEASES, Release
from .lab import Lab, LabError

__all__ = ["Artifacts", "Builder", "BuildError", "Host", "HostError", "Lab", "LabError", "RELEASES", "Release"]
