"""Variable lengths in the drivers: a padded batch equals each sequence run on its own.

For every cell, direction and backend, a batch whose sequences end early must give, for
each sequence b of length L, what the same driver gives on that sequence alone truncated
to L steps: outputs at t < L, the final state, dx at t < L, the initial-state gradients and
the weight gradients (summed over the batch). Past the end, y holds the carried state
and dx is zero.
"""

import numpy as np
import pytest

import numbarnn
from numbarnn.kernels import cpu
from numbarnn.kernels import cuda as gpu

T, B, I, H = 4, 3, 2, 3
LENGTHS = np.array([4, 1, 3], dtype=np.int64)
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def _run(mod, cell, x, w, h0, c0, dy, dh_n, dc_n, reverse, lengths):
    """Forward + backward; returns y, final states, dx, initial-state grads, weight grads."""
    T_, B_, _ = x.shape
    H = h0.shape[1]
    dtype = x.dtype
    y, h_n, dx, dh0 = (np.full(s, np.nan, dtype) for s in ((T_, B_, H), (B_, H), x.shape, (B_, H)))
    grads = [np.zeros_like(a) for a in w]
    if cell.startswith("rnn"):
        relu = cell == "rnn_relu"
        mod.rnn_forward(x, *w, h0, reverse, lengths, relu, y, h_n)
        mod.rnn_backward(x, w[0], w[1], h0, reverse, lengths, relu, y, dy, dh_n, dx, dh0, *grads)
        return y, [h_n], dx, [dh0], grads
    G = GATES[cell]
    gates = np.full((T_, B_, G * H), np.nan, dtype)
    if cell == "lstm":
        c, c_n, dc0 = np.full((T_, B_, H), np.nan, dtype), np.empty((B_, H), dtype), np.empty((B_, H), dtype)
        mod.lstm_forward(x, *w, h0, c0, reverse, lengths, y, c, gates, h_n, c_n)
        mod.lstm_backward(x, w[0], w[1], h0, c0, reverse, lengths, y, c, gates, dy, dh_n, dc_n,
                          dx, dh0, dc0, *grads)
        return y, [h_n, c_n], dx, [dh0, dc0], grads
    hnp = np.full((T_, B_, H), np.nan, dtype)
    mod.gru_forward(x, *w, h0, reverse, lengths, y, gates, hnp, h_n)
    mod.gru_backward(x, w[0], w[1], h0, reverse, lengths, y, gates, hnp, dy, dh_n, dx, dh0, *grads)
    return y, [h_n], dx, [dh0], grads


@pytest.mark.parametrize("backend, chunked", [("cpu", False), ("cuda", False), ("cpu", True)],
                         ids=["cpu", "cuda", "cpu-chunked"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", list(GATES))
def test_padded_batch_equals_each_sequence_alone(cell, reverse, backend, chunked):
    """``chunked``: T = 40, B = 64, so that the CPU backward sweeps the batch in chunks of
    16 steps (the last one partial) while each sequence alone is one chunk."""
    if backend == "cuda" and not numbarnn.get_backend("cuda").simulated:
        pytest.skip("checked in the simulator; real GPUs run tests/test_cuda_sim.py")
    mod = cpu if backend == "cpu" else gpu
    rng = np.random.default_rng(7)
    T, B = (40, 64) if chunked else (4, 3)
    lengths = rng.integers(1, T + 1, B) if chunked else LENGTHS
    if chunked:
        assert cpu._chunk_steps(T, B) == 16 and lengths.max() > 32 and np.any(lengths % 16)
    G = GATES[cell]
    r = lambda *s: rng.uniform(-1, 1, s)  # noqa: E731
    x, h0, c0, dy, dh_n, dc_n = r(T, B, I), r(B, H), r(B, H), r(T, B, H), r(B, H), r(B, H)
    w = [r(G * H, I), r(G * H, H), r(G * H), r(G * H)]
    y, finals, dx, dstarts, grads = _run(mod, cell, x, w, h0, c0, dy, dh_n, dc_n, reverse, lengths)
    total = [np.zeros_like(a) for a in w]
    for b, L in enumerate(lengths):
        one = lambda a: np.ascontiguousarray(a[:L, b : b + 1])  # noqa: E731
        row = lambda a: np.ascontiguousarray(a[b : b + 1])  # noqa: E731
        y1, finals1, dx1, dstarts1, grads1 = _run(
            mod, cell, one(x), w, row(h0), row(c0), one(dy), row(dh_n), row(dc_n), reverse,
            np.array([L], dtype=np.int64),
        )
        np.testing.assert_allclose(y[:L, b], y1[:, 0], rtol=1e-12, atol=1e-14)
        for got, want in zip(finals, finals1):
            np.testing.assert_allclose(got[b], want[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dx[:L, b], dx1[:, 0], rtol=1e-12, atol=1e-14)
        assert np.all(dx[L:, b] == 0)
        for got, want in zip(dstarts, dstarts1):
            np.testing.assert_allclose(got[b], want[0], rtol=1e-12, atol=1e-14)
        # past the end y holds the carried state: the final one forward, h0 in reverse
        carried = h0[b] if reverse else y1[-1, 0]
        np.testing.assert_allclose(y[L:, b], np.broadcast_to(carried, y[L:, b].shape), rtol=1e-12)
        for acc, g in zip(total, grads1):
            acc += g
    for got, want in zip(grads, total):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
