"""Optimizers, gradient clipping and learning-rate schedules with ``torch.optim``'s rules.

:class:`SGD`, :class:`Adam`, :class:`AdamW` and :class:`RMSprop` apply the update rules of
their ``torch.optim`` namesakes (same defaults, same first-step and bias-correction
details, same hyper-parameter checks) to a model's ``params``, reading its ``grads``:

>>> model = numbarnn.LSTM(8, 32, seed=0)
>>> opt = Adam(model, lr=1e-3)
>>> y, _ = model(x); loss, dy = mse_loss(y, target); model.backward(dy)
>>> clip_grad_norm(model, max_norm=1.0)
>>> opt.step(); opt.zero_grad()

A model is anything with ``params`` and ``grads`` dicts that map the same names to arrays of
the same shapes and dtypes (a layer, a container, or ``params=``/``grads=`` dicts given
directly). Parameters are updated **in place**: the arrays in ``params`` stay the ones the
model's kernels read, and no dict entry is ever rebound. Gradients are only read
(:meth:`Optimizer.zero_grad` and :func:`clip_grad_norm` write them, in place).

One parameter group: the optimizer's hyper-parameters (``lr``, ...) are attributes, and
:class:`StepLR` and :class:`CosineAnnealingLR` change ``lr``.

State dicts
-----------
``state_dict()`` returns a flat dict of Python scalars and NumPy arrays, savable as it is
with ``numpy.savez`` or as safetensors (scalars as 0-d arrays); ``load_state_dict`` takes
such a dict back, scalars as Python numbers or 0-d arrays. For an optimizer::

    {"step": int,                          # optimizer steps taken
     "lr": float, <hyper-parameters>,      # as the attributes (bools for the flags)
     "<buffer>.<param name>": ndarray}     # per-parameter state, shaped like the parameter

with the hyper-parameters and buffers of each class:

============  ==========================================  ==================================
class         hyper-parameters                            buffers
============  ==========================================  ==================================
SGD           lr, momentum, dampening, weight_decay,       momentum_buffer (momentum != 0)
              nesterov
Adam, AdamW   lr, beta1, beta2, eps, weight_decay,         exp_avg, exp_avg_sq,
              amsgrad                                      max_exp_avg_sq (amsgrad)
RMSprop       lr, alpha, eps, weight_decay, momentum,      square_avg, momentum_buffer
              centered                                     (momentum > 0), grad_avg (centered)
============  ==========================================  ==================================

The buffer name ends at the first ``.``; the rest is the parameter's name (which may contain
dots). Loading restores the hyper-parameters too, as ``torch.optim`` does. A scheduler's
state is ``{"last_epoch", "base_lr", "last_lr"}`` and its own hyper-parameters.

Arrays may be NumPy or CuPy arrays: everything goes through NumPy functions, which CuPy
arrays take over by NumPy's dispatch protocols; state dicts always hold NumPy arrays.
"""

import math
from collections.abc import Mapping
from numbers import Integral

import numpy as np

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------- helpers
def _to_float(value, name):
    """``value`` (a real number or a one-element array) as a float; TypeError otherwise."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or getattr(value, "dtype", None) == np.bool_:
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}") from None
    if math.isnan(result):
        raise ValueError(f"{name}: expected a number, got nan")
    return result


def _to_bool(value, name):
    """``value`` (a bool, or a 0-d array of a bool or of 0/1) as a bool; TypeError otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.ndarray) and value.shape == () and (
        value.dtype == np.bool_ or (value.dtype.kind in "iu" and int(value) in (0, 1))
    ):
        return bool(value)
    raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")


