"""Generate the PyTorch golden vectors of variable-length batches (``tests/test_lengths.py``).

Run from the repository root with torch installed::

    python tests/golden/make_lengths_golden.py

It writes ``lengths_golden.npz`` next to this script: for every cell, padded batches whose
sequences have different lengths, in no particular order, run by torch through
``pack_padded_sequence(x, lengths, enforce_sorted=False)`` and ``pad_packed_sequence(...,
total_length=T)`` (which pads the output with zeros). The output is deterministic: every
case has a fixed seed, from which its sizes, lengths, weights, inputs and cotangents are
drawn.

A case is a config of ``make_golden.py`` (same keys, ``batch`` never None) plus
``lengths`` (a list of B ints in [1, T]); its arrays are those of ``make_golden.py``:
inputs ``x``, ``h0`` (``c0``), cotangents ``dy``, ``dh_n`` (``dc_n``), torch's state_dict,
and torch's results ``y``, ``h_n`` (``c_n``), ``dx``, ``dh0`` (``dc0``), ``grad.<name>``,
the gradients of ``sum(y * dy) + sum(h_n * dh_n) [+ sum(c_n * dc_n)]``. ``dy`` is random
at the padded steps too: torch's padded outputs are constants, so it must be ignored
there. The file layout and :func:`load_cases` are ``make_golden.py``'s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_golden  # noqa: E402  (this directory; numpy only at import)

sys.path.remove(str(HERE))

PATH = HERE / "lengths_golden.npz"
load_cases = make_golden.load_cases

# (num_layers, bidirectional, batch_first, bias, has_h0, has_dstate, dtype)
ROWS = [
    (1, False, False, True, True, True, "float64"),
    (1, True, True, True, False, True, "float64"),
    (2, True, False, False, True, True, "float64"),
    (2, False, True, True, True, False, "float64"),
    (3, True, False, True, False, True, "float64"),
    (1, True, False, True, True, True, "float32"),
    (2, True, True, True, True, True, "float32"),
    (2, False, False, False, False, True, "float32"),
]


def draw_lengths(seed, T, B, all_padded):
    """B >= 2 lengths in [1, T], with a 1 and (unless ``all_padded``) a T, in an order
    that is not decreasing (which packing with ``enforce_sorted=True`` would need)."""
    rng = np.random.default_rng([seed, 3])
    top = T - 1 if all_padded else T
    lengths = rng.integers(1, top + 1, B)
    slots = rng.permutation(B)
    lengths[slots[0]] = 1
    lengths[slots[1]] = top
    if np.all(np.diff(lengths) <= 0):
        lengths = lengths[::-1]
    return [int(v) for v in lengths]


def make_config(mode, row, seed, all_padded=False):
    """A config of ``make_golden.make_config`` with T >= 3, B >= 2 and ``lengths``."""
    L, bi, bf, bias, h0, dst, dtype = row
    rng = np.random.default_rng([seed, 1])
    sizes = dict(
        seq_len=int(rng.integers(3, 6)), batch=int(rng.integers(2, 5)),
        input_size=int(rng.integers(1, 4)), hidden_size=int(rng.integers(2, 5)),
    )
    cfg = make_golden.make_config(mode, L, bi, bf, bias, h0, dst, dtype, seed, sizes=sizes)
    cfg["lengths"] = draw_lengths(seed, sizes["seq_len"], sizes["batch"], all_padded)
    return cfg


def case_id(cfg):
    return make_golden.case_id(cfg) + "-len" + "_".join(map(str, cfg["lengths"]))


def torch_reference(cfg, inputs, state_dict=None):
    """torch's packed-sequence forward and backward; results as ``make_golden.torch_reference``."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    m = make_golden.torch_module(cfg)
    if state_dict is not None:
        m.load_state_dict({
            k: torch.from_numpy(np.asarray(v, dtype=np.dtype(cfg["dtype"])).copy())
            for k, v in state_dict.items()
        })
    m.train()
    lstm = cfg["mode"] == "lstm"
    bf = cfg["batch_first"]
    x = torch.from_numpy(inputs["x"].copy()).requires_grad_(True)
    h0 = torch.from_numpy(inputs["h0"].copy()).requires_grad_(True)
    leaves = [x, h0]
    packed = pack_padded_sequence(
        x, torch.tensor(cfg["lengths"], dtype=torch.int64), batch_first=bf, enforce_sorted=False
    )
    if lstm:
        c0 = torch.from_numpy(inputs["c0"].copy()).requires_grad_(True)
        leaves.append(c0)
        out, (h_n, c_n) = m(packed, (h0, c0))
    else:
        out, h_n = m(packed, h0)
    y, _ = pad_packed_sequence(out, batch_first=bf, total_length=cfg["seq_len"])
    outs = [y, h_n] + ([c_n] if lstm else [])
    cots = [inputs["dy"], inputs["dh_n"]] + ([inputs["dc_n"]] if lstm else [])
    names = [n for n, _ in m.named_parameters()]
    params = [p for _, p in m.named_parameters()]
    grads = torch.autograd.grad(
        outs, leaves + params, grad_outputs=[torch.from_numpy(c.copy()) for c in cots]
    )

    def np_(t):
        return t.detach().numpy().copy()

    res = {n: np_(p) for n, p in m.state_dict().items()}
    res["y"], res["h_n"], res["dx"], res["dh0"] = np_(y), np_(h_n), np_(grads[0]), np_(grads[1])
    if lstm:
        res["c_n"], res["dc0"] = np_(c_n), np_(grads[2])
    for n, g in zip(names, grads[len(leaves):]):
        res["grad." + n] = np_(g)
    return res


def all_configs():
    cfgs = []
    seed = 5000
    for mode in make_golden.MODES:
        for k, row in enumerate(ROWS):
            cfgs.append(make_config(mode, row, seed, all_padded=k % 4 == 3))
            seed += 1
    return cfgs


def make_nondegenerate_case(cfg, tries=500):
    """Inputs and torch results, moving to the next seed (same options) while degenerate."""
    cfg = dict(cfg)
    for _ in range(tries):
        inputs = make_golden.draw_inputs(cfg)
        arrays = dict(inputs)
        arrays.update(torch_reference(cfg, inputs))
        if not make_golden.degenerate(cfg, arrays):
            return cfg, arrays
        cfg = make_config(cfg["mode"], tuple(cfg[k] for k in (
            "num_layers", "bidirectional", "batch_first", "bias", "has_h0", "has_dstate",
            "dtype")), cfg["seed"] + 100_000, all_padded=max(cfg["lengths"]) < cfg["seq_len"])
    raise RuntimeError(f"no non-degenerate draw for {cfg}")


def main():
    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    cases = [make_nondegenerate_case(cfg) for cfg in all_configs()]
    make_golden.write_file(PATH, cases)
    print(f"{PATH.name}: {len(cases)} cases, {os.path.getsize(PATH) / 1024:.1f} KiB "
          f"(torch {torch.__version__})")


if __name__ == "__main__":
    main()
