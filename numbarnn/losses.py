"""Loss functions that return the loss and its gradient: :func:`mse_loss`, :func:`cross_entropy`.

Each returns ``(loss, dloss_dpred)``: the loss as a Python float and the gradient of the
loss w.r.t. the prediction (or logits), an array of the prediction's shape and dtype, ready
to be passed to a model's ``backward``. The definitions are those of
``torch.nn.functional.mse_loss`` and ``torch.nn.functional.cross_entropy`` with
``reduction='mean'`` (the default) or ``'sum'``, except that cross-entropy takes the class
axis **last** (logits ``(..., C)``, as a recurrent layer's output per time step), where
torch takes it second.

Leaving positions out (padding)
-------------------------------
``mask`` and ``lengths`` mark which positions count; both may be given (a position counts
when both say so, and, for cross-entropy, when its target is not ``ignore_index``).
Positions that do not count add nothing to the loss, get a zero gradient, and are not in
the mean's denominator: the mean is over counted elements, as ``torch`` computes it over
the selected elements ``pred[mask]``. When no element counts the mean is ``nan`` (as in
torch) and the gradient is zero.

* ``mask``: booleans (or 0/1 numbers) aligned with the **leading** axes of the positions
  (``pred``'s axes for :func:`mse_loss`, ``target``'s for :func:`cross_entropy`): a mask of
  shape ``(T, B)`` for a prediction ``(T, B, F)`` keeps or drops all ``F`` features of a step.
  Each mask axis has the size of the matching axis or 1 (then it is broadcast).
* ``lengths``: ``(B,)`` integers in ``[0, T]``: sequence ``b`` counts its first
  ``lengths[b]`` steps. The time axis is axis 0 and the batch axis axis 1 (``(T, B, ...)``,
  as the layers take them), or the other way round with ``batch_first=True`` (equivalently
  ``time_axis=1``).

The functions take NumPy arrays (and CuPy arrays, through NumPy's dispatch protocols). They
never modify their inputs.
"""

import math
from numbers import Integral

import numpy as np

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_REDUCTIONS = ("mean", "sum")


# --------------------------------------------------------------------------- checks
def _check_float_array(value, name):
    """``value`` if it is a float32/float64 array, else a TypeError naming ``name``."""
    if not (hasattr(value, "dtype") and hasattr(value, "shape")):
        raise TypeError(f"{name}: expected a float32 or float64 array, got {type(value).__name__}")
    if value.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {value.dtype}")
    return value


def _as_array(value, like, name):
    """``value`` (an array or a nested sequence) as an array of ``like``'s array module."""
    try:
        return np.asarray(value, like=like)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected an array, got {type(value).__name__} ({exc})") from None


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")


def _resolve_time_axis(time_axis, batch_first):
    """The time axis (0 or 1) from ``time_axis`` and ``batch_first``, which must agree."""
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first: expected a bool, got {type(batch_first).__name__}")
    if time_axis is None:
        return 1 if batch_first else 0
    if isinstance(time_axis, bool) or not isinstance(time_axis, Integral):
        raise TypeError(f"time_axis: expected 0 or 1, got {type(time_axis).__name__}")
    if time_axis not in (0, 1):
        raise ValueError(f"time_axis: expected 0 (T, B, ...) or 1 (B, T, ...), got {time_axis}")
    if batch_first and time_axis != 1:
        raise ValueError(
            f"time_axis: {time_axis} contradicts batch_first=True (time on axis 1); give one"
        )
    return int(time_axis)


