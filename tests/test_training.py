"""numbarnn.training: fit (full and truncated BPTT), evaluate, predict, checkpoints, resuming."""

import io
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numbarnn
from numbarnn import GRU, LSTM, RNN, LastStep, Linear, Sequential
from numbarnn.optim import SGD, Adam, StepLR
from numbarnn.training import (
    History, evaluate, fit, predict, recurrent_layers, stateful_backward, stateful_forward,
)

F64 = np.float64


def regression_task(n=64, steps=8, dtype=np.float32, seed=0):
    """Sequences of noise; the target is the mean of the first feature (a task an LSTM learns)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, n, 2)).astype(dtype)
    y = x[:, :, :1].mean(axis=0).astype(dtype) * 2.0
    return x, y


def seq_model(dtype=np.float32, hidden=8, cell=LSTM, seed=0, **kw):
    return Sequential(cell(2, hidden, dtype=dtype, seed=seed, **kw), LastStep(),
                      Linear(hidden, 1, dtype=dtype, seed=seed + 1))


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --------------------------------------------------------------------------- basics
def test_fit_reduces_loss():
    x, y = regression_task()
    model = seq_model()
    history = fit(model, Adam(model, lr=0.02), x, y, epochs=30, batch_size=16, seed=0,
                  progress=False)
    assert isinstance(history, History) and len(history) == 30
    assert history.epoch == list(range(1, 31))
    assert all(math.isfinite(v) for v in history.loss)
    assert history.loss[-1] < 0.2 * history.loss[0]
    assert history.val_loss == []
    # evaluate/predict agree with each other and leave the mode alone
    model.train()
    pred = predict(model, x, batch_size=10)
    assert pred.shape == (64, 1) and model.training
    assert evaluate(model, x, y, batch_size=64) == pytest.approx(float(np.mean((pred - y) ** 2)),
                                                                 rel=1e-5)


def test_epoch_loss_is_the_weighted_mean_of_batch_losses():
    x, y = regression_task(n=10, dtype=F64)
    model, ref = seq_model(F64), seq_model(F64)
    history = fit(model, SGD(model, lr=0.1), x, y, epochs=1, batch_size=4, shuffle=False,
                  progress=False)
    opt = SGD(ref, lr=0.1)
    total = 0.0
    for idx in (slice(0, 4), slice(4, 8), slice(8, 10)):
        pred = ref(x[:, idx])
        loss, d = numbarnn.mse_loss(pred, y[idx])
        ref.backward(d)
        opt.step()
        opt.zero_grad()
        total += loss * len(range(10)[idx])
    assert history.loss[0] == pytest.approx(total / 10, rel=1e-12)
    for k, v in weights(ref).items():
        np.testing.assert_allclose(model.state_dict()[k], v, rtol=1e-12, atol=1e-14)


def test_shuffling_is_reproducible_by_seed():
    x, y = regression_task(n=40)

    def run(**kw):
        model = seq_model()
        h = fit(model, Adam(model, lr=0.01), x, y, epochs=3, batch_size=8, progress=False, **kw)
        return h.loss, weights(model)

    loss_a, w_a = run(seed=7)
    loss_b, w_b = run(seed=7)
    assert loss_a == loss_b
    assert_same(w_a, w_b)
    loss_c, _ = run(seed=8)
    loss_d, _ = run(shuffle=False)
    assert loss_c != loss_a and loss_d != loss_a


def test_validation_history_and_batch_first():
    x, y = regression_task(n=48, dtype=F64)
    xv, yv = regression_task(n=20, dtype=F64, seed=1)
    xb, xvb = x.transpose(1, 0, 2).copy(), xv.transpose(1, 0, 2).copy()
    model = Sequential(LSTM(2, 6, batch_first=True, dtype=F64, seed=0), LastStep(batch_first=True),
                       Linear(6, 1, dtype=F64, seed=1))
    seen = []
    history = fit(model, Adam(model, lr=0.01), xb, y, epochs=4, batch_size=16, seed=0,
                  validation_data=(xvb, yv), progress=False,
                  callbacks=[lambda epoch, logs: seen.append((epoch, logs["val_loss"]))])
    assert len(history.val_loss) == 4 and seen == list(zip(history.epoch, history.val_loss))
    assert history.val_loss[-1] == pytest.approx(evaluate(model, xvb, yv), rel=1e-12)
    assert history.best_epoch == 1 + int(np.argmin(history.val_loss))
    assert history.lr == [0.01] * 4 and len(history.seconds) == 4


def test_early_stopping_stops():
    x, y = regression_task(n=16)
    model = seq_model()
    # lr = 0: the loss never improves, so training stops after `patience` epochs past the first
    history = fit(model, SGD(model, lr=0.0), x, y, epochs=50, batch_size=8, seed=0,
                  validation_data=(x, y), early_stopping=3, progress=False)
    assert len(history) == 4 and history.stopped_early and history.best_epoch == 1


def test_restore_best_and_callback_stop():
    x, y = regression_task(n=32, dtype=F64)
    xv, yv = regression_task(n=16, dtype=F64, seed=5)
    model = seq_model(F64)
    snapshots = {}
    history = fit(model, Adam(model, lr=0.05), x, y, epochs=12, batch_size=8, seed=1,
                  validation_data=(xv, yv), restore_best=True, progress=False,
                  callbacks=lambda epoch, logs: snapshots.__setitem__(epoch, weights(model)))
    assert_same(weights(model), snapshots[history.best_epoch])
    stopped = fit(model, Adam(model, lr=0.05), x, y, epochs=12, progress=False,
                  callbacks=[lambda epoch, logs: epoch == 2])
    assert len(stopped) == 2 and stopped.stopped_early


def test_scheduler_and_clipping():
    x, y = regression_task(n=16)
    model = seq_model()
    opt = SGD(model, lr=0.1, momentum=0.9)
    history = fit(model, opt, x, y, epochs=5, batch_size=8, scheduler=StepLR(opt, 2, gamma=0.5),
                  clip_norm=0.5, progress=False)
    assert history.lr == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert opt.lr == pytest.approx(0.025)  # epoch 6 would run at 0.1 * 0.5 ** (5 // 2)


@pytest.mark.parametrize("cell", [LSTM, GRU, RNN])
def test_sequence_classification_with_lengths(cell):
    """Per-step logits, class targets, padding left out by lengths; accuracy beats chance."""
    rng = np.random.default_rng(0)
    n, steps = 96, 10
    label = rng.integers(0, 2, n)
    x = rng.standard_normal((steps, n, 2)).astype(np.float32) * 0.3
    x[:, :, 0] += np.where(label == 1, 1.0, -1.0)[None, :]
    lengths = rng.integers(3, steps + 1, n)
    for b in range(n):
        x[lengths[b]:, b] = 0.0
    y = np.repeat(label[None, :], steps, axis=0)  # (T, N) class indices
    y[np.arange(steps)[:, None] >= lengths[None, :]] = 7  # junk where padded: must not count
    model = Sequential(cell(2, 8, seed=0), Linear(8, 2, seed=1))
    history = fit(model, Adam(model, lr=0.02), x, y, loss="cross_entropy", lengths=lengths,
                  epochs=8, batch_size=32, seed=0, progress=False)
    assert history.loss[-1] < history.loss[0]
    logits = predict(model, x)  # (T, N, 2)
    last = logits[lengths - 1, np.arange(n)]
    assert np.mean(last.argmax(-1) == label) > 0.9


# --------------------------------------------------------------------------- truncated BPTT
def _reference_tbptt(lstm, head_w, head_b, x, y, lengths, k, lr, batch_size, epochs):
    """Truncated BPTT by hand: each chunk through the layer's own forward/backward, the linear
    head, MSE (with the padding left out) and plain SGD written out here; the final state of
    a chunk is the initial state of the next, and no gradient is passed back into it."""
    T, N, _ = x.shape
    O = y.shape[2]
    epoch_losses = []
    for _ in range(epochs):
        total = weight = 0.0
        for start in range(0, N, batch_size):
            idx = np.arange(start, min(start + batch_size, N))
            state = None
            for s in range(0, T, k):
                xc, yc = x[s:s + k, idx], y[s:s + k, idx]
                steps = xc.shape[0]
                keep = (np.arange(s, s + steps)[:, None] < lengths[idx][None, :])[:, :, None]
                h, new_state = lstm.forward(xc, state)
                state = new_state  # carried on, as values
                count = keep.sum() * O
                if count == 0:
                    continue
                out = h @ head_w.T + head_b
                diff = np.where(keep, out - yc, 0.0)
                loss = float((diff ** 2).sum() / count)
                dout = 2.0 * diff / count
                g_w = dout.reshape(-1, O).T @ h.reshape(-1, h.shape[-1])
                g_b = dout.reshape(-1, O).sum(axis=0)
                lstm.zero_grad()
                dx, dstate0 = lstm.backward(dout @ head_w)  # no gradient from the next chunk
                for name, p in lstm.params.items():
                    p -= lr * lstm.grads[name]
                head_w -= lr * g_w
                head_b -= lr * g_b
                total += loss * len(idx) * steps
                weight += len(idx) * steps
        epoch_losses.append(total / weight)
    return epoch_losses


@pytest.mark.parametrize("padded", [False, True])
def test_tbptt_matches_hand_computed_reference(padded):
    rng = np.random.default_rng(3)
    T, N, I, H, O, k = 11, 5, 2, 4, 2, 4  # chunks of 4, 4, 3; batches of 2, 2, 1
    x = rng.standard_normal((T, N, I))
    y = rng.standard_normal((T, N, O))
    lengths = np.array([11, 6, 3, 9, 1]) if padded else np.full(N, T)
    model = Sequential(LSTM(I, H, num_layers=2, dtype=F64, seed=0), Linear(H, O, dtype=F64, seed=1))
    history = fit(model, SGD(model, lr=0.3), x, y, epochs=2, batch_size=2, shuffle=False,
                  tbptt=k, lengths=lengths if padded else None, progress=False)

    lstm = LSTM(I, H, num_layers=2, dtype=F64, seed=0)
    head = Linear(H, O, dtype=F64, seed=1)
    head_w, head_b = head.params["weight"].copy(), head.params["bias"].copy()
    ref_losses = _reference_tbptt(lstm, head_w, head_b, x, y, lengths, k, 0.3, 2, 2)

    np.testing.assert_allclose(history.loss, ref_losses, rtol=1e-12)
    got = model.state_dict()
    for name, p in lstm.params.items():
        np.testing.assert_allclose(got[f"0.{name}"], p, rtol=1e-11, atol=1e-13, err_msg=name)
    np.testing.assert_allclose(got["1.weight"], head_w, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(got["1.bias"], head_b, rtol=1e-11, atol=1e-13)

    # The reference is discriminating: full BPTT, or chunks that start from zero, differ.
    full = Sequential(LSTM(I, H, num_layers=2, dtype=F64, seed=0), Linear(H, O, dtype=F64, seed=1))
    fit(full, SGD(full, lr=0.3), x, y, epochs=2, batch_size=2, shuffle=False, progress=False,
        lengths=lengths if padded else None)
    assert not np.allclose(full.state_dict()["0.weight_hh_l0"], got["0.weight_hh_l0"])


def test_tbptt_with_one_chunk_is_full_bptt():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 4, 2)), rng.standard_normal((6, 4, 1))
    a = Sequential(GRU(2, 3, dtype=F64, seed=0), Linear(3, 1, dtype=F64, seed=1))
    b = Sequential(GRU(2, 3, dtype=F64, seed=0), Linear(3, 1, dtype=F64, seed=1))
    ha = fit(a, SGD(a, lr=0.1), x, y, epochs=2, batch_size=4, tbptt=6, progress=False)
    hb = fit(b, SGD(b, lr=0.1), x, y, epochs=2, batch_size=4, progress=False)
    assert ha.loss == pytest.approx(hb.loss, rel=1e-13)
    for k, v in a.state_dict().items():
        np.testing.assert_allclose(v, b.state_dict()[k], rtol=1e-12, atol=1e-14)


def test_fit_on_the_cuda_backend_in_the_simulator():
    """Truncated BPTT and validation through the CUDA kernels (simulated) match the CPU."""
    assert numbarnn.get_backend("cuda").simulated  # pytest switches the simulator on
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((5, 3, 2)), rng.standard_normal((5, 3, 1))
    results = {}
    for backend in ("cpu", "cuda"):
        model = Sequential(GRU(2, 2, dtype=F64, seed=0, backend=backend),
                           Linear(2, 1, dtype=F64, seed=1, backend=backend))
        history = fit(model, SGD(model, lr=0.2), x, y, epochs=2, batch_size=2, seed=0, tbptt=2,
                      validation_data=(x, y), progress=False)
        results[backend] = history, model.state_dict()
    (h_cpu, w_cpu), (h_cuda, w_cuda) = results["cpu"], results["cuda"]
    np.testing.assert_allclose(h_cuda.loss, h_cpu.loss, rtol=1e-10)
    np.testing.assert_allclose(h_cuda.val_loss, h_cpu.val_loss, rtol=1e-10)
    for k in w_cpu:
        np.testing.assert_allclose(w_cuda[k], w_cpu[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_stateful_forward_carries_state():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3, 2))
    model = Sequential(LSTM(2, 4, dtype=F64, seed=0), GRU(4, 3, dtype=F64, seed=1),
                       Linear(3, 2, dtype=F64, seed=2))
    assert [type(r) for r in recurrent_layers(model)] == [LSTM, GRU]
    whole, state = stateful_forward(model, x)
    first, s1 = stateful_forward(model, x[:5])
    second, s2 = stateful_forward(model, x[5:], s1)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(s2[0][0], state[0][0], rtol=1e-13)  # LSTM h
    np.testing.assert_allclose(s2[1], state[1], rtol=1e-13)  # GRU h
    dx = stateful_backward(model, np.ones_like(second))
    assert dx.shape == (3, 3, 2)
    with pytest.raises(ValueError, match="state"):
        stateful_forward(model, x, [None])


# --------------------------------------------------------------------------- NaN / checkpoints
def test_nan_loss_raises_and_keeps_the_checkpoint(tmp_path):
    x, y = regression_task(n=16)
    model = seq_model()
    opt = Adam(model, lr=0.01)
    path = tmp_path / "ck.npz"
    fit(model, opt, x, y, epochs=1, batch_size=8, checkpoint=path, progress=False)
    good = path.read_bytes()
    before = weights(model)

    bad_y = y.copy()
    bad_y[11] = np.nan  # the second batch of the unshuffled data
    with pytest.raises(FloatingPointError, match=r"loss: mse became nan at epoch 1/3, batch 2/2"):
        fit(model, opt, x, bad_y, epochs=3, batch_size=8, shuffle=False, checkpoint=path,
            progress=False)
    assert path.read_bytes() == good  # untouched: the failing epoch never wrote
    after = weights(model)
    assert all(np.isfinite(v).all() for v in after.values())
    assert not all(np.array_equal(before[k], after[k]) for k in before)  # batch 1 was applied
    loaded, opt_state, meta = numbarnn.load_checkpoint(path)
    assert meta["epoch"] == 1 and opt_state["step"] == 2
    assert_same(weights(loaded), before)


def test_nan_in_a_later_epoch_keeps_the_last_finite_checkpoint(tmp_path):
    x, y = regression_task(n=16)
    model = seq_model()
    path = tmp_path / "ck.safetensors"

    def poison(epoch, logs):
        if epoch == 2:
            y[0] = np.inf  # fit reads y afresh each epoch

    with pytest.raises(FloatingPointError, match="epoch 3/5"):
        fit(model, Adam(model, lr=0.01), x, y, epochs=5, batch_size=16, checkpoint=path,
            callbacks=[poison], progress=False)
    _, _, meta = numbarnn.load_checkpoint(path)
    assert meta["epoch"] == 2 and len(meta["history"]["loss"]) == 2


def test_nonfinite_gradient_raises():
    x, y = regression_task(n=8)
    model = seq_model()

    def bad_loss(pred, target):
        return 1.0, np.full_like(pred, np.nan)

    with pytest.raises(FloatingPointError, match="gradients: .* bad_loss .* epoch 1/1, batch 1/1"):
        fit(model, SGD(model, lr=0.1), x, y, loss=bad_loss, batch_size=8, progress=False)
    assert all(np.isfinite(p).all() for p in model.params.values())


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_diverging_training_raises():
    x, y = regression_task(n=16)
    model = seq_model(cell=RNN, nonlinearity="relu")
    with pytest.raises(FloatingPointError, match="loss: mse became"):
        fit(model, SGD(model, lr=1e6), x, y * 1e3, epochs=50, batch_size=4, progress=False)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "change, error, pattern",
    [
        (dict(y="short"), ValueError, r"^y: expected 16 targets"),
        (dict(x="f64"), TypeError, r"^x: expected dtype float32"),
        (dict(x="2d"), ValueError, r"^x: expected 3 dimensions"),
        (dict(x="list"), TypeError, r"^x: expected an array"),
        (dict(y="bool"), TypeError, r"^y: expected floats"),
        (dict(y="flat"), ValueError, r"^y: the model's output has shape \(8, 1\), so the mse loss "
                                     r"needs values of shape \(8, 1\) per batch; got \(8,\)"),
        (dict(y="classes"), ValueError, r"^y: .* cross_entropy loss needs class indices"),
        (dict(validation_data="wide"), ValueError, r"^validation_data\[1\] \(y\): the model's"),
        (dict(batch_size=0), ValueError, r"^batch_size: expected an int >= 1, got 0"),
        (dict(batch_size=2.5), TypeError, r"^batch_size: expected an int"),
        (dict(epochs=-1), ValueError, r"^epochs"),
        (dict(foo=1), TypeError, r"unexpected keyword argument 'foo'"),
        (dict(loss="hinge"), ValueError, r"^loss: expected one of"),
        (dict(tbptt=3), ValueError, r"^tbptt: truncated BPTT needs per-step targets"),
        (dict(tbptt=0), ValueError, r"^tbptt"),
        (dict(lengths=np.ones(16, int)), ValueError, r"^lengths: lengths need per-step targets"),
        (dict(mask=np.ones(3, bool)), ValueError, r"^mask: expected shape \(16,\)"),
        (dict(validation_data="xy"), TypeError, r"^validation_data: expected a tuple"),
        (dict(validation_data="f64"), TypeError, r"^validation_data\[0\] \(x\): expected dtype"),
        (dict(validation_data="extra"), ValueError, r"^validation_data\[2\]"),
        (dict(checkpoint="model.pt"), ValueError, r"^checkpoint: expected a path ending"),
        (dict(clip_norm=-1.0), ValueError, r"^clip_norm"),
        (dict(early_stopping=0), ValueError, r"^early_stopping"),
        (dict(progress="loud"), ValueError, r"^progress"),
        (dict(callbacks=[1]), TypeError, r"^callbacks\[0\]"),
        (dict(seed=-1), ValueError, r"^seed"),
        (dict(shuffle="yes"), TypeError, r"^shuffle"),
        (dict(scheduler=object()), TypeError, r"^scheduler"),
        (dict(history={}), TypeError, r"^history"),
        (dict(optimizer="other"), ValueError, r"^optimizer: not bound to this model"),
        (dict(optimizer="none"), TypeError, r"^optimizer: expected a numbarnn optimizer"),
        (dict(model="none"), TypeError, r"^model: expected a module"),
    ],
)
def test_bad_input_names_the_argument(change, error, pattern):
    x, y = regression_task(n=16)
    xv, yv = regression_task(n=4)
    model = seq_model()
    kwargs = dict(model=model, optimizer=SGD(model, lr=0.1), x=x, y=y, progress=False,
                  batch_size=8)
    if change.get("y") == "classes":
        kwargs["loss"] = "cross_entropy"
    specials = {
        ("y", "short"): y[:10], ("x", "f64"): x.astype(F64), ("x", "2d"): x[0], ("x", "list"): [1],
        ("y", "bool"): y > 0, ("validation_data", "xy"): "xy", ("y", "flat"): y[:, 0],
        ("y", "classes"): np.zeros((16, 1, 1), int),
        ("validation_data", "wide"): (xv, np.zeros((4, 3), np.float32)),
        ("validation_data", "f64"): (xv.astype(F64), yv),
        ("validation_data", "extra"): (xv, yv, {"weights": 1}),
        ("optimizer", "other"): SGD(seq_model(), lr=0.1), ("optimizer", "none"): None,
        ("model", "none"): object(),
    }
    for key, value in change.items():
        kwargs[key] = specials.get((key, value), value) if isinstance(value, str) else value
    with pytest.raises(error, match=pattern):
        fit(kwargs.pop("model"), kwargs.pop("optimizer"), kwargs.pop("x"), kwargs.pop("y"),
            **kwargs)


def test_tbptt_bad_models():
    x = np.zeros((6, 2, 2), np.float32)
    y = np.zeros((6, 2, 1), np.float32)
    bi = Sequential(LSTM(2, 3, bidirectional=True, seed=0), Linear(6, 1, seed=1))
    with pytest.raises(ValueError, match="^tbptt: a bidirectional layer"):
        fit(bi, SGD(bi), x, y, tbptt=2, progress=False)
    last = seq_model(hidden=3)
    with pytest.raises(ValueError, match="^tbptt: the model's output must have one entry per step"):
        fit(last, SGD(last), x, y, tbptt=2, progress=False)


def test_per_step_targets_must_match_x():
    x = np.zeros((6, 4, 2), np.float32)
    model = Sequential(LSTM(2, 3, seed=0), Linear(3, 1, seed=1))
    with pytest.raises(ValueError, match=r"^y: per-step targets must have the leading shape"):
        fit(model, SGD(model), x, np.zeros((5, 4, 1), np.float32), progress=False)
    with pytest.raises(ValueError, match=r"^lengths: expected values in \[0, 6\]"):
        fit(model, SGD(model), x, np.zeros((6, 4, 1), np.float32), lengths=[1, 2, 3, 7],
            progress=False)


def test_predict_and_evaluate_bad_input():
    model = seq_model()
    with pytest.raises(TypeError, match="^x: expected dtype float32"):
        predict(model, np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="^batch_size"):
        predict(model, np.zeros((3, 2, 2), np.float32), batch_size=0)
    with pytest.raises(ValueError, match="^y: expected 2 targets"):
        evaluate(model, np.zeros((3, 2, 2), np.float32), np.zeros((3, 1), np.float32))


# --------------------------------------------------------------------------- progress
def test_progress_prints_about_ten_lines():
    x, y = regression_task(n=8)
    model = seq_model()
    out = io.StringIO()
    fit(model, SGD(model, lr=0.01), x, y, epochs=40, batch_size=8, validation_data=(x, y),
        progress="print", stream=out)
    lines = out.getvalue().splitlines()
    assert 5 <= len(lines) <= 12
    assert lines[0].startswith("epoch  1/40  loss ") and "val_loss" in lines[0]
    assert lines[-1].startswith("epoch 40/40")
    quiet = io.StringIO()
    fit(model, SGD(model, lr=0.01), x, y, epochs=3, progress=False, stream=quiet)
    assert quiet.getvalue() == ""


def test_tqdm_is_optional(monkeypatch, capsys):
    x, y = regression_task(n=8)
    model = seq_model()
    try:
        import tqdm  # noqa: F401
    except ImportError:
        have_tqdm = False
    else:
        have_tqdm = True
    if have_tqdm:  # long work: a bar on stderr, no printed lines
        out = io.StringIO()
        fit(model, SGD(model, lr=0.01), x, y, epochs=250, batch_size=8, stream=out)
        assert out.getvalue() == "" and "250/250" in capsys.readouterr().err
    # without tqdm: plain lines for the same long work, and asking for a bar is an error
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    out = io.StringIO()
    fit(model, SGD(model, lr=0.01), x, y, epochs=250, batch_size=8, stream=out)
    assert out.getvalue().splitlines()[-1].startswith("epoch 250/250")
    with pytest.raises(ImportError, match="tqdm"):
        fit(model, SGD(model, lr=0.01), x, y, progress="tqdm")


def test_history_round_trip():
    h = History()
    h.epoch, h.loss, h.val_loss = [1, 2], [0.5, 0.25], [0.6, 0.7]
    h.lr, h.seconds = [1e-3] * 2, [1, 1]
    h.best_epoch = 1
    back = History.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back.to_dict() == h.to_dict() and "2 epochs" in repr(back)


# --------------------------------------------------------------------------- resuming
RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import numbarnn
    from numbarnn import LSTM, LastStep, Linear, Sequential
    from numbarnn.optim import Adam, StepLR
    from numbarnn.training import History, fit

    mode, folder = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 40, 3)).astype(np.float32)
    y = (x[:, :, :1].sum(axis=0) * 0.5).astype(np.float32)
    val = (x[:, :8] * 0.9, y[:8])
    kw = dict(batch_size=8, seed=11, validation_data=val, clip_norm=1.0, progress=False)
    if mode == "resume":
        model, opt_state, meta = numbarnn.load_checkpoint(folder + "/ck.npz")
        opt = Adam(model, lr=0.02)  # hyper-parameters come back with the state
        opt.load_state_dict(opt_state)
        sched = StepLR(opt, step_size=2, gamma=0.5)
        sched.load_state_dict(meta["scheduler"])
        history = fit(model, opt, x, y, epochs=6, scheduler=sched, initial_epoch=meta["epoch"],
                      history=History.from_dict(meta["history"]), **kw)
    else:
        model = Sequential(LSTM(3, 6, num_layers=2, dropout=0.3, seed=0), LastStep(),
                           Linear(6, 1, seed=1))
        opt = Adam(model, lr=0.02)
        sched = StepLR(opt, step_size=2, gamma=0.5)
        epochs = 6 if mode == "full" else 3
        history = fit(model, opt, x, y, epochs=epochs, scheduler=sched,
                      checkpoint=folder + "/ck.npz" if mode == "first" else None, **kw)
    np.savez(folder + f"/{mode}.npz", **model.state_dict(),
             **{"opt." + k: np.asarray(v) for k, v in opt.state_dict().items()})
    with open(folder + f"/{mode}.json", "w") as f:
        json.dump(history.to_dict(), f)
    """
)


def test_save_load_in_a_new_process_continues_identically(tmp_path):
    """Train 6 epochs; or 3, checkpoint, then 3 more in another process: the same bits."""
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    for mode in ("full", "first", "resume"):
        proc = subprocess.run([sys.executable, str(script), mode, str(tmp_path)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    full, resumed = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resume.npz")
    assert sorted(full.files) == sorted(resumed.files)
    for k in full.files:
        np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)
    h_full = json.loads((tmp_path / "full.json").read_text())
    h_resumed = json.loads((tmp_path / "resume.json").read_text())
    h_first = json.loads((tmp_path / "first.json").read_text())
    assert h_resumed["epoch"] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "val_loss", "lr", "best_epoch"):
        assert h_resumed[key] == h_full[key], key
    assert h_first["loss"] == h_full["loss"][:3]
    assert int(full["opt.step"]) == int(resumed["opt.step"]) == 30  # 6 epochs of 5 batches
