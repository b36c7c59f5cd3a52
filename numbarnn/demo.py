"""``python -m numbarnn demo``: an LSTM forecasts yearly sunspot numbers, against a naive baseline.

The series (yearly mean sunspot numbers 1700-2008, shipped as ``numbarnn/data/sunspots.csv``,
or a CSV of your own with ``--csv``) is normalised with the mean and standard deviation of
its training part, cut into windows of ``--window`` past values -> the next value, and split
in time order: training, then validation (early stopping, best weights kept), then the last
values held out as the test set. The model is ``Sequential(<cell>, LastStep(), Linear)``
trained with Adam, a cosine learning-rate schedule and gradient clipping
(:func:`numbarnn.training.fit`). On the test set it reports RMSE and MAE next to the naive
forecast "next value = last value", and the relative improvement; with matplotlib installed
it plots forecast against truth.

Everything is seeded: the same command gives the same numbers.
"""

import argparse
import csv
import importlib.resources
import math
import os
import sys
import time

import numpy as np

SUNSPOTS = "sunspots.csv"
_DEFAULTS = dict(
    cell="lstm", hidden=64, layers=1, epochs=150, lr=0.005, backend="cpu", seed=0, window=20,
    batch_size=16, patience=40, clip_norm=1.0,
)


# --------------------------------------------------------------------------- data
def _read_csv(lines, source):
    """(header or None, rows of strings) of a CSV; lines starting with '#' are comments."""
    rows = [row for row in csv.reader(line for line in lines if not line.lstrip().startswith("#"))]
    rows = [[cell.strip() for cell in row] for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{source}: no data rows")

    def numeric(cell):
        try:
            float(cell)
        except ValueError:
            return False
        return True

    header = None
    if not all(numeric(cell) for cell in rows[0]):
        header, rows = rows[0], rows[1:]
    if not rows:
        raise ValueError(f"{source}: a header but no data rows")
    return header, rows


def read_series(path, column=None):
    """One numeric column of a CSV file.

    Parameters
    ----------
    path : str or os.PathLike
        A CSV file: an optional header line, one value per row (or several columns, one of
        them chosen by ``column``). Lines starting with ``#`` are comments.
    column : str or int, optional
        The column's name in the header (or its 0-based index). Needed when there is more
        than one column.

    Returns
    -------
    labels : list of str
        One label per row: the first column when the file has another column than the one
        read (e.g. the year), else the row number counted from 1.
    values : numpy.ndarray
        float64 values.
    name : str
        The column's name (its header, or ``'value'``).

    Raises
    ------
    ValueError
        For a missing file, an unknown column, several columns and no ``column``, ragged
        rows or values that are not finite numbers (the message names the file and row).
    """
    source = os.fspath(path)
    try:
        with open(source, newline="", encoding="utf-8") as f:
            header, rows = _read_csv(f, source)
    except OSError as exc:
        raise ValueError(f"csv: cannot read {source!r}: {exc.strerror or exc}") from None
    return _select(header, rows, column, source)


def _select(header, rows, column, source):
    width = len(header) if header is not None else len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"{source}: row {i + 1} has {len(row)} columns, expected {width}")
    if column is None:
        if width != 1:
            names = header if header is not None else [str(i) for i in range(width)]
            raise ValueError(
                f"{source}: {width} columns {names}; choose one with --column (name or index)"
            )
        index = 0
    elif header is not None and str(column) in header:
        index = header.index(str(column))
    else:
        try:
            index = int(column)
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < width:
            names = header if header is not None else list(range(width))
            raise ValueError(f"column: {column!r} is not a column of {source} (columns: {names})")
    values = np.empty(len(rows))
    for i, row in enumerate(rows):
        try:
            values[i] = float(row[index])
        except ValueError:
            raise ValueError(
                f"{source}: row {i + 1}, column {index}: {row[index]!r} is not a number"
            ) from None
        if not math.isfinite(values[i]):
            raise ValueError(f"{source}: row {i + 1}, column {index}: {row[index]!r} is not finite")
    if width > 1 and index != 0:
        labels = [row[0] for row in rows]
    else:
        labels = [str(i + 1) for i in range(len(rows))]
    name = header[index] if header is not None else "value"
    return labels, values, name


