"""Forward, train step and streaming step of numbarnn's layers (float32).

Sizes are the issue's configurations; ``backend`` 'cuda' is skipped (NotImplementedError in
``setup``) unless a real GPU is usable. Thread counts are the library's defaults: the
``python -m numbarnn bench`` command compares thread counts and PyTorch; these benchmarks
track numbarnn over its history.
"""

import numpy as np

from .common import (
    BACKENDS, CELLS, SIZES, STREAM_SIZE, layer_case, memoised, require_backend, sync_function,
)


class Forward:
    """One forward pass over a whole sequence, in ``eval()`` mode (nothing kept for backward)."""

    params = (list(CELLS), list(SIZES), list(BACKENDS))
    param_names = ("cell", "size", "backend")
    timeout = 300

    def setup(self, cell, size, backend):
        self.model, self.x, _, self.sync = layer_case(cell, size, backend)
        self.model.eval()

    def time_forward(self, cell, size, backend):
        self.model(self.x)
        self.sync()


class TrainStep:
    """Forward in training mode, then backward with ``dy = ones`` (input and all parameter
    gradients)."""

    params = (list(CELLS), list(SIZES), list(BACKENDS))
    param_names = ("cell", "size", "backend")
    timeout = 300

    def setup(self, cell, size, backend):
        self.model, self.x, self.dy, self.sync = layer_case(cell, size, backend)
        self.model.train()

    def time_train_step(self, cell, size, backend):
        self.model(self.x)
        self.model.backward(self.dy)
        self.sync()


class StreamingStep:
    """One time step, batch 1, H = 128, called from Python, feeding the state back in.

    Uses the layer's ``step`` method when it has one, else ``forward`` on a (1, 1, I) input.
    """

    params = (list(CELLS), list(BACKENDS))
    param_names = ("cell", "backend")

    def setup(self, cell, backend):
        b = require_backend(backend)

        def build():
            I, H = STREAM_SIZE
            model = CELLS[cell](I, H, dtype=np.float32, backend=backend, seed=0).eval()
            x = b.asarray(np.random.default_rng(0).standard_normal((1, 1, I)).astype(np.float32))
            zeros = b.xp.zeros((1, 1, H), dtype=np.float32)
            state = (zeros, zeros.copy()) if cell == "lstm" else zeros
            _, state = model(x, state)
            return model, x, state, sync_function(b)

        self.model, self.x, self.state, self.sync = memoised(("stream", cell, backend), build)

    def time_step(self, cell, backend):
        _, self.state = self.model(self.x, self.state)
        self.sync()
