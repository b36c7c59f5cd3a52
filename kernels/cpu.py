"""CPU drivers: one layer, one direction, a whole sequence, compiled with ``@njit``.

Each driver follows the same plan:

* forward: one GEMM for the input projection of all time steps, then per step one
  recurrent GEMM and one fused loop of the per-element cell math from
  :mod:`numbarnn.kernels.cells`;
* backward: a sweep backward through time from the saved activations (per step one fused
  loop and one GEMM for the gradient w.r.t. the previous hidden state), in chunks of
  steps; after each chunk the input gradient and the weight gradients of its steps as
  GEMMs (see ``_CHUNK_ROWS``).

The per-step GEMMs multiply by the recurrent weights packed once per call
(:mod:`numbarnn.kernels.gemm`; see ``_PARALLEL_GEMM`` for when BLAS does them instead), and
so do the input projection and the chunks' input gradient while ``w_ih`` is small (see
``_PACKED_WEIGHT_BYTES``). On several of Numba's threads (``numba.set_num_threads``) every
product, BLAS's included, goes through packed operands on those threads, and the steps of
the recurrence are shared out by batch rows (see ``_THREADED_PRODUCT`` and ``_row_parts``);
at batch 1 two threads share each step's product, half the panels each (see
``_SHARED_STEP_PRODUCT``). All products go through packed operands on one thread too where
the BLAS's vectors are narrower than the packed kernels' (see ``_blas_wide``), and the
weight gradients of a chunk always do (see ``_chunk_grads``).
Temporaries are small: the packed weights, (B, G*H) per step and one chunk of gate
gradients (packed once more for the weight gradients, with the chunk's inputs and states).

They are plain ``@njit`` functions and can be called from Python or from a user's own
``@njit`` code. Conventions shared by all drivers:

* Shapes: ``T`` steps, ``B`` batch, ``I`` input features, ``H`` hidden units, ``G`` gates
  (1 for the Elman RNN, 4 for LSTM, 3 for GRU).
* Weights are in PyTorch's layout and gate order: ``w_ih`` is ``(G*H, I)``, ``w_hh`` is
  ``(G*H, H)``, ``b_ih`` and ``b_hh`` are ``(G*H,)`` (pass zeros for a layer without bias),
  so a layer's ``params`` (or a converted torch ``state_dict``) can be handed in directly.
* ``x``, ``dy``, ``w_ih``, ``w_hh`` and every output array are C-contiguous and of one
  float dtype (float32 or float64) shared by all arguments. ``h0``, ``c0``, ``dh_n`` and
  ``dc_n`` may have any layout.
* Time index ``t`` of every saved array is the true time step: with ``reverse=True`` the
  sequence is processed from ``t = T-1`` down to ``0``, as in the backward direction of a
  bidirectional layer.
* Variable lengths: ``lengths`` (B,) int64 holds each sequence's length (pass
  ``np.full(B, T)`` for a full batch); sequence ``b`` is active at time ``t`` when
  ``t < lengths[b]``. At inactive steps the state carries over unchanged and ``y`` (and
  ``c``) hold that carried state, so ``h_n`` is the state at each sequence's true end and
  the reverse direction starts at its true end; gate arrays hold zeros there. Callers that
  show ``y`` as output zero it past each end. Backward ignores ``dy`` at inactive steps
  and passes the state gradients through them.
* Output arrays are written, never read; gradient arrays of weights and biases
  (``dw_ih, dw_hh, db_ih, db_hh``) are accumulated into (``+=``), as PyTorch does.
"""

import ctypes
import glob
import os

import llvmlite.binding
import numpy as np
from numba import njit, prange, types

from . import _cache, cells, gemm

_jit = njit(cache=True, error_model="numpy")
_jit_threads = njit(cache=True, error_model="numpy", parallel=True)

# The recurrent products (one per time step: batch by weights) multiply by weights packed
# once per call (:mod:`numbarnn.kernels.gemm`; 1.3-3x BLAS's rate at these shapes, measured).
# On one Numba thread, when the BLAS has more than one, a product of at least
# _PARALLEL_GEMM multiply-adds is one multithreaded BLAS call instead (2 threads, float32,
# B = 64, H >= 256: 105-125 GFLOP/s against 70-90).
_PARALLEL_GEMM = 8 * 10**6

# At batch 1 the recurrence multiplies by packed weights (the one-row kernel of
# :mod:`numbarnn.kernels.gemm`) from _PACKED_MATVEC_STEPS steps on, and reads them unpacked
# (``gemm.matvec``) below: packing costs a few steps' worth of the time it saves. AMD Zen 3,
# 1 thread, float32, (128, 512): packing 20 us, then 3.2 us a step against 4.9 unpacked;
# (256, 1024): 72 us, then 16 against 27. LSTM and GRU forward at T,B,I,H = 50,1,128,128:
# 1.10-1.14x (medians of 300 calls, three pairs of processes; measured).
_PACKED_MATVEC_STEPS = 16

# The products done once per call with many rows (the input projection of all steps, the
# input gradient of a chunk) go through packed weights too while the weights fit in L2:
# 1 thread, float32, 1.15-1.6x BLAS's rate at 128-256 KB of weights (the smaller the
# product, the more), even at 768 KB, 0.85-0.9x at 1-4 MB (measured).
_PACKED_WEIGHT_BYTES = 512 * 1024

# On several Numba threads (``numba.get_num_threads()``) the products of at least
# _THREADED_PRODUCT multiply-adds run on those threads (:mod:`numbarnn.kernels.gemm`), all of
# them, BLAS's included: OpenBLAS's workers spin for about 0.1 s after each of its calls and
# take the cores from Numba's. 2 threads, float32, T,B,I,H = 100,64,512,512 (LSTM, measured):
# backward 336-346 ms with every product on Numba's threads, 578-725 with the weight
# gradients left to BLAS; forward 171 ms, against 199 with each step's product one
# multithreaded BLAS call. One step's product at B = 16-64, H = 128-512: 120-185 GFLOP/s on
# two threads, against 90-97 on one and 100-130 for multithreaded BLAS. Below
# _THREADED_PRODUCT a product stays on one thread (a few microseconds: at B,H = 16,64
# (2**18) a step's product ran in 8 us on two threads, 6 on one) but still off BLAS: one
# BLAS call per backward made the next call's threaded steps wait for its workers (7.6 ms
# against 0.45, measured).
_THREADED_PRODUCT = 2**19

# ... except the steps of the recurrence once the batch has rows enough (``_row_parts``):
# each thread then runs every step of its own block of batch rows, product and cell math,
# with no synchronisation between steps. Sharing out each step's product by panels and its
# cell math by rows took two parallel regions per step, each as slow as its slower thread on
# a shared machine. 2 threads, float32, median ms of four processes, forward / train step:
# LSTM 7.99 / 21.8 against 10.7 / 23.6 at T,B,I,H = 200,16,64,128; RNN 1.74 / 7.00 against
# 3.53 / 9.26 there, 13.7 / 49.1 against 17.7 / 56.7 at 100,64,256,256; LSTM within 2.5% at
# 100,64,256,256 and 100,64,512,512 (measured).


