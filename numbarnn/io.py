"""Checkpoints without pickle: a model's architecture and weights and an optimizer's state.

Two formats, chosen by the file name's suffix:

``.npz``
    NumPy's zip of ``.npy`` arrays, read back with ``allow_pickle=False``; the description
    (JSON) is the 0-d unicode array ``__numbarnn__``, its checksum ``__numbarnn_sha256__``.
``.safetensors``
    `safetensors <https://github.com/huggingface/safetensors>`_, read and written here with
    NumPy alone: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
    ``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
    "__metadata__": {str: str}}``, then the raw little-endian bytes. The description is
    ``__metadata__["numbarnn"]``, its checksum ``__metadata__["numbarnn.sha256"]``. Files
    are byte-identical to those of the ``safetensors`` package for the same tensors and
    metadata.

Arrays are stored as ``model.<name>`` (the model's ``state_dict``, PyTorch's names) and
``optimizer.<name>`` (the optimizer's ``state_dict``; python scalars as 0-d arrays, given
back as python scalars). The description holds the architecture
(:func:`numbarnn.modules.get_config`), the state of the dropout generators, the optimizer's
key order and scalar types, and the caller's metadata. The checksum, a sha256 of the
description and of every array's name, dtype, shape and bytes, catches a file changed after
it was written (safetensors itself has no checksum; the zip's CRC-32 covers data only).

Writes are atomic: the file is written to a temporary file in the same directory, flushed
and fsynced, then renamed over the destination, so a crash leaves the old file intact.
Loading runs no code from the file: no pickle, JSON only, and the architecture can name only
numbarnn's own classes. A file that is truncated, tampered with or made for another
architecture raises a ValueError naming the file and the problem.

A file without the description (a plain state dict, e.g. ``np.savez(path, **state_dict)``
of a converted PyTorch ``state_dict``, or a ``.safetensors`` file from PyTorch) loads into a
model you pass as ``model=``.
"""

import collections
import contextlib
import hashlib
import json
import math
import os
import secrets
import struct
import zipfile
import zlib

import numpy as np

from .modules import Sequential, _config, from_config

FORMAT = "numbarnn.checkpoint"
VERSION = 1
_NPZ_KEY = "__numbarnn__"  # the description's array in an .npz
_NPZ_DIGEST = "__numbarnn_sha256__"  # ... and the checksum's
_ST_KEY = "numbarnn"  # the description's key in a .safetensors "__metadata__"
_ST_DIGEST = "numbarnn.sha256"  # ... and the checksum's
_MAX_HEADER = 100_000_000  # bytes; the safetensors package's own limit

# safetensors dtypes NumPy has, in the package's enum order (which fixes the tensor order).
_ST_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
}
_ST_RANK = {name: rank for rank, name in enumerate(_ST_DTYPES)}
_ST_NAMES = {(dt.kind, dt.itemsize): name for name, dt in _ST_DTYPES.items()}
_SCALAR_TYPES = {"bool": bool, "int": int, "float": float}


# ---------------------------------------------------------------------- public API


def save(path, model, optimizer=None, metadata=None):
    """Save a model's architecture and weights (and an optimizer's state) to one file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.npz`` or ``.safetensors``; replaced if it exists.
    model : RNN, LSTM, GRU, Linear, LastStep or Sequential
        Its architecture, weights and dropout generator states are saved.
    optimizer : object with ``state_dict()``, or dict, optional
        A flat dict name -> NumPy array or python scalar (bool, int, float).
    metadata : JSON-serializable, optional
        Anything of yours (epoch, losses, ...), given back by :func:`load_checkpoint`.

    Raises
    ------
    ValueError
        For an unknown suffix or a state that cannot be stored.
    TypeError
        For a model that cannot be described, or values of the wrong type.
    """
    path, fmt = _check_path(path)
    description = {
        "format": FORMAT,
        "version": VERSION,
        "model": _config(model, "model"),
        "rng": _generator_states(model),
        "optimizer": None,
        "metadata": metadata,
    }
    tensors = {f"model.{k}": np.asarray(v) for k, v in model.state_dict().items()}
    if optimizer is not None:
        state = optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer
        if not isinstance(state, dict):
            raise TypeError(
                "optimizer: expected an optimizer with state_dict() or a dict, "
                f"got {type(optimizer).__name__}"
            )
        scalars = {}
        for key, value in state.items():
            tensors[f"optimizer.{key}"], kind = _optimizer_value(key, value)
            if kind is not None:
                scalars[key] = kind
        description["optimizer"] = {"keys": list(state), "scalars": scalars}
    try:
        text = json.dumps(description)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata: expected JSON-serializable data ({exc})") from None
    digest = _digest(text, tensors)
    if fmt == "npz":
        extra = {_NPZ_KEY: np.array(text), _NPZ_DIGEST: np.array(digest)}
        _atomic_write(path, lambda f: _write_npz(f, dict(extra, **tensors)))
    else:
        metadata = {_ST_KEY: text, _ST_DIGEST: digest}
        _atomic_write(path, lambda f: _write_safetensors(f, tensors, metadata))


