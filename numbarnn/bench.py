"""Benchmark numbarnn against PyTorch: ``python -m numbarnn bench``.

Everything runs in one process, so the numbers of one table share the machine's state:

* the GEMM rate of the dtype, measured once per thread count: the floor a recurrent layer's
  GEMMs can reach. On the CPU the faster of NumPy's ``matmul`` and numbarnn's packed kernels
  (:mod:`numbarnn.kernels.gemm`, packing excluded) on two n x n matrices, as a BLAS may run
  narrower vectors than the CPU has (the header names its kernels: SciPy's and NumPy's
  OpenBLAS run AVX2 ones on AMD Zen 5); CuPy's ``matmul`` on a GPU;
* for each thread count, size and cell: forward (PyTorch under ``torch.no_grad()``, numbarnn
  in ``eval()`` mode) and train step (forward + backward with ``dy = ones``; both sides
  compute the input gradient ``dx`` and accumulate every parameter gradient) of numbarnn's
  CPU backend, PyTorch's CPU ``nn.LSTM``/``nn.GRU``/``nn.RNN``, and, when a real GPU is
  usable, numbarnn's CUDA backend and PyTorch on CUDA (cuDNN). Both sides use the same
  weights; the maximum difference of their forward outputs is recorded as a sanity check;
* a streaming step: one LSTM step, batch 1, H = 128, called from Python (numbarnn's layer
  on a (1, 1, I) input, or its ``step`` method when it has one, against
  ``torch.nn.LSTMCell``), and from a user's ``@njit`` loop calling the CPU driver;
* compile latency: a new process doing ``import numbarnn`` and a first LSTM forward and
  backward, run twice with the on-disk cache (the second run is the warm-cache figure), or
  with a fresh cache directory for the cold figure.

Implementations are interleaved: each repeat times every implementation of a group once,
alternating their order, so that machine noise hits all alike. Each sample runs enough
calls to last ``min_time`` seconds; the figure reported is the median over samples, after
warm-up calls (which also compile or load Numba's cache). With more than one thread each
sample starts after a pause (``SETTLE_S``), so that the worker threads the previous
implementation's library leaves spinning do not take cores from the next.

Thread counts are applied in this order, and restored afterwards: Numba's
(``numba.set_num_threads``), then the BLAS libraries' of NumPy and SciPy
(``threadpoolctl``), then PyTorch's (``torch.set_num_threads``) -- setting torch's first
once silently left oneDNN with two threads while torch reported one.

Flops: a forward pass does ``2*T*B*(I+H)*G*H`` (G = 4 gates for LSTM, 3 for GRU, 1 for the
Elman RNN); a train step is counted as three times that.
"""

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = [
    "SIZES",
    "QUICK_SIZES",
    "GATES",
    "layer_flops",
    "parse_size",
    "measure_gemm",
    "measure_cpu_gemm",
    "compile_latency",
    "run_benchmarks",
    "format_table",
    "add_arguments",
    "run_command",
]

#: The issue's configurations, (T, B, I, H).
SIZES = {
    "large": (100, 64, 512, 512),
    "medium": (100, 64, 256, 256),
    "medium-b16": (200, 16, 64, 128),
    "small": (50, 1, 128, 128),
}
#: Tiny configurations for ``--quick`` (smoke runs in CI).
QUICK_SIZES = {"tiny": (10, 4, 16, 32), "tiny-b1": (8, 1, 16, 16)}
#: Gates per cell.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
OPS = ("forward", "train")

# With more than one thread, each sample starts after this pause. After a multithreaded call
# OpenBLAS's workers spin for about 0.1 s (2^28 cycles) before they sleep, and they take a
# core from whatever runs next: interleaved without the pause, PyTorch's GRU at 2 threads
# ran 1.6-2.3x slower than alone, right after numbarnn's samples (measured).
SETTLE_S = 0.2
BACKENDS = ("cpu", "cuda")
DTYPES = ("float32", "float64")
STREAM_SIZE = (128, 128)  # (I, H) of the streaming step; batch 1
COMPILE_SIZE = (5, 2, 8, 16)  # (T, B, I, H) of the compile-latency run: size does not matter


def layer_flops(cell, T, B, I, H, op="forward"):
    """Floating-point operations of one pass of a single-layer, one-direction layer.

    Parameters
    ----------
    cell : {'lstm', 'gru', 'rnn'}
    T, B, I, H : int
        Steps, batch, input features, hidden units.
    op : {'forward', 'train'}
        ``'train'`` (forward + backward) counts three forward passes.

    Returns
    -------
    int
        ``2*T*B*(I+H)*G*H`` for the forward pass (the GEMMs; the cell math is ignored).
    """
    if cell not in GATES:
        raise ValueError(f"cell: expected one of {sorted(GATES)}, got {cell!r}")
    if op not in OPS:
        raise ValueError(f"op: expected one of {OPS}, got {op!r}")
    forward = 2 * T * B * (I + H) * GATES[cell] * H
    return forward * (3 if op == "train" else 1)


def parse_size(text):
    """A configuration from the command line: a name of :data:`SIZES` or :data:`QUICK_SIZES`,
    or ``T,B,I,H``.

    Returns
    -------
    (str, tuple of int)
        Its name (``T,B,I,H`` for an explicit size) and ``(T, B, I, H)``.

    Raises
    ------
    ValueError
        For an unknown name or a malformed size.
    """
    known = {**SIZES, **QUICK_SIZES}
    if text in known:
        return text, known[text]
    parts = text.replace("x", ",").split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(
            f"size {text!r}: expected one of {sorted(known)} or four positive integers "
            "T,B,I,H (e.g. 100,64,256,256)"
        )
    return ",".join(map(str, dims)), dims