def _openblas_function(name, restype):
    """The function ``openblas_<name>`` of the OpenBLAS that SciPy bundles (the BLAS behind
    Numba's ``np.dot``) as a ctypes function, or None where there is none."""
    try:
        import scipy
    except ImportError:
        return None
    root = os.path.dirname(scipy.__file__)
    for path in glob.glob(root + ".libs/*openblas*") + glob.glob(root + "/.dylibs/*openblas*"):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            function = getattr(lib, f"{prefix}_{name}", None)
            if function is not None:
                function.restype, function.argtypes = restype, []
                return function
    return None


# Vector bytes of OpenBLAS's kernels by the name of the core it picked (lower case): its
# AVX-512 and its AVX/AVX2 targets; its other targets have 16-byte vectors or fewer.
_OPENBLAS_VECTOR_BYTES = {
    **dict.fromkeys(("skylakex", "cooperlake", "sapphirerapids"), 64),
    **dict.fromkeys(("haswell", "zen", "sandybridge", "excavator", "steamroller",
                     "piledriver", "bulldozer"), 32),
}


def _openblas_vector_bytes():
    """Bytes per vector of the bundled OpenBLAS's kernels, from the core it runs for; None
    where no OpenBLAS is found (or it does not say)."""
    corename = _openblas_function("get_corename", ctypes.c_char_p)
    name = corename() if corename is not None else None
    if not name:
        return None
    return _OPENBLAS_VECTOR_BYTES.get(name.decode().strip().lower(), 16)


_openblas_threads = None


@ctypes.CFUNCTYPE(ctypes.c_int)
def _blas_threads_callback():
    # Looked up on the first call, when SciPy's BLAS is about to be used anyway.
    global _openblas_threads
    if _openblas_threads is None:
        _openblas_threads = _openblas_function("get_num_threads", ctypes.c_int) or (lambda: 1)
    return _openblas_threads()


_openblas_wide = None


@ctypes.CFUNCTYPE(ctypes.c_int)
def _blas_wide_callback():
    global _openblas_wide
    if _openblas_wide is None:
        width = _openblas_vector_bytes()
        _openblas_wide = int(width is None or width >= gemm._VECTOR_BYTES)
    return _openblas_wide


# By symbol name, so that cached drivers find them in a new process. Where no
# bundled OpenBLAS is found, the first answers 1 (packed products, the choice for one
# thread) and the second 1 (the choices measured for one thread, below, stand).
llvmlite.binding.add_symbol(
    "numbarnn_blas_threads", ctypes.cast(_blas_threads_callback, ctypes.c_void_p).value
)
_blas_threads = types.ExternalFunction("numbarnn_blas_threads", types.intc())
llvmlite.binding.add_symbol(
    "numbarnn_blas_wide", ctypes.cast(_blas_wide_callback, ctypes.c_void_p).value
)
#: Whether the BLAS's vectors are as wide as the micro-kernel's (:mod:`gemm`). Where they are
#: narrower, no product goes to BLAS, on one thread either: SciPy's OpenBLAS runs its AVX2
#: kernels on AMD's Zen 5 (AVX-512), at 94-98 GFLOP/s on one thread against 165-192 for the
#: packed products (float32, measured; 194 with ``OPENBLAS_CORETYPE=SkylakeX``).
_blas_wide = types.ExternalFunction("numbarnn_blas_wide", types.intc())


@_jit
def _blas_allowed():
    """Whether products may go to BLAS (where measured faster, below): on one Numba thread,
    with a BLAS whose vectors are as wide as the micro-kernel's (see ``_blas_wide``)."""
    return gemm.numba_threads() == 1 and _blas_wide() != 0


@_jit
def _threaded(multiply_adds):
    """Whether a product of ``multiply_adds`` runs on Numba's threads."""
    return multiply_adds >= _THREADED_PRODUCT and gemm.numba_threads() > 1


@_jit
def _row_parts(T, B, G, H):
    """Numba's threads that share out the batch rows of the recurrence of ``T`` steps of ``B``
    rows (``G`` gates, ``H`` units): 1 (the steps' products may still go on the threads)
    below ``_THREADED_PRODUCT`` multiply-adds of recurrent products in all."""
    if B < 2 or not _threaded(T * B * G * H * H):
        return 1
    return min(gemm.numba_threads(), B)


# At batch 1 on several Numba threads, a step's product of at least _SHARED_STEP_PRODUCT
# multiply-adds is shared by two threads, half the panels each (``gemm.matmul_share``), and
# one of them runs the step's cell math: each thread then reads its half of the weights
# from its own L2 at every step, which bounds a batch-1 step on one thread. AMD Zen 3,
# float32, T = 50, I = H, 2 threads, three pairs of processes, old/new forward and train:
# LSTM 1.35-1.40 and 1.26-1.28 at H = 128, 1.09-1.11 and 1.03-1.04 at H = 64 (2**14),
# 0.77-0.87 and 0.94-0.96 at H = 32; GRU 1.30-1.33 and 1.19-1.21, RNN 1.10-1.15 and
# 1.10-1.13 at H = 128 (measured). The tokens cost 0.25-0.29 us a step.
_SHARED_STEP_PRODUCT = 2**14


@_jit
def _shares_steps(B, n_panels, K, nr):
    """Whether two threads share each step's product over panels (``n_panels``, ``K``,
    ``nr``) at batch ``B``."""
    return B == 1 and gemm.numba_threads() > 1 and n_panels > 1 and (
        n_panels * K * nr >= _SHARED_STEP_PRODUCT)


@_jit
def _step_counters(B, panels):
    """Counters of the tokens of the steps (``gemm.share_counters``) when two threads share
    each step's product over ``panels`` (batch ``B``), else an empty array."""
    counters = gemm.share_counters()
    n_panels, K, nr = panels.shape
    return counters if _shares_steps(B, n_panels, K, nr) else counters[:0]


@_jit
def _shared_step_product(a, panels, out, counters, first, part, skip):
    """Thread ``part``'s part (0 or 1) of a product shared by two threads (tokens ``first``
    and ``first + 1`` of ``counters``): its own half of the panels, and the other half if
    that is still free; none of the work when ``skip``."""
    for k in range(2):
        share = (part + k) % 2
        if gemm.claim_share(counters, first, share):
            if not skip:
                gemm.matmul_share(a, panels, out, share, 2)
            gemm.finish_share(counters)


@_jit
def _take_cell_math(counters, first):
    """Whether this thread runs a step's cell math: always, except in steps shared by two
    threads (``counters`` not empty), where the thread that takes token ``first`` does."""
    return counters.shape[0] == 0 or gemm.claim_share(counters, first, np.intp(0))


@_jit
def _cell_math_done(counters):
    """The end of a step's cell math, for the other thread of shared steps."""
    if counters.shape[0] > 0:
        gemm.finish_share(counters)


@_jit
def _rows_of_part(part, parts, B):
    """The batch rows ``lo, hi`` of part ``part`` of a driver's parallel loop: its block of
    the ``B`` rows when ``parts > 1`` share them out, else all of them (shared steps)."""
    if parts > 1:
        return part * B // parts, (part + 1) * B // parts
    return 0, B