def load(path, model=None, *, backend="cpu"):
    """Load a model saved by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` or ``.safetensors`` file.
    model : module, optional
        Load the weights into this model (in place) instead of building one from the
        stored architecture; the only way to load a file without numbarnn's description
        (a plain state dict).
    backend : {'cpu', 'cuda', 'auto'}, keyword-only, default 'cpu'
        Backend of the model built from the file.

    Returns
    -------
    model
        In training mode, with the saved weights and dropout generator states.

    Raises
    ------
    ValueError
        When the file is truncated, tampered with, not a checkpoint, or does not fit
        ``model``; the message names the file.
    """
    return load_checkpoint(path, model, backend=backend)[0]


def load_checkpoint(path, model=None, *, backend="cpu"):
    """Load a model, the optimizer state and the metadata saved by :func:`save`.

    Parameters are those of :func:`load`.

    Returns
    -------
    model
        As :func:`load` returns it.
    optimizer_state : dict or None
        name -> NumPy array or python scalar, in the saved order, for the optimizer's
        ``load_state_dict``; None when no optimizer was saved.
    metadata
        What was passed to :func:`save` (None for a plain state dict file).
    """
    path, fmt = _check_path(path)
    tensors, text, digest = _read_npz(path) if fmt == "npz" else _read_safetensors(path)
    if text is None:
        if model is None:
            raise ValueError(
                f"{path}: no numbarnn architecture in the file (a plain state dict?); "
                "pass model= to load its weights into a model you built"
            )
        _check_weights(path, model, tensors)
        model.load_state_dict(tensors)
        return model, None, None
    description = _parse_description(path, text)
    computed = _digest(text, tensors)
    if digest != computed:
        raise ValueError(
            f"{path}: checksum mismatch: the file was changed after it was written "
            f"(stored sha256 {str(digest)[:16]}..., computed {computed[:16]}...)"
        )
    prefixes = ("model.",) if description["optimizer"] is None else ("model.", "optimizer.")
    stray = sorted(k for k in tensors if not k.startswith(prefixes))
    if stray:
        raise ValueError(f"{path}: unexpected arrays in the file: {stray}")
    optimizer_state = _optimizer_state(path, description["optimizer"], tensors)
    generators = _generators(path, description["rng"])
    if model is None:
        try:
            model = from_config(description["model"], backend=backend)
        except ValueError as exc:
            raise ValueError(f"{path}: bad architecture: {exc}") from None
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    _check_weights(path, model, weights)
    modules = dict(_modules(model))
    for where in generators:
        if not hasattr(modules.get(where), "dropout_rng"):
            raise ValueError(
                f"{path}: rng: the model ({type(model).__name__}) has no dropout generator "
                f"at {where!r}"
            )
    model.load_state_dict(weights)  # everything checked: nothing fails half-way
    for where, rng in generators.items():
        modules[where].dropout_rng = rng
    return model, optimizer_state, description["metadata"]


# ---------------------------------------------------------------------- saving


def _check_path(path):
    try:
        path = os.fsdecode(path)
    except TypeError:
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}") from None
    lower = path.lower()
    for suffix, fmt in ((".npz", "npz"), (".safetensors", "safetensors")):
        if lower.endswith(suffix):
            return path, fmt
    raise ValueError(f"path: expected a name ending in .npz or .safetensors, got {path!r}")


def _optimizer_value(key, value):
    """(array, scalar kind or None) for one optimizer state entry."""
    if not isinstance(key, str):
        raise TypeError(f"optimizer: state_dict keys must be str, got {key!r}")
    if isinstance(value, (bool, np.bool_)):
        return np.asarray(value, dtype=np.bool_), "bool"
    if isinstance(value, (int, np.integer)):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"optimizer: state_dict[{key!r}] = {value} does not fit in int64")
        return np.asarray(value, dtype=np.int64), "int"
    if isinstance(value, (float, np.floating)):
        return np.asarray(value, dtype=np.float64), "float"
    if hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):
        value = value.get()  # a CuPy array
    if isinstance(value, np.ndarray) and (value.dtype.kind, value.dtype.itemsize) in _ST_NAMES:
        return value, None
    raise TypeError(
        f"optimizer: state_dict[{key!r}]: expected a numeric array or a python scalar, "
        f"got {type(value).__name__}{' of ' + str(value.dtype) if hasattr(value, 'dtype') else ''}"
    )


