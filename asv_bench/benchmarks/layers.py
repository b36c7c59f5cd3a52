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
    """One time step, batch 1, H = 128, called from Python with the layer's ``step``, feeding
    the state back in."""

    params = (list(CELLS), list(BACKENDS))
    param_names = ("cell", "backend")

    def setup(self, cell, backend):
        b = require_backend(backend)

        def build():
            I, H = STREAM_SIZE
            model = CELLS[cell](I, H, dtype=np.float32, backend=backend, seed=0).eval()
            x_t = b.asarray(np.random.default_rng(0).standard_normal((1, I)).astype(np.float32))
            _, state = model.step(x_t)  # compiles (or loads the cache) outside the timing
            return model, x_t, state, sync_function(b)

        self.model, self.x_t, self.state, self.sync = memoised(("stream", cell, backend), build)

    def time_step(self, cell, backend):
        _, self.state = self.model.step(self.x_t, self.state)
        self.sync()
