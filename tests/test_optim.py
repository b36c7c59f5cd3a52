"""Optimizers, gradient clipping and schedules of :mod:`numbarnn.optim` against ``torch.optim``.

* golden trajectories (no torch needed): ``tests/golden/optim_golden.npz``, written by
  ``tests/golden/make_optim_golden.py``: every optimizer and option combination over 5
  steps with gradients of changing scale, ``clip_grad_norm_`` for several norms, and the
  learning rates of both schedulers;
* live comparisons (marker ``torch``): the same cases on fresh draws, and the defaults of
  every constructor against torch's signatures;
* state dicts (flat, savable with ``numpy.savez``; continuing after a load equals never
  stopping), in-place updates on a real layer, and a clear error for every bad input.
"""

import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest

import numbarnn
from numbarnn import optim

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location(
    "make_optim_golden", GOLDEN_DIR / "make_optim_golden.py"
)
mog = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mog)  # numpy only at import; torch only inside its functions

RTOL = {"float32": 1e-6, "float64": 1e-14}
GOLDEN = mog.load_golden()


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def make_optimizer(name, kwargs, p0):
    """An optimizer over copies of ``p0`` with zero gradients: (optimizer, params, grads)."""
    params = {n: a.copy() for n, a in p0.items()}
    grads = {n: np.zeros_like(a) for n, a in params.items()}
    return getattr(optim, name)(params=params, grads=grads, **kwargs), params, grads


def run_trajectory(name, kwargs, p0, grads_per_step):
    """numbarnn's parameters after each step, as ``make_optim_golden.torch_optim_trajectory``."""
    opt, params, grads = make_optimizer(name, kwargs, p0)
    traj = []
    for g in grads_per_step:
        for n in grads:
            grads[n][...] = g[n]
        opt.step()
        traj.append({n: p.copy() for n, p in params.items()})
    return traj


def assert_same_trajectory(traj, ref, dtype):
    assert len(traj) == len(ref)
    for k, (got, want) in enumerate(zip(traj, ref)):
        for n in want:
            assert got[n].dtype == want[n].dtype
            assert rel_err(got[n], want[n]) < RTOL[dtype], (k, n)


def case_id(name, kwargs, dtype=None):
    opts = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}({opts})" + (f"-{dtype}" if dtype else "")


# --------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("case", GOLDEN["optim"],
                         ids=[case_id(c["name"], c["kwargs"], c["dtype"]) for c in GOLDEN["optim"]])
def test_golden_optimizer_trajectory(case):
    traj = run_trajectory(case["name"], case["kwargs"], case["p0"], case["grads"])
    assert_same_trajectory(traj, case["traj"], case["dtype"])


LIVE_CASES = [(n, kw, d) for n, kw in mog.OPTIM_CASES for d in mog.DTYPES]


@pytest.mark.torch
@pytest.mark.parametrize("name, kwargs, dtype", LIVE_CASES,
                         ids=[case_id(*c) for c in LIVE_CASES])
def test_live_optimizer_trajectory(name, kwargs, dtype):
    pytest.importorskip("torch")
    seed = 1000 + LIVE_CASES.index((name, kwargs, dtype))
    p0, grads = mog.draw_params(seed, dtype), mog.draw_grads(seed, dtype, steps=8)
    ref = mog.torch_optim_trajectory(name, kwargs, p0, grads)
    assert_same_trajectory(run_trajectory(name, kwargs, p0, grads), ref, dtype)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "StepLR",
                                  "CosineAnnealingLR", "clip_grad_norm"])
