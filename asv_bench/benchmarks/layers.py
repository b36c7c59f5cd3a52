"""Forward and training-step time of numbarnn's layers (float32, CPU)."""

import numpy as np

import numbarnn

CELLS = {"lstm": numbarnn.LSTM, "gru": numbarnn.GRU, "rnn": numbarnn.RNN}
SIZES = {"small": (50, 1, 128, 128), "medium": (100, 64, 256, 256)}


class Layer:
    params = (list(CELLS), list(SIZES))
    param_names = ("cell", "size")

    def setup(self, cell, size):
        T, B, I, H = SIZES[size]
        rng = np.random.default_rng(0)
        self.model = CELLS[cell](I, H, seed=0)
        self.x = rng.standard_normal((T, B, I)).astype(np.float32)
        y, _ = self.model(self.x)  # compile (or load the cache) outside the timing
        self.dy = np.ones_like(y)
        self.model.backward(self.dy)

    def time_forward(self, cell, size):
        self.model(self.x)

    def time_train_step(self, cell, size):
        self.model(self.x)
        self.model.backward(self.dy)
