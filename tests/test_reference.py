"""The float64 NumPy reference (tests/reference.py) and the CPU kernel drivers against it.

(a) The reference's own backward is checked by central differences, so it can be trusted.
(b) Every driver of ``numbarnn.kernels.cpu`` is compared with the reference: every cell,
    both directions, float64 and float32, random non-zero inputs and initial states,
    outputs poisoned with NaN before the call, weight-gradient arrays that start from
    random non-zero values (so that accumulation, not overwriting, is checked).
(c) A whole layer (multi-layer, bidirectional) against the reference model.
"""

import os

import numpy as np
import pytest

import numbarnn
import reference as ref
from numbarnn.kernels import cpu, gemm

MODES = ref.MODES
GOLDEN = os.path.join(os.path.dirname(__file__), "golden")

# Tolerances by dtype: |actual - expected| <= atol + rtol * |expected|.
TOL = {
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5),
}


def assert_close(actual, expected, dtype, name):
    tol = TOL[np.dtype(dtype)]
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{name}: dtype {actual.dtype} != {dtype}"
    assert np.all(np.isfinite(actual)), f"{name}: non-finite values (NaN poison left?)"
    err = np.abs(actual.astype(np.float64) - expected)
    bound = tol["atol"] + tol["rtol"] * np.abs(expected)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (
        f"{name} ({np.dtype(dtype).name}): max abs error {err.max():.3e}; worst at {worst}: "
        f"got {actual[worst]!r}, expected {expected[worst]!r}"
    )


# --------------------------------------------------------------------------- (a) reference


def _ref_loss(mode, reverse, x, w, h0, c0, cot):
    """L = sum(y * wy) + sum(h_n * wh) [+ sum(c_n * wc)] through the reference forward."""
    y, h_n, c_n, _ = ref.layer_forward(mode, x, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"],
                                       h0, c0, reverse)
    loss = np.sum(y * cot["y"]) + np.sum(h_n * cot["h"])
    if mode == "lstm":
        loss += np.sum(c_n * cot["c"])
    return loss


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("mode", MODES)
def test_reference_backward_by_central_differences(mode, reverse):
    rng = np.random.default_rng([11, MODES.index(mode), reverse])
    T, B, I, H = 4, 2, 3, 3
    G = ref.GATES[mode]
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    c0 = rng.standard_normal((B, H)) if mode == "lstm" else None
    w = dict(
        w_ih=rng.uniform(-0.8, 0.8, (G * H, I)),
        w_hh=rng.uniform(-0.8, 0.8, (G * H, H)),
        b_ih=rng.uniform(-0.5, 0.5, G * H),
        b_hh=rng.uniform(-0.5, 0.5, G * H),
    )
    cot = dict(y=rng.standard_normal((T, B, H)), h=rng.standard_normal((B, H)),
               c=rng.standard_normal((B, H)))

    _, _, _, cache = ref.layer_forward(mode, x, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"],
                                       h0, c0, reverse)
    dx, dh0, dc0, grads = ref.layer_backward(cache, cot["y"], cot["h"],
                                             cot["c"] if mode == "lstm" else None)

    def loss():
        return _ref_loss(mode, reverse, x, w, h0, c0, cot)

    checks = [("dx", x, dx), ("dh0", h0, dh0)] + [(k, w[k], grads[k]) for k in w]
    if mode == "lstm":
        checks.append(("dc0", c0, dc0))
    eps = 1e-6
    for name, arr, analytic in checks:
        assert analytic.shape == arr.shape, name
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            lp = loss()
            arr[idx] = old - eps
            lm = loss()
            arr[idx] = old
            numeric[idx] = (lp - lm) / (2 * eps)
        assert np.max(np.abs(numeric)) > 1e-3, f"{name}: gradient vanishes, weak check"
        rel = np.max(np.abs(numeric - analytic)) / np.max(np.abs(numeric))
        assert rel < 1e-7, f"reference {mode} reverse={reverse}: {name} relative error {rel:.2e}"


def test_reference_reverse_is_forward_on_flipped_sequence():
    """reverse=True must equal processing the time-flipped sequence and flipping back."""
    rng = np.random.default_rng(5)
    T, B, I, H = 5, 2, 3, 4
    for mode in MODES:
        G = ref.GATES[mode]
        x = rng.standard_normal((T, B, I))
        w = [rng.uniform(-0.5, 0.5, s) for s in [(G * H, I), (G * H, H), (G * H,), (G * H,)]]
        h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
        c0 = c0 if mode == "lstm" else None
        y_rev, h_rev, _, _ = ref.layer_forward(mode, x, *w, h0, c0, reverse=True)
        y_fl, h_fl, _, _ = ref.layer_forward(mode, x[::-1], *w, h0, c0, reverse=False)
        np.testing.assert_allclose(y_rev, y_fl[::-1], rtol=0, atol=1e-14)
        np.testing.assert_allclose(h_rev, h_fl, rtol=0, atol=1e-14)
        np.testing.assert_allclose(h_rev, y_rev[0], rtol=0, atol=0)


