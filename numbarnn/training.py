"""Training loops: :func:`fit` (full or truncated BPTT), :func:`evaluate`, :func:`predict`.

The model
---------
Anything with the interface of numbarnn's modules: ``forward``/``backward``, ``params``/
``grads`` (dicts of arrays), ``zero_grad``, ``train``/``eval`` -- a recurrent layer
(:class:`~numbarnn.LSTM`, ...) or a :class:`~numbarnn.Sequential` of them with
:class:`~numbarnn.Linear` and :class:`~numbarnn.LastStep`. Compose, don't subclass::

    # sequence -> one value (forecasting, classification): the head sees the last step
    model = Sequential(LSTM(1, 32, seed=0), LastStep(), Linear(32, 1, seed=1))
    # sequence -> one value per step (language model, truncated BPTT): the head per step
    model = Sequential(GRU(V, 64, seed=0), Linear(64, V, seed=1))

Truncated BPTT needs the recurrent layers' states, which ``Sequential.forward`` drops:
:func:`stateful_forward` and :func:`stateful_backward` walk the model's layers themselves,
giving each recurrent layer its initial state and collecting its final state (one entry per
recurrent layer, in order; ``(h, c)`` for an LSTM). That is also how to run a trained model
step by step (sampling from a language model).

Data layout
-----------
``x`` is a batch of sequences, ``(T, N, features)``, or ``(N, T, features)`` when the model
is ``batch_first`` (taken from the model's first recurrent layer unless given). The sample
axis is the one that ``N`` is on. Targets ``y`` are either

* per sequence: ``N`` along axis 0 -- ``(N, outputs)`` floats or ``(N,)`` class indices; or
* per step: the leading shape of ``x`` -- ``(T, N, outputs)`` floats or ``(T, N)`` class
  indices (``(N, T, ...)`` when batch_first).

Floats are per step when ``y.ndim == x.ndim``, integers (class indices) when
``y.ndim == x.ndim - 1``. ``lengths`` (``(N,)``) and ``mask`` (the targets' leading shape,
without the output axis) leave padded steps out of the loss (see :mod:`numbarnn.losses`).

Reproducibility and resuming
----------------------------
With ``seed`` the order of the samples in epoch ``e`` is drawn from
``numpy.random.default_rng([seed, e])``, so the run is reproducible and a run resumed with
``initial_epoch=e`` (and the model, optimizer and scheduler restored) continues exactly as
the uninterrupted run would have (``checkpoint=`` writes what is needed, see :func:`fit`).
"""

import math
import numbers
import os
import sys
import time

import numpy as np

from .layers import _RNNBase
from .losses import cross_entropy, mse_loss
from .modules import Sequential

__all__ = [
    "History", "fit", "evaluate", "predict", "stateful_forward", "stateful_backward",
    "recurrent_layers",
]

_LOSSES = {"mse": mse_loss, "cross_entropy": cross_entropy}
_TQDM_MIN_STEPS = 200  # optimizer steps in a fit() from which a tqdm bar is worth showing


# --------------------------------------------------------------------------- history
class History:
    """Per-epoch record of a :func:`fit`.

    Attributes
    ----------
    epoch : list of int
        Epoch numbers, counted from 1 (continuing after ``initial_epoch`` when resumed).
    loss : list of float
        Mean training loss of each epoch (the mean of the batch losses, weighted by the
        number of sequences in each batch, and for truncated BPTT by the steps of each chunk).
    val_loss : list of float
        Validation loss after each epoch (empty without ``validation_data``).
    lr : list of float
        Learning rate used during each epoch.
    seconds : list of float
        Wall time of each epoch.
    stopped_early : bool
        Whether early stopping (or a callback) ended the fit before ``epochs``.
    best_epoch : int or None
        The epoch with the lowest monitored loss (validation loss when there is validation
        data, else training loss).
    """

    _LISTS = ("epoch", "loss", "val_loss", "lr", "seconds")

    def __init__(self):
        for name in self._LISTS:
            setattr(self, name, [])
        self.stopped_early = False
        self.best_epoch = None

    def __len__(self):
        return len(self.epoch)

    @property
    def monitored(self):
        """The losses early stopping watches: ``val_loss`` when recorded, else ``loss``."""
        return self.val_loss if self.val_loss else self.loss

    def to_dict(self):
        """A JSON-serializable dict (what :func:`fit` stores in a checkpoint's metadata)."""
        out = {name: list(getattr(self, name)) for name in self._LISTS}
        out["stopped_early"] = self.stopped_early
        out["best_epoch"] = self.best_epoch
        return out

    @classmethod
    def from_dict(cls, data):
        """Rebuild a History from :meth:`to_dict`'s output (e.g. a checkpoint's metadata)."""
        if not isinstance(data, dict):
            raise TypeError(f"history: expected a dict, got {type(data).__name__}")
        history = cls()
        for name in cls._LISTS:
            setattr(history, name, list(data.get(name, [])))
        history.stopped_early = bool(data.get("stopped_early", False))
        history.best_epoch = data.get("best_epoch")
        return history

    def __repr__(self):
        if not self.epoch:
            return "History(no epochs)"
        last = f"loss={self.loss[-1]:.4g}"
        if self.val_loss:
            last += f", val_loss={self.val_loss[-1]:.4g}"
        return f"History({len(self)} epochs, last epoch {self.epoch[-1]}: {last})"