def _to_int(value, name):
    """``value`` (an int or a 0-d integer array) as an int; TypeError otherwise."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iu":
        return int(value)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    return int(value)


_CONVERT = {float: _to_float, bool: _to_bool, int: _to_int}


def _non_negative(value, name, what):
    if not value >= 0.0:
        raise ValueError(f"{name}: invalid {what} {value} (expected >= 0)")


def _to_numpy(a):
    """A NumPy copy of ``a`` (a CuPy array is copied from its device)."""
    return a.copy() if isinstance(a, np.ndarray) else a.get()


def _bind(model, params, grads):
    """Check and return ``(params, grads)`` name -> array dicts from a model or the two dicts."""
    if model is not None:
        if params is not None or grads is not None:
            raise TypeError("model: give a model or params= and grads=, not both")
        if not (hasattr(model, "params") and hasattr(model, "grads")):
            raise TypeError(
                f"model: expected an object with .params and .grads dicts, "
                f"got {type(model).__name__}"
            )
        params, grads = model.params, model.grads
    elif params is None or grads is None:
        raise TypeError("model: expected a model (with .params and .grads), or params= and grads=")
    for value, name in ((params, "params"), (grads, "grads")):
        if not isinstance(value, Mapping):
            raise TypeError(f"{name}: expected a dict name -> array, got {type(value).__name__}")
    if not params:
        raise ValueError("params: the optimizer got an empty parameter dict")
    missing = [n for n in params if n not in grads]
    unexpected = [n for n in grads if n not in params]
    if missing or unexpected:
        raise ValueError(
            f"grads: expected the names of params; missing {missing}, unexpected {unexpected}"
        )
    for name, p in params.items():
        g = grads[name]
        if not (hasattr(p, "dtype") and hasattr(p, "shape")) or p.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"params[{name!r}]: expected a float32 or float64 array")
        if not (hasattr(g, "dtype") and hasattr(g, "shape")):
            raise TypeError(f"grads[{name!r}]: expected an array, got {type(g).__name__}")
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(
                f"grads[{name!r}]: expected the parameter's shape {tuple(p.shape)}, "
                f"got {tuple(g.shape)}"
            )
        if g.dtype != p.dtype:
            raise TypeError(
                f"grads[{name!r}]: expected the parameter's dtype {p.dtype}, got {g.dtype}"
            )
    # Snapshots of the name -> array maps: the arrays themselves are shared with the model.
    return dict(params), {n: grads[n] for n in params}


def _lerp_(start, end, weight):
    """``start += weight * (end - start)`` in place, rounded the way ``torch.lerp_`` rounds."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        np.subtract(end, (end - start) * (1.0 - weight), out=start)