def _generator_states(model):
    """{module path: bit generator state} of every dropout generator in ``model``."""
    states = {}
    for where, module in _modules(model):
        rng = getattr(module, "dropout_rng", None)
        if rng is None:
            continue
        state = rng.bit_generator.state
        if state.get("bit_generator") != "PCG64":
            raise TypeError(
                f"model: dropout_rng of module {where!r} uses {state.get('bit_generator')}; "
                "only PCG64 (numpy.random.default_rng) can be saved"
            )
        states[where] = state
    return states


def _modules(model, where=""):
    """(path, module) for ``model`` and, recursively, the layers of a Sequential."""
    yield where, model
    if isinstance(model, Sequential):
        for i, layer in enumerate(model.layers):
            yield from _modules(layer, f"{where}.{i}" if where else str(i))


def _atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, rename it to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _digest(text, tensors):
    """sha256 (hex) of the description and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(text.encode("utf-8"))
    for name in sorted(tensors):
        a = tensors[name]
        kind = _ST_NAMES.get((a.dtype.kind, a.dtype.itemsize), str(a.dtype))
        h.update(json.dumps([name, kind, list(a.shape)]).encode("utf-8"))
        h.update(np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C").tobytes())
    return h.hexdigest()


def _write_npz(f, arrays):
    np.savez(f, **arrays)


def _write_safetensors(f, tensors, metadata):
    """Write ``tensors`` (name -> array) and ``metadata`` (str -> str) in safetensors layout."""
    arrays = {}
    for name, a in tensors.items():
        kind = _ST_NAMES.get((a.dtype.kind, a.dtype.itemsize))
        if kind is None:
            raise ValueError(f"{name}: dtype {a.dtype} cannot be stored in safetensors")
        arrays[name] = (kind, np.asarray(a, dtype=_ST_DTYPES[kind], order="C"))
    order = sorted(arrays, key=lambda n: (-_ST_RANK[arrays[n][0]], n))
    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name in order:
        kind, a = arrays[name]
        end = offset + a.nbytes
        header[name] = {"dtype": kind, "shape": list(a.shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for name in order:
        f.write(arrays[name][1].tobytes())


# ---------------------------------------------------------------------- loading


def _read_npz(path):
    """(tensors, description text or None, checksum or None) of an .npz file, without pickle."""
    with open(path, "rb") as f:  # errors opening the file are the caller's to see as they are
        try:
            archive = np.load(f, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with archive:
                arrays = {name: archive[name] for name in archive.files}
        except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error, MemoryError,
                NotImplementedError) as exc:
            raise ValueError(
                f"{path}: not a readable .npz checkpoint (truncated or tampered?): {exc}"
            ) from None
    text, digest = (arrays.pop(key, None) for key in (_NPZ_KEY, _NPZ_DIGEST))
    for key, value in ((_NPZ_KEY, text), (_NPZ_DIGEST, digest)):
        if value is not None and (value.dtype.kind != "U" or value.ndim != 0):
            raise ValueError(
                f"{path}: {key} must be a 0-d unicode array, got {value.dtype} {value.shape}"
            )
    return arrays, None if text is None else str(text), None if digest is None else str(digest)


def _read_safetensors(path):
    """(tensors, description text or None, checksum or None) of a .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(
            f"{path}: truncated: {len(data)} bytes, shorter than the 8-byte header length"
        )
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER:
        raise ValueError(f"{path}: header length {n} exceeds the limit of {_MAX_HEADER} bytes")
    if 8 + n > len(data):
        raise ValueError(
            f"{path}: truncated: the header claims {n} bytes, "
            f"the file has {len(data) - 8} after the length"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: the safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: __metadata__ must map str to str")
    buffer = memoryview(data)[8 + n :]
    spans, tensors = [], {}
    for name, info in header.items():
        dtype, shape, begin, end = _tensor_info(path, name, info)
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected:
            raise ValueError(
                f"{path}: tensor {name!r}: shape {shape} of {dtype} needs {expected} bytes, "
                f"data_offsets span {end - begin}"
            )
        if end > len(buffer):
            raise ValueError(
                f"{path}: tensor {name!r}: data_offsets [{begin}, {end}] beyond the data "
                f"({len(buffer)} bytes): truncated or tampered"
            )
        spans.append((begin, end, name))
        tensors[name] = (dtype, shape, begin, end)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ValueError(
                f"{path}: tensor {name!r} starts at byte {begin}, expected {position}: "
                "the tensors must cover the data without gaps or overlaps"
            )
        position = end
    if position != len(buffer):
        raise ValueError(f"{path}: {len(buffer) - position} bytes after the last tensor")
    arrays = {}
    for name, (dtype, shape, begin, end) in tensors.items():
        stored = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape)
        arrays[name] = stored.astype(dtype.newbyteorder("="))  # a native, writable copy
    return arrays, metadata.get(_ST_KEY), metadata.get(_ST_DIGEST)


