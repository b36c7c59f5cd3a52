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

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, targetconfig
from numba.extending import intrinsic

# --------------------------------------------------------------------------- primitives
#
# float64 uses libm (what PyTorch computes, to the last bits). float32 stays in float32
# and uses a rational approximation of tanh that LLVM vectorises (libm calls do not
# vectorise, and cost more than the GEMMs). Numba types a literal such as 1.0 as float64,
# which would silently promote float32 math to float64, so constants are written
# `typed(a, 1.0)`: the value in the float type of `a`.
#
# `typed`, `tanh` and `sigmoid` are Numba intrinsics: they pick the implementation for
# the argument's type while compiling, on the CPU and in CUDA kernels alike (an
# @overload would need a live GPU to compile for CUDA), and they are callable from
# compiled code only.

# tanh(x) ~ x * P(x^2) / Q(x^2) on |x| <= 9 (beyond, float32 tanh rounds to +-1).
# Coefficients fitted by scripts/fit_tanh.py (Lawson-weighted least squares, minimax
# relative error 6e-8 in exact arithmetic). Measured in float32 against float64 tanh:
# at most 6 ulp (5.1); sigmoid (through tanh) within 2e-7 absolute. P and Q by Horner's
# rule in fused multiply-adds, rounded once each: 1.33x faster than multiplies and adds
# (vectorised, 1 thread: 0.49 against 0.66 ns per element; the LSTM forward's cell math
# 1.22 against 1.42 ns per gate element, measured), and no less accurate (5.6 ulp before).
_TANH_CLAMP = np.float32(9.0)
_TANH_P = tuple(np.float32(c) for c in (
    0.99999994, 0.12919252, 0.002920785, 9.2675864e-06, -1.2780786e-08, 1.8255834e-11
))
_TANH_Q = tuple(np.float32(c) for c in (1.0, 0.46252537, 0.023763269, 0.00022810308))
_P0, _P1, _P2, _P3, _P4, _P5 = _TANH_P
_Q0, _Q1, _Q2, _Q3 = _TANH_Q
_F32_HALF = np.float32(0.5)


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma``: one instruction where the CPU has FMA)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        ftype = context.get_value_type(signature.return_type)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ftype, [ftype] * 3), f"llvm.fma.f{a.bitwidth}"
        )
        return builder.call(fn, args)

    return a(a, b, c), codegen


def _tanh_float32(a):
    x = min(max(a, -_TANH_CLAMP), _TANH_CLAMP)
    s = x * x
    p = _fma(_fma(_fma(_fma(_fma(_P5, s, _P4), s, _P3), s, _P2), s, _P1), s, _P0)
    q = _fma(_fma(_fma(_Q3, s, _Q2), s, _Q1), s, _Q0)
    return min(max(x * p / q, -_Q0), _Q0)  # the fit overshoots 1 by 2 ulp near |x| = 9


def _tanh_float64(a):
    return math.tanh(a)




def _float_intrinsic(float32_impl, float64_impl):
    """An intrinsic ``f(a)`` that inlines the implementation for the float type of ``a``."""

    def typer(typingctx, a):
        if not isinstance(a, types.Float):
            return None
        impl = float32_impl if a.bitwidth == 32 else float64_impl

        def codegen(context, builder, signature, args):
            # Compile with the caller's flags: the default ones would bring Python's
            # error model, whose division-by-zero check stops vectorisation.
            config_stack = targetconfig.ConfigStack()
            flags = config_stack.top().copy() if config_stack else None
            cres = context.compile_subroutine(builder, impl, signature, flags=flags)
            return context.call_internal(builder, cres.fndesc, signature, args)

        return a(a), codegen

    return intrinsic(typer)


tanh = _float_intrinsic(_tanh_float32, _tanh_float64)
tanh.__doc__ = "Hyperbolic tangent: libm in float64, the rational approximation in float32."


def _sigmoid_float32(a):
    return _F32_HALF * tanh(_F32_HALF * a) + _F32_HALF


