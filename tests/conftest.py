"""The one pytest configuration of the lab tests (tests/integration, tests/reliability).

It puts tests/ on sys.path, for the lab package (tests/lab: hosts, the Ansible runner and
the pytest plugin with the fixtures lab, lab_host and ansible_runner), and registers that
plugin here, the conftest.py that every `pytest tests/...` run of the Makefile loads first.
The unit tests (tests/unit, with a conftest of their own) use none of its fixtures.
"""

import sys
from pathlib import Path

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

pytest_plugins = ["lab.pytest_plugin"]
