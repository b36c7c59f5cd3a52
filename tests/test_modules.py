"""Linear, LastStep and Sequential: against plain NumPy, central differences and PyTorch.

The NumPy references here are written out with ``einsum`` and explicit indexing, sharing
no code with :mod:`numbarnn.modules`.
"""

import re

import numpy as np
import pytest

import numbarnn
from numbarnn import GRU, LSTM, RNN, LastStep, Linear, Sequential, from_config, get_config


def rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def numeric_grads(f, arrays, eps=1e-6):
    """Central differences of the scalar ``f()`` w.r.t. every element of every array."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            up = f()
            a[i] = old - eps
            down = f()
            a[i] = old
            g[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def assert_close(got, want, rel=1e-6):
    scale = max(np.max(np.abs(want)), 1e-3)
    err = np.max(np.abs(got - want)) / scale
    assert err < rel, f"relative error {err:.3g}"


# --------------------------------------------------------------------------- Linear


def linear_reference(x, w, b, dy):
    """y, dx, dW, db of y = x W^T + b over the last axis, with einsum."""
    y = np.einsum("...i,oi->...o", x, w) + (0 if b is None else b)
    dx = np.einsum("...o,oi->...i", dy, w)
    dw = np.einsum("no,ni->oi", dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1]))
    db = None if b is None else dy.reshape(-1, dy.shape[-1]).sum(axis=0)
    return y, dx, dw, db


@pytest.mark.parametrize("lead", [(), (5,), (4, 3), (2, 3, 2)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_matches_numpy_reference(lead, bias, dtype):
    rng = np.random.default_rng(0)
    lin = Linear(4, 3, bias=bias, dtype=dtype, seed=1)
    x, dy = rand(rng, lead + (4,), dtype), rand(rng, lead + (3,), dtype)
    p64 = {k: v.astype(np.float64) for k, v in lin.params.items()}
    y_ref, dx_ref, dw_ref, db_ref = linear_reference(
        x.astype(np.float64), p64["weight"], p64.get("bias"), dy.astype(np.float64)
    )
    y = lin(x)
    lin.grads["weight"][...] = 1.0  # backward accumulates
    dx = lin.backward(dy)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert y.shape == lead + (3,) and y.dtype == dtype and dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(lin.grads["weight"], dw_ref + 1.0, rtol=tol, atol=tol)
    if bias:
        np.testing.assert_allclose(lin.grads["bias"], db_ref, rtol=tol, atol=tol)
    else:
        assert set(lin.params) == set(lin.grads) == {"weight"}


def test_linear_gradients_by_central_differences():
    rng = np.random.default_rng(1)
    lin = Linear(3, 2, dtype=np.float64, seed=0)
    x, w = rand(rng, (2, 4, 3)), rand(rng, (2, 4, 2))

    def loss():
        return float(np.sum(lin(x) * w))

    loss()
    dx = lin.backward(w)
    names = list(lin.params)
    numeric = numeric_grads(loss, [x] + [lin.params[n] for n in names])
    assert_close(dx, numeric[0])
    for n, g in zip(names, numeric[1:]):
        assert_close(lin.grads[n], g)


def test_linear_initialisation_like_torch():
    lin = Linear(16, 64, seed=3)
    bound = 1 / np.sqrt(16)
    for name, shape in (("weight", (64, 16)), ("bias", (64,))):
        p = lin.params[name]
        assert p.shape == shape and p.dtype == np.float32
        assert np.all(np.abs(p) <= bound)
        assert np.max(np.abs(p)) > 0.9 * bound  # the whole interval is used
    assert np.array_equal(Linear(16, 64, seed=3).params["weight"], lin.params["weight"])
    assert not np.array_equal(Linear(16, 64, seed=4).params["weight"], lin.params["weight"])


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    lin = Linear(5, 3, dtype=dtype, seed=0)
    ref = torch.nn.Linear(5, 3, dtype=getattr(torch, np.dtype(dtype).name))
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    x, dy = rand(rng, (4, 2, 5), dtype), rand(rng, (4, 2, 3), dtype)
    xt = torch.from_numpy(x).requires_grad_()
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    y = lin(x)
    dx = lin.backward(dy)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(lin.grads[name], p.grad.numpy(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- LastStep


@pytest.mark.parametrize(
    "shape, batch_first, index",
    [((4, 2, 3), False, np.s_[-1]), ((2, 4, 3), True, np.s_[:, -1]), ((4, 3), False, np.s_[-1]),
     ((4, 3), True, np.s_[-1])],
    ids=["T,B,F", "B,T,F", "unbatched", "unbatched-batch_first"],
)
def test_last_step_forward_and_backward(shape, batch_first, index):
    rng = np.random.default_rng(3)
    x = rand(rng, shape, np.float32)
    last = LastStep(batch_first=batch_first)
    y = last(x)
    assert np.array_equal(y, x[index])
    x[index] = 0  # the output is a copy
    assert np.any(y != 0)
    dy = rand(rng, y.shape, np.float32)
    dx = last.backward(dy)
    expected = np.zeros(shape, np.float32)
    expected[index] = dy
    assert dx.dtype == np.float32 and np.array_equal(dx, expected)
    assert last.params == {} and last.grads == {} and last.state_dict() == {}


# --------------------------------------------------------------------------- Sequential


def test_sequential_params_are_the_layers_arrays():
    lstm, head = LSTM(3, 4, num_layers=2, seed=0), Linear(4, 2, seed=1)
    model = Sequential(lstm, LastStep(), head)
    expected = [f"0.{k}" for k in lstm.params] + ["2.weight", "2.bias"]
    assert list(model.params) == list(model.grads) == expected
    assert model.params["0.weight_hh_l1"] is lstm.params["weight_hh_l1"]
    assert model.grads["2.bias"] is head.grads["bias"]
    model.params["2.weight"] -= 1.0  # an optimizer's in-place step reaches the layer
    model.params["0.bias_ih_l0"][...] = 7.0
    assert np.all(lstm.params["bias_ih_l0"] == 7.0)
    assert np.array_equal(head.params["weight"], model.state_dict()["2.weight"])
    assert len(model) == 3 and model[2] is head and list(model) == [lstm, model[1], head]


def test_sequential_state_dict_round_trip_and_failed_load_changes_nothing():
    a = Sequential(GRU(3, 4, seed=0), LastStep(), Linear(4, 2, seed=1))
    b = Sequential(GRU(3, 4, seed=5), LastStep(), Linear(4, 2, seed=6))
    sd = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    before = b.state_dict()
    bad = dict(sd, **{"2.weight": np.zeros((2, 5), np.float32)})
    message = "state_dict['2.weight']: expected shape (2, 4), got (2, 5)"
    with pytest.raises(ValueError, match=re.escape(message)):
        b.load_state_dict(bad)
    with pytest.raises(KeyError, match=r"missing keys \['2.bias'\], unexpected keys \['2.b'\]"):
        b.load_state_dict({("2.b" if k == "2.bias" else k): v for k, v in sd.items()})
    assert all(np.array_equal(before[k], v) for k, v in b.state_dict().items())
    b.load_state_dict(sd)
    assert all(np.array_equal(sd[k], v) for k, v in b.state_dict().items())
    sd["2.bias"][...] = 99  # state_dict gives copies
    assert not np.any(a.params["2.bias"] == 99)


def test_sequential_modes_and_zero_grad():
    rng = np.random.default_rng(4)
    lstm, head = LSTM(3, 4, seed=0), Linear(4, 2, seed=1)
    model = Sequential(lstm, LastStep(), head)
    x = rand(rng, (5, 2, 3), np.float32)
    model.backward(model(x) * 0 + 1)
    assert all(np.any(g != 0) for g in model.grads.values())
    model.zero_grad()
    assert all(np.all(g == 0) for g in model.grads.values())
    assert model.eval() is model
    assert not model.training and not any(m.training for m in model)
    y = model(x)
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a forward\(\) in training mode"):
        model.backward(y)
    model.train()
    assert model.training and all(m.training for m in model)


def numpy_lstm_last(x, p, H):
    """Last hidden state of a one-layer LSTM, step by step (gate order i, f, g, o)."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = np.zeros((x.shape[1], H))
    c = np.zeros((x.shape[1], H))
    for t in range(x.shape[0]):
        z = x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
        i, f, o = sig(z[:, :H]), sig(z[:, H : 2 * H]), sig(z[:, 3 * H :])
        g = np.tanh(z[:, 2 * H : 3 * H])
        c = f * c + i * g
        h = o * np.tanh(c)
    return h