def _counted_positions(shape, mask, lengths, time_axis, like):
    """Which positions of an array of ``shape`` count, or None when all do.

    Parameters
    ----------
    shape : tuple of int
        Shape of the positions (the prediction for MSE, the targets for cross-entropy).
    mask : array-like or None
        Booleans or 0/1, aligned with the leading axes of ``shape`` (sizes equal or 1).
    lengths : array-like or None
        (B,) integers in [0, T]; T = ``shape[time_axis]``, B = ``shape[1 - time_axis]``.
    time_axis : {0, 1}
    like : array
        An array of the array module to build the result with.

    Returns
    -------
    keep : bool array or None
        Broadcastable to ``shape`` (trailing axes of size 1 where the mask had none).
    """
    keep = None
    if mask is not None:
        m = _as_array(mask, like, "mask")
        if m.dtype.kind not in "biuf":
            raise TypeError(f"mask: expected booleans or 0/1 numbers, got dtype {m.dtype}")
        if m.ndim > len(shape) or any(a not in (1, b) for a, b in zip(m.shape, shape)):
            raise ValueError(
                f"mask: expected a shape matching the leading axes of {tuple(shape)} "
                f"(each size equal or 1), got {tuple(m.shape)}"
            )
        if m.dtype.kind != "b":
            if m.size and not bool(np.all((m == 0) | (m == 1))):
                raise ValueError("mask: expected booleans or 0/1 values, got other numbers")
            m = m != 0
        keep = m.reshape(m.shape + (1,) * (len(shape) - m.ndim))
    if lengths is not None:
        lens = _as_array(lengths, like, "lengths")
        if lens.dtype.kind not in "iu":
            raise TypeError(f"lengths: expected integers, got dtype {lens.dtype}")
        if len(shape) < 2:
            raise ValueError(
                f"lengths: needs positions with a time and a batch axis, got shape {tuple(shape)}"
            )
        steps, batch = shape[time_axis], shape[1 - time_axis]
        if lens.shape != (batch,):
            raise ValueError(
                f"lengths: expected shape ({batch},) (one length per sequence; batch axis "
                f"{1 - time_axis} of {tuple(shape)}), got {tuple(lens.shape)}"
            )
        if lens.size and (int(lens.min()) < 0 or int(lens.max()) > steps):
            raise ValueError(
                f"lengths: expected values in [0, {steps}] (time axis {time_axis} of "
                f"{tuple(shape)}), got min {int(lens.min())}, max {int(lens.max())}"
            )
        by_length = np.arange(steps, like=like)[:, None] < lens[None, :]  # (T, B)
        if time_axis == 1:
            by_length = by_length.T
        by_length = by_length.reshape(by_length.shape + (1,) * (len(shape) - 2))
        keep = by_length if keep is None else keep & by_length
    return keep


def _reduce(elementwise, keep, reduction):
    """Sum of ``elementwise`` (zero where not kept), the divisor of the reduction, the count."""
    count = elementwise.size if keep is None else int(np.count_nonzero(keep))
    total = float(np.sum(elementwise, dtype=np.float64))
    divisor = count if reduction == "mean" else 1
    loss = total / divisor if divisor else math.nan
    return loss, divisor


# --------------------------------------------------------------------------- losses
def mse_loss(pred, target, mask=None, lengths=None, *, time_axis=None, batch_first=False,
             reduction="mean"):
    """Mean squared error and its gradient, as ``torch.nn.functional.mse_loss``.

    ``loss = sum_counted (pred - target)**2 / n_counted`` (``reduction='mean'``) or the sum.

    Parameters
    ----------
    pred : array
        Predictions of any shape, float32 or float64, e.g. (T, B, F) or (B, F).
    target : array-like
        Same shape as ``pred``, floating point (cast to ``pred``'s dtype).
    mask : array-like, optional
        Booleans or 0/1 over the leading axes of ``pred`` (e.g. (T, B) for (T, B, F)):
        True where a position counts. See the module notes.
    lengths : array-like, optional
        (B,) integers in [0, T]: the number of steps of each sequence that count.
    time_axis : {0, 1}, optional, keyword-only
        The time axis of ``pred`` for ``lengths``; default 0, or 1 with ``batch_first``.
    batch_first : bool, default False, keyword-only
        ``pred`` is (B, T, ...) rather than (T, B, ...) (only used with ``lengths``).
    reduction : {'mean', 'sum'}, default 'mean', keyword-only

    Returns
    -------
    loss : float
        ``nan`` for a mean over no counted element.
    dloss_dpred : array
        Same shape and dtype as ``pred``; zero at positions that do not count.

    Raises
    ------
    TypeError
        For a non-array or non-float ``pred``, a non-float ``target``, a ``mask`` or
        ``lengths`` of the wrong kind.
    ValueError
        For a ``target`` shape different from ``pred``'s, a ``mask`` or ``lengths`` that does
        not fit, a length outside [0, T], an unknown ``reduction`` or ``time_axis``.
    """
    pred = _check_float_array(pred, "pred")
    target = _as_array(target, pred, "target")
    if target.dtype.kind != "f":
        raise TypeError(f"target: expected a floating-point array, got dtype {target.dtype}")
    if target.shape != pred.shape:
        raise ValueError(
            f"target: expected the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}"
        )
    _check_reduction(reduction)
    keep = _counted_positions(
        pred.shape, mask, lengths, _resolve_time_axis(time_axis, batch_first), pred
    )
    diff = pred - target.astype(pred.dtype, copy=False)
    if keep is not None:
        keep = np.broadcast_to(keep, pred.shape)
        diff = np.where(keep, diff, 0)
    loss, divisor = _reduce(diff * diff, keep, reduction)
    scale = 2.0 / divisor if divisor else 0.0
    return loss, diff * scale


