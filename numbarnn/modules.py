"""Modules around the recurrent layers: :class:`Linear`, :class:`LastStep`, :class:`Sequential`.

Every module has the interface of the recurrent layers in :mod:`numbarnn.layers`:
``forward`` (also ``__call__``) and ``backward``, ``params`` and ``grads`` (dicts of arrays
under PyTorch's names; ``backward`` accumulates into ``grads``), ``zero_grad``, ``train`` /
``eval``, ``state_dict`` / ``load_state_dict``, plus ``config()``: a JSON-serializable
description of the architecture from which :func:`from_config` rebuilds the module (this is
what :mod:`numbarnn.io` stores next to the weights).

>>> model = Sequential(LSTM(8, 32, num_layers=2, seed=0), LastStep(), Linear(32, 1, seed=1))
>>> y = model(x)                 # x (T, B, 8) -> y (B, 1)
>>> dx = model.backward(dy)      # dy (B, 1) -> dx (T, B, 8); grads accumulated
>>> sorted(model.params)[:2]
['0.bias_hh_l0', '0.bias_hh_l1']
"""

import math

import numpy as np

from .backend import get_backend
from .layers import (
    GRU, LSTM, RNN, Module, _check_bool, _check_dtype, _check_lengths, _check_positive_int,
    _RNNBase,
)


def _array_module(a):
    """NumPy for a NumPy array, else CuPy (the 'cuda' backend's arrays)."""
    if isinstance(a, np.ndarray):
        return np
    import cupy

    return cupy.get_array_module(a)


def _check_no_state(state, owner):
    if state is not None:
        raise ValueError(f"state: {owner} has no state, expected None, got {type(state).__name__}")


def _check_input_array(value, name, dtype=None):
    """``value`` must be an array (NumPy or CuPy), of ``dtype`` when given."""
    if not hasattr(value, "shape") or not hasattr(value, "dtype") or isinstance(value, np.generic):
        raise TypeError(f"{name}: expected an array, got {type(value).__name__}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype.name} (the module's dtype), got {value.dtype}"
        )
    return value


