"""Variable-length batches: ``forward(x, lengths=...)`` against PyTorch's packed path.

PyTorch's ``pack_padded_sequence(x, lengths, enforce_sorted=False)`` ->
``RNN/LSTM/GRU`` -> ``pad_packed_sequence(..., total_length=T)`` is the oracle: outputs
(zero past each end), final states (at each sequence's end; the reverse direction starting
there) and every gradient, with random cotangents also at the padded steps (torch's padded
outputs are constants, so they must be ignored). Golden cases come from
``tests/golden/make_lengths_golden.py`` (no torch needed); live cases (marker ``torch``)
run torch in the same process. Tolerance as in ``test_torch_parity.py``: ``max|a - b| /
max|b|`` below 1e-5 in float32 and 1e-10 in float64, per array.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import numbarnn
from numbarnn import GRU, LSTM, RNN, LastStep, Linear, Sequential

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location(
    "make_lengths_golden", GOLDEN_DIR / "make_lengths_golden.py"
)
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)  # numpy only at import; torch only inside functions

RTOL = {"float32": 1e-5, "float64": 1e-10}
GOLDEN = gen.load_cases(gen.PATH)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), np.finfo(float).tiny))


def build_layer(cfg, backend="cpu"):
    kw = dict(
        num_layers=cfg["num_layers"], bias=cfg["bias"], batch_first=cfg["batch_first"],
        bidirectional=cfg["bidirectional"], dtype=np.dtype(cfg["dtype"]), backend=backend,
    )
    mode, I, H = cfg["mode"], cfg["input_size"], cfg["hidden_size"]
    if mode == "lstm":
        return LSTM(I, H, **kw)
    if mode == "gru":
        return GRU(I, H, **kw)
    return RNN(I, H, nonlinearity=mode[4:], **kw)


def numbarnn_run(cfg, arrays, backend="cpu"):
    """forward(x, hx, lengths) and backward with the case's weights; results by torch's names."""
    lstm = cfg["mode"] == "lstm"
    m = build_layer(cfg, backend)
    m.load_state_dict({k: v for k, v in arrays.items() if k.startswith(("weight_", "bias_"))})
    hx = None
    if cfg["has_h0"]:
        hx = (arrays["h0"], arrays["c0"]) if lstm else arrays["h0"]
    y, state = m(arrays["x"], hx, lengths=np.array(cfg["lengths"]))
    dstate = None
    if cfg["has_dstate"]:
        dstate = (arrays["dh_n"], arrays["dc_n"]) if lstm else arrays["dh_n"]
    dx, dstate0 = m.backward(arrays["dy"], dstate)
    out = {"y": y, "dx": dx}
    out["h_n"], out["dh0"] = (state[0], dstate0[0]) if lstm else (state, dstate0)
    if lstm:
        out["c_n"], out["dc0"] = state[1], dstate0[1]
    out.update({"grad." + k: g for k, g in m.grads.items()})
    return {k: m.backend.to_numpy(v) for k, v in out.items()}


def compare(cfg, expected, label):
    got = numbarnn_run(cfg, expected)
    names = [k for k in got if k in expected]
    assert sorted(names) == sorted(got) and len(names) >= 5, (label, sorted(got))
    tol = RTOL[cfg["dtype"]]
    errs = {k: rel_err(got[k], expected[k]) for k in names}
    bad = {k: v for k, v in errs.items() if not v < tol}
    assert not bad, f"{label}: relative error above {tol:g}: {bad}\nconfig: {cfg}"
    return errs


def test_golden_file_covers_the_options():
    assert len(GOLDEN) == 32
    for mode in ("rnn_tanh", "rnn_relu", "lstm", "gru"):
        cfgs = [c for c, _ in GOLDEN if c["mode"] == mode]
        for key in ("bidirectional", "batch_first", "bias", "has_h0", "has_dstate"):
            assert {c[key] for c in cfgs} == {False, True}, (mode, key)
        assert {c["dtype"] for c in cfgs} == {"float32", "float64"}
        assert any(max(c["lengths"]) < c["seq_len"] for c in cfgs)  # every sequence padded
    for cfg, a in GOLDEN:
        lengths = cfg["lengths"]
        assert min(lengths) == 1 and lengths != sorted(lengths, reverse=True), gen.case_id(cfg)
        assert np.any(a["dx"]) and np.any(a["y"])


@pytest.mark.parametrize("cfg, arrays", GOLDEN, ids=[gen.case_id(c) for c, _ in GOLDEN])
def test_golden(cfg, arrays):
    compare(cfg, arrays, gen.case_id(cfg))


def live_config(seed):
    rng = np.random.default_rng(seed)
    row = (int(rng.integers(1, 3)), bool(rng.integers(2)), bool(rng.integers(2)),
           bool(rng.integers(2)), bool(rng.integers(2)), bool(rng.integers(2)),
           ("float32", "float64")[int(rng.integers(2))])
    mode = ("rnn_tanh", "rnn_relu", "lstm", "gru")[seed % 4]
    return gen.make_config(mode, row, int(rng.integers(2**31)), all_padded=seed % 3 == 0)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(12))
def test_live(seed):
    pytest.importorskip("torch")
    cfg = live_config(seed)
    inputs = gen.make_golden.draw_inputs(cfg)
    expected = dict(inputs)
    expected.update(gen.torch_reference(cfg, inputs))
    compare(cfg, expected, f"live seed={seed} ({gen.case_id(cfg)})")


@pytest.mark.torch
def test_golden_regenerates():
    """The installed torch gives the stored results on a stored case's weights and inputs."""
    pytest.importorskip("torch")
    for cfg, stored in GOLDEN[::8]:
        inputs = gen.make_golden.draw_inputs(cfg)
        for name, a in inputs.items():
            np.testing.assert_array_equal(a, stored[name], err_msg=name)
        sd = {k: v for k, v in stored.items() if k.startswith(("weight_", "bias_"))}
        for name, a in gen.torch_reference(cfg, inputs, state_dict=sd).items():
            assert rel_err(a, stored[name]) < RTOL[cfg["dtype"]], (gen.case_id(cfg), name)