# --------------------------------------------------------------------------- machine


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _git_revision():
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(module_name):
    try:
        module = __import__(module_name)
        return getattr(module, "__version__", "?")
    except Exception:  # noqa: BLE001 -- a missing or broken optional package
        return None


def machine_info(torch=None, cupy=None):
    """What the numbers depend on: CPU, cores, library versions, thread pools.

    Returns
    -------
    dict
    """
    import numba

    import numbarnn

    info = {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores_logical": os.cpu_count(),
        "cores_available": _available_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": _version("scipy"),
        "numbarnn": numbarnn.__version__,
        "numbarnn_path": str(Path(numbarnn.__file__).parent),
        "git": _git_revision(),
        "torch": torch.__version__ if torch is not None else None,
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_threading_layer_config": numba.config.THREADING_LAYER,
        "cuda": numbarnn.cuda_status()[1],
    }
    try:
        import threadpoolctl

        info["threadpools"] = [
            {k: d.get(k)
             for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
            for d in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = None
    if torch is not None:
        info["torch_num_threads"] = torch.get_num_threads()
        info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
        if torch.cuda.is_available():
            info["torch_cuda_device"] = torch.cuda.get_device_name(0)
            info["cudnn"] = torch.backends.cudnn.version()
    if cupy is not None:
        try:
            props = cupy.cuda.runtime.getDeviceProperties(0)
            name = props["name"]
            info["cuda_device"] = name.decode() if isinstance(name, bytes) else str(name)
            info["cupy"] = cupy.__version__
        except Exception as exc:  # noqa: BLE001
            info["cuda_device"] = f"unknown ({exc!r})"
    return info


@contextlib.contextmanager
def thread_settings(n, torch=None, notes=None):
    """Run with ``n`` threads in every pool; restore the previous settings afterwards.

    Order: Numba, then the BLAS libraries of NumPy/SciPy (threadpoolctl), then PyTorch.

    Parameters
    ----------
    n : int
    torch : module, optional
        PyTorch, when it takes part.
    notes : list of str, optional
        Gets a line when threadpoolctl is missing (BLAS threads then stay as they are).
    """
    import numba

    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"threads: {n} is outside 1..{numba.config.NUMBA_NUM_THREADS} "
            "(NUMBA_NUM_THREADS; set that environment variable to allow more)"
        )
    try:  # Numba's np.dot calls SciPy's BLAS: load it now, or threadpoolctl cannot limit it
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        pass
    old_numba = numba.get_num_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    with contextlib.ExitStack() as stack:
        numba.set_num_threads(n)
        stack.callback(numba.set_num_threads, old_numba)
        try:
            import threadpoolctl
        except ImportError:
            if notes is not None and not any("threadpoolctl" in s for s in notes):
                notes.append("threadpoolctl is not installed: BLAS thread counts not set")
        else:
            limiter = threadpoolctl.threadpool_limits(limits=n, user_api="blas")
            stack.callback(limiter.restore_original_limits)
        if torch is not None:
            torch.set_num_threads(n)
            stack.callback(torch.set_num_threads, old_torch)
        # ExitStack unwinds in reverse: torch, BLAS, Numba.
        yield


# --------------------------------------------------------------------------- timing


def _time_calls(fn, number):
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - start) / number
    finally:
        if gc_was_enabled:
            gc.enable()


def _calibrate(fn, min_time, warmup):
    """Warm ``fn`` up and return how many calls make one sample of at least ``min_time``."""
    for _ in range(max(1, warmup)):
        fn()
    once = _time_calls(fn, 1)
    if once >= min_time:
        return 1
    # A second estimate over several calls: the first timed call is often an outlier.
    number = max(1, min(1000, int(min_time / max(once, 1e-7) / 4)))
    per_call = _time_calls(fn, number)
    return max(1, min(100_000, math.ceil(min_time / max(per_call, 1e-9))))


def _settle(threads):
    """The pause before each sample at ``threads`` threads (``SETTLE_S``; none at 1)."""
    return SETTLE_S if threads > 1 else 0.0


def measure_interleaved(impls, repeat, min_time, warmup=1, settle=0.0):
    """Time several implementations of the same work, interleaved.

    Parameters
    ----------
    impls : dict of str -> callable
        Each callable runs the work once (and waits for a GPU to finish).
    repeat : int
        Samples per implementation.
    min_time : float
        Seconds one sample lasts at least (calls are batched to reach it).
    warmup : int
        Calls before calibration.
    settle : float
        Seconds to sleep before each sample (see ``SETTLE_S``).

    Returns
    -------
    dict of str -> dict
        Per implementation: ``median_s``, ``min_s``, ``samples_s`` (seconds per call) and
        ``number`` (calls per sample).
    """
    names = list(impls)
    numbers = {name: _calibrate(impls[name], min_time, warmup) for name in names}
    samples = {name: [] for name in names}
    for r in range(repeat):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            time.sleep(settle)
            samples[name].append(_time_calls(impls[name], numbers[name]))
    return {
        name: {
            "median_s": statistics.median(samples[name]),
            "min_s": min(samples[name]),
            "samples_s": samples[name],
            "number": numbers[name],
        }
        for name in names
    }


class _TorchCuda:
    """The three array functions :func:`measure_gemm` needs, on PyTorch's CUDA device."""

    def __init__(self, torch):
        self.torch = torch

    def asarray(self, a):
        return self.torch.from_numpy(a).cuda()

    def empty(self, shape, dtype):
        return self.torch.empty(shape, dtype=getattr(self.torch, dtype), device="cuda")

    def matmul(self, a, b, out):
        return self.torch.matmul(a, b, out=out)