def _golden_cases():
    cases = []
    if not os.path.isdir(GOLDEN):
        return cases
    import sys

    sys.path.insert(0, GOLDEN)
    try:
        from make_golden import load_cases
    finally:
        sys.path.remove(GOLDEN)
    for mode in MODES:
        path = os.path.join(GOLDEN, f"{mode}.npz")
        if os.path.exists(path):
            for cfg, arrays in load_cases(path):
                if cfg["dtype"] == "float64":
                    cases.append((cfg, arrays))
    return cases


def test_reference_forward_matches_pytorch_golden_vectors():
    """The reference against an outside oracle: PyTorch's stored float64 outputs."""
    cases = _golden_cases()
    if not cases:
        pytest.skip("no golden vectors under tests/golden")
    for cfg, a in cases:
        x, h0 = a["x"], a["h0"]
        c0 = a.get("c0")
        y_t, hn_t, cn_t = a["y"], a["h_n"], a.get("c_n")
        if cfg["batch"] is None:  # unbatched: add B = 1
            x, h0, y_t, hn_t = x[:, None], h0[:, None], y_t[:, None], hn_t[:, None]
            c0 = None if c0 is None else c0[:, None]
            cn_t = None if cn_t is None else cn_t[:, None]
        elif cfg["batch_first"]:
            x, y_t = x.transpose(1, 0, 2), y_t.transpose(1, 0, 2)
        weights = {k: v for k, v in a.items() if k.startswith(("weight_", "bias_"))}
        y, h_n, c_n = ref.model_forward(cfg["mode"], x, weights, cfg["num_layers"],
                                        cfg["bidirectional"], h0, c0)
        np.testing.assert_allclose(y, y_t, rtol=1e-10, atol=1e-12, err_msg=str(cfg))
        np.testing.assert_allclose(h_n, hn_t, rtol=1e-10, atol=1e-12, err_msg=str(cfg))
        if cfg["mode"] == "lstm":
            np.testing.assert_allclose(c_n, cn_t, rtol=1e-10, atol=1e-12, err_msg=str(cfg))


