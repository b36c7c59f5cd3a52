"""Generate the PyTorch golden vectors used by ``tests/test_torch_parity.py``.

Run from the repository root with torch installed::

    python tests/golden/make_golden.py

It writes one compressed ``.npz`` file per cell (``rnn_tanh.npz``, ``rnn_relu.npz``,
``lstm.npz``, ``gru.npz``) next to this script. The output is deterministic: every case
has a fixed seed, from which its sizes, weights, inputs and cotangents are drawn.

What a case holds (names as returned by :func:`load_cases`):

* ``config``: ``mode`` (``rnn_tanh`` | ``rnn_relu`` | ``lstm`` | ``gru``), ``input_size``,
  ``hidden_size``, ``num_layers``, ``bias``, ``batch_first``, ``bidirectional``, ``dtype``
  (``float32`` | ``float64``), ``has_h0`` (initial state passed to the layer, otherwise
  zeros), ``has_dstate`` (final-state cotangents passed to backward, otherwise zeros),
  ``seq_len``, ``batch`` (``None`` for an unbatched case: ``x`` is ``(T, I)`` and the states
  are ``(L*D, H)``), ``seed``;
* the torch ``state_dict`` under torch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``...);
* inputs ``x``, ``h0`` (and ``c0`` for LSTM), always stored (zeros when ``has_h0`` is false);
* cotangents ``dy``, ``dh_n`` (and ``dc_n``), always stored (zeros when ``has_dstate`` is
  false);
* torch's results ``y``, ``h_n`` (``c_n``), ``dx``, ``dh0`` (``dc0``) and every parameter
  gradient as ``grad.<name>``. Gradients are those of
  ``sum(y * dy) + sum(h_n * dh_n) [+ sum(c_n * dc_n)]``; ``dh0``/``dc0`` are computed by
  passing the (possibly zero) initial state as a leaf that requires grad.

Storage layout: to keep the files small (a zip member costs ~200 bytes of headers, a case
has up to ~60 arrays), each case is stored as one flat array ``c<NNN>`` in the case's dtype,
and the file has one JSON string ``index`` that lists, per case, its config and the
``[name, shape, offset]`` of each array in the flat one. :func:`load_cases` undoes this and
needs only NumPy.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODES = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


# --------------------------------------------------------------------------- loading
def load_cases(path):
    """Read one golden file; return a list of ``(config, arrays)``, arrays a name->ndarray dict."""
    with np.load(path, allow_pickle=False) as f:
        index = json.loads(str(f["index"]))
        cases = []
        for entry in index:
            flat = f[entry["key"]]
            arrays = {}
            for name, shape, offset in entry["arrays"]:
                size = int(np.prod(shape, dtype=np.int64))
                arrays[name] = flat[offset : offset + size].reshape(shape).copy()
            cases.append((entry["config"], arrays))
    return cases


def case_id(cfg):
    """A short readable test id for a config."""
    parts = [
        cfg["mode"],
        "f32" if cfg["dtype"] == "float32" else "f64",
        f"L{cfg['num_layers']}",
        "bi" if cfg["bidirectional"] else "uni",
        "bf" if cfg["batch_first"] else "tf",
        "bias" if cfg["bias"] else "nobias",
        "h0" if cfg["has_h0"] else "noh0",
        "dst" if cfg["has_dstate"] else "nodst",
        f"T{cfg['seq_len']}B{cfg['batch'] if cfg['batch'] is not None else 'x'}"
        f"I{cfg['input_size']}H{cfg['hidden_size']}",
        f"s{cfg['seed']}",
    ]
    return "-".join(parts)


# --------------------------------------------------------------------------- drawing
def draw_sizes(rng, num_layers, bidirectional):
    """Small random sizes (2<=T<=4, B<=3, I<=4, 2<=H<=5), smaller H for deep stacks.

    T=1 and H=1 are left to the explicit edge cases: with T=1 and no initial state the
    recurrent weight gradients are zero, and a ReLU stack with H=1 is often dead.
    """
    deep = num_layers * (2 if bidirectional else 1)
    h_max = 5 if deep <= 2 else (4 if deep <= 4 else 3)
    return dict(
        seq_len=int(rng.integers(2, 5)),
        batch=int(rng.integers(1, 4)),
        input_size=int(rng.integers(1, 5)),
        hidden_size=int(rng.integers(2, h_max + 1)),
    )


def make_config(mode, num_layers, bidirectional, batch_first, bias, has_h0, has_dstate,
                dtype, seed, unbatched=False, sizes=None):
    """A full config dict; sizes drawn from ``seed`` unless given."""
    rng = np.random.default_rng([seed, 1])
    cfg = dict(
        mode=mode, num_layers=int(num_layers), bidirectional=bool(bidirectional),
        batch_first=bool(batch_first), bias=bool(bias), has_h0=bool(has_h0),
        has_dstate=bool(has_dstate), dtype=str(np.dtype(dtype)), seed=int(seed),
    )
    cfg.update(draw_sizes(rng, num_layers, bidirectional) if sizes is None else sizes)
    if unbatched:
        cfg["batch"] = None
    return cfg


def draw_inputs(cfg):
    """Random x, initial states and cotangents for ``cfg`` (deterministic in its seed)."""
    rng = np.random.default_rng([cfg["seed"], 2])
    dt = np.dtype(cfg["dtype"])
    T, B, I, H = cfg["seq_len"], cfg["batch"], cfg["input_size"], cfg["hidden_size"]
    D = 2 if cfg["bidirectional"] else 1
    LD = cfg["num_layers"] * D
    if B is None:
        x_shape, s_shape, y_shape = (T, I), (LD, H), (T, D * H)
    elif cfg["batch_first"]:
        x_shape, s_shape, y_shape = (B, T, I), (LD, B, H), (B, T, D * H)
    else:
        x_shape, s_shape, y_shape = (T, B, I), (LD, B, H), (T, B, D * H)
    lstm = cfg["mode"] == "lstm"

    def normal(shape):
        return rng.standard_normal(shape).astype(dt)

    def state():
        return normal(s_shape) if cfg["has_h0"] else np.zeros(s_shape, dt)

    def dstate():
        return normal(s_shape) if cfg["has_dstate"] else np.zeros(s_shape, dt)

    out = {"x": normal(x_shape), "h0": state()}
    if lstm:
        out["c0"] = state()
    out["dy"] = normal(y_shape)
    out["dh_n"] = dstate()
    if lstm:
        out["dc_n"] = dstate()
    return out


# --------------------------------------------------------------------------- torch oracle
def torch_module(cfg):
    """The torch module for ``cfg``, initialised from the config's seed."""
    import torch

    dt = {"float32": torch.float32, "float64": torch.float64}[cfg["dtype"]]
    kw = dict(
        input_size=cfg["input_size"], hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_layers"], bias=cfg["bias"], batch_first=cfg["batch_first"],
        bidirectional=cfg["bidirectional"], dtype=dt,
    )
    torch.manual_seed(cfg["seed"])
    mode = cfg["mode"]
    if mode == "lstm":
        return torch.nn.LSTM(**kw)
    if mode == "gru":
        return torch.nn.GRU(**kw)
    return torch.nn.RNN(nonlinearity=mode[4:], **kw)


