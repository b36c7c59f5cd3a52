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


def _check_lengths(lengths, T, B, batched):
    """Validate the ``lengths`` argument of a batch of ``B`` sequences of ``T`` steps.

    Returns
    -------
    (B,) int64 NumPy array
        A single integer is accepted for unbatched input (B = 1). A CuPy array is copied
        to the host.
    """
    if hasattr(lengths, "__cuda_array_interface__"):
        import cupy  # a device array: numbarnn's 'cuda' backend holds them in CuPy

        lengths = cupy.asnumpy(lengths)
    if isinstance(lengths, (bool, np.bool_)):  # np.asarray would make it a bool array anyway
        raise TypeError("lengths: expected integers, got a bool")
    try:
        checked = np.asarray(lengths)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"lengths: expected an array of integers, got {type(lengths).__name__}"
                        f" ({exc})") from None
    if checked.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected an integer dtype, got {checked.dtype}")
    if not batched and checked.ndim == 0:
        checked = checked.reshape(1)
    if checked.shape != (B,):
        expected = "a single integer (unbatched input)" if not batched else f"shape ({B},)"
        raise ValueError(
            f"lengths: expected {expected}, one length per sequence, got shape {checked.shape}"
        )
    low, high = int(checked.min()), int(checked.max())
    if low < 1 or high > T:
        raise ValueError(
            f"lengths: expected every length in [1, {T}] (T = {T} steps), got values from "
            f"{low} to {high}"
        )
    return checked.astype(np.int64)


def _check_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