def _blas_line(machine):
    """What the CPU's GEMM rate below measures, and whether numbarnn calls that BLAS at all."""
    from numbarnn.kernels import cpu, gemm

    blas = [d for d in machine.get("threadpools") or () if d.get("internal_api") != "openmp"]
    name = f"{blas[0]['internal_api']} {blas[0]['version']}" if blas else "unknown"
    if blas and blas[0].get("architecture"):
        name += f" ({blas[0]['architecture']} kernels)"
    use = ("BLAS used on one thread where measured faster" if cpu._blas_wide_callback()
           else "BLAS not used (its vectors are narrower)")
    return (f"GEMM rate: the faster of NumPy's BLAS, {name}, and numbarnn's packed kernels, "
            f"{gemm._VECTOR_BYTES}-byte vectors; {use}")


def _square_operands(n, dtype):
    """The two seeded n x n operands of the GEMM rate, and an output for their product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    return a, b, np.empty((n, n), dtype=dtype)


def measure_gemm(n, dtype="float32", repeat=5, min_time=0.2, xp=None, sync=None):
    """GEMM rate of ``xp.matmul`` on two n x n matrices.

    Parameters
    ----------
    n : int
    dtype : str
    repeat, min_time
        As in :func:`measure_interleaved`.
    xp : module, optional
        NumPy (default) or CuPy.
    sync : callable, optional
        Waits for the device (CuPy).

    Returns
    -------
    dict
        ``n``, ``median_s`` and ``gflops`` (``2 n^3`` flops per product).
    """
    xp = np if xp is None else xp
    a, b, c = (xp.asarray(v) for v in _square_operands(n, dtype))

    def gemm():
        xp.matmul(a, b, out=c)
        if sync is not None:
            sync()

    t = measure_interleaved({"gemm": gemm}, repeat, min_time)["gemm"]
    return {"n": n, "median_s": t["median_s"], "gflops": 2.0 * n**3 / t["median_s"] / 1e9}


def measure_cpu_gemm(n, dtype="float32", repeat=5, min_time=0.2):
    """The CPU's GEMM rate on two n x n matrices: the faster of NumPy's ``matmul`` (its BLAS)
    and numbarnn's packed kernels (``gemm.matmul_parallel`` on Numba's threads, the weights
    packed beforehand, as the drivers pack them once per call), timed interleaved.
    Parameters as for :func:`measure_gemm` (on the CPU: no ``xp`` or ``sync``).

    Returns
    -------
    dict
        ``n``, ``median_s`` and ``gflops`` (``2 n^3`` flops per product) of the faster, and
        ``blas_gflops`` and ``packed_gflops``.
    """
    from numbarnn.kernels import gemm

    a, b, c = _square_operands(n, dtype)
    panels = gemm.pack(b, n)
    times = measure_interleaved({
        "blas": lambda: np.matmul(a, b, out=c),
        "packed": lambda: gemm.matmul_parallel(a, panels, c, False),
    }, repeat, min_time)
    gflops = {name: 2.0 * n**3 / t["median_s"] / 1e9 for name, t in times.items()}
    best = max(gflops, key=gflops.get)
    return {"n": n, "median_s": times[best]["median_s"], "gflops": gflops[best],
            "blas_gflops": gflops["blas"], "packed_gflops": gflops["packed"]}


# --------------------------------------------------------------------------- implementations


_TORCH_CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def _make_torch(torch, cell, I, H, dtype, device, seed):
    torch.manual_seed(seed)
    module = getattr(torch.nn, _TORCH_CLASSES[cell])(I, H)
    return module.to(device=device, dtype=getattr(torch, dtype))


def _numbarnn_layer(cell, I, H, dtype, backend, state_dict):
    import numbarnn

    cls = {"lstm": numbarnn.LSTM, "gru": numbarnn.GRU, "rnn": numbarnn.RNN}[cell]
    model = cls(I, H, dtype=np.dtype(dtype), backend=backend, seed=0)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def _numbarnn_ops(model, x_np, xp, sync):
    """forward / train callables and a forward output getter for a numbarnn layer."""
    x = model.backend.asarray(x_np)
    model.train()
    y, _ = model(x)
    dy = xp.ones_like(y)

    def forward():
        model.eval()
        model(x)
        sync()

    def train():
        model.train()
        model(x)
        model.backward(dy)
        sync()

    def output():
        model.eval()
        return model.backend.to_numpy(model(x)[0])

    return {"forward": forward, "train": train}, output


def _torch_ops(torch, module, x_np, device, sync):
    x = torch.from_numpy(np.ascontiguousarray(x_np)).to(device)
    xg = x.clone().requires_grad_(True)
    with torch.no_grad():
        dy = torch.ones_like(module(x)[0])

    def forward():
        with torch.no_grad():
            module(x)
        sync()

    def train():
        xg.grad = None
        y, _ = module(xg)
        y.backward(dy)
        sync()

    def output():
        with torch.no_grad():
            return module(x)[0].cpu().numpy()

    return {"forward": forward, "train": train}, output


# --------------------------------------------------------------------------- streaming

_njit_stream = None


def _njit_stream_loop():
    """A user's ``@njit`` loop calling the batch-1 LSTM step kernel one step at a time (built
    lazily, not cached on disk: the cache would not notice changes to the kernel it inlines)."""
    global _njit_stream
    if _njit_stream is None:
        from numba import njit

        from .kernels import step

        @njit
        def loop(xs, w_ih, w_hh, b_ih, b_hh, h, c):
            for s in range(xs.shape[0]):
                step.lstm_step_vector(xs[s], w_ih, w_hh, b_ih, b_hh, h, c, h, c)

        _njit_stream = loop
    return _njit_stream


def _streaming_impls(torch, dtype, notes):
    """One LSTM step, batch 1, from Python and from @njit; torch.nn.LSTMCell."""
    I, H = STREAM_SIZE
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((1, 1, I)).astype(dtype)
    impls, methods = {}, {}
    state_dict = None
    if torch is not None:
        torch.manual_seed(0)
        cell = torch.nn.LSTMCell(I, H).to(dtype=getattr(torch, dtype))
        cell.requires_grad_(False)
        state_dict = {
            "weight_ih_l0": cell.weight_ih.numpy(), "weight_hh_l0": cell.weight_hh.numpy(),
            "bias_ih_l0": cell.bias_ih.numpy(), "bias_hh_l0": cell.bias_hh.numpy(),
        }
    model = _numbarnn_layer("lstm", I, H, dtype, "cpu", state_dict)
    model.eval()
    zeros = np.zeros((1, 1, H), dtype=dtype)
    state = [(zeros.copy(), zeros.copy())]

    def layer_forward():
        _, state[0] = model(x1, state[0])

    impls["numbarnn"], methods["numbarnn"] = layer_forward, "layer forward on (1, 1, I)"
    if hasattr(model, "step"):
        x_t = x1[0]
        try:
            out = model.step(x_t, (zeros.copy(), zeros.copy()))
            step_state = [out[1] if isinstance(out, tuple) and len(out) == 2 else out]

            def layer_step():
                out = model.step(x_t, step_state[0])
                step_state[0] = out[1] if isinstance(out, tuple) and len(out) == 2 else out

            layer_step()
            impls["numbarnn"], methods["numbarnn"] = layer_step, "layer.step(x (1, I), state)"
        except Exception as exc:  # noqa: BLE001 -- unknown signature: fall back, say so
            notes.append(f"streaming: numbarnn's step() failed ({exc!r}); timed forward instead")

    # A user's @njit loop: N steps per call, reported per step.
    steps = 200
    try:
        p = model.params
        xs = np.ascontiguousarray(np.broadcast_to(x1[0, 0], (steps, I)))
        loop = _njit_stream_loop()
        args = (xs, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"],
                np.zeros(H, dtype), np.zeros(H, dtype))
        loop(*args)

        def njit_steps():
            loop(*args)

        impls["numbarnn-njit"] = njit_steps
        methods["numbarnn-njit"] = f"@njit loop over step.lstm_step_vector ({steps} steps/call)"
    except Exception as exc:  # noqa: BLE001 -- the driver's signature may have changed
        notes.append(f"streaming: the @njit loop over step.lstm_step_vector failed: {exc!r:.200}")
    if torch is not None:
        xt = torch.from_numpy(x1[0].copy())
        hc = [(torch.zeros(1, H, dtype=xt.dtype), torch.zeros(1, H, dtype=xt.dtype))]

        def torch_cell():
            hc[0] = cell(xt, hc[0])

        impls["torch-cpu"], methods["torch-cpu"] = torch_cell, "torch.nn.LSTMCell"
    per_call = {name: (steps if name == "numbarnn-njit" else 1) for name in impls}
    return impls, methods, per_call


def _run_streaming(torch, dtype, n, repeat, min_time, notes):
    """The streaming rows of one thread count."""
    impls, methods, per_call = _streaming_impls(torch, dtype, notes)
    times = measure_interleaved(impls, repeat, min_time, settle=_settle(n))
    I, H = STREAM_SIZE
    rows = []
    for name, t in times.items():
        k = per_call[name]
        rows.append({
            "kind": "streaming", "cell": "lstm", "impl": name, "threads": n, "B": 1,
            "I": I, "H": H, "dtype": dtype, "method": methods[name],
            "median_us": 1e6 * t["median_s"] / k, "min_us": 1e6 * t["min_s"] / k,
            "samples_us": [1e6 * s / k for s in t["samples_s"]], "ratio": None,
        })
    torch_us = next((r["median_us"] for r in rows if r["impl"] == "torch-cpu"), None)
    for r in rows:
        if torch_us is not None and r["impl"].startswith("numbarnn"):
            r["ratio"] = torch_us / r["median_us"]
    return rows


# --------------------------------------------------------------------------- compile latency

_COMPILE_SCRIPT = r"""
import json, sys, time
sys.path[:] = json.loads(sys.argv[1])
t0 = time.perf_counter()
import numpy as np
import numbarnn
t1 = time.perf_counter()
T, B, I, H = json.loads(sys.argv[2])
m = numbarnn.LSTM(I, H, dtype=np.dtype(sys.argv[3]), seed=0)
x = np.random.default_rng(0).standard_normal((T, B, I)).astype(sys.argv[3])
y, _ = m(x)
m.backward(np.ones_like(y))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1, "file": numbarnn.__file__}))
"""


def _compile_once(dtype, env, timeout):
    args = [sys.executable, "-c", _COMPILE_SCRIPT, json.dumps(sys.path),
            json.dumps(COMPILE_SIZE), dtype]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"compile-latency subprocess failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    result["total_s"] = result["import_s"] + result["first_call_s"]
    return result


def compile_latency(mode="warm", dtype="float32", timeout=600):
    """Seconds for a new process to ``import numbarnn`` and run a first LSTM forward+backward.

    Parameters
    ----------
    mode : {'warm', 'cold'}
        ``'warm'``: run twice with the usual on-disk cache; the second run is the
        warm-cache figure. ``'cold'``: run twice with a fresh ``NUMBA_CACHE_DIR``; the first
        run compiles everything (cold), the second loads what it cached (warm).
    dtype : str
    timeout : float
        Seconds allowed per subprocess.

    Returns
    -------
    dict
        ``mode``, ``first`` and ``second`` (each with ``import_s``, ``first_call_s``,
        ``total_s`` in-process, and ``process_s`` including interpreter start-up).
    """
    if mode not in ("warm", "cold"):
        raise ValueError(f"mode: expected 'warm' or 'cold', got {mode!r}")
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if mode == "cold":
            env["NUMBA_CACHE_DIR"] = stack.enter_context(tempfile.TemporaryDirectory())
        first = _compile_once(dtype, env, timeout)
        second = _compile_once(dtype, env, timeout)
    return {"mode": mode, "size": COMPILE_SIZE, "dtype": dtype, "first": first, "second": second}


# --------------------------------------------------------------------------- the run


def _cuda_setup(notes):
    """CuPy and a sync function when numbarnn's CUDA backend can be benchmarked, else None."""
    import numbarnn

    usable, reason = numbarnn.cuda_status()
    if usable and reason == "simulator":
        notes.append(
            "numbarnn cuda: skipped, the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1); "
            "timing it would measure the simulator"
        )
        return None
    if not usable:
        notes.append(f"numbarnn cuda: skipped, {reason}")
        return None
    import cupy

    return cupy