def test_defaults_match_torch(name):
    torch = pytest.importorskip("torch")
    if name == "clip_grad_norm":
        theirs = inspect.signature(torch.nn.utils.clip_grad_norm_).parameters
    elif name in ("StepLR", "CosineAnnealingLR"):
        theirs = inspect.signature(getattr(torch.optim.lr_scheduler, name)).parameters
    else:
        theirs = inspect.signature(getattr(torch.optim, name)).parameters
    ours = inspect.signature(getattr(optim, name)).parameters
    defaulted = [
        k for k, p in ours.items()
        if p.default is not inspect.Parameter.empty and k not in ("model", "params", "grads")
    ]
    assert defaulted
    for k in defaulted:
        assert ours[k].default == theirs[k].default, k


def test_updates_a_layer_in_place():
    """The layer's own arrays change (the kernels see it); gradients are only read."""
    model = numbarnn.LSTM(3, 4, num_layers=2, dtype=np.float64, seed=0)
    arrays = {n: p for n, p in model.params.items()}
    before = {n: p.copy() for n, p in arrays.items()}
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    y, _ = model(x)
    model.backward(np.ones_like(y))
    grads = {n: g.copy() for n, g in model.grads.items()}
    opt = optim.Adam(model, lr=0.1)
    opt.step()
    for n, p in model.params.items():
        assert p is arrays[n]
        assert not np.array_equal(p, before[n]), n
        np.testing.assert_array_equal(model.grads[n], grads[n])
    y_after, _ = model(x)
    assert not np.allclose(y_after, y)
    grad_arrays = dict(model.grads)
    opt.zero_grad()
    for n, g in model.grads.items():
        assert g is grad_arrays[n] and not g.any()


def test_sgd_first_step_copies_the_gradient_into_the_buffer():
    """torch's first momentum step: buf = g (no dampening), later buf = m * buf + (1 - d) g."""
    p0 = {"w": np.array([1.0, -2.0])}
    opt, params, grads = make_optimizer("SGD", {"lr": 0.5, "momentum": 0.9, "dampening": 0.5}, p0)
    grads["w"][...] = [1.0, 2.0]
    opt.step()
    np.testing.assert_array_equal(opt.state["momentum_buffer"]["w"], [1.0, 2.0])
    np.testing.assert_array_equal(params["w"], [0.5, -3.0])
    opt.step()
    np.testing.assert_allclose(opt.state["momentum_buffer"]["w"], [1.4, 2.8], rtol=1e-15)


# --------------------------------------------------------------------------- state dicts
STATE_CASES = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, ["momentum_buffer"]),
    ("SGD", {"lr": 0.1}, []),
    ("Adam", {"lr": 0.01, "amsgrad": True}, ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    ("AdamW", {"lr": 0.01}, ["exp_avg", "exp_avg_sq"]),
    ("RMSprop", {"momentum": 0.5, "centered": True},
     ["square_avg", "momentum_buffer", "grad_avg"]),
]


@pytest.mark.parametrize("name, kwargs, buffers", STATE_CASES,
                         ids=[case_id(n, kw) for n, kw, _ in STATE_CASES])
def test_state_dict_layout(name, kwargs, buffers):
    p0 = {"w": np.ones((2, 3)), "layer.0.b": np.ones(3)}
    opt, _, grads = make_optimizer(name, kwargs, p0)
    grads["w"][...] = 0.5
    opt.step()
    state = opt.state_dict()
    hyper = set(type(opt)._hyper_kinds)
    assert set(state) == {"step"} | hyper | {f"{b}.{n}" for b in buffers for n in p0}
    assert state["step"] == 1 and type(state["step"]) is int
    assert state["lr"] == kwargs.get("lr", state["lr"]) and type(state["lr"]) is float
    for k in hyper:
        assert type(state[k]) in (float, bool)
    for b in buffers:
        a = state[f"{b}.w"]
        assert isinstance(a, np.ndarray) and a.shape == (2, 3)
        a[...] = 123.0  # a copy: the optimizer's buffer is untouched
        assert not np.any(opt.state[b]["w"] == 123.0)


@pytest.mark.parametrize("name, kwargs", [(n, kw) for n, kw in mog.OPTIM_CASES],
                         ids=[case_id(n, kw) for n, kw in mog.OPTIM_CASES])
