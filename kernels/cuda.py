"""CUDA drivers: one layer, one direction, a whole sequence, on an NVIDIA GPU.

The drivers have the names, arguments, shapes and semantics of the CPU drivers in
:mod:`numbarnn.kernels.cpu`; only the arrays differ: they are device arrays of the *array
module* (:func:`array_module`), CuPy arrays on a GPU and NumPy arrays under Numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``). Each driver follows the same plan:

* forward: one GEMM (``xp.matmul``, i.e. cuBLAS) for the input projection of all time
  steps, then per step one recurrent GEMM and one launch of a fused pointwise kernel;
* backward: per step one pointwise kernel launch and one GEMM for the gradient w.r.t. the
  previous hidden state, then the input gradient and the weight gradients as GEMMs over
  all time steps at once.

The pointwise kernels run one thread per ``(batch, unit)`` element on a 1-D grid of
``ceil(B*H / THREADS_PER_BLOCK)`` blocks and call the per-element functions of
:mod:`numbarnn.kernels.cells`, so the cell math exists once for both targets.

Why it is built this way:

* Kernels are ``@cuda.jit`` at module level without signatures: importing this module
  does no GPU work and needs no driver (it imports under the simulator and on machines
  with numba-cuda but no GPU), the kernels are compiled lazily on first launch, and module
  level functions can be cached on disk (kernels built in closures cannot).
* CuPy is imported inside :func:`array_module` only, never at import.
* Kernels take whole arrays plus the time index ``t`` and see only C-contiguous arrays
  (the drivers make the few arguments that may have any layout contiguous), so the
  argument types listed in :func:`kernel_signatures`, and compiled to PTX by the tests
  with :func:`compile_all_ptx`, are the ones that run.
* On a GPU the arrays are wrapped for Numba once per driver call without stream
  synchronisation and the kernels are launched on CuPy's current stream, which already
  orders them after the GEMMs; passing CuPy arrays straight to each launch would make
  Numba synchronise that stream for every array of every launch.
* ``THREADS_PER_BLOCK`` is read at each launch, so tests can shrink it to cover several
  blocks and a ragged last block.

Conventions shared by all drivers (as in :mod:`numbarnn.kernels.cpu`):

* Shapes: ``T`` steps, ``B`` batch, ``I`` input features, ``H`` hidden units, ``G`` gates
  (1 for the Elman RNN, 4 for LSTM, 3 for GRU).
* Weights are in PyTorch's layout and gate order: ``w_ih`` is ``(G*H, I)``, ``w_hh`` is
  ``(G*H, H)``, ``b_ih`` and ``b_hh`` are ``(G*H,)`` (pass zeros for a layer without bias).
* ``x``, ``dy`` and every output array are C-contiguous and of one float dtype (float32 or
  float64) shared by all arguments. ``h0``, ``c0``, ``dh_n`` and ``dc_n`` may have any layout.
* Time index ``t`` of every saved array is the true time step: with ``reverse=True`` the
  sequence is processed from ``t = T-1`` down to ``0``.
* Output arrays are written, never read by the caller's contract (the drivers use some
  of them as scratch before writing the result); gradient arrays of weights and biases
  (``dw_ih, dw_hh, db_ih, db_hh``) are accumulated into (``+=``), as PyTorch does.
"""

import numpy
from numba import config, cuda, types

from . import _cache, cells

#: Threads per block of every pointwise kernel; read at each launch.
THREADS_PER_BLOCK = 256

_cuda_jit = cuda.jit(cache=True)


def array_module():
    """The array module holding the drivers' arrays.

    Returns
    -------
    module
        ``numpy`` when Numba's CUDA simulator is on, else ``cupy`` (imported here, never at
        module import, so that this module imports without CuPy).
    """
    if config.ENABLE_CUDASIM:
        return numpy
    import cupy

    return cupy