# --------------------------------------------------------------------------- model walking
def _leaves(model):
    """The model's layers in order, with nested Sequentials flattened."""
    if isinstance(model, Sequential):
        for layer in model.layers:
            yield from _leaves(layer)
    else:
        yield model


def recurrent_layers(model):
    """The recurrent layers (RNN, LSTM, GRU) of ``model``, in order (nested Sequentials too)."""
    return [layer for layer in _leaves(model) if isinstance(layer, _RNNBase)]


def stateful_forward(model, x, state=None):
    """Run ``model`` on ``x`` from given recurrent states; return the output and final states.

    Parameters
    ----------
    model : recurrent layer or Sequential
        Its layers run in order; each recurrent layer starts from its entry of ``state``.
    x : array
        The model's input, e.g. (T, B, features).
    state : list, optional
        One entry per recurrent layer (see :func:`recurrent_layers`), each what the layer
        takes as ``hx`` (``(h0, c0)`` for an LSTM) or None for zeros. None: all zeros.

    Returns
    -------
    y : array
        The model's output.
    state : list
        The final state of every recurrent layer, to pass to the next call (new arrays:
        no gradient flows through them into this call).
    """
    layers = list(_leaves(model))
    n_rec = sum(isinstance(layer, _RNNBase) for layer in layers)
    if state is None:
        state = [None] * n_rec
    if not isinstance(state, (list, tuple)) or len(state) != n_rec:
        got = f"a {type(state).__name__}"
        if isinstance(state, (list, tuple)):
            got += f" of length {len(state)}"
        raise ValueError(
            f"state: expected a list with one entry per recurrent layer ({n_rec}), got {got}"
        )
    final = []
    for layer in layers:
        if isinstance(layer, _RNNBase):
            x, s = layer.forward(x, state[len(final)])
            final.append(s)
        else:
            x = layer.forward(x)
            if isinstance(x, tuple):
                x = x[0]
    return x, final


def stateful_backward(model, dy):
    """Backpropagate through the last :func:`stateful_forward` (training mode).

    No gradient flows into the initial states (the previous chunk, in truncated BPTT) and
    none comes from the final states: each recurrent layer gets ``dstate=None`` (zeros).
    Parameter gradients are accumulated into ``model.grads``.

    Returns
    -------
    dx : array
        Gradient w.r.t. the input of :func:`stateful_forward`.
    """
    for layer in reversed(list(_leaves(model))):
        dy = layer.backward(dy)
        if isinstance(dy, tuple):
            dy = dy[0]
    return dy


def _model_info(model):
    """(backend, dtype, batch_first) of ``model``; TypeError when it is no model."""
    for attr in ("forward", "backward", "params", "grads", "zero_grad", "train"):
        if not hasattr(model, attr):
            raise TypeError(
                f"model: expected a module with forward/backward/params/grads/zero_grad/train "
                f"(a recurrent layer or a Sequential), got {type(model).__name__} (no {attr!r})"
            )
    params = model.params
    if not params:
        raise ValueError("model: has no parameters to train")
    dtype = next(iter(params.values())).dtype
    backend = None
    for layer in _leaves(model):
        backend = getattr(layer, "backend", None)
        if backend is not None:
            break
    rec = recurrent_layers(model)
    batch_first = rec[0].batch_first if rec else False
    return backend, np.dtype(dtype), batch_first


# --------------------------------------------------------------------------- data checks
def _is_array(value):
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic)


