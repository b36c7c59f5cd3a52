"""The CPU kernels themselves, below the layers (float32, one thread of Numba's):

* the per-step recurrent product, batch by weights, through the packed-weights kernel of
  ``numbarnn.kernels.gemm`` next to one BLAS call (``np.dot``) for the same product;
* a user's ``@njit`` loop of batch-1 LSTM steps (``numbarnn.kernels.step``), per step.
"""

import numpy as np
from numba import njit

from numbarnn.kernels import gemm, step

# (B, H, G): the recurrent products of the configurations (G*H columns).
PRODUCTS = {
    "lstm-large": (64, 512, 4),
    "lstm-medium": (64, 256, 4),
    "lstm-b16": (16, 128, 4),
    "gru-medium": (64, 256, 3),
    "lstm-b1": (1, 128, 4),
}
_STEPS = 20  # products per timed call: one per step of a short sequence


@njit(cache=True)
def _packed_steps(h, panels, out, steps):
    for _ in range(steps):
        gemm.matmul(h, panels, out, False)


@njit(cache=True)
def _blas_steps(h, w, out, steps):
    for _ in range(steps):
        np.dot(h, w, out)


@njit(cache=True)
def _lstm_steps(xs, w_ih, w_hh, b_ih, b_hh, h, c):
    for s in range(xs.shape[0]):
        step.lstm_step_vector(xs[s], w_ih, w_hh, b_ih, b_hh, h, c, h, c)


class RecurrentProduct:
    """``_STEPS`` products ``h @ w_hh.T``: packed once, or one BLAS call each."""

    params = (list(PRODUCTS), ["packed", "blas"])
    param_names = ("product", "method")

    def setup(self, product, method):
        B, H, G = PRODUCTS[product]
        rng = np.random.default_rng(0)
        self.w = rng.standard_normal((G * H, H)).astype(np.float32).T  # (H, G*H) view
        self.h = rng.standard_normal((B, H)).astype(np.float32)
        self.out = np.empty((B, G * H), np.float32)
        self.panels = gemm.pack(self.w, B)
        self.time_products(product, method)  # compile or load the cache

    def time_products(self, product, method):
        if method == "packed":
            _packed_steps(self.h, self.panels, self.out, _STEPS)
        else:
            _blas_steps(self.h, self.w, self.out, _STEPS)


class NjitLSTMSteps:
    """``_STEPS`` batch-1 LSTM steps (I = H = 128) from a user's ``@njit`` loop."""

    def setup(self):
        rng = np.random.default_rng(0)
        I = H = 128
        self.args = (
            rng.standard_normal((_STEPS, I)).astype(np.float32),
            (0.1 * rng.standard_normal((4 * H, I))).astype(np.float32),
            (0.1 * rng.standard_normal((4 * H, H))).astype(np.float32),
            np.zeros(4 * H, np.float32), np.zeros(4 * H, np.float32),
            np.zeros(H, np.float32), np.zeros(H, np.float32),
        )
        self.time_steps()

    def time_steps(self):
        _lstm_steps(*self.args)
