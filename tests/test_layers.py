"""Layer behaviour (RNN, LSTM, GRU) and what happens on bad input.

Errors must name the argument and show what was expected and what was received.
"""

import re

import numpy as np
import pytest

import numbarnn
from numbarnn import GRU, LSTM, RNN, Backend

MODES = ("rnn_tanh", "rnn_relu", "lstm", "gru")


def make(mode, I=3, H=4, **kw):
    if mode in ("rnn_tanh", "rnn_relu"):
        return RNN(I, H, nonlinearity=mode[4:], **kw)
    return {"lstm": LSTM, "gru": GRU}[mode](I, H, **kw)


def rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def states_for(mode, rng, shape, dtype=np.float32):
    """Random initial state(s) in the form the layer takes (a tuple for LSTM)."""
    if mode == "lstm":
        return (rand(rng, shape, dtype), rand(rng, shape, dtype))
    return rand(rng, shape, dtype)


def as_list(state):
    return list(state) if isinstance(state, tuple) else [state]


def esc(shape):
    return re.escape(str(tuple(shape)))


# --------------------------------------------------------------------------- constructor


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(hidden_size=0), ValueError, r"hidden_size: expected a positive int, got 0"),
        (dict(input_size=0), ValueError, r"input_size: expected a positive int, got 0"),
        (dict(num_layers=-1), ValueError, r"num_layers: expected a positive int, got -1"),
        (dict(num_layers=0), ValueError, r"num_layers: expected a positive int, got 0"),
        (dict(hidden_size=2.5), TypeError, r"hidden_size: expected an int, got float"),
        (dict(dtype=np.int32), TypeError, r"dtype: expected float32 or float64, got int32"),
        (dict(dtype=np.float16), TypeError, r"dtype: expected float32 or float64, got float16"),
        (dict(backend="tpu"), ValueError, r"backend: expected one of .*'cpu'.*got 'tpu'"),
        (dict(bias=1), TypeError, r"bias: expected a bool"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(f"{k}={v[k]}" for k in v),
)
@pytest.mark.parametrize("cls", [RNN, LSTM, GRU], ids=lambda c: c.__name__)
def test_constructor_rejects_bad_arguments(cls, kwargs, exc, pattern):
    args = dict(input_size=3, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        cls(**args)


def test_rnn_rejects_unknown_nonlinearity():
    with pytest.raises(ValueError,
                       match=r"nonlinearity: expected 'tanh' or 'relu', got 'sigmoid'"):
        RNN(3, 4, nonlinearity="sigmoid")


# --------------------------------------------------------------------------- parameters

LSTM_2BI = [
    ("weight_ih_l0", (16, 3)), ("weight_hh_l0", (16, 4)), ("bias_ih_l0", (16,)),
    ("bias_hh_l0", (16,)),
    ("weight_ih_l0_reverse", (16, 3)), ("weight_hh_l0_reverse", (16, 4)),
    ("bias_ih_l0_reverse", (16,)), ("bias_hh_l0_reverse", (16,)),
    ("weight_ih_l1", (16, 8)), ("weight_hh_l1", (16, 4)), ("bias_ih_l1", (16,)),
    ("bias_hh_l1", (16,)),
    ("weight_ih_l1_reverse", (16, 8)), ("weight_hh_l1_reverse", (16, 4)),
    ("bias_ih_l1_reverse", (16,)), ("bias_hh_l1_reverse", (16,)),
]
GRU_2BI = [
    ("weight_ih_l0", (12, 3)), ("weight_hh_l0", (12, 4)), ("bias_ih_l0", (12,)),
    ("bias_hh_l0", (12,)),
    ("weight_ih_l0_reverse", (12, 3)), ("weight_hh_l0_reverse", (12, 4)),
    ("bias_ih_l0_reverse", (12,)), ("bias_hh_l0_reverse", (12,)),
    ("weight_ih_l1", (12, 8)), ("weight_hh_l1", (12, 4)), ("bias_ih_l1", (12,)),
    ("bias_hh_l1", (12,)),
    ("weight_ih_l1_reverse", (12, 8)), ("weight_hh_l1_reverse", (12, 4)),
    ("bias_ih_l1_reverse", (12,)), ("bias_hh_l1_reverse", (12,)),
]
RNN_2BI = [
    ("weight_ih_l0", (4, 3)), ("weight_hh_l0", (4, 4)), ("bias_ih_l0", (4,)),
    ("bias_hh_l0", (4,)),
    ("weight_ih_l0_reverse", (4, 3)), ("weight_hh_l0_reverse", (4, 4)),
    ("bias_ih_l0_reverse", (4,)), ("bias_hh_l0_reverse", (4,)),
    ("weight_ih_l1", (4, 8)), ("weight_hh_l1", (4, 4)), ("bias_ih_l1", (4,)),
    ("bias_hh_l1", (4,)),
    ("weight_ih_l1_reverse", (4, 8)), ("weight_hh_l1_reverse", (4, 4)),
    ("bias_ih_l1_reverse", (4,)), ("bias_hh_l1_reverse", (4,)),
]
LSTM_2_NOBIAS = [
    ("weight_ih_l0", (16, 3)), ("weight_hh_l0", (16, 4)),
    ("weight_ih_l1", (16, 4)), ("weight_hh_l1", (16, 4)),
]
GRU_1BI_NOBIAS = [
    ("weight_ih_l0", (12, 3)), ("weight_hh_l0", (12, 4)),
    ("weight_ih_l0_reverse", (12, 3)), ("weight_hh_l0_reverse", (12, 4)),
]


@pytest.mark.parametrize(
    "factory, expected",
    [
        (lambda dt: LSTM(3, 4, num_layers=2, bidirectional=True, dtype=dt), LSTM_2BI),
        (lambda dt: GRU(3, 4, num_layers=2, bidirectional=True, dtype=dt), GRU_2BI),
        (lambda dt: RNN(3, 4, num_layers=2, bidirectional=True, dtype=dt), RNN_2BI),
        (lambda dt: RNN(3, 4, 2, "relu", bidirectional=True, dtype=dt), RNN_2BI),
        (lambda dt: LSTM(3, 4, num_layers=2, bias=False, dtype=dt), LSTM_2_NOBIAS),
        (lambda dt: GRU(3, 4, bias=False, bidirectional=True, dtype=dt), GRU_1BI_NOBIAS),
    ],
    ids=["lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_nobias", "gru_nobias"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_params_and_grads_have_pytorch_names_and_shapes(factory, expected, dtype):
    m = factory(dtype)
    assert [(k, tuple(v.shape)) for k, v in m.params.items()] == expected
    assert [(k, tuple(v.shape)) for k, v in m.grads.items()] == expected
    assert all(v.dtype == np.dtype(dtype) for v in m.params.values())
    assert all(v.dtype == np.dtype(dtype) for v in m.grads.values())
    assert all(not np.any(v) for v in m.grads.values()), "grads must start at zero"
    sd = m.state_dict()
    assert [(k, v.shape) for k, v in sd.items()] == expected


@pytest.mark.parametrize("mode", MODES)
def test_init_is_uniform_within_bound_and_seeded(mode):
    H = 16
    m = make(mode, 5, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=123)
    bound = 1.0 / np.sqrt(H)
    allp = np.concatenate([p.ravel() for p in m.params.values()])
    assert np.all(np.abs(allp) <= bound)
    # it fills the interval (not a constant, not a narrower distribution)
    assert allp.min() < -0.95 * bound and allp.max() > 0.95 * bound
    assert abs(allp.mean()) < 0.05 * bound
    assert abs(allp.std() - bound / np.sqrt(3)) < 0.05 * bound  # std of U(-b, b)
    same = make(mode, 5, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=123)
    other = make(mode, 5, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=124)
    for k in m.params:
        np.testing.assert_array_equal(m.params[k], same.params[k])
        assert not np.array_equal(m.params[k], other.params[k]), k
    # different parameters of one layer are drawn independently
    assert not np.array_equal(m.params["weight_hh_l0"], m.params["weight_hh_l0_reverse"])


# --------------------------------------------------------------------------- bad input


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


def _fwd_inputs(mode, T=5, B=2, I=3, H=4, L=2, D=1, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rand(rng, (T, B, I), dtype), states_for(mode, rng, (L * D, B, H), dtype)


def test_x_wrong_number_of_dimensions(mode):
    m = make(mode, num_layers=2)
    for shape in [(5, 2, 3, 1), (3,), ()]:
        with pytest.raises(ValueError, match=r"x: expected 3 dimensions .* or 2 .*got shape "
                           + esc(shape)):
            m(np.zeros(shape, np.float32))


def test_x_wrong_feature_size(mode):
    m = make(mode, num_layers=2)
    with pytest.raises(ValueError, match=r"x: expected input_size 3 .*got shape \(5, 2, 4\)"):
        m(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"x: expected input_size 3 .*got shape \(5, 2\)"):
        m(np.zeros((5, 2), np.float32))  # unbatched (T, I) with I = 2


@pytest.mark.parametrize("bad", [np.float64, np.int64, np.int32, np.float16, bool])
def test_x_wrong_dtype(mode, bad):
    m = make(mode, dtype=np.float32)
    x = np.ones((5, 2, 3), dtype=bad)
    with pytest.raises(TypeError, match=rf"x: expected dtype float32 .*got {np.dtype(bad)}"):
        m(x)


def test_x_float32_to_float64_layer(mode):
    m = make(mode, dtype=np.float64)
    with pytest.raises(TypeError, match=r"x: expected dtype float64 .*got float32"):
        m(np.ones((5, 2, 3), np.float32))


@pytest.mark.parametrize("value", [[[[0.0] * 3] * 2] * 5, 1.0, None, "x"],
                         ids=["list", "float", "None", "str"])
def test_x_not_an_array(mode, value):
    m = make(mode)
    with pytest.raises(TypeError, match=r"x: expected an array, got " + type(value).__name__):
        m(value)


@pytest.mark.parametrize(
    "mode, shape, batch_first",
    [("rnn_tanh", (0, 2, 3), False), ("lstm", (5, 0, 3), False), ("gru", (2, 0, 3), True),
     ("rnn_relu", (0, 5, 3), True), ("lstm", (0, 3), False)],
    ids=["T0", "B0", "T0-batch_first", "B0-batch_first", "T0-unbatched"],
)
def test_empty_sequence_or_batch(mode, shape, batch_first):
    """(The check is shared by all layers: one layer class per case.)"""
    m = make(mode, batch_first=batch_first)
    # the message shows the shape the user passed, not an internal re-layout of it
    with pytest.raises(ValueError, match=r"x: expected a non-empty .*" + esc(shape)):
        m(np.zeros(shape, np.float32))


def test_initial_state_wrong_shape(mode):
    m = make(mode, num_layers=2)
    x, hx = _fwd_inputs(mode)
    h0_name = r"hx\[0\] \(h0\)" if mode == "lstm" else r"hx"
    for bad_shape in [(2, 3, 4), (1, 2, 4), (2, 2, 5), (2, 4), (2, 2, 4, 1)]:
        bad = np.zeros(bad_shape, np.float32)
        arg = (bad, hx[1]) if mode == "lstm" else bad
        with pytest.raises(ValueError, match=h0_name + r": expected shape \(2, 2, 4\), got "
                           + esc(bad_shape)):
            m(x, arg)
    if mode == "lstm":
        bad = np.zeros((2, 2, 5), np.float32)
        with pytest.raises(ValueError, match=r"hx\[1\] \(c0\): expected shape \(2, 2, 4\), got "
                           r"\(2, 2, 5\)"):
            m(x, (hx[0], bad))


def test_initial_state_batch_mismatch(mode):
    """x has B = 2, h0 has B = 3."""
    m = make(mode)
    x, _ = _fwd_inputs(mode, L=1)
    h = np.zeros((1, 3, 4), np.float32)
    name = r"hx\[0\] \(h0\)" if mode == "lstm" else r"hx"
    with pytest.raises(ValueError, match=name + r": expected shape \(1, 2, 4\), got \(1, 3, 4\)"):
        m(x, (h, np.zeros((1, 2, 4), np.float32)) if mode == "lstm" else h)


def test_initial_state_for_unbatched_input(mode):
    m = make(mode)
    x = np.zeros((5, 3), np.float32)
    h = np.zeros((1, 1, 4), np.float32)  # batched state with unbatched input
    with pytest.raises(ValueError, match=r"expected shape \(1, 4\), got \(1, 1, 4\)"):
        m(x, (h, np.zeros((1, 4), np.float32)) if mode == "lstm" else h)


def test_initial_state_wrong_dtype_or_type(mode):
    m = make(mode)
    x, hx = _fwd_inputs(mode, L=1)
    name = r"hx\[0\] \(h0\)" if mode == "lstm" else r"hx"
    h64 = as_list(hx)[0].astype(np.float64)
    with pytest.raises(TypeError, match=name + r": expected dtype float32 .*got float64"):
        m(x, (h64, hx[1]) if mode == "lstm" else h64)
    hlist = as_list(hx)[0].tolist()
    with pytest.raises(TypeError, match=name + r": expected an array, got list"):
        m(x, (hlist, hx[1]) if mode == "lstm" else hlist)


def test_lstm_state_must_be_a_pair():
    m = LSTM(3, 4)
    x, (h, c) = _fwd_inputs("lstm", L=1)
    with pytest.raises(TypeError, match=r"hx: expected a tuple \(h, c\) for LSTM, got ndarray"):
        m(x, h)
    y, _ = m(x, (h, c))
    with pytest.raises(TypeError,
                       match=r"dstate: expected a tuple \(h, c\) for LSTM, got ndarray"):
        m.backward(y, h)


def test_lstm_state_tuple_of_wrong_length_says_its_length():
    m = LSTM(3, 4)
    x, (h, c) = _fwd_inputs("lstm", L=1)
    # "expected a tuple (h, c), got tuple" alone would be a puzzle: the length must be named
    with pytest.raises(TypeError, match=r"hx: expected a tuple \(h, c\) for LSTM.*\b3\b"):
        m(x, (h, c, c))
    with pytest.raises(TypeError, match=r"hx: expected a tuple \(h, c\) for LSTM.*\b1\b"):
        m(x, (h,))


def test_backward_wrong_dy_and_dstate(mode):
    m = make(mode, num_layers=2, bidirectional=True)
    x, hx = _fwd_inputs(mode, D=2)
    y, fin = m(x, hx)
    assert y.shape == (5, 2, 8)
    with pytest.raises(ValueError, match=r"dy: expected shape \(5, 2, 8\), got \(5, 2, 4\)"):
        m.backward(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(TypeError, match=r"dy: expected dtype float32 .*got float64"):
        m.backward(y.astype(np.float64))
    with pytest.raises(TypeError, match=r"dy: expected an array, got list"):
        m.backward(y.tolist())
    bad = np.zeros((4, 3, 4), np.float32)
    if mode == "lstm":
        h_n, c_n = fin
        with pytest.raises(ValueError, match=r"dstate\[0\] \(dh_n\): expected shape "
                           r"\(4, 2, 4\), got \(4, 3, 4\)"):
            m.backward(y, (bad, c_n))
        with pytest.raises(ValueError, match=r"dstate\[1\] \(dc_n\): expected shape "
                           r"\(4, 2, 4\), got \(4, 3, 4\)"):
            m.backward(y, (h_n, bad))
        with pytest.raises(TypeError, match=r"dstate\[1\] \(dc_n\): expected dtype float32"):
            m.backward(y, (h_n, c_n.astype(np.float64)))
    else:
        with pytest.raises(ValueError, match=r"dstate: expected shape \(4, 2, 4\), got "
                           r"\(4, 3, 4\)"):
            m.backward(y, bad)
    # after all those rejected calls a correct one still works
    dx, _ = m.backward(y, fin)
    assert dx.shape == x.shape and np.all(np.isfinite(dx))


def test_backward_needs_a_training_forward(mode):
    m = make(mode)
    x, hx = _fwd_inputs(mode, L=1)
    dy = np.ones((5, 2, 4), np.float32)
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a forward\(\) in training mode"):
        m.backward(dy)
    m.eval()
    m(x, hx)
    with pytest.raises(RuntimeError, match=r"training=False"):
        m.backward(dy)
    m.train()
    m(x, hx)
    m.eval()  # switching to eval drops what a training forward kept
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a forward\(\) in training mode"):
        m.backward(dy)


# --------------------------------------------------------------------------- behaviour


def _run(m, x, hx, dy, dstate):
    """Forward + backward; returns y, final states, dx, initial-state grads (all copies)."""
    y, fin = m(x, hx)
    y, fin = y.copy(), [f.copy() for f in as_list(fin)]
    dx, d0 = m.backward(dy, dstate)
    return y, fin, dx.copy(), [d.copy() for d in as_list(d0)]


def _cot(mode, rng, y_shape, s_shape, dtype=np.float32):
    return rand(rng, y_shape, dtype), states_for(mode, rng, s_shape, dtype)


def test_zero_grad_and_accumulation(mode):
    m = make(mode, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    rng = np.random.default_rng(2)
    x, hx = _fwd_inputs(mode, D=2, dtype=np.float64)
    dy, ds = _cot(mode, rng, (5, 2, 8), (4, 2, 4), np.float64)
    ids = {k: id(v) for k, v in m.grads.items()}
    m(x, hx)
    m.backward(dy, ds)
    single = {k: v.copy() for k, v in m.grads.items()}
    assert all(np.any(v != 0) for v in single.values()), "every gradient should be non-zero"
    m.backward(dy, ds)  # a second backward through the same forward accumulates
    for k, v in m.grads.items():
        np.testing.assert_allclose(v, 2 * single[k], rtol=1e-12, atol=1e-14, err_msg=k)
    m.zero_grad()
    assert all(not np.any(v) for v in m.grads.values())
    assert {k: id(v) for k, v in m.grads.items()} == ids, "zero_grad must work in place"
    m(x, hx)
    m.backward(dy, ds)
    for k, v in m.grads.items():
        np.testing.assert_allclose(v, single[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_bias_free_layer_reports_no_bias_grads_and_ignores_biases(mode):
    m = make(mode, bias=False, dtype=np.float64, seed=4)
    assert not any("bias" in k for k in m.params) and not any("bias" in k for k in m.grads)
    x, hx = _fwd_inputs(mode, L=1, dtype=np.float64)
    y1, _ = m(x, hx)
    m.backward(np.ones_like(y1))
    y2, _ = m(x, hx)  # whatever backward did internally, the forward is unchanged
    np.testing.assert_array_equal(y1, y2)


def test_state_dict_round_trip(mode):
    a = make(mode, num_layers=2, bidirectional=True, seed=10)
    b = make(mode, num_layers=2, bidirectional=True, seed=11)
    x, hx = _fwd_inputs(mode, D=2)
    sd = a.state_dict()
    for k, v in sd.items():
        assert isinstance(v, np.ndarray) and v is not a.params[k]
    sd_copy = {k: v.copy() for k, v in sd.items()}
    sd["weight_ih_l0"][...] = 0  # a state_dict is a copy: changing it changes nothing
    np.testing.assert_array_equal(a.params["weight_ih_l0"], sd_copy["weight_ih_l0"])
    ids = {k: id(v) for k, v in b.params.items()}
    b.load_state_dict(sd_copy)
    assert {k: id(v) for k, v in b.params.items()} == ids, "load_state_dict must copy in place"
    for k in sd_copy:
        np.testing.assert_array_equal(b.params[k], sd_copy[k])
    ya, fa = a(x, hx)
    yb, fb = b(x, hx)
    np.testing.assert_array_equal(ya, yb)
    for p, q in zip(as_list(fa), as_list(fb)):
        np.testing.assert_array_equal(p, q)
    # float64 values go into a float32 layer cast to float32
    b.load_state_dict({k: v.astype(np.float64) for k, v in sd_copy.items()})
    assert all(p.dtype == np.float32 for p in b.params.values())


def test_load_state_dict_errors_leave_params_unchanged(mode):
    m = make(mode, num_layers=2, seed=3)
    before = m.state_dict()
    new = make(mode, num_layers=2, seed=4).state_dict()  # valid but different values

    missing = dict(new)
    del missing["bias_hh_l1"]
    with pytest.raises(KeyError, match=r"missing keys \['bias_hh_l1'\]"):
        m.load_state_dict(missing)

    extra = dict(new)
    extra["weight_ih_l2"] = np.zeros((1, 1), np.float32)
    with pytest.raises(KeyError, match=r"unexpected keys \['weight_ih_l2'\]"):
        m.load_state_dict(extra)

    wrong = dict(new)  # the bad entry is the last one: nothing before it may be copied
    last = list(wrong)[-1]
    shape = wrong[last].shape
    wrong[last] = np.zeros(shape + (1,), np.float32)
    with pytest.raises(ValueError, match=re.escape(f"state_dict['{last}']: expected shape "
                                                   f"{shape}, got {shape + (1,)}")):
        m.load_state_dict(wrong)

    for k, v in before.items():
        np.testing.assert_array_equal(m.params[k], v, err_msg=k)


@pytest.mark.parametrize("D", [1, 2], ids=["unidirectional", "bidirectional"])
def test_user_arrays_are_not_modified_and_not_aliased(mode, D):
    """One direction writes each layer's output in place: the last layer's still must not
    be what backward reads."""
    m = make(mode, num_layers=2, bidirectional=D == 2, dtype=np.float64, seed=5)
    rng = np.random.default_rng(6)
    x, hx = _fwd_inputs(mode, D=D, dtype=np.float64)
    dy, ds = _cot(mode, rng, (5, 2, 4 * D), (2 * D, 2, 4), np.float64)
    originals = [a.copy() for a in [x, dy] + as_list(hx) + as_list(ds)]
    y_ref, fin_ref, dx_ref, d0_ref = _run(m, x, hx, dy, ds)
    for a, b in zip([x, dy] + as_list(hx) + as_list(ds), originals):
        np.testing.assert_array_equal(a, b)
    grads_ref = {k: v.copy() for k, v in m.grads.items()}

    # Change x, the initial states and the returned outputs after forward:
    # backward must still see the forward's values.
    m.zero_grad()
    y, fin = m(x, hx)
    x[...] = rng.standard_normal(x.shape)
    for s in as_list(hx):
        s[...] = rng.standard_normal(s.shape)
    y[...] = np.nan
    for f in as_list(fin):
        f[...] = np.nan
    dx, d0 = m.backward(dy, ds)
    np.testing.assert_array_equal(dx, dx_ref)
    for p, q in zip(as_list(d0), d0_ref):
        np.testing.assert_array_equal(p, q)
    for k, v in m.grads.items():
        np.testing.assert_array_equal(v, grads_ref[k], err_msg=k)


def test_eval_forward_reads_x_in_place_and_leaves_it_unchanged(mode):
    m = make(mode, num_layers=2, dtype=np.float64, seed=5).eval()
    x, hx = _fwd_inputs(mode, dtype=np.float64)
    x_before = x.copy()
    y, _ = m(x, hx)
    np.testing.assert_array_equal(x, x_before)
    assert not np.shares_memory(y, x)
    y_train, _ = m.train()(x, hx)
    np.testing.assert_array_equal(y, y_train)


def test_non_contiguous_inputs(mode):
    m = make(mode, bidirectional=True, dtype=np.float64, seed=8)
    rng = np.random.default_rng(9)
    big = rng.standard_normal((10, 2, 6))
    x = big[::2, :, ::2]  # (5, 2, 3), strided
    assert not x.flags.c_contiguous
    h = [np.asfortranarray(rng.standard_normal((2, 2, 4))) for _ in range(2)]
    hx = tuple(h) if mode == "lstm" else h[0]
    hx_c = tuple(np.ascontiguousarray(a) for a in h) if mode == "lstm" else h[0].copy()
    y1, f1 = m(x, hx)
    y2, f2 = m(np.ascontiguousarray(x), hx_c)
    np.testing.assert_array_equal(y1, y2)
    for p, q in zip(as_list(f1), as_list(f2)):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_batch_first_equals_transposed_time_major(mode, dtype):
    kw = dict(num_layers=2, bidirectional=True, dtype=dtype, seed=12)
    tm, bf = make(mode, **kw), make(mode, batch_first=True, **kw)
    rng = np.random.default_rng(13)
    x, hx = _fwd_inputs(mode, D=2, dtype=dtype)  # x (T=5, B=2, I)
    dy, ds = _cot(mode, rng, (5, 2, 8), (4, 2, 4), dtype)
    y1, f1, dx1, d01 = _run(tm, x, hx, dy, ds)
    x_bf = np.ascontiguousarray(x.transpose(1, 0, 2))
    dy_bf = np.ascontiguousarray(dy.transpose(1, 0, 2))
    y2, f2, dx2, d02 = _run(bf, x_bf, hx, dy_bf, ds)  # states stay (L*D, B, H)
    assert y2.shape == (2, 5, 8) and dx2.shape == (2, 5, 3)
    np.testing.assert_array_equal(y2, y1.transpose(1, 0, 2))
    np.testing.assert_array_equal(dx2, dx1.transpose(1, 0, 2))
    for p, q in zip(f1 + d01, f2 + d02):
        np.testing.assert_array_equal(p, q)
    for k in tm.grads:
        np.testing.assert_array_equal(tm.grads[k], bf.grads[k], err_msg=k)


@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_equals_batch_of_one(mode, batch_first):
    kw = dict(num_layers=2, bidirectional=True, batch_first=batch_first, dtype=np.float64, seed=14)
    a, b = make(mode, **kw), make(mode, **kw)
    rng = np.random.default_rng(15)
    x = rng.standard_normal((5, 3))
    hx = states_for(mode, rng, (4, 4), np.float64)
    dy, ds = _cot(mode, rng, (5, 8), (4, 4), np.float64)
    y1, f1, dx1, d01 = _run(a, x, hx, dy, ds)
    assert y1.shape == (5, 8) and dx1.shape == (5, 3)
    assert all(f.shape == (4, 4) for f in f1 + d01)
    ax = 0 if batch_first else 1  # where the batch axis of x/y goes
    def add(s):  # insert the batch axis into state(s)
        return tuple(t[:, None] for t in s) if mode == "lstm" else s[:, None]

    y2, f2, dx2, d02 = _run(b, np.expand_dims(x, ax), add(hx), np.expand_dims(dy, ax), add(ds))
    np.testing.assert_array_equal(np.expand_dims(y1, ax), y2)
    np.testing.assert_array_equal(np.expand_dims(dx1, ax), dx2)
    for p, q in zip(f1 + d01, f2 + d02):
        np.testing.assert_array_equal(p[:, None], q)
    for k in a.grads:
        np.testing.assert_array_equal(a.grads[k], b.grads[k], err_msg=k)


def test_float32_and_float64_agree(mode):
    m64 = make(mode, num_layers=2, bidirectional=True, dtype=np.float64, seed=16)
    m32 = make(mode, num_layers=2, bidirectional=True, dtype=np.float32, seed=16)
    m32.load_state_dict(m64.state_dict())
    rng = np.random.default_rng(17)
    x, hx = _fwd_inputs(mode, D=2, dtype=np.float32)
    dy, ds = _cot(mode, rng, (5, 2, 8), (4, 2, 4), np.float32)
    def to64(s):
        return tuple(a.astype(np.float64) for a in s) if mode == "lstm" else s.astype(np.float64)

    r32 = _run(m32, x, hx, dy, ds)
    r64 = _run(m64, x.astype(np.float64), to64(hx), dy.astype(np.float64), to64(ds))
    assert r32[0].dtype == np.float32 and r32[2].dtype == np.float32
    assert r64[0].dtype == np.float64 and r64[2].dtype == np.float64
    flat32 = [r32[0], r32[2]] + r32[1] + r32[3] + list(m32.grads.values())
    flat64 = [r64[0], r64[2]] + r64[1] + r64[3] + list(m64.grads.values())
    for a, b in zip(flat32, flat64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_eval_forward_equals_train_forward(mode):
    m = make(mode, num_layers=2, bidirectional=True, seed=18)
    x, hx = _fwd_inputs(mode, D=2)
    y_train, f_train = m(x, hx)
    m.eval()
    assert m.training is False
    y_eval, f_eval = m(x, hx)
    np.testing.assert_array_equal(y_train, y_eval)
    for p, q in zip(as_list(f_train), as_list(f_eval)):
        np.testing.assert_array_equal(p, q)
    assert m.train() is m and m.training is True


def test_default_state_is_zeros(mode):
    m = make(mode, num_layers=2, seed=19)
    x, _ = _fwd_inputs(mode)
    zeros = np.zeros((2, 2, 4), np.float32)
    y1, f1 = m(x)
    y2, f2 = m(x, (zeros, zeros) if mode == "lstm" else zeros)
    np.testing.assert_array_equal(y1, y2)
    for p, q in zip(as_list(f1), as_list(f2)):
        assert p.shape == (2, 2, 4)
        np.testing.assert_array_equal(p, q)
    # the final state of the top layer is y at the last step
    np.testing.assert_array_equal(as_list(f1)[0][-1], y1[-1])


# --------------------------------------------------------------------------- backends


def test_get_backend_cpu():
    b = numbarnn.get_backend("cpu")
    assert isinstance(b, Backend)
    assert b.name == "cpu" and b.xp is np and b.simulated is False
    assert b.kernels.__name__ == "numbarnn.kernels.cpu"
    assert numbarnn.get_backend(b) is b


def test_get_backend_auto_returns_a_backend():
    b = numbarnn.get_backend("auto")
    assert isinstance(b, Backend)
    assert b.name in ("cpu", "cuda")
    assert b.name == ("cuda" if numbarnn.cuda_status()[0] else "cpu")


def test_get_backend_unknown_name():
    with pytest.raises(ValueError, match=r"backend: expected one of .*got 'tpu'"):
        numbarnn.get_backend("tpu")


def test_get_backend_cuda_under_the_simulator():
    import numba

    usable, reason = numbarnn.cuda_status()
    if not numba.config.ENABLE_CUDASIM:  # a real-GPU run (NUMBA_ENABLE_CUDASIM=0)
        if not usable:
            with pytest.raises(RuntimeError, match=r"backend 'cuda' is not available"):
                numbarnn.get_backend("cuda")
            return
        b = numbarnn.get_backend("cuda")
        assert b.name == "cuda" and b.simulated is False and b.xp is not np
        return
    # pytest-env sets NUMBA_ENABLE_CUDASIM=1: the simulated backend, NumPy for CuPy
    assert (usable, reason) == (True, "simulator")
    b = numbarnn.get_backend("cuda")
    assert isinstance(b, Backend)
    assert b.name == "cuda" and b.simulated is True and b.xp is np
    assert b.kernels.__name__ == "numbarnn.kernels.cuda"
    for name in ("rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward",
                 "gru_forward", "gru_backward"):
        assert callable(getattr(b.kernels, name)), name


def test_cuda_status_never_raises(monkeypatch):
    from numbarnn import backend

    status = numbarnn.cuda_status()
    assert isinstance(status, tuple) and len(status) == 2
    assert isinstance(status[0], bool) and isinstance(status[1], str) and status[1]

    def boom(*a, **k):
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(backend, "_simulator_enabled", boom)
    usable, reason = numbarnn.cuda_status()
    assert usable is False and "driver exploded" in reason

    monkeypatch.setattr(backend.importlib.util, "find_spec", boom)
    usable, reason = numbarnn.cuda_status()
    assert usable is False and "driver exploded" in reason
