"""The CPU kernels on several of Numba's threads: the batch rows shared out, each step of a
batch of one shared by two threads, forked children."""

import multiprocessing
import os

import numba
import numpy as np
import pytest
from numba import njit

import numbarnn
from numbarnn.kernels import cpu, gemm
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


def _batch_one_case(cell, T, length, H, seed):
    """Inputs of a batch-1 run of ``T`` steps, the sequence ``length`` long."""
    I, G = 7, GATES[cell]
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.uniform(-1, 1, s).astype(np.float32)  # noqa: E731
    w = [r(G * H, I), r(G * H, H) * np.float32(H**-0.5), r(G * H), r(G * H)]
    return (r(T, 1, I), w, r(1, H), r(1, H), r(T, 1, H), r(1, H), r(1, H),
            np.array([length], np.int64))


@pytest.mark.parametrize("T, length", [(40, 40), (40, 29), (1030, 1030)],
                         ids=["full", "padded", "two-chunks"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", list(GATES))
def test_batch_one_steps_shared_by_two_threads_bit_for_bit(cell, T, length, reverse,
                                                           numba_threads):
    """At batch 1 on two threads each step's product is shared by both (half the panels
    each) and one runs the cell math, forward and backward (over two chunks of steps at
    T = 1030): every output and gradient is the one-thread run's bit for bit, and a
    sequence that ends early passes its gradients through the padded steps."""
    # Two of the one-row kernel's panels (128 columns each with AVX-512, 64 with AVX2) in the
    # backward's product, whose output is H wide: halves to share.
    H = 2 * gemm.panel_width(4, 1)
    x, w, h0, c0, dy, dh_n, dc_n, lengths = _batch_one_case(cell, T, length, H, T + length)
    runs = []
    for threads in (1, 2):
        numba_threads(threads)
        for panels in (cpu._pack_weights(w[1].T, 1, T), cpu._pack_weights(w[1], 1, T)):
            assert (cpu._step_counters(1, panels).shape[0] > 0) == (threads == 2)
        runs.append(run_drivers(cpu, cell, x, w, h0, c0, dy, dh_n, dc_n, reverse, lengths))
    assert (T > cpu._chunk_steps(T, 1)) == (T == 1030)
    for k, (one, two) in enumerate(zip(*runs)):
        for a, b in zip(one, two) if isinstance(one, list) else [(one, two)]:
            np.testing.assert_array_equal(b, a, err_msg=f"{cell} output {k}")


@njit
def _shared_forward_parts_one_after_the_other(x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, y,
                                              c, gates):
    """The two parts of a shared batch-1 LSTM forward run in turn on this thread, the second
    first, as a scheduler may run a parallel loop's iterations."""
    T, B, _ = x.shape
    H = h0.shape[1]
    cpu._project_input(x, w_ih, gates.reshape((T * B, 4 * H)))
    h_proj = np.empty((B, 4 * H), dtype=x.dtype)
    panels = cpu._pack_weights(w_hh.T, B, T)
    counters = gemm.share_counters()
    for part in (1, 0):
        cpu._lstm_forward_span(0, B, False, lengths, None, panels, b_ih, b_hh, h0, c0, h_proj,
                               gates, y, c, counters, part)
    return counters


def test_shared_steps_complete_on_one_thread():
    """Parts of a shared step wait only for work another part has taken: run one after the
    other, the first does every step and the second finds nothing left (even its own
    halves), and the result is the driver's."""
    T, H = 20, 128
    x, w, h0, c0, _, _, _, lengths = _batch_one_case("lstm", T, T, H, seed=3)
    y, c, gates = (np.full((T, 1, n), np.nan, np.float32) for n in (H, H, 4 * H))
    counters = _shared_forward_parts_one_after_the_other(x, *w, h0, c0, lengths, y, c, gates)
    assert counters[2 * gemm._COUNTER_STRIDE] == 3 * T  # every token finished, once
    expected, _, _, _, _ = run_drivers(cpu, "lstm", x, w, h0, c0, np.zeros_like(y), h0, c0,
                                       False, lengths)
    np.testing.assert_array_equal(y, expected)


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
