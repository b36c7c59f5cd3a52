"""The CUDA drivers (numbarnn.kernels.cuda) against the CPU drivers (numbarnn.kernels.cpu).

Runs under Numba's CUDA simulator (pytest-env sets ``NUMBA_ENABLE_CUDASIM=1`` before numba
is imported), where the array module is NumPy and each simulated thread costs ~150 us,
so the sizes are tiny. ``THREADS_PER_BLOCK`` is shrunk so that B*H = 10 elements span
several blocks with a ragged last block. Every case checks:

* every output and gradient against the CPU driver on the same random inputs
  (float64 to 1e-12, float32 to 1e-5 as ``atol + rtol*|ref|``);
* outputs poisoned with NaN before the call, so an unwritten element fails;
* weight and bias gradients accumulated onto random initial values (``+=``);
* inputs, and the saved forward arrays handed to backward, left unchanged.

The same body runs on a real GPU with CuPy arrays (marker ``realgpu``).
"""

import numpy as np
import pytest
from numba import config

from numbarnn.kernels import cpu
from numbarnn.kernels import cuda as gpu

T, B, I, H = 3, 2, 3, 5  # B*H = 10 threads per launch
CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
GRAD_NAMES = ("dw_ih", "dw_hh", "db_ih", "db_hh")


def _draw(cell, dtype, seed):
    """Random nonzero inputs, cotangents and initial gradient values of one case."""
    rng = np.random.default_rng(seed)
    G = GATES[cell]

    def r(*shape, scale=1.0):
        return (scale * rng.uniform(-1.0, 1.0, shape)).astype(dtype)

    p = dict(
        x=r(T, B, I), w_ih=r(G * H, I, scale=0.8), w_hh=r(G * H, H, scale=0.8),
        b_ih=r(G * H, scale=0.5), b_hh=r(G * H, scale=0.5),
        h0=r(B, H), c0=r(B, H), dy=r(T, B, H), dh_n=r(B, H), dc_n=r(B, H),
        # the first sequence runs all T steps, the others end early for most seeds
        lengths=np.array([T] + [1 + (seed + b) % T for b in range(1, B)], dtype=np.int64),
    )
    grads0 = dict(
        dw_ih=r(G * H, I), dw_hh=r(G * H, H), db_ih=r(G * H), db_hh=r(G * H)
    )
    return p, grads0


def _empty(shape, dtype, to_dev):
    """An output array poisoned with NaN, so that an unwritten element shows."""
    return to_dev(np.full(shape, np.nan, dtype=dtype))


def _run(mod, cell, p, grads0, reverse, to_dev, to_host):
    """Forward then backward of driver module ``mod``; returns every result on the host.

    Also asserts that the inputs and the saved forward arrays were left unchanged.
    """
    dtype = p["x"].dtype.type
    p_before = {k: v.copy() for k, v in p.items()}
    d = {k: to_dev(v) for k, v in p.items()}
    grads = {k: to_dev(v.copy()) for k, v in grads0.items()}
    out = {}
    fwd = dict(
        y=_empty((T, B, H), dtype, to_dev), h_n=_empty((B, H), dtype, to_dev),
        dx=_empty((T, B, I), dtype, to_dev), dh0=_empty((B, H), dtype, to_dev),
    )
    x, w_ih, w_hh, b_ih, b_hh, h0, lengths = (
        d[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "lengths")
    )
    if cell.startswith("rnn"):
        relu = cell == "rnn_relu"
        mod.rnn_forward(
            x, w_ih, w_hh, b_ih, b_hh, h0, reverse, lengths, relu, fwd["y"], fwd["h_n"]
        )
        saved = ("y",)
        snap = {k: to_host(fwd[k]).copy() for k in saved}
        mod.rnn_backward(
            x, w_ih, w_hh, h0, reverse, lengths, relu, fwd["y"], d["dy"], d["dh_n"],
            fwd["dx"], fwd["dh0"], *(grads[k] for k in GRAD_NAMES),
        )
    elif cell == "lstm":
        fwd.update(
            c=_empty((T, B, H), dtype, to_dev), gates=_empty((T, B, 4 * H), dtype, to_dev),
            c_n=_empty((B, H), dtype, to_dev), dc0=_empty((B, H), dtype, to_dev),
        )
        mod.lstm_forward(
            x, w_ih, w_hh, b_ih, b_hh, h0, d["c0"], reverse, lengths,
            fwd["y"], fwd["c"], fwd["gates"], fwd["h_n"], fwd["c_n"],
        )
        saved = ("y", "c", "gates")
        snap = {k: to_host(fwd[k]).copy() for k in saved}
        mod.lstm_backward(
            x, w_ih, w_hh, h0, d["c0"], reverse, lengths, fwd["y"], fwd["c"], fwd["gates"],
            d["dy"], d["dh_n"], d["dc_n"], fwd["dx"], fwd["dh0"], fwd["dc0"],
            *(grads[k] for k in GRAD_NAMES),
        )
    else:
        fwd.update(
            gates=_empty((T, B, 3 * H), dtype, to_dev),
            h_n_proj=_empty((T, B, H), dtype, to_dev),
        )
        mod.gru_forward(
            x, w_ih, w_hh, b_ih, b_hh, h0, reverse, lengths,
            fwd["y"], fwd["gates"], fwd["h_n_proj"], fwd["h_n"],
        )
        saved = ("y", "gates", "h_n_proj")
        snap = {k: to_host(fwd[k]).copy() for k in saved}
        mod.gru_backward(
            x, w_ih, w_hh, h0, reverse, lengths, fwd["y"], fwd["gates"], fwd["h_n_proj"],
            d["dy"], d["dh_n"], fwd["dx"], fwd["dh0"], *(grads[k] for k in GRAD_NAMES),
        )
    for k, v in p_before.items():
        np.testing.assert_array_equal(to_host(d[k]), v, err_msg=f"input {k} was modified")
    for k in saved:
        np.testing.assert_array_equal(
            to_host(fwd[k]), snap[k], err_msg=f"backward modified saved {k}"
        )
    out.update({k: to_host(v) for k, v in fwd.items()})
    out.update({k: to_host(v) for k, v in grads.items()})
    return out