# --------------------------------------------------------------------------- optimizers
class Optimizer:
    """Shared machinery of the optimizers: binding, state, ``step``, state dicts.

    Subclasses define ``_hyper_kinds`` (hyper-parameter name -> float | bool),
    ``_check_hyper(values)``, ``_buffer_names(values)`` and ``_update(name, p, g)``.

    Attributes
    ----------
    params, grads : dict of str -> array
        The model's parameters (updated in place) and gradients (read).
    state : dict of str -> dict of str -> array
        Per-parameter buffers: ``state[buffer][param name]``, shaped like the parameter.
    step_count : int
        Steps taken.
    lr : float
        Learning rate (schedulers change it).
    """

    _hyper_kinds = {}

    def __init__(self, model, params, grads, hyper):
        self.params, self.grads = _bind(model, params, grads)
        self._set_hyper(self._convert_hyper(hyper))
        self.step_count = 0
        self.state = {
            buf: {n: np.zeros_like(p) for n, p in self.params.items()}
            for buf in self._buffer_names(self._hyper_values())
        }

    @property
    def lr(self):
        """Learning rate, >= 0."""
        return self._lr

    @lr.setter
    def lr(self, value):
        value = _to_float(value, "lr")
        _non_negative(value, "lr", "learning rate")
        self._lr = value

    def _convert_hyper(self, hyper):
        values = {k: _CONVERT[kind](hyper[k], k) for k, kind in self._hyper_kinds.items()}
        self._check_hyper(values)
        return values

    def _set_hyper(self, values):
        for k, v in values.items():
            setattr(self, k, v)

    def _hyper_values(self):
        return {k: getattr(self, k) for k in self._hyper_kinds}

    def step(self):
        """Update every parameter in place from its gradient (one optimizer step)."""
        for name, p in self.params.items():
            self._update(name, p, self.grads[name])
        self.step_count += 1

    def zero_grad(self):
        """Set every gradient to zero, in place."""
        for g in self.grads.values():
            g[...] = 0

    def state_dict(self):
        """The optimizer's state as a flat dict (layout in the module notes).

        Returns
        -------
        dict
            ``"step"`` (int), the hyper-parameters (floats and bools) and
            ``"<buffer>.<param name>"`` NumPy copies of the buffers.
        """
        out = {"step": self.step_count}
        out.update(self._hyper_values())
        for buf, arrays in self.state.items():
            for name, a in arrays.items():
                out[f"{buf}.{name}"] = _to_numpy(a)
        return out

    def load_state_dict(self, state_dict):
        """Restore step count, hyper-parameters and buffers from :meth:`state_dict`'s layout.

        Scalars may be Python numbers or 0-d arrays (as ``numpy.load`` returns them). Buffers
        are copied, cast to each parameter's dtype. Nothing changes when loading fails.

        Raises
        ------
        TypeError
            When ``state_dict`` is not a dict, or a value has the wrong kind.
        KeyError
            When keys are missing or unexpected (e.g. the state of another optimizer or of
            a model with other parameter names).
        ValueError
            When a hyper-parameter is invalid or a buffer's shape differs from its parameter's.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(state_dict).__name__}")
        scalars = ["step", *self._hyper_kinds]
        missing = [k for k in scalars if k not in state_dict]
        if missing:
            raise KeyError(f"state_dict: missing keys {missing} for {self!r}")
        step = _to_int(state_dict["step"], "step")
        if step < 0:
            raise ValueError(f"step: expected >= 0, got {step}")
        hyper = self._convert_hyper({k: state_dict[k] for k in self._hyper_kinds})
        buffers = self._buffer_names(hyper)
        expected = set(scalars) | {f"{b}.{n}" for b in buffers for n in self.params}
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise KeyError(
                f"state_dict: missing keys {missing}, unexpected keys {unexpected} for {self!r}"
            )
        state = {}
        for buf in buffers:
            state[buf] = {}
            for name, p in self.params.items():
                key = f"{buf}.{name}"
                v = state_dict[key]
                if not hasattr(v, "shape"):
                    raise TypeError(
                        f"state_dict[{key!r}]: expected an array, got {type(v).__name__}"
                    )
                if tuple(v.shape) != tuple(p.shape):
                    raise ValueError(
                        f"state_dict[{key!r}]: expected shape {tuple(p.shape)}, "
                        f"got {tuple(v.shape)}"
                    )
                if v.dtype.kind != "f":
                    raise TypeError(f"state_dict[{key!r}]: expected floats, got dtype {v.dtype}")
                state[buf][name] = np.array(v, dtype=p.dtype, like=p)
        self._set_hyper(hyper)
        self.step_count = step
        self.state = state

    def __repr__(self):
        hyper = ", ".join(f"{k}={v!r}" for k, v in self._hyper_values().items())
        return f"{type(self).__name__}({hyper}; {len(self.params)} parameters)"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

    As ``torch.optim.SGD``: ``d = g + weight_decay * p``; with momentum,
    ``buf = d`` on the first step and ``buf = momentum * buf + (1 - dampening) * d`` after,
    then ``d = d + momentum * buf`` (Nesterov) or ``d = buf``; ``p -= lr * d``.

    Parameters
    ----------
    model : object with ``params`` and ``grads`` dicts, optional
        The model to train (or give ``params=`` and ``grads=``).
    lr : float, default 1e-3
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
        L2 penalty added to the gradient.
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    params, grads : dict of str -> array, keyword-only, optional
        Name -> array dicts with the same names, shapes and dtypes, instead of ``model``.

    Raises
    ------
    ValueError
        For a negative ``lr``, ``momentum`` or ``weight_decay``, or Nesterov without
        momentum or with dampening; for empty or mismatched ``params``/``grads``.
    TypeError
        For a ``model`` without ``params``/``grads``, or hyper-parameters of the wrong kind.
    """

    _hyper_kinds = {"lr": float, "momentum": float, "dampening": float, "weight_decay": float,
                    "nesterov": bool}

    def __init__(self, model=None, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, params=None, grads=None):
        super().__init__(model, params, grads, dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov,
        ))

    @staticmethod
    def _check_hyper(h):
        _non_negative(h["lr"], "lr", "learning rate")
        _non_negative(h["momentum"], "momentum", "momentum")
        _non_negative(h["weight_decay"], "weight_decay", "weight decay")
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError(
                "nesterov: Nesterov momentum needs momentum > 0 and dampening == 0, got "
                f"momentum={h['momentum']}, dampening={h['dampening']}"
            )

    @staticmethod
    def _buffer_names(h):
        return ("momentum_buffer",) if h["momentum"] != 0 else ()

    def _update(self, name, p, g):
        d = g + self.weight_decay * p if self.weight_decay != 0 else g
        if self.momentum != 0:
            buf = self.state["momentum_buffer"][name]
            if self.step_count == 0:
                buf[...] = d
            else:
                buf *= self.momentum
                buf += (1.0 - self.dampening) * d
            d = d + self.momentum * buf if self.nesterov else buf
        p -= self.lr * d


