"""Cached drivers are dropped when cells.py changes (Numba keys them on their own file)."""

from numba import njit

from numbarnn.kernels import _cache


def test_stale_cells_stamp_flushes_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))

    @njit(cache=True)
    def driver(a):
        return a + 1

    monkeypatch.setattr(driver._cache, "_cache_path", str(tmp_path))
    flushed = []
    monkeypatch.setattr(driver._cache, "flush", lambda: flushed.append(True))
    stamp = tmp_path / "mod.cells.sha256"
    stamp.write_text("digest of an older cells.py")

    _cache.flush_if_cells_changed("mod", [driver])
    assert flushed == [True]
    assert stamp.read_text() == _cache._CELLS_DIGEST

    _cache.flush_if_cells_changed("mod", [driver])  # unchanged: nothing flushed
    assert flushed == [True]