# --------------------------------------------------------------------------- (b) drivers


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def run_driver_case(mode, reverse, dtype, T=5, B=3, I=4, H=6, seed=0, state_layout="C"):
    """Run one forward + backward driver pair and the reference on the same data.

    Returns a list of (name, actual, expected) and a list of (name, before, after) of
    arguments that must not change.
    """
    dtype = np.dtype(dtype)
    rng = np.random.default_rng([seed, MODES.index(mode), reverse, dtype.itemsize])
    G = ref.GATES[mode]

    def draw(shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    def state(shape):
        if state_layout == "C":
            return draw(shape)
        return np.asfortranarray(draw(shape))  # any layout is allowed for states

    bound = 1.0 / np.sqrt(H)
    x = draw((T, B, I))
    w_ih = rng.uniform(-bound, bound, (G * H, I)).astype(dtype)
    w_hh = rng.uniform(-bound, bound, (G * H, H)).astype(dtype)
    b_ih = rng.uniform(-bound, bound, G * H).astype(dtype)
    b_hh = rng.uniform(-bound, bound, G * H).astype(dtype)
    h0 = state((B, H))
    c0 = state((B, H)) if mode == "lstm" else None
    dy = draw((T, B, H))
    dh_n = state((B, H))
    dc_n = state((B, H)) if mode == "lstm" else None
    # accumulated gradients start from random non-zero values
    dw0 = [draw((G * H, I)), draw((G * H, H)), draw(G * H), draw(G * H)]
    dw = [a.copy() for a in dw0]

    inputs = dict(x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, h0=h0, dy=dy, dh_n=dh_n)
    if mode == "lstm":
        inputs.update(c0=c0, dc_n=dc_n)
    before = {k: v.copy() for k, v in inputs.items()}

    # reference (float64 on exactly the values the kernel sees)
    y_r, hn_r, cn_r, cache = ref.layer_forward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse)
    dx_r, dh0_r, dc0_r, g_r = ref.layer_backward(cache, dy, dh_n, dc_n)

    y, h_n, dx, dh0 = _nan((T, B, H), dtype), _nan((B, H), dtype), _nan((T, B, I), dtype), \
        _nan((B, H), dtype)
    results = [("y", y, y_r), ("h_n", h_n, hn_r), ("dx", dx, dx_r), ("dh0", dh0, dh0_r)]
    full = np.full(B, T, dtype=np.int64)  # every sequence runs all T steps
    if mode in ("rnn_tanh", "rnn_relu"):
        relu = mode == "rnn_relu"
        cpu.rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, full, relu, y, h_n)
        saved = dict(y=y)
        saved_before = {k: v.copy() for k, v in saved.items()}
        cpu.rnn_backward(x, w_ih, w_hh, h0, reverse, full, relu, y, dy, dh_n, dx, dh0, *dw)
    elif mode == "lstm":
        c, gates, c_n, dc0 = (_nan((T, B, H), dtype), _nan((T, B, 4 * H), dtype),
                              _nan((B, H), dtype), _nan((B, H), dtype))
        cpu.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse, full, y, c, gates, h_n, c_n)
        saved = dict(y=y, c=c, gates=gates)
        saved_before = {k: v.copy() for k, v in saved.items()}
        cpu.lstm_backward(x, w_ih, w_hh, h0, c0, reverse, full, y, c, gates, dy, dh_n, dc_n,
                          dx, dh0, dc0, *dw)
        results += [("c", c, cache["c"]), ("gates", gates, cache["gates"]),
                    ("c_n", c_n, cn_r), ("dc0", dc0, dc0_r)]
    else:
        gates, hn_proj = _nan((T, B, 3 * H), dtype), _nan((T, B, H), dtype)
        cpu.gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, full, y, gates, hn_proj, h_n)
        saved = dict(y=y, gates=gates, h_n_proj=hn_proj)
        saved_before = {k: v.copy() for k, v in saved.items()}
        cpu.gru_backward(x, w_ih, w_hh, h0, reverse, full, y, gates, hn_proj, dy, dh_n, dx, dh0,
                         *dw)
        results += [("gates", gates, cache["gates"]), ("h_n_proj", hn_proj, cache["hn"])]
    for name, start, acc, key in zip(("dw_ih", "dw_hh", "db_ih", "db_hh"), dw0, dw,
                                     ("w_ih", "w_hh", "b_ih", "b_hh")):
        results.append((name, acc, start.astype(np.float64) + g_r[key]))
    unchanged = [(k, before[k], inputs[k]) for k in inputs]
    unchanged += [(f"saved {k}", saved_before[k], saved[k]) for k in saved]
    return results, unchanged


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("mode", MODES)
def test_driver_matches_reference(mode, reverse, dtype):
    results, unchanged = run_driver_case(mode, reverse, dtype)
    for name, actual, expected in results:
        assert_close(actual, expected, dtype, f"{mode} reverse={reverse} {name}")
    for name, before, after in unchanged:
        np.testing.assert_array_equal(after, before, err_msg=f"{mode}: driver modified {name}")


