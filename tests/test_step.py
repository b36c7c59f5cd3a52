"""numbarnn.kernels.step: single-step kernels against the layers' forward and the reference.

Every kernel (batch-1 vector, batched with B = 1 and B > 1, stacked layers) is looped over
a random sequence and compared with the layer's ``forward`` on the same weights, and with
the independent float64 reference of ``tests/reference.py``; outputs are poisoned with NaN
before each call, inputs must come back unchanged, and in-place updates (``h_out is h``)
must give the same numbers. A user's own ``@njit`` loop calls the kernels too.
Tolerances: ``atol + rtol * |ref|`` with 1e-5 in float32 and 1e-12 in float64.
"""

import numpy as np
import pytest
from numba import njit

import numbarnn
import reference as ref
from numbarnn.kernels import step

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
DTYPES = (np.float32, np.float64)
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def make_layer(cell, I, H, dtype, num_layers=1, bias=True, seed=0):
    kw = dict(num_layers=num_layers, bias=bias, dtype=dtype, seed=seed)
    if cell == "lstm":
        return numbarnn.LSTM(I, H, **kw)
    if cell == "gru":
        return numbarnn.GRU(I, H, **kw)
    return numbarnn.RNN(I, H, nonlinearity=cell[4:], **kw)


def layer_weights(m, layer=0):
    """(w_ih, w_hh, b_ih, b_hh) of one layer; zeros for a layer without bias."""
    p, s = m.params, f"_l{layer}"
    zeros = np.zeros(p["weight_hh" + s].shape[0], m.dtype)
    return (p["weight_ih" + s], p["weight_hh" + s], p.get("bias_ih" + s, zeros),
            p.get("bias_hh" + s, zeros))


def assert_close(got, expected, dtype, what=""):
    tol = TOL[dtype]
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, err_msg=what)


def run_steps(cell, kernel, x, weights, h0, c0, in_place):
    """Loop ``kernel`` over the steps of ``x``; return the outputs of every step and the
    final states. Each output array is poisoned with NaN first; inputs must not change."""
    T = x.shape[0]
    h, c = h0.copy(), c0.copy()
    before = [a.copy() for a in (x, *weights)]
    ys = []
    for t in range(T):
        if in_place:
            h_out, c_out = h, c
        else:
            h_out, c_out = np.full_like(h, np.nan), np.full_like(c, np.nan)
        h_prev, c_prev = h.copy(), c.copy()
        if cell == "lstm":
            kernel(x[t], *weights, h, c, h_out, c_out)
        elif cell == "gru":
            kernel(x[t], *weights, h, h_out)
        else:
            kernel(x[t], *weights, h, cell == "rnn_relu", h_out)
        if not in_place:  # the state before the step is an input: unchanged
            np.testing.assert_array_equal(h, h_prev)
            np.testing.assert_array_equal(c, c_prev)
        h, c = h_out, c_out
        ys.append(h.copy())
    for a, b in zip(before, (x, *weights)):
        np.testing.assert_array_equal(a, b)
    return np.array(ys), h, c


