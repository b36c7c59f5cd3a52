"""Online forecasting: one observation in, one forecast out, with a stateful model.

A sensor signal with a daily cycle whose amplitude drifts arrives one reading at a time.
An LSTM trained offline on the first part of the series to predict the next reading
(``training.fit``) is switched to stateful mode, warm-started with the state it reaches
over the history (``training.stateful_forward`` then ``reset_state``), and then fed each new
reading with ``model.step``: the state stays inside the model between calls, so every
reading costs one step, not a pass over the whole history.

The script checks that the online forecasts equal a ``forward`` over the full series, and
compares them with two naive forecasts (the last reading; the reading one cycle ago).

    python examples/online_forecast.py [--hidden 32] [--epochs 30]
"""

import argparse
import time

import numpy as np

from numbarnn import LSTM, Linear, Sequential
from numbarnn.optim import Adam
from numbarnn.training import fit, stateful_forward

PERIOD = 24  # readings per cycle


def make_series(n, seed):
    """A daily cycle with a slowly drifting amplitude, plus noise (float32, length n)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    amplitude = 1.0 + 0.4 * np.sin(2 * np.pi * t / (9.3 * PERIOD))
    signal = amplitude * np.sin(2 * np.pi * t / PERIOD) + 0.3 * np.sin(4 * np.pi * t / PERIOD)
    return (signal + 0.05 * rng.standard_normal(n)).astype(np.float32)


def rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--history", type=int, default=1200, help="readings seen in training")
    parser.add_argument("--online", type=int, default=300, help="readings that arrive online")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    series = make_series(args.history + args.online + 1, args.seed)
    history = series[: args.history]

    # Offline: every step of a window predicts the next reading.
    window = 2 * PERIOD
    starts = np.arange(0, args.history - window - 1, PERIOD // 4)
    x = np.stack([history[s : s + window] for s in starts], axis=1)[:, :, None]  # (W, N, 1)
    y = np.stack([history[s + 1 : s + window + 1] for s in starts], axis=1)[:, :, None]
    model = Sequential(LSTM(1, args.hidden, seed=args.seed),
                       Linear(args.hidden, 1, seed=args.seed + 1))
    fit(model, Adam(model, lr=5e-3), x, y, epochs=args.epochs, batch_size=32, seed=args.seed,
        progress=False)
    model.eval()

    # Online: warm start on the history, then one step per arriving reading.
    _, state = stateful_forward(model, history[:, None])  # unbatched (T, 1)
    model.stateful = True
    model.reset_state(state)
    arriving = series[args.history : args.history + args.online]
    forecasts = np.empty(args.online, np.float32)
    times = np.empty(args.online)
    for t, reading in enumerate(arriving):
        start = time.perf_counter()
        y_t, _ = model.step(reading[None])  # (1,) in, (1,) out: the forecast of the next one
        times[t] = time.perf_counter() - start
        forecasts[t] = y_t[0]

    truth = series[args.history + 1 : args.history + args.online + 1]
    full, _ = stateful_forward(model, series[: args.history + args.online, None])
    mismatch = float(np.max(np.abs(forecasts - full[args.history :, 0])))
    scores = {
        "lstm": rmse(forecasts, truth),
        "last reading": rmse(arriving, truth),
        "one cycle ago": rmse(series[args.history + 1 - PERIOD : args.history + args.online + 1
                                     - PERIOD], truth),
    }
    step_us = float(np.median(times) * 1e6)
    print(f"{args.online} readings forecast online, one step each "
          f"(median {step_us:.1f} us per step from Python)")
    print("  RMSE: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print(f"  max difference from a forward over the whole series: {mismatch:.2g}")
    return {"forecasts": forecasts, "truth": truth, "scores": scores, "mismatch": mismatch,
            "step_us": step_us}


if __name__ == "__main__":
    main()
