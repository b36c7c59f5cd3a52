"""The same layer-level test body on every backend: 'cuda' runs in the CUDA simulator."""

import numpy as np
import pytest

import numbarnn
from numbarnn.kernels import cuda as cuda_kernels

CELLS = [
    (numbarnn.RNN, {"nonlinearity": "tanh"}),
    (numbarnn.RNN, {"nonlinearity": "relu"}),
    (numbarnn.LSTM, {}),
    (numbarnn.GRU, {}),
]


def run_layer(backend, cls, kwargs, dtype):
    """Forward and backward of a 2-layer bidirectional batch-first layer; NumPy results."""
    rng = np.random.default_rng(0)
    m = cls(3, 4, num_layers=2, batch_first=True, bidirectional=True,
            dtype=dtype, backend=backend, seed=3, **kwargs)
    xp = m.backend.xp
    x = xp.asarray(rng.standard_normal((2, 3, 3)).astype(dtype))  # (B, T, I)
    states = tuple(xp.asarray(rng.standard_normal((4, 2, 4)).astype(dtype))
                   for _ in range(2 if cls is numbarnn.LSTM else 1))
    hx = states if cls is numbarnn.LSTM else states[0]
    y, final = m(x, hx)
    dy = xp.asarray(rng.standard_normal(y.shape).astype(dtype))
    dfinal = tuple(xp.asarray(rng.standard_normal(s.shape).astype(dtype))
                   for s in (final if isinstance(final, tuple) else (final,)))
    dx, dstate0 = m.backward(dy, dfinal if cls is numbarnn.LSTM else dfinal[0])
    out = {"y": y, "dx": dx}
    for name, value in (("final", final), ("dstate0", dstate0)):
        for k, v in enumerate(value if isinstance(value, tuple) else (value,)):
            out[f"{name}{k}"] = v
    out.update({f"grad.{k}": v for k, v in m.grads.items()})
    return {k: m.backend.to_numpy(v) for k, v in out.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kwargs", CELLS)
def test_cuda_backend_layer_matches_cpu(monkeypatch, cls, kwargs, dtype):
    backend = numbarnn.get_backend("cuda")
    if not backend.simulated:
        pytest.skip("real GPU: covered by the realgpu tests")
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 3)  # several blocks, ragged tail
    expected = run_layer("cpu", cls, kwargs, dtype)
    got = run_layer("cuda", cls, kwargs, dtype)
    assert got.keys() == expected.keys()
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=rtol, atol=rtol, err_msg=name)
