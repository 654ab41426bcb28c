"""pytest plugin of the lab: lab hosts for a test session, and tests per Debian release.

Fixtures
    lab        (session) a Lab with one host per release of NSPAWN_LAB_RELEASES, booted in
               parallel, torn down at the end of the session, also when a test fails or
               the run is interrupted (Ctrl-C or SIGTERM). Labs left by killed runs are
               removed first.
    lab_host   a Host, parametrized over the releases: test ids end in the release's
               name ([debian12], [debian12-backports], [debian-sid], ...);
               `@pytest.mark.lab_releases("13")` restricts a test.
    ansible_runner (session) an AnsibleRunner (ansible_runner.py) on the lab's inventory:
               playbooks and integration targets, with every task result as data.

Environment
    NSPAWN_LAB_NAME       lab name (default "pytest-<pid>": parallel runs on one machine
                          do not collide; labs of earlier runs whose process is gone are
                          downed first)
    NSPAWN_LAB_RELEASES   releases to boot, e.g. "13" or "11 12-noimportd sid", or "all"
                          (default "12 13"; `make integration` boots all)
    NSPAWN_LAB_KEEP=1     leave the lab running after the session, for debugging
                          (`python -m lab down --name pytest` later)
    NSPAWN_LAB_REQUIRED=1 fail, instead of skipping, when the lab cannot run here (not
                          root, tools missing): `make integration` sets it, so a CI run
                          cannot pass by skipping every lab test

tests/conftest.py loads it for every test folder (integration, reliability, and the units,
which use none of it); elsewhere `pytest -p lab.pytest_plugin` with tests/ on sys.path.
"""

import os
import re
import signal
from pathlib import Path

import pytest

from .ansible_runner import AnsibleRunner
from .build import missing_tools
from .images import DEFAULT_RELEASES, release, releases_from
from .lab import Lab

RELEASES = releases_from(os.environ.get("NSPAWN_LAB_RELEASES") or " ".join(DEFAULT_RELEASES))


def pytest_configure(config):
    config.addinivalue_line("markers", "lab_releases(*versions): run a lab_host test only on these Debian releases, e.g. \"13\"")


def _raise_keyboard_interrupt(signum, frame):
    """SIGTERM (CI cancelling a job) -> KeyboardInterrupt, so that pytest tears down."""
    raise KeyboardInterrupt("SIGTERM")


def _cannot_run(reason):
    """Skip, or fail where the lab is required (NSPAWN_LAB_REQUIRED=1)."""
    if os.environ.get("NSPAWN_LAB_REQUIRED") == "1":
        pytest.fail("the lab is required but cannot run: " + reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab():
    """A lab with one host per release in RELEASES (session-wide)."""
    if os.geteuid() != 0:
        _cannot_run("the lab needs root (systemd-nspawn, mounts, cgroups)")
    missing = missing_tools()
    if missing:
        _cannot_run("the lab needs the commands %s (Debian packages %s)" % (", ".join(sorted(missing)), " ".join(sorted(set(missing.values())))))
    _down_labs_of_dead_runs()
    the_lab = Lab(os.environ.get("NSPAWN_LAB_NAME") or "pytest-%d" % os.getpid())
    previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        the_lab.up(releases=RELEASES, replace=True)
        yield the_lab
    finally:
        try:
            if os.environ.get("NSPAWN_LAB_KEEP"):
                print("\nNSPAWN_LAB_KEEP is set: lab %s keeps running (%s)" % (the_lab.name, the_lab.inventory))
            else:
                the_lab.down()
        finally:
            signal.signal(signal.SIGTERM, previous_handler)


def _down_labs_of_dead_runs():
    """Down labs named pytest-<pid> whose pytest process no longer runs (killed runs)."""
    for name in Lab.names():
        match = re.match(r"^pytest-(\d+)$", name)
        if match and not _is_pytest_process(int(match.group(1))):
            Lab(name).down()


def _is_pytest_process(pid):
    try:
        return b"pytest" in Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return False


@pytest.fixture(params=RELEASES, ids=lambda version: release(version).name)
def lab_host(request, lab):  # pylint: disable=redefined-outer-name
    """The lab's host of one release (the test runs once per release)."""
    marker = request.node.get_closest_marker("lab_releases")
    if marker and request.param not in [str(version) for version in marker.args]:
        pytest.skip("test restricted to the lab releases %s" % ", ".join(str(version) for version in marker.args))
    return lab.host(request.param)


@pytest.fixture(scope="session")
def ansible_runner(lab):  # pylint: disable=redefined-outer-name
    """Runs playbooks and integration targets against the session's lab."""
    return AnsibleRunner(lab.inventory)
