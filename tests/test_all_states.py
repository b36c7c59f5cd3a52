"""``forward(..., return_all_states=True)``: the state of every step, layer and direction.

Checked against the independent float64 reference (``tests/reference.py``, layer by layer
and direction by direction), against ``step`` for unidirectional layers, and for its
layouts (time-first, batch-first, unbatched), with ``lengths`` (zeros past each end) and
with dropout. Tolerances: ``atol + rtol * |ref|`` with 1e-5 in float32 and 1e-12 in float64.
"""

import numpy as np
import pytest

import numbarnn
import reference as ref
from numbarnn import GRU, LSTM, RNN

CELLS = [("rnn_tanh", RNN, {"nonlinearity": "tanh"}), ("rnn_relu", RNN, {"nonlinearity": "relu"}),
         ("lstm", LSTM, {}), ("gru", GRU, {})]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def assert_close(got, expected, dtype, what=""):
    np.testing.assert_allclose(got, expected, rtol=TOL[dtype], atol=TOL[dtype], err_msg=what)


def split(all_states, lstm):
    return all_states if lstm else (all_states, None)


def reference_states(mode, x, params, num_layers, D, h0, c0):
    """(L*D, T, B, H) hidden and cell states from the reference, layer by layer."""
    hs, cs = [], []
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for direction in range(D):
            k = layer * D + direction
            s = f"_l{layer}" + ("_reverse" if direction else "")
            y, _, _, cache = ref.layer_forward(
                mode, layer_input, params["weight_ih" + s], params["weight_hh" + s],
                params.get("bias_ih" + s), params.get("bias_hh" + s), h0[k],
                None if c0 is None else c0[k], reverse=direction == 1,
            )
            outputs.append(y)
            hs.append(y)
            cs.append(cache["c"])
        layer_input = np.concatenate(outputs, axis=2)
    return np.array(hs), np.array(cs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mode,cls,kwargs", CELLS, ids=[c[0] for c in CELLS])
def test_all_states_equal_the_reference(mode, cls, kwargs, bidirectional, dtype):
    rng = np.random.default_rng(1)
    T, B, I, H, L = 4, 3, 2, 5, 2
    D = 2 if bidirectional else 1
    m = cls(I, H, num_layers=L, bidirectional=bidirectional, dtype=dtype, seed=2, **kwargs)
    lstm = cls is LSTM
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    y, state, all_states = m(x, (h0, c0) if lstm else h0, return_all_states=True)
    h_all, c_all = split(all_states, lstm)
    assert h_all.shape == (L * D, T, B, H) and h_all.dtype == dtype
    h_ref, c_ref = reference_states(mode, x, m.params, L, D, h0, c0 if lstm else None)
    assert_close(h_all, h_ref, dtype, "h_all")
    if lstm:
        assert c_all.shape == (L * D, T, B, H)
        assert_close(c_all, c_ref, dtype, "c_all")
    # consistent with y and the final states
    np.testing.assert_array_equal(y[:, :, :H], h_all[(L - 1) * D])
    if bidirectional:
        np.testing.assert_array_equal(y[:, :, H:], h_all[L * D - 1])
    h_n, c_n = split(state, lstm)
    for k in range(L * D):
        last = 0 if k % D == 1 else T - 1  # the reverse direction ends at t = 0
        np.testing.assert_array_equal(h_all[k, last], h_n[k])
        if lstm:
            np.testing.assert_array_equal(c_all[k, last], c_n[k])
    # backward still runs on the same forward
    dx, _ = m.backward(np.ones_like(y))
    assert dx.shape == x.shape and np.all(np.isfinite(dx))


@pytest.mark.parametrize("mode,cls,kwargs", CELLS, ids=[c[0] for c in CELLS])
def test_all_states_equal_stepping(mode, cls, kwargs):
    rng = np.random.default_rng(3)
    T, B, I, H, L = 5, 2, 3, 4, 2
    m = cls(I, H, num_layers=L, dtype=np.float64, seed=4, **kwargs).eval()
    x = rng.standard_normal((T, B, I))
    _, _, all_states = m(x, return_all_states=True)
    states = all_states if cls is LSTM else (all_states,)
    state = None
    for t in range(T):
        _, state = m.step(x[t], state)
        for a, s in zip(states, state if cls is LSTM else (state,)):
            assert_close(a[:, t], s, np.float64, f"step {t}")


def test_layouts_lengths_and_dropout():
    rng = np.random.default_rng(5)
    T, B, I, H = 5, 3, 2, 4
    m = LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, dropout=0.5, seed=6)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = np.array([2, 5, 3])
    m.eval()
    _, (h_n, c_n), (h_all, c_all) = m(x, lengths=lengths, return_all_states=True)
    assert h_all.shape == (4, B, T, H) and c_all.shape == (4, B, T, H)  # batch-first
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(h_all[:, b, n:], 0)
        np.testing.assert_array_equal(c_all[:, b, n:], 0)
        np.testing.assert_array_equal(h_all[0::2, b, n - 1], h_n[0::2, b])  # forward ends
        np.testing.assert_array_equal(h_all[1::2, b, 0], h_n[1::2, b])  # reverse ends at 0
        _, _, (hb, cb) = m(x[b, :n], return_all_states=True)  # unbatched: (L*D, n, H)
        assert hb.shape == (4, n, H)
        assert_close(h_all[:, b, :n], hb, np.float32)
        assert_close(c_all[:, b, :n], cb, np.float32)

    m.train()  # dropout scales what layer 1 reads, not the states themselves
    y, _, (h_train, _) = m(x, return_all_states=True)
    _, _, (h_eval, _) = m.eval()(x, return_all_states=True)
    np.testing.assert_array_equal(h_train[:2], h_eval[:2])  # layer 0 is not affected
    assert not np.allclose(h_train[2:], h_eval[2:])
    np.testing.assert_array_equal(y[:, :, :H], h_train[2])

    with pytest.raises(TypeError, match="return_all_states: expected a bool"):
        m(x, return_all_states=1)


def test_cuda_backend_all_states_match_cpu():
    backend = numbarnn.get_backend("cuda")
    if not backend.simulated:
        pytest.skip("real GPU: covered by the realgpu tests")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, 2)).astype(np.float32)
    out = {}
    for name in ("cpu", "cuda"):
        m = GRU(2, 3, num_layers=2, bidirectional=True, backend=name, seed=8)
        out[name] = m(x, lengths=[3, 1], return_all_states=True)[2]
    assert_close(out["cuda"], out["cpu"], np.float32)