def _check_against_cpu(cell, dtype, reverse, seed, to_dev, to_host, state_layout):
    """Run the CUDA drivers and the CPU drivers on one case and compare everything."""
    p, grads0 = _draw(cell, dtype, seed)
    # The CPU reference starts its gradients from zero; the CUDA run from random values,
    # so "accumulated, not overwritten" is checked without trusting the reference on it.
    zeros = {k: np.zeros_like(v) for k, v in grads0.items()}
    ref = _run(cpu, cell, p, zeros, reverse, _host, _host)
    # h0, c0, dh_n, dc_n may have any layout: state_layout can make them non-contiguous.
    p_gpu = dict(p)
    for k in ("h0", "c0", "dh_n", "dc_n"):
        p_gpu[k] = state_layout(p[k])
    got = _run(gpu, cell, p_gpu, grads0, reverse, to_dev, to_host)
    for k in GRAD_NAMES:
        ref[k] = ref[k] + grads0[k]
    assert set(got) == set(ref)
    for k in sorted(ref):
        assert got[k].dtype == dtype, k
        assert not np.isnan(got[k]).any(), f"{k} has unwritten (NaN) elements"
        np.testing.assert_allclose(got[k], ref[k], err_msg=k, **TOL[dtype])


def _fortran(a):
    """``a`` in Fortran order: a non-contiguous (B, H) array."""
    return np.asfortranarray(a)


def _host(a):
    """Identity: NumPy arrays are the simulator's device arrays."""
    return a


# --------------------------------------------------------------------------- simulator

sim_only = pytest.mark.skipif(
    not config.ENABLE_CUDASIM,
    reason="needs NUMBA_ENABLE_CUDASIM=1 (set by pytest-env); the realgpu tests cover a device",
)


@sim_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_cpu(cell, reverse, dtype, monkeypatch):
    """10 elements on blocks of 3 threads: 4 blocks, the last one ragged."""
    monkeypatch.setattr(gpu, "THREADS_PER_BLOCK", 3)
    # Non-contiguous initial states and final-state gradients in half of the cases.
    layout = _fortran if reverse else _host
    _check_against_cpu(cell, dtype, reverse, 1000 + CELLS.index(cell), _host, _host, layout)


@sim_only
@pytest.mark.parametrize("tpb", [1, 10, 256])
def test_block_sizes(tpb, monkeypatch):
    """One thread per block, exactly one full block, one block mostly idle."""
    monkeypatch.setattr(gpu, "THREADS_PER_BLOCK", tpb)
    _check_against_cpu("lstm", np.float64, True, 7, _host, _host, _host)


@sim_only
def test_grid_reads_threads_per_block_at_launch(monkeypatch):
    """The grid is ceil(n / THREADS_PER_BLOCK) of the value current at launch."""
    seen = []

    class Spy:
        def __getitem__(self, config):
            seen.append(config[:2])
            return lambda *args: None

    for tpb, n, blocks in [(3, 10, 4), (5, 10, 2), (256, 10, 1), (4, 0, 1)]:
        monkeypatch.setattr(gpu, "THREADS_PER_BLOCK", tpb)
        gpu._launch(Spy(), n, 0)
        assert seen[-1] == (blocks, tpb)


def test_array_module_and_kernel_list():
    """NumPy under the simulator; every kernel of the module is in the PTX list."""
    if config.ENABLE_CUDASIM:
        assert gpu.array_module() is np
    from numba import types

    listed = {k.py_func.__name__ for k, _ in gpu.kernel_signatures(types.float64)}
    defined = {
        name for name in vars(gpu)
        if name.endswith("_step") and callable(getattr(gpu, name))
    }
    assert listed == defined == {
        f"_{cell}_{direction}_step"
        for cell in ("rnn", "lstm", "gru") for direction in ("forward", "backward")
    }


def test_non_contiguous_output_is_rejected():
    """A GEMM cannot write through a copy: a non-contiguous y must raise, not be ignored."""
    if not config.ENABLE_CUDASIM:
        pytest.skip("NumPy arrays are the simulator's device arrays")
    p, _ = _draw("rnn_tanh", np.float64, 3)
    y = np.empty((B, T, H)).transpose(1, 0, 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        gpu.rnn_forward(
            p["x"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], p["h0"], False, p["lengths"],
            False, y, np.empty((B, H)),
        )


# --------------------------------------------------------------------------- real GPU


def _cupy_or_skip():
    if config.ENABLE_CUDASIM:
        pytest.skip("the CUDA simulator is on (run with NUMBA_ENABLE_CUDASIM=0)")
    cupy = pytest.importorskip("cupy")
    from numba import cuda

    if not cuda.is_available():
        pytest.skip("no CUDA device")
    return cupy


@pytest.mark.realgpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tpb", [3, 256])
def test_matches_cpu_realgpu(cell, reverse, dtype, tpb, monkeypatch):
    cupy = _cupy_or_skip()
    monkeypatch.setattr(gpu, "THREADS_PER_BLOCK", tpb)
    layout = _fortran if reverse else _host
    _check_against_cpu(
        cell, dtype, reverse, 2000 + CELLS.index(cell), cupy.asarray, cupy.asnumpy, layout
    )