class Module:
    """What every numbarnn layer and module shares.

    Calling a module runs its ``forward``; ``params`` and ``grads`` are dicts of arrays;
    ``forward`` in training mode keeps in ``_saved`` what ``backward`` needs.
    """

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

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
        """A dict of NumPy copies of the parameters, under the names of ``params``."""
        return {name: self.backend.to_numpy(p) for name, p in self.params.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in place from a dict name -> array (e.g. a converted torch ``state_dict``).

        Values are cast to the module's dtype. Every name must be present with the right
        shape; all are checked before anything changes, so a failed load changes nothing.

        Raises
        ------
        KeyError
            When names are missing or unexpected.
        ValueError
            When a shape differs.
        """
        self._check_state_dict(state_dict)
        for name, p in self.params.items():
            p[...] = self.backend.xp.asarray(state_dict[name], dtype=self.dtype)

    def _check_state_dict(self, state_dict):
        """Raise unless ``state_dict`` holds exactly the names of ``params``, shaped alike."""
        params = self.params
        missing = [n for n in params if n not in state_dict]
        unexpected = [n for n in state_dict if n not in params]
        if missing or unexpected:
            raise KeyError(
                f"state_dict: missing keys {missing}, unexpected keys {unexpected} for {self!r}"
            )
        for name, p in params.items():
            shape = tuple(np.shape(state_dict[name]))
            if shape != tuple(p.shape):
                raise ValueError(
                    f"state_dict[{name!r}]: expected shape {tuple(p.shape)}, got {shape}"
                )

    def _check_saved(self):
        """What the last training-mode ``forward`` kept; a clear error when there is none."""
        if self._saved is None:
            raise RuntimeError(
                "backward() needs a forward() in training mode first "
                f"(training={self.training}; call train() and run forward again)"
            )
        return self._saved


class _RNNBase(Module):
    """Shared machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU`."""

    _takes_lengths = True  # Sequential passes its ``lengths`` on

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
        self.dtype = _check_dtype(dtype)
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

    def _states_to_user_layout(self, states, batched):
        """(L*D, T, B, H) -> the time and batch axes in the layout the user passed in."""
        if not batched:
            return states[:, :, 0, :]
        if self.batch_first:
            return self.backend.xp.ascontiguousarray(states.transpose(0, 2, 1, 3))
        return states

    def _padding(self, lengths, T):
        """(T, B) bool array of this backend, True at the steps past each sequence's end;
        None when no sequence ends early. ``lengths`` is a checked NumPy array."""
        if lengths.min() == T:
            return None
        return self.backend.asarray(np.arange(T)[:, None] >= lengths[None, :])

    # ------------------------------------------------------------------ forward

    def forward(self, x, hx=None, lengths=None, return_all_states=False):
        """Run the layer over a sequence.

        Parameters
        ----------
        x : array
            (T, B, input_size), or (B, T, input_size) when ``batch_first``, or unbatched
            (T, input_size); the layer's dtype.
        hx : array or tuple of arrays, optional
            Initial state(s), each (num_layers * num_directions, B, hidden_size) (or without
            the B axis for unbatched input); LSTM takes ``(h0, c0)``. None means zeros.
        lengths : array of int, optional
            (B,) length of each sequence of a padded batch, each in [1, T], in any order
            (a single integer for unbatched input). Sequence ``b`` is read at steps
            ``t < lengths[b]`` only, as PyTorch's ``pack_padded_sequence`` path does: its
            outputs past its end are zero, its final state is the state at its end, and
            the reverse direction of a bidirectional layer starts at its end. ``backward``
            ignores ``dy`` past each end and gives zero ``dx`` there. None means every
            sequence has all T steps.
        return_all_states : bool, default False
            Also return the state of every step, layer and direction (which PyTorch's
            layers cannot return).

        Returns
        -------
        y : array
            (T, B, num_directions * hidden_size) in the input's layout: the last layer's
            hidden state at every step.
        state : array or tuple of arrays
            Final state(s) ``h_n`` (and ``c_n`` for LSTM), shaped like ``hx``.
        all_states : array or tuple of arrays
            Only with ``return_all_states``: the hidden state of every step, layer and
            direction, ``h_all`` (and the cell state ``c_all`` for LSTM, as a tuple
            ``(h_all, c_all)``), each (num_layers * num_directions, T, B, hidden_size) with
            the time and batch axes in the order of ``x`` ((L*D, B, T, H) when
            ``batch_first``, (L*D, T, H) unbatched). Entry ``layer * num_directions +
            direction`` is that layer and direction, as in ``h_n``; ``h_all[k, t]`` is the
            state right after step ``t`` was read (for the reverse direction, after steps
            T-1 down to t). Past the end of a sequence given by ``lengths`` the states are
            zero, like ``y``. They are the layers' states themselves: dropout (training mode)
            scales what the next layer reads, not these.
        """
        x, batched = self._check_input(x)
        T, B, _ = x.shape
        names = ("hx[0] (h0)", "hx[1] (c0)") if self.mode == "LSTM" else ("hx",)
        initial = self._check_states(self._unpack_state(hx, "hx"), names, B, batched)
        return_all_states = _check_bool(return_all_states, "return_all_states")
        # Drop what the last forward kept before allocating anew, so that its memory is
        # reused: fresh memory costs page faults (8 ms a call at T,B,H = 100,64,256).
        self._saved = None
        xp = self.backend.xp
        H, D = self.hidden_size, self.num_directions
        # In training mode a private copy: backward must see the input as it was, whatever
        # the caller does next.
        if self.training:
            layer_input = xp.array(x, dtype=self.dtype, order="C", copy=True)
        else:
            layer_input = xp.ascontiguousarray(x, dtype=self.dtype)
        finals = [xp.empty((self.num_layers * D, B, H), dtype=self.dtype) for _ in initial]
        if lengths is None:
            lengths = xp.full(B, T, dtype=np.int64)  # every sequence runs the full T steps
            padding = None
        else:
            lengths = _check_lengths(lengths, T, B, batched)
            padding = self._padding(lengths, T)
            lengths = self.backend.asarray(lengths)
        all_states = (
            [xp.empty((self.num_layers * D, T, B, H), dtype=self.dtype) for _ in initial]
            if return_all_states else []
        )
        saved = []
        masks = []  # masks[k] scales the output of layer k (training mode, dropout > 0)
        for layer in range(self.num_layers):
            layer_output = xp.empty((T, B, D * H), dtype=self.dtype)
            # One direction writes its output in place, unless zeroing the padding or the
            # caller (given the last layer's output) could then change the y backward needs.
            in_place = D == 1 and padding is None and (
                not self.training or layer < self.num_layers - 1
            )
            for direction in range(D):
                k = layer * D + direction
                weights, _ = self._weights(layer, direction)
                y, final, cache = self._run_forward(
                    layer_input, weights, [s[k] for s in initial], direction == 1, lengths,
                    layer_output if in_place else None,
                )
                if not in_place:
                    layer_output[:, :, direction * H : (direction + 1) * H] = y
                for dst, src in zip(finals, final):
                    dst[k] = src
                # y, and the LSTM's cell states cache[0], hold the state of every step.
                for dst, src in zip(all_states, (y,) + tuple(cache[:1])):
                    dst[k] = src
                saved.append((layer_input, y, cache, [s[k] for s in initial]))
            if padding is not None:
                layer_output[padding] = 0  # the drivers leave the carried state there
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                mask = self._dropout_mask(layer_output.shape)
                masks.append(mask)
                layer_output = layer_output * mask
            layer_input = layer_output
        self._saved = (saved, masks, lengths, batched, B) if self.training else None
        y = self._to_user_layout(layer_input, batched)
        state = self._pack_state(finals, batched)
        if not return_all_states:
            return y, state
        if padding is not None:
            for a in all_states:
                a[:, padding] = 0
        all_states = [self._states_to_user_layout(a, batched) for a in all_states]
        return y, state, (tuple(all_states) if self.mode == "LSTM" else all_states[0])


    def _dropout_mask(self, shape):
        """Inverted-dropout mask: 0 with probability ``dropout``, else 1 / (1 - dropout)."""
        keep = self.dropout_rng.random(shape) >= self.dropout
        scale = 0.0 if self.dropout == 1 else 1.0 / (1.0 - self.dropout)
        return self.backend.asarray(keep * scale, dtype=self.dtype)

    def _run_forward(self, x, weights, initial, reverse, lengths, y=None):
        """One layer, one direction: returns y (T, B, H), final states, saved arrays; ``y``
        is written when given (C-contiguous), else allocated."""
        xp, K = self.backend.xp, self.backend.kernels
        T, B, _ = x.shape
        H = self.hidden_size
        G = _GATES[self.mode]
        if y is None:
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
        saved, masks, lengths, batched, B = self._check_saved()
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

    # ------------------------------------------------------------------ streaming
    #
    # Class-level defaults: every layer starts stateless, with nothing kept or cached.
    _stateful = False
    _kept_state = None  # stateful mode: the states the next step starts from, each (L, B, H)
    _step_plan = None  # CPU: (the params items it was built from, (kernel, weights, relu))

    @property
    def stateful(self):
        """bool: whether :meth:`step` keeps the state between calls (default False).

        In stateful mode ``step(x_t)`` without a ``state`` starts from the state the previous
        step left (zeros at first, and after :meth:`reset_state`), and every step keeps its
        new state. Setting ``stateful`` (to either value) forgets the kept state.
        """
        return self._stateful

    @stateful.setter
    def stateful(self, value):
        self._stateful = _check_bool(value, "stateful")
        self._kept_state = None

    def reset_state(self, state=None):
        """Set the state the next :meth:`step` starts from in stateful mode.

        Parameters
        ----------
        state : array or tuple of arrays, optional
            None (the default) forgets the kept state: the next step starts from zeros,
            whatever its batch size. Otherwise a state shaped as :meth:`step` takes it,
            e.g. the final state of a :meth:`forward` over the history so far (only with
            ``stateful`` set); it is copied.

        Raises
        ------
        RuntimeError
            When a ``state`` is given to a layer that is not stateful.
        """
        if state is None:
            self._kept_state = None
            return
        if not self._stateful:
            raise RuntimeError(
                "reset_state: the layer is not stateful, so a kept state would never be used "
                "(set stateful = True first)"
            )
        first = self._unpack_state(state, "state")[0]
        self._check_array(first, "state")
        batched = first.ndim == 3
        B = first.shape[1] if batched else 1
        states = self._check_step_states(state, B, batched)
        self._kept_state = [self.backend.xp.array(s, order="C", copy=True) for s in states]

    def step(self, x_t, state=None):
        """Advance the layer by one time step: streaming inference.

        Running ``step`` over the steps of a sequence gives what :meth:`forward` gives (in
        ``eval()`` mode: ``step`` never applies dropout), to rounding. Nothing is kept for
        :meth:`backward`. On the ``'cpu'`` backend one call of
        :func:`numbarnn.kernels.step.lstm_layers_step` (or the RNN or GRU one) advances every
        layer; on ``'cuda'`` the sequence drivers run with T = 1.

        Parameters
        ----------
        x_t : array
            (B, input_size), or unbatched (input_size,); the layer's dtype.
        state : array or tuple of arrays, optional
            The state to start from, as ``forward``'s ``hx``: (num_layers, B, hidden_size),
            or (num_layers, hidden_size) unbatched; LSTM takes ``(h, c)`` (either may be
            None). None means zeros, or in :attr:`stateful` mode the kept state.

        Returns
        -------
        y_t : array
            (B, hidden_size), or (hidden_size,) unbatched: the last layer's new hidden state.
        state : array or tuple of arrays
            The new state, shaped like ``state``: new arrays at every step (``y_t`` is a view
            of the last layer's hidden state in them). In stateful mode they are also the kept
            state: changing them in place changes the state the next step starts from.

        Raises
        ------
        ValueError
            For a bidirectional layer (its reverse direction needs the whole sequence), or
            when in stateful mode the batch size differs from the kept state's.

        Examples
        --------
        >>> m = LSTM(8, 32, num_layers=2, seed=0).eval()
        >>> y_t, (h, c) = m.step(x_t)            # x_t (B, 8): y_t (B, 32), h and c (2, B, 32)
        >>> y_t, (h, c) = m.step(x_next, (h, c))
        >>> m.stateful = True                    # or keep the state inside the layer
        >>> for x_t in stream:
        ...     y_t, _ = m.step(x_t)
        >>> m.reset_state()                      # the next step starts from zeros
        """
        if self.bidirectional:
            raise ValueError(
                f"step: {self!r} is bidirectional: its reverse direction reads the sequence "
                "from the end, so it cannot run one step at a time (use forward)"
            )
        # Every check below is cheap: this runs once per time step, and a step of a small
        # layer takes a few microseconds.
        xp = self.backend.xp
        if type(x_t) is not xp.ndarray or x_t.dtype != self.dtype:
            self._check_array(x_t, "x_t")
        shape = x_t.shape
        batched = len(shape) == 2
        if shape[-1:] != (self.input_size,) or not (batched or len(shape) == 1):
            raise ValueError(
                f"x_t: expected shape (B, {self.input_size}) or ({self.input_size},) "
                f"(input_size {self.input_size}), got {tuple(shape)}"
            )
        x2 = x_t if batched else x_t[None]
        B = x2.shape[0]
        if B == 0:
            raise ValueError(f"x_t: expected a non-empty batch, got shape {tuple(shape)}")
        lstm = self.mode == "LSTM"
        if state is not None:
            states = self._check_step_states(state, B, batched)
        elif self._stateful and self._kept_state is not None:
            states = self._kept_state
            if states[0].shape[1] != B:
                raise ValueError(
                    f"x_t: batch size {B} differs from the kept state's "
                    f"{states[0].shape[1]} (call reset_state() to start a new batch)"
                )
        else:
            zeros = xp.zeros((self.num_layers, B, self.hidden_size), self.dtype)
            states = (zeros, zeros) if lstm else (zeros,)
        state_shape = (self.num_layers, B, self.hidden_size)
        new = (
            (xp.empty(state_shape, self.dtype), xp.empty(state_shape, self.dtype)) if lstm
            else (xp.empty(state_shape, self.dtype),)
        )
        if self.backend.name == "cpu":
            kernel, weights, relu = self._cpu_step_plan()
            if relu is None:
                kernel(x2, *weights, *states, *new)
            else:
                kernel(x2, *weights, states[0], relu, new[0])
        else:
            self._step_with_drivers(x2, states, new)
        if self._stateful:
            self._kept_state = new
        if not batched:
            new = tuple(s[:, 0] for s in new)
        # y_t is the last layer's new hidden state: a view of the returned state.
        return new[0][-1], (new if lstm else new[0])

    def _check_step_states(self, state, B, batched):
        """Validate ``step``'s ``state``; return a tuple of (L, B, H) arrays (views, or zeros
        for None)."""
        xp = self.backend.xp
        L, H = self.num_layers, self.hidden_size
        expected = (L, B, H) if batched else (L, H)
        values = self._unpack_state(state, "state")
        for value in values:  # the common case first, without building messages
            if type(value) is not xp.ndarray or value.dtype != self.dtype or value.shape != expected:
                break
        else:
            return values if batched else tuple(v[:, None, :] for v in values)
        names = ("state[0] (h)", "state[1] (c)") if self.mode == "LSTM" else ("state",)
        checked = []
        for value, name in zip(values, names):
            if value is None:
                checked.append(xp.zeros((L, B, H), self.dtype))
                continue
            self._check_array(value, name)
            self._check_shape(value, name, expected)
            checked.append(value if batched else value[:, None, :])
        return tuple(checked)

    def _cpu_step_plan(self):
        """``(kernel, weights, relu)`` of the CPU step: the stacked kernel of
        :mod:`numbarnn.kernels.step`, its weight tuples ``(w_ih, w_hh, b_ih, b_hh)`` with one
        array per layer, and the ``relu`` flag (None for LSTM and GRU). Cached; rebuilt when
        an array of ``params`` has been replaced (updates in place, as optimizers and
        ``load_state_dict`` make them, reach the cached arrays)."""
        plan = self._step_plan
        if plan is not None:
            params = self.params
            for name, array in plan[0]:
                if params.get(name) is not array:
                    break
            else:
                return plan[1]
        from .kernels import step as step_kernels

        for name, p in self.params.items():
            if not (isinstance(p, np.ndarray) and p.dtype == self.dtype and p.flags.c_contiguous):
                raise ValueError(
                    f"params[{name!r}]: expected a C-contiguous {self.dtype.name} NumPy array "
                    "(replace parameters in place, e.g. with load_state_dict)"
                )
        kernel = {
            "LSTM": step_kernels.lstm_layers_step, "GRU": step_kernels.gru_layers_step,
            "RNN_TANH": step_kernels.rnn_layers_step, "RNN_RELU": step_kernels.rnn_layers_step,
        }[self.mode]
        relu = (self.mode == "RNN_RELU") if self.mode.startswith("RNN") else None
        per_layer = [self._weights(layer, 0)[0] for layer in range(self.num_layers)]
        weights = tuple(tuple(w) for w in zip(*per_layer))
        self._step_plan = (tuple(self.params.items()), (kernel, weights, relu))
        return self._step_plan[1]

    def _step_with_drivers(self, x2, states, new):
        """One step through the sequence drivers with T = 1: writes ``new`` from ``states``."""
        xp = self.backend.xp
        B = x2.shape[0]
        lengths = xp.ones(B, dtype=np.int64)
        layer_input = self.backend.asarray(x2[None])  # (1, B, I), on the device
        states = [self.backend.asarray(s) for s in states]
        for layer in range(self.num_layers):
            weights, _ = self._weights(layer, 0)
            y, final, _ = self._run_forward(
                layer_input, weights, [s[layer] for s in states], False, lengths
            )
            for dst, src in zip(new, final):
                dst[layer] = src
            layer_input = y


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
