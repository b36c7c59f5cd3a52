"""An independent float64 NumPy reference of every cell, forward and backward.

Written from PyTorch's documented formulas (``torch.nn.RNN``, ``torch.nn.LSTM``,
``torch.nn.GRU``), in the style of min-char-rnn: plain loops over time, one line per
equation, backward mirroring forward term by term. It shares no code with
``numbarnn.kernels`` on purpose, so that a formula bug cannot hide in both; it is itself
checked by central differences in ``tests/test_reference.py``.

Formulas (``x_t`` the input at step t, ``h'`` / ``c'`` the previous states, ``*`` the
elementwise product, weights in PyTorch's layout ``(G*H, in)``)::

    Elman:  h = act(W_ih x_t + b_ih + W_hh h' + b_hh)           act = tanh or relu
    LSTM:   i, f, g, o = split(W_ih x_t + b_ih + W_hh h' + b_hh)  (gate order i, f, g, o)
            i = sigmoid(i)  f = sigmoid(f)  g = tanh(g)  o = sigmoid(o)
            c = f * c' + i * g
            h = o * tanh(c)
    GRU:    r = sigmoid(W_ir x_t + b_ir + W_hr h' + b_hr)        (gate order r, z, n)
            z = sigmoid(W_iz x_t + b_iz + W_hz h' + b_hz)
            n = tanh(W_in x_t + b_in + r * (W_hn h' + b_hn))
            h = (1 - z) * n + z * h'

Shapes: ``x`` (T, B, I) time-major, states (B, H), ``y`` (T, B, H). Everything is computed
in float64 whatever the dtype of the arguments.
"""

import numpy as np

MODES = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _f64(a):
    return np.array(a, dtype=np.float64, copy=True)


# --------------------------------------------------------------------------- one layer


def layer_forward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None, reverse=False):
    """One layer, one direction, the whole sequence.

    Parameters
    ----------
    mode : {'rnn_tanh', 'rnn_relu', 'lstm', 'gru'}
    x : (T, B, I) array
    w_ih : (G*H, I) array;  w_hh : (G*H, H) array;  b_ih, b_hh : (G*H,) arrays or None
    h0 : (B, H) array;  c0 : (B, H) array (LSTM only)
    reverse : bool
        Walk the sequence from t = T-1 down to 0 (``y[t]`` is still indexed by true time).

    Returns
    -------
    y : (T, B, H)
    h_n : (B, H)
    c_n : (B, H) or None
    cache : dict
        Everything :func:`layer_backward` needs, plus the per-step intermediates
        (``c`` (T, B, H) for LSTM; ``gates`` (T, B, G*H) activations for LSTM/GRU;
        ``hn`` (T, B, H), the GRU's ``W_hn h' + b_hn``).
    """
    assert mode in MODES, mode
    x, w_ih, w_hh, h0 = _f64(x), _f64(w_ih), _f64(w_hh), _f64(h0)
    T, B, _ = x.shape
    H = h0.shape[1]
    G = GATES[mode]
    b_ih = np.zeros(G * H) if b_ih is None else _f64(b_ih)
    b_hh = np.zeros(G * H) if b_hh is None else _f64(b_hh)
    c0 = None if c0 is None else _f64(c0)
    if mode == "lstm":
        assert c0 is not None, "LSTM needs c0"

    order = range(T - 1, -1, -1) if reverse else range(T)
    y = np.zeros((T, B, H))
    h_prev = np.zeros((T, B, H))  # the hidden state each step started from
    c_prev = np.zeros((T, B, H))  # LSTM: the cell state each step started from
    c_all = np.zeros((T, B, H))
    gates = np.zeros((T, B, G * H))
    hn_all = np.zeros((T, B, H))
    h, c = h0, c0
    for t in order:
        h_prev[t] = h
        xp = x[t] @ w_ih.T + b_ih  # (B, G*H) input projection
        hp = h @ w_hh.T + b_hh  # (B, G*H) recurrent projection
        if mode == "rnn_tanh":
            h = np.tanh(xp + hp)
        elif mode == "rnn_relu":
            h = np.maximum(xp + hp, 0.0)
        elif mode == "lstm":
            a = xp + hp
            i = sigmoid(a[:, 0 * H : 1 * H])
            f = sigmoid(a[:, 1 * H : 2 * H])
            g = np.tanh(a[:, 2 * H : 3 * H])
            o = sigmoid(a[:, 3 * H : 4 * H])
            c_prev[t] = c
            c = f * c + i * g
            h = o * np.tanh(c)
            c_all[t] = c
            gates[t] = np.concatenate([i, f, g, o], axis=1)
        else:  # gru
            r = sigmoid(xp[:, 0 * H : 1 * H] + hp[:, 0 * H : 1 * H])
            z = sigmoid(xp[:, 1 * H : 2 * H] + hp[:, 1 * H : 2 * H])
            hn = hp[:, 2 * H : 3 * H]
            n = np.tanh(xp[:, 2 * H : 3 * H] + r * hn)
            h = (1.0 - z) * n + z * h
            gates[t] = np.concatenate([r, z, n], axis=1)
            hn_all[t] = hn
        y[t] = h
    cache = dict(
        mode=mode, x=x, w_ih=w_ih, w_hh=w_hh, h0=h0, c0=c0, reverse=reverse, y=y,
        h_prev=h_prev, c_prev=c_prev, c=c_all, gates=gates, hn=hn_all,
    )
    return y, h.copy(), (None if c is None else c.copy()), cache


