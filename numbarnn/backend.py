"""Backend selection: where the kernels run and which array module holds the data.

``'cpu'``  -- NumPy arrays and the ``@njit`` drivers of :mod:`numbarnn.kernels.cpu`.
``'cuda'`` -- CuPy arrays and the ``@cuda.jit`` drivers of :mod:`numbarnn.kernels.cuda`.
              With the CUDA simulator switched on (``NUMBA_ENABLE_CUDASIM=1`` before numba
              is imported) the same kernels run on the CPU and NumPy stands in for CuPy.
``'auto'`` -- ``'cuda'`` when it is usable (see :func:`cuda_status`), else ``'cpu'``.

Detection never raises and does no GPU work at import time.
"""

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

import numpy as np

BACKEND_NAMES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Backend:
    """A resolved backend.

    Attributes
    ----------
    name : str
        ``'cpu'`` or ``'cuda'``.
    xp : module
        The array module (``numpy`` or ``cupy``).
    kernels : module
        The driver module (:mod:`numbarnn.kernels.cpu` or :mod:`numbarnn.kernels.cuda`);
        both expose the same driver functions.
    simulated : bool
        True when ``'cuda'`` runs in Numba's CUDA simulator.
    """

    name: str
    xp: ModuleType
    kernels: ModuleType
    simulated: bool = False

    def asarray(self, a, dtype=None):
        """``a`` as a C-contiguous array of this backend (a no-op when it already is one)."""
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_numpy(self, a):
        """A NumPy copy of the backend array ``a``."""
        if self.xp is np:
            return np.array(a, copy=True)
        return self.xp.asnumpy(a)


def _simulator_enabled():
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


def cuda_status():
    """Whether the ``'cuda'`` backend can run here, and why not.

    Returns
    -------
    usable : bool
    reason : str
        ``'simulator'``, ``'device'``, or what is missing (numba-cuda, a driver, CuPy, a
        device).
    """
    try:
        if importlib.util.find_spec("numba_cuda") is None:
            return False, "numba-cuda is not installed (pip install 'numbarnn[cuda]')"
        if _simulator_enabled():
            return True, "simulator"
        from numba import cuda

        if not cuda.is_available():
            return False, "no usable CUDA driver or device was found by numba.cuda"
        try:
            import cupy
        except ImportError:
            return False, "CuPy is not installed (pip install cupy-cuda13x)"
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False, "CuPy sees no CUDA device"
        return True, "device"
    except Exception as exc:  # detection must never raise
        return False, f"CUDA detection failed: {exc!r}"


_cache = {}


def get_backend(name="auto"):
    """Resolve a backend name.

    Parameters
    ----------
    name : {'cpu', 'cuda', 'auto'} or Backend
        ``'auto'`` picks ``'cuda'`` when :func:`cuda_status` says it is usable.

    Returns
    -------
    Backend

    Raises
    ------
    ValueError
        For an unknown name.
    RuntimeError
        For ``'cuda'`` when it cannot run here; the message says why.
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend: expected one of {BACKEND_NAMES}, got {name!r}")
    if name == "auto":
        name = "cuda" if cuda_status()[0] else "cpu"
    if name not in _cache:
        if name == "cpu":
            from .kernels import cpu

            _cache[name] = Backend("cpu", np, cpu)
        else:
            usable, reason = cuda_status()
            if not usable:
                raise RuntimeError(f"backend 'cuda' is not available: {reason}")
            from .kernels import cuda

            simulated = reason == "simulator"
            xp = np if simulated else importlib.import_module("cupy")
            _cache[name] = Backend("cuda", xp, cuda, simulated)
    return _cache[name]
