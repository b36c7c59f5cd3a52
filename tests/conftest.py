"""Test configuration.

With ``NUMBARNN_STRICT=1`` (set by ``.ci/run``) a skipped test fails, except the
``realgpu`` ones: CI installs torch and numba-cuda, so nothing else may silently skip there.
"""

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    strict = os.environ.get("NUMBARNN_STRICT") == "1"
    if strict and report.skipped and item.get_closest_marker("realgpu") is None:
        report.outcome = "failed"
        report.longrepr = f"skipped under NUMBARNN_STRICT=1: {report.longrepr}"