class _Data:
    """Checked training or validation data and how to slice it into batches."""

    def __init__(self, x, y, lengths, mask, *, dtype, batch_first, names):
        nx, ny, nl, nm = names
        if not _is_array(x):
            raise TypeError(f"{nx}: expected an array, got {type(x).__name__}")
        if x.dtype != dtype:
            raise TypeError(f"{nx}: expected dtype {dtype.name} (the model's dtype), got {x.dtype}")
        layout = "(N, T, features)" if batch_first else "(T, N, features)"
        if x.ndim != 3:
            raise ValueError(
                f"{nx}: expected 3 dimensions {layout}, got shape {tuple(x.shape)}"
            )
        self.x_axis = 0 if batch_first else 1  # the sample axis of x
        self.time_axis = 1 - self.x_axis
        self.n = int(x.shape[self.x_axis])
        if self.n == 0 or x.shape[self.time_axis] == 0:
            raise ValueError(f"{nx}: expected at least one sequence and one step, got shape "
                             f"{tuple(x.shape)}")
        if not _is_array(y):
            raise TypeError(f"{ny}: expected an array, got {type(y).__name__}")
        if y.dtype.kind == "f":
            self.per_step = y.ndim == x.ndim
        elif y.dtype.kind in "iu":
            self.per_step = y.ndim == x.ndim - 1
        else:
            raise TypeError(
                f"{ny}: expected floats (regression) or integer class indices, got dtype {y.dtype}"
            )
        if self.per_step:
            if tuple(y.shape[:2]) != tuple(x.shape[:2]):
                raise ValueError(
                    f"{ny}: per-step targets must have the leading shape of {nx} "
                    f"{tuple(x.shape[:2])}, got shape {tuple(y.shape)}"
                )
            self.y_axis = self.x_axis
        else:
            if y.ndim == 0 or y.shape[0] != self.n:
                raise ValueError(
                    f"{ny}: expected {self.n} targets along axis 0 (one per sequence of {nx}, "
                    f"shape {tuple(x.shape)}), or per-step targets of leading shape "
                    f"{tuple(x.shape[:2])}; got shape {tuple(y.shape)}"
                )
            self.y_axis = 0
        if lengths is not None:
            if not self.per_step:
                raise ValueError(
                    f"{nl}: lengths need per-step targets (of leading shape "
                    f"{tuple(x.shape[:2])}); {ny} has one target per sequence"
                )
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu":
                raise TypeError(f"{nl}: expected integers, got dtype {lengths.dtype}")
            if lengths.shape != (self.n,):
                raise ValueError(f"{nl}: expected shape ({self.n},), got {tuple(lengths.shape)}")
            steps = x.shape[self.time_axis]
            if lengths.size and (lengths.min() < 0 or lengths.max() > steps):
                raise ValueError(f"{nl}: expected values in [0, {steps}], got min "
                                 f"{lengths.min()}, max {lengths.max()}")
        if mask is not None:
            mask = np.asarray(mask)
            expected = tuple(y.shape[:2]) if self.per_step else (self.n,)
            if tuple(mask.shape) != expected:
                raise ValueError(
                    f"{nm}: expected shape {expected} (the targets' leading axes), "
                    f"got {tuple(mask.shape)}"
                )
        self.x, self.y, self.lengths, self.mask = x, y, lengths, mask

    def batch(self, idx):
        """(x, y, lengths, mask) of the samples ``idx``."""
        take = (lambda a, axis: a[idx] if axis == 0 else a[:, idx])
        xb = take(self.x, self.x_axis)
        yb = take(self.y, self.y_axis)
        lb = None if self.lengths is None else self.lengths[idx]
        mb = None if self.mask is None else take(self.mask, self.y_axis)
        return xb, yb, lb, mb


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def _resolve_loss(loss):
    if callable(loss):
        return loss, getattr(loss, "__name__", "loss")
    if isinstance(loss, str) and loss in _LOSSES:
        return _LOSSES[loss], loss
    raise ValueError(f"loss: expected one of {sorted(_LOSSES)} or a callable, got {loss!r}")


def _unpack_validation(validation_data):
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise TypeError(
            "validation_data: expected a tuple (x, y) or (x, y, {'lengths': ..., 'mask': ...}), "
            f"got {type(validation_data).__name__}"
        )
    extra = validation_data[2] if len(validation_data) == 3 else {}
    if not isinstance(extra, dict) or set(extra) - {"lengths", "mask"}:
        raise ValueError(
            "validation_data[2]: expected a dict with the keys 'lengths' and/or 'mask', "
            f"got {extra!r:.100}"
        )
    return validation_data[0], validation_data[1], extra.get("lengths"), extra.get("mask")


def _loss_kwargs(lengths, mask, batch_first):
    kwargs = {}
    if lengths is not None:
        kwargs["lengths"] = lengths
        kwargs["batch_first"] = batch_first
    if mask is not None:
        kwargs["mask"] = mask
    return kwargs