class Adam(Optimizer):
    """Adam, and AMSGrad, as ``torch.optim.Adam``.

    With ``t`` the step number (from 1): ``g = g + weight_decay * p`` (L2; :class:`AdamW`
    decays the weights instead), ``m = lerp(m, g, 1 - beta1)``,
    ``v = beta2 * v + (1 - beta2) * g**2``, ``v_max = max(v_max, v)`` (AMSGrad), then
    ``p -= lr / (1 - beta1**t) * m / (sqrt(v or v_max) / sqrt(1 - beta2**t) + eps)``.

    Parameters
    ----------
    model : object with ``params`` and ``grads`` dicts, optional
        The model to train (or give ``params=`` and ``grads=``).
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment averages, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, after the bias correction.
    weight_decay : float, default 0
    amsgrad : bool, default False
    params, grads : dict of str -> array, keyword-only, optional
        Name -> array dicts with the same names, shapes and dtypes, instead of ``model``.

    Raises
    ------
    ValueError
        For a negative ``lr``, ``eps`` or ``weight_decay``, a beta outside [0, 1); for empty
        or mismatched ``params``/``grads``.
    TypeError
        For a ``model`` without ``params``/``grads``, ``betas`` not a pair, or
        hyper-parameters of the wrong kind.
    """

    _hyper_kinds = {"lr": float, "beta1": float, "beta2": float, "eps": float,
                    "weight_decay": float, "amsgrad": bool}
    _decoupled_weight_decay = False

    def __init__(self, model=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, params=None, grads=None):
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        super().__init__(model, params, grads, dict(
            lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay,
            amsgrad=amsgrad,
        ))

    @property
    def betas(self):
        """``(beta1, beta2)``."""
        return (self.beta1, self.beta2)

    @staticmethod
    def _check_hyper(h):
        _non_negative(h["lr"], "lr", "learning rate")
        _non_negative(h["eps"], "eps", "epsilon")
        for k in ("beta1", "beta2"):
            if not 0.0 <= h[k] < 1.0:
                raise ValueError(f"betas: invalid {k} {h[k]} (expected 0 <= {k} < 1)")
        _non_negative(h["weight_decay"], "weight_decay", "weight decay")

    @staticmethod
    def _buffer_names(h):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if h["amsgrad"] else ())

    def _update(self, name, p, g):
        t = self.step_count + 1
        if self.weight_decay != 0:
            if self._decoupled_weight_decay:
                p *= 1.0 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        m = self.state["exp_avg"][name]
        v = self.state["exp_avg_sq"][name]
        _lerp_(m, g, 1.0 - self.beta1)
        v *= self.beta2
        v += (1.0 - self.beta2) * g * g
        step_size = self.lr / (1.0 - self.beta1**t)
        bias_correction2_sqrt = (1.0 - self.beta2**t) ** 0.5
        if self.amsgrad:
            v_max = self.state["max_exp_avg_sq"][name]
            np.maximum(v_max, v, out=v_max)
            v = v_max
        denom = np.sqrt(v) / bias_correction2_sqrt + self.eps
        p -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    Before the Adam step, ``p *= 1 - lr * weight_decay``; the gradient is not changed.
    Parameters, state and errors as :class:`Adam`, with ``weight_decay`` defaulting to 1e-2.
    """

    _decoupled_weight_decay = True

    def __init__(self, model=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, params=None, grads=None):
        super().__init__(model, lr, betas, eps, weight_decay, amsgrad, params=params, grads=grads)


class RMSprop(Optimizer):
    """RMSprop, centered or not, with momentum, as ``torch.optim.RMSprop``.

    ``g = g + weight_decay * p``; ``s = alpha * s + (1 - alpha) * g**2``; centered:
    ``a = lerp(a, g, 1 - alpha)``, ``avg = sqrt(s - a**2) + eps``, else
    ``avg = sqrt(s) + eps``; with momentum ``buf = momentum * buf + g / avg`` and
    ``p -= lr * buf``, else ``p -= lr * g / avg``.

    Parameters
    ----------
    model : object with ``params`` and ``grads`` dicts, optional
        The model to train (or give ``params=`` and ``grads=``).
    lr : float, default 1e-2
    alpha : float, default 0.99
        Smoothing constant of the squared-gradient average.
    eps : float, default 1e-8
        Added to the denominator.
    weight_decay : float, default 0
    momentum : float, default 0
    centered : bool, default False
        Normalise by an estimate of the gradient's variance rather than its second moment.
    params, grads : dict of str -> array, keyword-only, optional
        Name -> array dicts with the same names, shapes and dtypes, instead of ``model``.

    Raises
    ------
    ValueError
        For a negative ``lr``, ``alpha``, ``eps``, ``momentum`` or ``weight_decay``; for empty
        or mismatched ``params``/``grads``.
    TypeError
        For a ``model`` without ``params``/``grads``, or hyper-parameters of the wrong kind.
    """

    _hyper_kinds = {"lr": float, "alpha": float, "eps": float, "weight_decay": float,
                    "momentum": float, "centered": bool}

    def __init__(self, model=None, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, *, params=None, grads=None):
        super().__init__(model, params, grads, dict(
            lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
            centered=centered,
        ))

    @staticmethod
    def _check_hyper(h):
        _non_negative(h["lr"], "lr", "learning rate")
        _non_negative(h["eps"], "eps", "epsilon")
        _non_negative(h["momentum"], "momentum", "momentum")
        _non_negative(h["weight_decay"], "weight_decay", "weight decay")
        _non_negative(h["alpha"], "alpha", "alpha")

    @staticmethod
    def _buffer_names(h):
        return (
            ("square_avg",)
            + (("momentum_buffer",) if h["momentum"] > 0 else ())
            + (("grad_avg",) if h["centered"] else ())
        )

    def _update(self, name, p, g):
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        s = self.state["square_avg"][name]
        s *= self.alpha
        s += (1.0 - self.alpha) * g * g
        if self.centered:
            a = self.state["grad_avg"][name]
            _lerp_(a, g, 1.0 - self.alpha)
            avg = np.sqrt(s - a * a)
        else:
            avg = np.sqrt(s)
        avg += self.eps
        if self.momentum > 0:
            buf = self.state["momentum_buffer"][name]
            buf *= self.momentum
            buf += g / avg
            p -= self.lr * buf
        else:
            p -= self.lr * (g / avg)


# --------------------------------------------------------------------------- clipping
def clip_grad_norm(model, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients in place so that their global norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the total norm is the ``norm_type``-norm of all
    gradients taken as one vector; when ``max_norm / (total + 1e-6) < 1`` every gradient is
    multiplied by that coefficient.

    Parameters
    ----------
    model : object with a ``grads`` dict, or a dict of str -> array
        The gradients to clip.
    max_norm : float
        Largest allowed norm, >= 0.
    norm_type : float, default 2.0
        The p of the p-norm, > 0; ``float('inf')`` (or ``'inf'``) for the largest magnitude.
    error_if_nonfinite : bool, default False
        Raise when the total norm is nan or infinite (otherwise the gradients are scaled
        by the resulting nan or 0, as torch does).

    Returns
    -------
    float
        The total norm before clipping.

    Raises
    ------
    TypeError
        For a ``model`` without ``grads``, or non-numeric arguments.
    ValueError
        For a negative ``max_norm`` or a ``norm_type`` <= 0.
    RuntimeError
        With ``error_if_nonfinite``, when the total norm is not finite.
    """
    grads = model if isinstance(model, Mapping) else getattr(model, "grads", None)
    if not isinstance(grads, Mapping):
        raise TypeError(
            f"model: expected an object with a .grads dict, or a dict of gradients, "
            f"got {type(model).__name__}"
        )
    max_norm = _to_float(max_norm, "max_norm")
    _non_negative(max_norm, "max_norm", "maximum norm")
    try:
        norm_type = float(norm_type)
    except (TypeError, ValueError):
        raise TypeError(f"norm_type: expected a number or 'inf', got {norm_type!r}") from None
    if not norm_type > 0:
        raise ValueError(f"norm_type: expected p > 0 or inf, got {norm_type}")
    error_if_nonfinite = _to_bool(error_if_nonfinite, "error_if_nonfinite")
    if not grads:
        return 0.0
    norms = [
        float(np.linalg.norm(g.reshape(-1), ord=norm_type)) if g.size else 0.0
        for g in grads.values()
    ]
    total = float(np.linalg.norm(np.array(norms), ord=norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm: the total norm of order {norm_type} of the gradients is "
            f"{total}, so it cannot be clipped"
        )
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also for a nan total: the gradients become nan, as in torch
        for g in grads.values():
            g *= coef
    return total


# --------------------------------------------------------------------------- schedules
class _LRScheduler:
    """Shared machinery: ``step`` after each epoch sets the optimizer's ``lr``.

    Subclasses define ``_hyper_kinds``, ``_check_hyper(values)`` and ``_next_lr(lr)``,
    the learning rate of epoch ``last_epoch`` from the previous one (torch's recursive form).
    """

    _hyper_kinds = {}

    def __init__(self, optimizer, hyper):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer: expected a numbarnn optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self._set_hyper(hyper)
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        self._last_lr = optimizer.lr

    def _set_hyper(self, hyper):
        values = {k: _CONVERT[kind](hyper[k], k) for k, kind in self._hyper_kinds.items()}
        self._check_hyper(values)
        for k, v in values.items():
            setattr(self, k, v)

    def step(self):
        """Advance one epoch and set the optimizer's ``lr`` for it."""
        self.last_epoch += 1
        self.optimizer.lr = self._next_lr(self.optimizer.lr)
        self._last_lr = self.optimizer.lr

    def get_last_lr(self):
        """The learning rate set by the last :meth:`step`, as a one-element list (as torch)."""
        return [self._last_lr]

    def state_dict(self):
        """``{"last_epoch": int, "base_lr": float, "last_lr": float}`` and the hyper-parameters.

        The optimizer's own ``lr`` is in the optimizer's state dict: save and load both.
        """
        out = {"last_epoch": self.last_epoch, "base_lr": self.base_lr, "last_lr": self._last_lr}
        out.update({k: getattr(self, k) for k in self._hyper_kinds})
        return out

    def load_state_dict(self, state_dict):
        """Restore the schedule from :meth:`state_dict` (scalars may be 0-d arrays).

        Raises
        ------
        TypeError
            When ``state_dict`` is not a dict or a value has the wrong kind.
        KeyError
            When keys are missing or unexpected.
        ValueError
            When a value is invalid.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(state_dict).__name__}")
        expected = {"last_epoch", "base_lr", "last_lr", *self._hyper_kinds}
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise KeyError(
                f"state_dict: missing keys {missing}, unexpected keys {unexpected} "
                f"for {type(self).__name__}"
            )
        last_epoch = _to_int(state_dict["last_epoch"], "last_epoch")
        if last_epoch < 0:
            raise ValueError(f"last_epoch: expected >= 0, got {last_epoch}")
        lrs = {}
        for k in ("base_lr", "last_lr"):
            lrs[k] = _to_float(state_dict[k], k)
            _non_negative(lrs[k], k, "learning rate")
        self._set_hyper({k: state_dict[k] for k in self._hyper_kinds})
        self.last_epoch = last_epoch
        self.base_lr = lrs["base_lr"]
        self._last_lr = lrs["last_lr"]


class StepLR(_LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs, as torch's StepLR.

    ``lr(epoch) = base_lr * gamma ** (epoch // step_size)`` (applied recursively, so a
    learning rate changed by hand between epochs carries on). Call :meth:`step` after each
    epoch.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        Epochs between decays, >= 1.
    gamma : float, default 0.1
        Decay factor, >= 0.

    Raises
    ------
    TypeError
        For a non-optimizer, a non-int ``step_size`` or a non-numeric ``gamma``.
    ValueError
        For ``step_size < 1`` or ``gamma < 0``.
    """

    _hyper_kinds = {"step_size": int, "gamma": float}

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer, dict(step_size=step_size, gamma=gamma))

    @staticmethod
    def _check_hyper(h):
        if h["step_size"] < 1:
            raise ValueError(f"step_size: expected >= 1, got {h['step_size']}")
        _non_negative(h["gamma"], "gamma", "decay factor")

    def _next_lr(self, lr):
        return lr * self.gamma if self.last_epoch % self.step_size == 0 else lr


