"""Losses: :func:`numbarnn.losses.mse_loss` and :func:`numbarnn.losses.cross_entropy`.

* golden values: literals that ``torch.nn.functional`` computed once (float64), for plain,
  masked, ignored and extreme inputs;
* live comparisons with torch (marker ``torch``): random shapes, masks, lengths,
  ``ignore_index``, layouts and reductions; torch's loss is that of the selected elements
  (``pred[keep]``), its gradient comes from autograd;
* central differences in float64 for every element of the prediction;
* semantics (lengths as a mask, layouts, sums, empty selections, untouched inputs) and a
  clear error for every kind of bad input.
"""

import numpy as np
import pytest

from numbarnn.losses import cross_entropy, mse_loss

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


# --------------------------------------------------------------------------- golden
PRED = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
TARGET = np.array([[0.0, 1.0, 1.5], [-0.5, 0.5, 0.0]])
MASK = np.array([[True, False, True], [True, True, False]])
LOGITS = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, -2.0, 3.0, 1.0], [0.3, 0.2, 0.1, 0.0]])


def test_mse_golden():
    loss, grad = mse_loss(PRED, TARGET)
    assert loss == pytest.approx(1.5208333333333333, rel=1e-15)
    np.testing.assert_allclose(grad, [[1 / 6, -2 / 3, 1 / 6], [2 / 3, -1 / 12, -0.25]],
                               rtol=1e-15)


def test_mse_golden_masked():
    loss, grad = mse_loss(PRED, TARGET, mask=MASK)
    assert loss == pytest.approx(1.140625, rel=1e-15)
    np.testing.assert_allclose(grad, [[0.25, 0, 0.25], [1.0, -0.125, 0]], rtol=1e-15)


def test_cross_entropy_golden():
    loss, grad = cross_entropy(LOGITS, np.array([0, 3, 1]))
    assert loss == pytest.approx(1.6710775967192444, rel=1e-14)
    expected = [
        [-0.25859739398393294, 0.20315334586629236, 0.04532963859783518, 0.01011440951980541],
        [0.01392419017178349, 0.00188443422073878, 0.27967483582084396, -0.29548346021336624],
        [0.09621713505246744, -0.24627246928164145, 0.07877592744051255, 0.07127940678866146],
    ]
    np.testing.assert_allclose(grad, expected, rtol=1e-13, atol=1e-16)


