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

from . import _cache, cpu, gemm

_jit = njit(cache=True, error_model="numpy")


# ------------------------------------------------------------------ one row of the cell math
#
# The sequence drivers' row functions (:mod:`numbarnn.kernels.cpu`), with ``xw`` and ``hw``
# (G*H,) holding ``W_ih x`` and ``W_hh h`` on entry. Those write a new state that must not
# overlap the old one; here ``h_out`` may be ``h``, so the state goes through the free
# part of ``hw`` first.

_rnn_row = cpu._rnn_row  # its output never overlaps what it reads


@_jit
def _lstm_row(xw, hw, b_ih, b_hh, c, h_out, c_out):
    H = c.shape[0]
    c_new, h_new = hw[:H], hw[H : 2 * H]
    cpu._lstm_row(xw, hw, b_ih, b_hh, c, h_new, c_new)
    cpu._copy(c_new, c_out)
    cpu._copy(h_new, h_out)


@_jit
def _gru_row(xw, hw, b_ih, b_hh, h, h_out):
    H = h.shape[0]
    h_new = hw[:H]
    cpu._gru_row(xw, hw, b_ih, b_hh, h, h_new, hw[2 * H :])  # h_n_proj stays where it is
    cpu._copy(h_new, h_out)


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
    gemm.matvec(w_ih, x, xw)
    gemm.matvec(w_hh, h, hw)
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
    gemm.matvec(w_ih, x, xw)
    gemm.matvec(w_hh, h, hw)
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
    gemm.matvec(w_ih, x, xw)
    gemm.matvec(w_hh, h, hw)
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


_cache.flush_if_sources_changed(
    __name__,
    [_lstm_row, _gru_row, rnn_step_vector, lstm_step_vector,
     gru_step_vector, rnn_step, lstm_step, gru_step, rnn_layers_step, lstm_layers_step,
     gru_layers_step],
)
