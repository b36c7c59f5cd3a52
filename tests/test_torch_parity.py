"""PyTorch as an outside oracle: numbarnn's RNN, LSTM and GRU against torch.nn.

Two kinds of test:

* golden tests (no torch needed): cases that torch computed once, stored under
  ``tests/golden/`` by ``tests/golden/make_golden.py`` (run it again to regenerate them);
* live tests (marker ``torch``, skipped without torch): fresh random configurations
  compared with torch in the same process. A failing draw prints its seed; reproduce it
  with ``_live(seed)`` from this module (``live_config(seed)`` gives the configuration).

Each comparison runs forward (``y``, ``h_n``, ``c_n``) and backward with random
cotangents (``dx``, ``dh0``, ``dc0`` and every parameter gradient in ``grads``), and
asserts ``max|a - b| / max(max|b|, tiny)`` below 1e-5 in float32 and 1e-10 in float64,
per array. Float32 live draws that miss it get a second look against a float64 truth
(see :func:`compare`): rare random draws are ill-conditioned in float32.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import numbarnn

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)  # numpy only at import; torch only inside functions

MODES = make_golden.MODES
RTOL = {"float32": 1e-5, "float64": 1e-10}
TINY = np.finfo(np.float64).tiny


# --------------------------------------------------------------------------- helpers
def rel_err(a, b):
    """max|a - b| / max(max|b|, tiny), computed in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if b.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), TINY))


def group_of(name):
    """The group a result belongs to, for the float32 fallback scale in :func:`compare`.

    Outputs (``y``, ``h_n``, ``c_n``), input gradients (``dx``, ``dh0``, ``dc0``), and the
    parameter gradients of one layer and direction (``grad.*_l1_reverse``...).
    """
    if name in ("y", "h_n", "c_n"):
        return "outputs"
    if name in ("dx", "dh0", "dc0"):
        return "input grads"
    return name[name.index("_l"):]  # grad.weight_ih_l1_reverse -> _l1_reverse


def build_layer(cfg):
    """The numbarnn layer of a golden/live config (weights are loaded afterwards)."""
    kw = dict(
        num_layers=cfg["num_layers"], bias=cfg["bias"], batch_first=cfg["batch_first"],
        bidirectional=cfg["bidirectional"], dtype=np.dtype(cfg["dtype"]), backend="cpu",
        seed=0,
    )
    mode = cfg["mode"]
    if mode == "lstm":
        return numbarnn.LSTM(cfg["input_size"], cfg["hidden_size"], **kw)
    if mode == "gru":
        return numbarnn.GRU(cfg["input_size"], cfg["hidden_size"], **kw)
    return numbarnn.RNN(cfg["input_size"], cfg["hidden_size"], nonlinearity=mode[4:], **kw)


def numbarnn_run(cfg, arrays):
    """Forward and backward with numbarnn on a case's weights, inputs and cotangents.

    The initial state is passed only when ``has_h0`` (otherwise None, i.e. zeros) and the
    final-state cotangents only when ``has_dstate``. Returns name -> array with the same
    names as the torch results (``y``, ``h_n``, ``dx``, ``grad.<param>``...).
    """
    dt = np.dtype(cfg["dtype"])
    lstm = cfg["mode"] == "lstm"
    m = build_layer(cfg)
    sd = {k: v for k, v in arrays.items() if k.startswith(("weight_", "bias_"))}
    m.load_state_dict(sd)
    m.zero_grad()  # backward accumulates; start from zero (a fresh layer has zeros anyway)

    def arr(name):
        return np.ascontiguousarray(arrays[name], dtype=dt)

    x = arr("x")
    if cfg["has_h0"]:
        hx = (arr("h0"), arr("c0")) if lstm else arr("h0")
    else:
        hx = None
    y, state = m(x, hx)
    if cfg["has_dstate"]:
        dstate = (arr("dh_n"), arr("dc_n")) if lstm else arr("dh_n")
    else:
        dstate = None
    dx, dstate0 = m.backward(arr("dy"), dstate)

    out = {"y": y, "dx": dx}
    if lstm:
        out["h_n"], out["c_n"] = state
        out["dh0"], out["dc0"] = dstate0
    else:
        out["h_n"], out["dh0"] = state, dstate0
    for name, g in m.grads.items():
        out["grad." + name] = g
    for name, a in out.items():
        assert isinstance(a, np.ndarray) and a.dtype == dt, (name, type(a), getattr(a, "dtype", None))
    return out