def test_cross_entropy_golden_ignore_index():
    loss, grad = cross_entropy(LOGITS, np.array([0, -100, 1]), ignore_index=-100)
    assert loss == pytest.approx(1.4188587137705093, rel=1e-14)
    expected = [
        [-0.38789609097589944, 0.30473001879943856, 0.06799445789675276, 0.01517161427970811],
        [0.0, 0.0, 0.0, 0.0],
        [0.14432570257870117, -0.36940870392246217, 0.11816389116076884, 0.10691911018299220],
    ]
    np.testing.assert_allclose(grad, expected, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_golden_large_logits(dtype):
    """Logits far beyond exp's range: the shifted log-softmax neither overflows nor underflows."""
    logits = np.array([[1000.0, 0.0, -1000.0], [-5000.0, -5001.0, -4999.0]], dtype=dtype)
    loss, grad = cross_entropy(logits, np.array([1, 2]))
    assert grad.dtype == dtype and np.all(np.isfinite(grad))
    assert loss == pytest.approx(500.2038029822222, rel=RTOL[dtype])
    expected = [[0.5, -0.5, 0.0], [0.12236423552739882, 0.04501528658519022, -0.16737952211258911]]
    np.testing.assert_allclose(grad, expected, rtol=RTOL[dtype], atol=1e-7)


# --------------------------------------------------------------------------- live torch
def _draw_case(seed):
    """A random loss call: kind, arrays, keywords and the boolean ``keep`` it stands for."""
    rng = np.random.default_rng(seed)
    kind = ("mse", "ce")[seed % 2]
    dtype = (np.float64, np.float32)[seed // 2 % 2]
    T, B = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    batch_first = bool(rng.integers(2))
    lead = (B, T) if batch_first else (T, B)
    kw = {"batch_first": batch_first, "reduction": ("mean", "sum")[int(rng.integers(2))]}
    keep = np.ones(lead, bool)
    if rng.integers(2):
        mask = rng.random(lead) < 0.7
        mask.flat[0] = True  # lengths >= 1 keep the first step too: something counts
        kw["mask"] = mask
        keep &= mask
    if rng.integers(2):
        lengths = rng.integers(1, T + 1, size=B)
        kw["lengths"] = lengths
        steps = np.arange(T)[:, None] < lengths[None, :]
        keep &= steps.T if batch_first else steps
    if kind == "mse":
        shape = lead + (int(rng.integers(1, 4)),)
        pred = rng.standard_normal(shape).astype(dtype)
        target = rng.standard_normal(shape).astype(dtype)
        keep = np.broadcast_to(keep[..., None], shape)
    else:
        C = int(rng.integers(2, 6))
        pred = (3 * rng.standard_normal(lead + (C,))).astype(dtype)
        target = rng.integers(0, C, size=lead)
        if rng.integers(2):
            kw["ignore_index"] = -1
            target[rng.random(lead) < 0.2] = -1
            target.flat[0] = 0  # at least the first position counts
            keep = keep & (target != -1)
        # padded positions hold an invalid class, which must not matter
        target[~keep] = -7 if "ignore_index" not in kw else -1
    return kind, pred, target, kw, keep


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(24))
def test_live_against_torch(seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    kind, pred, target, kw, keep = _draw_case(seed)
    fn = mse_loss if kind == "mse" else cross_entropy
    loss, grad = fn(pred, target, **kw)

    p = torch.from_numpy(pred.copy()).requires_grad_(True)
    keep_t = torch.from_numpy(np.array(keep))
    if kind == "mse":
        ref = F.mse_loss(p[keep_t], torch.from_numpy(target)[keep_t], reduction=kw["reduction"])
    else:
        ref = F.cross_entropy(p[keep_t], torch.from_numpy(target)[keep_t],
                              reduction=kw["reduction"])
    ref.backward()
    rtol = RTOL[pred.dtype.type] * 10
    assert loss == pytest.approx(ref.item(), rel=rtol)
    assert grad.dtype == pred.dtype
    assert rel_err(grad, p.grad.numpy()) < rtol


# --------------------------------------------------------------------------- central differences
@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_gradient_central_differences(kind):
    """Every element of dloss/dpred against central differences, float64, mask and lengths."""
    rng = np.random.default_rng(5)
    T, B = 4, 3
    mask = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 1]])
    lengths = np.array([4, 2, 3])
    if kind == "mse":
        pred = rng.standard_normal((T, B, 2))
        target = rng.standard_normal((T, B, 2))

        def f(p):
            return mse_loss(p, target, mask=mask, lengths=lengths)
    else:
        pred = rng.standard_normal((T, B, 5))
        target = rng.integers(0, 5, size=(T, B))
        target[0, 0] = -100

        def f(p):
            return cross_entropy(p, target, ignore_index=-100, mask=mask, lengths=lengths)

    _, grad = f(pred)
    numeric = np.empty_like(pred)
    h = 1e-6
    for i in np.ndindex(pred.shape):
        up, down = pred.copy(), pred.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (f(up)[0] - f(down)[0]) / (2 * h)
    assert np.count_nonzero(grad) > pred.size // 3  # some positions count, some do not
    assert rel_err(grad, numeric) < 1e-7


# --------------------------------------------------------------------------- semantics
def test_lengths_equal_a_mask_in_both_layouts():
    rng = np.random.default_rng(1)
    pred = rng.standard_normal((5, 3, 2))
    target = rng.standard_normal((5, 3, 2))
    lengths = np.array([5, 0, 2])
    mask = np.arange(5)[:, None] < lengths
    by_mask = mse_loss(pred, target, mask=mask)
    by_lengths = mse_loss(pred, target, lengths=lengths)
    tb = pred.transpose(1, 0, 2), target.transpose(1, 0, 2)
    by_batch_first = mse_loss(*tb, lengths=lengths, batch_first=True)
    by_time_axis = mse_loss(*tb, lengths=lengths, time_axis=1)
    for loss, grad in (by_lengths, by_batch_first, by_time_axis):
        assert loss == pytest.approx(by_mask[0], rel=1e-15)
    np.testing.assert_array_equal(by_lengths[1], by_mask[1])
    np.testing.assert_array_equal(by_batch_first[1], by_mask[1].transpose(1, 0, 2))
    np.testing.assert_array_equal(by_time_axis[1], by_batch_first[1])