def cross_entropy(logits, target, ignore_index=None, mask=None, lengths=None, *,
                  time_axis=None, batch_first=False, reduction="mean"):
    """Cross-entropy of class-index targets under softmax(logits), and its gradient.

    As ``torch.nn.functional.cross_entropy`` with class indices, but with the class axis
    last: ``loss = -sum_counted log_softmax(logits)[..., target] / n_counted``. The
    log-softmax is computed after subtracting each row's maximum, so large logits do not
    overflow.

    Parameters
    ----------
    logits : array
        (..., C) unnormalised scores, float32 or float64, e.g. (T, B, C), (B, C) or (C,).
    target : array-like
        (...) class indices, an integer dtype, with the leading shape of ``logits``. At
        counted positions each must be in [0, C).
    ignore_index : int, optional
        Targets equal to it do not count (torch's default, -100, must be given explicitly).
        Ignored targets need not be valid class indices.
    mask : array-like, optional
        Booleans or 0/1 over the leading axes of ``target``: True where a position counts.
        Positions masked out need not hold valid class indices.
    lengths : array-like, optional
        (B,) integers in [0, T]: the number of steps of each sequence that count.
    time_axis : {0, 1}, optional, keyword-only
        The time axis of ``target`` for ``lengths``; default 0, or 1 with ``batch_first``.
    batch_first : bool, default False, keyword-only
        ``target`` is (B, T, ...) rather than (T, B, ...) (only used with ``lengths``).
    reduction : {'mean', 'sum'}, default 'mean', keyword-only
        The mean is over counted targets (torch's mean over non-ignored targets).

    Returns
    -------
    loss : float
        ``nan`` for a mean over no counted target.
    dloss_dlogits : array
        Same shape and dtype as ``logits``: ``(softmax - onehot(target)) / n_counted`` at
        counted positions, zero elsewhere.

    Raises
    ------
    TypeError
        For a non-float ``logits``, a non-integer ``target`` or ``ignore_index``, a ``mask``
        or ``lengths`` of the wrong kind.
    ValueError
        For a ``target`` shape other than ``logits.shape[:-1]``, a class index out of range
        at a counted position, a ``mask`` or ``lengths`` that does not fit, an unknown
        ``reduction`` or ``time_axis``.
    """
    logits = _check_float_array(logits, "logits")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(
            f"logits: expected shape (..., C) with C >= 1 classes, got {tuple(logits.shape)}"
        )
    num_classes = logits.shape[-1]
    target = _as_array(target, logits, "target")
    if target.dtype.kind not in "iu":
        raise TypeError(f"target: expected integer class indices, got dtype {target.dtype}")
    if target.shape != logits.shape[:-1]:
        raise ValueError(
            f"target: expected shape {tuple(logits.shape[:-1])} (logits' shape without the "
            f"class axis), got {tuple(target.shape)}"
        )
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, Integral)
    ):
        raise TypeError(f"ignore_index: expected an int or None, got {type(ignore_index).__name__}")
    _check_reduction(reduction)
    keep = _counted_positions(
        target.shape, mask, lengths, _resolve_time_axis(time_axis, batch_first), logits
    )
    if ignore_index is not None:
        not_ignored = target != ignore_index
        keep = not_ignored if keep is None else keep & not_ignored
    if keep is not None:
        keep = np.broadcast_to(keep, target.shape)
        counted = target[keep]
        target = np.where(keep, target, 0)  # any valid index where nothing counts
    else:
        counted = target
    if counted.size and (int(counted.min()) < 0 or int(counted.max()) >= num_classes):
        bad = int(counted.min()) if int(counted.min()) < 0 else int(counted.max())
        hint = "" if ignore_index is None else f" or ignore_index={ignore_index}"
        raise ValueError(
            f"target: class index {bad} out of range [0, {num_classes}) at a counted "
            f"position (expected a class of logits' last axis{hint})"
        )
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=-1, keepdims=True)
    onehot = np.arange(num_classes, like=logits) == target[..., None]
    # -log softmax at the target: log(sum exp) - shifted[target]
    nll = np.log(sum_exp[..., 0]) - np.sum(np.where(onehot, shifted, 0), axis=-1)
    grad = exp / sum_exp - onehot
    if keep is not None:
        nll = np.where(keep, nll, 0)
        grad = np.where(keep[..., None], grad, 0)
    loss, divisor = _reduce(nll, keep, reduction)
    scale = 1.0 / divisor if divisor else 0.0
    return loss, grad * scale
