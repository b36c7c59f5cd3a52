"""numbarnn: recurrent neural networks (Elman RNN, LSTM, GRU) compiled by Numba.

Layers with PyTorch's interface and weights, running on the CPU (``@njit``) or on NVIDIA
GPUs (``@cuda.jit`` + CuPy); the kernels themselves live in :mod:`numbarnn.kernels` and can
be called from your own ``@njit`` code.

>>> import numpy as np, numbarnn
>>> m = numbarnn.LSTM(8, 32, seed=0)
>>> y, (h_n, c_n) = m(np.zeros((10, 4, 8), np.float32))
"""

from .backend import Backend, cuda_status, get_backend
from .layers import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "Backend", "get_backend", "cuda_status", "__version__"]
