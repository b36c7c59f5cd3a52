"""Checkpoints (numbarnn.io): round trips, atomic writes, damaged files, no pickle."""

import base64
import io as stdio
import json
import os
import re
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import numbarnn
from numbarnn import GRU, LSTM, RNN, LastStep, Linear, Sequential
from numbarnn import io as nio

FORMATS = ("npz", "safetensors")
CELLS = {
    "rnn_tanh": lambda *a, **k: RNN(*a, nonlinearity="tanh", **k),
    "rnn_relu": lambda *a, **k: RNN(*a, nonlinearity="relu", **k),
    "lstm": LSTM,
    "gru": GRU,
}


def model_for(cell, dtype=np.float32, seed=0):
    """Sequential(2-layer bidirectional cell with dropout, LastStep, Linear)."""
    rec = CELLS[cell](3, 4, num_layers=2, dropout=0.25, bidirectional=True, dtype=dtype, seed=seed)
    return Sequential(rec, LastStep(), Linear(8, 2, dtype=dtype, seed=seed + 1))


def x_for(dtype=np.float32):
    return np.random.default_rng(123).standard_normal((5, 2, 3)).astype(dtype)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k


def saved(tmp_path, fmt, model=None, **kw):
    path = tmp_path / f"model.{fmt}"
    numbarnn.save(path, model if model is not None else model_for("lstm"), **kw)
    return path


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
def test_round_trip(tmp_path, fmt, dtype, cell):
    model = model_for(cell, dtype)
    x = x_for(dtype)
    model(x)  # advances the dropout generator: its state is saved too
    path = tmp_path / f"m.{fmt}"
    numbarnn.save(path, model)
    loaded = numbarnn.load(path)
    assert numbarnn.get_config(loaded) == numbarnn.get_config(model)
    assert_same_weights(loaded, model)
    assert loaded.training
    assert np.array_equal(loaded(x), model(x))  # training mode: the same dropout masks
    assert np.array_equal(loaded.eval()(x), model.eval()(x))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "make",
    [lambda: LSTM(3, 4, batch_first=True), lambda: Linear(3, 2, bias=False, dtype=np.float64),
     lambda: Sequential(GRU(2, 3), LastStep(), Sequential(Linear(3, 3), Linear(3, 1)))],
    ids=["LSTM", "Linear", "nested-Sequential"],
)
def test_round_trip_of_other_models(tmp_path, fmt, make):
    model = make()
    numbarnn.save(tmp_path / f"m.{fmt}", model)
    loaded = numbarnn.load(str(tmp_path / f"m.{fmt}"))  # str or PathLike
    assert type(loaded) is type(model) and numbarnn.get_config(loaded) == numbarnn.get_config(model)
    assert_same_weights(loaded, model)


class FakeOptimizer:
    """What numbarnn.optim's optimizers give: a flat dict of arrays and python scalars."""

    def state_dict(self):
        return {
            "lr": 0.01, "step": 7, "nesterov": True, "betas.0": 0.9,
            "state.0.exp_avg": np.arange(6, dtype=np.float32).reshape(2, 3),
            "state.0.exp_avg_sq": np.full((2,), 0.5), "count": np.int64(3),
        }


@pytest.mark.parametrize("fmt", FORMATS)
def test_optimizer_state_and_metadata(tmp_path, fmt):
    metadata = {"epoch": 3, "losses": [1.5, 0.25]}
    path = saved(tmp_path, fmt, optimizer=FakeOptimizer(), metadata=metadata)
    model, state, loaded_metadata = numbarnn.load_checkpoint(path)
    expected = FakeOptimizer().state_dict()
    assert list(state) == list(expected)  # the order is kept
    for k, v in expected.items():
        if isinstance(v, np.ndarray):
            assert isinstance(state[k], np.ndarray) and state[k].dtype == v.dtype
            assert np.array_equal(state[k], v)
        else:  # python scalars come back as python scalars of the same type
            assert type(state[k]) is {np.int64: int}.get(type(v), type(v)) and state[k] == v
    assert loaded_metadata == metadata
    assert isinstance(model, Sequential)
    path2 = saved(tmp_path, fmt, optimizer=FakeOptimizer().state_dict())  # a dict works too
    assert numbarnn.load_checkpoint(path2)[1].keys() == expected.keys()
    assert numbarnn.load_checkpoint(saved(tmp_path, fmt))[1:] == (None, None)


