"""Products of a small batch with weights packed once: the recurrent GEMMs of each step.

A recurrent layer multiplies a small batch of states by the same weights at every time
step. A BLAS call packs both operands every time and, at these shapes, runs well below its
rate on large products (measured on the project's 2-core machines, float32, GFLOP/s:
OpenBLAS 50-58 at B = 64, H = 256-512 and 28 at B = 16, H = 128, against 80-97 here).
So the CPU drivers cut the weights into panels once per call (:func:`pack`) and multiply
each step with a register-blocked micro-kernel over those panels (:func:`matmul`), as
BLIS and oneDNN do:

* a panel holds ``NR`` consecutive columns of the weights ``w`` (K, N), row by row:
  ``panels[p, k, :] = w[k, p*NR : (p+1)*NR]`` (zero-padded at the ragged end), so the
  micro-kernel reads it as one stream of vectors;
* the micro-kernel keeps a tile of ``MR`` rows by ``NR`` columns of the output in vector
  registers while it runs over ``K``: per ``k`` it loads ``NR / lanes`` vectors of the
  panel and multiplies each by ``MR`` broadcast elements of ``a``;
* ``K`` is split into blocks whose panel slice fits in 24 KB (L1), reused by every row tile;
* a product with a single row (batch 1) has no row to share a panel with: it gets wide
  panels and a one-row kernel with 8 vectors of accumulators, which streams the weights
  at close to the cache's bandwidth (1.9x OpenBLAS's matrix-vector product at H = 128).

The micro-kernel is LLVM IR written from Python (a Numba intrinsic): vectors and fused
multiply-adds map one to one onto the CPU's registers and instructions, where LLVM does not
keep an array of accumulators in registers. Vector width follows the host CPU (32 bytes
with AVX2, 64 with AVX-512, 16 otherwise). Each output element is a plain sum over ``k`` in
order (fused multiply-adds, no reassociation), in float32 or float64 as the operands.
"""

import llvmlite.binding
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_jit = njit(cache=True, error_model="numpy")


def _host_vector_bytes():
    features = llvmlite.binding.get_host_cpu_features()
    if features.get("avx512f"):
        return 64
    if features.get("avx"):
        return 32
    return 16


_VECTOR_BYTES = _host_vector_bytes()
#: Rows of the output tile the micro-kernel holds in registers. With two vectors per row,
#: 12 accumulators, 2 panel vectors and a broadcast fill AVX2's 16 registers.
MR = 6
_VECTORS = 2
#: Vectors per row of the one-row kernel, for products with a single row (batch 1): enough
#: independent accumulators to hide the latency of a fused multiply-add.
_WIDE_VECTORS = 8
_L1_PANEL_BYTES = 24 * 1024


@_jit
def panel_width(dtype_itemsize, rows):
    """Columns per panel for floats of ``dtype_itemsize`` bytes (4 or 8), for products with
    ``rows`` rows: wide panels for a single row (the one-row kernel), else narrow ones."""
    vectors = _WIDE_VECTORS if rows == 1 else _VECTORS
    return vectors * _VECTOR_BYTES // dtype_itemsize


