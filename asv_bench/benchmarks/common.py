"""Shared set-up of the benchmarks: sizes, layer construction, backends, warm-up.

asv re-runs a benchmark's ``setup`` before every sample, so the expensive part (building
the layer and its first calls, which compile or load Numba's cache) is memoised here: the
most recent case is kept per process and ``setup`` only fetches it.
"""

import numpy as np

import numbarnn

CELLS = {"lstm": numbarnn.LSTM, "gru": numbarnn.GRU, "rnn": numbarnn.RNN}

#: The issue's configurations (T, B, I, H).
SIZES = {
    "large": (100, 64, 512, 512),
    "medium": (100, 64, 256, 256),
    "medium-b16": (200, 16, 64, 128),
    "small": (50, 1, 128, 128),
}

BACKENDS = ("cpu", "cuda")

#: The streaming step: batch 1, (I, H).
STREAM_SIZE = (128, 128)


def require_backend(name):
    """The numbarnn backend ``name``, or ``NotImplementedError`` (asv: skip) when it cannot
    be benchmarked here. The CUDA simulator counts as not usable: it would time the
    simulator, not a GPU."""
    if name == "cuda":
        usable, reason = numbarnn.cuda_status()
        if not usable or reason == "simulator":
            raise NotImplementedError(f"cuda: no real GPU here ({reason})")
    return numbarnn.get_backend(name)


def sync_function(backend):
    """A callable that waits for the device (a no-op on the CPU)."""
    if backend.name == "cuda" and not backend.simulated:
        device = backend.xp.cuda.Device()
        return device.synchronize
    return lambda: None


_memo = {}


def memoised(key, build):
    """``build()`` once per ``key``; only the most recent key is kept (memory)."""
    if key not in _memo:
        _memo.clear()
        _memo[key] = build()
    return _memo[key]


def layer_case(cell, size, backend_name):
    """(model, x, dy, sync) of one configuration, warmed up (forward and backward ran once)."""
    backend = require_backend(backend_name)

    def build():
        T, B, I, H = SIZES[size]
        model = CELLS[cell](I, H, dtype=np.float32, backend=backend_name, seed=0)
        x_host = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
        x = backend.asarray(x_host)
        sync = sync_function(backend)
        model.train()
        y, _ = model(x)  # compiles (or loads the on-disk cache) outside the timing
        dy = backend.xp.ones_like(y)
        model.backward(dy)
        model.eval()
        model(x)
        sync()
        return model, x, dy, sync

    return memoised(("layer", cell, size, backend_name), build)
