"""Accuracy of the per-element primitives in numbarnn.kernels.cells."""

import numpy as np
import pytest
from numba import njit

from numbarnn.kernels import cells


@njit
def _apply(x, tanh_out, sigmoid_out):
    for k in range(x.size):
        tanh_out[k] = cells.tanh(x[k])
        sigmoid_out[k] = cells.sigmoid(x[k])


def _evaluate(dtype):
    x = np.concatenate([np.linspace(-30, 30, 600_001), [0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30]])
    x = x.astype(dtype)
    t = np.full_like(x, np.nan)
    s = np.full_like(x, np.nan)
    _apply(x, t, s)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):  # exp(1e30) = inf gives sigmoid 0, as it should
        return x, t, s, np.tanh(x64), 1.0 / (1.0 + np.exp(-x64))


def test_float64_primitives_are_libm_exact():
    _, t, s, t_ref, s_ref = _evaluate(np.float64)
    np.testing.assert_array_max_ulp(t, t_ref, maxulp=2)  # libm vs NumPy's tanh
    np.testing.assert_allclose(s, s_ref, rtol=1e-15, atol=0)


def test_float32_tanh_within_a_few_ulp_and_sigmoid_within_2e7():
    _, t, s, t_ref, s_ref = _evaluate(np.float32)
    assert t.dtype == np.float32 and s.dtype == np.float32
    ulp = np.abs(t - t_ref) / np.spacing(np.abs(t_ref).astype(np.float32))
    assert ulp.max() <= 6.0, ulp.max()
    assert np.abs(s - s_ref).max() <= 2.5e-7
    assert np.all(np.abs(t) <= 1) and np.all((s >= 0) & (s <= 1))
    assert t[np.argmax(t_ref)] == 1.0 and s[np.argmin(s_ref)] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cell_functions_keep_the_argument_dtype(dtype):
    @njit
    def lstm(a):
        return cells.lstm_cell_forward(a, a, a, a, a)

    @njit
    def gru_backward(a):
        return cells.gru_cell_backward(a, a, a, a, a, a)

    for f in (lstm, gru_backward):
        f(dtype(0.3))
        (signature,) = f.nopython_signatures
        assert all(str(t) == np.dtype(dtype).name for t in signature.return_type), signature
