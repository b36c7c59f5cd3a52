"""Where an LSTM forward's time goes: the CPU driver against its GEMMs alone.

    python scripts/profile_forward.py [--threads N] [T B I H]

Times ``numbarnn.kernels.cpu.lstm_forward`` (float32); the same GEMMs, done as the driver
does them, without the cell math (the input projection of all steps, then one recurrent
product per step); the input GEMM alone; and a 2048^3 sgemm for the machine's rate.
Prints the split and the GEMM floor (2*T*B*(I+H)*4H flops at that rate). Numba, NumPy's and SciPy's BLAS all get N threads.
"""

import argparse
import time

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401 -- loaded so that threadpoolctl can limit it
from numba import njit
from threadpoolctl import threadpool_limits

from numbarnn.kernels import cpu


@njit
def _gemms_only(x, w_ih, w_hh, gates):
    """The driver's GEMMs, done as the driver does them, without the cell math."""
    T, B, I = x.shape
    H = w_hh.shape[1]
    np.dot(x.reshape((T * B, I)), w_ih.T, gates.reshape((T * B, 4 * H)))
    w_panels = cpu._pack_recurrent(w_hh.T, B)
    h_proj = np.empty((B, 4 * H), x.dtype)
    h = np.zeros((B, H), x.dtype)
    for _ in range(T):
        cpu._matmul(h, w_hh.T, w_panels, h_proj)


@njit
def _input_gemm(x, w_ih, gates):
    T, B, I = x.shape
    np.dot(x.reshape((T * B, I)), w_ih.T, gates.reshape((T * B, gates.shape[2])))


def _median_ms(fn, repeat=7):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("size", type=int, nargs="*", default=[100, 64, 256, 256],
                        metavar="T B I H")
    args = parser.parse_args(argv)
    if len(args.size) != 4:
        parser.error(f"size: expected T B I H, got {args.size}")
    T, B, I, H = args.size
    f32 = np.float32
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(f32)
    w_ih = (0.05 * rng.standard_normal((4 * H, I))).astype(f32)
    w_hh = (0.05 * rng.standard_normal((4 * H, H))).astype(f32)
    b = np.zeros(4 * H, f32)
    h0 = np.zeros((B, H), f32)
    lengths = np.full(B, T, np.int64)
    y, c, gates = np.empty((T, B, H), f32), np.empty((T, B, H), f32), np.empty((T, B, 4 * H), f32)
    h_n, c_n = np.empty((B, H), f32), np.empty((B, H), f32)
    numba.set_num_threads(args.threads)
    with threadpool_limits(args.threads, user_api="blas"):
        full = _median_ms(lambda: cpu.lstm_forward(
            x, w_ih, w_hh, b, b, h0, h0, False, lengths, y, c, gates, h_n, c_n))
        gemms = _median_ms(lambda: _gemms_only(x, w_ih, w_hh, gates))
        first = _median_ms(lambda: _input_gemm(x, w_ih, gates))
        a = rng.standard_normal((2048, 2048)).astype(f32)
        rate = 2 * 2048**3 / (_median_ms(lambda: a @ a, 3) * 1e6)  # GFLOP/s
    floor = 2 * T * B * (I + H) * 4 * H / (rate * 1e6)
    print(f"LSTM forward, float32, T,B,I,H = {T},{B},{I},{H}, {args.threads} thread(s):")
    print(f"  driver {full:.2f} ms = GEMMs {gemms:.2f} (input {first:.2f}, recurrent "
          f"{gemms - first:.2f}) + cell math and the rest {full - gemms:.2f}")
    print(f"  GEMM floor at the measured sgemm rate ({rate:.0f} GFLOP/s): {floor:.2f} ms")


if __name__ == "__main__":
    main()
