"""A @cuda.jit kernel of your own that calls numbarnn's cell math as a device function.

Zoneout (Krueger et al., 2017) regularises an LSTM by letting each unit keep its previous
hidden and cell state, at random, instead of updating them. No library layer offers it,
but it is a few lines of CUDA around the LSTM element that numbarnn already has:
``numbarnn.kernels.cells.lstm_cell_forward`` (the function every numbarnn kernel compiles,
CPU and GPU), called from the kernel below. Only the zoneout itself is new code.

The script runs the kernel over a short sequence twice: without zoneout it must give what
``numbarnn.LSTM`` gives, and with zoneout what the LSTM's step gives, mixed with the
previous state by the same masks. It runs on an NVIDIA GPU (CuPy arrays), or on any
machine in Numba's CUDA simulator::

    NUMBA_ENABLE_CUDASIM=1 python examples/cuda_device_function.py [--hidden 8] [--steps 5]
"""

import argparse

import numpy as np
from numba import cuda

import numbarnn
from numbarnn.kernels import cells
from numbarnn.kernels.cuda import array_module

THREADS_PER_BLOCK = 64


@cuda.jit
def lstm_zoneout_step(pre, h_prev, c_prev, keep_h, keep_c, h_out, c_out):
    """One LSTM step with zoneout, one thread per (batch, unit) element.

    ``pre`` (B, 4H) holds the summed pre-activations ``x W_ih^T + b_ih + h W_hh^T + b_hh``
    (gate order i, f, g, o); ``keep_h``, ``keep_c`` (B, H) are 1 where a unit keeps its
    previous state and 0 where it updates; writes ``h_out``, ``c_out`` (B, H).
    """
    idx = cuda.grid(1)
    B, H = h_out.shape
    if idx < B * H:
        b = idx // H
        j = idx - b * H
        _, _, _, _, c, h = cells.lstm_cell_forward(
            pre[b, j], pre[b, H + j], pre[b, 2 * H + j], pre[b, 3 * H + j], c_prev[b, j]
        )
        c_out[b, j] = c + keep_c[b, j] * (c_prev[b, j] - c)
        h_out[b, j] = h + keep_h[b, j] * (h_prev[b, j] - h)


def run(layer, x, keep_h, keep_c):
    """The zoneout LSTM over ``x`` (T, B, I) from zero states; returns the hidden states."""
    xp = layer.backend.xp
    p = layer.params
    T, B, _ = x.shape
    H = layer.hidden_size
    h = xp.zeros((B, H), layer.dtype)
    c = xp.zeros((B, H), layer.dtype)
    blocks = -(-B * H // THREADS_PER_BLOCK)
    ys = []
    for t in range(T):
        # PyTorch's summation order, as numbarnn's own drivers use it
        pre = (x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"]) + (
            h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
        )
        h_new, c_new = xp.empty_like(h), xp.empty_like(c)
        lstm_zoneout_step[blocks, THREADS_PER_BLOCK](pre, h, c, keep_h[t], keep_c[t], h_new, c_new)
        h, c = h_new, c_new
        ys.append(h)
    return xp.stack(ys)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--input", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--zoneout", type=float, default=0.3, help="probability to keep a unit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    usable, reason = numbarnn.cuda_status()
    if not usable:
        raise SystemExit(f"no CUDA here ({reason}); run with NUMBA_ENABLE_CUDASIM=1")

    layer = numbarnn.LSTM(args.input, args.hidden, dtype=np.float64, backend="cuda",
                          seed=args.seed).eval()
    xp = array_module()
    rng = np.random.default_rng(args.seed)
    T, B, H = args.steps, args.batch, args.hidden
    x = xp.asarray(rng.standard_normal((T, B, args.input)))

    # Without zoneout the kernel is the LSTM itself.
    never = xp.zeros((T, B, H))
    y_plain = run(layer, x, never, never)
    y_layer, _ = layer(x)
    plain_error = float(xp.max(xp.abs(y_plain - y_layer)))

    # With zoneout: each step is the LSTM's step, mixed with the previous state by the masks.
    keep_h = xp.asarray((rng.random((T, B, H)) < args.zoneout).astype(np.float64))
    keep_c = xp.asarray((rng.random((T, B, H)) < args.zoneout).astype(np.float64))
    y_zoneout = run(layer, x, keep_h, keep_c)
    h = c = xp.zeros((1, B, H))
    zoneout_error = 0.0
    for t in range(T):
        _, (h_step, c_step) = layer.step(x[t], (h, c))
        h = h_step + keep_h[t] * (h - h_step)
        c = c_step + keep_c[t] * (c - c_step)
        zoneout_error = max(zoneout_error, float(xp.max(xp.abs(y_zoneout[t] - h[0]))))
    kept = float(keep_h.mean())

    where = "the CUDA simulator" if reason == "simulator" else "the GPU"
    print(f"zoneout LSTM kernel on {where}: B={B}, H={H}, {T} steps")
    print(f"  without zoneout vs numbarnn.LSTM: max difference {plain_error:.2g}")
    print(f"  with zoneout (kept {100 * kept:.0f}% of hidden units per step) vs LSTM.step + "
          f"masks: max difference {zoneout_error:.2g}")
    return {"plain_error": plain_error, "zoneout_error": zoneout_error, "kept": kept,
            "y_zoneout": layer.backend.to_numpy(y_zoneout)}


if __name__ == "__main__":
    main()
