"""Every CUDA kernel compiles to PTX, for float32 and float64, without a GPU.

The simulator runs kernels as Python and does no type checking, so a kernel that the
simulator tests pass can still fail to compile. ``numba.cuda.compile_ptx`` (numba-cuda
with NVVM, no driver needed) catches that. The pytest run has the simulator switched on,
which removes the compiler, so the compilation runs in a subprocess with
``NUMBA_ENABLE_CUDASIM=0``. That subprocess also checks that importing
``numbarnn.kernels.cuda`` with the simulator off and no driver works and imports no CuPy.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

KERNELS = [
    f"_{cell}_{direction}_step"
    for cell in ("rnn", "lstm", "gru")
    for direction in ("forward", "backward")
]
DTYPES = ("float32", "float64")

_SCRIPT = r"""
import json, sys
from numba import config
assert not config.ENABLE_CUDASIM, "the simulator is on"
from numbarnn.kernels import cuda as k
report = {"cupy_imported": "cupy" in sys.modules}
ptx = k.compile_all_ptx(cc=(9, 0))
report["ptx"] = {f"{name}:{dtype}": text for (name, dtype), text in ptx.items()}
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def compiled():
    """Run the compilation once for the module; returns the subprocess's report."""
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed (pip install 'numbarnn[test]')")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"PTX compilation failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def test_import_does_not_load_cupy(compiled):
    assert compiled["cupy_imported"] is False


def test_every_kernel_compiled(compiled):
    assert set(compiled["ptx"]) == {f"{k}:{d}" for k in KERNELS for d in DTYPES}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_ptx(compiled, kernel, dtype):
    ptx = compiled["ptx"][f"{kernel}:{dtype}"]
    assert ".target sm_90" in ptx
    entries = re.findall(r"\.visible \.entry (\S+?)\(", ptx)
    assert len(entries) == 1 and kernel in entries[0], entries
    # The arrays are of the requested dtype: loads and stores of that width.
    width = dtype[-2:]
    assert re.search(rf"ld\.global\.f{width}\b", ptx)
    assert re.search(rf"st\.global\.f{width}\b", ptx)


@pytest.mark.parametrize("kernel", KERNELS)
def test_float32_kernels_do_no_float64_math(compiled, kernel):
    # A float64 literal in cells.py would promote float32 math to slow float64 on GPUs.
    ptx = compiled["ptx"][f"{kernel}:float32"]
    assert not re.search(r"\.f64\b", ptx), "float64 instructions in a float32 kernel"
