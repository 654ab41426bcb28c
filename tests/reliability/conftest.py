"""pytest configuration of the reliability suite (`make reliability`): bad input and faults
on lab hosts, each checked against a snapshot of the host taken before (snapshot.py).

The lab fixtures are those of the integration tests (tests/lab/pytest_plugin.py); the
playbooks run through tests/integration/runner.py.
"""

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
for path in (TESTS_DIR, TESTS_DIR / "integration", TESTS_DIR / "reliability"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from lab.pytest_plugin import lab, lab_host, pytest_configure  # noqa: E402  (needs sys.path above)
from runner import AnsibleRunner  # noqa: E402

__all__ = ["lab", "lab_host", "pytest_configure", "ansible_runner"]


@pytest.fixture(scope="session")
def ansible_runner(lab):  # pylint: disable=redefined-outer-name
    """Runs playbooks against the session's lab."""
    return AnsibleRunner(lab.inventory)
