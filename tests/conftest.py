"""Test configuration.

With ``NUMBARNN_STRICT=1`` (set by ``.ci/run``) a skipped test fails, except the
``realgpu`` ones: CI installs torch and numba-cuda, so nothing else may silently skip there.
"""

import os

import numba
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    strict = os.environ.get("NUMBARNN_STRICT") == "1"
    if strict and report.skipped and item.get_closest_marker("realgpu") is None:
        report.outcome = "failed"
        report.longrepr = f"skipped under NUMBARNN_STRICT=1: {report.longrepr}"


@pytest.fixture
def numba_threads():
    """``numba_threads(n)`` runs the rest of the test on ``n`` of Numba's threads (the count
    is restored afterwards); the test is skipped where Numba has fewer."""
    before = numba.get_num_threads()

    def use(n):
        if n > numba.config.NUMBA_NUM_THREADS:
            pytest.skip(f"needs {n} Numba threads, this machine has "
                        f"{numba.config.NUMBA_NUM_THREADS}")
        numba.set_num_threads(n)

    yield use
    numba.set_num_threads(before)