# --------------------------------------------------------------------------- kernels
#
# One thread per (b, j) element of a (B, H) state. Each thread reads and writes only its
# own elements (and the G gate columns of unit j), so arrays can be updated in place.


@_cuda_jit
def _rnn_forward_step(y, b_ih, b_hh, h_proj, h_prev, lengths, t, relu):
    """Elman step ``t``: ``y[t]`` holds ``x_t W_ih^T`` on entry, ``h_t`` on exit.

    ``y`` (T, B, H), ``b_ih, b_hh`` (H,), ``h_proj`` (B, H) ``= h_prev W_hh^T``, ``h_prev``
    (B, H), ``lengths`` (B,): a sequence past its end carries ``h_prev``.
    """
    idx = cuda.grid(1)
    B = y.shape[1]
    H = y.shape[2]
    if idx < B * H:
        b = idx // H
        j = idx - b * H
        if t >= lengths[b]:
            y[t, b, j] = h_prev[b, j]
            return
        pre = y[t, b, j] + b_ih[j] + h_proj[b, j] + b_hh[j]
        if relu:
            y[t, b, j] = cells.rnn_relu_cell_forward(pre)
        else:
            y[t, b, j] = cells.rnn_tanh_cell_forward(pre)


@_cuda_jit
def _rnn_backward_step(y, dy, dh, dh_carry, lengths, t, relu, da):
    """Elman backward step ``t``: writes ``da[t]`` (T, B, H) from ``y``, ``dy`` (T, B, H).

    The gradient w.r.t. ``h_t`` is ``dh`` (B, H, from the GEMM of the successor step) plus
    ``dh_carry`` (B, H), which holds it for sequences passing through padded steps.
    """
    idx = cuda.grid(1)
    B = dh.shape[0]
    H = dh.shape[1]
    if idx < B * H:
        b = idx // H
        j = idx - b * H
        dh_total = dh[b, j] + dh_carry[b, j]
        if t >= lengths[b]:
            da[t, b, j] = 0
            dh_carry[b, j] = dh_total
            return
        dh_carry[b, j] = 0
        dh_total += dy[t, b, j]
        if relu:
            da[t, b, j] = cells.rnn_relu_cell_backward(y[t, b, j], dh_total)
        else:
            da[t, b, j] = cells.rnn_tanh_cell_backward(y[t, b, j], dh_total)


@_cuda_jit
def _lstm_forward_step(gates, b_ih, b_hh, h_proj, h_prev, c_prev, lengths, t, y, c):
    """LSTM step ``t``: ``gates[t]`` holds ``x_t W_ih^T`` on entry, the activations on exit.

    ``gates`` (T, B, 4H), ``b_ih, b_hh`` (4H,), ``h_proj`` (B, 4H) ``= h_prev W_hh^T``,
    ``h_prev, c_prev`` (B, H), ``lengths`` (B,); writes ``y[t]`` and ``c[t]`` of ``y, c``
    (T, B, H). A sequence past its end carries its state and gets zero gates.
    """
    idx = cuda.grid(1)
    B = y.shape[1]
    H = y.shape[2]
    if idx < B * H:
        b = idx // H
        j = idx - b * H
        k_i, k_f, k_g, k_o = j, H + j, 2 * H + j, 3 * H + j
        if t >= lengths[b]:
            gates[t, b, k_i] = 0
            gates[t, b, k_f] = 0
            gates[t, b, k_g] = 0
            gates[t, b, k_o] = 0
            c[t, b, j] = c_prev[b, j]
            y[t, b, j] = h_prev[b, j]
            return
        i, f, g, o, c_new, h_new = cells.lstm_cell_forward(
            gates[t, b, k_i] + b_ih[k_i] + h_proj[b, k_i] + b_hh[k_i],
            gates[t, b, k_f] + b_ih[k_f] + h_proj[b, k_f] + b_hh[k_f],
            gates[t, b, k_g] + b_ih[k_g] + h_proj[b, k_g] + b_hh[k_g],
            gates[t, b, k_o] + b_ih[k_o] + h_proj[b, k_o] + b_hh[k_o],
            c_prev[b, j],
        )
        gates[t, b, k_i] = i
        gates[t, b, k_f] = f
        gates[t, b, k_g] = g
        gates[t, b, k_o] = o
        c[t, b, j] = c_new
        y[t, b, j] = h_new


