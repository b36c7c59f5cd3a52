"""``python -m numbarnn demo``: shipped data, forecaster against the naive baseline, options."""

import importlib.util
import io
import subprocess
import sys

import numpy as np
import pytest

import numbarnn
from numbarnn import demo
from numbarnn.__main__ import main

TINY = ["--epochs", "2", "--hidden", "4", "--no-progress"]


def run_cli(capsys, *argv):
    code = main(["demo", *argv])
    out = capsys.readouterr().out
    return code, out


def test_shipped_sunspots():
    years, values = demo.load_sunspots()
    assert years[0] == 1700 and years[-1] == 2008 and len(values) == 309
    assert np.array_equal(years, np.arange(1700, 2009))
    assert values.dtype == np.float64 and values.min() >= 0 and values.max() > 150
    assert values[0] == 5 and values[-1] == 2.9  # 1700 and 2008 in the version-1 series
    text = (demo.importlib.resources.files("numbarnn") / "data" / "sunspots.csv").read_text()
    assert "statsmodels.datasets.sunspots" in text.splitlines()[0]


def test_windows_and_splits():
    x, y = demo.make_windows(np.arange(10.0), 3)
    assert x.shape == (3, 7, 1) and y.shape == (7, 1) and x.dtype == np.float32
    assert list(x[:, 2, 0]) == [2, 3, 4] and y[2, 0] == 5
    assert demo.split_sizes(309) == (20, 31, 40)
    with pytest.raises(ValueError, match="too short"):
        demo.split_sizes(12, window=8)
    with pytest.raises(ValueError, match="^window"):
        demo.make_windows(np.arange(5.0), 5)


def test_tiny_demo_on_the_cpu(capsys):
    code, out = run_cli(capsys, *TINY, "--plot", "")
    assert code == 0
    assert "LSTM forecaster on yearly sunspot numbers 1700-2008" in out
    assert "test 1969-2008 (40) held out" in out
    for row in ("LSTM forecaster", "naive (last value)", "improvement"):
        assert row in out
    assert "29.89" in out  # the naive baseline's RMSE on 1969-2008


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_and_layers(cell):
    result = demo.run_demo(cell=cell, hidden=3, layers=2, epochs=1, progress=False,
                           stream=io.StringIO())
    assert np.isfinite(result["rmse"]) and result["forecast"].shape == (40,)


def test_cuda_backend_in_the_simulator():
    assert numbarnn.get_backend("cuda").simulated  # pytest switches the simulator on
    out = io.StringIO()
    result = demo.run_demo(backend="cuda", epochs=1, hidden=2, window=3, batch_size=512,
                           progress=False, stream=out)
    assert "backend cuda (simulator)" in out.getvalue()
    assert np.isfinite(result["rmse"]) and np.isfinite(result["naive_rmse"])
    # the same model on the CPU gives the same forecast (same seed, same math)
    cpu = demo.run_demo(backend="cpu", epochs=1, hidden=2, window=3, batch_size=512,
                        progress=False, stream=io.StringIO())
    np.testing.assert_allclose(result["forecast"], cpu["forecast"], rtol=1e-4, atol=1e-3)


def test_default_run_beats_the_naive_baseline_and_is_deterministic():
    """The real default configuration (a few seconds once compiled)."""
    a = demo.run_demo(progress=False, stream=io.StringIO())
    assert a["naive_rmse"] == pytest.approx(29.889, abs=1e-3)
    assert a["improvement_rmse"] > 30 and a["improvement_mae"] > 30
    b = demo.run_demo(progress=False, stream=io.StringIO())
    np.testing.assert_array_equal(a["forecast"], b["forecast"])
    assert a["history"].loss == b["history"].loss


def test_user_csv(tmp_path, capsys):
    t = np.arange(120)
    series = 10 + 5 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 0.3, t.size)
    one = tmp_path / "one.csv"
    one.write_text("# my series\nlevel\n" + "\n".join(f"{v:.4f}" for v in series) + "\n")
    code, out = run_cli(capsys, "--csv", str(one), *TINY, "--plot", "")
    assert code == 0 and "'level' from" in out and "(120 values)" in out
    assert "naive (last value)" in out

    many = tmp_path / "many.csv"
    many.write_text("month,other,level\n" + "\n".join(
        f"2000-{i:03d},{i},{v:.4f}" for i, v in enumerate(series)) + "\n")
    code, out = run_cli(capsys, "--csv", str(many), "--column", "level", *TINY, "--plot", "")
    assert code == 0 and "2000-" in out  # the first column labels the splits

    result = demo.run_demo(csv_path=many, column="level", epochs=60, hidden=16, lr=0.01,
                           progress=False, stream=io.StringIO())
    assert result["improvement_rmse"] > 20  # a seasonal series: the naive forecast is poor

    with pytest.raises(SystemExit):
        main(["demo", "--csv", str(many), *TINY])
    err = capsys.readouterr().err
    assert "3 columns ['month', 'other', 'level']; choose one with --column" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("v\n1\n2\nabc\n")
    with pytest.raises(ValueError, match=r"bad.csv: row 3, column 0: 'abc' is not a number"):
        demo.read_series(bad)
    with pytest.raises(ValueError, match="not a column"):
        demo.read_series(many, "nope")
    with pytest.raises(ValueError, match="cannot read"):
        demo.read_series(tmp_path / "missing.csv")


def test_bad_options(capsys):
    for argv, message in [
        (["--hidden", "0"], "--hidden: expected a positive int"),
        (["--lr", "-1"], "--lr: expected a positive number"),
        (["--column", "x"], "--column: only with --csv"),
        (["--cell", "transformer"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["demo", *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_save_and_plot(tmp_path, capsys):
    ck, png = tmp_path / "demo.safetensors", tmp_path / "forecast.png"
    code, out = run_cli(capsys, *TINY, "--save", str(ck), "--plot", str(png))
    assert code == 0 and f"checkpoint: {ck}" in out
    model, opt_state, meta = numbarnn.load_checkpoint(ck)
    assert meta["demo"]["window"] == 20 and opt_state["step"] > 0
    assert isinstance(model[0], numbarnn.LSTM) and model[0].hidden_size == 4
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in out and not png.exists()
    else:
        assert f"plot: {png}" in out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_dash_m(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "numbarnn", "demo", *TINY, "--plot", ""],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "improvement" in proc.stdout