def layer_backward(cache, dy, dh_n, dc_n=None):
    """Backpropagation through time of :func:`layer_forward`.

    Parameters
    ----------
    cache : dict from :func:`layer_forward`
    dy : (T, B, H) gradient w.r.t. ``y``
    dh_n : (B, H) gradient w.r.t. ``h_n``;  dc_n : (B, H) w.r.t. ``c_n`` (LSTM; None = 0)

    Returns
    -------
    dx : (T, B, I)
    dh0 : (B, H)
    dc0 : (B, H) or None
    grads : dict with ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh`` (freshly computed, not accumulated)
    """
    mode = cache["mode"]
    x, w_ih, w_hh, y = cache["x"], cache["w_ih"], cache["w_hh"], cache["y"]
    T, B, _ = x.shape
    H = w_hh.shape[1]
    dy = _f64(dy)
    dx = np.zeros_like(x)
    dw_ih = np.zeros_like(w_ih)
    dw_hh = np.zeros_like(w_hh)
    db_ih = np.zeros(w_ih.shape[0])
    db_hh = np.zeros(w_hh.shape[0])
    dh_next = _f64(dh_n)  # gradient flowing into the state produced by the step after
    dc_next = None
    if mode == "lstm":
        dc_next = np.zeros((B, H)) if dc_n is None else _f64(dc_n)

    # Backward visits the steps in the opposite order of forward.
    order = range(T) if cache["reverse"] else range(T - 1, -1, -1)
    for t in order:
        h_prev = cache["h_prev"][t]
        dh = dy[t] + dh_next  # total gradient on this step's h
        if mode == "rnn_tanh":
            da = dh * (1.0 - y[t] ** 2)  # tanh' = 1 - tanh^2
            dxp = dhp = da
            dh_direct = 0.0
        elif mode == "rnn_relu":
            da = dh * (y[t] > 0.0)  # relu' = 1 where the output is positive
            dxp = dhp = da
            dh_direct = 0.0
        elif mode == "lstm":
            gt = cache["gates"][t]
            i, f, g, o = (gt[:, k * H : (k + 1) * H] for k in range(4))
            c, c_prev = cache["c"][t], cache["c_prev"][t]
            tanh_c = np.tanh(c)
            # h = o * tanh(c)
            do = dh * tanh_c
            dc = dc_next + dh * o * (1.0 - tanh_c**2)
            # c = f * c' + i * g
            df = dc * c_prev
            di = dc * g
            dg = dc * i
            dc_next = dc * f
            # through the nonlinearities
            da_i = di * i * (1.0 - i)
            da_f = df * f * (1.0 - f)
            da_g = dg * (1.0 - g**2)
            da_o = do * o * (1.0 - o)
            da = np.concatenate([da_i, da_f, da_g, da_o], axis=1)
            dxp = dhp = da
            dh_direct = 0.0
        else:  # gru
            gt = cache["gates"][t]
            r, z, n = (gt[:, k * H : (k + 1) * H] for k in range(3))
            hn = cache["hn"][t]
            # h = (1 - z) * n + z * h'
            dn = dh * (1.0 - z)
            dz = dh * (h_prev - n)
            dh_direct = dh * z
            # n = tanh(x_n + r * hn)
            dan = dn * (1.0 - n**2)  # gradient w.r.t. x_n = W_in x + b_in
            dr = dan * hn
            dhn = dan * r  # gradient w.r.t. hn = W_hn h' + b_hn
            # r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
            dar = dr * r * (1.0 - r)
            daz = dz * z * (1.0 - z)
            dxp = np.concatenate([dar, daz, dan], axis=1)  # w.r.t. the input projection
            dhp = np.concatenate([dar, daz, dhn], axis=1)  # w.r.t. the recurrent projection
        # the two affine maps: xp = x W_ih^T + b_ih,  hp = h' W_hh^T + b_hh
        dw_ih += dxp.T @ x[t]
        db_ih += dxp.sum(axis=0)
        dw_hh += dhp.T @ h_prev
        db_hh += dhp.sum(axis=0)
        dx[t] = dxp @ w_ih
        dh_next = dhp @ w_hh + dh_direct
    grads = dict(w_ih=dw_ih, w_hh=dw_hh, b_ih=db_ih, b_hh=db_hh)
    return dx, dh_next, dc_next, grads


