"""A trained LSTM inside a user's own @njit simulation loop.

A damped pendulum is observed along one trajectory; an LSTM (with a linear read-out)
learns its one-step dynamics with numbarnn's training API. The trained weights are then
handed, as plain arrays, to a Monte Carlo simulation written with Numba: many rollouts from
perturbed initial conditions, where each step of each rollout calls
``numbarnn.kernels.step.lstm_step_vector`` and feeds the prediction back as the next
input. No framework sits in that loop, so it runs at the speed of the arithmetic.

The script checks the @njit rollout against the same rollout driven from Python with
``model.step`` (equal to rounding) and reports how well the learned simulator tracks the
true physics, and the time per step of both loops.

    python examples/njit_simulation.py [--hidden 32] [--epochs 40] [--rollouts 256]
"""

import argparse
import time

import numpy as np
from numba import njit

from numbarnn import LSTM, Linear, Sequential
from numbarnn.kernels import step
from numbarnn.optim import Adam
from numbarnn.training import fit

DT = 0.1  # integration step of the pendulum
DAMPING = 0.1


@njit(cache=True)
def pendulum(theta, omega, steps):
    """True dynamics ``theta'' = -sin(theta) - DAMPING * theta'``, semi-implicit Euler.

    Returns (steps + 1, 2) states ``(theta, omega)``, the initial one first.
    """
    out = np.empty((steps + 1, 2))
    out[0, 0], out[0, 1] = theta, omega
    for t in range(steps):
        omega += DT * (-np.sin(theta) - DAMPING * omega)
        theta += DT * omega
        out[t + 1, 0], out[t + 1, 1] = theta, omega
    return out


# Not cached on disk: a cached function would keep numbarnn's kernel as it was compiled
# into it, and miss an update of the library.
@njit
def simulate(starts, steps, w_ih, w_hh, b_ih, b_hh, w_out, b_out):
    """Roll out the learned simulator from every row of ``starts`` (R, 2).

    Each step: the LSTM reads the current state, the read-out predicts the change of state,
    the new state is fed back. Returns the trajectories (R, steps + 1, 2).
    """
    R = starts.shape[0]
    H = w_hh.shape[1]
    dtype = w_hh.dtype
    out = np.empty((R, steps + 1, 2), dtype=dtype)
    h = np.empty(H, dtype=dtype)
    c = np.empty(H, dtype=dtype)
    x = np.empty(2, dtype=dtype)
    for r in range(R):
        h[:] = 0
        c[:] = 0
        x[:] = starts[r]
        out[r, 0] = x
        for t in range(steps):
            step.lstm_step_vector(x, w_ih, w_hh, b_ih, b_hh, h, c, h, c)  # in place
            x += w_out @ h + b_out
            out[r, t + 1] = x
    return out


def simulate_with_model_step(model, start, steps):
    """The same rollout from Python, one ``model.step`` per time step (stateful mode)."""
    model.stateful = True
    model.reset_state()
    x = start.astype(np.float32)
    out = [x]
    for _ in range(steps):
        delta, _ = model.step(x)
        x = x + delta
        out.append(x)
    model.stateful = False
    return np.array(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--rollouts", type=int, default=256, help="Monte Carlo rollouts")
    parser.add_argument("--steps", type=int, default=100, help="steps per rollout")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    # Training data: windows of one long observed trajectory; the target of every step is
    # the change of state to the next step.
    observed = pendulum(2.5, 0.0, 3000).astype(np.float32)
    window = 20
    starts = np.arange(0, len(observed) - window - 1, 5)
    x = np.stack([observed[s : s + window] for s in starts], axis=1)  # (window, N, 2)
    y = np.stack([observed[s + 1 : s + window + 1] - observed[s : s + window] for s in starts],
                 axis=1)
    model = Sequential(LSTM(2, args.hidden, seed=args.seed),
                       Linear(args.hidden, 2, seed=args.seed + 1))
    history = fit(model, Adam(model, lr=1e-2), x, y, epochs=args.epochs, batch_size=32,
                  seed=args.seed, progress=False)
    model.eval()

    # Monte Carlo: rollouts from perturbed initial conditions, in @njit.
    p, q = model[0].params, model[1].params
    weights = (p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"],
               q["weight"], q["bias"])
    initial = np.column_stack([rng.uniform(-2.0, 2.0, args.rollouts),
                               rng.uniform(-0.5, 0.5, args.rollouts)]).astype(np.float32)
    simulate(initial[:1], 1, *weights)  # compile
    t0 = time.perf_counter()
    rollouts = simulate(initial, args.steps, *weights)
    njit_us = (time.perf_counter() - t0) / (args.rollouts * args.steps) * 1e6

    truth = np.stack([pendulum(th, om, args.steps) for th, om in initial.astype(np.float64)])
    error = np.abs(rollouts[:, :, 0] - truth[:, :, 0])  # angle error along the horizon
    still = np.abs(initial[:, None, 0] - truth[:, :, 0])  # a pendulum that does not move

    n_check = min(4, args.rollouts)
    simulate_with_model_step(model, initial[0], 1)  # compile the step kernel for these types
    t0 = time.perf_counter()
    driven = np.stack([simulate_with_model_step(model, s, args.steps) for s in initial[:n_check]])
    python_us = (time.perf_counter() - t0) / (n_check * args.steps) * 1e6
    mismatch = float(np.max(np.abs(driven - rollouts[:n_check])))

    print(f"training loss {history.loss[0]:.3g} -> {history.loss[-1]:.3g} ({args.epochs} epochs)")
    print(f"{args.rollouts} rollouts x {args.steps} steps: mean angle error "
          f"{error.mean():.3f} rad (a pendulum that stays put: {still.mean():.3f} rad)")
    print(f"@njit loop: {njit_us:.2f} us per step; model.step from Python: {python_us:.2f} us "
          f"per step; max difference between the two rollouts {mismatch:.2g}")
    return {"history": history, "rollouts": rollouts, "truth": truth, "mismatch": mismatch,
            "error": float(error.mean()), "still_error": float(still.mean()),
            "njit_us": njit_us, "python_us": python_us}


if __name__ == "__main__":
    main()
