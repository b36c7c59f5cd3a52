"""Streaming inference: ``step`` on the layers and on ``Sequential``, stateful mode.

``step`` looped over a sequence must give what ``forward`` gives, for every cell, one and
two layers, batched and unbatched input, on the CPU and on the 'cuda' backend (in the CUDA
simulator, at tiny sizes). Tolerances: ``atol + rtol * |ref|`` with 1e-5 in float32 and
1e-12 in float64.
"""

import numpy as np
import pytest

import numbarnn
from numbarnn import GRU, LSTM, RNN, LastStep, Linear, Sequential
from numbarnn.kernels import cuda as cuda_kernels
from numbarnn.training import stateful_forward

CELLS = [(RNN, {"nonlinearity": "tanh"}), (RNN, {"nonlinearity": "relu"}), (LSTM, {}), (GRU, {})]
CELL_IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def assert_close(got, expected, dtype, what=""):
    np.testing.assert_allclose(got, expected, rtol=TOL[dtype], atol=TOL[dtype], err_msg=what)


def states_of(state):
    return state if isinstance(state, tuple) else (state,)


def backends():
    out = ["cpu"]
    if numbarnn.get_backend("cuda").simulated:
        out.append("cuda")
    return out


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cls,kwargs", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_over_a_sequence_equals_forward(backend, num_layers, cls, kwargs, dtype, monkeypatch):
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 4)  # several blocks, ragged tail
    rng = np.random.default_rng(num_layers)
    T, B, I, H = 4, 2, 3, 5
    m = cls(I, H, num_layers=num_layers, dtype=dtype, backend=backend, seed=1, **kwargs).eval()
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = [rng.standard_normal((num_layers, B, H)).astype(dtype) for _ in range(2)]
    hx = tuple(h0) if cls is LSTM else h0[0]
    y, final = m(x, hx)

    state = hx
    for t in range(T):  # passing the state in and out
        y_t, state = m.step(x[t], state)
        assert y_t.shape == (B, H) and y_t.dtype == dtype
        assert_close(y_t, y[t], dtype, f"step {t}")
    for got, expected in zip(states_of(state), states_of(final)):
        assert got.shape == (num_layers, B, H)
        assert_close(got, expected, dtype, "final state")

    # unbatched, in stateful mode, from zeros
    y1, final1 = m(x[:, 1])
    m.stateful = True
    for t in range(T):
        y_t, state = m.step(x[t, 1])
        assert y_t.shape == (H,)
        assert_close(y_t, y1[t], dtype, f"unbatched step {t}")
    for got, expected in zip(states_of(state), states_of(final1)):
        assert got.shape == (num_layers, H)
        assert_close(got, expected, dtype, "unbatched final state")


@pytest.mark.parametrize("cls,kwargs", CELLS, ids=CELL_IDS)
def test_stateful_mode_keeps_and_resets_the_state(cls, kwargs):
    rng = np.random.default_rng(2)
    T, B, I, H = 6, 3, 2, 4
    m = cls(I, H, num_layers=2, seed=3, **kwargs).eval()
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y, final = m(x)
    assert m.stateful is False
    m.stateful = True
    outs = [m.step(x[t])[0] for t in range(T)]
    assert_close(np.array(outs), y, np.float32)

    m.reset_state()  # starts again from zeros
    assert_close(m.step(x[0])[0], y[0], np.float32)

    # warm start: the state of a forward over the history, then stream the rest
    _, history_state = m(x[:3])
    m.reset_state(history_state)
    for t in range(3, T):
        y_t, state = m.step(x[t])
        assert_close(y_t, y[t], np.float32, f"step {t} after warm start")
    for got, expected in zip(states_of(state), states_of(final)):
        assert_close(got, expected, np.float32)

    # the returned state is the kept state: editing it in place edits what comes next
    m.reset_state()
    _, state = m.step(x[0])
    for s in states_of(state):
        s[...] = 0
    assert_close(m.step(x[1])[0], m(x[1:2])[0][0], np.float32)

    # an explicit state overrides the kept one, and the step keeps its result
    m.reset_state()
    _, s1 = m.step(x[0])
    _, s2 = m.step(x[1], s1)
    assert_close(m.step(x[2])[0], y[2], np.float32)

    m.stateful = False  # forgets the kept state; each call starts from zeros again
    assert_close(m.step(x[0])[0], y[0], np.float32)
    assert_close(m.step(x[0])[0], y[0], np.float32)


def test_step_keeps_nothing_for_backward_and_ignores_dropout():
    rng = np.random.default_rng(4)
    m = LSTM(3, 4, num_layers=2, dropout=0.5, seed=5)  # training mode
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y_train, _ = m(x)
    dy = rng.standard_normal(y_train.shape).astype(np.float32)
    m.step(x[0])  # between forward and backward: must not disturb backward
    dx, _ = m.backward(dy)
    m2 = LSTM(3, 4, num_layers=2, dropout=0.5, seed=5)
    m2(x)
    dx2, _ = m2.backward(dy)
    np.testing.assert_array_equal(dx, dx2)

    y_eval, _ = m.eval()(x)
    m.train()
    state = None
    for t in range(5):
        y_t, state = m.step(x[t], state)
        assert_close(y_t, y_eval[t], np.float32)  # no dropout, in training mode too


