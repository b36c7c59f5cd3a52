"""The embedding and streaming examples run at tiny sizes and do what they say."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import numbarnn

from examples_util import EXAMPLES, load


def test_njit_simulation(capsys):
    argv = ["--hidden", "8", "--epochs", "3", "--rollouts", "4", "--steps", "20"]
    result = load("njit_simulation").main(argv)
    assert result["history"].loss[-1] < result["history"].loss[0]
    assert result["rollouts"].shape == (4, 21, 2) and np.all(np.isfinite(result["rollouts"]))
    assert result["mismatch"] < 1e-5  # the @njit loop and model.step agree
    assert "@njit loop:" in capsys.readouterr().out


def test_cuda_device_function(capsys):
    if not numbarnn.cuda_status()[0]:
        pytest.skip("needs the CUDA simulator or a GPU")
    result = load("cuda_device_function").main(["--hidden", "3", "--steps", "3"])
    assert result["plain_error"] < 1e-12 and result["zoneout_error"] < 1e-12
    assert 0 < result["kept"] < 1  # the masks kept some units and updated others
    assert "zoneout LSTM kernel on" in capsys.readouterr().out


_PTX_SCRIPT = r"""
import importlib.util, sys
from numba import config, cuda, types
assert not config.ENABLE_CUDASIM, "the simulator is on"
spec = importlib.util.spec_from_file_location("example", sys.argv[1])
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
for dtype in (types.float32, types.float64):
    m = dtype[:, ::1]
    text, _ = cuda.compile_ptx(example.lstm_zoneout_step.py_func, (m,) * 7, cc=(9, 0))
    assert ".visible .entry" in text
    print(dtype, "ok")
"""


def test_cuda_device_function_compiles_to_ptx():
    """The simulator does no type checking; NVVM compiles the example's kernel for real."""
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed (pip install 'numbarnn[test]')")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    proc = subprocess.run(
        [sys.executable, "-c", _PTX_SCRIPT, str(EXAMPLES / "cuda_device_function.py")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split() == ["float32", "ok", "float64", "ok"]


def test_online_forecast(capsys):
    argv = ["--hidden", "8", "--epochs", "3", "--history", "200", "--online", "30"]
    result = load("online_forecast").main(argv)
    assert result["forecasts"].shape == (30,) and np.all(np.isfinite(result["forecasts"]))
    assert result["mismatch"] < 1e-5  # stateful stepping equals forward over the series
    assert set(result["scores"]) == {"lstm", "last reading", "one cycle ago"}
    assert "readings forecast online" in capsys.readouterr().out


def test_step_latency(capsys):
    argv = ["--input", "3", "--hidden", "4", "--repeat", "2", "--calls", "20"]
    times = load("step_latency").main(argv)
    assert len(times) >= 4 and all(0 < m < 1e5 for m, _ in times.values())
    assert "lstm_step_vector in @njit loop" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name", ["njit_simulation", "cuda_device_function", "online_forecast", "step_latency"]
)
def test_runs_as_a_script(name):
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--help"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