def torch_reference(cfg, inputs, state_dict=None):
    """Run torch forward and backward; return weights and results as numpy arrays.

    ``inputs`` is the dict made by :func:`draw_inputs` (arrays of the config's dtype).
    The weights are torch's initialisation under the config's seed, or ``state_dict``
    (name -> array, cast to the config's dtype) when given. Returned: the state_dict
    under torch's names, ``y``, ``h_n`` (``c_n``), ``dx``, ``dh0`` (``dc0``) and
    ``grad.<name>``.
    """
    import torch

    m = torch_module(cfg)
    if state_dict is not None:
        m.load_state_dict({
            k: torch.from_numpy(np.asarray(v, dtype=np.dtype(cfg["dtype"])).copy())
            for k, v in state_dict.items()
        })
    m.train()
    lstm = cfg["mode"] == "lstm"
    x = torch.from_numpy(inputs["x"].copy()).requires_grad_(True)
    h0 = torch.from_numpy(inputs["h0"].copy()).requires_grad_(True)
    if lstm:
        c0 = torch.from_numpy(inputs["c0"].copy()).requires_grad_(True)
        y, (h_n, c_n) = m(x, (h0, c0))
        outs = [y, h_n, c_n]
        cots = [inputs["dy"], inputs["dh_n"], inputs["dc_n"]]
        leaves = [x, h0, c0]
    else:
        y, h_n = m(x, h0)
        outs = [y, h_n]
        cots = [inputs["dy"], inputs["dh_n"]]
        leaves = [x, h0]
    names = [n for n, _ in m.named_parameters()]
    params = [p for _, p in m.named_parameters()]
    grads = torch.autograd.grad(
        outs, leaves + params, grad_outputs=[torch.from_numpy(c.copy()) for c in cots],
    )

    def np_(t):
        return t.detach().numpy().copy()

    res = {n: np_(p) for n, p in m.state_dict().items()}
    res["y"], res["h_n"] = np_(y), np_(h_n)
    res["dx"], res["dh0"] = np_(grads[0]), np_(grads[1])
    if lstm:
        res["c_n"], res["dc0"] = np_(c_n), np_(grads[2])
    for n, g in zip(names, grads[len(leaves):]):
        res["grad." + n] = np_(g)
    return res


def make_case(cfg):
    """Inputs and torch results of one config, as one name->array dict."""
    inputs = draw_inputs(cfg)
    arrays = dict(inputs)
    arrays.update(torch_reference(cfg, inputs))
    return arrays


