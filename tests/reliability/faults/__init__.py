"""Helpers of the reliability suite's fault and secret tests (test_faults.py, test_secrets.py)."""