class CosineAnnealingLR(_LRScheduler):
    """Cosine annealing from the initial learning rate to ``eta_min`` over ``T_max`` epochs.

    As torch's CosineAnnealingLR, whose recursive form follows
    ``lr(epoch) = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``
    (past ``T_max`` the learning rate rises again along the cosine). Call :meth:`step`
    after each epoch.

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int
        Epochs of a half period, >= 1.
    eta_min : float, default 0
        Smallest learning rate, >= 0.

    Raises
    ------
    TypeError
        For a non-optimizer, a non-int ``T_max`` or a non-numeric ``eta_min``.
    ValueError
        For ``T_max < 1`` or ``eta_min < 0``.
    """

    _hyper_kinds = {"T_max": int, "eta_min": float}

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer, dict(T_max=T_max, eta_min=eta_min))

    @staticmethod
    def _check_hyper(h):
        if h["T_max"] < 1:
            raise ValueError(f"T_max: expected >= 1, got {h['T_max']}")
        _non_negative(h["eta_min"], "eta_min", "minimum learning rate")

    def _next_lr(self, lr):
        epoch, t_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if (epoch - 1 - t_max) % (2 * t_max) == 0:
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        return (
            (1 + math.cos(math.pi * epoch / t_max))
            / (1 + math.cos(math.pi * (epoch - 1) / t_max))
            * (lr - eta_min)
            + eta_min
        )
