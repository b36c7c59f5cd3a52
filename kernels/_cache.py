"""Keep Numba's on-disk cache of the drivers in step with cells.py.

Numba keys a cached function on the file that defines it (cpu.py, cuda.py), not on the
cells.py functions inlined into it: after cells.py changes, a cached driver would still
run the old cell math. Each driver module calls :func:`flush_if_cells_changed` once at
import; it drops the module's cached functions when the hash of cells.py differs from the
one recorded beside the cache.
"""

import hashlib
from pathlib import Path

_CELLS_DIGEST = hashlib.sha256(Path(__file__).with_name("cells.py").read_bytes()).hexdigest()


def flush_if_cells_changed(module_name, dispatchers):
    """Flush the disk cache of ``dispatchers`` when cells.py changed since it was written.

    Parameters
    ----------
    module_name : str
        Names the stamp file, one per driver module.
    dispatchers : iterable of numba dispatchers
        Cached (``cache=True``) dispatchers; any without a disk cache are skipped.
    """
    caches = [d._cache for d in dispatchers if getattr(d, "_cache", None) is not None]
    caches = [c for c in caches if getattr(c, "_cache_path", None)]
    if not caches:
        return
    stamp = Path(caches[0]._cache_path) / f"{module_name}.cells.sha256"
    try:
        if stamp.is_file() and stamp.read_text() == _CELLS_DIGEST:
            return
        for cache in caches:
            cache.flush()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(_CELLS_DIGEST)
    except OSError:  # a read-only cache location: Numba then recompiles as needed
        pass
