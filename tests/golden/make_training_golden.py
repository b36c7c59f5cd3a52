"""Generate the PyTorch training trajectories used by ``tests/test_training_parity.py``.

Run from the repository root with torch installed::

    python tests/golden/make_training_golden.py

It writes ``training_golden.npz`` next to this script. A run trains a recurrent layer with
a linear head on its last time step (:data:`CELLS`) on fixed random data with the MSE loss
for :data:`STEPS` steps of an optimizer (:data:`OPTIMIZERS`), clipping the gradients'
global norm to :data:`MAX_NORM` before every step::

    opt.zero_grad(); out = head(rnn(x)[0][-1]); loss = mse(out, y); loss.backward()
    norm = clip_grad_norm_(params, MAX_NORM); opt.step()

Every run starts from torch's default initialisation under :data:`SEED` (drawn in float64;
the float32 runs start from the same values rounded). ``torch_train`` below is also the
live oracle of the test (torch is imported inside the functions only).

Contents (as returned by :func:`load_golden`): per cell, ``data[cell]`` = ``x`` (T, B, I)
and ``y`` (B, O) in float64 and ``init`` (name -> float64 array, torch's parameter names
``rnn.weight_ih_l0``... ``head.weight``, ``head.bias``); per (cell, optimizer, dtype),
``runs[(cell, opt, dtype)]`` = ``losses`` (STEPS,), ``norms`` (STEPS,) (the total norms
before clipping), ``final`` (name -> array of the dtype).
"""

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 7
STEPS = 20
MAX_NORM = 0.25
SIZES = dict(seq_len=6, batch=4, input_size=3, hidden_size=5, output_size=2)
CELLS = {  # name -> (torch class name, constructor keywords)
    "lstm2": ("LSTM", {"num_layers": 2}),
    "gru_bi": ("GRU", {"num_layers": 1, "bidirectional": True}),
}
OPTIMIZERS = {  # name -> (optimizer class name, keywords): the same in torch and numbarnn
    "sgd_momentum": ("SGD", {"lr": 0.1, "momentum": 0.9}),
    "adam": ("Adam", {"lr": 0.01}),
}
DTYPES = ("float32", "float64")


def draw_data(seed):
    """x (T, B, I) and y (B, O), float64."""
    rng = np.random.default_rng([seed, 3])
    s = SIZES
    x = rng.standard_normal((s["seq_len"], s["batch"], s["input_size"]))
    y = rng.standard_normal((s["batch"], s["output_size"]))
    return x, y


def _torch_dtype(dtype):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def torch_model(cell, dtype="float64", seed=SEED):
    """The torch model of ``cell`` (a ``ModuleDict`` with ``rnn`` and ``head``)."""
    import torch

    name, kwargs = CELLS[cell]
    s = SIZES
    torch.manual_seed(seed)
    rnn = getattr(torch.nn, name)(s["input_size"], s["hidden_size"], dtype=torch.float64,
                                  **kwargs)
    directions = 2 if kwargs.get("bidirectional") else 1
    head = torch.nn.Linear(directions * s["hidden_size"], s["output_size"],
                           dtype=torch.float64)
    return torch.nn.ModuleDict({"rnn": rnn, "head": head}).to(_torch_dtype(dtype))


def torch_initial_weights(cell, seed=SEED):
    """torch's default initialisation of ``cell`` under ``seed``: name -> float64 array."""
    model = torch_model(cell, seed=seed)
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters()}


def torch_train(cell, opt_name, dtype, weights, x, y, steps=STEPS, max_norm=MAX_NORM):
    """Train torch's model of ``cell`` from ``weights`` on (x, y); see the module notes.

    Returns
    -------
    dict
        ``losses`` and ``norms`` (float64 arrays of ``steps``), ``final`` (name -> array).
    """
    import torch

    model = torch_model(cell, dtype)
    dt = _torch_dtype(dtype)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(torch.from_numpy(weights[n]).to(dt))
    cls, kwargs = OPTIMIZERS[opt_name]
    opt = getattr(torch.optim, cls)(model.parameters(), foreach=False, **kwargs)
    xt = torch.from_numpy(x).to(dt)
    yt = torch.from_numpy(y).to(dt)
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad()
        out = model["head"](model["rnn"](xt)[0][-1])
        loss = torch.nn.functional.mse_loss(out, yt)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)))
        opt.step()
        losses.append(loss.item())
    final = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    return {"losses": np.array(losses), "norms": np.array(norms), "final": final}


# --------------------------------------------------------------------------- storage
def _pack(arrays):
    names = sorted(arrays)
    layout, offset = [], 0
    for n in names:
        layout.append([n, list(arrays[n].shape), offset])
        offset += arrays[n].size
    return layout, np.concatenate([arrays[n].ravel() for n in names])


def _unpack(flat, layout):
    return {
        n: flat[off : off + int(np.prod(shape, dtype=np.int64))].reshape(shape).copy()
        for n, shape, off in layout
    }


def load_golden(path=HERE / "training_golden.npz"):
    """Read the golden file: ``(settings, data, runs)`` as described in the module notes."""
    with np.load(path, allow_pickle=False) as f:
        index = json.loads(str(f["index"]))
        data = {}
        for cell in index["cells"]:
            data[cell] = {
                "x": f[f"x.{cell}"], "y": f[f"y.{cell}"],
                "init": _unpack(f[f"init.{cell}"], index["layout"][cell]),
            }
        runs = {}
        for cell, opt, dtype in index["runs"]:
            key = f"{cell}.{opt}.{dtype}"
            runs[(cell, opt, dtype)] = {
                "losses": f[f"losses.{key}"], "norms": f[f"norms.{key}"],
                "final": _unpack(f[f"final.{key}"], index["layout"][cell]),
            }
    return index["settings"], data, runs


def main():
    import torch

    torch.set_num_threads(1)
    members = {}
    index = {
        "settings": {"seed": SEED, "steps": STEPS, "max_norm": MAX_NORM, "sizes": SIZES,
                     "cells": CELLS, "optimizers": OPTIMIZERS},
        "cells": list(CELLS), "layout": {}, "runs": [],
    }
    x, y = draw_data(SEED)
    for cell in CELLS:
        init = torch_initial_weights(cell)
        index["layout"][cell], members[f"init.{cell}"] = _pack(init)
        members[f"x.{cell}"], members[f"y.{cell}"] = x, y
        for opt in OPTIMIZERS:
            for dtype in DTYPES:
                run = torch_train(cell, opt, dtype, init, x, y)
                key = f"{cell}.{opt}.{dtype}"
                members[f"losses.{key}"] = run["losses"]
                members[f"norms.{key}"] = run["norms"]
                _, members[f"final.{key}"] = _pack(run["final"])
                index["runs"].append([cell, opt, dtype])
                clipped = int(np.sum(run["norms"] > MAX_NORM))
                print(f"{key}: loss {run['losses'][0]:.4f} -> {run['losses'][-1]:.4f}, "
                      f"clipped {clipped}/{STEPS} steps")
    members["index"] = np.array(json.dumps(index, separators=(",", ":")))
    path = HERE / "training_golden.npz"
    np.savez_compressed(path, **members)
    print(f"{path.name}: {path.stat().st_size / 1024:.1f} KiB (torch {torch.__version__})")


if __name__ == "__main__":
    main()