def _no_duplicates(pairs):
    counts = collections.Counter(k for k, _ in pairs)
    if len(counts) != len(pairs):
        raise ValueError(f"duplicate keys {sorted(k for k, n in counts.items() if n > 1)}")
    return dict(pairs)


def _tensor_info(path, name, info):
    """(dtype, shape, begin, end) of a safetensors header entry, each checked."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"{path}: tensor {name!r}: expected the keys dtype, shape, data_offsets")
    dtype = _ST_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        raise ValueError(f"{path}: tensor {name!r}: unknown or unsupported dtype {info['dtype']!r}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ValueError(f"{path}: tensor {name!r}: bad shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise ValueError(f"{path}: tensor {name!r}: bad data_offsets {offsets!r}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _is_count(value):
    return type(value) is int and 0 <= value < 2**63


def _parse_description(path, text):
    try:
        description = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: the numbarnn description is not valid JSON: {exc}") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"{path}: not a numbarnn checkpoint (no format {FORMAT!r})")
    if description.get("version") != VERSION:
        raise ValueError(
            f"{path}: checkpoint version {description.get('version')!r}; "
            f"this numbarnn reads version {VERSION}"
        )
    expected = {"format", "version", "model", "rng", "optimizer", "metadata"}
    if set(description) != expected:
        raise ValueError(
            f"{path}: the description has keys {sorted(description)}, expected {sorted(expected)}"
        )
    return description


def _check_weights(path, model, weights):
    """Raise unless ``weights`` has the names and shapes of ``model.params``, in floating point."""
    params = model.params
    problem = None
    missing = [n for n in params if n not in weights]
    unexpected = [n for n in weights if n not in params]
    if missing or unexpected:
        problem = f"missing keys {missing}, unexpected keys {unexpected}"
    else:
        for name, p in params.items():
            w = weights[name]
            if w.shape != tuple(p.shape):
                problem = f"{name!r}: expected shape {tuple(p.shape)}, got {w.shape}"
            elif w.dtype.kind != "f":
                problem = f"{name!r}: expected floating-point values, got {w.dtype}"
            if problem:
                break
    if problem:
        raise ValueError(
            f"{path}: the weights do not fit the model ({type(model).__name__}): {problem}"
        )


def _generators(path, states):
    """{module path: numpy Generator} rebuilt from the saved PCG64 states."""
    if not isinstance(states, dict):
        raise ValueError(f"{path}: rng must be a dict, got {type(states).__name__}")
    generators = {}
    for where, state in states.items():
        rng = np.random.Generator(np.random.PCG64())
        try:
            rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ValueError(f"{path}: rng[{where!r}]: bad generator state: {exc}") from None
        generators[where] = rng
    return generators


def _optimizer_state(path, spec, tensors):
    if spec is None:
        return None
    if (
        not isinstance(spec, dict)
        or set(spec) != {"keys", "scalars"}
        or not isinstance(spec["keys"], list)
        or not isinstance(spec["scalars"], dict)
    ):
        raise ValueError(f"{path}: optimizer: expected {{'keys': [...], 'scalars': {{...}}}}")
    stored = {k[len("optimizer.") :] for k in tensors if k.startswith("optimizer.")}
    if set(spec["keys"]) != stored or len(spec["keys"]) != len(stored):
        raise ValueError(
            f"{path}: optimizer: the listed keys {sorted(map(str, spec['keys']))} differ from the "
            f"stored arrays {sorted(stored)}"
        )
    state = {}
    for key in spec["keys"]:
        value = tensors[f"optimizer.{key}"]
        kind = spec["scalars"].get(key)
        if kind is not None:
            if kind not in _SCALAR_TYPES or value.ndim != 0:
                raise ValueError(f"{path}: optimizer: {key!r} is no {kind!r} scalar")
            value = _SCALAR_TYPES[kind](value.item())
        state[key] = value
    return state
