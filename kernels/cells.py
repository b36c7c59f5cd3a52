"""Per-element math of each recurrent cell, forward and backward.

This module is the single source of truth for the cell formulas. Every function is a
scalar ``@numba.njit(inline="always")`` function with no explicit signature, so the same
source is compiled into the CPU drivers (``numbarnn.kernels.cpu``), into the CUDA kernels
(``numbarnn.kernels.cuda``) and into users' own ``@njit`` or ``@cuda.jit`` code.

The formulation is PyTorch's (``torch.nn.RNN``, ``LSTM``, ``GRU``):

* Elman RNN: ``h = tanh(a)`` or ``h = relu(a)`` with ``a = W_ih x + b_ih + W_hh h' + b_hh``.
* LSTM, gate order i, f, g, o::

      i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
      c = f * c' + i * g
      h = o * tanh(c)

* GRU, gate order r, z, n, with the reset gate applied after the recurrent product::

      r = sigmoid(x_r + h_r)   z = sigmoid(x_z + h_z)
      n = tanh(x_n + r * h_n)
      h = (1 - z) * n + z * h'

  where ``x_* = W_i* x + b_i*`` and ``h_* = W_h* h' + b_h*``.

Backward functions work from the saved activations (outputs of sigmoid/tanh), as cuDNN
does, and return gradients with respect to the pre-activations.
"""

import math

from numba import njit


@njit(inline="always")
def sigmoid(a):
    """Logistic function ``1 / (1 + exp(-a))``."""
    return 1.0 / (1.0 + math.exp(-a))


@njit(inline="always")
def relu(a):
    """``max(a, 0)``."""
    return a if a > 0.0 else 0.0 * a


# --------------------------------------------------------------------------- Elman RNN


@njit(inline="always")
def rnn_tanh_cell_forward(a):
    """Elman tanh cell: new hidden state from the summed pre-activation ``a``."""
    return math.tanh(a)


@njit(inline="always")
def rnn_tanh_cell_backward(h, dh):
    """Gradient w.r.t. the pre-activation, given the output ``h = tanh(a)`` and ``dL/dh``."""
    return dh * (1.0 - h * h)


@njit(inline="always")
def rnn_relu_cell_forward(a):
    """Elman ReLU cell: new hidden state from the summed pre-activation ``a``."""
    return relu(a)


@njit(inline="always")
def rnn_relu_cell_backward(h, dh):
    """Gradient w.r.t. the pre-activation, given the output ``h = relu(a)`` and ``dL/dh``."""
    return dh if h > 0.0 else 0.0 * dh


# --------------------------------------------------------------------------- LSTM


@njit(inline="always")
def lstm_cell_forward(a_i, a_f, a_g, a_o, c_prev):
    """One LSTM element.

    Parameters
    ----------
    a_i, a_f, a_g, a_o : float
        Summed pre-activations of the input, forget, cell and output gates.
    c_prev : float
        Previous cell state.

    Returns
    -------
    i, f, g, o, c, h : float
        Gate activations, new cell state and new hidden state.
    """
    i = sigmoid(a_i)
    f = sigmoid(a_f)
    g = math.tanh(a_g)
    o = sigmoid(a_o)
    c = f * c_prev + i * g
    h = o * math.tanh(c)
    return i, f, g, o, c, h


@njit(inline="always")
def lstm_cell_backward(i, f, g, o, c, c_prev, dh, dc):
    """Backward of :func:`lstm_cell_forward` for one element.

    Parameters
    ----------
    i, f, g, o : float
        Saved gate activations of this step.
    c, c_prev : float
        Cell state produced by this step and the one it started from.
    dh, dc : float
        Total gradients flowing into this step's ``h`` and ``c``.

    Returns
    -------
    da_i, da_f, da_g, da_o : float
        Gradients w.r.t. the four gate pre-activations.
    dc_prev : float
        Gradient w.r.t. ``c_prev``.
    """
    tanh_c = math.tanh(c)
    dc_total = dc + dh * o * (1.0 - tanh_c * tanh_c)
    da_i = dc_total * g * i * (1.0 - i)
    da_f = dc_total * c_prev * f * (1.0 - f)
    da_g = dc_total * i * (1.0 - g * g)
    da_o = dh * tanh_c * o * (1.0 - o)
    return da_i, da_f, da_g, da_o, dc_total * f


# --------------------------------------------------------------------------- GRU


@njit(inline="always")
def gru_cell_forward(x_r, x_z, x_n, h_r, h_z, h_n, h_prev):
    """One GRU element.

    Parameters
    ----------
    x_r, x_z, x_n : float
        Input projections ``W_i* x + b_i*`` of the reset, update and new gates.
    h_r, h_z, h_n : float
        Recurrent projections ``W_h* h_prev + b_h*``.
    h_prev : float
        Previous hidden state.

    Returns
    -------
    r, z, n, h : float
        Gate activations and the new hidden state.
    """
    r = sigmoid(x_r + h_r)
    z = sigmoid(x_z + h_z)
    n = math.tanh(x_n + r * h_n)
    h = (1.0 - z) * n + z * h_prev
    return r, z, n, h


@njit(inline="always")
def gru_cell_backward(r, z, n, h_n, h_prev, dh):
    """Backward of :func:`gru_cell_forward` for one element.

    Parameters
    ----------
    r, z, n : float
        Saved gate activations of this step.
    h_n : float
        Saved recurrent projection of the new gate, ``W_hn h_prev + b_hn``.
    h_prev : float
        Hidden state this step started from.
    dh : float
        Total gradient flowing into this step's output ``h``.

    Returns
    -------
    da_r, da_z, da_n : float
        Gradients w.r.t. the summed pre-activations of r and z and w.r.t. ``x_n``.
    dh_n : float
        Gradient w.r.t. the recurrent projection ``h_n`` (``da_n * r``).
    dh_prev : float
        The direct part of the gradient w.r.t. ``h_prev`` (``dh * z``); the part through
        ``W_hh`` is added by the caller's GEMM.
    """
    da_n = dh * (1.0 - z) * (1.0 - n * n)
    da_z = dh * (h_prev - n) * z * (1.0 - z)
    da_r = da_n * h_n * r * (1.0 - r)
    return da_r, da_z, da_n, da_n * r, dh * z
