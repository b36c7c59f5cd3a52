"""Training parity with PyTorch: the same model, weights and data give the same trajectory.

A stacked LSTM (2 layers) and a bidirectional GRU, each with a linear head on the last time
step, are trained with the MSE loss for 20 steps of SGD with momentum and 20 steps of Adam,
clipping the gradients' global norm before every step (see
``tests/golden/make_training_golden.py`` for the exact loop). Asserted, per run:

* every step's loss within ``RTOL`` (1e-4 in float32, 1e-9 in float64) relative to torch's,
  and so is every step's gradient norm (before clipping);
* every final parameter within ``RTOL`` relative to its largest magnitude:
  ``max|w - w_torch| / max|w_torch|``.

Golden runs (torch's trajectories stored under ``tests/golden/``) need no torch; live runs
(marker ``torch``) train torch and numbarnn side by side from another seed.

The linear head is written here in plain NumPy (``out = h_T @ W.T + b``) so that this test
depends only on the layers, the loss, the optimizers and the clipping.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import numbarnn
from numbarnn import optim
from numbarnn.losses import mse_loss

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location(
    "make_training_golden", GOLDEN_DIR / "make_training_golden.py"
)
mtg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mtg)  # numpy only at import; torch only inside its functions

RTOL = {"float32": 1e-4, "float64": 1e-9}
RUNS = [(c, o, d) for c in mtg.CELLS for o in mtg.OPTIMIZERS for d in mtg.DTYPES]


class LastStepHead:
    """A numbarnn recurrent layer and a linear head on its last time step, in plain NumPy.

    ``params``/``grads`` hold the layer's arrays under ``rnn.<name>`` and the head's under
    ``head.weight`` (O, D*H) and ``head.bias`` (O,): torch's names for a ``ModuleDict``
    with ``rnn`` and ``head``.
    """

    def __init__(self, rnn, output_size):
        features = rnn.hidden_size * rnn.num_directions
        self.rnn = rnn
        self.params = {f"rnn.{n}": p for n, p in rnn.params.items()}
        self.grads = {f"rnn.{n}": g for n, g in rnn.grads.items()}
        for name, shape in (("head.weight", (output_size, features)),
                            ("head.bias", (output_size,))):
            self.params[name] = np.zeros(shape, dtype=rnn.dtype)
            self.grads[name] = np.zeros(shape, dtype=rnn.dtype)

    def forward(self, x):
        """x (T, B, I) -> (B, O)."""
        y, _ = self.rnn(x)
        self._y_shape, self._last = y.shape, y[-1]
        return self._last @ self.params["head.weight"].T + self.params["head.bias"]

    def backward(self, dout):
        """dout (B, O): accumulate every parameter's gradient."""
        self.grads["head.weight"] += dout.T @ self._last
        self.grads["head.bias"] += dout.sum(axis=0)
        dy = np.zeros(self._y_shape, dtype=dout.dtype)
        dy[-1] = dout @ self.params["head.weight"]
        self.rnn.backward(dy)


def numbarnn_model(cell, dtype, weights):
    """The numbarnn model of ``cell`` with ``weights`` (torch's names) cast to ``dtype``."""
    name, kwargs = mtg.CELLS[cell]
    s = mtg.SIZES
    rnn = getattr(numbarnn, name)(s["input_size"], s["hidden_size"], dtype=np.dtype(dtype),
                                  **kwargs)
    model = LastStepHead(rnn, s["output_size"])
    assert sorted(model.params) == sorted(weights)
    for n, p in model.params.items():
        p[...] = weights[n]  # in place: the layer's kernels read these arrays
    return model


def numbarnn_train(cell, opt_name, dtype, weights, x, y, steps, max_norm):
    """The loop of ``make_training_golden.torch_train`` with numbarnn: same return value."""
    model = numbarnn_model(cell, dtype, weights)
    cls, kwargs = mtg.OPTIMIZERS[opt_name]
    opt = getattr(optim, cls)(model, **kwargs)
    x, y = x.astype(dtype), y.astype(dtype)
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss, dout = mse_loss(model.forward(x), y)
        model.backward(dout)
        norms.append(optim.clip_grad_norm(model, max_norm))
        opt.step()
        losses.append(loss)
    final = {n: p.copy() for n, p in model.params.items()}
    return {"losses": np.array(losses), "norms": np.array(norms), "final": final}


def parity_errors(run, ref):
    """Largest relative errors of losses, norms and final weights (each weight by its max|w|)."""

    def rel(a, b):
        return float(np.max(np.abs(np.asarray(a, np.float64) - b) / np.abs(b)))

    weights = max(
        float(np.max(np.abs(run["final"][n].astype(np.float64) - w)) / np.max(np.abs(w)))
        for n, w in ref["final"].items()
    )
    return {"loss": rel(run["losses"], ref["losses"]), "norm": rel(run["norms"], ref["norms"]),
            "weights": weights}


def assert_parity(run, ref, dtype):
    errors = parity_errors(run, ref)
    assert max(errors.values()) < RTOL[dtype], errors


# --------------------------------------------------------------------------- golden
@pytest.fixture(scope="module")
def golden():
    return mtg.load_golden()


@pytest.mark.parametrize("cell, opt_name, dtype", RUNS, ids=["-".join(r) for r in RUNS])
def test_golden_training_parity(golden, cell, opt_name, dtype):
    settings, data, runs = golden
    ref = runs[(cell, opt_name, dtype)]
    d = data[cell]
    run = numbarnn_train(cell, opt_name, dtype, d["init"], d["x"], d["y"],
                         settings["steps"], settings["max_norm"])
    assert len(run["losses"]) == len(ref["losses"]) == 20
    assert_parity(run, ref, dtype)


def test_golden_runs_are_not_trivial(golden):
    """Each stored run learns, and clips on some steps but not all (so clipping is tested)."""
    settings, _, runs = golden
    assert settings["steps"] == mtg.STEPS and settings["max_norm"] == mtg.MAX_NORM
    assert sorted(runs) == sorted(RUNS)
    for key, ref in runs.items():
        assert ref["losses"][-1] < 0.8 * ref["losses"][0], key
        clipped = ref["norms"] > settings["max_norm"]
        assert clipped.any() and not clipped.all(), key


# --------------------------------------------------------------------------- live
@pytest.mark.torch
@pytest.mark.parametrize("cell, opt_name, dtype", RUNS, ids=["-".join(r) for r in RUNS])
def test_live_training_parity(cell, opt_name, dtype):
    pytest.importorskip("torch")
    seed = mtg.SEED + 1  # other weights and data than the golden runs
    weights = mtg.torch_initial_weights(cell, seed=seed)
    x, y = mtg.draw_data(seed)
    ref = mtg.torch_train(cell, opt_name, dtype, weights, x, y)
    run = numbarnn_train(cell, opt_name, dtype, weights, x, y, mtg.STEPS, mtg.MAX_NORM)
    assert_parity(run, ref, dtype)
