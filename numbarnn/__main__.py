"""Command line: ``python -m numbarnn <command>``.

Commands
--------
gradcheck
    Run a stacked bidirectional LSTM (or another cell) forward and backward and check every
    gradient against central differences in float64; then time a float32 forward and
    backward at a realistic size.
bench
    Time numbarnn against PyTorch (CPU; CUDA/cuDNN when a GPU is usable), interleaved in one
    process; print a table with GFLOP/s, the fraction of the measured GEMM rate and ratios;
    write JSON (``--json``) and a plot (``--plot``). See :mod:`numbarnn.bench`.
demo
    Train an LSTM forecaster on the yearly sunspot numbers shipped with numbarnn (or a CSV
    of your own) and compare its held-out error with the naive last-value forecast. See
    :mod:`numbarnn.demo`.
"""

import argparse
import sys
import time

import numpy as np

from . import GRU, LSTM, RNN
from .gradcheck import gradient_check

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def _gradcheck(args):
    layer = _CELLS[args.cell]
    rng = np.random.default_rng(args.seed)
    T, B, I, H, L = 4, 2, 3, 4, 2
    model = layer(I, H, num_layers=L, bidirectional=True, dtype=np.float64, seed=args.seed)
    print(f"{model!r}: T={T}, B={B}; central differences, float64")
    x = rng.standard_normal((T, B, I))
    state = rng.standard_normal((2 * L, B, H))
    state = (state, rng.standard_normal((2 * L, B, H))) if layer is LSTM else state
    errors = gradient_check(model, x, state, seed=args.seed)
    for name, err in errors.items():
        print(f"  d{name:<24s} relative error {err:.2e}")
    worst = max(errors.values())
    ok = worst < 1e-6
    print(f"largest relative error {worst:.2e}: {'OK' if ok else 'FAILED'} (threshold 1e-6)")

    T, B, I, H = args.timing_size
    model = layer(I, H, dtype=np.float32, seed=args.seed)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y, _ = model(x)  # the first call compiles (or loads the on-disk cache)
    dy = np.ones_like(y)
    model.backward(dy)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        y, _ = model(x)
        model.backward(dy)
        times.append(time.perf_counter() - start)
    print(
        f"{type(model).__name__}(I={I}, H={H}) float32 forward+backward, T={T}, B={B}: "
        f"median {1e3 * np.median(times):.2f} ms over {args.repeat} runs"
    )
    return 0 if ok else 1


def _bench(args):
    from . import bench

    try:
        return bench.run_command(args)
    except ValueError as exc:
        args.parser.error(str(exc))


def _demo(args):
    from . import demo

    try:
        return demo.run_command(args)
    except ValueError as exc:
        args.parser.error(str(exc))
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m numbarnn", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("gradcheck", help="check gradients and time forward+backward")
    check.add_argument("--cell", choices=sorted(_CELLS), default="lstm")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--repeat", type=int, default=5)
    check.add_argument(
        "--timing-size", type=int, nargs=4, default=(100, 32, 64, 128), metavar=("T", "B", "I", "H")
    )
    check.set_defaults(func=_gradcheck)

    from . import bench  # light: imports torch, numba, CuPy only when it runs

    bench_parser = commands.add_parser(
        "bench", help="time numbarnn against PyTorch (CPU, and CUDA when usable)",
        description=bench.__doc__.split("\n")[0],
    )
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(func=_bench, parser=bench_parser)

    from . import demo  # light: numpy only at import

    demo_parser = commands.add_parser(
        "demo", help="train an LSTM forecaster on the sunspot numbers, against a naive baseline",
        description=demo.__doc__.split("\n")[0],
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(func=_demo, parser=demo_parser)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