def load_sunspots():
    """The yearly mean sunspot numbers 1700-2008 shipped with numbarnn.

    Source: WDC-SILSO, Royal Observatory of Belgium, Brussels (the original version-1
    series, via NOAA NGDC), as distributed with statsmodels (``statsmodels.datasets.sunspots``);
    public domain.

    Returns
    -------
    years : numpy.ndarray
        (309,) int64, 1700 ... 2008.
    values : numpy.ndarray
        (309,) float64 sunspot numbers.
    """
    text = importlib.resources.files("numbarnn").joinpath("data", SUNSPOTS).read_text("utf-8")
    header, rows = _read_csv(text.splitlines(), f"numbarnn/data/{SUNSPOTS}")
    labels, values, _ = _select(header, rows, "sunspots", f"numbarnn/data/{SUNSPOTS}")
    return np.array([int(y) for y in labels], dtype=np.int64), values


def make_windows(values, window, dtype=np.float32):
    """Sliding windows of ``window`` values and the value that follows each.

    Parameters
    ----------
    values : (n,) array
    window : int

    Returns
    -------
    x : (window, n - window, 1) array
        Time-major inputs (what a recurrent layer takes): ``x[:, j, 0] = values[j:j+window]``.
    y : (n - window, 1) array
        ``y[j, 0] = values[j + window]``.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if not 1 <= window < n:
        raise ValueError(f"window: expected 1 <= window < {n} (the series length), got {window}")
    idx = np.arange(window)[:, None] + np.arange(n - window)[None, :]
    return values[idx][:, :, None].astype(dtype), values[window:, None].astype(dtype)


def split_sizes(n, window=None, test_size=None, val_size=None):
    """(window, val_size, test_size) for a series of ``n`` values, defaults filled in.

    The test set is the last ~13 % of the values (40 of the 309 sunspot years), the
    validation set the ~10 % before it; the window defaults to 20 values (fewer for short
    series).
    """
    test_size = max(1, round(0.13 * n)) if test_size is None else test_size
    val_size = max(1, round(0.10 * n)) if val_size is None else val_size
    train = n - test_size - val_size
    if window is None:
        window = max(1, min(_DEFAULTS["window"], train // 4))
    for value, name in ((window, "window"), (test_size, "test_size"), (val_size, "val_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if train - window < 2:
        raise ValueError(
            f"csv: a series of {n} values is too short for a window of {window}, "
            f"{val_size} validation and {test_size} test values (needs at least "
            f"{window + val_size + test_size + 2})"
        )
    return window, val_size, test_size


# --------------------------------------------------------------------------- the demo
def run_demo(
    *, cell="lstm", hidden=64, layers=1, epochs=150, lr=0.005, backend="cpu", csv_path=None,
    column=None, seed=0, plot=None, save=None, window=None, test_size=None, val_size=None,
    batch_size=16, patience=40, progress=True, stream=None,
):
    """Train a forecaster and compare it with the naive forecast on held-out data.

    Parameters are those of the command line (see ``python -m numbarnn demo --help``);
    ``csv_path=None`` uses the shipped sunspot numbers; ``plot=None`` writes no plot.

    Returns
    -------
    dict
        ``rmse``, ``mae``, ``naive_rmse``, ``naive_mae``, ``improvement_rmse`` and
        ``improvement_mae`` (relative, in percent), ``history`` (a History), ``model``,
        ``forecast``, ``truth``, ``naive`` and ``test_labels`` (the test set), ``plot``
        (path written or None), ``seconds``.
    """
    from . import GRU, LSTM, RNN, LastStep, Linear, Sequential, get_backend
    from .optim import Adam, CosineAnnealingLR
    from .training import fit, predict

    start = time.perf_counter()
    out = stream if stream is not None else sys.stdout
    say = lambda text="": print(text, file=out, flush=True)  # noqa: E731
    cells = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
    if cell not in cells:
        raise ValueError(f"cell: expected one of {sorted(cells)}, got {cell!r}")
    be = get_backend(backend)
    if csv_path is None:
        years, values = load_sunspots()
        labels = [str(y) for y in years]
        what = f"yearly sunspot numbers {years[0]}-{years[-1]} ({len(values)} values)"
        unit = "years"
    else:
        labels, values, name = read_series(csv_path, column)
        what = f"{name!r} from {os.fspath(csv_path)} ({len(values)} values)"
        unit = "values"
    n = len(values)
    window, val_size, test_size = split_sizes(n, window, test_size, val_size)
    n_train = n - val_size - test_size  # values before the validation part

    mean = float(values[:n_train].mean())
    std = float(values[:n_train].std()) or 1.0
    x, y = make_windows((values - mean) / std, window)
    target = np.arange(window, n)  # index of the value each window forecasts
    train = target < n_train
    val = (target >= n_train) & (target < n - test_size)
    test = target >= n - test_size

    def span(mask):
        idx = target[mask]
        return f"{labels[idx[0]]}-{labels[idx[-1]]} ({len(idx)})"

    model = Sequential(
        cells[cell](1, hidden, num_layers=layers, seed=seed, backend=be),
        LastStep(),
        Linear(hidden, 1, seed=seed + 1, backend=be),
    )
    optimizer = Adam(model, lr=lr)
    scheduler = CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    say(f"numbarnn demo: {cell.upper()} forecaster on {what}")
    say(f"  windows of {window} {unit} -> the next; train {span(train)}, "
        f"validation {span(val)}, test {span(test)} held out")
    say(f"  {cells[cell].__name__}(1, {hidden}, num_layers={layers}) + Linear({hidden}, 1); "
        f"Adam lr {lr:g}, cosine schedule, batch {batch_size}, early stopping patience "
        f"{patience}; backend {be.name}{' (simulator)' if be.simulated else ''}; seed {seed}")
    history = fit(
        model, optimizer, x[:, train], y[train], epochs=epochs, batch_size=batch_size, seed=seed,
        validation_data=(x[:, val], y[val]), clip_norm=_DEFAULTS["clip_norm"],
        scheduler=scheduler, early_stopping=patience, restore_best=True, progress=progress,
        stream=out,
    )
    forecast = predict(model, x[:, test])[:, 0].astype(np.float64) * std + mean
    truth = values[target[test]]
    naive = values[target[test] - 1]
    result = _scores(forecast, truth, naive)
    idx = target[test]
    say(f"held-out test set {labels[idx[0]]}-{labels[idx[-1]]} ({len(idx)} {unit}); weights of "
        f"epoch {history.best_epoch} (best validation loss) of {len(history)}:")
    say(f"  {'':22s}{'RMSE':>9s}{'MAE':>9s}")
    say(f"  {cell.upper() + ' forecaster':22s}{result['rmse']:9.2f}{result['mae']:9.2f}")
    say(f"  {'naive (last value)':22s}{result['naive_rmse']:9.2f}{result['naive_mae']:9.2f}")
    say(f"  {'improvement':22s}{result['improvement_rmse']:8.1f}%{result['improvement_mae']:8.1f}%")
    test_labels = [labels[i] for i in target[test]]
    written = None
    if plot:
        written = _plot(plot, labels, values, test_labels, truth, forecast, naive, what, cell)
        if written:
            say(f"plot: {written}")
        else:
            say("plot: matplotlib is not installed, no plot written (pip install matplotlib)")
    if save:
        from .io import save as save_checkpoint

        save_checkpoint(save, model, optimizer, metadata={
            "demo": {"window": window, "mean": mean, "std": std, "cell": cell, "seed": seed,
                     "series": what, "test_rmse": result["rmse"]},
            "history": history.to_dict(),
        })
        say(f"checkpoint: {os.fspath(save)}")
    seconds = time.perf_counter() - start
    say(f"done in {seconds:.1f} s (the first run on a machine also compiles the kernels; "
        "they are cached for later runs)")
    result.update(history=history, model=model, forecast=forecast, truth=truth, naive=naive,
                  test_labels=test_labels, plot=written, seconds=seconds)
    return result


def _scores(forecast, truth, naive):
    rmse = lambda p: float(np.sqrt(np.mean((p - truth) ** 2)))  # noqa: E731
    mae = lambda p: float(np.mean(np.abs(p - truth)))  # noqa: E731
    out = {"rmse": rmse(forecast), "mae": mae(forecast),
           "naive_rmse": rmse(naive), "naive_mae": mae(naive)}
    for k in ("rmse", "mae"):
        base = out[f"naive_{k}"]
        out[f"improvement_{k}"] = 100.0 * (1.0 - out[k] / base) if base else math.nan
    return out


def _plot(path, labels, values, test_labels, truth, forecast, naive, what, cell):
    """Forecast against truth over the test set (and the series before it); None without matplotlib.

    The figure is built with ``matplotlib.figure.Figure`` (no pyplot, no GUI backend).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    try:
        xs = np.array([float(v) for v in labels])
        xt = np.array([float(v) for v in test_labels])
    except ValueError:  # labels that are not numbers: plot against the row index
        xs = np.arange(len(labels), dtype=float)
        xt = xs[len(labels) - len(test_labels):]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.subplots()
    shown = slice(max(0, len(values) - 4 * len(test_labels)), None)  # the test set and before
    ax.plot(xs[shown], values[shown], color="0.75", lw=1, label="series")
    ax.plot(xt, truth, color="k", lw=1.5, label="truth (held out)")
    ax.plot(xt, forecast, color="C0", lw=1.5, marker=".", label=f"{cell.upper()} forecast")
    ax.plot(xt, naive, color="C3", lw=1, ls="--", label="naive (last value)")
    ax.axvspan(xt[0], xt[-1], color="C0", alpha=0.06)
    ax.set_title(f"one-step-ahead forecasts: {what}")
    ax.legend(loc="upper left", fontsize="small")
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------- command line
def add_arguments(parser):
    """The ``demo`` subcommand's options."""
    d = _DEFAULTS
    parser.add_argument("--cell", choices=("lstm", "gru", "rnn"), default=d["cell"])
    parser.add_argument("--hidden", type=int, default=d["hidden"], help="hidden units")
    parser.add_argument("--layers", type=int, default=d["layers"], help="stacked layers")
    parser.add_argument("--epochs", type=int, default=d["epochs"],
                        help="most epochs (early stopping may end sooner)")
    parser.add_argument("--lr", type=float, default=d["lr"], help="Adam's learning rate")
    parser.add_argument("--backend", choices=("cpu", "cuda", "auto"), default=d["backend"])
    parser.add_argument("--csv", metavar="PATH",
                        help="a CSV of your own: one numeric column, or choose one with --column")
    parser.add_argument("--column", metavar="NAME", help="the column of --csv to forecast")
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--window", type=int, help="past values per forecast (default 20)")
    parser.add_argument("--test-size", type=int, help="values held out at the end (default 13%%)")
    parser.add_argument("--val-size", type=int, help="validation values before them (default 10%%)")
    parser.add_argument("--batch-size", type=int, default=d["batch_size"])
    parser.add_argument("--patience", type=int, default=d["patience"],
                        help="early stopping: epochs without a better validation loss")
    parser.add_argument("--plot", metavar="PATH", default="forecast.png",
                        help="where to write the plot when matplotlib is installed "
                             "(default forecast.png; '' for none)")
    parser.add_argument("--save", metavar="PATH",
                        help="save model and optimizer (.npz or .safetensors)")
    parser.add_argument("--no-progress", action="store_true", help="no per-epoch reports")