@_jit
def _product_part(a, w, panels, out, counters, first, part):
    """:func:`_step_product`; in shared steps thread ``part``'s part of it, tokens ``first``
    and ``first + 1``."""
    if counters.shape[0] > 0:
        _shared_step_product(a, panels, out, counters, first, part, np.bool_(False))
    else:
        _step_product(a, w, panels, out)


@_jit
def _forward_product(a, w, panels, out, counters, step, part):
    """Forward step ``step``'s product (:func:`_product_part`, tokens ``3 * step`` and
    ``3 * step + 1``), then whether this thread runs the step's cell math (token
    ``3 * step + 2``)."""
    _product_part(a, w, panels, out, counters, 3 * step, part)
    return _take_cell_math(counters, 3 * step + 2)


@_jit
def _backward_product(da_t, w, panels, dh, dh_saved, t, lengths, counters, first, part):
    """:func:`_backprop_state`; in shared steps (batch 1) thread ``part``'s part of it,
    tokens ``first`` and ``first + 1``, no product at all past the sequence's end."""
    if counters.shape[0] > 0:
        _shared_step_product(da_t, panels, dh, counters, first, part, t >= lengths[0])
    else:
        _backprop_state(da_t, w, panels, dh, dh_saved, t, lengths)


@_jit
def _time_index(step, T, reverse):
    """True time index of processing step ``step``."""
    return T - 1 - step if reverse else step


@_jit
def _state_before(states, first, t, reverse):
    """The state time step ``t`` started from: ``states[t - 1]`` (``states[t + 1]`` when
    ``reverse``), or ``first`` for the first step processed. (B, H) views."""
    if reverse:
        return first if t == states.shape[0] - 1 else states[t + 1]
    return first if t == 0 else states[t - 1]


@_jit
def _final_state(states, first, reverse):
    """The state after the last processing step: ``states[T - 1]`` (``states[0]`` when
    ``reverse``), or ``first`` when ``T == 0``."""
    T = states.shape[0]
    return _state_before(states, first, -1 if reverse else T, reverse)


# The backward sweep keeps the gradients w.r.t. the pre-activations of about this many
# rows (steps times batch) at once; each such chunk then goes into the input and weight
# gradients as GEMMs. As fast as GEMMs over all steps (measured), and no (T, B, G*H)
# temporary: above 32 MB glibc maps fresh memory for one, whose page faults cost 18 ms
# per 52 MB on the project's machine.
_CHUNK_ROWS = 1024


