"""pytest configuration of the integration tests: lab hosts and an Ansible runner.

The fixtures of the lab's pytest plugin (tests/lab/pytest_plugin.py) are imported here
rather than named in `pytest_plugins`: pytest refuses `pytest_plugins` in a conftest.py
below the rootdir when that conftest is found during collection (e.g. `pytest tests`).
"""

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
for path in (TESTS_DIR, TESTS_DIR / "integration"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from lab.pytest_plugin import lab, lab_host, pytest_configure  # noqa: E402  (needs sys.path above)
from runner import AnsibleRunner  # noqa: E402

__all__ = ["lab", "lab_host", "pytest_configure", "ansible_runner"]


@pytest.fixture(scope="session")
def ansible_runner(lab):  # pylint: disable=redefined-outer-name
    """Runs playbooks and integration targets against the session's lab."""
    return AnsibleRunner(lab.inventory)