def test_cross_entropy_lengths_and_mask_combine():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 2, 4))
    target = rng.integers(0, 4, size=(3, 2))
    mask = np.array([[True, True], [False, True], [True, True]])
    lengths = [3, 2]
    keep = mask & (np.arange(3)[:, None] < np.array(lengths))
    both = cross_entropy(logits, target, mask=mask, lengths=lengths)
    flat = cross_entropy(logits[keep], target[keep])
    assert both[0] == pytest.approx(flat[0], rel=1e-15)
    np.testing.assert_allclose(both[1][keep], flat[1], rtol=1e-15)
    assert not both[1][~keep].any()


def test_mask_broadcasts_over_leading_axes():
    """A (T, 1) mask keeps whole time steps; a full-shape mask selects single elements."""
    rng = np.random.default_rng(3)
    pred, target = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    loss, grad = mse_loss(pred, target, mask=np.array([[1], [0]]))
    ref = mse_loss(pred[:1], target[:1])
    assert loss == pytest.approx(ref[0], rel=1e-15)
    np.testing.assert_array_equal(grad[:1], ref[1])
    assert not grad[1:].any()
    full = rng.random((2, 3, 4)) < 0.5
    loss, _ = mse_loss(pred, target, mask=full)
    assert loss == pytest.approx(np.mean((pred - target)[full] ** 2), rel=1e-14)


def test_sum_reduction_is_count_times_mean():
    rng = np.random.default_rng(4)
    logits, target = rng.standard_normal((4, 3, 5)), rng.integers(0, 5, size=(4, 3))
    lengths = np.array([4, 1, 3])
    mean = cross_entropy(logits, target, lengths=lengths)
    total = cross_entropy(logits, target, lengths=lengths, reduction="sum")
    assert total[0] == pytest.approx(mean[0] * 8, rel=1e-14)
    np.testing.assert_allclose(total[1], mean[1] * 8, rtol=1e-14)


def test_nothing_counted_gives_nan_mean_and_zero_gradient():
    logits = np.ones((2, 3, 4))
    loss, grad = cross_entropy(logits, np.zeros((2, 3), np.int64), lengths=[0, 0, 0])
    assert np.isnan(loss) and not grad.any()
    loss, grad = cross_entropy(logits, np.full((2, 3), 9), ignore_index=9)
    assert np.isnan(loss) and not grad.any()
    loss, grad = mse_loss(logits, logits + 1, mask=np.zeros(2, bool), reduction="sum")
    assert loss == 0.0 and not grad.any()


def test_padding_values_do_not_matter():
    """nan predictions and invalid classes at positions that do not count change nothing."""
    rng = np.random.default_rng(6)
    logits, target = rng.standard_normal((3, 2, 4)), rng.integers(0, 4, size=(3, 2))
    lengths = np.array([3, 1])
    clean = cross_entropy(logits, target, lengths=lengths)
    logits[1:, 1] = np.nan
    target[1:, 1] = 99
    dirty = cross_entropy(logits, target, lengths=lengths)
    assert dirty[0] == clean[0]
    np.testing.assert_array_equal(dirty[1], clean[1])


