"""numbarnn: recurrent neural networks (Elman RNN, LSTM, GRU) compiled by Numba.

Layers with PyTorch's interface and weights, running on the CPU (``@njit``) or on NVIDIA
GPUs (``@cuda.jit`` + CuPy); the kernels themselves live in :mod:`numbarnn.kernels` and can
be called from your own ``@njit`` code.

>>> import numpy as np, numbarnn
>>> m = numbarnn.LSTM(8, 32, seed=0)
>>> y, (h_n, c_n) = m(np.zeros((10, 4, 8), np.float32))
"""

from . import losses, optim
from .backend import Backend, cuda_status, get_backend
from .io import load, load_checkpoint, save
from .layers import GRU, LSTM, RNN
from .losses import cross_entropy, mse_loss
from .modules import LastStep, Linear, Sequential, from_config, get_config
from .optim import SGD, Adam, AdamW, CosineAnnealingLR, RMSprop, StepLR, clip_grad_norm
from .training import History, evaluate, fit, predict

__version__ = "0.1.0"

__all__ = [
    "RNN", "LSTM", "GRU", "Linear", "LastStep", "Sequential",
    "mse_loss", "cross_entropy",
    "SGD", "Adam", "AdamW", "RMSprop", "clip_grad_norm", "StepLR", "CosineAnnealingLR",
    "fit", "evaluate", "predict", "History",
    "save", "load", "load_checkpoint", "get_config", "from_config",
    "Backend", "get_backend", "cuda_status", "losses", "optim", "__version__",
]