def test_continue_after_load_equals_uninterrupted(tmp_path, name, kwargs):
    """Save after 2 steps to .npz, load into a fresh optimizer built with other settings,
    continue 3 steps: bit for bit the 5-step trajectory. A scheduler goes along."""
    p0, grads = mog.draw_params(7, "float64"), mog.draw_grads(7, "float64")

    def train(opt, params, sched, grad_list):
        for g in grad_list:
            for n in params:
                opt.grads[n][...] = g[n]
            opt.step()
            sched.step()

    opt, params, _ = make_optimizer(name, kwargs, p0)
    train(opt, params, optim.StepLR(opt, step_size=2, gamma=0.5), grads)

    opt1, params1, _ = make_optimizer(name, kwargs, p0)
    sched1 = optim.StepLR(opt1, step_size=2, gamma=0.5)
    train(opt1, params1, sched1, grads[:2])
    path = tmp_path / "state.npz"
    np.savez(path, **{f"opt/{k}": v for k, v in opt1.state_dict().items()},
             **{f"sched/{k}": v for k, v in sched1.state_dict().items()})
    with np.load(path, allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}

    opt2, params2, _ = make_optimizer(name, {"lr": 0.5}, {n: p.copy() for n, p in params1.items()})
    sched2 = optim.StepLR(opt2, step_size=7)
    opt2.load_state_dict({k[4:]: v for k, v in loaded.items() if k.startswith("opt/")})
    sched2.load_state_dict({k[6:]: v for k, v in loaded.items() if k.startswith("sched/")})
    assert opt2.state_dict().keys() == opt1.state_dict().keys()
    train(opt2, params2, sched2, grads[2:])
    for n in params:
        np.testing.assert_array_equal(params2[n], params[n])
    assert opt2.lr == opt.lr and opt2.step_count == 5


def test_load_state_dict_errors_change_nothing():
    p0 = {"w": np.ones((2, 3))}
    adam, _, _ = make_optimizer("Adam", {"lr": 0.01}, p0)
    sgd, _, _ = make_optimizer("SGD", {"lr": 0.1, "momentum": 0.9}, p0)
    good = adam.state_dict()
    before = adam.state_dict()
    bad = [
        (KeyError, "missing", {k: v for k, v in good.items() if k != "exp_avg.w"}),
        (KeyError, "unexpected", {**good, "exp_avg.v": np.ones(3)}),
        (KeyError, "missing", sgd.state_dict()),
        (KeyError, "missing", {**good, "amsgrad": True}),  # AMSGrad needs max_exp_avg_sq
        (ValueError, "exp_avg.w", {**good, "exp_avg.w": np.ones((3, 2))}),
        (TypeError, "exp_avg.w", {**good, "exp_avg.w": np.ones((2, 3), np.int64)}),
        (ValueError, "lr", {**good, "lr": -1.0}),
        (ValueError, "beta2", {**good, "beta2": 1.0}),
        (TypeError, "amsgrad", {**good, "amsgrad": "no"}),
        (ValueError, "step", {**good, "step": -1}),
        (TypeError, "step", {**good, "step": 1.5}),
        (TypeError, "state_dict", [("step", 0)]),
    ]
    for exc, match, state in bad:
        with pytest.raises(exc, match=match):
            adam.load_state_dict(state)
    after = adam.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


def test_load_state_dict_takes_zero_d_arrays_and_restores_hyper_parameters():
    p0 = {"w": np.ones(3)}
    opt, _, _ = make_optimizer("RMSprop", {"lr": 0.5, "centered": True, "momentum": 0.2}, p0)
    state = {k: np.asarray(v) for k, v in opt.state_dict().items()}
    other, _, _ = make_optimizer("RMSprop", {}, p0)
    other.load_state_dict(state)
    assert (other.lr, other.centered, other.momentum) == (0.5, True, 0.2)
    assert set(other.state) == {"square_avg", "momentum_buffer", "grad_avg"}


