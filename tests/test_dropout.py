"""Dropout between stacked recurrent layers (``dropout=`` of RNN, LSTM, GRU).

Inverted dropout on the output of every layer except the last, in training mode only,
masks drawn from the layer's ``dropout_rng``.
"""

import warnings

import numpy as np
import pytest

import numbarnn
from numbarnn import GRU, LSTM, RNN

CELLS = {
    "rnn_tanh": lambda *a, **k: RNN(*a, nonlinearity="tanh", **k),
    "rnn_relu": lambda *a, **k: RNN(*a, nonlinearity="relu", **k),
    "lstm": LSTM,
    "gru": GRU,
}


def rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def first(out):
    """y of a layer's (y, state), or dx of its (dx, dstate0)."""
    return out[0]


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_zero_is_the_layer_without_dropout(cell):
    rng = np.random.default_rng(0)
    x = rand(rng, (4, 2, 3), np.float32)
    plain = CELLS[cell](3, 4, num_layers=3, seed=1)
    zero = CELLS[cell](3, 4, num_layers=3, dropout=0.0, seed=1)
    with_p = CELLS[cell](3, 4, num_layers=3, dropout=0.5, seed=1)
    for name, p in plain.params.items():  # the initialisation does not depend on dropout
        assert np.array_equal(p, zero.params[name]) and np.array_equal(p, with_p.params[name])
    dy = rand(rng, (4, 2, 4), np.float32)
    assert np.array_equal(first(plain(x)), first(zero(x)))
    assert np.array_equal(first(plain.backward(dy)), first(zero.backward(dy)))
    state = zero.dropout_rng.bit_generator.state
    zero(x)
    assert zero.dropout_rng.bit_generator.state == state  # p = 0 draws nothing


@pytest.mark.parametrize("cell", CELLS)
def test_eval_mode_has_no_dropout(cell):
    rng = np.random.default_rng(1)
    x = rand(rng, (5, 2, 3), np.float32)
    plain = CELLS[cell](3, 4, num_layers=2, seed=2).eval()
    dropped = CELLS[cell](3, 4, num_layers=2, dropout=0.5, seed=2).eval()
    state = dropped.dropout_rng.bit_generator.state
    assert np.array_equal(first(plain(x)), first(dropped(x)))
    assert np.array_equal(first(dropped(x)), first(dropped(x)))
    assert dropped.dropout_rng.bit_generator.state == state
    dropped.train()
    assert not np.array_equal(first(plain.train()(x)), first(dropped(x)))


