"""Latency of one LSTM time step at batch 1: numbarnn from Python and from @njit, and torch.

Times, interleaved in one run (median over repeats, microseconds per step):

* ``layer.step(x_t, state)``: the state passed in and out;
* ``layer.step(x_t)`` in stateful mode: the state kept inside the layer;
* ``lstm_step_vector`` called from Python (the kernel alone, no checks);
* ``lstm_step_vector`` called from a user's ``@njit`` loop (per step of the loop);
* ``torch.nn.LSTMCell`` (when torch is installed), the same weights, no autograd.

    python examples/step_latency.py [--input 128] [--hidden 128] [--dtype float32]
"""

import argparse
import time

import numpy as np
from numba import njit

import numbarnn
from numbarnn.kernels import step

STEPS_PER_LOOP = 200  # steps of the @njit loop per timed call


@njit
def njit_loop(xs, w_ih, w_hh, b_ih, b_hh, h, c):
    """A user's loop: one LSTM step per row of ``xs``, the state updated in place."""
    for t in range(xs.shape[0]):
        step.lstm_step_vector(xs[t], w_ih, w_hh, b_ih, b_hh, h, c, h, c)


def candidates(I, H, dtype, seed):
    """name -> (function running ``steps`` steps, steps)."""
    rng = np.random.default_rng(seed)
    layer = numbarnn.LSTM(I, H, dtype=dtype, seed=seed).eval()
    x = rng.standard_normal((1, I)).astype(dtype)
    out = {}
    state = [layer.step(x)[1]]

    def step_with_state():
        _, state[0] = layer.step(x, state[0])

    out["layer.step(x_t, state)"] = (step_with_state, 1)
    stateful = numbarnn.LSTM(I, H, dtype=dtype, seed=seed).eval()
    stateful.stateful = True
    out["layer.step(x_t), stateful"] = (lambda: stateful.step(x), 1)

    p = layer.params
    weights = (p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"])
    h, c = np.zeros(H, dtype), np.zeros(H, dtype)
    x1 = x[0]
    out["lstm_step_vector from Python"] = (
        lambda: step.lstm_step_vector(x1, *weights, h, c, h, c), 1
    )
    xs = np.ascontiguousarray(np.broadcast_to(x1, (STEPS_PER_LOOP, I)))
    out["lstm_step_vector in @njit loop"] = (
        lambda: njit_loop(xs, *weights, h, c), STEPS_PER_LOOP
    )
    try:
        import torch
    except ImportError:
        return out
    cell = torch.nn.LSTMCell(I, H, dtype=getattr(torch, np.dtype(dtype).name))
    cell.requires_grad_(False)
    with torch.no_grad():
        for name, w in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), weights):
            getattr(cell, name).copy_(torch.from_numpy(w))
    xt = torch.from_numpy(x)
    hc = [(torch.zeros(1, H, dtype=xt.dtype), torch.zeros(1, H, dtype=xt.dtype))]

    def torch_step():
        hc[0] = cell(xt, hc[0])

    out[f"torch.nn.LSTMCell ({torch.get_num_threads()} threads)"] = (torch_step, 1)
    return out


def measure(impls, repeat, calls):
    """Median and minimum microseconds per step of each candidate, interleaved."""
    for fn, _ in impls.values():  # compile, warm caches
        fn()
    samples = {name: [] for name in impls}
    for _ in range(repeat):
        for name, (fn, steps) in impls.items():
            n = max(1, calls // steps)
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / (n * steps) * 1e6)
    return {name: (float(np.median(s)), float(np.min(s))) for name, s in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--calls", type=int, default=2000, help="steps per timed sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    impls = candidates(args.input, args.hidden, np.dtype(args.dtype), args.seed)
    times = measure(impls, args.repeat, args.calls)
    print(f"one LSTM step, batch 1, I={args.input}, H={args.hidden}, {args.dtype} "
          f"(median and min of {args.repeat} samples, us per step)")
    for name, (median, low) in times.items():
        print(f"  {name:40s} {median:8.2f} {low:8.2f}")
    return times


if __name__ == "__main__":
    main()
