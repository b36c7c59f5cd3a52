"""Smoke tests of ``python -m numbarnn bench`` (no timing thresholds: times only need to be
positive and the rows complete)."""

import json

import pytest

from numbarnn import bench
from numbarnn.__main__ import main
from numbarnn.kernels import cpu


def test_flops_formula():
    T, B, I, H = 100, 64, 512, 512
    assert bench.layer_flops("lstm", T, B, I, H) == 2 * T * B * (I + H) * 4 * H == 26_843_545_600
    assert bench.layer_flops("lstm", T, B, I, H, "train") == 3 * 26_843_545_600
    assert bench.layer_flops("gru", 50, 1, 128, 128) == 2 * 50 * 1 * 256 * 3 * 128
    assert bench.layer_flops("rnn", 200, 16, 64, 128) == 2 * 200 * 16 * 192 * 128
    with pytest.raises(ValueError, match="cell"):
        bench.layer_flops("elman", 1, 1, 1, 1)


def test_measure_interleaved_settles_before_each_sample(monkeypatch):
    """With ``settle``, every sample starts after that pause (so a library's spinning worker
    threads are idle before the next implementation runs); the order alternates per repeat.
    The bench pauses at more than one thread only."""
    events = []
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: events.append(("sleep", seconds)))
    impls = {"a": lambda: events.append("a"), "b": lambda: events.append("b")}
    times = bench.measure_interleaved(impls, repeat=2, min_time=0, warmup=1, settle=0.25)
    assert set(times) == {"a", "b"} and all(t["number"] == 1 for t in times.values())
    pause = ("sleep", 0.25)
    assert events[-8:] == [pause, "a", pause, "b", pause, "b", pause, "a"]
    assert events[:-8].count(pause) == 0  # none during warm-up and calibration
    assert bench._settle(1) == 0 and bench._settle(2) == bench.SETTLE_S > 0


def test_parse_size():
    assert bench.parse_size("large") == ("large", (100, 64, 512, 512))
    assert bench.parse_size("200,16,64,128") == ("200,16,64,128", (200, 16, 64, 128))
    for bad in ("huge", "1,2,3", "1,2,3,0", "a,b,c,d"):
        with pytest.raises(ValueError, match="T,B,I,H"):
            bench.parse_size(bad)