# --------------------------------------------------------------------------- clipping
CLIP_IDS = [f"{c['max_norm']}-{c['norm_type']}-{c['dtype']}" for c in GOLDEN["clip"]]


@pytest.mark.parametrize("case", GOLDEN["clip"], ids=CLIP_IDS)
def test_golden_clip_grad_norm(case):
    grads = {n: g.copy() for n, g in case["grads"].items()}
    total = optim.clip_grad_norm(grads, case["max_norm"], case["norm_type"])
    assert isinstance(total, float)
    assert total == pytest.approx(case["total"], rel=RTOL[case["dtype"]] * 10)
    for n in grads:
        assert grads[n].dtype == case["clipped"][n].dtype
        assert rel_err(grads[n], case["clipped"][n]) < RTOL[case["dtype"]]


@pytest.mark.torch
@pytest.mark.parametrize("max_norm, norm_type", mog.CLIP_CASES)
@pytest.mark.parametrize("dtype", mog.DTYPES)
def test_live_clip_grad_norm(max_norm, norm_type, dtype):
    pytest.importorskip("torch")
    grads = mog.draw_clip_grads(2000 + mog.CLIP_CASES.index((max_norm, norm_type)), dtype)
    total_ref, clipped_ref = mog.torch_clip(grads, max_norm, norm_type)
    total = optim.clip_grad_norm(grads, max_norm, norm_type)
    assert total == pytest.approx(total_ref, rel=RTOL[dtype] * 10)
    for n in grads:
        assert rel_err(grads[n], clipped_ref[n]) < RTOL[dtype]


def test_clip_grad_norm_on_a_model():
    model = numbarnn.GRU(2, 3, dtype=np.float64, seed=1)
    rng = np.random.default_rng(1)
    for g in model.grads.values():
        g[...] = rng.standard_normal(g.shape)
    arrays = dict(model.grads)
    total = optim.clip_grad_norm(model, 1.0)
    flat = np.concatenate([g.ravel() for g in model.grads.values()])
    assert total > 1.0
    assert np.linalg.norm(flat) == pytest.approx(1.0 / (1.0 + 1e-6 / total), rel=1e-12)
    assert all(model.grads[n] is arrays[n] for n in arrays)
    snapshot = flat.copy()
    assert optim.clip_grad_norm(model, 10.0) == pytest.approx(1.0, rel=1e-6)
    flat = np.concatenate([g.ravel() for g in model.grads.values()])
    np.testing.assert_array_equal(flat, snapshot)


def test_clip_grad_norm_non_finite():
    grads = {"a": np.array([1.0, np.nan]), "b": np.ones(2)}
    with pytest.raises(RuntimeError, match="total norm"):
        optim.clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(grads["b"], 1.0)  # untouched by the failed call
    assert np.isnan(optim.clip_grad_norm(grads, 1.0))
    assert np.all(np.isnan(grads["b"]))  # as torch: scaled by a nan coefficient


# --------------------------------------------------------------------------- schedules
def run_schedule(name, kwargs, lr, epochs):
    opt, _, _ = make_optimizer("SGD", {"lr": lr}, {"w": np.zeros(1)})
    sched = getattr(optim, name)(opt, **kwargs)
    lrs = []
    for _ in range(epochs):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
        assert opt.lr == lrs[-1]
    return lrs


@pytest.mark.parametrize("case", GOLDEN["sched"],
                         ids=[case_id(c["name"], c["kwargs"]) for c in GOLDEN["sched"]])
def test_golden_schedule(case):
    lrs = run_schedule(case["name"], case["kwargs"], case["lr"], case["epochs"])
    np.testing.assert_allclose(lrs, case["lrs"], rtol=1e-15, atol=1e-18)


