"""Recurrent layers with PyTorch's interface and weights: :class:`RNN`, :class:`LSTM`, :class:`GRU`.

A layer holds its parameters under PyTorch's names and shapes, runs the kernels of its
backend layer by layer and direction by direction, keeps what backward needs when in
training mode, and accumulates parameter gradients into ``grads`` on :meth:`backward`.
"""

import math
import numbers
import warnings

import numpy as np

from .backend import get_backend

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


class _RNNBase:
    """Shared machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU`."""

    def __init__(
        self,
        mode,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        *,
        dtype=np.float32,
        backend="cpu",
        seed=None,
    ):
        self.mode = mode
        self.input_size = _check_positive_int(input_size, "input_size")
        self.hidden_size = _check_positive_int(hidden_size, "hidden_size")
        self.num_layers = _check_positive_int(num_layers, "num_layers")
        self.bias = _check_bool(bias, "bias")
        self.batch_first = _check_bool(batch_first, "batch_first")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout: expected a number, got {type(dropout).__name__}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout}")
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout: applies between stacked layers only, so it does nothing with "
                f"num_layers=1 (got dropout={self.dropout})",
                UserWarning,
                stacklevel=3,
            )
        self.bidirectional = _check_bool(bidirectional, "bidirectional")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
        if self.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        self.backend = get_backend(backend)
        self.num_directions = 2 if self.bidirectional else 1
        self.training = True
        self._saved = None  # what backward needs from the last training-mode forward

        xp = self.backend.xp
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.hidden_size)
        self.params = {}
        for name, shape in self._param_shapes():
            values = rng.uniform(-bound, bound, size=shape).astype(self.dtype)
            self.params[name] = self.backend.asarray(values)
        self.grads = {name: xp.zeros_like(p) for name, p in self.params.items()}
        self.dropout_rng = rng  # draws the dropout masks, after the initialisation
        gate_units = _GATES[mode] * self.hidden_size
        # A layer without bias runs the same kernels with zero biases; their gradients are
        # accumulated into a scratch array that is never reported.
        self._zero_bias = xp.zeros(gate_units, dtype=self.dtype)
        self._bias_grad_sink = xp.zeros(gate_units, dtype=self.dtype)

    # ------------------------------------------------------------------ parameters

    def _suffix(self, layer, direction):
        return f"_l{layer}" + ("_reverse" if direction == 1 else "")

    def _param_shapes(self):
        """(name, shape) of every parameter, in PyTorch's order."""
        gate_units = _GATES[self.mode] * self.hidden_size
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.hidden_size * self.num_directions
            for direction in range(self.num_directions):
                s = self._suffix(layer, direction)
                yield "weight_ih" + s, (gate_units, layer_input)
                yield "weight_hh" + s, (gate_units, self.hidden_size)
                if self.bias:
                    yield "bias_ih" + s, (gate_units,)
                    yield "bias_hh" + s, (gate_units,)

    def _weights(self, layer, direction):
        """(w_ih, w_hh, b_ih, b_hh) and the matching gradient arrays of one layer and direction."""
        s = self._suffix(layer, direction)
        if self.bias:
            names = ("weight_ih" + s, "weight_hh" + s, "bias_ih" + s, "bias_hh" + s)
            return [self.params[n] for n in names], [self.grads[n] for n in names]
        names = ("weight_ih" + s, "weight_hh" + s)
        weights = [self.params[n] for n in names] + [self._zero_bias, self._zero_bias]
        grads = [self.grads[n] for n in names] + [self._bias_grad_sink, self._bias_grad_sink]
        return weights, grads

    def zero_grad(self):
        """Set every gradient in ``grads`` to zero (in place)."""
        for g in self.grads.values():
            g[...] = 0

    def train(self, mode=True):
        """Switch training mode on (``forward`` keeps what ``backward`` needs) or off."""
        self.training = _check_bool(mode, "mode")
        if not self.training:
            self._saved = None
        return self

    def eval(self):
        """Switch to evaluation mode (``forward`` keeps nothing for backward)."""
        return self.train(False)

    def state_dict(self):
        """A dict of NumPy copies of the parameters, with PyTorch's names and shapes."""
        return {name: self.backend.to_numpy(p) for name, p in self.params.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in place from a dict name -> array (e.g. a converted torch ``state_dict``).

        Values are cast to the layer's dtype. Every name must be present with the right shape.

        Raises
        ------
        KeyError
            When names are missing or unexpected.
        ValueError
            When a shape differs.
        """
        missing = [n for n in self.params if n not in state_dict]
        unexpected = [n for n in state_dict if n not in self.params]
        if missing or unexpected:
            raise KeyError(
                f"state_dict: missing keys {missing}, unexpected keys {unexpected} "
                f"for {self!r}"
            )
        values = {}
        for name, p in self.params.items():
            v = np.asarray(state_dict[name])
            if v.shape != p.shape:
                raise ValueError(
                    f"state_dict[{name!r}]: expected shape {p.shape}, got {v.shape}"
                )
            values[name] = v
        for name, v in values.items():  # all checked first: a failed load changes nothing
            self.params[name][...] = self.backend.xp.asarray(v, dtype=self.dtype)

    def __repr__(self):
        extra = "".join(
            f", {k}={getattr(self, k)}"
            for k in ("num_layers", "bias", "batch_first", "dropout", "bidirectional")
            if getattr(self, k) != {"num_layers": 1, "bias": True}.get(k, False)
        )
        return (
            f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra}, "
            f"dtype={self.dtype.name}, backend={self.backend.name!r})"
        )

    # ------------------------------------------------------------------ input checks

    def _check_array(self, value, name):
        xp = self.backend.xp
        if not isinstance(value, (np.ndarray, xp.ndarray)):
            raise TypeError(f"{name}: expected an array, got {type(value).__name__}")
        if value.dtype != self.dtype:
            raise TypeError(
                f"{name}: expected dtype {self.dtype.name} (the layer's dtype), "
                f"got {value.dtype}"
            )
        return value

    def _check_shape(self, value, name, expected):
        if tuple(value.shape) != tuple(expected):
            raise ValueError(f"{name}: expected shape {tuple(expected)}, got {tuple(value.shape)}")

    def _state_shape(self, batch, batched):
        n = self.num_layers * self.num_directions
        return (n, batch, self.hidden_size) if batched else (n, self.hidden_size)

    def _check_input(self, x):
        """Validate ``x``; return it as a (T, B, I) array, and whether it was batched."""
        x = self._check_array(x, "x")
        if x.ndim not in (2, 3):
            raise ValueError(
                f"x: expected 3 dimensions ({'B, T' if self.batch_first else 'T, B'}, "
                f"input_size) or 2 (T, input_size), got shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"x: expected input_size {self.input_size} in the last dimension, "
                f"got shape {tuple(x.shape)}"
            )
        if 0 in x.shape[:-1]:
            raise ValueError(f"x: expected a non-empty sequence and batch, got shape {tuple(x.shape)}")
        batched = x.ndim == 3
        if not batched:
            x = x[:, None, :]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        return x, batched

    def _check_states(self, states, names, batch, batched):
        """Validate initial states or final-state gradients; None stands for zeros."""
        xp = self.backend.xp
        shape = self._state_shape(batch, batched)
        checked = []
        for value, name in zip(states, names):
            if value is None:
                checked.append(xp.zeros(self._state_shape(batch, True), dtype=self.dtype))
                continue
            value = self._check_array(value, name)
            self._check_shape(value, name, shape)
            value = value if batched else value[:, None, :]
            # A private copy: backward must see the state as it was, whatever the caller does.
            checked.append(self.backend.xp.array(value, order="C", copy=True))
        return checked

    def _unpack_state(self, hx, name):
        """Split the user's state argument into a tuple with one entry per state."""
        if self.mode != "LSTM":
            return (hx,)
        if hx is None:
            return (None, None)
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            got = type(hx).__name__
            if isinstance(hx, (tuple, list)):
                got += f" of length {len(hx)}"
            raise TypeError(f"{name}: expected a tuple (h, c) for LSTM, got {got}")
        return tuple(hx)

    def _pack_state(self, states, batched):
        if not batched:
            states = [s[:, 0, :] for s in states]
        return tuple(states) if self.mode == "LSTM" else states[0]

    def _to_user_layout(self, seq, batched):
        """(T, B, F) -> the layout the user passed in."""
        if not batched:
            return seq[:, 0, :]
        if self.batch_first:
            return self.backend.xp.ascontiguousarray(seq.transpose(1, 0, 2))
        return seq

    # ------------------------------------------------------------------ forward

    def forward(self, x, hx=None):
        """Run the layer over a sequence.

        Parameters
        ----------
        x : array
            (T, B, input_size), or (B, T, input_size) when ``batch_first``, or unbatched
            (T, input_size); the layer's dtype.
        hx : array or tuple of arrays, optional
            Initial state(s), each (num_layers * num_directions, B, hidden_size) (or without
            the B axis for unbatched input); LSTM takes ``(h0, c0)``. None means zeros.

        Returns
        -------
        y : array
            (T, B, num_directions * hidden_size) in the input's layout: the last layer's
            hidden state at every step.
        state : array or tuple of arrays
            Final state(s) ``h_n`` (and ``c_n`` for LSTM), shaped like ``hx``.
        """
        x, batched = self._check_input(x)
        T, B, _ = x.shape
        names = ("hx[0] (h0)", "hx[1] (c0)") if self.mode == "LSTM" else ("hx",)
        initial = self._check_states(self._unpack_state(hx, "hx"), names, B, batched)
        xp = self.backend.xp
        H, D = self.hidden_size, self.num_directions
        # A private copy: backward must see the input as it was, whatever the caller does next.
        layer_input = xp.array(x, dtype=self.dtype, order="C", copy=True)
        finals = [xp.empty((self.num_layers * D, B, H), dtype=self.dtype) for _ in initial]
        lengths = xp.full(B, T, dtype=np.int64)  # every sequence runs the full T steps
        saved = []
        masks = []  # masks[k] scales the output of layer k (training mode, dropout > 0)
        for layer in range(self.num_layers):
            layer_output = xp.empty((T, B, D * H), dtype=self.dtype)
            for direction in range(D):
                k = layer * D + direction
                weights, _ = self._weights(layer, direction)
                y, final, cache = self._run_forward(
                    layer_input, weights, [s[k] for s in initial], direction == 1, lengths
                )
                layer_output[:, :, direction * H : (direction + 1) * H] = y
                for dst, src in zip(finals, final):
                    dst[k] = src
                saved.append((layer_input, y, cache, [s[k] for s in initial]))
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                mask = self._dropout_mask(layer_output.shape)
                masks.append(mask)
                layer_output = layer_output * mask
            layer_input = layer_output
        self._saved = (saved, masks, lengths, batched, B) if self.training else None
        return self._to_user_layout(layer_input, batched), self._pack_state(finals, batched)

    __call__ = forward

    def _dropout_mask(self, shape):
        """Inverted-dropout mask: 0 with probability ``dropout``, else 1 / (1 - dropout)."""
        keep = self.dropout_rng.random(shape) >= self.dropout
        scale = 0.0 if self.dropout == 1 else 1.0 / (1.0 - self.dropout)
        return self.backend.asarray(keep * scale, dtype=self.dtype)

    def _run_forward(self, x, weights, initial, reverse, lengths):
        """One layer, one direction: returns y (T, B, H), final states, saved arrays."""
        xp, K = self.backend.xp, self.backend.kernels
        T, B, _ = x.shape
        H = self.hidden_size
        G = _GATES[self.mode]
        y = xp.empty((T, B, H), dtype=self.dtype)
        h_n = xp.empty((B, H), dtype=self.dtype)
        if self.mode == "LSTM":
            c = xp.empty((T, B, H), dtype=self.dtype)
            gates = xp.empty((T, B, G * H), dtype=self.dtype)
            c_n = xp.empty((B, H), dtype=self.dtype)
            K.lstm_forward(
                x, *weights, initial[0], initial[1], reverse, lengths, y, c, gates, h_n, c_n
            )
            return y, (h_n, c_n), (c, gates)
        if self.mode == "GRU":
            gates = xp.empty((T, B, G * H), dtype=self.dtype)
            h_n_proj = xp.empty((T, B, H), dtype=self.dtype)
            K.gru_forward(x, *weights, initial[0], reverse, lengths, y, gates, h_n_proj, h_n)
            return y, (h_n,), (gates, h_n_proj)
        K.rnn_forward(
            x, *weights, initial[0], reverse, lengths, self.mode == "RNN_RELU", y, h_n
        )
        return y, (h_n,), ()

    # ------------------------------------------------------------------ backward

    def backward(self, dy, dstate=None):
        """Backpropagate through the most recent training-mode :meth:`forward`.

        Parameter gradients are accumulated (``+=``) into ``grads``.

        Parameters
        ----------
        dy : array
            Gradient of the loss w.r.t. ``y``, shaped like ``y``.
        dstate : array or tuple of arrays, optional
            Gradient w.r.t. the final state(s), shaped like ``h_n`` (LSTM: ``(dh_n, dc_n)``,
            either may be None). None means zeros.

        Returns
        -------
        dx : array
            Gradient w.r.t. ``x``, shaped like ``x``.
        dstate0 : array or tuple of arrays
            Gradient w.r.t. the initial state(s), shaped like ``h_n`` (and ``c_n``).
        """
        if self._saved is None:
            raise RuntimeError(
                "backward() needs a forward() in training mode first "
                f"(training={self.training}; call train() and run forward again)"
            )
        saved, masks, lengths, batched, B = self._saved
        xp = self.backend.xp
        H, D = self.hidden_size, self.num_directions
        T = saved[0][0].shape[0]
        dy = self._check_array(dy, "dy")
        if batched:
            expected = (B, T, D * H) if self.batch_first else (T, B, D * H)
        else:
            expected = (T, D * H)
        self._check_shape(dy, "dy", expected)
        if not batched:
            dy = dy[:, None, :]
        elif self.batch_first:
            dy = dy.transpose(1, 0, 2)
        dy = self.backend.asarray(dy)
        names = ("dstate[0] (dh_n)", "dstate[1] (dc_n)") if self.mode == "LSTM" else ("dstate",)
        dfinal = self._check_states(self._unpack_state(dstate, "dstate"), names, B, batched)
        dinitial = [xp.empty((self.num_layers * D, B, H), dtype=self.dtype) for _ in dfinal]
        d_output = dy
        for layer in reversed(range(self.num_layers)):
            d_input = None
            for direction in range(D):
                k = layer * D + direction
                x, y, cache, initial = saved[k]
                weights, grads = self._weights(layer, direction)
                dy_dir = xp.ascontiguousarray(d_output[:, :, direction * H : (direction + 1) * H])
                dx, dstart = self._run_backward(
                    x, weights, grads, initial, direction == 1, lengths, y, cache, dy_dir,
                    [d[k] for d in dfinal],
                )
                d_input = dx if d_input is None else d_input + dx
                for dst, src in zip(dinitial, dstart):
                    dst[k] = src
            d_output = d_input * masks[layer - 1] if masks and layer > 0 else d_input
        return self._to_user_layout(d_output, batched), self._pack_state(dinitial, batched)

    def _run_backward(self, x, weights, grads, initial, reverse, lengths, y, cache, dy, dfinal):
        """One layer, one direction: returns dx (T, B, in) and the initial-state gradients."""
        xp, K = self.backend.xp, self.backend.kernels
        B, H = initial[0].shape
        dx = xp.empty(x.shape, dtype=self.dtype)
        dh0 = xp.empty((B, H), dtype=self.dtype)
        w_ih, w_hh = weights[0], weights[1]
        if self.mode == "LSTM":
            c, gates = cache
            dc0 = xp.empty((B, H), dtype=self.dtype)
            K.lstm_backward(
                x, w_ih, w_hh, initial[0], initial[1], reverse, lengths, y, c, gates, dy,
                dfinal[0], dfinal[1], dx, dh0, dc0, *grads,
            )
            return dx, (dh0, dc0)
        if self.mode == "GRU":
            gates, h_n_proj = cache
            K.gru_backward(
                x, w_ih, w_hh, initial[0], reverse, lengths, y, gates, h_n_proj, dy, dfinal[0],
                dx, dh0, *grads,
            )
            return dx, (dh0,)
        K.rnn_backward(
            x, w_ih, w_hh, initial[0], reverse, lengths, self.mode == "RNN_RELU", y, dy,
            dfinal[0],
            dx, dh0, *grads,
        )
        return dx, (dh0,)


_COMMON_DOC = """
    Parameters
    ----------
    input_size : int
        Features per time step of the input ``x``.
    hidden_size : int
        Features of the hidden state ``H``.
    num_layers : int, default 1
        Stacked recurrent layers; layer k > 0 takes the previous layer's output.
    bias : bool, default True
        Use the bias vectors ``b_ih`` and ``b_hh``.
    batch_first : bool, default False
        Input and output are (B, T, F) instead of (T, B, F). States are always
        (num_layers * num_directions, B, H).
    dropout : float, default 0.0
        Probability of zeroing each element of the output of every layer except the last,
        in training mode only; the kept elements are scaled by 1/(1 - dropout). Masks are
        drawn from ``dropout_rng``.
    bidirectional : bool, default False
        Run a second direction over the reversed sequence; outputs are concatenated
        (forward first) to (T, B, 2 * H).
    dtype : {numpy.float32, numpy.float64}, keyword-only
        Dtype of parameters, inputs and outputs.
    backend : {'cpu', 'cuda', 'auto'}, keyword-only, default 'cpu'
        Where the kernels run (see :mod:`numbarnn.backend`).
    seed : int, optional, keyword-only
        Seed for the initialisation U(-1/sqrt(H), 1/sqrt(H)) of every parameter.

    Attributes
    ----------
    params : dict of str -> array
        Parameters with PyTorch's names and shapes: ``weight_ih_l{k}`` (G*H, in),
        ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (G*H,), with the
        suffix ``_reverse`` for the second direction. Update them in place.
    grads : dict of str -> array
        Gradients, same names and shapes, accumulated by :meth:`backward`.
    dropout_rng : numpy.random.Generator
        Source of the dropout masks, seeded by ``seed`` (continues after the initialisation).
    training : bool
        Whether ``forward`` keeps what ``backward`` needs.
"""


class RNN(_RNNBase):
    """Elman RNN: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, as ``torch.nn.RNN``.

    Extra parameter: ``nonlinearity`` {'tanh', 'relu'}, default 'tanh'. G = 1.

    Examples
    --------
    >>> m = RNN(8, 16, seed=0)
    >>> y, h_n = m(x)                 # x (T, B, 8): y (T, B, 16), h_n (1, B, 16)
    >>> dx, dh0 = m.backward(dy, dh_n)
    """

    __doc__ += _COMMON_DOC

    def __init__(
        self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
        batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32,
        backend="cpu", seed=None,
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(
            "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU",
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            dtype=dtype, backend=backend, seed=seed,
        )


class LSTM(_RNNBase):
    """Long short-term memory, as ``torch.nn.LSTM`` (gate order i, f, g, o; G = 4).

    States are pairs ``(h, c)``.

    Examples
    --------
    >>> m = LSTM(8, 32, num_layers=2, bidirectional=True, seed=0)
    >>> y, (h_n, c_n) = m(x)          # x (T, B, 8): y (T, B, 64), h_n and c_n (4, B, 32)
    >>> dx, (dh0, dc0) = m.backward(dy, (dh_n, dc_n))
    """

    __doc__ += _COMMON_DOC

    def __init__(
        self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
        dropout=0.0, bidirectional=False, *, dtype=np.float32, backend="cpu", seed=None,
    ):
        super().__init__(
            "LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            dtype=dtype, backend=backend, seed=seed,
        )


class GRU(_RNNBase):
    """Gated recurrent unit, as ``torch.nn.GRU`` (gate order r, z, n; G = 3).

    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h = (1 - z) * n + z * h_prev``.

    Examples
    --------
    >>> g = GRU(8, 32, seed=0)
    >>> y, h_n = g(x, h0)
    >>> dx, dh0 = g.backward(dy, dh_n)
    """

    __doc__ += _COMMON_DOC

    def __init__(
        self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
        dropout=0.0, bidirectional=False, *, dtype=np.float32, backend="cpu", seed=None,
    ):
        super().__init__(
            "GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            dtype=dtype, backend=backend, seed=seed,
        )
