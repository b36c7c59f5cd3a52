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
* ``K`` is split into blocks whose panel slice fills 3/4 of L1, reused by every row tile
  of a block of rows of ``a`` that fills 3/8 of L2 (many rows only: the weight
  gradients over a chunk of steps);
* a product with a single row (batch 1) has no row to share a panel with: it gets wide
  panels and a one-row kernel with 8 vectors of accumulators, which streams the weights
  at close to the cache's bandwidth (1.2-1.7x OpenBLAS's matrix-vector product at H = 128);
* on several threads (:func:`matmul_parallel`) each of Numba's threads takes blocks of
  rows (taking over what another thread has not started) or a share of the panels; a left
  operand read along its columns (the weight gradients' ``da.T``)
  is first cut into strips of ``MR`` rows (:func:`pack_rows`, :func:`matmul_rows_parallel`).
  The sums are the same, so are the results, bit for bit, on any number of threads.

The micro-kernel is LLVM IR written from Python (a Numba intrinsic): vectors and fused
multiply-adds map one to one onto the CPU's registers and instructions, where LLVM does not
keep an array of accumulators in registers. Vector width follows the host CPU (32 bytes
with AVX2, 64 with AVX-512, 16 otherwise). Each output element is a plain sum over ``k`` in
order (fused multiply-adds, no reassociation), in float32 or float64 as the operands.
"""

import os

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_jit = njit(cache=True, error_model="numpy")

# Numba's thread count (``numba.get_num_threads()``) for jitted code, by symbol name: Numba's
# own jitted ``get_num_threads`` holds a ctypes pointer, which keeps a function that calls it
# out of the disk cache. The threading layer registers the symbol when it starts.
numba.get_num_threads()
llvmlite.binding.add_symbol(
    "numbarnn_numba_threads", llvmlite.binding.address_of_symbol("get_num_threads")
)
numba_threads = types.ExternalFunction("numbarnn_numba_threads", types.intc())


def _one_thread_after_fork():
    # OpenMP's threads do not survive fork(): Numba's omp layer terminates a forked child
    # that starts a parallel region after the parent ran one. The child runs the kernels on
    # one thread instead, as PyTorch's forked children do.
    if numba.threading_layer() == "omp":
        numba.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread_after_fork)


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
#: Rows of the output tile the micro-kernel holds in registers. (:func:`_pack_strip` is
#: written out for 6.)
MR = 6
#: Vectors per row of that tile. With two, 12 accumulators, 2 panel vectors and a broadcast
#: fill AVX2's 16 registers; AVX-512's 32 hold four: 24 accumulators, twice the
#: multiply-adds per broadcast of the left operand. Intel Xeon (AVX-512, 48 KB L1, 2 MB
#: L2), 1 thread, float32, four against two, interleaved, two runs: 1.06-1.09x at (64, 512)
#: by (512, 2048), 1.07-1.15x at (64, 256) by (256, 1024), 1.11-1.12x at (16, 128) by
#: (128, 512), 1.25-1.31x at (16, 64) by (64, 512), 1.05-1.22x at (2048, 1024) by
#: (1024, 512); 0.91-0.92x at (6400, 512) by (512, 2048) (measured).
_VECTORS = 4 if _VECTOR_BYTES == 64 else 2
#: Vectors per row of the one-row kernel, for products with a single row (batch 1): enough
#: independent accumulators to hide the latency of a fused multiply-add.
_WIDE_VECTORS = 8


def _cache_bytes(level, default):
    """Bytes of the host CPU's level-``level`` data (or unified) cache of one core, from
    Linux's sysfs; ``default`` where it does not say."""
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(root)):
            path = os.path.join(root, index)
            with open(os.path.join(path, "level")) as f:
                found = int(f.read()) == level
            with open(os.path.join(path, "type")) as f:
                found = found and f.read().strip() in ("Data", "Unified")
            if found:
                with open(os.path.join(path, "size")) as f:
                    size = f.read().strip()
                return int(size[:-1]) * 1024 if size.endswith("K") else int(size)
    except (OSError, ValueError):
        pass
    return default


