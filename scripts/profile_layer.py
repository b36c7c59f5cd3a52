"""Where a layer's time goes: the CPU drivers against their GEMMs alone, next to the floor.

    python scripts/profile_layer.py [--cell lstm|gru|rnn] [--threads N] [--repeat R] [T B I H]

Times ``numbarnn.kernels.cpu.<cell>_forward`` and ``<cell>_backward`` (float32, one layer, one
direction) and, with the drivers' own helpers, their GEMMs alone:

* forward: the input projection of all steps (one GEMM) and the recurrent product of every
  step (``_pack_weights`` + ``_matmul``); the rest is the cell math and bookkeeping;
* backward: the recurrent product of every step (``dh = da @ W_hh``) and the GEMMs of the
  chunks (input and weight gradients, ``_chunk_grads``); the rest is the cell math.

Then the machine's GEMM rate, the faster of NumPy's BLAS and numbarnn's packed kernels on a
2048^3 sgemm (packing excluded), and the floor: the flops (forward ``2*T*B*(I+H)*G*H``,
backward twice that) at that rate. Each figure is the fastest of
``--repeat`` runs (the machine's noise only ever adds time). Numba, NumPy's and SciPy's BLAS
all get N threads.
"""

import argparse
import time

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401 -- loaded so that threadpoolctl can limit it
from numba import njit
from threadpoolctl import threadpool_limits

from numbarnn.kernels import cpu, gemm

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


@njit
def _recurrent_products(a, w, out, steps):
    """``steps`` products ``out = a @ w`` as a driver does them."""
    panels = cpu._pack_weights(w, a.shape[0], steps)
    for _ in range(steps):
        cpu._matmul(a, w, panels, out)


@njit
def _chunk_gemms(da, x, y, w_ih, dx, dw_ih, dw_hh, db_ih, db_hh, h0):
    """The backward's GEMMs over chunks of steps, as ``<cell>_backward`` does them."""
    T, B, _ = x.shape
    steps = cpu._chunk_steps(T, B)
    w_ih_panels = cpu._pack_weights(w_ih, steps * B, np.intp(0))
    for end in range(T, 0, -steps):
        start = max(0, end - steps)
        cpu._chunk_grads(da[start:end], da[start:end], x, y, h0, start, False, w_ih, w_ih_panels,
                         dx, dw_ih, dw_hh, db_ih, db_hh)