class Linear(Module):
    """Affine map over the last axis, as ``torch.nn.Linear``: ``y = x @ weight.T + bias``.

    Parameters
    ----------
    in_features : int
        Size of the last axis of the input.
    out_features : int
        Size of the last axis of the output.
    bias : bool, default True
        Add the learnable vector ``bias``.
    dtype : {numpy.float32, numpy.float64}, keyword-only
        Dtype of parameters, inputs and outputs.
    backend : {'cpu', 'cuda', 'auto'}, keyword-only, default 'cpu'
        Array module holding the parameters (see :mod:`numbarnn.backend`).
    seed : int, optional, keyword-only
        Seed of PyTorch's initialisation: ``weight`` and ``bias`` drawn from
        U(-1/sqrt(in_features), 1/sqrt(in_features)).

    Attributes
    ----------
    params : dict of str -> array
        ``weight`` (out_features, in_features) and, with ``bias``, ``bias`` (out_features,).
    grads : dict of str -> array
        Gradients, same names and shapes, accumulated by :meth:`backward`.
    training : bool
        Whether ``forward`` keeps what ``backward`` needs.

    Examples
    --------
    >>> head = Linear(32, 1, seed=0)
    >>> y = head(h)                   # h (..., 32) -> y (..., 1): per time step on (T, B, 32)
    >>> dh = head.backward(dy)        # dy (..., 1) -> dh (..., 32)
    """

    def __init__(
        self, in_features, out_features, bias=True, *, dtype=np.float32, backend="cpu", seed=None
    ):
        self.in_features = _check_positive_int(in_features, "in_features")
        self.out_features = _check_positive_int(out_features, "out_features")
        self.bias = _check_bool(bias, "bias")
        self.dtype = _check_dtype(dtype)
        self.backend = get_backend(backend)
        self.training = True
        self._saved = None
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        shapes = [("weight", (self.out_features, self.in_features))]
        if self.bias:
            shapes.append(("bias", (self.out_features,)))
        self.params = {
            name: self.backend.asarray(rng.uniform(-bound, bound, size=shape).astype(self.dtype))
            for name, shape in shapes
        }
        self.grads = {name: self.backend.xp.zeros_like(p) for name, p in self.params.items()}

    def forward(self, x):
        """Apply the map to every vector along the last axis.

        Parameters
        ----------
        x : array
            (..., in_features), the module's dtype; any number of leading axes.

        Returns
        -------
        y : array
            (..., out_features).
        """
        y = self._apply(x, "x")
        # A private copy: backward must see the input as it was, whatever the caller does next.
        self._saved = self.backend.xp.array(x, copy=True) if self.training else None
        return y

    def _apply(self, x, name):
        x = _check_input_array(x, name, self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{name}: expected in_features {self.in_features} in the last dimension, "
                f"got shape {tuple(x.shape)}"
            )
        y = x @ self.params["weight"].T
        if self.bias:
            y += self.params["bias"]
        return y

    def step(self, x_t, state=None):
        """One time step of a streaming model (see :meth:`Sequential.step`).

        Parameters
        ----------
        x_t : array
            (..., in_features).
        state : None
            The module has no state.

        Returns
        -------
        y_t : array
            (..., out_features), as :meth:`forward` gives; nothing is kept for backward.
        state : None
        """
        _check_no_state(state, "Linear")
        return self._apply(x_t, "x_t"), None

    def backward(self, dy):
        """Backpropagate through the most recent training-mode :meth:`forward`.

        Parameters
        ----------
        dy : array
            (..., out_features), gradient of the loss w.r.t. ``y``.

        Returns
        -------
        dx : array
            (..., in_features), gradient w.r.t. ``x``. ``grads["weight"]`` (out, in) and
            ``grads["bias"]`` (out,) are accumulated (``+=``).
        """
        x = self._check_saved()
        dy = _check_input_array(dy, "dy", self.dtype)
        expected = x.shape[:-1] + (self.out_features,)
        if tuple(dy.shape) != expected:
            raise ValueError(f"dy: expected shape {expected}, got {tuple(dy.shape)}")
        dy2 = dy.reshape(-1, self.out_features)
        self.grads["weight"] += dy2.T @ x.reshape(-1, self.in_features)
        if self.bias:
            self.grads["bias"] += dy2.sum(axis=0)
        return dy @ self.params["weight"]

    def config(self):
        """JSON-serializable architecture: ``{"class": "Linear", "args": {...}}``."""
        args = dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias)
        return {"class": "Linear", "args": dict(args, dtype=self.dtype.name)}

    def __repr__(self):
        return (
            f"Linear({self.in_features}, {self.out_features}, bias={self.bias}, "
            f"dtype={self.dtype.name}, backend={self.backend.name!r})"
        )


