"""Start-up cost a user sees: a new process doing ``import numbarnn`` and its first LSTM
forward + backward (float32), with the on-disk cache warm, and with a cold one."""

import json
import os
import subprocess
import sys
import tempfile
import time

_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import numbarnn
t1 = time.perf_counter()
m = numbarnn.LSTM(8, 16, seed=0)
x = np.random.default_rng(0).standard_normal((5, 2, 8)).astype(np.float32)
y, _ = m(x)
m.backward(np.ones_like(y))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1}))
"""


def _run(env=None):
    """In-process seconds of (import, first forward+backward) of a new interpreter."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
        env=env, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


class CompileLatency:
    """Seconds; each ``track_`` runs its own new process."""

    unit = "seconds"
    timeout = 900

    def setup_cache(self):
        return _run()  # fills the on-disk cache, so the warm figures are warm

    def track_import_warm_cache(self, _):
        return _run()["import_s"]

    def track_import_and_first_call_warm_cache(self, _):
        r = _run()
        return r["import_s"] + r["first_call_s"]

    def track_process_warm_cache(self, _):
        """Including the interpreter's own start-up."""
        return _run()["process_s"]

    def track_import_and_first_call_cold_cache(self, _):
        with tempfile.TemporaryDirectory() as cache:
            r = _run({**os.environ, "NUMBA_CACHE_DIR": cache})
        return r["import_s"] + r["first_call_s"]