def run_command(args):
    """Run the demo from parsed arguments (ValueError for a bad one); returns 0."""
    for name in ("hidden", "layers", "batch_size", "patience"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive int, "
                             f"got {getattr(args, name)}")
    if args.epochs < 0:
        raise ValueError(f"--epochs: expected >= 0, got {args.epochs}")
    if not args.lr > 0:
        raise ValueError(f"--lr: expected a positive number, got {args.lr}")
    if args.column is not None and args.csv is None:
        raise ValueError("--column: only with --csv")
    from .backend import get_backend

    try:
        get_backend(args.backend)
    except RuntimeError as exc:
        raise ValueError(f"--backend: {exc}") from None
    run_demo(
        cell=args.cell, hidden=args.hidden, layers=args.layers, epochs=args.epochs, lr=args.lr,
        backend=args.backend, csv_path=args.csv, column=args.column, seed=args.seed,
        plot=args.plot or None, save=args.save, window=args.window, test_size=args.test_size,
        val_size=args.val_size, batch_size=args.batch_size, patience=args.patience,
        progress=not args.no_progress,
    )
    return 0


def main(argv=None):
    """``python -m numbarnn.demo`` (the same as ``python -m numbarnn demo``)."""
    parser = argparse.ArgumentParser(prog="python -m numbarnn demo",
                                     description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