class LastStep(Module):
    """The last time step of a sequence, e.g. the output of a recurrent layer.

    Parameters
    ----------
    batch_first : bool, default False
        Input is (B, T, F) instead of (T, B, F).

    Notes
    -----
    It has no parameters: ``params`` and ``grads`` are empty. With a bidirectional layer
    the reverse half of the last step has seen only that step; take both ends yourself if
    that matters.

    Examples
    --------
    >>> last = LastStep()
    >>> h = last(y)                   # y (T, B, F) -> h (B, F) = y[-1]
    >>> dy = last.backward(dh)        # dh (B, F) -> dy (T, B, F), zero except at t = T-1
    >>> h = last(y, lengths=[5, 2])   # h[b] = y[lengths[b] - 1, b]
    """

    _takes_lengths = True  # Sequential passes its ``lengths`` on

    def __init__(self, batch_first=False):
        self.batch_first = _check_bool(batch_first, "batch_first")
        self.params = {}
        self.grads = {}
        self.training = True
        self._saved = None

    def _time_axis(self, ndim):
        """The time axis of an input with ``ndim`` axes."""
        return 1 if ndim == 3 and self.batch_first else 0

    def _index(self, xp, ndim, lengths):
        """Index of each sequence's last valid step in an input with ``ndim`` axes."""
        if ndim == 2:
            return (int(lengths[0]) - 1,)
        last = xp.asarray(lengths - 1)
        batch = xp.arange(lengths.shape[0])
        return (batch, last) if self.batch_first else (last, batch)

    def forward(self, x, lengths=None):
        """Take the last time step, or each sequence's last valid step.

        Parameters
        ----------
        x : array
            (T, B, F), or (B, T, F) when ``batch_first``, or unbatched (T, F).
        lengths : array of int, optional
            (B,) length of each sequence, each in [1, T] (a single integer for unbatched
            input): take step ``lengths[b] - 1`` of sequence ``b``. None means T.

        Returns
        -------
        y : array
            (B, F), or (F,) for unbatched input; a copy.
        """
        x = _check_input_array(x, "x")
        if x.ndim not in (2, 3):
            raise ValueError(
                f"x: expected 3 dimensions ({'B, T' if self.batch_first else 'T, B'}, features) "
                f"or 2 (T, features), got shape {tuple(x.shape)}"
            )
        axis = self._time_axis(x.ndim)
        if x.shape[axis] == 0:
            raise ValueError(f"x: expected at least one time step, got shape {tuple(x.shape)}")
        if lengths is None:
            index = (slice(None),) * axis + (-1,)
        else:
            B = x.shape[1 - axis] if x.ndim == 3 else 1
            checked = _check_lengths(lengths, x.shape[axis], B, x.ndim == 3)
            index = self._index(_array_module(x), x.ndim, checked)
        self._saved = (tuple(x.shape), x.dtype, index) if self.training else None
        return x[index].copy()

    def backward(self, dy):
        """Scatter the gradient of the last step into a zero gradient of the whole sequence.

        Parameters
        ----------
        dy : array
            (B, F) or (F,): gradient w.r.t. the output of :meth:`forward`.

        Returns
        -------
        dx : array
            Shaped like the input of :meth:`forward`, zero except at the steps taken.
        """
        shape, dtype, index = self._check_saved()
        dy = _check_input_array(dy, "dy", dtype)
        axis = self._time_axis(len(shape))
        expected = shape[:axis] + shape[axis + 1 :]
        if tuple(dy.shape) != expected:
            raise ValueError(f"dy: expected shape {expected}, got {tuple(dy.shape)}")
        dx = np.zeros_like(dy, shape=shape)  # dispatches to CuPy for a CuPy dy
        dx[index] = dy
        return dx

    def step(self, x_t, state=None):
        """One time step of a streaming model (see :meth:`Sequential.step`).

        The last step of a one-step sequence is that step: ``x_t`` itself.

        Parameters
        ----------
        x_t : array
            (B, F) or (F,).
        state : None
            The module has no state.

        Returns
        -------
        y_t : array
            ``x_t`` (the same array).
        state : None
        """
        _check_no_state(state, "LastStep")
        return _check_input_array(x_t, "x_t"), None

    def state_dict(self):
        """An empty dict: the module has no parameters."""
        return {}

    def load_state_dict(self, state_dict):
        """Accept an empty dict (the module has no parameters); KeyError otherwise."""
        if state_dict:
            raise KeyError(f"state_dict: unexpected keys {list(state_dict)} for {self!r}")

    def config(self):
        """JSON-serializable architecture: ``{"class": "LastStep", "args": {...}}``."""
        return {"class": "LastStep", "args": {"batch_first": self.batch_first}}

    def __repr__(self):
        return f"LastStep(batch_first={self.batch_first})"


_MODULE_ATTRIBUTES = (
    "forward", "backward", "params", "grads", "zero_grad", "train", "state_dict", "load_state_dict",
)