def test_step_sees_parameter_updates_in_place_and_replaced():
    rng = np.random.default_rng(6)
    m = GRU(3, 4, seed=7).eval()
    x = rng.standard_normal((2, 3)).astype(np.float32)
    m.step(x)
    m.params["weight_hh_l0"] *= 0.5  # in place, as an optimizer does
    assert_close(m.step(x)[0], m(x[None])[0][0], np.float32)
    m.params["weight_ih_l0"] = m.params["weight_ih_l0"] * 2  # a new array
    assert_close(m.step(x)[0], m(x[None])[0][0], np.float32)
    m.params["weight_ih_l0"] = np.asfortranarray(m.params["weight_ih_l0"])
    with pytest.raises(ValueError, match=r"params\['weight_ih_l0'\].*C-contiguous"):
        m.step(x)


def test_step_argument_errors():
    m = LSTM(3, 4, num_layers=2, seed=0)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="bidirectional"):
        LSTM(3, 4, bidirectional=True).step(x)
    with pytest.raises(TypeError, match="x_t: expected dtype float32"):
        m.step(x.astype(np.float64))
    with pytest.raises(TypeError, match="x_t: expected an array"):
        m.step([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 3\) or \(3,\)"):
        m.step(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"x_t: expected shape"):
        m.step(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="x_t: expected a non-empty batch"):
        m.step(np.zeros((0, 3), np.float32))
    h = np.zeros((2, 2, 4), np.float32)
    with pytest.raises(TypeError, match=r"state: expected a tuple \(h, c\)"):
        m.step(x, h)
    with pytest.raises(ValueError, match=r"state\[1\] \(c\): expected shape \(2, 2, 4\)"):
        m.step(x, (h, np.zeros((2, 3, 4), np.float32)))
    with pytest.raises(ValueError, match=r"state\[0\] \(h\): expected shape \(2, 4\)"):
        m.step(x[0], (h, h))  # unbatched input takes unbatched states
    y, (h1, c1) = m.step(x, (h, None))  # None stands for zeros
    np.testing.assert_array_equal(y, m.step(x)[0])
    with pytest.raises(RuntimeError, match="not stateful"):
        m.reset_state((h, h))
    m.stateful = True
    m.step(x)
    with pytest.raises(ValueError, match="batch size 3 differs from the kept state's 2"):
        m.step(np.zeros((3, 3), np.float32))
    with pytest.raises(TypeError, match="stateful: expected a bool"):
        m.stateful = 1


# --------------------------------------------------------------------------- Sequential


@pytest.mark.parametrize("backend", backends())
def test_sequential_step_equals_forward_on_every_prefix(backend):
    rng = np.random.default_rng(8)
    T, B, I, H = 4, 2, 3, 5
    model = Sequential(
        GRU(I, H, num_layers=2, backend=backend, seed=0),
        Sequential(Linear(H, H, backend=backend, seed=1), LSTM(H, H, backend=backend, seed=2)),
        LastStep(), Linear(H, 2, backend=backend, seed=3),
    ).eval()
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    state = None
    for t in range(T):
        y_t, state = model.step(x[t], state)
        assert_close(y_t, model(x[: t + 1]), np.float32, f"prefix {t + 1}")
    assert len(state) == 2  # one entry per recurrent layer, nested ones included
    assert state[0].shape == (2, B, H) and state[1][1].shape == (1, B, H)

    model.stateful = True
    assert model.stateful and model[0].stateful and model[1][1].stateful
    for t in range(T):
        y_t, _ = model.step(x[t])
    assert_close(y_t, model(x), np.float32)
    model.reset_state()
    assert_close(model.step(x[0])[0], model(x[:1]), np.float32)
    model.reset_state(state)  # the states returned by the stateless run above
    assert_close(model.step(x[0])[0], model.step(x[0], state)[0], np.float32)
    model.stateful = False
    assert not model[0].stateful and not model.stateful


def test_sequential_warm_start_from_stateful_forward():
    """The states of training.stateful_forward over the history seed the streaming."""
    rng = np.random.default_rng(9)
    model = Sequential(LSTM(2, 4, seed=0), Linear(4, 1, seed=1)).eval()
    x = rng.standard_normal((7, 3, 2)).astype(np.float32)
    _, state = stateful_forward(model, x[:4])
    model.stateful = True
    model.reset_state(state)
    for t in range(4, 7):
        y_t, _ = model.step(x[t])
        assert_close(y_t, model(x)[t], np.float32, f"step {t}")


def test_sequential_step_errors():
    model = Sequential(LSTM(3, 4, seed=0), LastStep(), Linear(4, 1, seed=1))
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"state: expected a list with one entry per recurrent layer \(1\)"):
        model.step(x, (None, None))
    with pytest.raises(ValueError, match="state: Linear has no state"):
        model[2].step(x[:, :4], np.zeros(1))
    with pytest.raises(ValueError, match="bidirectional"):
        Sequential(GRU(3, 4, bidirectional=True)).step(x)