# The blocks of a product (see the notes above), tuned on two CPUs (1 thread, float32,
# measured): with 32 KB of L1 and 512 KB of L2 (AMD Zen 3) 24 and 192 KB; with 48 KB and
# 1 MB (Zen 5) 36 and 384 KB, against 24 and 192 KB 1.04-1.07x at (64, 256) by (256, 1024)
# (one block along K instead of two) and at (64, 512) by (512, 2048), 1.1x at (6400, 256)
# by (256, 1024).
_L2_BYTES = _cache_bytes(2, 512 * 1024)
_L1_PANEL_BYTES = _cache_bytes(1, 32 * 1024) * 3 // 4
_L2_BLOCK_BYTES = _L2_BYTES * 3 // 8
# An output larger than L2 is not in cache when a tile comes to store its part of it (the
# input projection of all steps, say): each tile prefetches its lines first (see _emit_tile).
# AMD Zen 3, 1 thread, float32, packed rate over NumPy's BLAS (interleaved, two runs):
# (6400, 256) by (256, 2048) 1.02 and 0.94 against 0.65 and 0.63 without, (6400, 512) by
# (512, 2048) 0.78-0.89 against 0.61-0.72, 2048^3 0.86 against 0.59-0.71. Smaller outputs,
# those of each step, stay in cache, where the prefetches only cost time (B = 16: 1.30-1.43
# against 1.57-1.59).
_PREFETCH_OUT_BYTES = _L2_BYTES
_CACHE_LINE_BYTES = 64


@_jit
def panel_width(dtype_itemsize, rows):
    """Columns per panel for floats of ``dtype_itemsize`` bytes (4 or 8), for products with
    ``rows`` rows: wide panels for a single row (the one-row kernel), else narrow ones."""
    vectors = _WIDE_VECTORS if rows == 1 else _VECTORS
    return vectors * _VECTOR_BYTES // dtype_itemsize


