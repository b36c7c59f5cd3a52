"""The CPU kernels on several of Numba's threads: forked children."""

import multiprocessing
import os

import numba
import numpy as np
import pytest

import numbarnn


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