def compare(cfg, expected, label, truth=None):
    """Run numbarnn on a case and assert every result matches ``expected`` (torch's).

    ``truth``, for float32 live draws only, is a function returning torch's results in
    float64 on the same (float32-valued) weights and inputs. It is consulted only for
    quantities that miss 1e-5 against torch's float32 results. Measured against the
    float64 truth, relative to the largest value in the quantity's group
    (:func:`group_of`), those pass if numbarnn's error is below 1e-5 or at most twice
    torch float32's own error. Why: a small array can be one sum with heavy cancellation
    (with H=1, ``weight_hh`` is 1x1, e.g. 0.0048 summed from terms ~0.5; or a whole layer's
    gradient carries one factor ``1 - h*h`` with ``h`` near 1), so its own-scale relative
    error measures float32 rounding, in torch as in numbarnn, rather than correctness.
    About 1 float32 draw in 400 needs this. Golden cases and float64 are held to the plain
    tolerance.

    Returns the dict name -> relative error against ``expected``.
    """
    got = numbarnn_run(cfg, expected)
    lstm = cfg["mode"] == "lstm"
    want_names = ["y", "h_n", "dx", "dh0"] + (["c_n", "dc0"] if lstm else [])
    want_names += sorted(k for k in expected if k.startswith("grad."))
    got_grads = sorted(k for k in got if k.startswith("grad."))
    assert got_grads == sorted(k for k in expected if k.startswith("grad.")), (
        f"{label}: parameter names differ: numbarnn {got_grads}"
    )
    errs = {}
    for name in want_names:
        assert got[name].shape == expected[name].shape, (
            f"{label}: {name} shape {got[name].shape}, torch {expected[name].shape}"
        )
        errs[name] = rel_err(got[name], expected[name])
    tol = RTOL[cfg["dtype"]]
    bad = {k: v for k, v in errs.items() if not v < tol}  # also catches NaN
    if bad and truth is not None:
        exact = truth()
        notes = {}
        for k in list(bad):
            group = [n for n in want_names if group_of(n) == group_of(k)]
            scale = max(float(np.max(np.abs(exact[n]), initial=0.0)) for n in group)
            e_nb = float(np.max(np.abs(got[k].astype(np.float64) - exact[k]))) / max(scale, TINY)
            e_torch = float(np.max(np.abs(expected[k].astype(np.float64) - exact[k]))) / max(scale, TINY)
            notes[k] = (
                f"{k}: vs torch32 {bad[k]:.3g}; vs float64 truth on the scale of "
                f"{group}: numbarnn {e_nb:.3g}, torch32 {e_torch:.3g}"
            )
            if e_nb < tol or e_nb <= 2 * e_torch:
                del bad[k]
        assert not bad, (
            f"{label}: relative error above {tol:g} in {sorted(bad)}, and against the "
            "float64 truth numbarnn is off by more than that and more than twice torch32: "
            + "; ".join(notes[k] for k in sorted(bad))
            + f"\nconfig: {cfg}"
        )
    assert not bad, (
        f"{label}: relative error above {tol:g} in {sorted(bad)}: "
        + ", ".join(f"{k}={v:.3g}" for k, v in sorted(bad.items()))
        + f"\nconfig: {cfg}"
    )
    return errs


# --------------------------------------------------------------------------- golden tests
def _golden_cases():
    cases = []
    for mode in MODES:
        path = GOLDEN_DIR / f"{mode}.npz"
        if path.exists():
            cases.extend(make_golden.load_cases(path))
    return cases


GOLDEN = _golden_cases()