def _emit_tile(context, builder, ptrs, lds, rows, vectors, cols, k, accumulate, lanes, ftype):
    """IR of one tile of ``rows`` rows by ``vectors`` vectors (Python ints): accumulate over
    ``k``, then store."""
    a_ptr, b_ptr, c_ptr = ptrs
    lda, ldc = lds
    intp = k.type
    vtype = ir.VectorType(ftype, lanes)
    nr = vectors * lanes
    name = f"llvm.fma.v{lanes}f{64 if ftype == ir.DoubleType() else 32}"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * 3), name)
    zero = ir.Constant(vtype, None)
    lane0 = ir.Constant(ir.IntType(32), 0)
    splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

    def const(v):
        return ir.Constant(intp, v)

    def vector_at(ptr, offset):
        return builder.bitcast(builder.gep(ptr, [offset]), vtype.as_pointer())

    acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)]
           for _ in range(rows)]
    with cgutils.for_range(builder, k) as loop:
        kk = loop.index
        b_row = builder.gep(b_ptr, [builder.mul(kk, const(nr))])
        b = [builder.load(vector_at(b_row, const(v * lanes)), align=1)
             for v in range(vectors)]
        for r in range(rows):
            a_rk = builder.load(builder.gep(a_ptr, [builder.add(builder.mul(const(r), lda), kk)]))
            a_splat = builder.shuffle_vector(
                builder.insert_element(ir.Constant(vtype, ir.Undefined), a_rk, lane0),
                ir.Constant(vtype, ir.Undefined), splat_mask,
            )
            for v in range(vectors):
                builder.store(builder.call(fma, [a_splat, b[v], builder.load(acc[r][v])]),
                              acc[r][v])

    def combined(value, ptr):  # the new value of an output element (vector or scalar)
        return builder.select(accumulate, builder.fadd(builder.load(ptr, align=1), value), value)

    full = builder.icmp_signed("==", cols, const(nr))
    with builder.if_else(full, likely=True) as (whole, partial):
        with whole:
            for r in range(rows):
                for v in range(vectors):
                    dst = vector_at(c_ptr, builder.add(builder.mul(const(r), ldc), const(v * lanes)))
                    builder.store(combined(builder.load(acc[r][v]), dst), dst, align=1)
        with partial:  # the ragged last panel: through a buffer, element by element
            buffer = cgutils.alloca_once(builder, ftype, size=rows * nr)
            for r in range(rows):
                for v in range(vectors):
                    builder.store(builder.load(acc[r][v]),
                                  vector_at(buffer, const(r * nr + v * lanes)), align=1)
            for r in range(rows):
                with cgutils.for_range(builder, cols) as col:
                    dst = builder.gep(c_ptr, [builder.add(builder.mul(const(r), ldc), col.index)])
                    value = builder.load(builder.gep(buffer, [builder.add(const(r * nr), col.index)]))
                    builder.store(combined(value, dst), dst)


def _tile_kernel(vectors, max_rows):
    """An intrinsic ``tile(a, a_off, lda, b, b_off, c, c_off, ldc, rows, cols, k, accumulate)``
    for panels of ``vectors`` vectors: ``c[i, j] (+)= sum_k a[i, k] * b[k, j]`` for
    ``i < rows <= max_rows`` and ``j < cols <= NR``.

    Offsets and leading dimensions are in elements: ``a[i, k]`` is ``a.flat[a_off + i*lda
    + k]``, the panel element ``[k, j]`` is ``b.flat[b_off + k*NR + j]``, ``c[i, j]`` is
    ``c.flat[c_off + i*ldc + j]``; ``+=`` when ``accumulate``. No bounds are checked.
    """

    def typer(typingctx, a, a_off, lda, b, b_off, c, c_off, ldc, rows, cols, k, accumulate):
        arrays = (a, b, c)
        if not all(isinstance(x, types.Array) and isinstance(x.dtype, types.Float)
                   for x in arrays):
            return None
        if len({x.dtype for x in arrays}) != 1:
            return None
        sig = types.void(a, types.intp, types.intp, b, types.intp, c, types.intp, types.intp,
                         types.intp, types.intp, types.intp, types.boolean)

        def codegen(context, builder, signature, args):
            (a_v, a_off_v, lda_v, b_v, b_off_v, c_v, c_off_v, ldc_v, rows_v, cols_v, k_v,
             acc_v) = args
            ftype = context.get_value_type(a.dtype)
            lanes = _VECTOR_BYTES // (a.dtype.bitwidth // 8)

            def data(array_type, value, offset):
                array = context.make_array(array_type)(context, builder, value)
                return builder.gep(array.data, [offset])

            ptrs = (data(a, a_v, a_off_v), data(b, b_v, b_off_v), data(c, c_v, c_off_v))
            done = builder.append_basic_block("tile.done")
            switch = builder.switch(rows_v, done)
            for rows_n in range(1, max_rows + 1):  # one unrolled kernel per row count
                block = builder.append_basic_block(f"tile.rows{rows_n}")
                switch.add_case(ir.Constant(rows_v.type, rows_n), block)
                builder.position_at_end(block)
                _emit_tile(context, builder, ptrs, (lda_v, ldc_v), rows_n, vectors, cols_v, k_v,
                           acc_v, lanes, ftype)
                builder.branch(done)
            builder.position_at_end(done)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(typer)


