"""The packed-weights GEMM of the CPU drivers (numbarnn.kernels.gemm) against NumPy in
float64: every row count of the micro-kernel, ragged last panels, several blocks along K,
strided views, accumulation."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numbarnn.kernels import gemm

DTYPES = [np.float32, np.float64]
# (M, K, N): M covers each row count of the tile kernel (1..MR), the last rows split in two
# tiles (MR + 1 .. MR + 3), several tiles and (1000) several L2 blocks of rows; N a ragged
# last panel or exact panels; K = 1000 and 500 run over several L1 blocks.
SHAPES = [(1, 1, 1), (2, 3, 5), (gemm.MR, 7, 16), (gemm.MR + 1, 33, 40), (gemm.MR + 2, 9, 20),
          (gemm.MR + 3, 40, 33), (13, 64, 48), (64, 256, 1024), (16, 1000, 100), (5, 17, 2),
          (1000, 500, 40)]


def _tolerance(dtype, K):
    return (1e-13 if dtype == np.float64 else 1e-6) * max(K, 1) ** 0.5


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("packed_for", ["M", 1], ids=["narrow", "wide"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_matches_numpy(shape, packed_for, dtype):
    """Panels packed for the product's M rows (the one-row kernel at M = 1), or wide panels
    for one row used with M rows."""
    M, K, N = shape
    rows = M if packed_for == "M" else 1
    rng = np.random.default_rng(M * 1000 + K + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    w = rng.standard_normal((K, N)).astype(dtype)
    expected = a.astype(np.float64) @ w.astype(np.float64)
    scale = np.abs(expected).max()
    panels = gemm.pack(w, rows)
    nr = gemm.panel_width(np.dtype(dtype).itemsize, rows)
    assert panels.shape == (-(-N // nr), K, nr)
    padded = panels.transpose(1, 0, 2).reshape(K, -1)  # the panels side by side
    np.testing.assert_array_equal(padded[:, :N], w)
    assert (padded[:, N:] == 0).all()

    out = np.full((M, N), np.nan, dtype)  # poisoned: every element must be written
    gemm.matmul(a, panels, out, False)
    assert np.abs(out - expected).max() <= _tolerance(dtype, K) * scale

    start = rng.standard_normal((M, N)).astype(dtype)
    out = start.copy()
    gemm.matmul(a, panels, out, True)
    assert np.abs(out - (start + expected)).max() <= _tolerance(dtype, K) * (scale + 4)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_matmul_large_output_over_several_k_blocks(dtype):
    """An output larger than L2 (its tiles prefetch their lines) with K = 700 over several
    blocks along K, written and accumulated, against NumPy in float64."""
    rng = np.random.default_rng(11)
    itemsize = np.dtype(dtype).itemsize
    K, N = 700, 3 * gemm.panel_width(itemsize, 2) + 5
    M = gemm._PREFETCH_OUT_BYTES // (N * itemsize) + gemm.MR + 1
    a = rng.standard_normal((M, K)).astype(dtype)
    w = rng.standard_normal((K, N)).astype(dtype)
    start = rng.standard_normal((M, N)).astype(dtype)
    expected = a.astype(np.float64) @ w.astype(np.float64)
    scale = np.abs(expected).max()
    panels = gemm.pack(w, M)
    out = np.full((M, N), np.nan, dtype)
    gemm.matmul(a, panels, out, False)
    assert np.abs(out - expected).max() <= _tolerance(dtype, K) * scale
    out = start.copy()
    gemm.matmul(a, panels, out, True)
    assert np.abs(out - (start + expected)).max() <= _tolerance(dtype, K) * (scale + 4)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_matmul_large_output_is_matmul_by_rows(dtype):
    """An output larger than L2 (whose tiles prefetch their lines first, a ragged last panel
    among them) holds, bit for bit, the products of its blocks of rows (small outputs, not
    prefetched), written and accumulated."""
    rng = np.random.default_rng(7)
    nr = gemm.panel_width(np.dtype(dtype).itemsize, 2)
    M, K, N = 4 * gemm.MR + 1, 20, 3 * nr + 5
    M *= -(-gemm._PREFETCH_OUT_BYTES // (M * N * np.dtype(dtype).itemsize)) + 1
    assert M * N * np.dtype(dtype).itemsize > gemm._PREFETCH_OUT_BYTES
    a = rng.standard_normal((M, K)).astype(dtype)
    panels = gemm.pack(rng.standard_normal((K, N)).astype(dtype), M)
    start = rng.standard_normal((M, N)).astype(dtype)
    for accumulate in (False, True):
        expected = start.copy()
        for lo in range(0, M, 64):
            gemm.matmul(a[lo : lo + 64], panels, expected[lo : lo + 64], accumulate)
        out = start.copy() if accumulate else np.full_like(start, np.nan)
        gemm.matmul(a, panels, out, accumulate)
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_matmul_on_views(dtype):
    """Row strides of views, weights of any layout, and nothing written outside ``out``."""
    M, K, N = 9, 21, 37
    rng = np.random.default_rng(0)
    a_big = rng.standard_normal((M, K + 5)).astype(dtype)
    a = a_big[:, 2 : K + 2]
    w = np.asfortranarray(rng.standard_normal((K, N)).astype(dtype))
    out_big = rng.standard_normal((M, N + 7)).astype(dtype)
    before = out_big.copy()
    out = out_big[:, 3 : N + 3]
    gemm.matmul(a, gemm.pack(w, M), out, False)
    expected = a.astype(np.float64) @ w
    assert np.abs(out - expected).max() <= _tolerance(dtype, K) * np.abs(expected).max()
    np.testing.assert_array_equal(out_big[:, :3], before[:, :3])
    np.testing.assert_array_equal(out_big[:, N + 3 :], before[:, N + 3 :])
    np.testing.assert_array_equal(a_big[:, 2 : K + 2], a)  # inputs untouched


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("view", ["transposed", "strided"])
def test_matmul_a_of_any_strides(view, dtype):
    """``a`` may be a transposed matrix (the weight gradients' ``da.T``) or any strided view."""
    M, K, N = 50, 700, 24
    rng = np.random.default_rng(1)
    if view == "transposed":
        a = rng.standard_normal((K, M)).astype(dtype).T
    else:
        a = rng.standard_normal((2 * M, 3 * K)).astype(dtype)[::2, ::3]
    w = rng.standard_normal((K, N)).astype(dtype)
    out = np.full((M, N), np.nan, dtype)
    gemm.matmul(a, gemm.pack(w, M), out, False)
    expected = a.astype(np.float64) @ w
    assert np.abs(out - expected).max() <= _tolerance(dtype, K) * np.abs(expected).max()


def _laid_out(w, layout):
    """``w`` (K, N) with contiguous rows ("C"), contiguous columns ("F"), contiguous columns
    that are not adjacent ("F-gaps": every other column of a wider array), or neither."""
    if layout in ("C", "F"):
        return np.asarray(w, order=layout)
    wider = np.zeros((w.shape[0], 2 * w.shape[1]), w.dtype, order="F")
    wider[:, ::2] = w
    if layout == "F-gaps":
        return wider[:, ::2]
    taller = np.zeros((2 * w.shape[0], w.shape[1]), w.dtype, order="F")
    taller[::2] = w
    return taller[::2]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("rows", [1, 4], ids=["wide", "narrow"])
@pytest.mark.parametrize("layout", ["C", "F", "F-gaps", "neither"])
@pytest.mark.parametrize("K", [9, 40])
@pytest.mark.parametrize("N", [1, 37, 64])
def test_pack_is_its_definition(N, K, layout, rows, dtype):
    """``panels[p, k, j] = w[k, p*NR + j]``, zero past column N, for weights with contiguous
    rows (packed row by row), contiguous columns (square tiles transposed in registers and the
    edges around them) or neither, ragged or exact last panels; C-contiguous from the start of
    a 64-byte cache line (the micro-kernel's vector loads then never straddle two lines)."""
    w = _laid_out(np.random.default_rng(N).standard_normal((K, N)).astype(dtype), layout)
    panels = gemm.pack(w, rows)
    nr = gemm.panel_width(w.itemsize, rows)
    assert panels.shape == (-(-N // nr), K, nr)
    assert panels.flags.c_contiguous and panels.ctypes.data % 64 == 0
    expected = np.zeros((K, panels.shape[0] * nr), dtype)
    expected[:, :N] = w
    np.testing.assert_array_equal(panels, expected.reshape(K, -1, nr).transpose(1, 0, 2))


def test_pack_and_matmul_without_columns():
    """N = 0: no panels, nothing written (and nothing outside the empty output)."""
    panels = gemm.pack(np.ones((3, 0), np.float32), 2)
    assert panels.shape == (0, 3, gemm.panel_width(4, 2))
    out = np.empty((2, 0), np.float32)
    gemm.matmul(np.ones((2, 3), np.float32), panels, out, False)


def test_matmul_empty_k():
    out = np.full((3, 4), np.nan, np.float32)
    gemm.matmul(np.zeros((3, 0), np.float32), gemm.pack(np.zeros((0, 4), np.float32), 3), out, False)
    assert (out == 0).all()


def test_matmul_rejects_mismatch():
    a = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="contiguous rows"):
        gemm.matmul(a, gemm.pack(np.ones((8, 5), np.float32), 4),
                    np.empty((5, 4), np.float32).T, False)
    with pytest.raises(ValueError, match="panels do not match"):
        gemm.matmul(a, gemm.pack(np.ones((7, 5), np.float32), 4), np.empty((4, 5), np.float32), False)
    with pytest.raises(ValueError, match="panels do not match"):
        # One panel for 5 columns; an output wider than a panel needs two.
        wide = gemm.panel_width(4, 4) + 8
        gemm.matmul(a, gemm.pack(np.ones((8, 5), np.float32), 4), np.empty((4, wide), np.float32),
                    False)


# (M, K, N) for the products on Numba's threads: few rows (each thread a share of the panels;
# wide panels at M = 1, fewer panels than threads at N = 5), many rows (blocks of rows,
# ragged at both ends of a block: M = 1000, not a multiple of MR).
THREADED_SHAPES = [(1, 300, 100), (7, 40, 5), (64, 256, 1024), (1000, 500, 40), (133, 9, 37)]


def _threaded_operands(shape, dtype, transposed):
    M, K, N = shape
    rng = np.random.default_rng(M + K + N)
    a = rng.standard_normal((K, M) if transposed else (M, K)).astype(dtype)
    a = a.T if transposed else a
    w = rng.standard_normal((K, N)).astype(dtype)
    start = rng.standard_normal((M, N)).astype(dtype)
    return a, w, start


def _assert_is_matmul(product, a, panels, start):
    """``product(out, accumulate)`` writes and accumulates exactly what :func:`gemm.matmul`
    does (``out`` starts as NaN or as ``start``)."""
    for accumulate in (False, True):
        expected = start.copy()
        out = start.copy() if accumulate else np.full_like(start, np.nan)
        gemm.matmul(a, panels, expected, accumulate)
        product(out, accumulate)
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", THREADED_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_parallel_is_matmul(shape, threads, dtype, numba_threads):
    """On any number of threads, bit for bit the single-threaded product, written and
    accumulated, and nothing of the inputs changed."""
    numba_threads(threads)
    a, w, start = _threaded_operands(shape, dtype, transposed=False)
    panels = gemm.pack(w, a.shape[0])
    a_before = a.copy()
    _assert_is_matmul(lambda out, acc: gemm.matmul_parallel(a, panels, out, acc), a, panels,
                      start)
    np.testing.assert_array_equal(a, a_before)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("transposed", [True, False], ids=["a.T", "a"])
@pytest.mark.parametrize("shape", THREADED_SHAPES[1:], ids=lambda s: "x".join(map(str, s)))
def test_pack_rows_and_matmul_rows_parallel(shape, transposed, threads, dtype, numba_threads):
    """Strips of MR rows (the last one zero-padded), and the product over them: bit for bit
    :func:`gemm.matmul`'s, for a left operand with contiguous columns (a transposed
    gradient) or rows. The row sums added on the way to two outputs are bit for bit those
    of adding the columns one after the other; an empty output is left out."""
    numba_threads(threads)
    a, w, start = _threaded_operands(shape, dtype, transposed)
    M, K = a.shape
    rng = np.random.default_rng(4)
    sums, more_sums = rng.standard_normal((2, M)).astype(dtype)
    expected_sums, expected_more = sums.copy(), more_sums.copy()
    for k in range(K):
        expected_sums += a[:, k]
        expected_more += a[:, k]
    strips = gemm.pack_rows(a, sums, more_sums)
    np.testing.assert_array_equal(sums, expected_sums)
    np.testing.assert_array_equal(more_sums, expected_more)
    np.testing.assert_array_equal(gemm.pack_rows(a, sums[:0], more_sums), strips)
    for k in range(K):
        expected_more += a[:, k]
    np.testing.assert_array_equal(more_sums, expected_more)
    np.testing.assert_array_equal(sums, expected_sums)
    assert strips.shape == (-(-M // gemm.MR), K, gemm.MR)
    stacked = strips.transpose(0, 2, 1).reshape(-1, K)  # the strips' rows one after another
    np.testing.assert_array_equal(stacked[:M], a)
    assert (stacked[M:] == 0).all()
    panels = gemm.pack(w, M)
    _assert_is_matmul(lambda out, acc: gemm.matmul_rows_parallel(strips, panels, out, acc), a,
                      panels, start)


def test_pack_into_blocks_of_rows():
    """Panels packed from two arrays, a block of rows from each, are those of the two stacked."""
    rng = np.random.default_rng(2)
    top, bottom = rng.standard_normal((3, 37)), np.asfortranarray(rng.standard_normal((40, 37)))
    panels = gemm.empty_panels(43, 37, 4, top)
    gemm.pack_into(bottom, panels, 3)
    gemm.pack_into(top, panels, 0)
    np.testing.assert_array_equal(panels, gemm.pack(np.vstack([top, bottom]), 4))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("K", [1, 7, 515])
def test_pack_into_parallel_is_pack_into(K, threads, dtype, numba_threads):
    """On threads, a block of rows each (fewer rows than threads included), the panels of
    :func:`gemm.pack_into`, at an offset into the panels and around rows packed before."""
    numba_threads(threads)
    rng = np.random.default_rng(K)
    w = rng.standard_normal((K, 37)).astype(dtype)
    first = rng.standard_normal((3, 37)).astype(dtype)
    panels = gemm.empty_panels(K + 3, 37, 4, w)
    gemm.pack_into(first, panels, 0)
    gemm.pack_into_parallel(w, panels, 3)
    np.testing.assert_array_equal(panels, gemm.pack(np.vstack([first, w]), 4))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("N", [37, 300])
def test_pack_parallel_is_pack(N, layout, threads, numba_threads):
    """Packed on threads, a share of the panels each (more shares than panels included), and
    for the threads' products (by panels at few rows, as :func:`gemm.pack` at many): the
    panels of :func:`gemm.pack`, ragged last panel and its zero padding included. float32
    only: each parallel function compiles for seconds, and the packing is that of ``pack``,
    tested in both dtypes above."""
    numba_threads(threads)
    w = _laid_out(np.random.default_rng(N).standard_normal((40, N)).astype(np.float32), layout)
    for rows in (1, 4, 1000):
        expected = gemm.pack(w, rows)
        for shares in (1, 2, 3, expected.shape[0] + 1):
            np.testing.assert_array_equal(gemm.pack_parallel(w, rows, shares), expected)
        np.testing.assert_array_equal(gemm.pack_for_threads(w, rows), expected)


def test_threaded_products_reject_mismatch():
    a, none = np.ones((12, 8), np.float32), np.empty(0, np.float32)
    panels = gemm.pack(np.ones((8, 5), np.float32), 12)
    with pytest.raises(ValueError, match="panels do not match"):
        gemm.matmul_parallel(a, panels, np.empty((11, 5), np.float32), False)
    with pytest.raises(ValueError, match="strips do not match"):
        gemm.matmul_rows_parallel(gemm.pack_rows(a, none, none), panels,
                                  np.empty((13, 5), np.float32), False)
    with pytest.raises(ValueError, match="panels do not match"):
        gemm.matmul_rows_parallel(gemm.pack_rows(a[:, :7], none, none), panels,
                                  np.empty((12, 5), np.float32), False)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (4, 128), (514, 131)])
def test_matvec_matches_numpy(shape, dtype):
    """The batch-1 product over weights as they are, including the rows past a multiple of 4."""
    N, M = shape
    rng = np.random.default_rng(N + M)
    w = rng.standard_normal((N, M)).astype(dtype)
    v = rng.standard_normal(M).astype(dtype)
    out = np.full(N, np.nan, dtype)
    gemm.matvec(w, v, out)
    expected = w.astype(np.float64) @ v
    assert np.abs(out - expected).max() <= _tolerance(dtype, M) * np.abs(expected).max()


def test_other_vector_widths(tmp_path):
    """The tests above with the kernels built for the vector widths this CPU does not have
    (SSE/NEON 16 bytes, AVX2 32, AVX-512 64: LLVM splits or widens them, so each runs here),
    each in a fresh Numba cache: the panel widths and the micro-kernel's code all follow the
    width. The widths run at once, in processes of their own (compiling takes minutes, on
    one core each)."""
    runs = {}
    for vector_bytes in (w for w in (16, 32, 64) if w != gemm._VECTOR_BYTES):
        env = dict(os.environ, NUMBARNN_VECTOR_BYTES=str(vector_bytes),
                   NUMBA_CACHE_DIR=str(tmp_path / str(vector_bytes)))
        check = (
            "from numbarnn.kernels import gemm; "
            f"assert gemm.panel_width(4, 2) == 2 * {vector_bytes} // 4, gemm.panel_width(4, 2)"
        )
        subprocess.run([sys.executable, "-c", check], env=env, check=True)
        runs[vector_bytes] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
             "-k", "not other_vector_widths"],
            env=env, cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
    for vector_bytes, run in runs.items():
        stdout, stderr = run.communicate()
        assert run.returncode == 0, f"{vector_bytes} bytes:\n{stdout[-3000:]}{stderr[-2000:]}"