def test_load_in_a_new_process_gives_identical_outputs(tmp_path):
    model = model_for("gru", np.float64)
    x = x_for(np.float64)
    for fmt in FORMATS:
        numbarnn.save(tmp_path / f"m.{fmt}", model)
    script = (
        "import sys, numpy as np, numbarnn\n"
        "d = sys.argv[1]\n"
        "x = np.load(d + '/x.npy')\n"
        "out = {}\n"
        "for fmt in ('npz', 'safetensors'):\n"
        "    m = numbarnn.load(d + '/m.' + fmt)\n"
        "    out[fmt + '_train'] = m(x)\n"
        "    out[fmt + '_eval'] = m.eval()(x)\n"
        "np.savez(d + '/out.npz', **out)\n"
    )
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env, timeout=300)
    out = np.load(tmp_path / "out.npz")
    y_train = model(x)
    y_eval = model.eval()(x)
    for fmt in FORMATS:
        assert np.array_equal(out[f"{fmt}_train"], y_train)
        assert np.array_equal(out[f"{fmt}_eval"], y_eval)


def test_dropout_generator_continues_after_loading(tmp_path):
    """Saved mid-training, the loaded model draws the masks the original would have drawn."""
    model = model_for("lstm")
    x = x_for()
    model(x)
    numbarnn.save(tmp_path / "m.npz", model)
    loaded = numbarnn.load(tmp_path / "m.npz")
    for _ in range(2):
        assert np.array_equal(loaded(x), model(x))


