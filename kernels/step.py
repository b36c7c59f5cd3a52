"""Single-step forward of each cell, for embedding in a user's own ``@njit`` code.

Where :mod:`numbarnn.kernels.cpu` runs a layer over a whole sequence, these functions advance
the state by one time step: a simulation, a filter, a control loop or a streaming model
calls them once per step, with the loop in its own ``@njit`` code::

    import numpy as np
    from numba import njit
    from numbarnn.kernels import step

    @njit
    def simulate(xs, w_ih, w_hh, b_ih, b_hh):
        H = w_hh.shape[1]
        h, c = np.zeros(H, xs.dtype), np.zeros(H, xs.dtype)
        for t in range(xs.shape[0]):
            step.lstm_step_vector(xs[t], w_ih, w_hh, b_ih, b_hh, h, c, h, c)  # in place
            ...                                  # use h, feed something back into xs[t + 1]
        return h

Per cell:

* ``rnn_step``, ``lstm_step``, ``gru_step``: a batch, ``x`` (B, I) and states (B, H); the
  products with the weights are GEMMs (BLAS), as in the sequence drivers.
* ``rnn_step_vector``, ``lstm_step_vector``, ``gru_step_vector``: one sequence, ``x`` (I,)
  and states (H,); the products are plain loops over the rows of the weights (no BLAS call:
  they are as fast as one at H = 128 and faster below), vectorised by LLVM. The batched
  functions take this path when B = 1.

and, for a stack of ``L`` unidirectional layers (a trained multi-layer model) in one call,
``rnn_layers_step``, ``lstm_layers_step``, ``gru_layers_step``: states (L, B, H), weights
as tuples of one array per layer.

Conventions (as in :mod:`numbarnn.kernels.cpu`):

* Weights are in PyTorch's layout and gate order, so a layer's ``params`` (or a converted
  torch ``state_dict``) can be handed in directly: ``w_ih`` (G*H, I), ``w_hh`` (G*H, H),
  ``b_ih`` and ``b_hh`` (G*H,) (pass zeros for a layer without bias); G is 1 for the Elman
  RNN, 4 for LSTM (i, f, g, o) and 3 for GRU (r, z, n).
* Every argument has one float dtype, float32 or float64. Any memory layout works
  (C-contiguous weights and rows are fastest); the arrays of one tuple of the stacked
  functions share one layout (a layer's ``params`` are all C-contiguous).
* The new state is written into ``h_out`` (and ``c_out``), which may be the arrays ``h``
  (and ``c``) themselves: the state is then advanced in place.
* The cell math is the per-element functions of :mod:`numbarnn.kernels.cells`, the same
  that the sequence drivers and the CUDA kernels compile, so a step gives what the layer's
  ``forward`` gives for that step, up to the rounding of the products (the summation order
  of a dot product differs from BLAS's).
"""

import numpy as np
from numba import njit

from . import _cache, cells

_jit = njit(cache=True, error_model="numpy")


# Summing a dot product in any order lets LLVM vectorise it (as BLAS does); only this
# function gets the flag, never the cell math.
@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _matvec(w, v, out):
    """``out[k] = sum_j w[k, j] * v[j]``: ``w`` (N, M), ``v`` (M,), ``out`` (N,) written.

    Four rows at a time, so each element of ``v`` is loaded once for four rows.
    """
    n, m = w.shape
    zero = out.dtype.type(0)
    n4 = n - n % 4
    for k in range(0, n4, 4):
        r0, r1, r2, r3 = w[k], w[k + 1], w[k + 2], w[k + 3]
        s0 = s1 = s2 = s3 = zero
        for j in range(m):
            vj = v[j]
            s0 += r0[j] * vj
            s1 += r1[j] * vj
            s2 += r2[j] * vj
            s3 += r3[j] * vj
        out[k], out[k + 1], out[k + 2], out[k + 3] = s0, s1, s2, s3
    for k in range(n4, n):
        row = w[k]
        s = zero
        for j in range(m):
            s += row[j] * v[j]
        out[k] = s


