"""Central-difference gradient checks of whole layers, in float64.

For ``L = sum(y * w) + sum(h_n * w_h) [+ sum(c_n * w_c)]`` with random ``w``, every element
of ``dx``, of every initial-state gradient and of every parameter gradient in ``m.grads``
is compared with ``(L(p + eps) - L(p - eps)) / (2 eps)``, where each ``L`` is a full
forward in eval mode. Relative error ``max|num - ana| / max|num|`` must stay below 1e-6.
"""

import numpy as np
import pytest

import numbarnn

EPS = 1e-6
RTOL = 1e-6


def _make(mode, I, H, **kw):
    if mode in ("rnn_tanh", "rnn_relu"):
        return numbarnn.RNN(I, H, nonlinearity=mode[4:], dtype=np.float64, **kw)
    cls = {"lstm": numbarnn.LSTM, "gru": numbarnn.GRU}[mode]
    return cls(I, H, dtype=np.float64, **kw)


# (mode, num_layers, bidirectional, batch_first, bias, unbatched)
CONFIGS = [
    ("rnn_tanh", 2, True, True, True, False),
    ("rnn_relu", 2, True, True, True, False),
    ("lstm", 2, True, True, True, False),
    ("gru", 2, True, True, True, False),
    ("lstm", 2, True, False, False, False),
    ("gru", 1, True, True, False, False),
    ("rnn_tanh", 2, True, False, True, True),
    ("lstm", 1, False, False, True, True),
    ("rnn_relu", 1, False, False, False, False),
    ("lstm", 1, False, False, True, False),
    ("gru", 1, False, True, True, False),
]


def _cid(c):
    mode, L, bi, bf, bias, unb = c
    return "-".join([mode, f"L{L}", "bi" if bi else "uni", "bf" if bf else "tf",
                     "bias" if bias else "nobias"] + (["unbatched"] if unb else []))


def _numeric_grad(arr, loss):
    """Central differences of ``loss()`` w.r.t. every element of ``arr`` (perturbed in place)."""
    num = np.zeros(arr.shape)
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        arr[idx] = old + EPS
        lp = loss()
        arr[idx] = old - EPS
        lm = loss()
        arr[idx] = old
        num[idx] = (lp - lm) / (2 * EPS)
    return num


def _check(name, num, ana):
    assert ana.shape == num.shape, f"{name}: analytic shape {ana.shape} != {num.shape}"
    assert np.all(np.isfinite(ana)), f"{name}: non-finite analytic gradient"
    scale = np.max(np.abs(num))
    assert scale > 1e-4, f"{name}: numerical gradient ~0, the check would be vacuous"
    rel = np.max(np.abs(num - ana)) / scale
    assert rel < RTOL, f"{name}: relative error {rel:.2e} (max |num| {scale:.2e})"


@pytest.mark.parametrize("config", CONFIGS, ids=_cid)
def test_layer_gradients_by_central_differences(config):
    mode, L, bi, bf, bias, unbatched = config
    T, B, I, H = 3, 2, 3, 3
    D = 2 if bi else 1
    rng = np.random.default_rng([17, CONFIGS.index(config)])
    m = _make(mode, I, H, num_layers=L, bias=bias, batch_first=bf, bidirectional=bi,
              seed=rng.integers(1 << 30))
    # Larger weights than the default init, so that the nonlinearities are exercised.
    for p in m.params.values():
        p[...] = rng.uniform(-0.9, 0.9, p.shape)
    if unbatched:
        x_shape, s_shape = (T, I), (L * D, H)
    else:
        x_shape, s_shape = ((B, T, I) if bf else (T, B, I)), (L * D, B, H)
    y_shape = x_shape[:-1] + (D * H,)
    x = rng.standard_normal(x_shape)
    states = [rng.standard_normal(s_shape) for _ in range(2 if mode == "lstm" else 1)]
    w_y = rng.standard_normal(y_shape)
    w_s = [rng.standard_normal(s_shape) for _ in states]

    def pack(s):
        return tuple(s) if mode == "lstm" else s[0]

    def unpack(s):
        return list(s) if mode == "lstm" else [s]

    def loss():
        m.eval()
        y, fin = m(x, pack(states))
        return np.sum(y * w_y) + sum(np.sum(f * w) for f, w in zip(unpack(fin), w_s))

    # analytic
    m.train()
    m.zero_grad()
    y, fin = m(x, pack(states))
    assert y.shape == y_shape
    dx, dstate0 = m.backward(w_y, pack(w_s))
    dstate0 = unpack(dstate0)
    grads = {k: v.copy() for k, v in m.grads.items()}
    assert set(grads) == set(m.params)

    _check("dx", _numeric_grad(x, loss), dx)
    for k, (s, ds) in enumerate(zip(states, dstate0)):
        _check(["dh0", "dc0"][k], _numeric_grad(s, loss), ds)
    for name, p in m.params.items():
        _check(name, _numeric_grad(p, loss), grads[name])