def test_sequential_matches_numpy_reference():
    rng = np.random.default_rng(5)
    model = Sequential(
        LSTM(3, 4, dtype=np.float64, seed=0), LastStep(), Linear(4, 2, dtype=np.float64, seed=1)
    )
    x = rand(rng, (6, 2, 3))
    sd = model.state_dict()
    h = numpy_lstm_last(x, {k[2:]: v for k, v in sd.items() if k.startswith("0.")}, 4)
    expected = h @ sd["2.weight"].T + sd["2.bias"]
    np.testing.assert_allclose(model(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "recurrent",
    [
        lambda: LSTM(2, 3, num_layers=2, bidirectional=True, dtype=np.float64, seed=0),
        lambda: GRU(2, 3, batch_first=True, dtype=np.float64, seed=0),
        lambda: RNN(2, 3, nonlinearity="relu", dtype=np.float64, seed=0),
    ],
    ids=["lstm-2-bidirectional", "gru-batch_first", "rnn-relu"],
)
def test_sequential_end_to_end_gradients(recurrent):
    """Sequential(recurrent, LastStep, Linear): every gradient against central differences."""
    rng = np.random.default_rng(6)
    rec = recurrent()
    D = rec.num_directions
    head = Linear(3 * D, 2, dtype=np.float64, seed=1)
    model = Sequential(rec, LastStep(batch_first=rec.batch_first), head)
    x = rand(rng, (2, 4, 2) if rec.batch_first else (4, 2, 2))
    w = rand(rng, (2, 2))

    def loss():
        return float(np.sum(model(x) * w))

    loss()
    dx = model.backward(w)
    names = list(model.params)
    numeric = numeric_grads(loss, [x] + [model.params[n] for n in names])
    assert_close(dx, numeric[0])
    for n, g in zip(names, numeric[1:]):
        # The last layer's reverse direction reaches the last step in its first step, from
        # a zero state: its recurrent weights get no gradient. Every other one must.
        no_gradient = n.endswith(f"weight_hh_l{rec.num_layers - 1}_reverse")
        assert np.any(model.grads[n] != 0) or no_gradient, n
        assert_close(model.grads[n], g)


@pytest.mark.torch
def test_sequential_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    model = Sequential(
        LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True, dtype=np.float64, seed=0),
        LastStep(batch_first=True),
        Linear(8, 2, dtype=np.float64, seed=1),
    )
    lstm = torch.nn.LSTM(
        3, 4, num_layers=2, batch_first=True, bidirectional=True, dtype=torch.float64
    )
    head = torch.nn.Linear(8, 2, dtype=torch.float64)
    # a torch nn.Sequential-style state_dict maps onto the model's names
    seq = torch.nn.ModuleDict({"0": lstm, "2": head})
    model.load_state_dict({k: v.detach().numpy() for k, v in seq.state_dict().items()})
    x, dy = rand(rng, (2, 5, 3)), rand(rng, (2, 2))
    xt = torch.from_numpy(x).requires_grad_()
    yt = head(lstm(xt)[0][:, -1])
    yt.backward(torch.from_numpy(dy))
    y = model(x)
    dx = model.backward(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in seq.named_parameters():
        np.testing.assert_allclose(model.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "make",
    [
        lambda: Linear(3, 2, bias=False, dtype=np.float64),
        lambda: LastStep(batch_first=True),
        lambda: RNN(3, 4, 2, "relu", False, True, 0.25, True, dtype=np.float64),
        lambda: LSTM(3, 4),
        lambda: GRU(3, 4, bidirectional=True),
        lambda: Sequential(LSTM(3, 4), LastStep(), Sequential(Linear(4, 4), Linear(4, 1))),
    ],
    ids=["Linear", "LastStep", "RNN", "LSTM", "GRU", "nested-Sequential"],
)
def test_config_round_trip(make):
    import json

    module = make()
    config = get_config(module)
    assert json.loads(json.dumps(config)) == config
    rebuilt = from_config(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(module)
    assert get_config(rebuilt) == config
    shapes = {k: v.shape for k, v in module.params.items()}
    assert {k: v.shape for k, v in rebuilt.params.items()} == shapes


def test_config_of_a_recurrent_layer():
    rnn = RNN(3, 4, num_layers=2, nonlinearity="relu", dropout=0.5, dtype=np.float64)
    assert get_config(rnn) == {
        "class": "RNN",
        "args": {
            "input_size": 3, "hidden_size": 4, "num_layers": 2, "bias": True, "batch_first": False,
            "dropout": 0.5, "bidirectional": False, "nonlinearity": "relu", "dtype": "float64",
        },
    }


@pytest.mark.parametrize(
    "config, pattern",
    [
        ({"class": "os.system", "args": {}}, r"config: unknown class 'os.system'"),
        ({"class": "Linear", "args": {"in_features": 2, "out_features": 1, "seed": 3}},
         r"unknown arguments \['seed'\]"),
        ({"class": "Linear", "args": {"in_features": 0, "out_features": 1}},
         r"config: Linear: in_features: expected a positive int"),
        ({"class": "Linear", "args": {"in_features": 2, "out_features": 1, "dtype": "object"}},
         r"dtype: expected 'float32' or 'float64'"),
        ({"class": "Sequential", "layers": [{"class": "LSTM"}]},
         r"config.layers\[0\]: LSTM expects exactly the keys"),
        ({"class": "Sequential", "layers": []}, r"config: layers: expected at least one layer"),
        (["Linear"], r"config: expected a dict with a 'class' name"),
    ],
)
def test_from_config_rejects_bad_configs(config, pattern):
    with pytest.raises(ValueError, match=pattern):
        from_config(config)


def test_get_config_rejects_unknown_modules():
    class MyLSTM(LSTM):
        pass

    with pytest.raises(TypeError, match=r"module: cannot describe a MyLSTM"):
        get_config(MyLSTM(2, 3))
    with pytest.raises(TypeError, match=r"module: cannot describe a dict"):
        get_config({})


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, exc, pattern",
    [
        (lambda: Linear(0, 3), ValueError, r"in_features: expected a positive int, got 0"),
        (lambda: Linear(3, 2.0), TypeError, r"out_features: expected an int, got float"),
        (lambda: Linear(3, 2, bias=1), TypeError, r"bias: expected a bool, got int"),
        (lambda: Linear(3, 2, dtype=np.int32), TypeError,
         r"dtype: expected float32 or float64, got int32"),
        (lambda: Linear(3, 2, backend="tpu"), ValueError, r"backend: expected one of"),
        (lambda: LastStep(batch_first="yes"), TypeError, r"batch_first: expected a bool, got str"),
        (lambda: Sequential(), ValueError, r"layers: expected at least one layer"),
        (lambda: Sequential(Linear(2, 2), np.zeros(3)), TypeError,
         r"layers\[1\]: expected a module .* got ndarray"),
    ],
)
def test_constructors_reject_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_linear_rejects_bad_input():
    lin = Linear(3, 2)
    with pytest.raises(TypeError, match=r"x: expected an array, got list"):
        lin([1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match=r"x: expected dtype float32 \(the module's dtype\), got"):
        lin(np.zeros((4, 3)))
    message = "x: expected in_features 3 in the last dimension, got shape (4, 2)"
    with pytest.raises(ValueError, match=re.escape(message)):
        lin(np.zeros((4, 2), np.float32))
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a forward\(\) in training mode"):
        lin.backward(np.zeros((4, 2), np.float32))
    lin(np.zeros((5, 4, 3), np.float32))
    with pytest.raises(ValueError, match=re.escape("dy: expected shape (5, 4, 2), got (5, 2)")):
        lin.backward(np.zeros((5, 2), np.float32))
    with pytest.raises(TypeError, match=r"dy: expected dtype float32"):
        lin.backward(np.zeros((5, 4, 2)))
    with pytest.raises(TypeError, match=r"mode: expected a bool"):
        lin.train("no")


def test_last_step_rejects_bad_input():
    last = LastStep(batch_first=True)
    message = "x: expected 3 dimensions (B, T, features) or 2 (T, features), got shape (3,)"
    with pytest.raises(ValueError, match=re.escape(message)):
        last(np.zeros(3))
    message = "x: expected at least one time step, got shape (2, 0, 3)"
    with pytest.raises(ValueError, match=re.escape(message)):
        last(np.zeros((2, 0, 3)))
    with pytest.raises(TypeError, match=r"x: expected an array, got float"):
        last(1.0)
    last(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=re.escape("dy: expected shape (2, 3), got (5, 3)")):
        last.backward(np.zeros((5, 3), np.float32))
    with pytest.raises(TypeError, match=r"dy: expected dtype float32"):
        last.backward(np.zeros((2, 3)))
    last.eval()
    last(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a forward\(\) in training mode"):
        last.backward(np.zeros((2, 3), np.float32))


def test_linear_load_state_dict_errors_name_the_problem():
    lin = Linear(3, 2, seed=0)
    with pytest.raises(KeyError, match=r"missing keys \['bias'\]"):
        lin.load_state_dict({"weight": np.zeros((2, 3))})
    message = "state_dict['weight']: expected shape (2, 3), got (3, 2)"
    with pytest.raises(ValueError, match=re.escape(message)):
        lin.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(2)})
    lin.load_state_dict({"weight": np.ones((2, 3)), "bias": np.zeros(2)})  # float64 -> float32
    assert lin.params["weight"].dtype == np.float32 and np.all(lin.params["weight"] == 1)


def test_top_level_exports():
    names = ("Linear", "LastStep", "Sequential", "get_config", "from_config")
    for name in names + ("save", "load", "load_checkpoint"):
        assert name in numbarnn.__all__ and hasattr(numbarnn, name)