def _emit_prefetch(builder, rows, count, itemsize, intp):
    """IR that asks for the cache lines of ``count`` elements of ``itemsize`` bytes from each
    pointer in ``rows`` to be fetched for writing (``llvm.prefetch``, a hint)."""
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
    )
    write, keep, data = (ir.Constant(i32, v) for v in (1, 3, 1))
    offsets = sorted({*range(0, count, _CACHE_LINE_BYTES // itemsize), count - 1})
    for row in rows:
        for offset in offsets:  # one element in every line the row's elements touch
            ptr = builder.bitcast(builder.gep(row, [ir.Constant(intp, offset)]), i8p)
            builder.call(fn, [ptr, write, keep, data])


def _emit_tile(builder, ptrs, strides, rows, vectors, cols, k, accumulate, prefetch, lanes,
               ftype):
    """IR of one tile of ``rows`` rows by ``vectors`` vectors (Python ints): accumulate over
    ``k``, then store; first, when ``prefetch``, ask for the output's cache lines."""
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
    c_rows = [builder.gep(c_ptr, [builder.mul(const(r), ldc)]) for r in range(rows)]
    with builder.if_then(prefetch):
        _emit_prefetch(builder, c_rows, nr, 8 if ftype == ir.DoubleType() else 4, intp)
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


def _tile_function(module, ftype, lanes, vectors, max_rows, intp):
    """The LLVM function of the tiles of ``vectors`` vectors (one unrolled kernel per row
    count up to ``max_rows``) in ``module``, defined on first use. Not inlined: inlined, its
    code was optimised again in every function up the chain of callers (a new process's
    first LSTM forward and backward compiled in 91 s, against 52 s not inlined; the products
    ran as fast, measured)."""
    name = f"numbarnn.tile.{vectors}x{max_rows}.{ftype}.{lanes}"
    if name in module.globals:
        return module.globals[name]
    fptr = ftype.as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [fptr] * 3 + [intp] * 6 + [ir.IntType(1)] * 2)
    fn = ir.Function(module, fnty, name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    a_ptr, b_ptr, c_ptr, a_rs, a_cs, ldc, rows, cols, k, accumulate, prefetch = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    done = fn.append_basic_block("tile.done")
    switch = builder.switch(rows, done)
    for rows_n in range(1, max_rows + 1):
        block = fn.append_basic_block(f"tile.rows{rows_n}")
        switch.add_case(ir.Constant(intp, rows_n), block)
        builder.position_at_end(block)
        _emit_tile(builder, (a_ptr, b_ptr, c_ptr), (a_rs, a_cs, ldc), rows_n, vectors, cols, k,
                   accumulate, prefetch, lanes, ftype)
        builder.branch(done)
    builder.position_at_end(done)
    builder.ret_void()
    return fn


def _tile_kernel(vectors, max_rows):
    """An intrinsic ``tile(a, a_off, a_rs, a_cs, b, b_off, c, c_off, ldc, rows, cols, k,
    accumulate, prefetch)`` for panels of ``vectors`` vectors: ``c[i, j] (+)= sum_k a[i, k] *
    b[k, j]`` for ``i < rows <= max_rows`` and ``j < cols <= NR``.

    Offsets and strides are in elements: ``a[i, k]`` is ``a.flat[a_off + i*a_rs + k*a_cs]``,
    the panel element ``[k, j]`` is ``b.flat[b_off + k*NR + j]``, ``c[i, j]`` is
    ``c.flat[c_off + i*ldc + j]``; ``+=`` when ``accumulate``. With ``prefetch`` the tile asks
    for its lines of ``c`` before it runs over ``k``, so that they are in cache by its stores.
    No bounds are checked.
    """

    def typer(typingctx, a, a_off, a_rs, a_cs, b, b_off, c, c_off, ldc, rows, cols, k,
              accumulate, prefetch):
        arrays = (a, b, c)
        if not all(isinstance(x, types.Array) and isinstance(x.dtype, types.Float)
                   for x in arrays):
            return None
        if len({x.dtype for x in arrays}) != 1:
            return None
        intp = types.intp
        sig = types.void(a, intp, intp, intp, b, intp, c, intp, intp, intp, intp, intp,
                         types.boolean, types.boolean)

        def codegen(context, builder, signature, args):
            (a_v, a_off, a_rs, a_cs, b_v, b_off, c_v, c_off, ldc, rows_v, cols, k_v,
             acc_v, prefetch_v) = args
            ftype = context.get_value_type(a.dtype)
            lanes = _VECTOR_BYTES // (a.dtype.bitwidth // 8)

            def data(array_type, value, offset):
                array = context.make_array(array_type)(context, builder, value)
                return builder.gep(array.data, [offset])

            fn = _tile_function(builder.module, ftype, lanes, vectors, max_rows, a_rs.type)
            builder.call(fn, [data(a, a_v, a_off), data(b, b_v, b_off), data(c, c_v, c_off),
                              a_rs, a_cs, ldc, rows_v, cols, k_v, acc_v, prefetch_v])
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(typer)


_tile = _tile_kernel(_VECTORS, MR)
_row_tile = _tile_kernel(_WIDE_VECTORS, 1)


def _transposed_rows(builder, rows, lanes):
    """IR: the ``lanes`` vectors ``rows`` of a square tile, transposed. Blocks of half, then a
    quarter, ... of the tile swap across its diagonal: log2(lanes) rounds of ``lanes``
    two-vector shuffles."""
    mask_type = ir.VectorType(ir.IntType(32), lanes)
    half = lanes // 2
    while half >= 1:
        # Element c of the pair (top, bottom) = rows (i, i + half), i & half == 0: the top
        # keeps its columns c & half == 0 and takes the bottom's c - half for the others.
        top_mask = ir.Constant(mask_type, [c if not c & half else lanes + c - half
                                           for c in range(lanes)])
        bottom_mask = ir.Constant(mask_type, [c + half if not c & half else lanes + c
                                              for c in range(lanes)])
        swapped = list(rows)
        for i in range(lanes):
            if not i & half:
                top, bottom = rows[i], rows[i + half]
                swapped[i] = builder.shuffle_vector(top, bottom, top_mask)
                swapped[i + half] = builder.shuffle_vector(top, bottom, bottom_mask)
        rows = swapped
        half //= 2
    return rows


@intrinsic
def _transpose_tile(typingctx, src, src_off, src_ld, dst, dst_off, dst_ld):
    """``dst.flat[dst_off + c*dst_ld + r] = src.flat[src_off + r*src_ld + c]`` for ``r, c <
    L``, the lanes of a vector of the arrays' floats: one square tile, as ``L`` vector loads,
    shuffles and stores (offsets and strides in elements from each array's first element,
    any layout; no bounds are checked)."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and isinstance(src.dtype, types.Float) and src.dtype == dst.dtype):
        return None
    intp = types.intp
    sig = types.void(src, intp, intp, dst, intp, intp)

    def codegen(context, builder, signature, args):
        src_v, src_off, src_ld, dst_v, dst_off, dst_ld = args
        lanes = _VECTOR_BYTES // (src.dtype.bitwidth // 8)
        vptr = ir.VectorType(context.get_value_type(src.dtype), lanes).as_pointer()

        def vector_ptr(array_type, value, offset, ld, i):
            data = context.make_array(array_type)(context, builder, value).data
            index = builder.add(offset, builder.mul(ld, ir.Constant(ld.type, i)))
            return builder.bitcast(builder.gep(data, [index]), vptr)

        rows = [builder.load(vector_ptr(src, src_v, src_off, src_ld, r), align=1)
                for r in range(lanes)]
        for c, column in enumerate(_transposed_rows(builder, rows, lanes)):
            builder.store(column, vector_ptr(dst, dst_v, dst_off, dst_ld, c), align=1)
        return context.get_dummy_value()

    return sig, codegen


@_jit
def _lanes(w):
    """Floats of ``w``'s dtype per vector register."""
    return _VECTOR_BYTES // w.itemsize


@_jit
def _tile_rows(left):
    """Rows of the next tile when ``left`` rows remain: MR, except that the last MR + 1 to
    MR + 3 rows go in two tiles of 3 to 5 rows. A tile of 1 or 2 rows has too few
    accumulators to hide the latency of its multiply-adds: 32 rows as 6+6+6+6+4+4 run
    1.1x faster than as 6+6+6+6+6+2, 8 rows as 4+4 1.2x faster than as 6+2 (measured)."""
    return (left + 1) // 2 if MR < left < MR + 4 else min(MR, left)


@_jit
def empty_panels(K, N, rows, like):
    """Uninitialised panels for weights (K, N) of ``like``'s dtype (see :func:`pack`), with
    the padding of the ragged last panel zeroed; :func:`pack_into` fills them."""
    nr = panel_width(like.itemsize, rows)
    n_panels = -(-N // nr)
    # Starting on a cache line: Numba aligns arrays to 32 bytes only, and every 64-byte
    # vector load of panels 32 bytes off a line straddles two lines.
    size = n_panels * K * nr
    line = _CACHE_LINE_BYTES // like.itemsize
    buffer = np.empty(size + line, dtype=like.dtype)
    skip = (-buffer.ctypes.data) % _CACHE_LINE_BYTES // like.itemsize
    panels = buffer[skip : skip + size].reshape((n_panels, K, nr))
    # The padding only: a thread that zeroed a whole panel would hold its lines in its own
    # cache, for the thread that packs it to fetch (see pack_parallel).
    used = N - (n_panels - 1) * nr
    for k in range(K if used < nr else 0):
        padding = panels[n_panels - 1, k, used:]
        for j in range(padding.shape[0]):
            padding[j] = 0
    return panels


@_jit
def pack_into(w, panels, k_lo):
    """Rows ``k_lo .. k_lo + K - 1`` of ``panels`` from ``w`` (K, N), any layout: the
    weights of a product can be packed from several arrays, a block of rows from each."""
    _pack_panels(w, panels, k_lo, np.intp(0), panels.shape[0])


@_jit
def _pack_panels(w, panels, k_lo, p_lo, p_hi):
    """:func:`pack_into` for the panels ``p_lo:p_hi`` only."""
    K, N = w.shape
    nr = panels.shape[2]
    # Loops over views from index 0 (LLVM drops the negative-index checks and vectorises),
    # reading w along its contiguous axis: 2-3x faster than w[k, p*nr + j] (measured).
    if w.strides[1] == w.itemsize:
        # Row by row of w, each row's NR columns into each panel: 2-4x faster than panel
        # by panel, each panel's rows one after the other (1 thread, float32, (1024, 256)
        # to (1024, 768); measured).
        for k in range(K):
            row = w[k]
            for p in range(p_lo, p_hi):
                src, dst = row[p * nr : (p + 1) * nr], panels[p, k_lo + k]
                for j in range(src.shape[0]):
                    dst[j] = src[j]
        return
    # Columns contiguous (a transposed matrix: the forward's w_ih.T and w_hh.T): square tiles
    # of L by L through vector shuffles (:func:`_transpose_tile`), the edges element by
    # element. Column by column, each column's K elements written NR apart, took 2.5-5.5x as
    # long (1 thread, float32, narrow panels, us: 18.7 against 7.4 at (128, 512), 82 against
    # 33 at (256, 1024), 755 against 136 at (512, 2048); measured).
    L = _lanes(w)
    tiled = w.strides[0] == w.itemsize
    K_tiles = K - K % L if tiled else 0
    ld = w.strides[1] // w.itemsize
    for p in range(p_lo, p_hi):
        block = w[:, p * nr : (p + 1) * nr]
        panel = panels[p, k_lo : k_lo + K]
        cols = block.shape[1]
        col_tiles = cols - cols % L if tiled else 0
        for j0 in range(0, col_tiles, L):
            for k0 in range(0, K_tiles, L):
                _transpose_tile(w, (p * nr + j0) * ld + k0, ld, panels,
                                (p * panels.shape[1] + k_lo + k0) * nr + j0, nr)
        for k in range(K):
            src, dst = block[k], panel[k]
            for j in range(col_tiles if k < K_tiles else 0, cols):
                dst[j] = src[j]


@njit(cache=True, error_model="numpy", parallel=True)
def pack_into_parallel(w, panels, k_lo):
    """:func:`pack_into` on Numba's threads, a block of the rows of ``w`` each: the inputs
    and states of a chunk of steps, for its weight gradients (2 threads, float32, median ms:
    0.09-0.14 against 0.19-0.27 on one thread at (1024, 256), 0.22-0.26 against 0.40-0.41
    at (1024, 512); measured)."""
    K = w.shape[0]
    threads = numba_threads()
    for part in prange(threads):
        k0, k1 = part * K // threads, (part + 1) * K // threads
        pack_into(w[k0:k1], panels, k_lo + k0)


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
    panels = empty_panels(K, N, rows, w)
    pack_into(w, panels, np.intp(0))
    return panels


@njit(cache=True, error_model="numpy", parallel=True)
def pack_parallel(w, rows, shares):
    """:func:`pack` on ``shares`` of Numba's threads, each packing the panels of its share of
    a product by panels (:func:`matmul_share`'s and ``_matmul_on_threads``'s split): the
    thread that then multiplies by them finds them in its own cache, not in the other
    core's. Intel Xeon, 2 threads, float32, batch 1, I = H = 128, LSTM forward over the
    time on one thread in the same process: 0.91 against 1.13 at T = 50, 1.16 against 1.50
    at T = 16 (measured)."""
    K, N = w.shape
    panels = empty_panels(K, N, rows, w)
    n = panels.shape[0]
    for part in prange(shares):
        share = np.intp(part)  # see the drivers' loops in cpu.py
        _pack_panels(w, panels, np.intp(0), share * n // shares, (share + 1) * n // shares)
    return panels


@_jit
def pack_for_threads(w, rows):
    """:func:`pack` for :func:`matmul_parallel` with ``rows`` rows: where that shares the
    product by panels (few rows), each thread packs its own (:func:`pack_parallel`)."""
    threads = np.intp(numba_threads())
    if rows < threads * _ROWS_PER_THREAD:
        return pack_parallel(w, rows, threads)
    return pack(w, rows)


@_jit
def _pack_strip(block, strip, acc):
    """``strip[k, r] = block[r, k]`` for a whole strip (``block`` (MR, K)), ``acc[0, r]`` and
    ``acc[1, r]`` (2, MR) each adding ``block[r, k]`` in order of ``k``. Written out for
    MR = 6 with the sums in scalars, which stay in registers where an array's elements went
    to memory at every ``k``: 1.6-2x faster (1 and 2 threads, float32, (1024, 256) and
    (1024, 768), measured)."""
    r0, r1, r2, r3, r4, r5 = block[0], block[1], block[2], block[3], block[4], block[5]
    a0, a1, a2, a3, a4, a5 = acc[0, 0], acc[0, 1], acc[0, 2], acc[0, 3], acc[0, 4], acc[0, 5]
    b0, b1, b2, b3, b4, b5 = acc[1, 0], acc[1, 1], acc[1, 2], acc[1, 3], acc[1, 4], acc[1, 5]
    for k in range(block.shape[1]):
        v0, v1, v2, v3, v4, v5 = r0[k], r1[k], r2[k], r3[k], r4[k], r5[k]
        dst = strip[k]
        dst[0], dst[1], dst[2], dst[3], dst[4], dst[5] = v0, v1, v2, v3, v4, v5
        a0, a1, a2, a3, a4, a5 = a0 + v0, a1 + v1, a2 + v2, a3 + v3, a4 + v4, a5 + v5
        b0, b1, b2, b3, b4, b5 = b0 + v0, b1 + v1, b2 + v2, b3 + v3, b4 + v4, b5 + v5
    acc[0, 0], acc[0, 1], acc[0, 2], acc[0, 3], acc[0, 4], acc[0, 5] = a0, a1, a2, a3, a4, a5
    acc[1, 0], acc[1, 1], acc[1, 2], acc[1, 3], acc[1, 4], acc[1, 5] = b0, b1, b2, b3, b4, b5


@njit(cache=True, error_model="numpy", parallel=True)
def pack_rows(a, sums, more_sums):
    """The left operand ``a`` (M, K), any layout, cut into strips of ``MR`` rows for
    :func:`matmul_rows_parallel`, on Numba's threads; the sums of its rows on the way.

    For a left operand whose columns are contiguous (a transposed gradient): read in place,
    the micro-kernel's ``MR`` elements per ``k`` sit in one cache line, and ``k`` strides
    through lines that share a few cache sets (1 thread, float32, (2048, 1024) by
    (1024, 512): 57-61 GFLOP/s, against 80 with strips, packing included, and 85-89 for
    BLAS; measured); a strip holds them side by side.

    Parameters
    ----------
    a : (M, K) array
    sums, more_sums : (M,) arrays, or empty ones
        Each, unless empty, accumulates the sums of the rows of ``a`` (``+= a.sum(axis=1)``),
        added one element after the other in order of ``k`` (the bias gradients, while the
        gradient they sum is read anyway: 0.1-0.4 ms a chunk of 1024 rows on one thread
        before, measured).

    Returns
    -------
    strips : (ceil(M / MR), K, MR) array
        ``strips[i, k, r] = a[i*MR + r, k]``, zero past row M.
    """
    M, K = a.shape
    n_strips = -(-M // MR)
    strips = np.empty((n_strips, K, MR), dtype=a.dtype)
    summed, summed_more = sums.shape[0] > 0, more_sums.shape[0] > 0
    for i in prange(n_strips):
        rows = min(MR, M - i * MR)
        block = a[i * MR : i * MR + rows]
        strip = strips[i]
        # Running sums, one per row and output, each starting from its output's value.
        acc = np.zeros((2, MR), dtype=a.dtype)
        for r in range(rows):
            acc[0, r] = sums[i * MR + r] if summed else 0
            acc[1, r] = more_sums[i * MR + r] if summed_more else 0
        if rows < MR:
            strip[:] = 0
            for k in range(K):
                for r in range(rows):
                    value = block[r, k]
                    strip[k, r] = value
                    acc[0, r] += value
                    acc[1, r] += value
        else:
            _pack_strip(block, strip, acc)
        for r in range(rows):
            if summed:
                sums[i * MR + r] = acc[0, r]
            if summed_more:
                more_sums[i * MR + r] = acc[1, r]
    return strips


@_jit
def _check_operands(M, K, panels, out):
    """Raise ValueError unless ``out`` (M, N) has contiguous rows and ``panels`` matches a
    left operand (M, K) and ``out``."""
    N = out.shape[1]
    n_panels, _, nr = panels.shape
    if out.strides[1] != out.itemsize and N > 1:
        raise ValueError("gemm.matmul: out needs contiguous rows")
    if (out.shape[0] != M or panels.shape[1] != K or n_panels * nr < N
            or (n_panels - 1) * nr >= N):
        raise ValueError("gemm.matmul: panels do not match a (M, K) and out (M, N)")


@_jit
def _matmul_part(a, layout, panels, out, accumulate, m_lo, m_hi, p_lo, p_hi):
    """The rows ``m_lo:m_hi`` and panels ``p_lo:p_hi`` of a product, operands checked.

    The left operand: element ``[i, k]`` of tile row ``i`` and ``k`` of the tile that starts
    at row ``m0`` and ``k0`` is ``a.flat[m0*m_stride + k0*cs + i*rs + k*cs]``, with
    ``layout = (m_stride, rs, cs, strips)``; with ``strips`` (:func:`pack_rows`) tiles have
    ``MR`` rows and start at multiples of ``MR``.
    """
    m_stride, a_rs, a_cs, strips = layout
    K = panels.shape[1]
    N = out.shape[1]
    nr = panels.shape[2]
    if K == 0 and not accumulate:
        out[m_lo:m_hi, p_lo * nr : p_hi * nr] = 0
    ldc = out.strides[0] // out.itemsize
    # Wide panels: row by row, no reuse to block for.
    if nr == panel_width(panels.itemsize, np.intp(1)):
        for p in range(p_lo, p_hi):
            for m in range(m_lo, m_hi):
                _row_tile(a, m * m_stride, a_rs, a_cs, panels, p * K * nr, out, m * ldc + p * nr,
                          ldc, 1, min(nr, N - p * nr), K, accumulate, False)
        return
    # Blocks of kc rows of the panels (in L1) by mc rows of a (in L2) (see the notes above).
    kc = max(1, _L1_PANEL_BYTES // (nr * panels.itemsize))
    mc = max(MR, _L2_BLOCK_BYTES // (kc * panels.itemsize) // MR * MR)
    prefetch = out.shape[0] * N * out.itemsize > _PREFETCH_OUT_BYTES
    for m_block in range(m_lo, m_hi, mc):
        m_end = min(m_hi, m_block + mc)
        for k0 in range(0, K, kc):
            k = min(kc, K - k0)
            for p in range(p_lo, p_hi):
                cols = min(nr, N - p * nr)
                m0 = m_block
                while m0 < m_end:
                    rows = min(MR, m_end - m0) if strips else _tile_rows(m_end - m0)
                    _tile(a, m0 * m_stride + k0 * a_cs, a_rs, a_cs, panels, (p * K + k0) * nr,
                          out, m0 * ldc + p * nr, ldc, rows, cols, k, accumulate or k0 > 0,
                          prefetch)
                    m0 += rows


@_jit
def _plain_layout(a):
    """``_matmul_part``'s layout of a left operand (M, K) read in place."""
    a_rs, a_cs = a.strides[0] // a.itemsize, a.strides[1] // a.itemsize
    return a_rs, a_rs, a_cs, False


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
    _check_operands(M, K, panels, out)
    # np.intp(0): a literal 0 would compile a second _matmul_part besides the threaded one's.
    _matmul_part(a, _plain_layout(a), panels, out, accumulate, np.intp(0), M, np.intp(0),
                 panels.shape[0])


#: Rows per thread from which a product on Numba's threads gives each thread a block of
#: rows (with all the panels) rather than a share of the panels (with all the rows).
_ROWS_PER_THREAD = 64
#: Blocks of rows per thread of a product on Numba's threads (see _matmul_on_threads), at
#: most, and multiply-adds per block, at least (a block is claimed with an atomic operation).
_BLOCKS_PER_THREAD = 8
_BLOCK_MULTIPLY_ADDS = 2**18
#: Counters of ``_matmul_on_threads`` are this many intp apart: one cache line each.
_COUNTER_STRIDE = 8


def _counter_ptr(context, builder, array_type, array, index):
    return builder.gep(context.make_array(array_type)(context, builder, array).data, [index])


def _is_counters(counters):
    return isinstance(counters, types.Array) and counters.dtype == types.intp


@intrinsic
def _fetch_add(typingctx, counters, index, value):
    """``counters[index] += value`` as one atomic operation; returns the old value. It
    releases this thread's writes before it, and acquires those released before the
    values it reads."""
    if not _is_counters(counters):
        return None
    sig = types.intp(counters, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        ptr = _counter_ptr(context, builder, signature.args[0], args[0], args[1])
        return builder.atomic_rmw("add", ptr, args[2], "acq_rel")

    return sig, codegen


@intrinsic
def _load_acquire(typingctx, counters, index):
    """``counters[index]``, read atomically: writes released before the value read are
    visible after it."""
    if not _is_counters(counters):
        return None
    sig = types.intp(counters, types.intp)

    def codegen(context, builder, signature, args):
        ptr = _counter_ptr(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", context.get_abi_sizeof(ptr.type.pointee))

    return sig, codegen


@intrinsic
def _compare_exchange(typingctx, counters, index, expected, value):
    """``counters[index] = value`` if it holds ``expected``, as one atomic operation;
    returns whether it did."""
    if not _is_counters(counters):
        return None
    sig = types.boolean(counters, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        ptr = _counter_ptr(context, builder, signature.args[0], args[0], args[1])
        result = builder.cmpxchg(ptr, args[2], args[3], "acq_rel", "acquire")
        return builder.extract_value(result, 1)

    return sig, codegen


@njit(cache=True, error_model="numpy", parallel=True)
def _matmul_on_threads(a, layout, M, panels, out, accumulate):
    """A checked product on Numba's threads; with strips, row blocks of whole strips.

    Many rows: cut into blocks, each thread has a share of them, and a thread done with its
    share takes the blocks left in the others'. A core slowed down by its neighbours on a
    shared machine then no longer holds up the product (2 threads, float32, median GFLOP/s
    of four processes against fixed halves: 152 against 138 at (1024, 1024) by (1024, 256),
    139 against 122 at (3200, 64) by (64, 512), 143 against 132 at (1024, 512) by (512, 64);
    measured). Few rows (a step's product, a few microseconds): fixed shares of the panels,
    which then stay in each thread's cache from step to step. Each block is done once, the
    same way by whichever thread: the result does not depend on who did it.
    """
    n_panels, K, nr = panels.shape
    threads = numba_threads()
    by_rows = M >= threads * _ROWS_PER_THREAD
    unit, blocks = 1, 0  # rows per block, and blocks
    if by_rows:
        rows_unit = MR if layout[3] else 1  # rows per strip
        wanted = min(threads * _BLOCKS_PER_THREAD,
                     max(threads, M * K * nr * n_panels // _BLOCK_MULTIPLY_ADDS))
        unit = max(rows_unit, M // wanted // rows_unit * rows_unit)
        blocks = -(-M // unit)
    # Blocks taken of each share (none to take for a step's product).
    taken = np.zeros(threads * _COUNTER_STRIDE if by_rows else 0, dtype=np.intp)
    # One parallel loop for both cases: each costs seconds to compile, for every signature.
    for part in prange(threads):
        if not by_rows:
            _matmul_part(a, layout, panels, out, accumulate, np.intp(0), M,
                         part * n_panels // threads, (part + 1) * n_panels // threads)
            continue
        for k in range(threads):  # this thread's share first, then what is left of the others'
            owner = (part + k) % threads
            first, end = owner * blocks // threads, (owner + 1) * blocks // threads
            block = first + _fetch_add(taken, owner * _COUNTER_STRIDE, 1)
            while block < end:
                _matmul_part(a, layout, panels, out, accumulate, block * unit,
                             min(M, (block + 1) * unit), np.intp(0), n_panels)
                block = first + _fetch_add(taken, owner * _COUNTER_STRIDE, 1)


@_jit
def matmul_parallel(a, panels, out, accumulate):
    """:func:`matmul` on Numba's threads (``numba.get_num_threads()``), bit for bit the same.

    Many rows (the input projection, a chunk's gradients) are shared out in blocks of rows,
    few (the batch of one step) in blocks of panels: each output element is still one
    thread's plain sum over ``k`` in order. Parameters as for :func:`matmul`.
    """
    M, K = a.shape
    _check_operands(M, K, panels, out)
    _matmul_on_threads(a, _plain_layout(a), M, panels, out, accumulate)


@_jit
def matmul_rows_parallel(strips, panels, out, accumulate):
    """``out (+)= a @ w`` on Numba's threads with ``strips = pack_rows(a, ...)`` and
    ``panels = pack(w, M)``; bit for bit :func:`matmul`'s result. ``out`` (M, N) as there."""
    n_strips, K, _ = strips.shape
    M = out.shape[0]
    if n_strips != -(-M // MR):
        raise ValueError("gemm.matmul_rows_parallel: strips do not match out (M, N)")
    _check_operands(M, K, panels, out)
    _matmul_on_threads(strips, (K, 1, MR, True), M, panels, out, accumulate)


# One product on two threads at batch 1, where there are no rows to share out: the threads
# of a parallel region share each step's product by halves of the panels
# (:func:`matmul_share`), then one of them runs the step's cell math. Each piece of work is a
# token (a half of a product, in slot 0 or 1; the cell math, in slot 0), numbered in the
# order the pieces must run. A thread takes a token of the current piece only
# (:func:`claim_share`), once every token before it is finished (:func:`finish_share`).
# A thread waits only for tokens that a thread has taken and is working on, so the work
# completes however the region's iterations are scheduled, even one after the other on one
# thread (as TBB may run them); each token is done once, the same way, whoever takes it, so
# results do not depend on it. Each thread asks for its own half first: it then reads the
# same half of the weights at every step, from its own core's L2.


@_jit
def share_counters():
    """Counters for :func:`claim_share` and :func:`finish_share`, a cache line apart: per
    slot, one past the first token of the last piece whose token in that slot was taken;
    then the tokens finished."""
    return np.zeros(3 * _COUNTER_STRIDE, dtype=np.intp)


@_jit
def claim_share(counters, first, slot):
    """Wait until every token before ``first`` (a piece's first token) is finished, then
    take the piece's token in ``slot`` (0 or 1): returns whether this thread got it."""
    while _load_acquire(counters, 2 * _COUNTER_STRIDE) < first:
        pass
    index = slot * _COUNTER_STRIDE
    taken = _load_acquire(counters, index)
    while taken <= first:
        if _compare_exchange(counters, index, taken, first + 1):
            return True
        taken = _load_acquire(counters, index)
    return False


@_jit
def finish_share(counters):
    """Count a taken token as finished; the writes of its work are visible to the threads
    that then see it finished."""
    _fetch_add(counters, 2 * _COUNTER_STRIDE, 1)


@_jit
def matmul_share(a, panels, out, share, shares):
    """Share ``share`` of ``shares`` of :func:`matmul`'s ``out = a @ w``: the columns of the
    ``share``-th of ``shares`` consecutive blocks of panels. Parameters as for
    :func:`matmul`."""
    M, K = a.shape
    _check_operands(M, K, panels, out)
    n = panels.shape[0]
    _matmul_part(a, _plain_layout(a), panels, out, False, np.intp(0), M, share * n // shares,
                 (share + 1) * n // shares)


# A dot product summed in any order lets LLVM vectorise it (as BLAS does), and in fused
# multiply-adds (as the packed kernels and BLAS compute): 1.15-1.2x faster than multiplies
# and adds, float32 (512, 128) and (128, 128), 1 thread (measured). Only this function gets
# the flags, never the cell math.
@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def matvec(w, v, out):
    """``out[k] = sum_j w[k, j] * v[j]``: ``w`` (N, M), ``v`` (M,), ``out`` (N,) written.

    For weights as they are (no packing): a batch-1 step of the kernels of
    :mod:`numbarnn.kernels.step`, and the forward products of the sequence drivers at
    batch 1 over a few steps. Four rows at a time, so each element of ``v`` is loaded once
    for four rows. Slower than the one-row kernel over packed panels, which the drivers
    use from a dozen steps on (AMD Zen 3, (512, 128): 4.9 against 3.2 us, measured), but
    without the packing.
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