_tile = _tile_kernel(_VECTORS, MR)
_row_tile = _tile_kernel(_WIDE_VECTORS, 1)


@_jit
def pack(w, rows):
    """The weights ``w`` (K, N), any layout, cut into panels for :func:`matmul`.

    Parameters
    ----------
    w : (K, N) array
    rows : int
        Rows of the products the panels are for (the batch): one row gets wide panels.

    Returns
    -------
    panels : (ceil(N / NR), K, NR) array
        ``panels[p, k, j] = w[k, p*NR + j]``, zero past column N; ``NR`` is
        ``panel_width(w.itemsize, rows)``.
    """
    K, N = w.shape
    nr = panel_width(w.itemsize, rows)
    n_panels = -(-N // nr)
    panels = np.empty((n_panels, K, nr), dtype=w.dtype)
    panels[n_panels - 1] = 0  # the padding of the ragged last panel
    # Loops over views from index 0 (LLVM drops the negative-index checks and vectorises),
    # reading w along its contiguous axis: 2-3x faster than w[k, p*nr + j] (measured).
    rows_contiguous = w.strides[1] == w.itemsize
    for p in range(n_panels):
        block = w[:, p * nr : (p + 1) * nr]
        panel = panels[p]
        cols = block.shape[1]
        if rows_contiguous:
            for k in range(K):
                src, dst = block[k], panel[k]
                for j in range(cols):
                    dst[j] = src[j]
        else:
            for j in range(cols):
                src = block[:, j]
                for k in range(K):
                    panel[k, j] = src[k]
    return panels


@_jit
def matmul(a, panels, out, accumulate):
    """``out = a @ w``, or ``out += a @ w`` when ``accumulate``, with ``panels = pack(w, M)``.

    Parameters
    ----------
    a : (M, K) array
        Rows contiguous (any row stride).
    panels : (ceil(N / NR), K, NR) array
        From :func:`pack` (for any number of rows: the result is the same).
    out : (M, N) array, written or accumulated
        Rows contiguous; must not overlap ``a``.
    accumulate : bool
    """
    M, K = a.shape
    N = out.shape[1]
    n_panels, _, nr = panels.shape
    if (a.strides[1] != a.itemsize and K > 1) or (out.strides[1] != out.itemsize and N > 1):
        raise ValueError("gemm.matmul: a and out need contiguous rows")
    if panels.shape[1] != K or n_panels * nr < N or (n_panels - 1) * nr >= N:
        raise ValueError("gemm.matmul: panels do not match a (M, K) and out (M, N)")
    if K == 0 and not accumulate:
        out[:] = 0
    lda = a.strides[0] // a.itemsize
    ldc = out.strides[0] // out.itemsize
    if nr == panel_width(panels.itemsize, 1):  # wide panels: row by row, no reuse to block for
        for p in range(n_panels):
            for m in range(M):
                _row_tile(a, m * lda, lda, panels, p * K * nr, out, m * ldc + p * nr, ldc, 1,
                          min(nr, N - p * nr), K, accumulate)
        return
    kc = max(1, _L1_PANEL_BYTES // (nr * panels.itemsize))
    for k0 in range(0, K, kc):
        k = min(kc, K - k0)
        for p in range(n_panels):
            cols = min(nr, N - p * nr)
            for m0 in range(0, M, MR):
                _tile(a, m0 * lda + k0, lda, panels, (p * K + k0) * nr, out, m0 * ldc + p * nr,
                      ldc, min(MR, M - m0), cols, k, accumulate or k0 > 0)