@_cuda_jit
def _lstm_backward_step(gates, c, c_before, dy, dh, dh_carry, dc, lengths, t, da):
    """LSTM backward step ``t``.

    Reads ``gates`` (T, B, 4H), ``c, c_before, dy`` (T, B, H); the gradient w.r.t.
    ``h_t`` is ``dh + dh_carry`` (B, H; the carry holds it through padded steps); ``dc``
    (B, H) enters as the gradient w.r.t. ``c[t]`` and leaves as the one w.r.t. the state
    step ``t`` started from; writes ``da[t]`` of ``da`` (T, B, 4H).
    """
    idx = cuda.grid(1)
    B = dh.shape[0]
    H = dh.shape[1]
    if idx < B * H:
        b = idx // H
        j = idx - b * H
        k_i, k_f, k_g, k_o = j, H + j, 2 * H + j, 3 * H + j
        dh_total = dh[b, j] + dh_carry[b, j]
        if t >= lengths[b]:
            da[t, b, k_i] = 0
            da[t, b, k_f] = 0
            da[t, b, k_g] = 0
            da[t, b, k_o] = 0
            dh_carry[b, j] = dh_total
            return
        dh_carry[b, j] = 0
        da_i, da_f, da_g, da_o, dc_prev = cells.lstm_cell_backward(
            gates[t, b, k_i], gates[t, b, k_f], gates[t, b, k_g], gates[t, b, k_o],
            c[t, b, j], c_before[t, b, j],
            dh_total + dy[t, b, j], dc[b, j],
        )
        da[t, b, k_i] = da_i
        da[t, b, k_f] = da_f
        da[t, b, k_g] = da_g
        da[t, b, k_o] = da_o
        dc[b, j] = dc_prev


@_cuda_jit
def _gru_forward_step(y, gates, b_ih, b_hh, h_proj, h_prev, lengths, t, h_n_proj):
    """GRU step ``t``: ``gates[t]`` holds ``x_t W_ih^T`` on entry, the activations on exit.

    ``gates`` (T, B, 3H), ``b_ih, b_hh`` (3H,), ``h_proj`` (B, 3H) ``= h_prev W_hh^T``,
    ``h_prev`` (B, H), ``lengths`` (B,); writes ``y[t]`` and ``h_n_proj[t]`` of
    ``y, h_n_proj`` (T, B, H). A sequence past its end carries its state, zero gates.
    """
    idx = cuda.grid(1)
    B = y.shape[1]
    H = y.shape[2]
    if idx < B * H:
        b = idx // H
        j = idx - b * H
        k_r, k_z, k_n = j, H + j, 2 * H + j
        if t >= lengths[b]:
            gates[t, b, k_r] = 0
            gates[t, b, k_z] = 0
            gates[t, b, k_n] = 0
            h_n_proj[t, b, j] = 0
            y[t, b, j] = h_prev[b, j]
            return
        hn = h_proj[b, k_n] + b_hh[k_n]
        r, z, n, h_new = cells.gru_cell_forward(
            gates[t, b, k_r] + b_ih[k_r],
            gates[t, b, k_z] + b_ih[k_z],
            gates[t, b, k_n] + b_ih[k_n],
            h_proj[b, k_r] + b_hh[k_r],
            h_proj[b, k_z] + b_hh[k_z],
            hn,
            h_prev[b, j],
        )
        gates[t, b, k_r] = r
        gates[t, b, k_z] = z
        gates[t, b, k_n] = n
        h_n_proj[t, b, j] = hn
        y[t, b, j] = h_new


