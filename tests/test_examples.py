"""The scripts in examples/ run at tiny sizes and do what they say."""

import subprocess
import sys

import numpy as np
import pytest

from examples_util import EXAMPLES, load


def test_forecast_sunspots(capsys):
    result = load("forecast_sunspots").main(["--hidden", "8", "--epochs", "8"])
    history = result["history"]
    assert history.loss[-1] < history.loss[0]
    assert result["forecast"].shape == (40,) and np.isfinite(result["rmse"])
    assert result["naive_rmse"] == pytest.approx(29.889, abs=1e-3)
    out = capsys.readouterr().out
    assert "test 1969-2008: LSTM RMSE" in out and "naive RMSE 29.89" in out


def test_sequence_classification(capsys):
    argv = ["--n", "256", "--hidden", "16", "--epochs", "12"]
    result = load("sequence_classification").main(argv)
    history = result["history"]
    assert history.loss[-1] < 0.8 * history.loss[0]
    assert len(history.val_loss) == 12
    assert result["accuracy"] > max(0.7, result["accuracy_before"])  # chance is 1/3
    assert "held-out accuracy at the last real step" in capsys.readouterr().out


def test_char_lm(capsys):
    module = load("char_lm")
    result = module.main(["--hidden", "24", "--epochs", "12", "--sample-length", "30"])
    history = result["history"]
    assert history.loss[-1] < 0.9 * history.loss[0]
    assert result["sample"].startswith("It was ") and len(result["sample"]) == 37
    assert set(result["sample"]) <= set(result["vocab"])
    assert "sample: 'It was " in capsys.readouterr().out


@pytest.mark.parametrize("name", ["forecast_sunspots", "sequence_classification", "char_lm"])
def test_runs_as_a_script(name):
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--help"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
