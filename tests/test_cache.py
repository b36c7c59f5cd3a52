"""Cached kernels are dropped when cells.py, cpu.py or gemm.py changes (Numba keys them on
their own file only)."""

import hashlib
from pathlib import Path

from numba import njit

from numbarnn.kernels import _cache


def test_stale_sources_stamp_flushes_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))

    @njit(cache=True)
    def driver(a):
        return a + 1

    monkeypatch.setattr(driver._cache, "_cache_path", str(tmp_path))
    flushed = []
    monkeypatch.setattr(driver._cache, "flush", lambda: flushed.append(True))
    stamp = tmp_path / "mod.sources.sha256"
    stamp.write_text("digest of older cells.py and cpu.py")

    _cache.flush_if_sources_changed("mod", [driver])
    assert flushed == [True]
    assert stamp.read_text() == _cache._DIGEST

    _cache.flush_if_sources_changed("mod", [driver])  # unchanged: nothing flushed
    assert flushed == [True]


def test_digest_covers_the_cell_math_and_the_cpu_helpers():
    """step.py compiles cpu.py's row functions in, cpu.py gemm.py's products: all three
    files must be in the digest."""
    folder = Path(_cache.__file__).parent
    sources = b"".join((folder / name).read_bytes() for name in ("cells.py", "cpu.py", "gemm.py"))
    assert _cache._DIGEST == hashlib.sha256(sources).hexdigest()