def test_unbatched_and_float32():
    logits = np.array([0.5, 1.5, -1.0], np.float32)
    loss, grad = cross_entropy(logits, np.array(1))
    assert grad.shape == (3,) and grad.dtype == np.float32 and isinstance(loss, float)
    expected = -np.log(np.exp(1.5) / np.exp(logits.astype(np.float64)).sum())
    assert loss == pytest.approx(expected, rel=1e-6)
    loss, grad = mse_loss(np.ones(3, np.float32), [0.0, 1.0, 2.0])
    assert grad.dtype == np.float32 and loss == pytest.approx(2 / 3, rel=1e-7)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(7)
    logits, target = rng.standard_normal((3, 2, 4)), rng.integers(0, 4, size=(3, 2))
    mask, lengths = np.array([[1, 0], [1, 1], [1, 1]]), np.array([3, 2])
    saved = [a.copy() for a in (logits, target, mask, lengths)]
    cross_entropy(logits, target, ignore_index=2, mask=mask, lengths=lengths)
    pred = rng.standard_normal((3, 2, 4))
    saved_pred = pred.copy()
    mse_loss(pred, logits, mask=mask, lengths=lengths)
    for a, b in zip((logits, target, mask, lengths, pred), saved + [saved_pred]):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- errors
P = np.zeros((3, 2, 4))
T_CLASS = np.zeros((3, 2), np.int64)
BAD_CALLS = [
    ("pred", TypeError, lambda: mse_loss([[1.0]], [[1.0]])),
    ("pred", TypeError, lambda: mse_loss(np.zeros(3, np.int64), np.zeros(3))),
    ("target", ValueError, lambda: mse_loss(P, np.zeros((3, 2, 3)))),
    ("target", TypeError, lambda: mse_loss(P, np.zeros((3, 2, 4), np.int64))),
    ("mask", ValueError, lambda: mse_loss(P, P, mask=np.ones((3, 3), bool))),
    ("mask", ValueError, lambda: mse_loss(P, P, mask=np.ones((3, 2, 4, 1), bool))),
    ("mask", ValueError, lambda: mse_loss(P, P, mask=np.full((3, 2), 0.5))),
    ("mask", TypeError, lambda: mse_loss(P, P, mask=np.array([["a", "b"]] * 3))),
    ("lengths", ValueError, lambda: mse_loss(P, P, lengths=[1, 2, 3])),
    ("lengths", ValueError, lambda: mse_loss(P, P, lengths=[4, 1])),
    ("lengths", ValueError, lambda: mse_loss(P, P, lengths=[-1, 1])),
    ("lengths", TypeError, lambda: mse_loss(P, P, lengths=[1.0, 2.0])),
    ("lengths", ValueError, lambda: mse_loss(np.zeros(3), np.zeros(3), lengths=[1])),
    ("time_axis", ValueError, lambda: mse_loss(P, P, lengths=[1, 1], time_axis=2)),
    ("time_axis", ValueError, lambda: mse_loss(P, P, time_axis=0, batch_first=True)),
    ("time_axis", TypeError, lambda: mse_loss(P, P, time_axis="time")),
    ("batch_first", TypeError, lambda: mse_loss(P, P, batch_first="yes")),
    ("reduction", ValueError, lambda: mse_loss(P, P, reduction="none")),
    ("logits", TypeError, lambda: cross_entropy(np.zeros((3, 2), np.int32), np.zeros(3, int))),
    ("logits", ValueError, lambda: cross_entropy(np.zeros((3, 0)), np.zeros(3, int))),
    ("target", TypeError, lambda: cross_entropy(P, np.zeros((3, 2)))),
    ("target", TypeError, lambda: cross_entropy(P, np.zeros((3, 2), bool))),
    ("target", ValueError, lambda: cross_entropy(P, np.zeros((3, 2, 4), np.int64))),
    ("target", ValueError, lambda: cross_entropy(P, T_CLASS + 4)),
    ("target", ValueError, lambda: cross_entropy(P, T_CLASS - 1)),
    ("target", ValueError, lambda: cross_entropy(P, T_CLASS - 1, ignore_index=-100)),
    ("ignore_index", TypeError, lambda: cross_entropy(P, T_CLASS, ignore_index=1.5)),
    ("reduction", ValueError, lambda: cross_entropy(P, T_CLASS, reduction="avg")),
    ("lengths", ValueError, lambda: cross_entropy(P, T_CLASS, lengths=[1, 2], batch_first=True)),
]


@pytest.mark.parametrize("name, exc, call", BAD_CALLS,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_CALLS)])
def test_bad_input_names_the_argument(name, exc, call):
    with pytest.raises(exc, match=name):
        call()