class Sequential(Module):
    """Modules applied one after the other; their interfaces composed.

    Parameters
    ----------
    *layers
        Modules with ``forward``, ``backward``, ``params`` and ``grads``: the recurrent
        layers (:class:`~numbarnn.RNN`, :class:`~numbarnn.LSTM`, :class:`~numbarnn.GRU`),
        :class:`Linear`, :class:`LastStep`, or another :class:`Sequential`.

    Attributes
    ----------
    params, grads : dict of str -> array
        The layers' parameters and gradients under ``"{index}.{name}"`` (``"0.weight_ih_l0"``,
        ``"2.bias"``), the keys of ``torch.nn.Sequential``'s ``state_dict``. The arrays *are*
        the layers' arrays: in-place updates (an optimizer step) reach the layers.
    training : bool
        Whether the layers keep what ``backward`` needs.

    Notes
    -----
    A layer whose ``forward`` returns a tuple (a recurrent layer returns ``(y, state)``)
    passes only the first element on: recurrent layers start from a zero state and their
    final state is dropped. In :meth:`backward` such a layer receives only ``dy`` (no
    final-state gradient) and its initial-state gradient is dropped. To carry states
    across calls (truncated BPTT), call the recurrent layer directly.

    For streaming inference, :meth:`step` runs one time step through every layer and
    carries the recurrent layers' states, passed in and out or kept inside the layers in
    :attr:`stateful` mode.

    Examples
    --------
    >>> model = Sequential(GRU(8, 16, num_layers=2, seed=0), LastStep(), Linear(16, 3, seed=1))
    >>> logits = model(x)              # x (T, B, 8) -> (B, 3)
    >>> dx = model.backward(dlogits)   # (B, 3) -> (T, B, 8)
    >>> model.state_dict()["2.weight"].shape
    (3, 16)
    >>> logits = model(x, lengths=[8, 3])   # padded batch: each sequence's last valid step
    >>> model.stateful = True
    >>> logits_t, _ = model.step(x[0])      # (B, 8) -> (B, 3), the state kept in the GRU
    """

    _takes_lengths = True  # a Sequential inside a Sequential passes ``lengths`` on
    _steps = None  # step's plan, built on first use (see _step_plan)

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            for attr in _MODULE_ATTRIBUTES:
                if not hasattr(layer, attr):
                    raise TypeError(
                        f"layers[{i}]: expected a module with {'/'.join(_MODULE_ATTRIBUTES)}, "
                        f"got {type(layer).__name__} (no {attr!r})"
                    )
        if not layers:
            raise ValueError("layers: expected at least one layer")
        self.layers = tuple(layers)
        self.training = all(getattr(layer, "training", True) for layer in layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def _prefixed(self, attr):
        return {
            f"{i}.{name}": a
            for i, layer in enumerate(self.layers)
            for name, a in getattr(layer, attr).items()
        }

    @property
    def params(self):
        """``"{index}.{name}"`` -> the layer's parameter array (the same object)."""
        return self._prefixed("params")

    @property
    def grads(self):
        """``"{index}.{name}"`` -> the layer's gradient array (the same object)."""
        return self._prefixed("grads")

    def forward(self, x, lengths=None):
        """Run the layers in order.

        Parameters
        ----------
        x : array
            Input of the first layer.
        lengths : array of int, optional
            (B,) length of each sequence of a padded batch, passed on to the layers that
            take it (the recurrent layers, :class:`LastStep`, a nested ``Sequential``);
            other layers (:class:`Linear`) see the padded steps too, whose outputs the
            recurrent layers set to zero.

        Returns
        -------
        y : array
            Output of the last layer (for a recurrent last layer, only its ``y``).
        """
        for layer in self.layers:
            if lengths is not None and getattr(layer, "_takes_lengths", False):
                x = layer.forward(x, lengths=lengths)
            else:
                x = layer.forward(x)
            if isinstance(x, tuple):
                x = x[0]
        return x

    def step(self, x_t, state=None):
        """Run one time step through the layers: streaming inference.

        Each layer's ``step`` is called in order (nested ``Sequential`` flattened): a
        recurrent layer's :meth:`~numbarnn.LSTM.step`, ``Linear.step``, ``LastStep.step``
        (which passes the step on); nothing is kept for backward. Stepping a ``Sequential``
        over a sequence gives, at step ``t``, what :meth:`forward` gives on the sequence cut
        after step ``t`` (in ``eval()`` mode).

        Parameters
        ----------
        x_t : array
            One time step of the input, e.g. (B, input_size) or (input_size,).
        state : list, optional
            One entry per recurrent layer, in order (as
            :func:`numbarnn.training.stateful_forward` takes and returns it): each as the
            layer's ``step`` takes it, or None for zeros. None means all None, or in
            :attr:`stateful` mode the states kept in the layers.

        Returns
        -------
        y_t : array
            Output of the last layer for this step.
        state : list
            The new state of every recurrent layer.

        Raises
        ------
        TypeError
            When a layer has no ``step`` method.
        ValueError
            When ``state`` does not have one entry per recurrent layer, and from the
            layers' checks (e.g. a bidirectional recurrent layer).
        """
        steps, n_recurrent = self._step_plan()
        state = self._check_state_list(state, n_recurrent)
        new = []
        for layer_step, recurrent in steps:
            if recurrent:
                x_t, layer_state = layer_step(x_t, state[len(new)])
                new.append(layer_state)
            else:
                x_t = layer_step(x_t)[0]
        return x_t, new

    def _step_plan(self):
        """``((layer.step, is recurrent) for each flattened layer, number recurrent)``,
        cached: the layers of a Sequential never change."""
        plan = self._steps
        if plan is None:
            layers = list(self._leaves())
            for i, layer in enumerate(layers):
                if not hasattr(layer, "step"):
                    raise TypeError(f"step: layer {i} ({type(layer).__name__}) has no step method")
            recurrent = [isinstance(layer, _RNNBase) for layer in layers]
            plan = self._steps = (
                tuple(zip([layer.step for layer in layers], recurrent)), sum(recurrent)
            )
        return plan

    def _leaves(self):
        """The layers in order, with nested Sequentials flattened."""
        for layer in self.layers:
            if isinstance(layer, Sequential):
                yield from layer._leaves()
            else:
                yield layer

    def _recurrent_layers(self):
        return [layer for layer in self._leaves() if isinstance(layer, _RNNBase)]

    @staticmethod
    def _check_state_list(state, n):
        """``state``, checked to have ``n`` entries (None: all None)."""
        if state is None:
            return (None,) * n
        if not isinstance(state, (list, tuple)) or len(state) != n:
            got = type(state).__name__
            if isinstance(state, (list, tuple)):
                got += f" of length {len(state)}"
            raise ValueError(
                f"state: expected a list with one entry per recurrent layer ({n}), got {got}"
            )
        return state

    @property
    def stateful(self):
        """bool: whether :meth:`step` keeps the recurrent layers' states between calls.

        True when every recurrent layer is stateful; setting it sets it on every recurrent
        layer (and forgets their kept states). See :meth:`numbarnn.LSTM.step`.
        """
        return all(layer.stateful for layer in self._recurrent_layers())

    @stateful.setter
    def stateful(self, value):
        value = _check_bool(value, "stateful")
        for layer in self._recurrent_layers():
            layer.stateful = value

    def reset_state(self, state=None):
        """Set the states the next :meth:`step` starts from in stateful mode.

        Parameters
        ----------
        state : list, optional
            One entry per recurrent layer, as :meth:`step` (or
            :func:`numbarnn.training.stateful_forward`) returns it, passed to each layer's
            ``reset_state`` (None: zeros). None resets every layer to zeros.
        """
        layers = self._recurrent_layers()
        for layer, layer_state in zip(layers, self._check_state_list(state, len(layers))):
            layer.reset_state(layer_state)

    def backward(self, dy):
        """Backpropagate through the layers in reverse order, accumulating their gradients.

        Parameters
        ----------
        dy : array
            Gradient w.r.t. the output of :meth:`forward`.

        Returns
        -------
        dx : array
            Gradient w.r.t. the input of :meth:`forward`.
        """
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
            if isinstance(dy, tuple):
                dy = dy[0]
        return dy

    def zero_grad(self):
        """Zero every layer's gradients (in place)."""
        for layer in self.layers:
            layer.zero_grad()

    def train(self, mode=True):
        """Switch every layer to training mode (or, with ``mode=False``, evaluation mode)."""
        self.training = _check_bool(mode, "mode")
        for layer in self.layers:
            layer.train(self.training)
        return self

    def state_dict(self):
        """NumPy copies of every layer's parameters under ``"{index}.{name}"``."""
        return {
            f"{i}.{k}": v
            for i, layer in enumerate(self.layers)
            for k, v in layer.state_dict().items()
        }

    def load_state_dict(self, state_dict):
        """Copy parameters in place from a dict ``"{index}.{name}"`` -> array.

        Every name and shape is checked before any layer changes: a failed load changes nothing.

        Raises
        ------
        KeyError
            When names are missing or unexpected.
        ValueError
            When a shape differs.
        """
        self._check_state_dict(state_dict)
        for i, layer in enumerate(self.layers):
            prefix = f"{i}."
            layer.load_state_dict(
                {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            )

    def config(self):
        """JSON-serializable architecture: ``{"class": "Sequential", "layers": [...]}``."""
        return {"class": "Sequential", "layers": [get_config(layer) for layer in self.layers]}

    def __repr__(self):
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"


# ---------------------------------------------------------------------- architecture <-> JSON

_RECURRENT = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
_RECURRENT_ARGS = (
    "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
)
_ALLOWED_ARGS = {
    "RNN": set(_RECURRENT_ARGS) | {"nonlinearity", "dtype"},
    "LSTM": set(_RECURRENT_ARGS) | {"dtype"},
    "GRU": set(_RECURRENT_ARGS) | {"dtype"},
    "Linear": {"in_features", "out_features", "bias", "dtype"},
    "LastStep": {"batch_first"},
}


def get_config(module):
    """JSON-serializable description of ``module``'s architecture (no weights).

    Parameters
    ----------
    module : RNN, LSTM, GRU, Linear, LastStep or Sequential

    Returns
    -------
    dict
        ``{"class": name, "args": {constructor arguments, dtype as a string}}``; for
        :class:`Sequential`, ``{"class": "Sequential", "layers": [...]}``.

    Raises
    ------
    TypeError
        For any other kind of module (including subclasses, which cannot be rebuilt).
    """
    return _config(module, "module")


def _config(module, argument):
    """:func:`get_config`, naming ``argument`` in its error."""
    if type(module) in (Linear, LastStep, Sequential):
        return module.config()
    name = type(module).__name__
    if _RECURRENT.get(name) is not type(module):
        raise TypeError(
            f"{argument}: cannot describe a {name}; expected one of RNN, LSTM, GRU, Linear, "
            "LastStep, Sequential"
        )
    args = {k: getattr(module, k) for k in _RECURRENT_ARGS}
    if name == "RNN":
        args["nonlinearity"] = module.nonlinearity
    args["dtype"] = module.dtype.name
    return {"class": name, "args": args}


def from_config(config, *, backend="cpu"):
    """Build a fresh module (freshly initialised weights) from :func:`get_config`'s output.

    Only the classes listed in :func:`get_config` can be built; nothing else is looked up
    or executed.

    Parameters
    ----------
    config : dict
        As returned by :func:`get_config` (e.g. read back from JSON).
    backend : {'cpu', 'cuda', 'auto'}, keyword-only, default 'cpu'
        Backend of every layer built.

    Returns
    -------
    module

    Raises
    ------
    ValueError
        When ``config`` is malformed: an unknown class, unknown or invalid arguments.
    """
    return _build(config, backend, "config")


def _build(config, backend, where):
    if not isinstance(config, dict) or not isinstance(config.get("class"), str):
        raise ValueError(f"{where}: expected a dict with a 'class' name, got {config!r:.200}")
    name = config["class"]
    if name == "Sequential":
        layers = config.get("layers")
        if set(config) != {"class", "layers"} or not isinstance(layers, list):
            raise ValueError(
                f"{where}: Sequential expects exactly the keys 'class' and 'layers' (a list)"
            )
        built = [_build(c, backend, f"{where}.layers[{i}]") for i, c in enumerate(layers)]
        try:
            return Sequential(*built)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    if name not in _ALLOWED_ARGS:
        raise ValueError(
            f"{where}: unknown class {name!r:.50}; "
            f"expected one of {sorted(_ALLOWED_ARGS) + ['Sequential']}"
        )
    args = config.get("args")
    if set(config) != {"class", "args"} or not isinstance(args, dict):
        raise ValueError(f"{where}: {name} expects exactly the keys 'class' and 'args' (a dict)")
    unknown = sorted(set(args) - _ALLOWED_ARGS[name])
    if unknown:
        raise ValueError(f"{where}: unknown arguments {unknown} for {name}")
    if "dtype" in args and args["dtype"] not in ("float32", "float64"):
        raise ValueError(
            f"{where}: dtype: expected 'float32' or 'float64', got {args['dtype']!r:.50}"
        )
    cls = {"Linear": Linear, "LastStep": LastStep, **_RECURRENT}[name]
    if name != "LastStep":
        args = dict(args, backend=backend)
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {name}: {exc}") from None
