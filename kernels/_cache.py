"""Keep Numba's on-disk cache of the kernels in step with the sources compiled into them.

Numba keys a cached function on the file that defines it, not on the functions of other
files compiled into it: the cell math of cells.py is inlined into every driver and
kernel, step.py calls the row functions and BLAS helpers of cpu.py, and cpu.py the packed
products of gemm.py. After one of those files changes, a cached kernel would still run the
old code. Each kernel module calls :func:`flush_if_sources_changed` once at import; it
drops the module's cached functions when the hash of the shared sources differs from the
one recorded beside the cache.
"""

import hashlib
from pathlib import Path

_SHARED_SOURCES = ("cells.py", "cpu.py", "gemm.py")
_DIGEST = hashlib.sha256(
    b"".join(Path(__file__).with_name(name).read_bytes() for name in _SHARED_SOURCES)
).hexdigest()


def flush_if_sources_changed(module_name, dispatchers):
    """Flush the disk cache of ``dispatchers`` when a shared source changed since it was
    written.

    Parameters
    ----------
    module_name : str
        Names the stamp file, one per kernel module.
    dispatchers : iterable of numba dispatchers
        Cached (``cache=True``) dispatchers; any without a disk cache are skipped.
    """
    caches = [d._cache for d in dispatchers if getattr(d, "_cache", None) is not None]
    caches = [c for c in caches if getattr(c, "_cache_path", None)]
    if not caches:
        return
    stamp = Path(caches[0]._cache_path) / f"{module_name}.sources.sha256"
    try:
        if stamp.is_file() and stamp.read_text() == _DIGEST:
            return
        for cache in caches:
            cache.flush()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(_DIGEST)
    except OSError:  # a read-only cache location: Numba then recompiles as needed
        pass
