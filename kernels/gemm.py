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
* ``K`` is split into blocks whose panel slice fits in 24 KB (L1), reused by every row tile
  of a block of rows of ``a`` that fits in 192 KB (L2; many rows only: the weight
  gradients over a chunk of steps);
* a product with a single row (batch 1) has no row to share a panel with: it gets wide
  panels and a one-row kernel with 8 vectors of accumulators, which streams the weights
  at close to the cache's bandwidth (1.2-1.7x OpenBLAS's matrix-vector product at H = 128).

The micro-kernel is LLVM IR written from Python (a Numba intrinsic): vectors and fused
multiply-adds map one to one onto the CPU's registers and instructions, where LLVM does not
keep an array of accumulators in registers. Vector width follows the host CPU (32 bytes
with AVX2, 64 with AVX-512, 16 otherwise). Each output element is a plain sum over ``k`` in
order (fused multiply-adds, no reassociation), in float32 or float64 as the operands.
"""

import os

import llvmlite.binding
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_jit = njit(cache=True, error_model="numpy")


def _vector_bytes():
    """Bytes per vector register of the host CPU. ``NUMBARNN_VECTOR_BYTES`` (16, 32 or 64)
    overrides it: the tests build the kernels at every width (LLVM splits wider vectors than
    the CPU has, so all run anywhere), each in a fresh ``NUMBA_CACHE_DIR``, as Numba's
    cache does not see the variable."""
    override = os.environ.get("NUMBARNN_VECTOR_BYTES")
    if override:
        if override not in ("16", "32", "64"):
            raise ValueError(f"NUMBARNN_VECTOR_BYTES: expected 16, 32 or 64, got {override!r}")
        return int(override)
    features = llvmlite.binding.get_host_cpu_features()
    if features.get("avx512f"):
        return 64
    if features.get("avx"):
        return 32
    return 16


_VECTOR_BYTES = _vector_bytes()
#: Rows of the output tile the micro-kernel holds in registers. With two vectors per row,
#: 12 accumulators, 2 panel vectors and a broadcast fill AVX2's 16 registers.
MR = 6
_VECTORS = 2
#: Vectors per row of the one-row kernel, for products with a single row (batch 1): enough
#: independent accumulators to hide the latency of a fused multiply-add.
_WIDE_VECTORS = 8
_L1_PANEL_BYTES = 24 * 1024
_L2_BLOCK_BYTES = 192 * 1024


@_jit
def panel_width(dtype_itemsize, rows):
    """Columns per panel for floats of ``dtype_itemsize`` bytes (4 or 8), for products with
    ``rows`` rows: wide panels for a single row (the one-row kernel), else narrow ones."""
    vectors = _WIDE_VECTORS if rows == 1 else _VECTORS
    return vectors * _VECTOR_BYTES // dtype_itemsize


def _emit_tile(builder, ptrs, strides, rows, vectors, cols, k, accumulate, lanes, ftype):
    """IR of one tile of ``rows`` rows by ``vectors`` vectors (Python ints): accumulate over
    ``k``, then store."""
    a_ptr, b_ptr, c_ptr = ptrs
    a_rs, a_cs, ldc = strides
    intp = k.type
    vtype = ir.VectorType(ftype, lanes)
    nr = vectors * lanes
    name = f"llvm.fma.v{lanes}f{64 if ftype == ir.DoubleType() else 32}"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * 3), name)
    undef = ir.Constant(vtype, ir.Undefined)
    lane0 = ir.Constant(ir.IntType(32), 0)
    splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

    def const(v):
        return ir.Constant(intp, v)

    def vector_at(ptr, offset):
        return builder.bitcast(builder.gep(ptr, [offset]), vtype.as_pointer())

    # The accumulators: allocas that LLVM promotes to registers.
    acc = [[cgutils.alloca_once_value(builder, ir.Constant(vtype, None)) for _ in range(vectors)]
           for _ in range(rows)]
    a_rows = [builder.gep(a_ptr, [builder.mul(const(r), a_rs)]) for r in range(rows)]
    with cgutils.for_range(builder, k) as loop:
        kk = loop.index
        b_row = builder.gep(b_ptr, [builder.mul(kk, const(nr))])
        b = [builder.load(vector_at(b_row, const(v * lanes)), align=1) for v in range(vectors)]
        a_offset = builder.mul(kk, a_cs)
        for r in range(rows):
            a_rk = builder.load(builder.gep(a_rows[r], [a_offset]))
            a_splat = builder.shuffle_vector(builder.insert_element(undef, a_rk, lane0), undef,
                                             splat_mask)
            for v in range(vectors):
                builder.store(builder.call(fma, [a_splat, b[v], builder.load(acc[r][v])]),
                              acc[r][v])

    def combined(value, ptr):  # the new value of an output element (vector or scalar)
        return builder.select(accumulate, builder.fadd(builder.load(ptr, align=1), value), value)

    c_rows = [builder.gep(c_ptr, [builder.mul(const(r), ldc)]) for r in range(rows)]
    full = builder.icmp_signed("==", cols, const(nr))
    with builder.if_else(full, likely=True) as (whole, partial):
        with whole:
            for r in range(rows):
                for v in range(vectors):
                    dst = vector_at(c_rows[r], const(v * lanes))
                    builder.store(combined(builder.load(acc[r][v]), dst), dst, align=1)
        with partial:  # the ragged last panel: through a buffer, element by element
            buffer = cgutils.alloca_once(builder, ftype, size=rows * nr)
            for r in range(rows):
                for v in range(vectors):
                    builder.store(builder.load(acc[r][v]),
                                  vector_at(buffer, const(r * nr + v * lanes)), align=1)
            for r in range(rows):
                with cgutils.for_range(builder, cols) as col:
                    dst = builder.gep(c_rows[r], [col.index])
                    value = builder.load(builder.gep(buffer, [builder.add(const(r * nr), col.index)]))
                    builder.store(combined(value, dst), dst)


def _tile_kernel(vectors, max_rows):
    """An intrinsic ``tile(a, a_off, a_rs, a_cs, b, b_off, c, c_off, ldc, rows, cols, k,
    accumulate)`` for panels of ``vectors`` vectors: ``c[i, j] (+)= sum_k a[i, k] * b[k, j]``
    for ``i < rows <= max_rows`` and ``j < cols <= NR``.

    Offsets and strides are in elements: ``a[i, k]`` is ``a.flat[a_off + i*a_rs + k*a_cs]``,
    the panel element ``[k, j]`` is ``b.flat[b_off + k*NR + j]``, ``c[i, j]`` is
    ``c.flat[c_off + i*ldc + j]``; ``+=`` when ``accumulate``. No bounds are checked.
    """

    def typer(typingctx, a, a_off, a_rs, a_cs, b, b_off, c, c_off, ldc, rows, cols, k,
              accumulate):
        arrays = (a, b, c)
        if not all(isinstance(x, types.Array) and isinstance(x.dtype, types.Float)
                   for x in arrays):
            return None
        if len({x.dtype for x in arrays}) != 1:
            return None
        intp = types.intp
        sig = types.void(a, intp, intp, intp, b, intp, c, intp, intp, intp, intp, intp,
                         types.boolean)

        def codegen(context, builder, signature, args):
            (a_v, a_off, a_rs, a_cs, b_v, b_off, c_v, c_off, ldc, rows_v, cols, k_v,
             acc_v) = args
            ftype = context.get_value_type(a.dtype)
            lanes = _VECTOR_BYTES // (a.dtype.bitwidth // 8)

            def data(array_type, value, offset):
                array = context.make_array(array_type)(context, builder, value)
                return builder.gep(array.data, [offset])

            ptrs = (data(a, a_v, a_off), data(b, b_v, b_off), data(c, c_v, c_off))
            done = builder.append_basic_block("tile.done")
            switch = builder.switch(rows_v, done)
            for rows_n in range(1, max_rows + 1):  # one unrolled kernel per row count
                block = builder.append_basic_block(f"tile.rows{rows_n}")
                switch.add_case(ir.Constant(rows_v.type, rows_n), block)
                builder.position_at_end(block)
                _emit_tile(builder, ptrs, (a_rs, a_cs, ldc), rows_n, vectors, cols, k_v, acc_v,
                           lanes, ftype)
                builder.branch(done)
            builder.position_at_end(done)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(typer)


_tile = _tile_kernel(_VECTORS, MR)
_row_tile = _tile_kernel(_WIDE_VECTORS, 1)


@_jit
def _tile_rows(left):
    """Rows of the next tile when ``left`` rows remain: MR, except that the last MR + 1 to
    MR + 3 rows go in two tiles of 3 to 5 rows. A tile of 1 or 2 rows has too few
    accumulators to hide the latency of its multiply-adds: 32 rows as 6+6+6+6+4+4 run
    1.1x faster than as 6+6+6+6+6+2, 8 rows as 4+4 1.2x faster than as 6+2 (measured)."""
    return (left + 1) // 2 if MR < left < MR + 4 else min(MR, left)


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
    if n_panels > 0:
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
        Any strides (a transposed matrix is fine); contiguous rows or columns are fastest.
    panels : (ceil(N / NR), K, NR) array
        From :func:`pack` (for any number of rows: the result is the same).
    out : (M, N) array, written or accumulated
        Rows contiguous; must not overlap ``a``.
    accumulate : bool
    """
    M, K = a.shape
    N = out.shape[1]
    n_panels, _, nr = panels.shape
    if out.strides[1] != out.itemsize and N > 1:
        raise ValueError("gemm.matmul: out needs contiguous rows")
    if panels.shape[1] != K or n_panels * nr < N or (n_panels - 1) * nr >= N:
        raise ValueError("gemm.matmul: panels do not match a (M, K) and out (M, N)")
    if K == 0 and not accumulate:
        out[:] = 0
    a_rs, a_cs = a.strides[0] // a.itemsize, a.strides[1] // a.itemsize
    ldc = out.strides[0] // out.itemsize
    if nr == panel_width(panels.itemsize, 1):  # wide panels: row by row, no reuse to block for
        for p in range(n_panels):
            for m in range(M):
                _row_tile(a, m * a_rs, a_rs, a_cs, panels, p * K * nr, out, m * ldc + p * nr,
                          ldc, 1, min(nr, N - p * nr), K, accumulate)
        return
    # Blocks of kc rows of the panels (in L1) by mc rows of a (in L2) (see the notes above).
    kc = max(1, _L1_PANEL_BYTES // (nr * panels.itemsize))
    mc = max(MR, _L2_BLOCK_BYTES // (kc * panels.itemsize) // MR * MR)
    for m_lo in range(0, M, mc):
        m_hi = min(M, m_lo + mc)
        for k0 in range(0, K, kc):
            k = min(kc, K - k0)
            for p in range(n_panels):
                cols = min(nr, N - p * nr)
                m0 = m_lo
                while m0 < m_hi:
                    rows = _tile_rows(m_hi - m0)
                    _tile(a, m0 * a_rs + k0 * a_cs, a_rs, a_cs, panels, (p * K + k0) * nr, out,
                          m0 * ldc + p * nr, ldc, rows, cols, k, accumulate or k0 > 0)
                    m0 += rows


# A dot product summed in any order lets LLVM vectorise it (as BLAS does); only this
# function gets the flag, never the cell math.
@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def matvec(w, v, out):
    """``out[k] = sum_j w[k, j] * v[j]``: ``w`` (N, M), ``v`` (M,), ``out`` (N,) written.

    For weights as they are (no packing): a batch-1 step of the kernels of
    :mod:`numbarnn.kernels.step`, and the forward products of the sequence drivers at
    batch 1. Four rows at a time, so each element of ``v`` is loaded once for four rows;
    as fast as the one-row kernel over packed panels when the rows of ``w`` are contiguous.
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