def _check_target(pred, target, loss_name, where):
    """For the built-in losses: a ValueError naming ``y`` when the targets do not fit ``pred``."""
    if loss_name == "mse":
        expected = tuple(pred.shape)
    elif loss_name == "cross_entropy":
        expected = tuple(pred.shape[:-1])
    else:
        return
    if tuple(target.shape) != expected:
        kind = "values" if loss_name == "mse" else "class indices"
        raise ValueError(
            f"{where}: the model's output has shape {tuple(pred.shape)}, so the {loss_name} "
            f"loss needs {kind} of shape {expected} per batch; got {tuple(target.shape)}"
        )


def _counts(lengths, mask):
    """Whether any position counts (False: a chunk/batch with nothing to learn from)."""
    if lengths is not None and not np.any(lengths):
        return False
    if mask is not None and not np.any(mask):
        return False
    return True


# --------------------------------------------------------------------------- progress
class _Progress:
    """Per-epoch reports: a tqdm bar when tqdm is installed and the work is long, else prints."""

    def __init__(self, mode, first, epochs, steps_per_epoch, stream):
        self.stream = stream if stream is not None else sys.stdout
        self.bar = None
        self.mode = mode
        self.first, self.epochs = first, epochs
        self.every = max(1, (epochs - first) // 10)
        if mode in (True, "tqdm"):
            long = (epochs - first) * steps_per_epoch >= _TQDM_MIN_STEPS
            if mode == "tqdm" or long:
                try:
                    from tqdm.auto import tqdm
                except ImportError:
                    if mode == "tqdm":
                        raise ImportError("progress: 'tqdm' asked for, but tqdm is not "
                                          "installed (pip install tqdm)") from None
                else:
                    self.bar = tqdm(total=epochs - first, desc="fit", unit="epoch",
                                    dynamic_ncols=True, leave=True)
        self.enabled = mode is not False

    def update(self, epoch, logs, stopping):
        if not self.enabled:
            return
        if self.bar is not None:
            post = {"loss": f"{logs['loss']:.4g}"}
            if logs.get("val_loss") is not None:
                post["val_loss"] = f"{logs['val_loss']:.4g}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)
            return
        done = epoch + 1
        if done == self.epochs or stopping or (done - self.first) % self.every == 0 or \
                done == self.first + 1:
            width = len(str(self.epochs))
            line = f"epoch {done:>{width}}/{self.epochs}  loss {logs['loss']:.5g}"
            if logs.get("val_loss") is not None:
                line += f"  val_loss {logs['val_loss']:.5g}"
            line += f"  lr {logs['lr']:.3g}  {logs['seconds']:.2f} s"
            print(line, file=self.stream, flush=True)

    def message(self, text):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- fit
def fit(
    model, optimizer, x, y, *, loss="mse", epochs=1, batch_size=32, shuffle=True, seed=None,
    lengths=None, mask=None, validation_data=None, clip_norm=None, scheduler=None,
    early_stopping=None, min_delta=0.0, restore_best=False, tbptt=None, batch_first=None,
    initial_epoch=0, history=None, checkpoint=None, callbacks=(), progress=True, stream=None,
):
    """Train ``model`` with ``optimizer`` on ``(x, y)`` by mini-batch gradient descent.

    Each optimizer step: forward, loss, backward, optional clipping of the gradients' global
    norm, a check that loss and gradients are finite, ``optimizer.step()``, zeroed gradients.

    Parameters
    ----------
    model : recurrent layer or Sequential
        See the module notes. Trained in training mode; left in the mode it had before.
    optimizer : numbarnn.optim.Optimizer
        Bound to ``model``'s parameters.
    x : array
        (T, N, features), or (N, T, features) for a ``batch_first`` model; the model's dtype.
    y : array
        Targets, per sequence (N along axis 0) or per step (x's leading shape); floats for
        ``'mse'``, integer class indices for ``'cross_entropy'``. See the module notes.
    loss : {'mse', 'cross_entropy'} or callable, default 'mse'
        A callable is called as ``loss(pred, target, **kw)`` (``kw``: ``mask``, ``lengths``
        and ``batch_first`` when given) and returns ``(loss, dloss_dpred)``.
    epochs : int, default 1
        Train until this epoch (counting ``initial_epoch`` as done).
    batch_size : int, default 32
        Sequences per batch (the last batch may be smaller).
    shuffle : bool, default True
        Visit the sequences in a new random order each epoch.
    seed : int, optional
        Seed of the order: epoch ``e`` uses ``numpy.random.default_rng([seed, e])``.
    lengths : array, optional
        (N,) valid steps of each sequence (per-step targets only): padding does not count.
    mask : array, optional
        Booleans of the targets' leading shape: False where a target does not count.
    validation_data : tuple, optional
        ``(x_val, y_val)`` or ``(x_val, y_val, {"lengths": ..., "mask": ...})``, evaluated
        after every epoch (evaluation mode, the whole sequence even with ``tbptt``).
    clip_norm : float, optional
        Clip the gradients' global 2-norm to this before each step
        (:func:`numbarnn.optim.clip_grad_norm`).
    scheduler : StepLR or CosineAnnealingLR, optional
        Stepped after every epoch.
    early_stopping : int, optional
        Patience: stop when the monitored loss (validation loss when there is validation
        data, else training loss) has not improved by more than ``min_delta`` for this many
        epochs.
    min_delta : float, default 0
        Smallest decrease that counts as an improvement.
    restore_best : bool, default False
        At the end, put back the weights of the epoch with the lowest monitored loss (of
        this call; the optimizer state is not rewound).
    tbptt : int, optional
        Truncated backpropagation through time with chunks of this many steps (per-step
        targets only): each batch's sequences are cut into chunks along time; the recurrent
        states at the end of a chunk are the initial states of the next, with no gradient
        flowing between chunks; one optimizer step per chunk. The states start from zero
        at each batch. None: full BPTT over the whole sequence.
    batch_first : bool, optional
        Layout of ``x``; default: that of the model's first recurrent layer.
    initial_epoch : int, default 0
        Epochs already done (to resume a run: restore the model, the optimizer and the
        scheduler, pass the same ``seed``, and the run continues as if never stopped).
    history : History, optional
        Append to this history (e.g. ``History.from_dict(metadata["history"])`` from a
        checkpoint) instead of a new one; early stopping takes its past epochs into account.
    checkpoint : str or os.PathLike, optional
        After each epoch -- only when its losses, gradients and weights are all finite --
        save the model and optimizer there with :func:`numbarnn.save` (atomically). The
        metadata holds ``epoch``, ``history`` (:meth:`History.to_dict`), ``scheduler``
        (its ``state_dict()`` or None) and ``seed``: everything :func:`fit` needs to resume.
    callbacks : iterable of callables, optional
        Each called after every epoch as ``callback(epoch, logs)`` with ``epoch`` counted
        from 1 and ``logs`` a dict (``loss``, ``val_loss``, ``lr``, ``seconds``); returning
        True stops the fit.
    progress : bool or {'tqdm', 'print'}, default True
        Report each epoch: a tqdm bar when tqdm is installed and the fit takes at least
        200 optimizer steps, else about ten printed lines. False: silent.
    stream : file, optional
        Where the printed lines go (default ``sys.stdout``).

    Returns
    -------
    History

    Raises
    ------
    FloatingPointError
        When the loss or a gradient becomes NaN or infinite; the message names the loss,
        the epoch and the batch. The optimizer step is not taken, and no checkpoint is
        written for the epoch (an existing checkpoint keeps the last finite epoch).
    TypeError, ValueError
        For bad arguments; the message names the argument.
    """
    backend, dtype, model_batch_first = _model_info(model)
    if not (hasattr(optimizer, "step") and hasattr(optimizer, "zero_grad")
            and isinstance(getattr(optimizer, "params", None), dict)):
        raise TypeError(
            f"optimizer: expected a numbarnn optimizer (SGD, Adam, ...), got "
            f"{type(optimizer).__name__}"
        )
    bound = {id(a) for a in optimizer.params.values()}
    foreign = [n for n, p in model.params.items() if id(p) not in bound]
    if foreign:
        raise ValueError(
            f"optimizer: not bound to this model's parameters (e.g. {foreign[0]!r}); "
            "build it with the model you train"
        )
    loss_fn, loss_name = _resolve_loss(loss)
    epochs = _check_int(epochs, "epochs", 0)
    batch_size = _check_int(batch_size, "batch_size", 1)
    initial_epoch = _check_int(initial_epoch, "initial_epoch", 0)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle: expected a bool, got {type(shuffle).__name__}")
    if seed is not None:
        seed = _check_int(seed, "seed", 0)
    if batch_first is None:
        batch_first = model_batch_first
    elif not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first: expected a bool or None, got {type(batch_first).__name__}")
    if clip_norm is not None:
        if isinstance(clip_norm, bool) or not isinstance(clip_norm, numbers.Real):
            raise TypeError(f"clip_norm: expected a number, got {type(clip_norm).__name__}")
        if not clip_norm > 0:
            raise ValueError(f"clip_norm: expected a positive number, got {clip_norm}")
    if early_stopping is not None:
        early_stopping = _check_int(early_stopping, "early_stopping", 1)
    if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real) or min_delta < 0:
        raise ValueError(f"min_delta: expected a number >= 0, got {min_delta!r}")
    if not isinstance(restore_best, (bool, np.bool_)):
        raise TypeError(f"restore_best: expected a bool, got {type(restore_best).__name__}")
    if tbptt is not None:
        tbptt = _check_int(tbptt, "tbptt", 1)
        bidirectional = [layer for layer in recurrent_layers(model) if layer.bidirectional]
        if bidirectional:
            raise ValueError(
                "tbptt: a bidirectional layer cannot carry its state from chunk to chunk "
                f"({bidirectional[0]!r})"
            )
    if scheduler is not None and not (
        hasattr(scheduler, "step") and hasattr(scheduler, "state_dict")
    ):
        raise TypeError(f"scheduler: expected StepLR or CosineAnnealingLR, got "
                        f"{type(scheduler).__name__}")
    if progress not in (True, False, "tqdm", "print"):
        raise ValueError(f"progress: expected True, False, 'tqdm' or 'print', got {progress!r}")
    if callable(callbacks):
        callbacks = (callbacks,)
    callbacks = tuple(callbacks)
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(f"callbacks[{i}]: expected a callable, got {type(cb).__name__}")
    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
        if not checkpoint.lower().endswith((".npz", ".safetensors")):
            raise ValueError(
                f"checkpoint: expected a path ending in .npz or .safetensors, got {checkpoint!r}"
            )
    if history is None:
        history = History()
    elif not isinstance(history, History):
        raise TypeError(f"history: expected a History, got {type(history).__name__}")

    data = _Data(x, y, lengths, mask, dtype=dtype, batch_first=batch_first,
                 names=("x", "y", "lengths", "mask"))
    if tbptt is not None and not data.per_step:
        raise ValueError(
            f"tbptt: truncated BPTT needs per-step targets (y of leading shape "
            f"{tuple(x.shape[:2])}), got y of shape {tuple(y.shape)}"
        )
    val = None
    if validation_data is not None:
        vx, vy, vl, vm = _unpack_validation(validation_data)
        val = _Data(vx, vy, vl, vm, dtype=dtype, batch_first=batch_first,
                    names=("validation_data[0] (x)", "validation_data[1] (y)",
                           "validation_data[2]['lengths']", "validation_data[2]['mask']"))
        if val.per_step != data.per_step:
            raise ValueError("validation_data[1]: per-step and per-sequence targets differ "
                             "between y and the validation targets")

    was_training = getattr(model, "training", True)
    n_batches = -(-data.n // batch_size)
    steps_per_epoch = n_batches
    if tbptt is not None:
        steps_per_epoch *= -(-x.shape[data.time_axis] // tbptt)
    reporter = _Progress(progress, initial_epoch, epochs, steps_per_epoch, stream)

    # Early stopping state, replayed from the history (so that a resumed run agrees).
    best, wait = math.inf, 0
    for value in history.monitored:
        if value < best - min_delta:
            best, wait = value, 0
        else:
            wait += 1
    best_state = None
    step = getattr(optimizer, "step_count", 0)
    try:
        model.train()
        optimizer.zero_grad()
        for epoch in range(initial_epoch, epochs):
            start = time.perf_counter()
            lr = float(getattr(optimizer, "lr", math.nan))
            if shuffle:
                rng = np.random.default_rng(None if seed is None else [seed, epoch])
                order = rng.permutation(data.n)
            else:
                order = np.arange(data.n)
            total, weight = 0.0, 0.0
            for b in range(n_batches):
                idx = order[b * batch_size : (b + 1) * batch_size]
                xb, yb, lb, mb = data.batch(idx)
                where = f"epoch {epoch + 1}/{epochs}, batch {b + 1}/{n_batches}"
                if tbptt is None:
                    chunks = [(xb, yb, lb, mb, None)]
                else:
                    chunks = _chunks(xb, yb, lb, mb, tbptt, data.time_axis)
                state = None
                for c, (xc, yc, lc, mc, steps) in enumerate(chunks):
                    if tbptt is not None and len(chunks) > 1:
                        where_c = f"{where}, chunk {c + 1}/{len(chunks)}"
                    else:
                        where_c = where
                    xc = backend.asarray(xc) if backend is not None else xc
                    if tbptt is None:
                        pred = model.forward(xc)
                        if isinstance(pred, tuple):
                            pred = pred[0]
                    else:
                        pred, state = stateful_forward(model, xc, state)
                        if tuple(pred.shape[:2]) != tuple(xc.shape[:2]):
                            raise ValueError(
                                "tbptt: the model's output must have one entry per step "
                                f"(leading shape {tuple(xc.shape[:2])}), got shape "
                                f"{tuple(pred.shape)} (a LastStep in the model?)"
                            )
                    if not _counts(lc, mc):
                        # Nothing counts (padding only): no loss, no step; drop saved arrays.
                        continue
                    _check_target(pred, yc, loss_name, "y")
                    value, dpred = loss_fn(pred, yc, **_loss_kwargs(lc, mc, batch_first))
                    value = float(value)
                    if not math.isfinite(value):
                        raise FloatingPointError(
                            f"loss: {loss_name} became {value} at {where_c} (after {step} "
                            "optimizer steps); no step was taken for it. Lower the learning "
                            "rate, set clip_norm, or check the data for NaN/inf"
                        )
                    if tbptt is None:
                        model.backward(dpred)
                    else:
                        stateful_backward(model, dpred)
                    grads = model.grads
                    if clip_norm is not None:
                        from .optim import clip_grad_norm

                        norm = clip_grad_norm(grads, clip_norm)
                        finite = math.isfinite(norm)
                    else:
                        finite = all(bool(np.isfinite(g).all()) for g in grads.values())
                    if not finite:
                        raise FloatingPointError(
                            f"gradients: a gradient of the {loss_name} loss became NaN or "
                            f"infinite at {where_c} (loss {value:.6g}, after {step} optimizer "
                            "steps); no step was taken for it. Lower the learning rate or set "
                            "clip_norm"
                        )
                    optimizer.step()
                    optimizer.zero_grad()
                    step += 1
                    w = len(idx) * (1 if steps is None else steps)
                    total += value * w
                    weight += w
            epoch_loss = total / weight if weight else math.nan
            val_loss = None
            if val is not None:
                val_loss = _evaluate(model, val, loss_fn, batch_size, backend, batch_first,
                                     loss_name, "validation_data[1] (y)")
                if not math.isfinite(val_loss):
                    raise FloatingPointError(
                        f"val_loss: the {loss_name} on validation_data became {val_loss} after "
                        f"epoch {epoch + 1}/{epochs}; no checkpoint was written for it"
                    )
                model.train()
            if scheduler is not None:
                scheduler.step()
            seconds = time.perf_counter() - start
            history.epoch.append(epoch + 1)
            history.loss.append(epoch_loss)
            if val_loss is not None:
                history.val_loss.append(val_loss)
            history.lr.append(lr)
            history.seconds.append(seconds)
            monitored = val_loss if val_loss is not None else epoch_loss
            if monitored < best - min_delta:
                best, wait = monitored, 0
                history.best_epoch = epoch + 1
                if restore_best:
                    best_state = model.state_dict()
            else:
                wait += 1
            if checkpoint is not None:
                _write_checkpoint(checkpoint, model, optimizer, scheduler, history, epoch, seed,
                                  loss_name)
            logs = {"loss": epoch_loss, "val_loss": val_loss, "lr": lr, "seconds": seconds}
            stop = any(bool(cb(epoch + 1, dict(logs))) for cb in callbacks)
            if early_stopping is not None and wait >= early_stopping:
                stop = True
            reporter.update(epoch, logs, stop)
            if stop:
                history.stopped_early = epoch + 1 < epochs
                if history.stopped_early:
                    reporter.message(
                        f"stopped after epoch {epoch + 1}: no improvement of the "
                        f"{'validation' if history.val_loss else 'training'} loss for {wait} "
                        f"epochs (best {best:.5g} at epoch {history.best_epoch})"
                        if early_stopping is not None and wait >= early_stopping
                        else f"stopped after epoch {epoch + 1} by a callback"
                    )
                break
        if restore_best and best_state is not None:
            model.load_state_dict(best_state)
    finally:
        reporter.close()
        optimizer.zero_grad()
        model.train(bool(was_training))
    return history


def _chunks(xb, yb, lb, mb, k, time_axis):
    """Cut one batch into chunks of ``k`` steps along the time axis (the last may be shorter)."""
    steps = xb.shape[time_axis]
    out = []
    for s in range(0, steps, k):
        sl = (slice(None),) * time_axis + (slice(s, s + k),)
        lc = None if lb is None else np.clip(lb - s, 0, min(k, steps - s)).astype(lb.dtype)
        mc = None if mb is None else mb[sl]
        out.append((xb[sl], yb[sl], lc, mc, min(k, steps - s)))
    return out


def _write_checkpoint(path, model, optimizer, scheduler, history, epoch, seed, loss_name):
    """Save after a finite epoch; refuse to write non-finite weights."""
    for name, p in model.params.items():
        if not bool(np.isfinite(p).all()):
            raise FloatingPointError(
                f"checkpoint: weight {name!r} is not finite after epoch {epoch + 1}; "
                f"nothing written to {path} (the {loss_name} loss was finite)"
            )
    from .io import save

    metadata = {
        "epoch": epoch + 1,
        "history": history.to_dict(),
        "scheduler": None if scheduler is None else _jsonable(scheduler.state_dict()),
        "seed": seed,
    }
    save(path, model, optimizer, metadata=metadata)


def _jsonable(state):
    out = {}
    for k, v in state.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


# --------------------------------------------------------------------------- evaluation
def _evaluate(model, data, loss_fn, batch_size, backend, batch_first, loss_name="", name="y"):
    """Mean loss over ``data`` in evaluation mode (batch losses weighted by batch sizes)."""
    model.eval()
    total = 0.0
    for start in range(0, data.n, batch_size):
        idx = np.arange(start, min(start + batch_size, data.n))
        xb, yb, lb, mb = data.batch(idx)
        if not _counts(lb, mb):
            continue
        xb = backend.asarray(xb) if backend is not None else xb
        pred = model.forward(xb)
        if isinstance(pred, tuple):
            pred = pred[0]
        _check_target(pred, yb, loss_name, name)
        value, _ = loss_fn(pred, yb, **_loss_kwargs(lb, mb, batch_first))
        total += float(value) * len(idx)
    return total / data.n


def evaluate(model, x, y, *, loss="mse", batch_size=256, lengths=None, mask=None,
             batch_first=None):
    """Mean loss of ``model`` on ``(x, y)`` in evaluation mode (no dropout, nothing saved).

    Parameters are those of :func:`fit`. The loss is the mean of the batch losses weighted by
    the number of sequences in each batch (exact for unmasked losses). The model is left in
    the mode it had.

    Returns
    -------
    float
    """
    backend, dtype, model_batch_first = _model_info(model)
    loss_fn, loss_name = _resolve_loss(loss)
    batch_size = _check_int(batch_size, "batch_size", 1)
    batch_first = model_batch_first if batch_first is None else batch_first
    data = _Data(x, y, lengths, mask, dtype=dtype, batch_first=batch_first,
                 names=("x", "y", "lengths", "mask"))
    was_training = getattr(model, "training", True)
    try:
        return _evaluate(model, data, loss_fn, batch_size, backend, batch_first, loss_name)
    finally:
        model.train(bool(was_training))


def predict(model, x, *, batch_size=256, batch_first=None):
    """The model's output on ``x`` in evaluation mode, as a NumPy array.

    Parameters
    ----------
    model : recurrent layer or Sequential
    x : array
        (T, N, features), or (N, T, features) for a ``batch_first`` model; the model's dtype.
    batch_size : int, default 256
        Sequences per forward call.
    batch_first : bool, optional
        Layout of ``x``; default: the model's.

    Returns
    -------
    numpy.ndarray
        The outputs of all batches joined along the sample axis: axis 0 for per-sequence
        outputs (``(N, ...)``), the sample axis of ``x`` for per-step outputs.
    """
    backend, dtype, model_batch_first = _model_info(model)
    batch_size = _check_int(batch_size, "batch_size", 1)
    batch_first = model_batch_first if batch_first is None else batch_first
    if not _is_array(x):
        raise TypeError(f"x: expected an array, got {type(x).__name__}")
    if x.dtype != dtype:
        raise TypeError(f"x: expected dtype {dtype.name} (the model's dtype), got {x.dtype}")
    if x.ndim != 3:
        layout = "(N, T, features)" if batch_first else "(T, N, features)"
        raise ValueError(f"x: expected 3 dimensions {layout}, got shape {tuple(x.shape)}")
    axis = 0 if batch_first else 1
    n = x.shape[axis]
    was_training = getattr(model, "training", True)
    outs = []
    try:
        model.eval()
        for start in range(0, n, batch_size):
            sl = (slice(None),) * axis + (slice(start, start + batch_size),)
            xb = backend.asarray(x[sl]) if backend is not None else x[sl]
            out = model.forward(xb)
            if isinstance(out, tuple):
                out = out[0]
            outs.append(backend.to_numpy(out) if backend is not None else np.asarray(out))
    finally:
        model.train(bool(was_training))
    per_step = outs[0].ndim == x.ndim and outs[0].shape[1 - axis] == x.shape[1 - axis]
    return np.concatenate(outs, axis=axis if per_step else 0)