# ------------------------------------------------------------------ one row of the cell math
#
# ``xw`` and ``hw`` (G*H,) hold the products ``W_ih x`` and ``W_hh h`` on entry and are used
# as scratch; the biases are added in PyTorch's summation order. The loops run over slices
# from index 0 with few arrays each: LLVM vectorises those (with offsets such as
# ``xw[2 * H + j]`` in the index it did not, 4x slower measured), and the new state goes to
# scratch first and is copied out, so that ``h_out`` may be ``h`` without defeating
# vectorisation (a loop reading ``c[j]`` and writing ``c_out[j]`` falls back to scalar code
# when the two overlap).


@_jit
def _rnn_row(xw, hw, b_ih, b_hh, relu, h_out):
    for k in range(h_out.shape[0]):
        xw[k] = (xw[k] + b_ih[k]) + (hw[k] + b_hh[k])
    if relu:
        for k in range(h_out.shape[0]):
            xw[k] = cells.rnn_relu_cell_forward(xw[k])
    else:
        for k in range(h_out.shape[0]):
            xw[k] = cells.rnn_tanh_cell_forward(xw[k])
    h_out[:] = xw


@_jit
def _lstm_row(xw, hw, b_ih, b_hh, c, h_out, c_out):
    H = h_out.shape[0]
    for k in range(4 * H):
        xw[k] = (xw[k] + b_ih[k]) + (hw[k] + b_hh[k])
    for gate in range(4):
        a = xw[gate * H : (gate + 1) * H]
        for j in range(H):
            a[j] = cells.lstm_gate_activation(a[j], gate)
    i, f, g, o = xw[:H], xw[H : 2 * H], xw[2 * H : 3 * H], xw[3 * H :]
    c_new, h_new = hw[:H], hw[H : 2 * H]
    for j in range(H):
        c_new[j], h_new[j] = cells.lstm_state_update(i[j], f[j], g[j], o[j], c[j])
    c_out[:] = c_new
    h_out[:] = h_new


@_jit
def _gru_row(xw, hw, b_ih, b_hh, h, h_out):
    H = h_out.shape[0]
    for k in range(3 * H):
        xw[k] += b_ih[k]
        hw[k] += b_hh[k]
    x_r, x_z, x_n = xw[:H], xw[H : 2 * H], xw[2 * H :]
    h_r, h_z, h_n = hw[:H], hw[H : 2 * H], hw[2 * H :]
    for j in range(H):
        x_r[j] = cells.gru_gate(x_r[j], h_r[j])
        x_z[j] = cells.gru_gate(x_z[j], h_z[j])
    h_new = h_r
    for j in range(H):
        _, h_new[j] = cells.gru_state_update(x_n[j], h_n[j], x_r[j], x_z[j], h[j])
    h_out[:] = h_new


# ------------------------------------------------------------------ batch-1 steps


@_jit
def rnn_step_vector(x, w_ih, w_hh, b_ih, b_hh, h, relu, h_out):
    """One Elman RNN step of a single sequence: ``h_out = act(W_ih x + b_ih + W_hh h + b_hh)``.

    Parameters
    ----------
    x : (I,) array
        Input of this step.
    w_ih : (H, I) array
    w_hh : (H, H) array
    b_ih, b_hh : (H,) arrays
    h : (H,) array
        Hidden state before the step.
    relu : bool
        Use ReLU instead of tanh as the nonlinearity.
    h_out : (H,) array, written
        Hidden state after the step (the output); may be ``h``.
    """
    H = h_out.shape[0]
    xw = np.empty(H, dtype=h_out.dtype)
    hw = np.empty(H, dtype=h_out.dtype)
    _matvec(w_ih, x, xw)
    _matvec(w_hh, h, hw)
    _rnn_row(xw, hw, b_ih, b_hh, relu, h_out)