def _fastest_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def _drivers(cell, x, w_ih, w_hh, b, h0, lengths, dy):
    """(forward, backward) callables of the CPU drivers of ``cell``."""
    T, B, _ = x.shape
    H = h0.shape[1]
    f32 = np.float32
    y, h_n = np.empty((T, B, H), f32), np.empty((B, H), f32)
    dx, dh0, dc0 = np.empty_like(x), np.empty((B, H), f32), np.empty((B, H), f32)
    grads = [np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b), np.zeros_like(b)]
    if cell == "lstm":
        c, gates, c_n = np.empty((T, B, H), f32), np.empty((T, B, 4 * H), f32), np.empty((B, H), f32)
        return (
            lambda: cpu.lstm_forward(x, w_ih, w_hh, b, b, h0, h0, False, lengths, y, c, gates,
                                     h_n, c_n),
            lambda: cpu.lstm_backward(x, w_ih, w_hh, h0, h0, False, lengths, y, c, gates, dy,
                                      h0, h0, dx, dh0, dc0, *grads),
        )
    if cell == "gru":
        gates, h_n_proj = np.empty((T, B, 3 * H), f32), np.empty((T, B, H), f32)
        return (
            lambda: cpu.gru_forward(x, w_ih, w_hh, b, b, h0, False, lengths, y, gates, h_n_proj,
                                    h_n),
            lambda: cpu.gru_backward(x, w_ih, w_hh, h0, False, lengths, y, gates, h_n_proj, dy,
                                     h0, dx, dh0, *grads),
        )
    return (
        lambda: cpu.rnn_forward(x, w_ih, w_hh, b, b, h0, False, lengths, False, y, h_n),
        lambda: cpu.rnn_backward(x, w_ih, w_hh, h0, False, lengths, False, y, dy, h0, dx, dh0,
                                 *grads),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", choices=sorted(GATES), default="lstm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("size", type=int, nargs="*", default=[100, 64, 256, 256],
                        metavar="T B I H")
    args = parser.parse_args(argv)
    if len(args.size) != 4:
        parser.error(f"size: expected T B I H, got {args.size}")
    T, B, I, H = args.size
    G = GATES[args.cell]
    f32 = np.float32
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(f32)
    w_ih = (rng.uniform(-1, 1, (G * H, I)) / np.sqrt(H)).astype(f32)
    w_hh = (rng.uniform(-1, 1, (G * H, H)) / np.sqrt(H)).astype(f32)
    b = np.zeros(G * H, f32)
    h0 = np.zeros((B, H), f32)
    lengths = np.full(B, T, np.int64)
    dy = np.ones((T, B, H), f32)
    forward, backward = _drivers(args.cell, x, w_ih, w_hh, b, h0, lengths, dy)
    proj = np.empty((T, B, G * H), f32)
    h = rng.standard_normal((B, H)).astype(f32)
    da = rng.standard_normal((T, B, G * H)).astype(f32)
    y = rng.standard_normal((T, B, H)).astype(f32)
    scratch = (np.empty_like(x), np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b),
               np.zeros_like(b))
    numba.set_num_threads(args.threads)
    with threadpool_limits(args.threads, user_api="blas"):
        ms = {
            "forward": _fastest_ms(forward, args.repeat),
            "input GEMM": _fastest_ms(
                lambda: cpu._project_input(x, w_ih, proj.reshape((T * B, G * H))), args.repeat),
            "recurrent products": _fastest_ms(
                lambda: _recurrent_products(h, w_hh.T, proj[0], T), args.repeat),
        }
        forward()  # backward reads what this forward saved
        ms["backward"] = _fastest_ms(backward, args.repeat)
        ms["backward recurrent products"] = _fastest_ms(
            lambda: _recurrent_products(da[0], w_hh, h0.copy(), T), args.repeat)
        ms["chunk GEMMs"] = _fastest_ms(
            lambda: _chunk_gemms(da, x, y, w_ih, *scratch, h0), args.repeat)
        a = rng.standard_normal((2048, 2048)).astype(f32)
        out, panels = np.empty_like(a), gemm.pack(a, 2048)
        rate = 2 * 2048**3 / (min(  # GFLOP/s
            _fastest_ms(lambda: np.matmul(a, a, out=out), 3),
            _fastest_ms(lambda: gemm.matmul_parallel(a, panels, out, False), 3)) * 1e6)
    flops = 2 * T * B * (I + H) * G * H
    fwd_gemms = ms["input GEMM"] + ms["recurrent products"]
    bwd_gemms = ms["backward recurrent products"] + ms["chunk GEMMs"]
    print(f"{args.cell.upper()}, float32, T,B,I,H = {T},{B},{I},{H}, {args.threads} thread(s), "
          f"GEMM rate {rate:.0f} GFLOP/s; fastest of {args.repeat} runs:")
    print(f"  forward  {ms['forward']:8.2f} ms = GEMMs {fwd_gemms:.2f} (input "
          f"{ms['input GEMM']:.2f}, recurrent {ms['recurrent products']:.2f}) + cell math and "
          f"the rest {ms['forward'] - fwd_gemms:.2f};  floor {flops / (rate * 1e6):.2f} ms")
    print(f"  backward {ms['backward']:8.2f} ms = GEMMs {bwd_gemms:.2f} (recurrent "
          f"{ms['backward recurrent products']:.2f}, chunks {ms['chunk GEMMs']:.2f}) + cell math "
          f"and the rest {ms['backward'] - bwd_gemms:.2f};  floor {2 * flops / (rate * 1e6):.2f} ms")


if __name__ == "__main__":
    main()