# --------------------------------------------------------------------------- semantics


def test_each_sequence_equals_its_own_unpadded_run():
    """Outputs, final states, dx and dh0 of a padded batch equal each sequence run alone."""
    rng = np.random.default_rng(1)
    T, I, H = 5, 3, 4
    lengths = np.array([3, 5, 1, 4])
    m = LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=2)
    x = rng.standard_normal((T, 4, I))
    h0 = rng.standard_normal((4, 4, H))
    c0 = rng.standard_normal((4, 4, H))
    y, (h_n, c_n) = m(x, (h0, c0), lengths=lengths)
    dy = rng.standard_normal(y.shape)
    dx, (dh0, _) = m.backward(dy)
    for b, n in enumerate(lengths):
        yb, (hb, cb) = m(x[:n, b], (h0[:, b], c0[:, b]))  # unbatched, n steps
        np.testing.assert_allclose(y[:n, b], yb, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(y[n:, b], 0)
        np.testing.assert_allclose(h_n[:, b], hb, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(c_n[:, b], cb, rtol=1e-12, atol=1e-14)
        dxb, (dh0b, _) = m.backward(dy[:n, b])
        np.testing.assert_allclose(dx[:n, b], dxb, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(dx[n:, b], 0)
        np.testing.assert_allclose(dh0[:, b], dh0b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_full_lengths_equal_no_lengths_and_padded_dy_is_ignored(cls):
    rng = np.random.default_rng(3)
    m = cls(2, 3, num_layers=2, bidirectional=True, batch_first=True, seed=4)
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)  # (B, T, I)
    y, state = m(x)
    y2, state2 = m(x, lengths=[4, 4, 4])
    np.testing.assert_array_equal(y, y2)
    for a, b in zip(state if cls is LSTM else (state,), state2 if cls is LSTM else (state2,)):
        np.testing.assert_array_equal(a, b)

    lengths = np.array([2, 4, 1], dtype=np.int32)  # any integer dtype
    y, _ = m(x, lengths=lengths)
    np.testing.assert_array_equal(y[0, 2:], 0)
    np.testing.assert_array_equal(y[2, 1:], 0)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    m.zero_grad()
    dx, _ = m.backward(dy)
    grads = {k: g.copy() for k, g in m.grads.items()}
    dy[0, 2:] = 1e6  # past the ends: must change nothing
    dy[2, 1:] = -1e6
    m(x, lengths=lengths)
    m.zero_grad()
    dx2, _ = m.backward(dy)
    np.testing.assert_array_equal(dx, dx2)
    for k, g in m.grads.items():
        np.testing.assert_array_equal(g, grads[k], err_msg=k)


def test_unbatched_input_takes_a_single_length():
    rng = np.random.default_rng(5)
    m = GRU(2, 3, seed=0)
    x = rng.standard_normal((5, 2)).astype(np.float32)
    y, h_n = m(x, lengths=3)
    y3, h3 = m(x[:3])
    np.testing.assert_allclose(y[:3], y3, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(y[3:], 0)
    np.testing.assert_allclose(h_n, h3, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(m(x, lengths=np.array([3]))[0], y)


def test_lengths_errors():
    m = LSTM(2, 3)
    x = np.zeros((4, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"lengths: expected shape \(3,\), one length per sequence"):
        m(x, lengths=[4, 4])
    with pytest.raises(ValueError, match=r"lengths: expected every length in \[1, 4\].* 0 to 4"):
        m(x, lengths=[4, 0, 2])
    with pytest.raises(ValueError, match=r"lengths: expected every length in \[1, 4\].* 1 to 5"):
        m(x, lengths=[1, 5, 2])
    with pytest.raises(TypeError, match="lengths: expected an integer dtype, got float64"):
        m(x, lengths=[4.0, 2.0, 1.0])
    with pytest.raises(TypeError, match="lengths: expected an integer dtype, got bool"):
        m(x, lengths=np.array([True, True, True]))
    with pytest.raises(TypeError, match="lengths: expected integers, got a bool"):
        m(x[:, 0], lengths=True)
    with pytest.raises(ValueError, match="lengths: expected a single integer"):
        m(x[:, 0], lengths=[2, 3])
    with pytest.raises(TypeError, match="lengths: expected an integer dtype, got object"):
        m(x, lengths=[None, 1, 2])


def test_cuda_backend_lengths_match_cpu(monkeypatch):
    backend = numbarnn.get_backend("cuda")
    if not backend.simulated:
        pytest.skip("real GPU: covered by the realgpu tests")
    from numbarnn.kernels import cuda as cuda_kernels

    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 4)
    for cfg, arrays in [c for c in GOLDEN if c[0]["mode"] in ("lstm", "gru")][::4]:
        got = numbarnn_run(cfg, arrays, backend="cuda")
        expected = numbarnn_run(cfg, arrays)
        tol = 1e-5 if cfg["dtype"] == "float32" else 1e-12
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=tol, atol=tol, err_msg=k)


# --------------------------------------------------------------------------- modules


@pytest.mark.parametrize("batch_first", [False, True])
def test_laststep_takes_each_sequence_last_valid_step(batch_first):
    rng = np.random.default_rng(6)
    lengths = np.array([2, 5, 1])
    y = rng.standard_normal((3, 5, 4) if batch_first else (5, 3, 4)).astype(np.float32)
    last = LastStep(batch_first=batch_first)
    h = last(y, lengths=lengths)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(h[b], y[b, n - 1] if batch_first else y[n - 1, b])
    dh = rng.standard_normal(h.shape).astype(np.float32)
    dy = last.backward(dh)
    expected = np.zeros_like(y)
    for b, n in enumerate(lengths):
        if batch_first:
            expected[b, n - 1] = dh[b]
        else:
            expected[n - 1, b] = dh[b]
    np.testing.assert_array_equal(dy, expected)
    seq = y[0] if batch_first else y[:, 0]  # one unbatched (T, F) sequence
    np.testing.assert_array_equal(last(seq, lengths=2), seq[1])
    with pytest.raises(ValueError, match=r"lengths: expected shape \(3,\)"):
        last(y, lengths=[1, 2])


def test_sequential_passes_lengths_on():
    """A classifier on a padded batch equals the classifier on each sequence alone, and its
    gradients equal the sum of theirs."""
    rng = np.random.default_rng(7)
    T, B, I, H = 6, 4, 3, 5
    lengths = np.array([6, 2, 4, 1])

    def model():
        return Sequential(
            GRU(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=0),
            Linear(2 * H, H, dtype=np.float64, seed=1), LSTM(H, H, dtype=np.float64, seed=2),
            LastStep(), Linear(H, 2, dtype=np.float64, seed=3),
        )

    padded, alone = model(), model()
    x = rng.standard_normal((T, B, I))
    logits = padded(x, lengths=lengths)
    dlogits = rng.standard_normal(logits.shape)
    dx = padded.backward(dlogits)
    for b, n in enumerate(lengths):
        out = alone(x[:n, b : b + 1])
        np.testing.assert_allclose(logits[b], out[0], rtol=1e-12, atol=1e-14)
        dxb = alone.backward(dlogits[b : b + 1])
        np.testing.assert_allclose(dx[:n, b], dxb[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(dx[n:, b], 0)
    for k, g in padded.grads.items():
        np.testing.assert_allclose(g, alone.grads[k], rtol=1e-10, atol=1e-13, err_msg=k)
