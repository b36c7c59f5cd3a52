"""numbarnn.kernels called from a user's own @njit code, outside the package."""

import numpy as np
from numba import njit

import numbarnn
from numbarnn.kernels import cells, cpu


@njit
def user_lstm_pipeline(x, w_ih, w_hh, b_ih, b_hh, scale):
    """A user's numeric pipeline: preprocess, run the LSTM driver, postprocess."""
    T, B, _ = x.shape
    H = w_hh.shape[1]
    x_scaled = x * scale
    h0 = np.zeros((B, H), dtype=x.dtype)
    c0 = np.zeros((B, H), dtype=x.dtype)
    y = np.empty((T, B, H), dtype=x.dtype)
    c = np.empty((T, B, H), dtype=x.dtype)
    gates = np.empty((T, B, 4 * H), dtype=x.dtype)
    h_n = np.empty((B, H), dtype=x.dtype)
    c_n = np.empty((B, H), dtype=x.dtype)
    lengths = np.full(B, T, dtype=np.int64)
    cpu.lstm_forward(x_scaled, w_ih, w_hh, b_ih, b_hh, h0, c0, False, lengths, y, c, gates, h_n, c_n)
    return y, h_n


@njit
def user_gru_loop(x, w_ih, w_hh, b_ih, b_hh):
    """A user's own time loop over the per-element GRU function (batch 1, no BLAS)."""
    T, I = x.shape
    H = w_hh.shape[1]
    h = np.zeros(H, dtype=x.dtype)
    out = np.empty((T, H), dtype=x.dtype)
    for t in range(T):
        xp = w_ih @ x[t] + b_ih
        hp = w_hh @ h + b_hh
        h_new = np.empty(H, dtype=x.dtype)
        for j in range(H):
            _, _, _, h_new[j] = cells.gru_cell_forward(
                xp[j], xp[H + j], xp[2 * H + j], hp[j], hp[H + j], hp[2 * H + j], h[j]
            )
        h = h_new
        out[t] = h
    return out


def test_user_njit_calls_lstm_driver_like_layer_forward():
    rng = np.random.default_rng(0)
    model = numbarnn.LSTM(3, 5, dtype=np.float64, seed=1)
    x = rng.standard_normal((6, 2, 3))
    p = model.params
    y, h_n = user_lstm_pipeline(
        x, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"], 0.5
    )
    y_ref, (h_ref, _) = model(x * 0.5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=0)
    np.testing.assert_allclose(h_n, h_ref[0], rtol=1e-13, atol=0)


def test_user_njit_loop_over_cell_function_matches_gru_layer():
    rng = np.random.default_rng(1)
    model = numbarnn.GRU(4, 3, dtype=np.float64, seed=2)
    x = rng.standard_normal((7, 4))
    p = model.params
    out = user_gru_loop(x, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"])
    y_ref, _ = model(x)  # unbatched input (T, I)
    np.testing.assert_allclose(out, y_ref, rtol=1e-12, atol=1e-15)