@pytest.mark.parametrize("mode", MODES)
def test_driver_edge_sizes(mode):
    """T = 1, B = 1, H = 1 and I = 1 (float64, both directions)."""
    for reverse in (False, True):
        for T, B, I, H in [(1, 1, 2, 3), (3, 1, 1, 1), (1, 4, 3, 2)]:
            results, _ = run_driver_case(mode, reverse, np.float64, T, B, I, H, seed=3)
            for name, actual, expected in results:
                assert_close(actual, expected, np.float64,
                             f"{mode} reverse={reverse} T{T}B{B}I{I}H{H} {name}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("threads", [(1, 1), (1, 2), (2, 2)], ids=lambda t: "numba%d-blas%d" % t)
@pytest.mark.parametrize("B", [1, 14, 250])
@pytest.mark.parametrize("mode", MODES)
def test_driver_recurrent_product_paths(mode, B, threads, dtype, monkeypatch, numba_threads):
    """Every way of doing the recurrent products matches the reference (H = 196): on one
    Numba thread, one BLAS call at B = 250 when the BLAS has several threads; at B = 1
    forward over T = 2 steps a matrix-vector product over ``w_hh`` as it is; otherwise the
    packed kernels of ``numbarnn.kernels.gemm``: the one-row kernel at B = 1 (backward, and
    forward from ``_PACKED_MATVEC_STEPS`` steps), else tiles with a
    ragged last row tile and (backward, K = G*H) several blocks along K; a ragged last
    panel in both. On two Numba threads, those kernels on both threads from B = 14, and the
    weight gradients on them too. (A BLAS as wide as the micro-kernel: see
    ``test_narrower_blas_is_never_called`` for the other kind.)"""
    n_numba, n_blas = threads
    numba_threads(n_numba)
    monkeypatch.setattr(cpu, "_openblas_threads", lambda: n_blas)
    monkeypatch.setattr(cpu, "_openblas_wide", 1)
    H, G = 196, ref.GATES[mode]
    nr = gemm.panel_width(np.dtype(dtype).itemsize, B)
    w_hh = np.zeros((G * H, H), dtype)
    for T in (2, cpu._PACKED_MATVEC_STEPS) if B == 1 else (2,):
        for w in (w_hh.T, w_hh):  # as the forward and the backward multiply by it
            panels = cpu._pack_weights(w, B, T)
            if (B == 250 and threads == (1, 2)) or (B == 1 and T == 2 and w is not w_hh):
                assert panels.shape[0] == 0
                continue
            assert panels.shape == (-(-w.shape[1] // nr), w.shape[0], nr)
            assert H % nr and (B == 1 or B % gemm.MR)  # ragged: the last panel, the last rows
            assert cpu._threaded(B * H * G * H) == (n_numba == 2 and B > 1)
        results, _ = run_driver_case(mode, True, dtype, T=T, B=B, I=3, H=H, seed=5)
        _assert_long_sums_close(results, dtype, f"{mode} T={T} B={B} H={H}")


def _assert_long_sums_close(results, dtype, label):
    """``run_driver_case`` results with sums of hundreds of terms: float32 ones cancel, so
    their error is measured relative to the array's largest value."""
    for name, actual, expected in results:
        if dtype == np.float64:
            assert_close(actual, expected, dtype, f"{label} {name}")
        else:
            err = np.abs(actual.astype(np.float64) - expected).max() / np.abs(expected).max()
            assert err <= 1e-5, f"{label} {name}: error {err:.2e} of the max"


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("threads", [1, 2], ids=["numba1", "numba2"])
@pytest.mark.parametrize("I", [3, 2100])
@pytest.mark.parametrize("mode", MODES)
def test_driver_input_product_paths(mode, I, threads, dtype, numba_threads, monkeypatch):
    """The products done once per call, the input projection (``x @ w_ih.T``) and the input
    gradient (``da @ w_ih``), go through packed weights while those fit in L2 (I = 3) and
    through BLAS above that (I = 2100, H = 64: 0.5-4 MB) on one Numba thread (with a BLAS
    as wide as the micro-kernel), through packed weights on two, and match the reference."""
    numba_threads(threads)
    monkeypatch.setattr(cpu, "_openblas_wide", 1)
    T, B, H = 3, 2, 64
    G = ref.GATES[mode]
    w_ih = np.zeros((G * H, I), dtype)
    for w, rows in ((w_ih.T, T * B), (w_ih, cpu._chunk_steps(T, B) * B)):
        assert (cpu._pack_weights(w, rows, 0).shape[0] > 0) == (I == 3 or threads == 2)
    results, _ = run_driver_case(mode, False, dtype, T=T, B=B, I=I, H=H, seed=11)
    _assert_long_sums_close(results, dtype, f"{mode} I={I}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mode", MODES)
def test_narrower_blas_is_never_called(mode, dtype, numba_threads, monkeypatch):
    """With a BLAS whose vectors are narrower than the micro-kernel's, one Numba thread
    takes the packed products everywhere: the recurrent products with a multithreaded BLAS
    (B = 250) and the products done once per call with large weights (I = 2100), which go
    to BLAS only where it is as wide. All match the reference and, gradients included, the
    two-thread run (which never calls BLAS) bit for bit, as BLAS's own order of summing
    would not."""
    monkeypatch.setattr(cpu, "_openblas_threads", lambda: 2)
    G = ref.GATES[mode]
    products = ((np.zeros((196, G * 196), dtype), 250, 2),
                (np.zeros((2100, G * 64), dtype), 6, 0))
    numba_threads(1)
    for wide in (1, 0):
        monkeypatch.setattr(cpu, "_openblas_wide", wide)
        assert cpu._blas_allowed() == bool(wide)
        for w, rows, steps in products:
            assert (cpu._pack_weights(w, rows, steps).shape[0] > 0) == (not wide)
    for T, B, I, H in ((2, 250, 3, 196), (3, 2, 2100, 64)):
        runs = []
        for threads in (1, 2):
            numba_threads(threads)
            results, _ = run_driver_case(mode, False, dtype, T=T, B=B, I=I, H=H, seed=13)
            _assert_long_sums_close(results, dtype, f"{mode} T{T}B{B}I{I}H{H} narrow BLAS")
            runs.append(results)
        for (name, one, _), (_, two, _) in zip(*runs):
            np.testing.assert_array_equal(two, one, err_msg=f"{mode} T{T}B{B}I{I}H{H} {name}")


@pytest.mark.parametrize("corename, vector_bytes", [
    (b"SkylakeX", 64), (b"Cooperlake", 64), (b"SAPPHIRERAPIDS", 64), (b"Haswell", 32),
    (b"Zen", 32), (b"Sandybridge", 32), (b"Nehalem", 16), (b"neoversen1", 16), (b"", None),
    (None, None),
])
def test_openblas_vector_bytes(corename, vector_bytes, monkeypatch):
    """The vector width of OpenBLAS's kernels, read from the core it picked (None where no
    OpenBLAS is found or it names none), and which products it may then take."""
    def function(name, restype):
        assert name == "get_corename"
        return None if corename is None else (lambda: corename)

    monkeypatch.setattr(cpu, "_openblas_function", function)
    assert cpu._openblas_vector_bytes() == vector_bytes
    monkeypatch.setattr(cpu, "_openblas_wide", None)  # looked up again at the next call
    expected = vector_bytes is None or vector_bytes >= gemm._VECTOR_BYTES
    assert cpu._blas_wide_callback() == expected


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("mode", MODES)
def test_driver_backward_in_chunks_matches_reference(mode, reverse):
    """T = 40, B = 64: the backward sweep goes in chunks of 16 steps, the last partial."""
    T, B = 40, 64
    assert cpu._chunk_steps(T, B) == 16
    results, _ = run_driver_case(mode, reverse, np.float64, T=T, B=B, I=3, H=5, seed=9)
    for name, actual, expected in results:
        assert_close(actual, expected, np.float64, f"{mode} reverse={reverse} chunks {name}")


def test_driver_states_in_any_layout():
    """h0, c0, dh_n, dc_n may have any layout (the docstring promises it)."""
    results, _ = run_driver_case("lstm", True, np.float64, state_layout="F")
    for name, actual, expected in results:
        assert_close(actual, expected, np.float64, f"lstm F-ordered states {name}")


# --------------------------------------------------------------------------- (c) layers


def _layer(mode, *args, **kwargs):
    if mode in ("rnn_tanh", "rnn_relu"):
        return numbarnn.RNN(*args, nonlinearity=mode[4:], **kwargs)
    return {"lstm": numbarnn.LSTM, "gru": numbarnn.GRU}[mode](*args, **kwargs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mode", MODES)
def test_layer_forward_matches_reference_model(mode, dtype):
    T, B, I, H, L = 4, 3, 5, 4, 3
    m = _layer(mode, I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=7)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((2 * L, B, H)).astype(dtype)
    c0 = rng.standard_normal((2 * L, B, H)).astype(dtype)
    weights = m.state_dict()
    assert sorted(weights) == sorted(ref.param_names(L, True))
    if mode == "lstm":
        y, (h_n, c_n) = m(x, (h0, c0))
        y_r, hn_r, cn_r = ref.model_forward(mode, x, weights, L, True, h0, c0)
        assert_close(c_n, cn_r, dtype, f"{mode} c_n")
    else:
        y, h_n = m(x, h0)
        y_r, hn_r, _ = ref.model_forward(mode, x, weights, L, True, h0)
    assert_close(y, y_r, dtype, f"{mode} y")
    assert_close(h_n, hn_r, dtype, f"{mode} h_n")


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_layer_without_bias_matches_reference_model(mode):
    T, B, I, H = 3, 2, 3, 5
    m = _layer(mode, I, H, num_layers=2, bias=False, dtype=np.float64, seed=2)
    x = np.random.default_rng(4).standard_normal((T, B, I))
    weights = m.state_dict()
    assert sorted(weights) == sorted(ref.param_names(2, False, bias=False))
    out = m(x)
    y, h_n = out[0], out[1][0] if mode == "lstm" else out[1]
    y_r, hn_r, _ = ref.model_forward(mode, x, weights, 2, False)
    assert_close(y, y_r, np.float64, f"{mode} y")
    assert_close(h_n, hn_r, np.float64, f"{mode} h_n")