@_jit
def _chunk_steps(T, B):
    """Steps per chunk of the backward sweep."""
    return max(1, min(T, _CHUNK_ROWS // max(B, 1)))


@_jit
def _chunk_first_time(start, end, T, reverse):
    """Smallest true time index among processing steps ``start <= step < end``."""
    return T - end if reverse else start


@_jit
def _copy(src, dst):
    """``dst[...] = src`` for 1-D or 2-D arrays of one shape, any layout. Explicit loops: an
    array assignment compiles Numba's shape-mismatch message (2-3 s per pair of types on a
    cold cache) and ran 4x slower ((64, 256) and (256,) float32: 8 against 1.8 us, measured)."""
    src2, dst2 = np.atleast_2d(src), np.atleast_2d(dst)
    for i in range(dst2.shape[0]):
        from_row, to_row = src2[i], dst2[i]
        for j in range(to_row.shape[0]):
            to_row[j] = from_row[j]


@_jit
def _add_into(src, dst):
    """``dst += src`` for 2-D arrays of one shape, any layout; explicit loops, as in
    :func:`_copy` (the GRU backward's (64, 256) float32 per step: 2.4 against 15 us for
    ``dst[...] += src``, measured)."""
    for i in range(dst.shape[0]):
        from_row, to_row = src[i], dst[i]
        for j in range(to_row.shape[0]):
            to_row[j] += from_row[j]


@_jit
def _has_padding(t, lengths):
    """Whether any sequence has ended before time ``t``."""
    for b in range(lengths.shape[0]):
        if t >= lengths[b]:
            return True
    return False


@_jit
def _restore_padded_rows(dh, saved, t, lengths):
    """Rows of sequences inactive at time ``t`` get their gradient back from ``saved``."""
    for b in range(dh.shape[0]):
        if t >= lengths[b]:
            _copy(saved[b], dh[b])


@_jit
def _pack_weights(w, M, steps):
    """The weights ``w`` (K, N), any layout, of the products with ``M`` rows of ``steps``
    steps of a recurrence (0 for a product outside it: the input projection of all steps,
    the input gradient of a chunk), packed for :func:`_matmul` (:func:`gemm.pack`); or an
    empty array, meaning no packing, where that is as fast or faster:

    * ``M == 1`` when ``w.T`` has contiguous rows (the forward's ``w_hh.T`` at batch 1) and
      fewer than ``_PACKED_MATVEC_STEPS`` steps: a matrix-vector product reads them as they
      are;
    * on one Numba thread (``numba.get_num_threads()``), several BLAS threads and a product
      of at least ``_PARALLEL_GEMM`` multiply-adds: one multithreaded BLAS call;
    * on one Numba thread, a product outside the recurrence whose weights are over
      ``_PACKED_WEIGHT_BYTES``: BLAS.

    On several Numba threads every product goes through packed weights on those threads
    (see ``_THREADED_PRODUCT``), and so it does where the BLAS's vectors are narrower than
    the micro-kernel's (``_blas_allowed``). Where the threads share a product by panels (the
    steps at batch 1, a product of few rows outside the recurrence), each thread packs the
    panels it multiplies by (``gemm.pack_parallel``).
    """
    K, N = w.shape
    if M == 1 and w.strides[0] == w.itemsize and steps < _PACKED_MATVEC_STEPS:
        return np.zeros((0, K, 1), dtype=w.dtype)
    if _blas_allowed() and (
        (M * K * N >= _PARALLEL_GEMM and _blas_threads() > 1)
        or (steps == 0 and K * N * w.itemsize > _PACKED_WEIGHT_BYTES)
    ):
        return np.zeros((0, K, 1), dtype=w.dtype)
    nr = gemm.panel_width(w.itemsize, M)
    if steps > 0 and _shares_steps(M, -(-N // nr), K, nr):
        return gemm.pack_parallel(w, M, np.intp(2))  # the halves of _shared_step_product
    if steps == 0 and _threaded(M * K * N):
        return gemm.pack_for_threads(w, M)
    return gemm.pack(w, M)


@_jit
def _matmul(a, w, panels, out):
    """``out = a @ w``: ``a`` (M, K), ``w`` (K, N), ``out`` (M, N), all C- or
    F-contiguous; ``panels`` is ``_pack_weights(w, M, ...)``."""
    if panels.shape[0] > 0:
        if _threaded(a.shape[0] * a.shape[1] * out.shape[1]):
            gemm.matmul_parallel(a, panels, out, False)
        else:
            gemm.matmul(a, panels, out, False)
    elif a.shape[0] == 1 and w.strides[0] == w.itemsize:
        gemm.matvec(w.T, a[0], out[0])
    else:
        np.dot(a, w, out)


@_jit
def _step_product(a, w, panels, out):
    """One step's product ``out = a @ w`` as :func:`_matmul` does it; with ``w`` None, on this
    thread alone over the panels (a thread's block of the batch rows, inside a parallel
    region). A None ``w`` compiles a version without :func:`_matmul`'s other paths (among
    them its own parallel loop), so that the drivers' parallel loops do not compile those
    once more."""
    if w is None:
        gemm.matmul(a, panels, out, False)
    else:
        _matmul(a, w, panels, out)


@_jit
def _project_input(x, w_ih, out):
    """``out = x @ w_ih.T`` over all steps: ``x`` (T, B, I), ``w_ih`` (G*H, I), ``out``
    (T*B, G*H)."""
    T, B, I = x.shape
    x2 = x.reshape((T * B, I))
    _matmul(x2, w_ih.T, _pack_weights(w_ih.T, T * B, np.intp(0)), out)


@_jit
def _backprop_state(da_t, w_hh, w_panels, dh, dh_saved, t, lengths):
    """``dh = da_t @ w_hh`` (:func:`_step_product`): the gradient w.r.t. the state step ``t``
    started from, for the rows of ``da_t``, ``dh``, ``dh_saved`` and ``lengths`` (rows, ...).

    ``w_panels`` is ``_pack_weights(w_hh, B, T)``. Sequences already ended at ``t`` keep
    their ``dh`` (the step did not touch them); ``dh_saved`` is scratch.
    """
    padded = _has_padding(t, lengths)
    if padded:
        _copy(dh, dh_saved)
    _step_product(da_t, w_hh, w_panels, dh)
    if padded:
        _restore_padded_rows(dh, dh_saved, t, lengths)


@_jit
def _gate_blocks(row, H):
    """The consecutive length-``H`` blocks of a (G*H,) row, for G = 3 or 4 (the 4th is
    empty for G = 3). Loops from 0 over such views vectorise; loops over ``row[k*H + j]``
    do not (measured)."""
    return row[:H], row[H : 2 * H], row[2 * H : 3 * H], row[3 * H :]


@_jit
def _summed(x_proj, b_ih, h_proj, b_hh):
    """A gate's pre-activation from its projections and biases, in PyTorch's order."""
    return (x_proj + b_ih) + (h_proj + b_hh)


# --------------------------------------------------------------------------- one row
#
# The fused pointwise work of one step for one batch row, shared by the sequence drivers
# and the single-step kernels of :mod:`numbarnn.kernels.step`. ``x_proj`` and ``h_proj``
# (G*H,) hold ``x_t W_ih^T`` and ``h_prev W_hh^T`` on entry; the biases are added as the
# activations are computed. A few simple loops over slices from index 0, rather than one
# call of a ``cells.*_cell_forward`` per element: loops over few arrays vectorise (5x
# faster, measured). The new state must not overlap the old one (a loop reading ``c[j]``
# and writing an overlapping ``c_out[j]`` falls back to scalar code); ``h_proj`` is free
# once the gates are computed, so callers may take the outputs from it.


@_jit
def _rnn_row(x_proj, h_proj, b_ih, b_hh, relu, h_out):
    """Elman row: ``h_out`` (H,) written."""
    for j in range(h_out.shape[0]):
        a = _summed(x_proj[j], b_ih[j], h_proj[j], b_hh[j])
        h_out[j] = cells.rnn_relu_cell_forward(a) if relu else cells.rnn_tanh_cell_forward(a)


@_jit
def _lstm_row(x_proj, h_proj, b_ih, b_hh, c, h_out, c_out):
    """LSTM row: ``x_proj`` leaves holding the gate activations i, f, g, o; ``h_out`` and
    ``c_out`` (H,) are written from ``c`` (H,); ``h_proj`` is read only before they are
    written (its first 2*H may be the outputs)."""
    H = c.shape[0]
    for gate in range(4):
        block = slice(gate * H, (gate + 1) * H)
        act, h_g, bi_g, bh_g = x_proj[block], h_proj[block], b_ih[block], b_hh[block]
        for j in range(H):
            act[j] = cells.lstm_gate_activation(_summed(act[j], bi_g[j], h_g[j], bh_g[j]), gate)
    i, f, g, o = _gate_blocks(x_proj, H)
    for j in range(H):
        c_out[j], h_out[j] = cells.lstm_state_update(i[j], f[j], g[j], o[j], c[j])


@_jit
def _gru_row(x_proj, h_proj, b_ih, b_hh, h, h_out, h_n_proj):
    """GRU row: ``x_proj`` leaves holding the gate activations r, z, n; ``h_out`` (H,) is
    written from ``h`` (H,), ``h_n_proj`` (H,) with ``W_hn h + b_hn`` (it may be the n block
    of ``h_proj``); ``h_proj`` is scratch (its first H may be ``h_out``)."""
    H = h.shape[0]
    r, z, n, _ = _gate_blocks(x_proj, H)
    h_r, h_z, h_n, _ = _gate_blocks(h_proj, H)
    bi_r, bi_z, bi_n, _ = _gate_blocks(b_ih, H)
    bh_r, bh_z, bh_n, _ = _gate_blocks(b_hh, H)
    for j in range(H):
        r[j] = cells.gru_gate(r[j] + bi_r[j], h_r[j] + bh_r[j])
    for j in range(H):
        z[j] = cells.gru_gate(z[j] + bi_z[j], h_z[j] + bh_z[j])
    for j in range(H):
        h_n_proj[j] = h_n[j] + bh_n[j]
    for j in range(H):
        n[j], h_out[j] = cells.gru_state_update(n[j] + bi_n[j], h_n_proj[j], r[j], z[j], h[j])


# The backward of one step for one batch row, from the saved activations: ``dh`` (H,) holds
# the gradient w.r.t. the row's state from the later steps, ``dy`` (H,) w.r.t. its output.
# In row functions of their own, like the forward's: inlined into the sweeps' loops they ran
# 3x slower (measured; LLVM vectorised them less well there).


@_jit
def _rnn_backward_row(y, dy, dh, relu, da):
    """Elman row: ``da`` (H,) written, the gradient w.r.t. the pre-activation."""
    if relu:
        for j in range(da.shape[0]):
            da[j] = cells.rnn_relu_cell_backward(y[j], dh[j] + dy[j])
    else:
        for j in range(da.shape[0]):
            da[j] = cells.rnn_tanh_cell_backward(y[j], dh[j] + dy[j])


@_jit
def _lstm_backward_row(gates, c, c_prev, dy, dh, dc, da):
    """LSTM row: ``da`` (4*H,) written from ``gates`` (4*H,) and the cell states ``c`` and
    ``c_prev`` (H,); ``dc`` (H,) goes from the gradient w.r.t. ``c`` to that w.r.t. ``c_prev``."""
    H = c.shape[0]
    i, f, g, o = _gate_blocks(gates, H)
    da_i, da_f, da_g, da_o = _gate_blocks(da, H)
    for j in range(H):
        da_i[j], da_f[j], da_g[j], da_o[j], dc[j] = cells.lstm_cell_backward(
            i[j], f[j], g[j], o[j], c[j], c_prev[j], dh[j] + dy[j], dc[j]
        )


@_jit
def _gru_backward_row(gates, h_n_proj, h_prev, dy, dh, da_x, da_h, dh_direct):
    """GRU row: ``da_x`` and ``da_h`` (3*H,) written (the gradients w.r.t. the input and the
    recurrent projections), and ``dh_direct`` (H,), the part of the gradient w.r.t. ``h_prev``
    that does not go through ``W_hh``."""
    H = h_prev.shape[0]
    r, z, n, _ = _gate_blocks(gates, H)
    dax_r, dax_z, dax_n, _ = _gate_blocks(da_x, H)
    dah_n = da_h[2 * H :]
    for j in range(H):
        dax_r[j], dax_z[j], dax_n[j], dah_n[j], dh_direct[j] = cells.gru_cell_backward(
            r[j], z[j], n[j], h_n_proj[j], h_prev[j], dh[j] + dy[j]
        )
    # r and z: the same gradient for both projections. A separate copy keeps the loop above
    # small enough to vectorise (7 stores made it scalar, 8x slower).
    _copy(da_x[: 2 * H], da_h[: 2 * H])


# --------------------------------------------------------------------------- the recurrence
#
# Every step of a sequence for a block of batch rows, by the row functions above: per step
# the recurrent product of those rows and their fused pointwise work. A sequence already
# ended at time ``t`` gets its carried state and zero gates or gradients. Rows do not
# interact in the recurrence, so each driver shares the batch out over ``parts`` of Numba's
# threads (``_row_parts``), a block of rows each (``<cell>_<pass>_span``, each thread's
# products on that thread alone: ``w`` None, see ``_step_product``), with no
# synchronisation between steps. The drivers are parallel functions themselves: Numba
# compiles a function's callees into it once more, and a launcher between a driver and its
# spans took 9 s more to compile on a cold cache (a new process's first LSTM forward and
# backward, measured). The LSTM and GRU forward spans read each step's starting state where
# the step before wrote it, in ``y`` (and ``c``), or from ``h0`` (and ``c0``): no running
# copy to keep (the LSTM forward 1.01-1.03x faster at T,B,I,H = 200,16,64,128 on 1 and 2
# threads, within noise at 100,64,256,256, measured). The Elman span keeps a running ``h``:
# its ``y`` holds the input projection until the step writes the state there. ``h``, ``dh``
# and ``dcell`` are running states and gradients, (B, H); ``h_proj`` and ``dh_saved``
# (B, ...) scratch.
#
# Every callee compiles once per signature, with all it calls linked in and optimised again,
# so each argument keeps one type: ``np.intp(0)`` and ``np.bool_(False)``, not literals, and
# ``np.intp(part)`` in the parallel loops (Numba types their index as int64, then compiles
# the threads' code with it as uint64). Each such duplicate compiled a callee once more: a
# new process's first LSTM forward and backward took 106 s with them, 67 s without (cold
# cache, measured).


@_jit
def _rnn_forward_span(b_lo, b_hi, reverse, lengths, w, w_panels, b_ih, b_hh, relu, h,
                      h_proj, y, counters, part):
    """Elman, rows ``b_lo:b_hi``: ``y`` (T, B, H), holding the input projection on entry,
    written (each step reads its projection before it writes the state there). With
    ``counters``, steps shared as in :func:`_lstm_forward_span`."""
    T = y.shape[0]
    for step in range(T):
        t = _time_index(step, T, reverse)
        if not _forward_product(h[b_lo:b_hi], w, w_panels, h_proj[b_lo:b_hi], counters, step,
                                part):
            continue
        for b in range(b_lo, b_hi):
            if t < lengths[b]:
                _rnn_row(y[t, b], h_proj[b], b_ih, b_hh, relu, h[b])
        _copy(h[b_lo:b_hi], y[t, b_lo:b_hi])
        _cell_math_done(counters)


@_jit
def _rnn_backward_span(b_lo, b_hi, start, end, t_lo, reverse, lengths, relu, y, dy, w,
                       w_panels, dh, dh_saved, da, counters, part):
    """Elman, rows ``b_lo:b_hi`` of processing steps ``end - 1`` down to ``start``: ``da``
    written at ``t - t_lo``. With ``counters``, steps shared as in
    :func:`_lstm_backward_span`."""
    T = y.shape[0]
    for step in range(end - 1, start - 1, -1):
        t = _time_index(step, T, reverse)
        da_t = da[t - t_lo]
        if _take_cell_math(counters, 3 * (T - 1 - step)):
            for b in range(b_lo, b_hi):
                if t >= lengths[b]:
                    da_t[b] = 0
                else:
                    _rnn_backward_row(y[t, b], dy[t, b], dh[b], relu, da_t[b])
            _cell_math_done(counters)
        _backward_product(da_t[b_lo:b_hi], w, w_panels, dh[b_lo:b_hi], dh_saved[b_lo:b_hi], t,
                          lengths[b_lo:b_hi], counters, 3 * (T - 1 - step) + 1, part)


@_jit
def _lstm_forward_span(b_lo, b_hi, reverse, lengths, w, w_panels, b_ih, b_hh, h0, c0,
                       h_proj, gates, y, c, counters, part):
    """LSTM, rows ``b_lo:b_hi``: ``gates`` (holding the input projection on entry), ``y`` and
    ``c`` written. With ``counters`` (``_step_counters``), thread ``part``'s (0 or 1) part of
    every step shared with another: step ``s`` is the product's halves (tokens ``3s`` and
    ``3s + 1``), then the cell math (``3s + 2``)."""
    T = gates.shape[0]
    for step in range(T):
        t = _time_index(step, T, reverse)
        h, cell = _state_before(y, h0, t, reverse), _state_before(c, c0, t, reverse)
        if not _forward_product(h[b_lo:b_hi], w, w_panels, h_proj[b_lo:b_hi], counters, step,
                                part):
            continue
        for b in range(b_lo, b_hi):
            if t >= lengths[b]:
                gates[t, b] = 0
                _copy(h[b], y[t, b])
                _copy(cell[b], c[t, b])
            else:
                _lstm_row(gates[t, b], h_proj[b], b_ih, b_hh, cell[b], y[t, b], c[t, b])
        _cell_math_done(counters)


@_jit
def _lstm_backward_span(b_lo, b_hi, start, end, t_lo, reverse, lengths, gates, c, c_first,
                        dy, w, w_panels, dh, dcell, dh_saved, da, counters, part):
    """LSTM, rows ``b_lo:b_hi`` of processing steps ``end - 1`` down to ``start``: ``da``
    written at ``t - t_lo``. With ``counters``, shared as in :func:`_lstm_forward_span`,
    backward: the ``n``-th step processed (``n = T - 1 - step``) is the cell math (token
    ``3n``), then the product's halves (``3n + 1``, ``3n + 2``; nothing to multiply at a
    padded step, whose ``dh`` passes through)."""
    T = gates.shape[0]
    for step in range(end - 1, start - 1, -1):
        t = _time_index(step, T, reverse)
        da_t = da[t - t_lo]
        c_prev = _state_before(c, c_first, t, reverse)
        if _take_cell_math(counters, 3 * (T - 1 - step)):
            for b in range(b_lo, b_hi):
                if t >= lengths[b]:
                    da_t[b] = 0
                else:
                    _lstm_backward_row(gates[t, b], c[t, b], c_prev[b], dy[t, b], dh[b],
                                       dcell[b], da_t[b])
            _cell_math_done(counters)
        _backward_product(da_t[b_lo:b_hi], w, w_panels, dh[b_lo:b_hi], dh_saved[b_lo:b_hi], t,
                          lengths[b_lo:b_hi], counters, 3 * (T - 1 - step) + 1, part)


@_jit
def _gru_forward_span(b_lo, b_hi, reverse, lengths, w, w_panels, b_ih, b_hh, h0, h_proj,
                      gates, y, h_n_proj, counters, part):
    """GRU, rows ``b_lo:b_hi``: ``gates`` (holding the input projection on entry), ``y`` and
    ``h_n_proj`` written. With ``counters``, steps shared as in
    :func:`_lstm_forward_span`."""
    T = gates.shape[0]
    for step in range(T):
        t = _time_index(step, T, reverse)
        h = _state_before(y, h0, t, reverse)
        if not _forward_product(h[b_lo:b_hi], w, w_panels, h_proj[b_lo:b_hi], counters, step,
                                part):
            continue
        for b in range(b_lo, b_hi):
            if t >= lengths[b]:
                gates[t, b] = 0
                h_n_proj[t, b] = 0
                _copy(h[b], y[t, b])
            else:
                _gru_row(gates[t, b], h_proj[b], b_ih, b_hh, h[b], y[t, b], h_n_proj[t, b])
        _cell_math_done(counters)


@_jit
def _gru_backward_span(b_lo, b_hi, start, end, t_lo, reverse, lengths, gates, h_n_proj, y,
                       first, dy, w, w_panels, dh, dh_direct, da_x, da_h, counters, part):
    """GRU, rows ``b_lo:b_hi`` of processing steps ``end - 1`` down to ``start``: ``da_x`` and
    ``da_h`` written at ``t - t_lo``; ``dh_direct`` (B, H) is scratch. With ``counters``,
    steps shared as in :func:`_lstm_backward_span`, with a fourth token: the ``n``-th step
    processed is tokens ``4n`` to ``4n + 3``, the last adding ``dh_direct`` to ``dh``."""
    T = gates.shape[0]
    for step in range(end - 1, start - 1, -1):
        t = _time_index(step, T, reverse)
        da_x_t, da_h_t = da_x[t - t_lo], da_h[t - t_lo]
        h_prev = _state_before(y, first, t, reverse)
        n = T - 1 - step
        if _take_cell_math(counters, 4 * n):
            for b in range(b_lo, b_hi):
                if t >= lengths[b]:
                    da_x_t[b] = 0
                    da_h_t[b] = 0
                    _copy(dh[b], dh_direct[b])  # the gradient passes through this padded step
                else:
                    _gru_backward_row(gates[t, b], h_n_proj[t, b], h_prev[b], dy[t, b], dh[b],
                                      da_x_t[b], da_h_t[b], dh_direct[b])
            _cell_math_done(counters)
        _product_part(da_h_t[b_lo:b_hi], w, w_panels, dh[b_lo:b_hi], counters, 4 * n + 1, part)
        if _take_cell_math(counters, 4 * n + 3):
            # da_h has zero rows for padded steps: dh_direct carries them
            _add_into(dh_direct[b_lo:b_hi], dh[b_lo:b_hi])
            _cell_math_done(counters)


@_jit
def _chunk_grads(da_x, da_h, x, states, first, t_lo, reverse, w_ih, w_ih_panels, dx, dw_ih,
                 dw_hh, db_ih, db_hh):
    """The gradients that are GEMMs, for the steps of one chunk of the backward sweep.

    ``da_x`` and ``da_h`` (n, B, G*H) hold the gradients w.r.t. the input and recurrent
    projections at true times ``t_lo .. t_lo + n - 1`` (the same array except for GRU);
    ``states`` (T, B, H) the hidden state of every step and ``first`` (B, H), C-contiguous,
    the initial one; ``w_ih_panels`` is ``_pack_weights(w_ih, steps * B, 0)`` for the
    chunks' ``steps``. Writes those times of ``dx`` (T, B, I); accumulates the weight and bias
    gradients.
    """
    n, B, GH = da_x.shape
    T, _, I = x.shape
    H = states.shape[2]
    rows = n * B
    da_x2 = da_x.reshape((rows, GH))
    da_h2 = da_h.reshape((rows, GH))
    x2 = x[t_lo : t_lo + n].reshape((rows, I))
    _matmul(da_x2, w_ih, w_ih_panels, dx[t_lo : t_lo + n].reshape((rows, I)))
    # dw_hh: each step's gradient times the state it started from, read in place from
    # `states` (shifted by one step) except for the step that started from `first`.
    if reverse:
        k0, k1 = 0, (n - 1 if t_lo + n == T else n)  # rows [k0, k1) start from states[t + 1]
        offset = 1
    else:
        k0, k1 = (1 if t_lo == 0 else 0), n  # rows [k0, k1) start from states[t - 1]
        offset = -1
    first_step = -1 if k1 - k0 == n else (0 if k0 == 1 else n - 1)
    begin = t_lo + k0 + offset
    before = states[begin : begin + k1 - k0].reshape(((k1 - k0) * B, H))
    # With the gradients' transposes as strips (see gemm.pack_rows), which sum the bias
    # gradients on the way (LSTM and RNN: da_h is da_x), on Numba's threads, never BLAS's
    # (see _THREADED_PRODUCT), and on one thread too: there the strips ran 1.00-1.08x faster
    # than OpenBLAS's sgemm, as fast for GRU (AMD Zen 3, float32, train step at the bench's
    # sizes, medians of three pairs of processes; measured).
    same = da_h.ctypes.data == da_x.ctypes.data
    none = db_ih[:0]
    strips_x = gemm.pack_rows(da_x2.T, db_ih, db_hh if same else none)
    strips_h = strips_x if same else gemm.pack_rows(da_h2.T, db_hh, none)
    panels = gemm.empty_panels(rows, I, GH, x2)
    gemm.pack_into_parallel(x2, panels, np.intp(0))
    gemm.matmul_rows_parallel(strips_x, panels, dw_ih, True)
    panels = gemm.empty_panels(rows, H, GH, states)
    if first_step >= 0:
        gemm.pack_into(first, panels, first_step * B)
    gemm.pack_into_parallel(before, panels, k0 * B)
    gemm.matmul_rows_parallel(strips_h, panels, dw_hh, True)


# --------------------------------------------------------------------------- Elman RNN


@_jit_threads
def rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, lengths, relu, y, h_n):
    """Elman RNN forward over a whole sequence.

    Parameters
    ----------
    x : (T, B, I) array
        Input sequence.
    w_ih : (H, I) array
    w_hh : (H, H) array
    b_ih, b_hh : (H,) arrays
    h0 : (B, H) array
        Initial hidden state.
    reverse : bool
        Process the sequence from the last time step to the first.
    lengths : (B,) int64 array
        Length of each sequence (see the module notes on variable lengths).
    relu : bool
        Use ReLU instead of tanh as the nonlinearity.
    y : (T, B, H) array, written
        Hidden state of every time step (also what :func:`rnn_backward` needs).
    h_n : (B, H) array, written
        Final hidden state (``y`` at the last processed step).
    """
    T, B, I = x.shape
    H = h0.shape[1]
    _project_input(x, w_ih, y.reshape((T * B, H)))
    h = np.empty((B, H), dtype=x.dtype)
    _copy(h0, h)
    h_proj = np.empty((B, H), dtype=x.dtype)
    w_panels = _pack_weights(w_hh.T, B, T)
    parts = _row_parts(T, B, 1, H)
    counters = _step_counters(B, w_panels)
    if parts > 1 or counters.shape[0] > 0:
        for part in prange(max(parts, 2)):  # by blocks of rows, or two threads on each step
            lo, hi = _rows_of_part(np.intp(part), parts, B)
            _rnn_forward_span(lo, hi, reverse, lengths, None, w_panels, b_ih, b_hh, relu, h,
                              h_proj, y, counters, np.intp(part))
    else:
        _rnn_forward_span(np.intp(0), B, reverse, lengths, w_hh.T, w_panels, b_ih, b_hh, relu,
                          h, h_proj, y, counters, np.intp(0))
    _copy(h, h_n)


@_jit_threads
def rnn_backward(
    x, w_ih, w_hh, h0, reverse, lengths, relu, y, dy, dh_n, dx, dh0, dw_ih, dw_hh, db_ih, db_hh
):
    """Elman RNN backward through time.

    Parameters
    ----------
    x, w_ih, w_hh, h0, reverse, lengths, relu
        As given to :func:`rnn_forward`.
    y : (T, B, H) array
        Output of :func:`rnn_forward`.
    dy : (T, B, H) array
        Gradient w.r.t. ``y``.
    dh_n : (B, H) array
        Gradient w.r.t. the final hidden state.
    dx : (T, B, I) array, written
    dh0 : (B, H) array, written
    dw_ih, dw_hh, db_ih, db_hh : arrays shaped like the weights, accumulated
    """
    T, B, I = x.shape
    H = h0.shape[1]
    first = np.ascontiguousarray(h0)
    steps = _chunk_steps(T, B)
    da = np.empty((steps, B, H), dtype=x.dtype)
    dh = np.empty((B, H), dtype=x.dtype)
    _copy(dh_n, dh)
    dh_saved = np.empty((B, H), dtype=x.dtype)
    w_panels = _pack_weights(w_hh, B, T)
    w_ih_panels = _pack_weights(w_ih, steps * B, np.intp(0))
    parts = _row_parts(T, B, 1, H)
    counters = _step_counters(B, w_panels)
    for end in range(T, 0, -steps):  # chunks of processing steps [start, end), last first
        start = max(0, end - steps)
        t_lo = _chunk_first_time(start, end, T, reverse)
        if parts > 1 or counters.shape[0] > 0:
            for part in prange(max(parts, 2)):  # as in rnn_forward
                lo, hi = _rows_of_part(np.intp(part), parts, B)
                _rnn_backward_span(lo, hi, start, end, t_lo, reverse, lengths, relu, y, dy,
                                   None, w_panels, dh, dh_saved, da, counters, np.intp(part))
        else:
            _rnn_backward_span(np.intp(0), B, start, end, t_lo, reverse, lengths, relu, y,
                               dy, w_hh, w_panels, dh, dh_saved, da, counters, np.intp(0))
        count = end - start
        _chunk_grads(da[:count], da[:count], x, y, first, t_lo, reverse, w_ih, w_ih_panels, dx,
                     dw_ih, dw_hh, db_ih, db_hh)
    _copy(dh, dh0)


# --------------------------------------------------------------------------- LSTM


@_jit_threads
def lstm_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse, lengths, y, c, gates, h_n, c_n):
    """LSTM forward over a whole sequence.

    Parameters
    ----------
    x : (T, B, I) array
        Input sequence.
    w_ih : (4*H, I) array
    w_hh : (4*H, H) array
    b_ih, b_hh : (4*H,) arrays
        Gate order i, f, g, o.
    h0, c0 : (B, H) arrays
        Initial hidden and cell states.
    reverse : bool
        Process the sequence from the last time step to the first.
    lengths : (B,) int64 array
        Length of each sequence (see the module notes on variable lengths).
    y : (T, B, H) array, written
        Hidden state of every time step.
    c : (T, B, H) array, written
        Cell state of every time step (saved for backward).
    gates : (T, B, 4*H) array, written
        Gate activations i, f, g, o of every time step (saved for backward).
    h_n, c_n : (B, H) arrays, written
        Final hidden and cell states.
    """
    T, B, I = x.shape
    H = h0.shape[1]
    _project_input(x, w_ih, gates.reshape((T * B, 4 * H)))
    h_first, c_first = np.ascontiguousarray(h0), np.ascontiguousarray(c0)
    h_proj = np.empty((B, 4 * H), dtype=x.dtype)
    w_panels = _pack_weights(w_hh.T, B, T)
    parts = _row_parts(T, B, 4, H)
    counters = _step_counters(B, w_panels)
    if parts > 1 or counters.shape[0] > 0:
        for part in prange(max(parts, 2)):  # by blocks of rows, or two threads on each step
            lo, hi = _rows_of_part(np.intp(part), parts, B)
            _lstm_forward_span(lo, hi, reverse, lengths, None, w_panels, b_ih, b_hh, h_first,
                               c_first, h_proj, gates, y, c, counters, np.intp(part))
    else:
        _lstm_forward_span(np.intp(0), B, reverse, lengths, w_hh.T, w_panels, b_ih, b_hh,
                           h_first, c_first, h_proj, gates, y, c, counters, np.intp(0))
    _copy(_final_state(y, h_first, reverse), h_n)
    _copy(_final_state(c, c_first, reverse), c_n)


@_jit_threads
def lstm_backward(
    x, w_ih, w_hh, h0, c0, reverse, lengths, y, c, gates, dy, dh_n, dc_n,
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh,
):
    """LSTM backward through time.

    Parameters
    ----------
    x, w_ih, w_hh, h0, c0, reverse, lengths
        As given to :func:`lstm_forward`.
    y, c, gates : arrays
        Outputs of :func:`lstm_forward`.
    dy : (T, B, H) array
        Gradient w.r.t. ``y``.
    dh_n, dc_n : (B, H) arrays
        Gradients w.r.t. the final hidden and cell states.
    dx : (T, B, I) array, written
    dh0, dc0 : (B, H) arrays, written
    dw_ih, dw_hh, db_ih, db_hh : arrays shaped like the weights, accumulated
    """
    T, B, I = x.shape
    H = h0.shape[1]
    h_first, c_first = np.ascontiguousarray(h0), np.ascontiguousarray(c0)
    steps = _chunk_steps(T, B)
    da = np.empty((steps, B, 4 * H), dtype=x.dtype)
    dh = np.empty((B, H), dtype=x.dtype)
    _copy(dh_n, dh)
    dcell = np.empty((B, H), dtype=x.dtype)
    _copy(dc_n, dcell)
    dh_saved = np.empty((B, H), dtype=x.dtype)
    w_panels = _pack_weights(w_hh, B, T)
    w_ih_panels = _pack_weights(w_ih, steps * B, np.intp(0))
    parts = _row_parts(T, B, 4, H)
    counters = _step_counters(B, w_panels)
    for end in range(T, 0, -steps):  # chunks of processing steps [start, end), last first
        start = max(0, end - steps)
        t_lo = _chunk_first_time(start, end, T, reverse)
        if parts > 1 or counters.shape[0] > 0:
            for part in prange(max(parts, 2)):  # as in lstm_forward
                lo, hi = _rows_of_part(np.intp(part), parts, B)
                _lstm_backward_span(lo, hi, start, end, t_lo, reverse, lengths, gates, c,
                                    c_first, dy, None, w_panels, dh, dcell, dh_saved, da,
                                    counters, np.intp(part))
        else:
            _lstm_backward_span(np.intp(0), B, start, end, t_lo, reverse, lengths, gates, c,
                                c_first, dy, w_hh, w_panels, dh, dcell, dh_saved, da, counters,
                                np.intp(0))
        count = end - start
        _chunk_grads(da[:count], da[:count], x, y, h_first, t_lo, reverse, w_ih, w_ih_panels, dx,
                     dw_ih, dw_hh, db_ih, db_hh)
    _copy(dh, dh0)
    _copy(dcell, dc0)


# --------------------------------------------------------------------------- GRU


@_jit_threads
def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, lengths, y, gates, h_n_proj, h_n):
    """GRU forward over a whole sequence.

    Parameters
    ----------
    x : (T, B, I) array
        Input sequence.
    w_ih : (3*H, I) array
    w_hh : (3*H, H) array
    b_ih, b_hh : (3*H,) arrays
        Gate order r, z, n.
    h0 : (B, H) array
        Initial hidden state.
    reverse : bool
        Process the sequence from the last time step to the first.
    lengths : (B,) int64 array
        Length of each sequence (see the module notes on variable lengths).
    y : (T, B, H) array, written
        Hidden state of every time step.
    gates : (T, B, 3*H) array, written
        Gate activations r, z, n of every time step (saved for backward).
    h_n_proj : (T, B, H) array, written
        Recurrent projection of the new gate, ``W_hn h_prev + b_hn`` (saved for backward).
    h_n : (B, H) array, written
        Final hidden state.
    """
    T, B, I = x.shape
    H = h0.shape[1]
    _project_input(x, w_ih, gates.reshape((T * B, 3 * H)))
    h_first = np.ascontiguousarray(h0)
    h_proj = np.empty((B, 3 * H), dtype=x.dtype)
    w_panels = _pack_weights(w_hh.T, B, T)
    parts = _row_parts(T, B, 3, H)
    counters = _step_counters(B, w_panels)
    if parts > 1 or counters.shape[0] > 0:
        for part in prange(max(parts, 2)):  # by blocks of rows, or two threads on each step
            lo, hi = _rows_of_part(np.intp(part), parts, B)
            _gru_forward_span(lo, hi, reverse, lengths, None, w_panels, b_ih, b_hh, h_first,
                              h_proj, gates, y, h_n_proj, counters, np.intp(part))
    else:
        _gru_forward_span(np.intp(0), B, reverse, lengths, w_hh.T, w_panels, b_ih, b_hh,
                          h_first, h_proj, gates, y, h_n_proj, counters, np.intp(0))
    _copy(_final_state(y, h_first, reverse), h_n)


@_jit_threads
def gru_backward(
    x, w_ih, w_hh, h0, reverse, lengths, y, gates, h_n_proj, dy, dh_n,
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh,
):
    """GRU backward through time.

    Parameters
    ----------
    x, w_ih, w_hh, h0, reverse, lengths
        As given to :func:`gru_forward`.
    y, gates, h_n_proj : arrays
        Outputs of :func:`gru_forward`.
    dy : (T, B, H) array
        Gradient w.r.t. ``y``.
    dh_n : (B, H) array
        Gradient w.r.t. the final hidden state.
    dx : (T, B, I) array, written
    dh0 : (B, H) array, written
    dw_ih, dw_hh, db_ih, db_hh : arrays shaped like the weights, accumulated
    """
    T, B, I = x.shape
    H = h0.shape[1]
    first = np.ascontiguousarray(h0)
    steps = _chunk_steps(T, B)
    da_x = np.empty((steps, B, 3 * H), dtype=x.dtype)
    da_h = np.empty((steps, B, 3 * H), dtype=x.dtype)
    dh = np.empty((B, H), dtype=x.dtype)
    _copy(dh_n, dh)
    dh_direct = np.empty((B, H), dtype=x.dtype)
    w_panels = _pack_weights(w_hh, B, T)
    w_ih_panels = _pack_weights(w_ih, steps * B, np.intp(0))
    parts = _row_parts(T, B, 3, H)
    counters = _step_counters(B, w_panels)
    for end in range(T, 0, -steps):  # chunks of processing steps [start, end), last first
        start = max(0, end - steps)
        t_lo = _chunk_first_time(start, end, T, reverse)
        if parts > 1 or counters.shape[0] > 0:
            for part in prange(max(parts, 2)):  # as in gru_forward
                lo, hi = _rows_of_part(np.intp(part), parts, B)
                _gru_backward_span(lo, hi, start, end, t_lo, reverse, lengths, gates,
                                   h_n_proj, y, first, dy, None, w_panels, dh, dh_direct, da_x,
                                   da_h, counters, np.intp(part))
        else:
            _gru_backward_span(np.intp(0), B, start, end, t_lo, reverse, lengths, gates,
                               h_n_proj, y, first, dy, w_hh, w_panels, dh, dh_direct, da_x, da_h,
                               counters, np.intp(0))
        count = end - start
        _chunk_grads(da_x[:count], da_h[:count], x, y, first, t_lo, reverse, w_ih, w_ih_panels,
                     dx, dw_ih, dw_hh, db_ih, db_hh)
    _copy(dh, dh0)


_cache.flush_if_sources_changed(
    __name__,
    [_threaded, _row_parts, _copy, _time_index, _state_before, _final_state, _chunk_steps,
     _chunk_first_time, _chunk_grads, _add_into, _has_padding, _restore_padded_rows,
     _pack_weights, _matmul, _step_product, _project_input, _shares_steps,
     _step_counters, _shared_step_product, _take_cell_math, _cell_math_done, _rows_of_part,
     _product_part, _forward_product, _backward_product, _backprop_state, _gate_blocks, _summed,
     _rnn_row, _lstm_row, _gru_row, _rnn_backward_row, _lstm_backward_row, _gru_backward_row,
     _rnn_forward_span, _rnn_backward_span, _lstm_forward_span, _lstm_backward_span,
     _gru_forward_span, _gru_backward_span,
     rnn_forward, rnn_backward, lstm_forward, lstm_backward, gru_forward, gru_backward],
)