# --------------------------------------------------------------------------- full model


def param_names(num_layers, bidirectional, bias=True):
    """PyTorch's parameter names, in PyTorch's order."""
    names = []
    for layer in range(num_layers):
        for direction in range(2 if bidirectional else 1):
            s = f"_l{layer}" + ("_reverse" if direction else "")
            names += ["weight_ih" + s, "weight_hh" + s]
            if bias:
                names += ["bias_ih" + s, "bias_hh" + s]
    return names


def model_forward(mode, x, weights, num_layers=1, bidirectional=False, h0=None, c0=None):
    """A multi-layer, optionally bidirectional model built from :func:`layer_forward`.

    Parameters
    ----------
    mode : {'rnn_tanh', 'rnn_relu', 'lstm', 'gru'}
    x : (T, B, I) array, time-major
    weights : dict
        PyTorch's names: ``weight_ih_l{k}[_reverse]``, ``weight_hh_l{k}...``, and
        optionally ``bias_ih_l{k}...``, ``bias_hh_l{k}...`` (missing biases mean zeros).
    h0, c0 : (num_layers * D, B, H) arrays or None (zeros)

    Returns
    -------
    y : (T, B, D*H)
    h_n : (num_layers * D, B, H)
    c_n : (num_layers * D, B, H) or None
    """
    D = 2 if bidirectional else 1
    x = _f64(x)
    T, B, _ = x.shape
    H = np.asarray(weights["weight_hh_l0"]).shape[1]
    h0 = np.zeros((num_layers * D, B, H)) if h0 is None else _f64(h0)
    if mode == "lstm":
        c0 = np.zeros((num_layers * D, B, H)) if c0 is None else _f64(c0)
    h_n = np.zeros((num_layers * D, B, H))
    c_n = np.zeros((num_layers * D, B, H)) if mode == "lstm" else None
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for direction in range(D):
            k = layer * D + direction
            s = f"_l{layer}" + ("_reverse" if direction else "")
            y, h_last, c_last, _ = layer_forward(
                mode, layer_input, weights["weight_ih" + s], weights["weight_hh" + s],
                weights.get("bias_ih" + s), weights.get("bias_hh" + s),
                h0[k], None if c0 is None else c0[k], reverse=direction == 1,
            )
            outputs.append(y)
            h_n[k] = h_last
            if c_n is not None:
                c_n[k] = c_last
        layer_input = np.concatenate(outputs, axis=2)
    return layer_input, h_n, c_n