@_cuda_jit
def _gru_backward_step(gates, h_n_proj, h_before, dy, dh, dh_direct, lengths, t, da_x, da_h):
    """GRU backward step ``t``.

    Reads ``gates`` (T, B, 3H), ``h_n_proj, h_before, dy`` (T, B, H) and ``dh`` (B, H),
    the part of the gradient that came back through ``W_hh``; ``dh_direct`` (B, H) enters
    as the direct part from the successor step (``dh * z``, or the whole gradient through
    a padded step) and leaves as this step's; writes ``da_x[t]`` and ``da_h[t]`` of
    ``da_x, da_h`` (T, B, 3H).
    """
    idx = cuda.grid(1)
    B = dh.shape[0]
    H = dh.shape[1]
    if idx < B * H:
        b = idx // H
        j = idx - b * H
        k_r, k_z, k_n = j, H + j, 2 * H + j
        dh_total = dh[b, j] + dh_direct[b, j]
        if t >= lengths[b]:
            da_x[t, b, k_r] = 0
            da_x[t, b, k_z] = 0
            da_x[t, b, k_n] = 0
            da_h[t, b, k_r] = 0
            da_h[t, b, k_z] = 0
            da_h[t, b, k_n] = 0
            dh_direct[b, j] = dh_total
            return
        da_r, da_z, da_n, dhn, dh_prev = cells.gru_cell_backward(
            gates[t, b, k_r], gates[t, b, k_z], gates[t, b, k_n], h_n_proj[t, b, j],
            h_before[t, b, j], dh_total + dy[t, b, j],
        )
        da_x[t, b, k_r] = da_r
        da_x[t, b, k_z] = da_z
        da_x[t, b, k_n] = da_n
        da_h[t, b, k_r] = da_r
        da_h[t, b, k_z] = da_z
        da_h[t, b, k_n] = dhn
        dh_direct[b, j] = dh_prev


_cache.flush_if_sources_changed(
    __name__,
    [_rnn_forward_step, _rnn_backward_step, _lstm_forward_step, _lstm_backward_step,
     _gru_forward_step, _gru_backward_step],
)


def kernel_signatures(dtype):
    """Every kernel with the argument types the drivers launch it with.

    Parameters
    ----------
    dtype : numba float type
        ``numba.types.float32`` or ``numba.types.float64``.

    Returns
    -------
    list of (kernel, tuple of numba types)
        ``t`` is a Python ``int`` (int64) and ``relu`` a Python ``bool`` at launch; all
        arrays are C-contiguous; ``lengths`` is int64.
    """
    v, m, s = dtype[::1], dtype[:, ::1], dtype[:, :, ::1]
    t, flag, n = types.int64, types.boolean, types.int64[::1]
    return [
        (_rnn_forward_step, (s, v, v, m, m, n, t, flag)),
        (_rnn_backward_step, (s, s, m, m, n, t, flag, s)),
        (_lstm_forward_step, (s, v, v, m, m, m, n, t, s, s)),
        (_lstm_backward_step, (s, s, s, s, m, m, m, n, t, s)),
        (_gru_forward_step, (s, s, v, v, m, m, n, t, s)),
        (_gru_backward_step, (s, s, s, s, m, m, n, t, s, s)),
    ]


def compile_all_ptx(cc=(9, 0)):
    """Compile every kernel to PTX for float32 and float64, offline (no GPU needed).

    Needs numba-cuda with NVVM and the simulator off (the simulator has no compiler).

    Parameters
    ----------
    cc : tuple of int
        Compute capability to compile for.

    Returns
    -------
    dict
        ``{(kernel name, 'float32' | 'float64'): PTX text}``.
    """
    ptx = {}
    for dtype in (types.float32, types.float64):
        for kernel, argtypes in kernel_signatures(dtype):
            text, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=cc)
            ptx[(kernel.py_func.__name__, str(dtype))] = text
    return ptx


# --------------------------------------------------------------------------- host helpers