KERNELS = {
    "rnn_tanh": (step.rnn_step_vector, step.rnn_step),
    "rnn_relu": (step.rnn_step_vector, step.rnn_step),
    "lstm": (step.lstm_step_vector, step.lstm_step),
    "gru": (step.gru_step_vector, step.gru_step),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch", [None, 1, 3])  # None: the batch-1 vector kernel
@pytest.mark.parametrize("in_place", [False, True])
def test_looped_step_equals_layer_forward_and_reference(cell, dtype, batch, in_place):
    rng = np.random.default_rng([CELLS.index(cell), batch or 0, in_place])
    T, I, H = 7, 3, 5
    bias = batch != 3  # also a layer without bias (zero biases passed in)
    m = make_layer(cell, I, H, dtype, bias=bias, seed=1).eval()
    weights = layer_weights(m)
    shape = (H,) if batch is None else (batch, H)
    x = rng.standard_normal((T,) + shape[:-1] + (I,)).astype(dtype)
    h0 = rng.standard_normal(shape).astype(dtype)
    c0 = rng.standard_normal(shape).astype(dtype)
    kernel = KERNELS[cell][0 if batch is None else 1]

    ys, h_n, c_n = run_steps(cell, kernel, x, weights, h0, c0, in_place)

    state = (h0[None], c0[None]) if cell == "lstm" else h0[None]
    y_layer, final = m(x, state)  # x (T, I) unbatched for the vector kernel
    assert_close(ys, y_layer, dtype, "y vs forward")
    assert_close(h_n, (final[0] if cell == "lstm" else final)[0], dtype, "h_n vs forward")
    if cell == "lstm":
        assert_close(c_n, final[1][0], dtype, "c_n vs forward")

    x3 = x[:, None] if batch is None else x
    h03 = h0[None] if batch is None else h0
    c03 = c0[None] if batch is None else c0
    y_ref, h_ref, c_ref, _ = ref.layer_forward(
        cell, x3, *weights, h03, c03 if cell == "lstm" else None
    )
    assert_close(ys, y_ref.reshape(ys.shape), dtype, "y vs reference")
    if cell == "lstm":
        assert_close(c_n, c_ref.reshape(c_n.shape), dtype, "c_n vs reference")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_single_step_equals_forward_with_T_1(cell, dtype):
    rng = np.random.default_rng(7)
    B, I, H = 4, 6, 9  # H not a multiple of the 4 rows the batch-1 product takes at once
    m = make_layer(cell, I, H, dtype, seed=2).eval()
    x = rng.standard_normal((1, B, I)).astype(dtype)
    h0, c0 = (rng.standard_normal((1, B, H)).astype(dtype) for _ in range(2))
    y, final = m(x, (h0, c0) if cell == "lstm" else h0)
    w = layer_weights(m)
    for b in range(B):  # batch-1 vector kernel, row by row
        h_out, c_out = np.full(H, np.nan, dtype), np.full(H, np.nan, dtype)
        if cell == "lstm":
            step.lstm_step_vector(x[0, b], *w, h0[0, b], c0[0, b], h_out, c_out)
            assert_close(c_out, final[1][0, b], dtype)
        elif cell == "gru":
            step.gru_step_vector(x[0, b], *w, h0[0, b], h_out)
        else:
            step.rnn_step_vector(x[0, b], *w, h0[0, b], cell == "rnn_relu", h_out)
        assert_close(h_out, y[0, b], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch", [1, 2])
def test_stacked_layers_step_equals_two_layer_forward(cell, dtype, batch):
    rng = np.random.default_rng(3)
    T, L, I, H = 5, 2, 3, 4
    m = make_layer(cell, I, H, dtype, num_layers=L, seed=4).eval()
    per_layer = [layer_weights(m, k) for k in range(L)]
    weights = tuple(tuple(w) for w in zip(*per_layer))  # (w_ih, w_hh, b_ih, b_hh) tuples
    x = rng.standard_normal((T, batch, I)).astype(dtype)
    h = rng.standard_normal((L, batch, H)).astype(dtype)
    c = rng.standard_normal((L, batch, H)).astype(dtype)
    y_layer, final = m(x, (h, c) if cell == "lstm" else h)
    for t in range(T):
        if cell == "lstm":
            step.lstm_layers_step(x[t], *weights, h, c, h, c)  # in place
        elif cell == "gru":
            step.gru_layers_step(x[t], *weights, h, h)
        else:
            step.rnn_layers_step(x[t], *weights, h, cell == "rnn_relu", h)
        assert_close(h[-1], y_layer[t], dtype, f"step {t}")
    assert_close(h, final[0] if cell == "lstm" else final, dtype)
    if cell == "lstm":
        assert_close(c, final[1], dtype)


# --------------------------------------------------------------------------- user code


@njit
def user_controlled_simulation(x0, w_ih, w_hh, b_ih, b_hh, w_out, gain, steps):
    """A user's @njit loop: the LSTM's output, through a linear read-out, is fed back as
    the next input (a closed loop no sequence-level API can run)."""
    H = w_hh.shape[1]
    h = np.zeros(H, dtype=x0.dtype)
    c = np.zeros(H, dtype=x0.dtype)
    x = x0.copy()
    trace = np.empty((steps, H), dtype=x0.dtype)
    inputs = np.empty((steps, x0.shape[0]), dtype=x0.dtype)
    for t in range(steps):
        inputs[t] = x
        step.lstm_step_vector(x, w_ih, w_hh, b_ih, b_hh, h, c, h, c)
        trace[t] = h
        x = gain * np.tanh(w_out @ h)
    return trace, inputs


@pytest.mark.parametrize("dtype", DTYPES)
def test_user_njit_loop_matches_layer_forward(dtype):
    rng = np.random.default_rng(5)
    I, H, steps = 3, 6, 12
    m = numbarnn.LSTM(I, H, dtype=dtype, seed=6).eval()
    w_out = rng.standard_normal((I, H)).astype(dtype)
    x0 = rng.standard_normal(I).astype(dtype)
    trace, inputs = user_controlled_simulation(x0, *layer_weights(m), w_out, dtype(0.9), steps)
    # The same closed loop could not run through forward, but its inputs, once known, can.
    y, _ = m(inputs)
    assert_close(trace, y, dtype)
    assert np.abs(np.diff(trace, axis=0)).max() > 1e-3  # the loop did move
