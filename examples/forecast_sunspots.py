"""Forecast next year's sunspot number from the previous 20 years with an LSTM.

The library API end to end: data windows, a Sequential model, fit with validation and
early stopping, predict, and a comparison with the naive forecast "next year = this year".
(`python -m numbarnn demo` does the same with more options.)

    python examples/forecast_sunspots.py [--hidden 64] [--epochs 150] [--window 20]
"""

import argparse

import numpy as np

from numbarnn import LSTM, LastStep, Linear, Sequential
from numbarnn.demo import load_sunspots, make_windows
from numbarnn.optim import Adam
from numbarnn.training import fit, predict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    years, values = load_sunspots()  # 1700-2008
    n_test, n_val = 40, 31  # hold out 1969-2008; validate on the 31 years before
    train_end = len(values) - n_test - n_val
    mean, std = values[:train_end].mean(), values[:train_end].std()
    x, y = make_windows((values - mean) / std, args.window)  # x (window, N, 1), y (N, 1)
    target_year = years[args.window:]
    train = target_year < years[train_end]
    test = target_year >= years[-n_test]
    val = ~train & ~test

    model = Sequential(LSTM(1, args.hidden, seed=args.seed), LastStep(),
                       Linear(args.hidden, 1, seed=args.seed + 1))
    history = fit(model, Adam(model, lr=5e-3), x[:, train], y[train], epochs=args.epochs,
                  batch_size=16, seed=args.seed, validation_data=(x[:, val], y[val]),
                  clip_norm=1.0, early_stopping=40, restore_best=True)

    forecast = predict(model, x[:, test])[:, 0] * std + mean
    truth = values[-n_test:]
    naive = values[-n_test - 1 : -1]
    rmse = float(np.sqrt(np.mean((forecast - truth) ** 2)))
    naive_rmse = float(np.sqrt(np.mean((naive - truth) ** 2)))
    print(f"test {years[-n_test]}-{years[-1]}: LSTM RMSE {rmse:.2f}, naive RMSE {naive_rmse:.2f} "
          f"({100 * (1 - rmse / naive_rmse):.0f}% better)")
    for year, t, f in list(zip(years[-n_test:], truth, forecast))[-5:]:
        print(f"  {year}: observed {t:6.1f}  forecast {f:6.1f}")
    return {"history": history, "rmse": rmse, "naive_rmse": naive_rmse, "forecast": forecast}


if __name__ == "__main__":
    main()