def _launcher(xp):
    """How to hand arrays to kernels, and the stream to launch them on.

    Returns
    -------
    view : callable
        Array -> kernel argument: the array itself under the simulator; on a GPU a Numba
        view of the CuPy memory, made once per driver call without the stream
        synchronisation Numba would otherwise do for a foreign array at every launch.
    stream
        CuPy's current stream (``0``, the default stream, when that is the null stream),
        so kernels and GEMMs run in issue order.
    """
    if xp is numpy:
        return (lambda a: a), 0
    ptr = xp.cuda.get_current_stream().ptr
    stream = cuda.external_stream(ptr) if ptr else 0
    return (lambda a: cuda.as_cuda_array(a, sync=False)), stream


def _launch(kernel, n, stream, *args):
    """Launch ``kernel`` with one thread per element of ``n`` on a 1-D grid."""
    tpb = THREADS_PER_BLOCK
    blocks = max(1, -(-n // tpb))  # ceil; a zero-sized grid is an error on a device
    kernel[blocks, tpb, stream](*args)


def _time_index(step, T, reverse):
    """True time index of processing step ``step``."""
    return T - 1 - step if reverse else step


def _rows(a):
    """View (T, B, K) as (T*B, K); a GEMM writing into it must reach ``a``, so no copy."""
    if not a.flags.c_contiguous:
        raise ValueError("x, dy and every output array must be C-contiguous")
    return a.reshape(-1, a.shape[-1])


def _contiguous(xp, *arrays):
    """The arrays as C-contiguous arrays (no copy when they already are)."""
    return [xp.ascontiguousarray(a) for a in arrays]


def _states_before(states, first, reverse, out):
    """Fill ``out[t]`` with the state each time step started from.

    ``states`` (T, B, H) holds the state produced at each time step and ``first`` (B, H)
    the initial state; ``out`` (T, B, H) is written. Works on NumPy and CuPy arrays.
    """
    if reverse:
        out[-1] = first
        out[:-1] = states[1:]
    else:
        out[0] = first
        out[1:] = states[:-1]


def _input_and_weight_grads(xp, da_x, da_h, x, h_before, w_ih, dx, dw_ih, dw_hh, db_ih, db_hh):
    """Gradients that are GEMMs over all time steps at once.

    ``da_x`` and ``da_h`` (T, B, G*H) are the gradients w.r.t. the input and recurrent
    projections (the same array except for GRU), ``h_before`` (T, B, H) the hidden state
    each step started from. Writes ``dx`` (T, B, I); accumulates the weight and bias
    gradients.
    """
    da_x2 = _rows(da_x)
    da_h2 = _rows(da_h)
    xp.matmul(da_x2, w_ih, out=_rows(dx))
    dw_ih += da_x2.T @ _rows(x)
    dw_hh += da_h2.T @ _rows(h_before)
    db_ih += da_x2.sum(axis=0)
    db_hh += da_h2.sum(axis=0)


# --------------------------------------------------------------------------- Elman RNN


def rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, lengths, relu, y, h_n):
    """As :func:`numbarnn.kernels.cpu.rnn_forward`, on device arrays of :func:`array_module`."""
    xp = array_module()
    view, stream = _launcher(xp)
    T, B, I = x.shape
    H = h0.shape[1]
    b_ih, b_hh, h0, lengths = _contiguous(xp, b_ih, b_hh, h0, lengths)
    # y holds the input projection of each step until that step overwrites it with h_t.
    xp.matmul(_rows(x), w_ih.T, out=_rows(y))
    h_proj = xp.empty((B, H), dtype=x.dtype)
    y_k, b_ih_k, b_hh_k, h_proj_k, lengths_k = map(view, (y, b_ih, b_hh, h_proj, lengths))
    h, h_k = h0, view(h0)
    for step in range(T):
        t = _time_index(step, T, reverse)
        xp.matmul(h, w_hh.T, out=h_proj)
        _launch(
            _rnn_forward_step, B * H, stream,
            y_k, b_ih_k, b_hh_k, h_proj_k, h_k, lengths_k, t, bool(relu),
        )
        h, h_k = y[t], y_k[t]
    h_n[...] = h


def rnn_backward(
    x, w_ih, w_hh, h0, reverse, lengths, relu, y, dy, dh_n, dx, dh0, dw_ih, dw_hh, db_ih, db_hh
):
    """As :func:`numbarnn.kernels.cpu.rnn_backward`, on device arrays of :func:`array_module`."""
    xp = array_module()
    view, stream = _launcher(xp)
    T, B, I = x.shape
    H = h0.shape[1]
    da = xp.empty((T, B, H), dtype=x.dtype)
    dh = xp.array(dh_n, dtype=x.dtype, order="C")  # a copy: overwritten every step
    dh_carry = xp.zeros((B, H), dtype=x.dtype)
    (lengths,) = _contiguous(xp, lengths)
    y_k, dy_k, dh_k, carry_k, lengths_k, da_k = map(view, (y, dy, dh, dh_carry, lengths, da))
    for step in range(T - 1, -1, -1):
        t = _time_index(step, T, reverse)
        _launch(
            _rnn_backward_step, B * H, stream,
            y_k, dy_k, dh_k, carry_k, lengths_k, t, bool(relu), da_k,
        )
        xp.matmul(da[t], w_hh, out=dh)
    dh0[...] = dh + dh_carry
    h_before = xp.empty((T, B, H), dtype=x.dtype)
    _states_before(y, h0, reverse, h_before)
    _input_and_weight_grads(xp, da, da, x, h_before, w_ih, dx, dw_ih, dw_hh, db_ih, db_hh)


# --------------------------------------------------------------------------- LSTM


def lstm_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse, lengths, y, c, gates, h_n, c_n):
    """As :func:`numbarnn.kernels.cpu.lstm_forward`, on device arrays of :func:`array_module`."""
    xp = array_module()
    view, stream = _launcher(xp)
    T, B, I = x.shape
    H = h0.shape[1]
    b_ih, b_hh, h0, c0, lengths = _contiguous(xp, b_ih, b_hh, h0, c0, lengths)
    # gates holds the input projection of each step until that step overwrites it.
    xp.matmul(_rows(x), w_ih.T, out=_rows(gates))
    h_proj = xp.empty((B, 4 * H), dtype=x.dtype)
    gates_k, b_ih_k, b_hh_k, h_proj_k, y_k, c_k, lengths_k = map(
        view, (gates, b_ih, b_hh, h_proj, y, c, lengths)
    )
    h, h_k, c_prev, c_prev_k = h0, view(h0), c0, view(c0)
    for step in range(T):
        t = _time_index(step, T, reverse)
        xp.matmul(h, w_hh.T, out=h_proj)
        _launch(
            _lstm_forward_step, B * H, stream,
            gates_k, b_ih_k, b_hh_k, h_proj_k, h_k, c_prev_k, lengths_k, t, y_k, c_k,
        )
        h, h_k, c_prev, c_prev_k = y[t], y_k[t], c[t], c_k[t]
    h_n[...] = h
    c_n[...] = c_prev


