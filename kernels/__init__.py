"""numbarnn's compute core: plain functions over arrays, no classes, no state.

* :mod:`numbarnn.kernels.cells` -- per-element forward/backward math of each cell
  (``@njit(inline="always")``; callable from user ``@njit`` and ``@cuda.jit`` code).
* :mod:`numbarnn.kernels.cpu` -- ``@njit`` drivers for one layer and one direction over a
  whole sequence, forward and backward.
* :mod:`numbarnn.kernels.step` -- ``@njit`` single-step forward of each cell (batched,
  batch-1 vector and stacked layers), for streaming and for users' own ``@njit`` loops.
* :mod:`numbarnn.kernels.cuda` -- the same on NVIDIA GPUs (imported on demand: it needs
  the ``cuda`` extra, or the CUDA simulator).
"""

from . import cells, cpu, step

__all__ = ["cells", "cpu", "step"]