def _sigmoid_float64(a):
    return 1.0 / (1.0 + math.exp(-a))


sigmoid = _float_intrinsic(_sigmoid_float32, _sigmoid_float64)
sigmoid.__doc__ = "Logistic ``1 / (1 + exp(-a))``; float32 as ``0.5 + 0.5 * tanh(a / 2)``."


@intrinsic
def typed(typingctx, a, value):
    """The number ``value`` in the float type of ``a`` (a constant after compilation)."""
    if not isinstance(a, types.Float):
        return None

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[1], signature.args[1], signature.return_type)

    return a(a, value), codegen


@njit(inline="always")
def relu(a):
    """``max(a, 0)``."""
    return a if a > 0 else a - a


# --------------------------------------------------------------------------- Elman RNN


@njit(inline="always")
def rnn_tanh_cell_forward(a):
    """Elman tanh cell: new hidden state from the summed pre-activation ``a``."""
    return tanh(a)


@njit(inline="always")
def rnn_tanh_cell_backward(h, dh):
    """Gradient w.r.t. the pre-activation, given the output ``h = tanh(a)`` and ``dL/dh``."""
    return dh * (typed(h, 1.0) - h * h)


@njit(inline="always")
def rnn_relu_cell_forward(a):
    """Elman ReLU cell: new hidden state from the summed pre-activation ``a``."""
    return relu(a)


@njit(inline="always")
def rnn_relu_cell_backward(h, dh):
    """Gradient w.r.t. the pre-activation, given the output ``h = relu(a)`` and ``dL/dh``."""
    return dh if h > 0 else dh - dh


# --------------------------------------------------------------------------- LSTM


@njit(inline="always")
def lstm_gate_activation(a, gate):
    """Activation of LSTM gate number ``gate`` (0 i, 1 f, 2 g, 3 o) at pre-activation ``a``.

    The cell gate g uses tanh, the others sigmoid.
    """
    return tanh(a) if gate == 2 else sigmoid(a)


@njit(inline="always")
def lstm_state_update(i, f, g, o, c_prev):
    """New cell and hidden state ``(c, h)`` from the gate activations and ``c_prev``."""
    c = f * c_prev + i * g
    return c, o * tanh(c)


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
    i = lstm_gate_activation(a_i, 0)
    f = lstm_gate_activation(a_f, 1)
    g = lstm_gate_activation(a_g, 2)
    o = lstm_gate_activation(a_o, 3)
    c, h = lstm_state_update(i, f, g, o, c_prev)
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
    _1 = typed(c, 1.0)
    tanh_c = tanh(c)
    dc_total = dc + dh * o * (_1 - tanh_c * tanh_c)
    da_i = dc_total * g * i * (_1 - i)
    da_f = dc_total * c_prev * f * (_1 - f)
    da_g = dc_total * i * (_1 - g * g)
    da_o = dh * tanh_c * o * (_1 - o)
    return da_i, da_f, da_g, da_o, dc_total * f


# --------------------------------------------------------------------------- GRU


@njit(inline="always")
def gru_gate(x_a, h_a):
    """Reset or update gate activation from its input and recurrent projections."""
    return sigmoid(x_a + h_a)


@njit(inline="always")
def gru_state_update(x_n, h_n, r, z, h_prev):
    """New gate ``n`` and hidden state ``h`` from the projections of n and the gates r, z."""
    n = tanh(x_n + r * h_n)
    return n, (typed(z, 1.0) - z) * n + z * h_prev


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
    r = gru_gate(x_r, h_r)
    z = gru_gate(x_z, h_z)
    n, h = gru_state_update(x_n, h_n, r, z, h_prev)
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
    _1 = typed(dh, 1.0)
    da_n = dh * (_1 - z) * (_1 - n * n)
    da_z = dh * (h_prev - n) * z * (_1 - z)
    da_r = da_n * h_n * r * (_1 - r)
    return da_r, da_z, da_n, da_n * r, dh * z