@pytest.mark.torch
@pytest.mark.parametrize("name, kwargs, lr, epochs", [
    ("StepLR", {"step_size": 2, "gamma": 0.3}, 0.7, 9),
    ("CosineAnnealingLR", {"T_max": 3, "eta_min": 0.02}, 0.3, 20),
    ("CosineAnnealingLR", {"T_max": 7}, 1.0, 30),
])
def test_live_schedule(name, kwargs, lr, epochs):
    pytest.importorskip("torch")
    assert run_schedule(name, kwargs, lr, epochs) == mog.torch_schedule(name, kwargs, lr, epochs)


def test_schedules_follow_their_closed_forms():
    lrs = run_schedule("StepLR", {"step_size": 3, "gamma": 0.5}, 0.8, 10)
    np.testing.assert_allclose(lrs, [0.8 * 0.5 ** (e // 3) for e in range(1, 11)], rtol=1e-15)
    t_max, eta_min, base = 5, 0.01, 0.2
    lrs = run_schedule("CosineAnnealingLR", {"T_max": t_max, "eta_min": eta_min}, base, 3 * t_max)
    closed = [eta_min + (base - eta_min) * (1 + np.cos(np.pi * e / t_max)) / 2
              for e in range(1, 3 * t_max + 1)]
    np.testing.assert_allclose(lrs, closed, rtol=1e-12)


def test_scheduler_state_dict_round_trip():
    opt, _, _ = make_optimizer("SGD", {"lr": 0.1}, {"w": np.zeros(1)})
    sched = optim.CosineAnnealingLR(opt, T_max=6, eta_min=0.001)
    for _ in range(3):
        sched.step()
    state = sched.state_dict()
    assert state == {"last_epoch": 3, "base_lr": 0.1, "last_lr": opt.lr, "T_max": 6,
                     "eta_min": 0.001}
    opt2, _, _ = make_optimizer("SGD", {"lr": opt.lr}, {"w": np.zeros(1)})
    sched2 = optim.CosineAnnealingLR(opt2, T_max=1)
    sched2.load_state_dict({k: np.asarray(v) for k, v in state.items()})
    for _ in range(5):
        sched.step()
        sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()
    with pytest.raises(KeyError, match="T_max"):
        sched2.load_state_dict({k: v for k, v in state.items() if k != "T_max"})
    with pytest.raises(ValueError, match="last_epoch"):
        sched2.load_state_dict({**state, "last_epoch": -2})


# --------------------------------------------------------------------------- bad input
def _model():
    return numbarnn.RNN(2, 3, seed=0)


def _dicts(**changes):
    params = {"w": np.ones((2, 2)), "b": np.ones(2)}
    grads = {"w": np.zeros((2, 2)), "b": np.zeros(2)}
    grads.update(changes)
    return {"params": params, "grads": {k: v for k, v in grads.items() if v is not None}}


def _sgd():
    return optim.SGD(_model(), lr=0.1)


BAD_CALLS = [
    ("lr", ValueError, lambda: optim.SGD(_model(), lr=-0.1)),
    ("lr", ValueError, lambda: optim.Adam(_model(), lr=-1e-3)),
    ("lr", ValueError, lambda: optim.AdamW(_model(), lr=-1e-3)),
    ("lr", ValueError, lambda: optim.RMSprop(_model(), lr=-1e-2)),
    ("lr", TypeError, lambda: optim.SGD(_model(), lr="0.1")),
    ("lr", TypeError, lambda: optim.SGD(_model(), lr=True)),
    ("lr", ValueError, lambda: optim.SGD(_model(), lr=float("nan"))),
    ("momentum", ValueError, lambda: optim.SGD(_model(), momentum=-0.9)),
    ("weight_decay", ValueError, lambda: optim.SGD(_model(), weight_decay=-1)),
    ("nesterov", ValueError, lambda: optim.SGD(_model(), nesterov=True)),
    ("nesterov", ValueError,
     lambda: optim.SGD(_model(), momentum=0.9, dampening=0.1, nesterov=True)),
    ("nesterov", TypeError, lambda: optim.SGD(_model(), momentum=0.9, nesterov="yes")),
    ("betas", ValueError, lambda: optim.Adam(_model(), betas=(1.0, 0.999))),
    ("betas", ValueError, lambda: optim.Adam(_model(), betas=(0.9, -0.1))),
    ("betas", TypeError, lambda: optim.Adam(_model(), betas=0.9)),
    ("eps", ValueError, lambda: optim.Adam(_model(), eps=-1e-8)),
    ("weight_decay", ValueError, lambda: optim.AdamW(_model(), weight_decay=-0.01)),
    ("amsgrad", TypeError, lambda: optim.Adam(_model(), amsgrad=1)),
    ("alpha", ValueError, lambda: optim.RMSprop(_model(), alpha=-0.5)),
    ("momentum", ValueError, lambda: optim.RMSprop(_model(), momentum=-0.5)),
    ("eps", ValueError, lambda: optim.RMSprop(_model(), eps=-1.0)),
    ("model", TypeError, lambda: optim.SGD()),
    ("model", TypeError, lambda: optim.SGD(np.ones(3))),
    ("model", TypeError, lambda: optim.SGD(_model(), **_dicts())),
    ("params", TypeError, lambda: optim.SGD(params=[np.ones(2)], grads={})),
    ("params", ValueError, lambda: optim.SGD(params={}, grads={})),
    ("params", TypeError,
     lambda: optim.SGD(params={"w": np.ones(2, int)}, grads={"w": np.ones(2, int)})),
    ("grads", ValueError, lambda: optim.SGD(**_dicts(b=None))),
    ("grads", ValueError, lambda: optim.SGD(**_dicts(c=np.zeros(1)))),
    ("grads", ValueError, lambda: optim.SGD(**_dicts(b=np.zeros(3)))),
    ("grads", TypeError, lambda: optim.SGD(**_dicts(b=np.zeros(2, np.float32)))),
    ("grads", TypeError, lambda: optim.SGD(**_dicts(b=[0.0, 0.0]))),
    ("lr", ValueError, lambda: setattr(_sgd(), "lr", -1.0)),
    ("max_norm", ValueError, lambda: optim.clip_grad_norm(_model(), -1.0)),
    ("max_norm", TypeError, lambda: optim.clip_grad_norm(_model(), None)),
    ("norm_type", ValueError, lambda: optim.clip_grad_norm(_model(), 1.0, norm_type=0)),
    ("norm_type", TypeError, lambda: optim.clip_grad_norm(_model(), 1.0, norm_type="two")),
    ("error_if_nonfinite", TypeError,
     lambda: optim.clip_grad_norm(_model(), 1.0, error_if_nonfinite="no")),
    ("model", TypeError, lambda: optim.clip_grad_norm([np.ones(2)], 1.0)),
    ("optimizer", TypeError, lambda: optim.StepLR(_model(), 2)),
    ("step_size", ValueError, lambda: optim.StepLR(_sgd(), 0)),
    ("step_size", TypeError, lambda: optim.StepLR(_sgd(), 1.5)),
    ("gamma", ValueError, lambda: optim.StepLR(_sgd(), 2, gamma=-0.1)),
    ("T_max", ValueError, lambda: optim.CosineAnnealingLR(_sgd(), 0)),
    ("T_max", TypeError, lambda: optim.CosineAnnealingLR(_sgd(), "10")),
    ("eta_min", ValueError, lambda: optim.CosineAnnealingLR(_sgd(), 10, eta_min=-1.0)),
]


@pytest.mark.parametrize("name, exc, call", BAD_CALLS,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_CALLS)])
def test_bad_input_names_the_argument(name, exc, call):
    with pytest.raises(exc, match=name):
        call()