@pytest.mark.parametrize("fmt", FORMATS)
def test_resuming_from_a_checkpoint_continues_training_exactly(tmp_path, fmt):
    """3 steps, save, load, 3 more steps == 6 steps without stopping (Adam, clipping, dropout)."""
    from numbarnn.losses import mse_loss
    from numbarnn.optim import Adam, clip_grad_norm

    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((6, 4, 3)), rng.standard_normal((4, 1))

    def make():
        rec = LSTM(3, 5, num_layers=2, dropout=0.3, dtype=np.float64, seed=0)
        return Sequential(rec, LastStep(), Linear(5, 1, dtype=np.float64, seed=1))

    def train(model, opt, steps):
        losses = []
        for _ in range(steps):
            model.zero_grad()
            loss, dy = mse_loss(model(x), target)
            model.backward(dy)
            clip_grad_norm(model, 0.5)
            opt.step()
            losses.append(loss)
        return losses

    reference = make()
    expected = train(reference, Adam(reference, lr=0.01), 6)
    model = make()
    opt = Adam(model, lr=0.01)
    losses = train(model, opt, 3)
    numbarnn.save(tmp_path / f"run.{fmt}", model, opt, metadata={"epoch": 3})
    loaded, state, metadata = numbarnn.load_checkpoint(tmp_path / f"run.{fmt}")
    resumed = Adam(loaded, lr=0.5)  # the learning rate comes back with the state
    resumed.load_state_dict(state)
    losses += train(loaded, resumed, 3)
    assert metadata == {"epoch": 3} and resumed.lr == 0.01
    assert losses == expected
    assert_same_weights(loaded, reference)


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_crash_mid_write_leaves_the_old_file_intact(tmp_path, monkeypatch, fmt, exc):
    old = model_for("lstm", seed=0)
    path = saved(tmp_path, fmt, old)
    before = path.read_bytes()
    writer = {"npz": "_write_npz", "safetensors": "_write_safetensors"}[fmt]
    real = getattr(nio, writer)

    def crash(f, *args):
        real(f, *args)  # the whole file...
        f.seek(f.tell() // 2)
        f.truncate()  # ... cut in half, then the crash
        raise exc("simulated crash")

    monkeypatch.setattr(nio, writer, crash)
    with pytest.raises(exc, match="simulated crash"):
        numbarnn.save(path, model_for("lstm", seed=5))
    with pytest.raises(exc):
        numbarnn.save(tmp_path / f"new.{fmt}", old)
    assert os.listdir(tmp_path) == [path.name]  # no temporary file, no half new file
    assert path.read_bytes() == before
    assert_same_weights(numbarnn.load(path), old)


def test_save_replaces_the_file_with_the_usual_permissions(tmp_path):
    path = saved(tmp_path, "npz")
    saved(tmp_path, "npz", model_for("gru"))
    assert isinstance(numbarnn.load(path)[0], GRU)
    assert os.listdir(tmp_path) == ["model.npz"]
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------- damaged files


def rewrite_safetensors(path, edit):
    """Apply ``edit(header_dict)`` to a .safetensors header and write the file back."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edited = edit(header)
    header = edited if isinstance(edited, dict) else header  # an edit may return a new header
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def first_tensor(header):
    return next(k for k in header if k != "__metadata__")


def describe(header, edit):
    """Edit the numbarnn description inside a safetensors header."""
    d = json.loads(header["__metadata__"]["numbarnn"])
    edit(d)
    header["__metadata__"]["numbarnn"] = json.dumps(d)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_files(tmp_path, fmt):
    path = saved(tmp_path, fmt, optimizer=FakeOptimizer())
    data = path.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    lengths = set(np.linspace(0, len(data) - 1, 60).astype(int)) | {1, 7, 8, 9, len(data) - 1}
    for n in sorted(lengths):
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError, match=re.escape(str(cut))):
            numbarnn.load(cut)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_flipped_byte_is_caught_or_harmless(tmp_path, fmt):
    """Flip each byte in turn: the load fails with a ValueError or gives the same checkpoint."""
    path = saved(tmp_path, fmt, Sequential(GRU(1, 1, seed=0), LastStep()), optimizer={"lr": 0.5})
    data = path.read_bytes()
    bad = tmp_path / f"bad.{fmt}"
    same = 0
    for k in range(0, len(data), 3):
        flipped = bytearray(data)
        flipped[k] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        try:
            model, state, _ = numbarnn.load_checkpoint(bad)
        except ValueError as exc:
            assert str(bad) in str(exc)
            continue
        assert state == {"lr": 0.5}
        assert_same_weights(model, Sequential(GRU(1, 1, seed=0), LastStep()))
        same += 1
    if fmt == "safetensors":  # every byte counts: header JSON, lengths, checksummed content
        assert same == 0


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda h: h[first_tensor(h)].update(data_offsets=[0, 10**6]),
         r"needs \d+ bytes, data_offsets span"),
        (lambda h: h[first_tensor(h)].update(shape=[10**6]), r"needs \d+ bytes, data_offsets span"),
        (lambda h: h[first_tensor(h)].update(dtype="F4X"), r"unknown or unsupported dtype 'F4X'"),
        (lambda h: h[first_tensor(h)].update(dtype="BF16"), r"unknown or unsupported dtype 'BF16'"),
        (lambda h: h[first_tensor(h)].update(shape=[-1]), r"bad shape \[-1\]"),
        (lambda h: h[first_tensor(h)].update(data_offsets=[5, 1]), r"bad data_offsets"),
        (lambda h: h[first_tensor(h)].pop("shape"),
         r"expected the keys dtype, shape, data_offsets"),
        (lambda h: {k: v for k, v in h.items() if k != first_tensor(h)},
         r"starts at byte \d+, expected 0"),
        (lambda h: h.update(__metadata__={"numbarnn": 3}), r"__metadata__ must map str to str"),
        (lambda h: describe(h, lambda d: d.update(version=2)),
         r"checkpoint version 2; this numbarnn reads version 1"),
    ],
    ids=["offsets-out-of-range", "shape-vs-bytes", "unknown-dtype", "bf16", "negative-shape",
         "reversed-offsets", "missing-field", "gap", "metadata-type", "version"],
)
def test_tampered_safetensors_header(tmp_path, edit, pattern):
    path = saved(tmp_path, "safetensors")
    rewrite_safetensors(path, edit)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + pattern):
        numbarnn.load(path)


@pytest.mark.parametrize(
    "tamper, pattern",
    [
        (lambda b: b[:8] + b"{not json" + b[17:], r"the safetensors header is not valid JSON"),
        (lambda b: struct.pack("<Q", 2**40) + b[8:],
         r"header length 1099511627776 exceeds the limit"),
        (lambda b: b + b"\0" * 8, r"8 bytes after the last tensor"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]),
         r"checksum mismatch: the file was changed after it was written"),
    ],
    ids=["bad-json", "huge-header", "trailing-bytes", "changed-weight"],
)
def test_tampered_safetensors_bytes(tmp_path, tamper, pattern):
    path = saved(tmp_path, "safetensors")
    path.write_bytes(tamper(path.read_bytes()))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + pattern):
        numbarnn.load(path)


def test_duplicate_header_keys_are_refused(tmp_path):
    path = saved(tmp_path, "safetensors", LastStep())  # no tensors: an easy header to forge
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    raw = data[8 : 8 + n].rstrip(b" ")
    raw = raw[:-1] + b',"__metadata__":{}}'
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ValueError, match=r"not valid JSON: duplicate keys \['__metadata__'\]"):
        numbarnn.load(path)


def rewrite_npz(path, edit):
    """Apply ``edit(arrays)`` to the arrays of an .npz and write it back with NumPy."""
    with np.load(path) as z:
        arrays = dict(z)
    edit(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def npz_description(edit):
    def apply(arrays):
        d = json.loads(str(arrays["__numbarnn__"]))
        edit(d)
        arrays["__numbarnn__"] = np.array(json.dumps(d))

    return apply


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (npz_description(lambda d: d["model"].update({"class": "os.system"})),
         r"checksum mismatch"),
        (lambda a: a.update(__numbarnn__=np.array("{bad")),
         r"the numbarnn description is not valid JSON"),
        (lambda a: a.update(__numbarnn__=np.frombuffer(b"{}", np.uint8)),
         r"__numbarnn__ must be a 0-d unicode array"),
        (lambda a: a.update(**{"model.0.weight_ih_l0": a["model.0.weight_ih_l0"][:4]}),
         r"checksum mismatch"),
    ],
    ids=["unknown-class", "bad-json", "description-type", "weight-shape"],
)
def test_tampered_npz(tmp_path, edit, pattern):
    path = saved(tmp_path, "npz")
    rewrite_npz(path, edit)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + pattern):
        numbarnn.load(path)


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda d: d["model"].update({"class": "os.system"}),
         r"bad architecture: config: unknown class 'os.system'"),
        (lambda d: d["model"]["layers"][0]["args"].update(hidden_size=5),
         r"the weights do not fit the model \(Sequential\): "
         r".0.weight_ih_l0.: expected shape \(20, 3\), got \(16, 3\)"),
        (lambda d: d["model"]["layers"][0]["args"].update(exec="print(1)"),
         r"unknown arguments \['exec'\] for LSTM"),
        (lambda d: d.update(format="other"), r"not a numbarnn checkpoint"),
        (lambda d: d.update(rng={"0": {"bit_generator": "MT19937"}}),
         r"rng\['0'\]: bad generator state"),
        (lambda d: d.update(rng={"2": d["rng"]["0"]}), r"has no dropout generator at '2'"),
    ],
    ids=["unknown-class", "other-architecture", "unknown-argument", "format", "rng-state",
         "rng-place"],
)
def test_tampered_description_with_a_valid_checksum(tmp_path, edit, pattern):
    """Someone edits the description and recomputes the checksum: the content is still checked."""
    path = saved(tmp_path, "npz")

    def forge(arrays):
        d = json.loads(str(arrays["__numbarnn__"]))
        edit(d)
        arrays["__numbarnn__"] = np.array(json.dumps(d))
        tensors = {k: v for k, v in arrays.items() if not k.startswith("__")}
        arrays["__numbarnn_sha256__"] = np.array(nio._digest(str(arrays["__numbarnn__"]), tensors))

    rewrite_npz(path, forge)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": .*" + pattern):
        numbarnn.load(path)


def test_npz_member_with_a_lying_header(tmp_path):
    """A .npy inside the zip whose header claims more data than it holds (valid CRC)."""
    path = tmp_path / "m.npz"
    buf = stdio.BytesIO()
    np.lib.format.write_array(buf, np.zeros(4, np.float32))
    member = buf.getvalue().replace(b"(4,)", b"(9,)")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("weight.npy", member)
    pattern = re.escape(str(path)) + r": not a readable .npz checkpoint"
    with pytest.raises(ValueError, match=pattern):
        numbarnn.load(path, model=Linear(2, 2, bias=False))


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_for_another_architecture(tmp_path, fmt):
    path = saved(tmp_path, fmt, LSTM(3, 4, seed=0))
    for other, pattern in [
        (LSTM(3, 5, seed=1), r"expected shape \(20, 3\), got \(16, 3\)"),
        (GRU(3, 4, seed=1), r"expected shape \(12, 3\), got \(16, 3\)"),
        (Linear(3, 4, seed=1),
         r"missing keys \['weight', 'bias'\], unexpected keys \[.*'weight_ih_l0'"),
    ]:
        before = other.state_dict()
        prefix = re.escape(str(path)) + r": the weights do not fit .*"
        with pytest.raises(ValueError, match=prefix + pattern):
            numbarnn.load(path, model=other)
        assert all(np.array_equal(v, before[k]) for k, v in other.state_dict().items())  # unchanged
    target = LSTM(3, 4, seed=9)
    assert numbarnn.load(path, model=target) is target
    assert_same_weights(target, LSTM(3, 4, seed=0))


def test_unexpected_arrays_are_refused(tmp_path):
    path = saved(tmp_path, "npz")

    def add(arrays):
        arrays["extra"] = np.zeros(2)
        tensors = {k: v for k, v in arrays.items() if not k.startswith("__")}
        arrays["__numbarnn_sha256__"] = np.array(nio._digest(str(arrays["__numbarnn__"]), tensors))

    rewrite_npz(path, add)
    with pytest.raises(ValueError, match=r"unexpected arrays in the file: \['extra'\]"):
        numbarnn.load(path)


# --------------------------------------------------------------------------- no pickle


def test_npz_with_an_object_array_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.npz"
    np.savez(path, weight=np.array([Payload()], dtype=object))  # pickled inside the .npz
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": .*allow_pickle=False"):
        numbarnn.load(path, model=Linear(1, 1, bias=False))
    assert not marker.exists()


def test_npy_file_named_npz_is_refused(tmp_path):
    path = tmp_path / "plain.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    pattern = r"plain.npz: not a readable .npz checkpoint .*not an .npz archive"
    with pytest.raises(ValueError, match=pattern):
        numbarnn.load(path, model=Linear(1, 1))


# --------------------------------------------------------------------------- plain files, PyTorch


GOLDEN_SAFETENSORS = base64.b64decode(
    # safetensors 0.8.0: safetensors.numpy.save(golden_tensors(), metadata={"format": "np"})
    "KAEAAAAAAAB7Il9fbWV0YWRhdGFfXyI6eyJmb3JtYXQiOiJucCJ9LCJiaWFzX2hoX2wwIjp7ImR0eXBlIjoiRjMy"
    "Iiwic2hhcGUiOls0XSwiZGF0YV9vZmZzZXRzIjpbMCwxNl19LCJiaWFzX2loX2wwIjp7ImR0eXBlIjoiRjMyIiwi"
    "c2hhcGUiOls0XSwiZGF0YV9vZmZzZXRzIjpbMTYsMzJdfSwid2VpZ2h0X2hoX2wwIjp7ImR0eXBlIjoiRjMyIiwi"
    "c2hhcGUiOls0LDFdLCJkYXRhX29mZnNldHMiOlszMiw0OF19LCJ3ZWlnaHRfaWhfbDAiOnsiZHR5cGUiOiJGMzIi"
    "LCJzaGFwZSI6WzQsMl0sImRhdGFfb2Zmc2V0cyI6WzQ4LDgwXX19IAAAAAAAAAA+AACAPgAAwD4AAIC+AAAAvgAA"
    "AAAAAAA+AAAAvgAAAAAAAAA+AACAPgAAwL4AAIC+AAAAvgAAAAAAAAA+AACAPgAAwD4AAAA/"
)


def golden_tensors():
    """The state dict of an LSTM(2, 1) with PyTorch's names, exact in float32."""
    def v(shape, k):
        return ((np.arange(int(np.prod(shape))) - k) / 8).astype(np.float32).reshape(shape)

    return {"weight_ih_l0": v((4, 2), 3), "weight_hh_l0": v((4, 1), 1), "bias_ih_l0": v((4,), 2),
            "bias_hh_l0": v((4,), 0)}


def test_safetensors_compatible_with_the_safetensors_package(tmp_path):
    """A file the package wrote loads here, and the writer here reproduces it byte for byte."""
    path = tmp_path / "torch_lstm.safetensors"
    path.write_bytes(GOLDEN_SAFETENSORS)
    model = numbarnn.load(path, model=LSTM(2, 1))
    for k, v in golden_tensors().items():
        assert np.array_equal(model.params[k], v)
    buf = stdio.BytesIO()
    nio._write_safetensors(buf, golden_tensors(), {"format": "np"})
    assert buf.getvalue() == GOLDEN_SAFETENSORS
    with pytest.raises(ValueError, match=r"no numbarnn architecture in the file .*pass model="):
        numbarnn.load(path)


@pytest.mark.torch
@pytest.mark.parametrize("fmt", FORMATS)
def test_torch_lstm_state_dict_to_numbarnn_file(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    x = x_for()
    with torch.no_grad():
        y_ref = ref(torch.from_numpy(x))[0].numpy()
    state_dict = {k: v.numpy() for k, v in ref.state_dict().items()}
    # a numbarnn checkpoint made from torch weights
    model = LSTM(3, 4, num_layers=2, bidirectional=True)
    model.load_state_dict(state_dict)
    numbarnn.save(tmp_path / f"m.{fmt}", model)
    y = numbarnn.load(tmp_path / f"m.{fmt}")(x)[0]
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    # a plain file of torch's state dict, loaded into a model built by hand
    plain = tmp_path / f"plain.{fmt}"
    if fmt == "npz":
        np.savez(plain, **state_dict)
    else:
        with open(plain, "wb") as f:
            nio._write_safetensors(f, state_dict, {"format": "pt"})
    y = numbarnn.load(plain, model=LSTM(3, 4, num_layers=2, bidirectional=True, seed=7))(x)[0]
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- bad arguments


def test_save_rejects_bad_arguments(tmp_path):
    model = Linear(2, 1)
    pattern = r"path: expected a name ending in .npz or .safetensors, got '.*m.pt'"
    with pytest.raises(ValueError, match=pattern):
        numbarnn.save(tmp_path / "m.pt", model)
    with pytest.raises(TypeError, match=r"path: expected a str or os.PathLike, got int"):
        numbarnn.save(3, model)
    with pytest.raises(TypeError, match=r"model: cannot describe a dict; expected one of RNN"):
        numbarnn.save(tmp_path / "m.npz", {"weight": np.zeros(2)})
    with pytest.raises(TypeError, match=r"metadata: expected JSON-serializable data"):
        numbarnn.save(tmp_path / "m.npz", model, metadata={"f": print})
    pattern = r"optimizer: state_dict\['momentum'\]: expected a numeric array or a python scalar"
    with pytest.raises(TypeError, match=pattern + ", got NoneType"):
        numbarnn.save(tmp_path / "m.npz", model, optimizer={"momentum": None})
    with pytest.raises(TypeError, match=r"optimizer: state_dict\['names'\]: .* got ndarray of <U1"):
        numbarnn.save(tmp_path / "m.npz", model, optimizer={"names": np.array(["a"])})
    pattern = r"optimizer: state_dict\['step'\] = 36893488147419103232 does not fit in int64"
    with pytest.raises(ValueError, match=pattern):
        numbarnn.save(tmp_path / "m.npz", model, optimizer={"step": 2**65})
    pattern = r"optimizer: expected an optimizer with state_dict\(\) or a dict, got list"
    with pytest.raises(TypeError, match=pattern):
        numbarnn.save(tmp_path / "m.npz", model, optimizer=[1])
    assert os.listdir(tmp_path) == []  # nothing written
    with pytest.raises(FileNotFoundError):
        numbarnn.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match=r"path: expected a name ending in .npz or .safetensors"):
        numbarnn.load(tmp_path / "m.pkl")