def test_bench_quick_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    status = main(["bench", "--quick", "--no-torch", "--threads", "1", "--json", str(path)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "T,B,I,H" in printed and "numbarnn-cpu" in printed and "GEMM rate" in printed
    # What the GEMM rate measures, and whether numbarnn uses that BLAS (see cpu._blas_wide).
    used = "BLAS used on one thread" if cpu._blas_wide_callback() else "BLAS not used"
    assert "GEMM rate: the faster of NumPy's BLAS, " in printed and used in printed

    result = json.loads(path.read_text())
    assert result["machine"]["cores_available"] >= 1
    assert result["machine"]["numpy"] and result["machine"]["numba"]
    assert result["settings"]["threads"] == [1]
    rows = result["rows"]

    layer = [r for r in rows if r["kind"] == "layer"]
    expected = {
        (size, cell, op)
        for size in bench.QUICK_SIZES
        for cell in bench.GATES
        for op in bench.OPS
    }
    assert {(r["size"], r["cell"], r["op"]) for r in layer} == expected
    assert len(layer) == len(expected)  # numbarnn-cpu only: no torch, no GPU here
    for r in layer:
        assert r["impl"] == "numbarnn-cpu" and r["threads"] == 1
        assert r["median_s"] > 0 and all(s > 0 for s in r["samples_s"])
        assert len(r["samples_s"]) == result["settings"]["repeat"]
        assert r["flops"] == bench.layer_flops(r["cell"], r["T"], r["B"], r["I"], r["H"], r["op"])
        assert r["gflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)
        assert r["gemm_fraction"] > 0
        assert r["ratio"] is None

    (gemm,) = [r for r in rows if r["kind"] == "gemm"]
    assert gemm["threads"] == 1 and gemm["blas_gflops"] > 0 and gemm["packed_gflops"] > 0
    # the GEMM rate is the faster of NumPy's BLAS and numbarnn's packed kernels
    assert gemm["gflops"] == max(gemm["blas_gflops"], gemm["packed_gflops"])
    assert gemm["gflops"] == pytest.approx(2 * gemm["n"] ** 3 / gemm["median_s"] / 1e9)

    stream = {r["impl"]: r for r in rows if r["kind"] == "streaming"}
    assert "numbarnn" in stream and stream["numbarnn"]["median_us"] > 0

    (compile_row,) = [r for r in rows if r["kind"] == "compile"]
    assert compile_row["mode"] == "warm"
    assert compile_row["second"]["total_s"] > 0 and compile_row["second"]["import_s"] > 0

    # No CUDA rows: no GPU here, and the simulator (on under pytest) must not be timed.
    assert not [r for r in rows if r.get("device") == "cuda"]
    assert any(n.startswith("numbarnn cuda: skipped") for n in result["notes"])


@pytest.mark.torch
def test_bench_against_torch(tmp_path):
    pytest.importorskip("torch")
    with open(tmp_path / "table.txt", "w") as out:
        result = bench.run_benchmarks(
            cells=["lstm", "gru"], sizes={"t": (4, 2, 3, 5)}, threads=[1], repeat=2, quick=True,
            backends=["cpu"], streaming=False, compile_mode="none",
            json_path=tmp_path / "b.json", out=out,
        )
    layer = [r for r in result["rows"] if r["kind"] == "layer"]
    assert {(r["cell"], r["op"], r["impl"]) for r in layer} == {
        (c, op, impl) for c in ("lstm", "gru") for op in bench.OPS
        for impl in ("numbarnn-cpu", "torch-cpu")
    }
    for r in layer:
        assert r["median_s"] > 0
        if r["impl"] == "numbarnn-cpu":
            assert r["ratio"] > 0
            assert r["max_abs_diff"] < 1e-4  # same weights as torch, float32
            torch_row, = [t for t in layer if t["impl"] == "torch-cpu"
                          and (t["cell"], t["op"]) == (r["cell"], r["op"])]
            # the ceiling is torch's time over the GEMM floor: flops / GEMM rate
            floor_s = torch_row["flops"] / (torch_row["gflops"] / torch_row["gemm_fraction"] * 1e9)
            assert r["ratio_ceiling"] == pytest.approx(torch_row["median_s"] / floor_s)
    assert json.loads((tmp_path / "b.json").read_text())["settings"]["torch"] is True
    summary = bench.format_summary(result)
    assert "ceiling: the ratio if numbarnn ran at the GEMM floor" in summary


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--threads", "0"], "positive integer"),
        (["--threads", "100000"], "NUMBA_NUM_THREADS"),
        (["--sizes", "1,2,3"], "T,B,I,H"),
        (["--cells", "elman"], "invalid choice"),
        (["--repeat", "-1"], "positive integer"),
        (["--min-time", "0"], "min-time"),
    ],
)
def test_bench_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--quick", "--no-torch", "--compile-latency", "none", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- asv suite


def _asv_modules():
    """asv_bench/benchmarks imported as a package (its modules use relative imports)."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "asv_bench" / "benchmarks"
    if not root.is_dir():
        pytest.skip("asv_bench/benchmarks is not in this tree")
    name = "numbarnn_asv_benchmarks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, root / "__init__.py", submodule_search_locations=[str(root)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.layers"), importlib.import_module(f"{name}.compile")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_asv_benchmarks_run(cell):
    """Every asv benchmark runs at the small size, and 'cuda' is skipped without a real GPU
    (the simulator, on under pytest, must count as no GPU)."""
    layers, _ = _asv_modules()
    for cls, method in ((layers.Forward, "time_forward"), (layers.TrainStep, "time_train_step")):
        bench_obj = cls()
        assert set(cls.params[1]) == set(bench.SIZES)
        bench_obj.setup(cell, "small", "cpu")
        getattr(bench_obj, method)(cell, "small", "cpu")
        with pytest.raises(NotImplementedError):
            cls().setup(cell, "small", "cuda")
    stream = layers.StreamingStep()
    stream.setup(cell, "cpu")
    stream.time_step(cell, "cpu")
    stream.time_step(cell, "cpu")
    with pytest.raises(NotImplementedError):
        layers.StreamingStep().setup(cell, "cuda")


def test_asv_compile_latency_runs():
    _, compile_mod = _asv_modules()
    latency = compile_mod.CompileLatency()
    cache = latency.setup_cache()
    assert latency.track_import_and_first_call_warm_cache(cache) > 0