def test_training_mode_drops_about_p_and_scales_the_rest():
    """Read the mask back through a second layer that is the identity before its tanh.

    Layer 1 of a tanh RNN with W_ih = I and W_hh = 0, no bias: y = tanh(mask * y_0), so
    arctanh(y) / y_0 is the mask itself (y_0: the first layer's output, from eval mode).
    """
    p, H = 0.3, 10
    m = RNN(H, H, num_layers=2, bias=False, dropout=p, dtype=np.float64, seed=3)
    m.params["weight_ih_l1"][...] = np.eye(H)
    m.params["weight_hh_l1"][...] = 0
    x = rand(np.random.default_rng(4), (50, 20, H))
    y0 = first(RNN(H, H, bias=False, dtype=np.float64, seed=3)(x))  # layer 0 alone: same weights
    mask = np.arctanh(first(m(x))) / y0
    dropped = np.isclose(mask, 0, atol=1e-9)
    assert abs(dropped.mean() - p) < 0.03, dropped.mean()
    np.testing.assert_allclose(mask[~dropped], 1 / (1 - p), rtol=1e-8)
    again = np.arctanh(first(m(x))) / y0  # a fresh mask on every training-mode forward
    assert not np.array_equal(np.isclose(again, 0, atol=1e-9), dropped)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_forward_matches_layers_composed_with_the_mask(cell, bidirectional):
    """A 3-layer model equals its layers run one by one with the masks in between.

    The masks are drawn as documented: ``dropout_rng.random(shape) >= p`` scaled by
    1 / (1 - p), one per layer output in order, shape (T, B, D * H).
    """
    p, T, B, H = 0.4, 4, 3, 2
    D = 2 if bidirectional else 1
    m = CELLS[cell](
        3, H, num_layers=3, dropout=p, bidirectional=bidirectional, dtype=np.float64, seed=5
    )
    m.dropout_rng = np.random.default_rng(6)
    x = rand(np.random.default_rng(7), (T, B, 3))
    y, _ = m(x)
    masks = np.random.default_rng(6)
    h = x
    for layer in range(3):
        single = CELLS[cell](h.shape[-1], H, bidirectional=bidirectional, dtype=np.float64)
        single.load_state_dict(
            {k.replace(f"_l{layer}", "_l0"): v for k, v in m.params.items() if f"_l{layer}" in k}
        )
        h = first(single(h))
        if layer < 2:
            h = h * (masks.random((T, B, D * H)) >= p) / (1 - p)
    np.testing.assert_allclose(y, h, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_matches_central_differences_with_the_mask_fixed(cell):
    rng = np.random.default_rng(8)
    m = CELLS[cell](2, 3, num_layers=3, dropout=0.5, bidirectional=True, dtype=np.float64, seed=9)
    x = rand(rng, (3, 2, 2))
    w = rand(rng, (3, 2, 6))
    h0 = rand(rng, (6, 2, 3))
    hx = (h0, rand(rng, (6, 2, 3))) if cell == "lstm" else h0

    def loss():
        m.dropout_rng = np.random.default_rng(10)  # the same masks on every call
        return float(np.sum(first(m(x, hx)) * w))

    base = loss()
    m.eval()
    assert abs(float(np.sum(first(m(x, hx)) * w)) - base) > 1e-3  # the masks do act
    m.train()
    loss()
    dx, dstate0 = m.backward(w)
    analytic = [dx] + [m.grads[n] for n in m.params]
    states = list(hx) if cell == "lstm" else [hx]
    analytic += list(dstate0) if cell == "lstm" else [dstate0]
    eps = 1e-6
    for a, got in zip([x] + list(m.params.values()) + states, analytic):
        numeric = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            up = loss()
            a[i] = old - eps
            down = loss()
            a[i] = old
            numeric[i] = (up - down) / (2 * eps)
        scale = max(np.max(np.abs(numeric)), 1e-3)
        assert np.max(np.abs(got - numeric)) / scale < 1e-6


def test_dropout_one_cuts_the_lower_layers_off():
    m = LSTM(3, 4, num_layers=2, dropout=1.0, dtype=np.float64, seed=11)
    x = rand(np.random.default_rng(12), (5, 2, 3))
    y, _ = m(x)
    dx, _ = m.backward(np.ones_like(y))
    assert np.all(np.isfinite(y)) and np.all(dx == 0)
    top = LSTM(4, 4, dtype=np.float64)
    top.load_state_dict({k.replace("_l1", "_l0"): v for k, v in m.params.items() if "_l1" in k})
    np.testing.assert_allclose(y, first(top(np.zeros((5, 2, 4)))), rtol=1e-12, atol=1e-14)


def test_masks_are_seeded():
    x = rand(np.random.default_rng(13), (4, 2, 3), np.float32)
    a = GRU(3, 4, num_layers=2, dropout=0.5, seed=14)
    b = GRU(3, 4, num_layers=2, dropout=0.5, seed=14)
    ya1, ya2 = first(a(x)), first(a(x))
    assert np.array_equal(ya1, first(b(x))) and np.array_equal(ya2, first(b(x)))
    assert not np.array_equal(ya1, ya2)


def test_cuda_backend_uses_the_same_masks():
    """On 'cuda' (the simulator without a GPU) the masks come from the same host generator."""
    try:
        gpu = LSTM(2, 3, num_layers=2, dropout=0.5, dtype=np.float64, backend="cuda", seed=15)
    except RuntimeError as exc:
        pytest.skip(f"no cuda backend: {exc}")
    cpu = LSTM(2, 3, num_layers=2, dropout=0.5, dtype=np.float64, seed=15)
    x = rand(np.random.default_rng(16), (3, 2, 2))
    y = gpu.backend.to_numpy(first(gpu(gpu.backend.xp.asarray(x))))
    dx = gpu.backend.to_numpy(first(gpu.backward(gpu.backend.xp.asarray(np.ones_like(y)))))
    np.testing.assert_allclose(y, first(cpu(x)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, first(cpu.backward(np.ones_like(y))), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "value, exc, pattern",
    [
        (-0.1, ValueError, r"dropout: expected a probability in \[0, 1\], got -0.1"),
        (1.5, ValueError, r"dropout: expected a probability in \[0, 1\], got 1.5"),
        (float("nan"), ValueError, r"dropout: expected a probability in \[0, 1\], got nan"),
        ("0.5", TypeError, r"dropout: expected a number, got str"),
        (True, TypeError, r"dropout: expected a number, got bool"),
    ],
)
@pytest.mark.parametrize("cls", [RNN, LSTM, GRU], ids=lambda c: c.__name__)
def test_dropout_is_validated(cls, value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(3, 4, num_layers=2, dropout=value)


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU], ids=lambda c: c.__name__)
def test_dropout_with_one_layer_warns_as_torch_does(cls):
    with pytest.warns(UserWarning, match=r"dropout: applies between stacked layers.*num_layers=1"):
        cls(3, 4, dropout=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls(3, 4, num_layers=2, dropout=0.2)
        cls(3, 4, dropout=0.0)


def test_dropout_takes_torchs_position():
    """dropout comes after batch_first and before bidirectional, as in torch.nn.LSTM."""
    m = LSTM(3, 4, 2, True, True, 0.25, True)
    assert (m.batch_first, m.dropout, m.bidirectional) == (True, 0.25, True)
    r = RNN(3, 4, 2, "relu", True, False, 0.5, True)
    assert (r.nonlinearity, r.dropout, r.bidirectional) == ("relu", 0.5, True)
    assert "dropout=0.25" in repr(m) and "dropout" not in repr(LSTM(3, 4))
    assert numbarnn.get_config(m)["args"]["dropout"] == 0.25