class _Writer:
    """Prints the table as groups finish and keeps the JSON file up to date."""

    def __init__(self, out, json_path, result):
        self.out, self.json_path, self.result = out, json_path, result
        self.header_done = False

    def print(self, text=""):
        print(text, file=self.out, flush=True)

    def rows(self, rows):
        if not self.header_done:
            self.print(format_table([], header_only=True))
            self.header_done = True
        self.print(format_table(rows, header=False))
        self.save()

    def save(self):
        if self.json_path:
            write_json(self.result, self.json_path)


def write_json(result, path):
    """Write a result of :func:`run_benchmarks` to ``path`` (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    tmp.replace(path)


def run_benchmarks(
    cells=tuple(GATES),
    sizes=None,
    threads=None,
    repeat=None,
    backends=BACKENDS,
    use_torch=True,
    dtype="float32",
    quick=False,
    streaming=True,
    compile_mode="warm",
    min_time=None,
    json_path=None,
    out=None,
):
    """Run the benchmark and return its result (also printed to ``out`` as it goes).

    Parameters
    ----------
    cells : sequence of {'lstm', 'gru', 'rnn'}
    sizes : dict of str -> (T, B, I, H), optional
        Default :data:`SIZES` (:data:`QUICK_SIZES` when ``quick``).
    threads : sequence of int, optional
        Default 1 and the number of available cores.
    repeat : int, optional
        Samples per implementation (default 7; 3 when ``quick``).
    backends : sequence of {'cpu', 'cuda'}
        ``'cuda'`` runs only on a real GPU (skipped with a note otherwise, also in the
        CUDA simulator). GPU rows are measured with the last thread count.
    use_torch : bool
        Include PyTorch when it can be imported.
    dtype : {'float32', 'float64'}
    quick : bool
        Tiny sizes, short samples, a small GEMM: a smoke run.
    streaming : bool
        Include the streaming-step rows.
    compile_mode : {'warm', 'cold', 'none'}
        See :func:`compile_latency`.
    min_time : float, optional
        Seconds per sample (default 0.05; 0.005 when ``quick``).
    json_path : str or Path, optional
        Written after every group, so an interrupted run keeps what it measured.
    out : file, optional
        Where the table goes (default ``sys.stdout``).

    Returns
    -------
    dict
        ``machine``, ``settings``, ``rows`` (one dict per measurement; ``kind`` is
        ``'gemm'``, ``'layer'``, ``'streaming'`` or ``'compile'``) and ``notes``.
    """
    out = sys.stdout if out is None else out
    cells = list(cells)
    for cell in cells:
        if cell not in GATES:
            raise ValueError(f"cells: expected names from {sorted(GATES)}, got {cell!r}")
    for backend in backends:
        if backend not in BACKENDS:
            raise ValueError(f"backends: expected names from {BACKENDS}, got {backend!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    if compile_mode not in ("warm", "cold", "none"):
        raise ValueError(f"compile_mode: expected 'warm', 'cold' or 'none', got {compile_mode!r}")
    sizes = dict(sizes) if sizes else dict(QUICK_SIZES if quick else SIZES)
    if threads is None:
        threads = sorted({1, _available_cores()})
    threads = list(threads)
    repeat = repeat if repeat is not None else (3 if quick else 7)
    if repeat < 1:
        raise ValueError(f"repeat: expected a positive int, got {repeat}")
    min_time = min_time if min_time is not None else (0.005 if quick else 0.05)
    gemm_n = 256 if quick else 2048

    import numba

    for n in threads:
        if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
            raise ValueError(
                f"threads: {n} is outside 1..{numba.config.NUMBA_NUM_THREADS} "
                "(NUMBA_NUM_THREADS; set that environment variable to allow more)"
            )

    notes = []
    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            notes.append("torch is not installed: no PyTorch rows")
    cupy = _cuda_setup(notes) if "cuda" in backends else None
    torch_cuda = torch is not None and "cuda" in backends and torch.cuda.is_available()
    if torch is not None and "cuda" in backends and not torch_cuda:
        notes.append("torch cuda: skipped, torch.cuda.is_available() is False")

    result = {
        "machine": machine_info(torch, cupy),
        "settings": {
            "cells": cells, "sizes": sizes, "threads": threads, "repeat": repeat,
            "backends": list(backends), "torch": torch is not None, "dtype": dtype,
            "quick": quick, "min_time_s": min_time, "gemm_n": gemm_n,
            "compile_mode": compile_mode, "argv": sys.argv,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "rows": [],
        "notes": notes,
    }
    rows = result["rows"]
    w = _Writer(out, json_path, result)
    m = result["machine"]
    w.print(
        f"numbarnn {m['numbarnn']} ({m['git'] or 'no git'}) | numpy {m['numpy']} | "
        f"numba {m['numba']} | torch {m['torch'] or '-'} | {dtype}"
    )
    w.print(f"{m['cpu']}, {m['cores_available']} cores available; {m.get('cuda_device', 'no GPU')}")
    w.print(_blas_line(m))
    for note in notes:
        w.print(f"note: {note}")

    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal((T, B, I)).astype(dtype)
              for name, (T, B, I, H) in sizes.items()}
    cpu_sync = lambda: None  # noqa: E731
    cupy_sync = (lambda: cupy.cuda.Device().synchronize()) if cupy is not None else None
    torch_cuda_sync = torch.cuda.synchronize if torch_cuda else None
    gpu_gemm = None

    for ti, n in enumerate(threads):
        last = ti == len(threads) - 1
        run_cpu = "cpu" in backends
        run_gpu = last and (cupy is not None or torch_cuda)
        with thread_settings(n, torch, notes):
            gemm = measure_cpu_gemm(gemm_n, dtype, repeat=max(3, repeat), min_time=4 * min_time)
            gemm_row = {"kind": "gemm", "device": "cpu", "threads": n, "dtype": dtype, **gemm}
            rows.append(gemm_row)
            w.print(f"{dtype} GEMM {gemm_n}^3, {n} thread(s): {gemm['gflops']:.1f} GFLOP/s "
                    f"(NumPy's BLAS {gemm['blas_gflops']:.1f}, numbarnn's packed kernels "
                    f"{gemm['packed_gflops']:.1f})")
            if run_gpu and gpu_gemm is None:
                if cupy is not None:
                    gpu_gemm = measure_gemm(4096, dtype, repeat=max(3, repeat),
                                            min_time=4 * min_time, xp=cupy, sync=cupy_sync)
                else:
                    gpu_gemm = measure_gemm(4096, dtype, repeat=max(3, repeat),
                                            min_time=4 * min_time, xp=_TorchCuda(torch),
                                            sync=torch_cuda_sync)
                rows.append({"kind": "gemm", "device": "cuda", "threads": n, "dtype": dtype,
                             **gpu_gemm})
                w.print(f"{dtype} GEMM 4096^3 on the GPU: {gpu_gemm['gflops']:.1f} GFLOP/s")

            for size_name, (T, B, I, H) in sizes.items():
                x_np = inputs[size_name]
                for cell in cells:
                    group_rows = _run_group(
                        cell, size_name, (T, B, I, H), x_np, dtype, n, torch, cupy,
                        run_cpu, run_gpu and cupy is not None, run_gpu and torch_cuda,
                        cupy_sync, torch_cuda_sync, cpu_sync, repeat, min_time,
                        gemm["gflops"], gpu_gemm["gflops"] if gpu_gemm else None, rows, notes,
                    )
                    rows.extend(group_rows)
                    w.rows(group_rows)

            if streaming and run_cpu:
                rows.extend(_run_streaming(torch, dtype, n, repeat, min_time, notes))
                w.save()

    if compile_mode != "none":
        try:
            lat = compile_latency(compile_mode, dtype)
            rows.append({"kind": "compile", **lat})
        except (RuntimeError, subprocess.SubprocessError) as exc:
            notes.append(f"compile latency: {exc}")
    try:
        result["machine"]["numba_threading_layer"] = numba.threading_layer()
    except ValueError:
        result["machine"]["numba_threading_layer"] = None
    result["settings"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    w.print()
    w.print(format_summary(result))
    w.save()
    return result


def _run_group(cell, size_name, dims, x_np, dtype, n, torch, cupy, run_cpu, run_nb_gpu,
               run_torch_gpu, cupy_sync, torch_cuda_sync, cpu_sync, repeat, min_time,
               cpu_gflops, gpu_gflops, rows, notes):
    """Forward and train step of one cell and size, all implementations interleaved."""
    T, B, I, H = dims
    ops, outputs, devices = {}, {}, {}
    state_dict = None
    if torch is not None:
        module = _make_torch(torch, cell, I, H, dtype, "cpu", seed=0)
        state_dict = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
        if run_cpu:
            ops["torch-cpu"], outputs["torch-cpu"] = _torch_ops(torch, module, x_np, "cpu", cpu_sync)
        if run_torch_gpu:
            gpu_module = _make_torch(torch, cell, I, H, dtype, "cuda", seed=0)
            ops["torch-cuda"], outputs["torch-cuda"] = _torch_ops(
                torch, gpu_module, x_np, "cuda", torch_cuda_sync)
    if run_cpu:
        model = _numbarnn_layer(cell, I, H, dtype, "cpu", state_dict)
        ops["numbarnn-cpu"], outputs["numbarnn-cpu"] = _numbarnn_ops(model, x_np, np, cpu_sync)
    if run_nb_gpu:
        model = _numbarnn_layer(cell, I, H, dtype, "cuda", state_dict)
        ops["numbarnn-cuda"], outputs["numbarnn-cuda"] = _numbarnn_ops(
            model, x_np, cupy, cupy_sync)
    order = ("numbarnn-cpu", "torch-cpu", "numbarnn-cuda", "torch-cuda")
    ops = {impl: ops[impl] for impl in order if impl in ops}
    for impl in ops:
        devices[impl] = impl.split("-")[1]

    # Sanity: numbarnn's forward output against PyTorch on the same device (else numbarnn-cpu).
    diffs = {}
    tol = 1e-3 if dtype == "float32" else 1e-8
    for impl, refs in (("numbarnn-cpu", ("torch-cpu",)),
                       ("numbarnn-cuda", ("torch-cuda", "numbarnn-cpu"))):
        ref = next((r for r in refs if r in outputs), None)
        if impl in outputs and ref is not None:
            diff = float(np.max(np.abs(outputs[impl]() - outputs[ref]())))
            diffs[impl] = (ref, diff)
            if not diff <= tol:
                notes.append(f"{cell} {size_name}: {impl} forward differs from {ref} by {diff:.3g}")

    group = []
    for op in OPS:
        times = measure_interleaved({k: v[op] for k, v in ops.items()}, repeat, min_time,
                                    settle=_settle(n))
        flops = layer_flops(cell, T, B, I, H, op)
        for impl, t in times.items():
            peak = gpu_gflops if devices[impl] == "cuda" else cpu_gflops
            gflops = flops / t["median_s"] / 1e9
            row = {
                "kind": "layer", "size": size_name, "T": T, "B": B, "I": I, "H": H,
                "cell": cell, "op": op, "impl": impl, "device": devices[impl],
                "threads": n, "dtype": dtype, "flops": flops, "gflops": gflops,
                "gemm_fraction": gflops / peak if peak else None,
                "ratio": None, "ratio_ceiling": None, "cpu_over_cuda": None, **t,
            }
            if impl in diffs:
                row["max_abs_diff"], row["diff_reference"] = diffs[impl][1], diffs[impl][0]
            group.append(row)
        by_impl = {r["impl"]: r for r in group if r["op"] == op}
        for impl, ref in (("numbarnn-cpu", "torch-cpu"), ("numbarnn-cuda", "torch-cuda")):
            if impl in by_impl and ref in by_impl:
                by_impl[impl]["ratio"] = by_impl[ref]["median_s"] / by_impl[impl]["median_s"]
                # The best ratio possible: numbarnn's GEMMs at the measured GEMM rate and
                # no other work, i.e. torch's time over the GEMM floor.
                fraction = by_impl[ref]["gemm_fraction"]
                by_impl[impl]["ratio_ceiling"] = 1 / fraction if fraction else None
        if "numbarnn-cuda" in by_impl:
            cpu_row = by_impl.get("numbarnn-cpu")
            if cpu_row is None:  # the CPU backend ran in an earlier thread count
                earlier = [r for r in rows if r["kind"] == "layer" and r["impl"] == "numbarnn-cpu"
                           and r["size"] == size_name and r["cell"] == cell and r["op"] == op]
                cpu_row = min(earlier, key=lambda r: r["median_s"]) if earlier else None
            if cpu_row is not None:
                by_impl["numbarnn-cuda"]["cpu_over_cuda"] = (
                    cpu_row["median_s"] / by_impl["numbarnn-cuda"]["median_s"])
    return group


# --------------------------------------------------------------------------- output

_COLUMNS = (
    ("T,B,I,H", 15, "<"), ("cell", 4, "<"), ("op", 7, "<"), ("impl", 13, "<"),
    ("thr", 3, ">"), ("ms", 9, ">"), ("GFLOP/s", 8, ">"), ("%gemm", 5, ">"),
    ("torch/nb", 8, ">"), ("cpu/gpu", 7, ">"),
)


def _fmt_ms(seconds):
    ms = 1e3 * seconds
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def format_table(rows, header=True, header_only=False):
    """The layer rows as a fixed-width table.

    ``torch/nb`` is PyTorch's median time over numbarnn's on the same device (> 1: numbarnn
    is faster); ``cpu/gpu`` is numbarnn's CPU time over its CUDA time; ``%gemm`` is the
    achieved GFLOP/s over the GEMM rate measured in the same run, same threads (the GPU's
    for GPU rows).

    Returns
    -------
    str
    """
    lines = []
    if header or header_only:
        lines.append("  ".join(f"{name:{align}{width}}" for name, width, align in _COLUMNS))
        if header_only:
            return lines[0]
    previous = None
    for r in rows:
        if r.get("kind") != "layer":
            continue
        key = (r["T"], r["B"], r["I"], r["H"], r["cell"], r["op"])
        same = key == previous
        previous = key
        cells = [
            "" if same else f"{r['T']},{r['B']},{r['I']},{r['H']}",
            "" if same else r["cell"],
            "" if same else r["op"],
            r["impl"],
            str(r["threads"]) if r["device"] == "cpu" else "gpu",
            _fmt_ms(r["median_s"]),
            f"{r['gflops']:.1f}",
            f"{100 * r['gemm_fraction']:.0f}%" if r.get("gemm_fraction") else "",
            f"{r['ratio']:.2f}" if r.get("ratio") else "",
            f"{r['cpu_over_cuda']:.2f}" if r.get("cpu_over_cuda") else "",
        ]
        lines.append("  ".join(
            f"{c:{align}{width}}" for c, (_, width, align) in zip(cells, _COLUMNS)).rstrip())
    return "\n".join(lines)


def _ratio_lines(layer, key):
    """One line per device, thread count and size: ``row[key]`` of each cell, fwd / train."""
    def size(r):
        return f"{r['T']},{r['B']},{r['I']},{r['H']}"

    def threads(r):
        return r["threads"] if r["device"] == "cpu" else "gpu"

    keys = []
    for r in layer:
        k = (r["device"], threads(r), size(r))
        if k not in keys:
            keys.append(k)
    lines = []
    for device, thr, sz in keys:
        parts = []
        for cell in GATES:
            vals = {r["op"]: r.get(key) for r in layer if r["cell"] == cell
                    and r["device"] == device and size(r) == sz and threads(r) == thr}
            f, t = vals.get("forward"), vals.get("train")
            if f and t:
                parts.append(f"{cell} {f:.2f} / {t:.2f}")
            elif f or t:
                parts.append(f"{cell} {f or t:.2f}")
        label = f"{thr} thr" if device == "cpu" else "GPU"
        lines.append(f"  {sz:<15} {label:<6} " + " | ".join(parts))
    return lines


def format_summary(result):
    """GEMM rates, a compact ratio summary, the streaming step, compile latency and notes.

    Returns
    -------
    str
    """
    rows = result["rows"]
    lines = []
    gemm = [r for r in rows if r["kind"] == "gemm"]
    if gemm:
        lines.append("GEMM rate: " + ", ".join(
            f"{r['gflops']:.0f} GFLOP/s ({'GPU' if r['device'] == 'cuda' else str(r['threads']) + ' thr'})"
            for r in gemm))
    layer = [r for r in rows if r["kind"] == "layer" and r.get("ratio")]
    if layer:
        lines.append("ratio torch/numbarnn (> 1: numbarnn faster), fwd / train:")
        lines += _ratio_lines(layer, "ratio")
        lines.append("ceiling: the ratio if numbarnn ran at the GEMM floor (torch time over the "
                     "flops at the GEMM rate), fwd / train:")
        lines += _ratio_lines(layer, "ratio_ceiling")
    stream = [r for r in rows if r["kind"] == "streaming"]
    if stream:
        lines.append(f"streaming LSTM step, B=1, I={STREAM_SIZE[0]}, H={STREAM_SIZE[1]} (median us/step):")
        for r in stream:
            ratio = f"  torch/nb {r['ratio']:.2f}" if r.get("ratio") else ""
            lines.append(f"  {r['impl']:<14} {r['threads']} thr {r['median_us']:9.2f} us{ratio}"
                         f"  [{r['method']}]")
    for r in rows:
        if r["kind"] == "compile":
            s = r["second"]
            if r["mode"] == "cold":
                lines.append(
                    f"compile latency (new process: import + first LSTM fwd+bwd, {r['dtype']}): "
                    f"cold cache {r['first']['total_s']:.2f} s, warm cache {s['total_s']:.2f} s "
                    f"(import {s['import_s']:.2f} s; process incl. start-up {s['process_s']:.2f} s)")
            else:
                lines.append(
                    f"compile latency (new process: import + first LSTM fwd+bwd, {r['dtype']}), "
                    f"warm cache: {s['total_s']:.2f} s (import {s['import_s']:.2f} s; process "
                    f"incl. start-up {s['process_s']:.2f} s; first run {r['first']['total_s']:.2f} s)")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def plot(result, path):
    """Bar chart of the torch/numbarnn ratios to ``path``; returns False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    layer = [r for r in result["rows"] if r["kind"] == "layer" and r.get("ratio")]
    labels = [f"{r['cell']} {'fwd' if r['op'] == 'forward' else 'train'} "
              f"{r['T']},{r['B']},{r['I']},{r['H']} "
              f"{str(r['threads']) + ' thr' if r['device'] == 'cpu' else 'GPU'}" for r in layer]
    fig, ax = plt.subplots(figsize=(10, max(3, 0.25 * len(layer) + 1)))
    colors = ["tab:blue" if r["device"] == "cpu" else "tab:green" for r in layer]
    ax.barh(range(len(layer)), [r["ratio"] for r in layer], color=colors)
    ax.set_yticks(range(len(layer)), labels, fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("PyTorch time / numbarnn time (> 1: numbarnn faster; blue CPU, green GPU)")
    ax.set_title(f"numbarnn vs PyTorch, {result['settings']['dtype']} "
                 f"({result['machine']['cpu']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- command line


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _size_arg(text):
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser):
    """Add the ``bench`` options to an :class:`argparse.ArgumentParser`."""
    sizes = ", ".join(f"{k}={','.join(map(str, v))}" for k, v in SIZES.items())
    parser.add_argument("--cells", nargs="+", choices=list(GATES), default=list(GATES),
                        help="cells to time (default: all)")
    parser.add_argument("--sizes", nargs="+", type=_size_arg, metavar="SIZE",
                        help=f"names or T,B,I,H (default: {sizes}; with --quick: "
                             + ", ".join(QUICK_SIZES) + ")")
    parser.add_argument("--threads", nargs="+", type=_positive_int, metavar="N",
                        help="thread counts for Numba, BLAS and torch (default: 1 and the "
                             "available cores)")
    parser.add_argument("--repeat", type=_positive_int, help="samples per implementation "
                        "(default 7; 3 with --quick)")
    parser.add_argument("--min-time", type=float, metavar="S",
                        help="seconds per sample (default 0.05; 0.005 with --quick)")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS),
                        help="numbarnn backends (and PyTorch devices) to time; cuda needs a "
                             "real GPU (default: cpu cuda)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--no-streaming", action="store_true", help="leave the streaming step out")
    parser.add_argument("--compile-latency", choices=("warm", "cold", "none"), default="warm",
                        help="new-process import + first call: 'warm' cache (default), 'cold' "
                             "(a fresh cache directory, then warm), or 'none'")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and short samples: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="write machine info and all rows here")
    parser.add_argument("--plot", metavar="PATH", help="bar chart of the ratios (needs matplotlib)")
    return parser


def run_command(args):
    """Run ``python -m numbarnn bench`` with parsed arguments; returns the exit status."""
    if args.min_time is not None and not args.min_time > 0:
        raise ValueError(f"--min-time: expected a positive number of seconds, got {args.min_time}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("note: matplotlib is not installed: --plot is ignored", file=sys.stderr)
            args.plot = None
    if args.json:
        parent = Path(args.json).resolve().parent
        if not parent.is_dir():
            raise ValueError(f"--json: directory {parent} does not exist")
    sizes = dict(args.sizes) if args.sizes else None
    result = run_benchmarks(
        cells=list(dict.fromkeys(args.cells)),
        sizes=sizes,
        threads=list(dict.fromkeys(args.threads)) if args.threads else None,
        repeat=args.repeat,
        backends=list(dict.fromkeys(args.backends)),
        use_torch=not args.no_torch,
        dtype=args.dtype,
        quick=args.quick,
        streaming=not args.no_streaming,
        compile_mode=args.compile_latency,
        min_time=args.min_time,
        json_path=args.json,
    )
    if args.json:
        print(f"wrote {args.json}")
    if args.plot and plot(result, args.plot):
        print(f"wrote {args.plot}")
    return 0