@_jit
def lstm_step_vector(x, w_ih, w_hh, b_ih, b_hh, h, c, h_out, c_out):
    """One LSTM step of a single sequence.

    Parameters
    ----------
    x : (I,) array
        Input of this step.
    w_ih : (4*H, I) array
    w_hh : (4*H, H) array
    b_ih, b_hh : (4*H,) arrays
        Gate order i, f, g, o.
    h, c : (H,) arrays
        Hidden and cell states before the step.
    h_out, c_out : (H,) arrays, written
        Hidden state (the output) and cell state after the step; may be ``h`` and ``c``.
    """
    H = h_out.shape[0]
    xw = np.empty(4 * H, dtype=h_out.dtype)
    hw = np.empty(4 * H, dtype=h_out.dtype)
    _matvec(w_ih, x, xw)
    _matvec(w_hh, h, hw)
    _lstm_row(xw, hw, b_ih, b_hh, c, h_out, c_out)


@_jit
def gru_step_vector(x, w_ih, w_hh, b_ih, b_hh, h, h_out):
    """One GRU step of a single sequence.

    Parameters
    ----------
    x : (I,) array
        Input of this step.
    w_ih : (3*H, I) array
    w_hh : (3*H, H) array
    b_ih, b_hh : (3*H,) arrays
        Gate order r, z, n.
    h : (H,) array
        Hidden state before the step.
    h_out : (H,) array, written
        Hidden state after the step (the output); may be ``h``.
    """
    H = h_out.shape[0]
    xw = np.empty(3 * H, dtype=h_out.dtype)
    hw = np.empty(3 * H, dtype=h_out.dtype)
    _matvec(w_ih, x, xw)
    _matvec(w_hh, h, hw)
    _gru_row(xw, hw, b_ih, b_hh, h, h_out)


# ------------------------------------------------------------------ batched steps
#
# With B > 1 the products are GEMMs (each weight read once for the whole batch); with B = 1
# the batch-1 loops above, which beat a BLAS call there.


@_jit
def rnn_step(x, w_ih, w_hh, b_ih, b_hh, h, relu, h_out):
    """One Elman RNN step of a batch: ``h_out = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``.

    Parameters
    ----------
    x : (B, I) array
        Input of this step.
    w_ih : (H, I) array
    w_hh : (H, H) array
    b_ih, b_hh : (H,) arrays
    h : (B, H) array
        Hidden state before the step.
    relu : bool
        Use ReLU instead of tanh as the nonlinearity.
    h_out : (B, H) array, written
        Hidden state after the step (the output); may be ``h``.
    """
    if x.shape[0] == 1:
        rnn_step_vector(x[0], w_ih, w_hh, b_ih, b_hh, h[0], relu, h_out[0])
        return
    xw = np.dot(x, w_ih.T)
    hw = np.dot(h, w_hh.T)
    for b in range(x.shape[0]):
        _rnn_row(xw[b], hw[b], b_ih, b_hh, relu, h_out[b])


@_jit
def lstm_step(x, w_ih, w_hh, b_ih, b_hh, h, c, h_out, c_out):
    """One LSTM step of a batch.

    Parameters
    ----------
    x : (B, I) array
        Input of this step.
    w_ih : (4*H, I) array
    w_hh : (4*H, H) array
    b_ih, b_hh : (4*H,) arrays
        Gate order i, f, g, o.
    h, c : (B, H) arrays
        Hidden and cell states before the step.
    h_out, c_out : (B, H) arrays, written
        Hidden state (the output) and cell state after the step; may be ``h`` and ``c``.
    """
    if x.shape[0] == 1:
        lstm_step_vector(x[0], w_ih, w_hh, b_ih, b_hh, h[0], c[0], h_out[0], c_out[0])
        return
    xw = np.dot(x, w_ih.T)
    hw = np.dot(h, w_hh.T)
    for b in range(x.shape[0]):
        _lstm_row(xw[b], hw[b], b_ih, b_hh, c[b], h_out[b], c_out[b])


@_jit
def gru_step(x, w_ih, w_hh, b_ih, b_hh, h, h_out):
    """One GRU step of a batch.

    Parameters
    ----------
    x : (B, I) array
        Input of this step.
    w_ih : (3*H, I) array
    w_hh : (3*H, H) array
    b_ih, b_hh : (3*H,) arrays
        Gate order r, z, n.
    h : (B, H) array
        Hidden state before the step.
    h_out : (B, H) array, written
        Hidden state after the step (the output); may be ``h``.
    """
    if x.shape[0] == 1:
        gru_step_vector(x[0], w_ih, w_hh, b_ih, b_hh, h[0], h_out[0])
        return
    xw = np.dot(x, w_ih.T)
    hw = np.dot(h, w_hh.T)
    for b in range(x.shape[0]):
        _gru_row(xw[b], hw[b], b_ih, b_hh, h[b], h_out[b])


