"""Generate the ``torch.optim`` golden vectors used by ``tests/test_optim.py``.

Run from the repository root with torch installed::

    python tests/golden/make_optim_golden.py

It writes ``optim_golden.npz`` next to this script. Everything is drawn from fixed seeds.
The functions ``torch_*`` below are also the live oracle of the tests (torch is imported
inside them only, so the module imports with NumPy alone).

Contents (names as returned by :func:`load_golden`):

* ``optim``: one entry per (case in :data:`OPTIM_CASES`, dtype): ``name``, ``kwargs``,
  ``dtype``, and arrays ``p0`` (the initial parameters, a dict name -> array),
  ``grads`` (a list of :data:`STEPS` dicts, the gradient given before each step) and
  ``traj`` (a list of :data:`STEPS` dicts, torch's parameters after each step);
* ``clip``: one entry per (case in :data:`CLIP_CASES`, dtype): ``max_norm``,
  ``norm_type``, ``dtype``, arrays ``grads`` (before), ``clipped`` (after) and the
  returned ``total`` norm;
* ``sched``: one entry per case in :data:`SCHED_CASES`: ``name``, ``kwargs``, ``lr`` (the
  optimizer's initial learning rate) and ``lrs``, torch's ``get_last_lr()[0]`` after each
  of ``epochs`` calls of ``step()``.

Storage: every array of an entry is flattened into one member ``<kind><NN>`` of the entry's
dtype; the JSON string ``index`` lists each entry's settings and ``[name, shape, offset]``
of its arrays (gradients and trajectories as ``grads.<step>.<param>``, ``traj.<step>.<param>``).
"""

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STEPS = 5
# Gradient scale per step: shrinking then growing gradients make AMSGrad's maximum and
# momentum buffers matter.
GRAD_SCALES = (1.0, 0.1, 2.0, 0.05, 0.5)
SHAPES = {"weight": (3, 4), "bias": (4,)}
DTYPES = ("float64", "float32")

OPTIM_CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.05}),
    ("SGD", {"lr": 0.1, "momentum": 0.8, "nesterov": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.7, "nesterov": True, "weight_decay": 0.1}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    # beta1 <= 0.5 takes the other branch of torch's lerp
    ("Adam", {"lr": 0.02, "betas": (0.3, 0.6), "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "centered": True}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.3, "eps": 1e-4, "weight_decay": 0.1,
                 "momentum": 0.5, "centered": True}),
]

CLIP_CASES = [  # (max_norm, norm_type)
    (0.5, 2.0),
    (100.0, 2.0),  # no clipping
    (0.5, float("inf")),
    (0.5, 1.0),
    (0.3, 3.0),
]

SCHED_CASES = [  # (name, kwargs, initial lr, epochs)
    ("StepLR", {"step_size": 3, "gamma": 0.5}, 0.1, 10),
    ("StepLR", {"step_size": 1}, 1.0, 4),
    ("CosineAnnealingLR", {"T_max": 4, "eta_min": 0.01}, 0.1, 13),
    ("CosineAnnealingLR", {"T_max": 1}, 0.5, 5),
    ("CosineAnnealingLR", {"T_max": 10}, 0.05, 25),
]


# --------------------------------------------------------------------------- drawing
def draw_params(seed, dtype):
    """Initial parameters, name -> array of ``SHAPES``."""
    rng = np.random.default_rng([seed, 0])
    return {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}


def draw_grads(seed, dtype, steps=STEPS):
    """``steps`` gradient dicts, scaled by ``GRAD_SCALES``."""
    rng = np.random.default_rng([seed, 1])
    return [
        {n: (GRAD_SCALES[k % len(GRAD_SCALES)] * rng.standard_normal(s)).astype(dtype)
         for n, s in SHAPES.items()}
        for k in range(steps)
    ]


def draw_clip_grads(seed, dtype):
    """Gradients for a clipping case: a few arrays of mixed sizes and scales."""
    rng = np.random.default_rng([seed, 2])
    return {
        "a": rng.standard_normal((3, 4)).astype(dtype),
        "b": (0.1 * rng.standard_normal(5)).astype(dtype),
        "c": (3.0 * rng.standard_normal((2, 2, 2))).astype(dtype),
    }


# --------------------------------------------------------------------------- torch oracle
def torch_optim_trajectory(name, kwargs, p0, grads):
    """torch.optim.<name>(**kwargs) over parameters ``p0`` fed gradients ``grads``.

    Returns the list of parameter dicts (NumPy arrays) after each step.
    """
    import torch

    params = {n: torch.from_numpy(a.copy()).requires_grad_(True) for n, a in p0.items()}
    opt = getattr(torch.optim, name)(list(params.values()), foreach=False, **kwargs)
    traj = []
    for g in grads:
        for n, p in params.items():
            p.grad = torch.from_numpy(g[n].copy())
        opt.step()
        traj.append({n: p.detach().numpy().copy() for n, p in params.items()})
    return traj