def test_golden_files_cover_every_option():
    """Every mode, in each dtype, meets every value of every option; plus unbatched cases."""
    assert GOLDEN, f"no golden files under {GOLDEN_DIR}; run tests/golden/make_golden.py"
    options = {
        "num_layers": {1, 2, 3}, "bidirectional": {False, True},
        "batch_first": {False, True}, "bias": {False, True}, "has_h0": {False, True},
        "has_dstate": {False, True},
    }
    for mode in MODES:
        for dtype in ("float32", "float64"):
            cfgs = [c for c, _ in GOLDEN if c["mode"] == mode and c["dtype"] == dtype]
            assert cfgs, (mode, dtype)
            for opt, values in options.items():
                seen = {c[opt] for c in cfgs}
                assert seen == values, (mode, dtype, opt, seen)
    unbatched = {(c["mode"], c["dtype"]) for c, _ in GOLDEN if c["batch"] is None}
    assert len(unbatched) >= 2 and {d for _, d in unbatched} == {"float32", "float64"}
    # Inputs are random draws, never zeros alone.
    for cfg, a in GOLDEN:
        assert np.any(a["x"]) and np.any(a["dy"]) and np.any(a["y"]), make_golden.case_id(cfg)


@pytest.mark.parametrize(
    "cfg, arrays", GOLDEN, ids=[make_golden.case_id(c) for c, _ in GOLDEN]
)
def test_golden(cfg, arrays):
    compare(cfg, arrays, make_golden.case_id(cfg))


# --------------------------------------------------------------------------- live tests
def live_config(seed):
    """A random configuration for a live comparison, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    return make_golden.make_config(
        mode=MODES[int(rng.integers(len(MODES)))],
        num_layers=int(rng.integers(1, 4)),
        bidirectional=bool(rng.integers(2)),
        batch_first=bool(rng.integers(2)),
        bias=bool(rng.integers(2)),
        has_h0=bool(rng.integers(2)),
        has_dstate=bool(rng.integers(2)),
        dtype=("float32", "float64")[int(rng.integers(2))],
        seed=int(rng.integers(2**31)),
        unbatched=bool(rng.random() < 0.15),
        sizes=dict(
            seq_len=int(rng.integers(1, 7)),
            batch=int(rng.integers(1, 5)),
            input_size=int(rng.integers(1, 7)),
            hidden_size=int(rng.integers(1, 7)),
        ),
    )


def _live(seed):
    pytest.importorskip("torch")
    cfg = live_config(seed)
    inputs = make_golden.draw_inputs(cfg)
    expected = dict(inputs)
    expected.update(make_golden.torch_reference(cfg, inputs))
    label = f"live draw seed={seed} ({make_golden.case_id(cfg)}); reproduce with _live({seed})"

    def truth():
        sd = {k: v for k, v in expected.items() if k.startswith(("weight_", "bias_"))}
        inputs64 = {k: v.astype(np.float64) for k, v in inputs.items()}
        return make_golden.torch_reference(dict(cfg, dtype="float64"), inputs64, state_dict=sd)

    return compare(cfg, expected, label, truth if cfg["dtype"] == "float32" else None)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(20))
def test_live_fixed_seed(seed):
    _live(seed)


@pytest.mark.torch
@pytest.mark.parametrize("k", range(4))
def test_live_fresh_entropy(k):
    _live(np.random.SeedSequence().entropy)


def _regen_sample():
    """The first golden case of each (mode, dtype, batched or not)."""
    seen, picks = set(), []
    for cfg, arrays in GOLDEN:
        key = (cfg["mode"], cfg["dtype"], cfg["batch"] is None)
        if key not in seen:
            seen.add(key)
            picks.append((cfg, arrays))
    return picks


REGEN = _regen_sample()


@pytest.mark.torch
@pytest.mark.parametrize("cfg, stored", REGEN, ids=[make_golden.case_id(c) for c, _ in REGEN])
def test_golden_regenerates(cfg, stored):
    """The installed torch, on a stored case's weights and inputs, gives the stored results.

    Also checks that make_golden.py still draws the stored inputs from the case's seed.
    (Weights are loaded rather than re-drawn, so a change in torch's initialisation
    stream does not fail this test; regenerating the files would pick it up.)
    """
    pytest.importorskip("torch")
    inputs = make_golden.draw_inputs(cfg)
    for name, a in inputs.items():
        np.testing.assert_array_equal(a, stored[name], err_msg=name)
    sd = {k: v for k, v in stored.items() if k.startswith(("weight_", "bias_"))}
    fresh = make_golden.torch_reference(cfg, inputs, state_dict=sd)
    assert sorted(fresh) == sorted(k for k in stored if k not in inputs)
    tol = RTOL[cfg["dtype"]]
    for name, a in fresh.items():
        assert rel_err(a, stored[name]) < tol, (make_golden.case_id(cfg), name)