def lstm_backward(
    x, w_ih, w_hh, h0, c0, reverse, lengths, y, c, gates, dy, dh_n, dc_n,
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh,
):
    """As :func:`numbarnn.kernels.cpu.lstm_backward`, on device arrays of :func:`array_module`."""
    xp = array_module()
    view, stream = _launcher(xp)
    T, B, I = x.shape
    H = h0.shape[1]
    c_before = xp.empty((T, B, H), dtype=x.dtype)
    _states_before(c, c0, reverse, c_before)
    da = xp.empty((T, B, 4 * H), dtype=x.dtype)
    dh = xp.array(dh_n, dtype=x.dtype, order="C")  # copies: carried through the sweep
    dcell = xp.array(dc_n, dtype=x.dtype, order="C")
    dh_carry = xp.zeros((B, H), dtype=x.dtype)
    (lengths,) = _contiguous(xp, lengths)
    args_k = list(map(view, (gates, c, c_before, dy, dh, dh_carry, dcell, lengths)))
    da_k = view(da)
    for step in range(T - 1, -1, -1):
        t = _time_index(step, T, reverse)
        _launch(_lstm_backward_step, B * H, stream, *args_k, t, da_k)
        xp.matmul(da[t], w_hh, out=dh)
    dh0[...] = dh + dh_carry
    dc0[...] = dcell
    h_before = c_before  # reuse the buffer: c_before is no longer needed
    _states_before(y, h0, reverse, h_before)
    _input_and_weight_grads(xp, da, da, x, h_before, w_ih, dx, dw_ih, dw_hh, db_ih, db_hh)