def torch_clip(grads, max_norm, norm_type):
    """torch.nn.utils.clip_grad_norm_ on ``grads``: (total norm, clipped gradients)."""
    import torch

    params = []
    for g in grads.values():
        p = torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
        p.grad = torch.from_numpy(g.copy())
        params.append(p)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    return float(total), {n: p.grad.numpy().copy() for n, p in zip(grads, params)}


def torch_schedule(name, kwargs, lr, epochs):
    """``get_last_lr()[0]`` after each of ``epochs`` epochs of torch's scheduler ``name``."""
    import torch

    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = getattr(torch.optim.lr_scheduler, name)(opt, **kwargs)
    lrs = []
    for _ in range(epochs):
        opt.step()
        sched.step()
        lrs.append(float(sched.get_last_lr()[0]))
    return lrs


# --------------------------------------------------------------------------- storage
def _flatten(arrays, dtype):
    layout, chunks, offset = [], [], 0
    for name in sorted(arrays):
        a = np.asarray(arrays[name], dtype=dtype)
        layout.append([name, list(a.shape), offset])
        chunks.append(a.ravel())
        offset += a.size
    return layout, np.concatenate(chunks)


def _unflatten(flat, layout):
    return {
        name: flat[off : off + int(np.prod(shape, dtype=np.int64))].reshape(shape).copy()
        for name, shape, off in layout
    }


def _nest(arrays, prefix):
    """{"grads.0.weight": a, ...} -> [{"weight": a, ...}, ...] for ``prefix`` "grads"."""
    steps = {}
    for key, a in arrays.items():
        if key.startswith(prefix + "."):
            step, name = key[len(prefix) + 1 :].split(".", 1)
            steps.setdefault(int(step), {})[name] = a
    return [steps[k] for k in sorted(steps)]


def load_golden(path=HERE / "optim_golden.npz"):
    """Read the golden file: ``{"optim": [...], "clip": [...], "sched": [...]}`` (see above)."""
    out = {"optim": [], "clip": [], "sched": []}
    with np.load(path, allow_pickle=False) as f:
        for entry in json.loads(str(f["index"])):
            arrays = _unflatten(f[entry["key"]], entry["arrays"])
            case = dict(entry["settings"])
            if entry["kind"] == "optim":
                case["p0"] = {n[3:]: a for n, a in arrays.items() if n.startswith("p0.")}
                case["grads"] = _nest(arrays, "grads")
                case["traj"] = _nest(arrays, "traj")
            elif entry["kind"] == "clip":
                case["grads"] = {n[6:]: a for n, a in arrays.items() if n.startswith("grads.")}
                case["clipped"] = {n[8:]: a for n, a in arrays.items() if n.startswith("clipped.")}
                case["total"] = float(arrays["total"])
            else:
                case["lrs"] = arrays["lrs"].tolist()
            out[entry["kind"]].append(case)
    return out


def main():
    import torch

    torch.set_num_threads(1)
    index, members = [], {}

    def add(kind, settings, arrays, dtype):
        key = f"{kind}{len(index):03d}"
        layout, members[key] = _flatten(arrays, dtype)
        index.append({"kind": kind, "key": key, "settings": settings, "arrays": layout})

    seed = 0
    for name, kwargs in OPTIM_CASES:
        for dtype in DTYPES:
            p0, grads = draw_params(seed, dtype), draw_grads(seed, dtype)
            traj = torch_optim_trajectory(name, kwargs, p0, grads)
            arrays = {f"p0.{n}": a for n, a in p0.items()}
            for k in range(STEPS):
                arrays.update({f"grads.{k}.{n}": a for n, a in grads[k].items()})
                arrays.update({f"traj.{k}.{n}": a for n, a in traj[k].items()})
            add("optim", {"name": name, "kwargs": kwargs, "dtype": dtype, "seed": seed},
                arrays, dtype)
            seed += 1
    for max_norm, norm_type in CLIP_CASES:
        for dtype in DTYPES:
            grads = draw_clip_grads(seed, dtype)
            total, clipped = torch_clip(grads, max_norm, norm_type)
            arrays = {f"grads.{n}": a for n, a in grads.items()}
            arrays.update({f"clipped.{n}": a for n, a in clipped.items()})
            arrays["total"] = np.array(total)
            add("clip", {"max_norm": max_norm, "norm_type": norm_type, "dtype": dtype},
                arrays, dtype)
            seed += 1
    for name, kwargs, lr, epochs in SCHED_CASES:
        lrs = torch_schedule(name, kwargs, lr, epochs)
        add("sched", {"name": name, "kwargs": kwargs, "lr": lr, "epochs": epochs},
            {"lrs": np.array(lrs)}, "float64")
    members["index"] = np.array(json.dumps(index, separators=(",", ":")))
    path = HERE / "optim_golden.npz"
    np.savez_compressed(path, **members)
    print(f"{path.name}: {len(index)} entries, {path.stat().st_size / 1024:.1f} KiB "
          f"(torch {torch.__version__})")


if __name__ == "__main__":
    main()