def degenerate(cfg, arrays):
    """Names of result arrays that are all zero though they need not be.

    A test that compares zeros with zeros checks little (a dead ReLU stack, say); such
    draws are rejected. Recurrent weight gradients with T=1 and a zero initial state are
    zero by construction and allowed.
    """
    structural_zero = cfg["seq_len"] == 1 and not cfg["has_h0"]
    bad = []
    for name, a in arrays.items():
        if name in ("x", "h0", "c0", "dy", "dh_n", "dc_n"):
            continue
        if name.startswith("weight_") or name.startswith("bias_"):
            continue
        if structural_zero and name.startswith("grad.weight_hh"):
            continue
        if a.size and not np.any(a):
            bad.append(name)
    return bad


def make_nondegenerate_case(cfg, tries=500):
    """:func:`make_case`, moving to the next seed (same options and sizes) while degenerate."""
    cfg = dict(cfg)
    for _ in range(tries):
        arrays = make_case(cfg)
        if not degenerate(cfg, arrays):
            return cfg, arrays
        cfg["seed"] += 100_000
    raise RuntimeError(f"no non-degenerate draw for {cfg}")


# --------------------------------------------------------------------------- case list
# A covering subset for float32: every option value appears with every mode (8 rows).
# (num_layers, bidirectional, batch_first, bias, has_h0, has_dstate)
F32_ROWS = [
    (1, False, False, True, True, True),
    (1, True, True, False, False, True),
    (2, False, True, True, False, False),
    (2, True, False, False, True, True),
    (3, False, False, False, True, True),
    (3, True, True, True, True, False),
    (2, True, True, True, False, True),
    (1, False, False, True, False, True),
]


def all_configs():
    """The golden configs: float64 full cross product, float32 covering rows, unbatched."""
    cfgs = []
    seed = 1000
    # float64: mode x layers x bidirectional x bias x has_h0 (96); batch_first alternates so
    # that both values meet every (mode, layers, bidirectional, bias); has_dstate is False
    # in every third case.
    for mode in MODES:
        for k, (L, bi, bias, h0) in enumerate(
            itertools.product((1, 2, 3), (False, True), (True, False), (True, False))
        ):
            bf = bool(k % 2) != bool(k // 4 % 2)
            dst = k % 3 != 2
            cfgs.append(make_config(mode, L, bi, bf, bias, h0, dst, "float64", seed))
            seed += 1
    for mode in MODES:
        for L, bi, bf, bias, h0, dst in F32_ROWS:
            cfgs.append(make_config(mode, L, bi, bf, bias, h0, dst, "float32", seed))
            seed += 1
    # Edge sizes: T=1, B=1, H=1, I=1 (float64), one per mode, half without initial state.
    for mode in MODES:
        sizes = dict(seq_len=1, batch=1, input_size=1, hidden_size=1)
        h0 = mode in ("rnn_tanh", "lstm")
        cfgs.append(make_config(mode, 2, True, False, True, h0, True, "float64", seed,
                                sizes=sizes))
        seed += 1
    # Unbatched: x (T, I), states (L*D, H).
    unb = [
        ("lstm", 2, True, False, True, True, True, "float64"),
        ("gru", 1, False, True, True, False, True, "float32"),
        ("rnn_relu", 2, False, False, False, True, False, "float64"),
        ("rnn_tanh", 1, True, False, True, True, True, "float32"),
    ]
    for mode, L, bi, bf, bias, h0, dst, dt in unb:
        cfgs.append(make_config(mode, L, bi, bf, bias, h0, dst, dt, seed, unbatched=True))
        seed += 1
    return cfgs


def write_file(path, cases):
    """Store ``[(config, arrays)]`` in the packed layout described in the module docstring."""
    index, members = [], {}
    for n, (cfg, arrays) in enumerate(cases):
        key = f"c{n:03d}"
        dt = np.dtype(cfg["dtype"])
        layout, chunks, offset = [], [], 0
        for name in sorted(arrays):
            a = np.asarray(arrays[name])
            assert a.dtype == dt, (name, a.dtype, dt)
            layout.append([name, list(a.shape), offset])
            chunks.append(a.ravel())
            offset += a.size
        members[key] = np.concatenate(chunks)
        index.append({"key": key, "config": cfg, "arrays": layout})
    members["index"] = np.array(json.dumps(index, separators=(",", ":")))
    np.savez_compressed(path, **members)


def main():
    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    by_mode = {m: [] for m in MODES}
    for cfg in all_configs():
        by_mode[cfg["mode"]].append(make_nondegenerate_case(cfg))
    total = 0
    for mode, cases in by_mode.items():
        path = HERE / f"{mode}.npz"
        write_file(path, cases)
        size = os.path.getsize(path)
        total += size
        print(f"{path.name}: {len(cases)} cases, {size / 1024:.1f} KiB")
    print(f"total: {total / 1024:.1f} KiB (torch {torch.__version__})")


if __name__ == "__main__":
    main()