# --------------------------------------------------------------------------- GRU


def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, lengths, y, gates, h_n_proj, h_n):
    """As :func:`numbarnn.kernels.cpu.gru_forward`, on device arrays of :func:`array_module`."""
    xp = array_module()
    view, stream = _launcher(xp)
    T, B, I = x.shape
    H = h0.shape[1]
    b_ih, b_hh, h0, lengths = _contiguous(xp, b_ih, b_hh, h0, lengths)
    # gates holds the input projection of each step until that step overwrites it.
    xp.matmul(_rows(x), w_ih.T, out=_rows(gates))
    h_proj = xp.empty((B, 3 * H), dtype=x.dtype)
    y_k, gates_k, b_ih_k, b_hh_k, h_proj_k, hnp_k, lengths_k = map(
        view, (y, gates, b_ih, b_hh, h_proj, h_n_proj, lengths)
    )
    h, h_k = h0, view(h0)
    for step in range(T):
        t = _time_index(step, T, reverse)
        xp.matmul(h, w_hh.T, out=h_proj)
        _launch(
            _gru_forward_step, B * H, stream,
            y_k, gates_k, b_ih_k, b_hh_k, h_proj_k, h_k, lengths_k, t, hnp_k,
        )
        h, h_k = y[t], y_k[t]
    h_n[...] = h


def gru_backward(
    x, w_ih, w_hh, h0, reverse, lengths, y, gates, h_n_proj, dy, dh_n,
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh,
):
    """As :func:`numbarnn.kernels.cpu.gru_backward`, on device arrays of :func:`array_module`."""
    xp = array_module()
    view, stream = _launcher(xp)
    T, B, I = x.shape
    H = h0.shape[1]
    h_before = xp.empty((T, B, H), dtype=x.dtype)
    _states_before(y, h0, reverse, h_before)
    da_x = xp.empty((T, B, 3 * H), dtype=x.dtype)
    da_h = xp.empty((T, B, 3 * H), dtype=x.dtype)
    # The gradient w.r.t. h_prev is dh (through W_hh, from the GEMM) + dh_direct (from
    # the cell); the next step's kernel adds the two, which saves a launch per step.
    dh = xp.array(dh_n, dtype=x.dtype, order="C")
    dh_direct = xp.zeros((B, H), dtype=x.dtype)
    (lengths,) = _contiguous(xp, lengths)
    args_k = list(map(view, (gates, h_n_proj, h_before, dy, dh, dh_direct, lengths)))
    da_x_k, da_h_k = view(da_x), view(da_h)
    for step in range(T - 1, -1, -1):
        t = _time_index(step, T, reverse)
        _launch(_gru_backward_step, B * H, stream, *args_k, t, da_x_k, da_h_k)
        xp.matmul(da_h[t], w_hh, out=dh)
    dh0[...] = dh + dh_direct
    _input_and_weight_grads(xp, da_x, da_h, x, h_before, w_ih, dx, dw_ih, dw_hh, db_ih, db_hh)
