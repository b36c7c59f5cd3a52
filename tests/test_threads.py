"""The CPU kernels on several of Numba's threads: the batch rows shared out, forked children."""

import multiprocessing
import os

import numba
import numpy as np
import pytest

import numbarnn
from numbarnn.kernels import cpu
from test_lengths_kernels import GATES
from test_lengths_kernels import _run as run_drivers


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("B", [5, 30])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", list(GATES))
def test_batch_rows_on_threads_bit_for_bit(cell, reverse, B, dtype, numba_threads,
                                           monkeypatch):
    """On two threads each thread runs every step of its block of the batch rows (2 and 3
    of B = 5, 15 and 15 of 30; the backward in two chunks at 30), sequences of ragged
    lengths: outputs, final states, dx and the initial-state gradients are the one-thread
    run's bit for bit, and so are the weight and bias gradients (summed as the strips of
    the weight gradients are packed, on any number of threads, never by a BLAS, even one as
    wide as the micro-kernel)."""
    monkeypatch.setattr(cpu, "_openblas_wide", 1)
    T, I, H = 40, 7, 120
    G = GATES[cell]
    rng = np.random.default_rng([B, reverse, np.dtype(dtype).itemsize])
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    r = lambda *s: rng.uniform(-1, 1, s).astype(dtype)  # noqa: E731
    x, h0, c0, dy, dh_n, dc_n = r(T, B, I), r(B, H), r(B, H), r(T, B, H), r(B, H), r(B, H)
    w = [r(G * H, I), r(G * H, H) * dtype(H**-0.5), r(G * H), r(G * H)]
    runs = []
    for threads in (1, 2):
        numba_threads(threads)
        assert cpu._row_parts(T, B, G, H) == threads
        runs.append(run_drivers(cpu, cell, x, w, h0, c0, dy, dh_n, dc_n, reverse, lengths))
    (y1, finals1, dx1, starts1, grads1), (y2, finals2, dx2, starts2, grads2) = runs
    assert (B == 30) == (cpu._chunk_steps(T, B) < T)
    for name, one, two in [("y", y1, y2), ("dx", dx1, dx2)] + [
        (f"final {k}", a, b) for k, (a, b) in enumerate(zip(finals1, finals2))
    ] + [(f"initial grad {k}", a, b) for k, (a, b) in enumerate(zip(starts1, starts2))]:
        np.testing.assert_array_equal(two, one, err_msg=f"{cell} {name}")
    for name, one, two in zip(("dw_ih", "dw_hh", "db_ih", "db_hh"), grads1, grads2):
        np.testing.assert_array_equal(two, one, err_msg=f"{cell} {name}")


def _forward_in_child(model, x, queue):
    queue.put((numba.get_num_threads(), model(x)[0]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_forked_child_runs_the_kernels(numba_threads):
    """After a forward on two threads in the parent, a forked child runs the kernels on one
    thread (Numba's OpenMP layer would terminate a child that starts a parallel region) and
    gets the parent's one-thread result (BLAS's threads may order its sums differently)."""
    numba_threads(2)
    model = numbarnn.LSTM(64, 128, seed=0)
    x = np.random.default_rng(0).standard_normal((10, 32, 64)).astype(np.float32)
    model(x)  # products and cell math on both threads
    numba.set_num_threads(1)
    expected = model(x)[0]
    numba.set_num_threads(2)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_forward_in_child, args=(model, x, queue))
    child.start()
    try:
        threads, y = queue.get(timeout=120)  # before join: the child exits once it is read
    finally:
        child.join(10)
    assert child.exitcode == 0
    assert threads == (1 if numba.threading_layer() == "omp" else 2)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-6)