# ------------------------------------------------------------------ stacked layers
#
# A stack of L unidirectional layers in one call: layer k > 0 takes the new hidden state of
# layer k - 1 as its input (no dropout: this is inference). The weights are tuples with one
# array per layer, e.g. ``(params["weight_ih_l0"], params["weight_ih_l1"])``.


@_jit
def rnn_layers_step(x, w_ih, w_hh, b_ih, b_hh, h, relu, h_out):
    """One Elman RNN step of a stack of ``L`` layers, batched.

    Parameters
    ----------
    x : (B, I) array
        Input of this step.
    w_ih : tuple of L arrays
        (H, I) for layer 0, (H, H) for the others.
    w_hh : tuple of L (H, H) arrays
    b_ih, b_hh : tuples of L (H,) arrays
    h : (L, B, H) array
        Hidden state of every layer before the step.
    relu : bool
        Use ReLU instead of tanh as the nonlinearity.
    h_out : (L, B, H) array, written
        Hidden state of every layer after the step; ``h_out[L - 1]`` is the output. May be
        ``h``.
    """
    rnn_step(x, w_ih[0], w_hh[0], b_ih[0], b_hh[0], h[0], relu, h_out[0])
    for k in range(1, len(w_ih)):
        rnn_step(h_out[k - 1], w_ih[k], w_hh[k], b_ih[k], b_hh[k], h[k], relu, h_out[k])


@_jit
def lstm_layers_step(x, w_ih, w_hh, b_ih, b_hh, h, c, h_out, c_out):
    """One LSTM step of a stack of ``L`` layers, batched.

    Parameters
    ----------
    x : (B, I) array
        Input of this step.
    w_ih : tuple of L arrays
        (4*H, I) for layer 0, (4*H, H) for the others.
    w_hh : tuple of L (4*H, H) arrays
    b_ih, b_hh : tuples of L (4*H,) arrays
        Gate order i, f, g, o.
    h, c : (L, B, H) arrays
        Hidden and cell states of every layer before the step.
    h_out, c_out : (L, B, H) arrays, written
        Hidden and cell states of every layer after the step; ``h_out[L - 1]`` is the
        output. May be ``h`` and ``c``.
    """
    lstm_step(x, w_ih[0], w_hh[0], b_ih[0], b_hh[0], h[0], c[0], h_out[0], c_out[0])
    for k in range(1, len(w_ih)):
        lstm_step(
            h_out[k - 1], w_ih[k], w_hh[k], b_ih[k], b_hh[k], h[k], c[k], h_out[k], c_out[k]
        )


@_jit
def gru_layers_step(x, w_ih, w_hh, b_ih, b_hh, h, h_out):
    """One GRU step of a stack of ``L`` layers, batched.

    Parameters
    ----------
    x : (B, I) array
        Input of this step.
    w_ih : tuple of L arrays
        (3*H, I) for layer 0, (3*H, H) for the others.
    w_hh : tuple of L (3*H, H) arrays
    b_ih, b_hh : tuples of L (3*H,) arrays
        Gate order r, z, n.
    h : (L, B, H) array
        Hidden state of every layer before the step.
    h_out : (L, B, H) array, written
        Hidden state of every layer after the step; ``h_out[L - 1]`` is the output. May be
        ``h``.
    """
    gru_step(x, w_ih[0], w_hh[0], b_ih[0], b_hh[0], h[0], h_out[0])
    for k in range(1, len(w_ih)):
        gru_step(h_out[k - 1], w_ih[k], w_hh[k], b_ih[k], b_hh[k], h[k], h_out[k])


_cache.flush_if_cells_changed(
    __name__,
    [_matvec, _rnn_row, _lstm_row, _gru_row, rnn_step_vector, lstm_step_vector,
     gru_step_vector, rnn_step, lstm_step, gru_step, rnn_layers_step, lstm_layers_step,
     gru_layers_step],
)
