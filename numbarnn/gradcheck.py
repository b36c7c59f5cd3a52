"""Central-difference gradient check of a recurrent layer's ``backward``."""

import numpy as np


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def gradient_check(model, x, state=None, eps=1e-6, seed=0):
    """Compare ``model.backward`` with central differences, element by element.

    The loss is ``L = sum(y * w) + sum(state_n * w_s)`` with random weights ``w`` and
    ``w_s``, so every output and final state contributes. Every element of ``x``, of the
    initial state(s) and of every parameter is perturbed by ``+-eps`` in turn: use tiny
    sizes. The model's ``grads`` are zeroed and left holding the analytic gradients.

    Parameters
    ----------
    model : RNN, LSTM or GRU
        A float64 layer on a NumPy-backed backend.
    x : ndarray
        Input, as ``model.forward`` takes it.
    state : ndarray or tuple of ndarray, optional
        Initial state(s); zeros when None (their gradients are still checked).
    eps : float
        Finite-difference step.
    seed : int
        Seed of the random loss weights.

    Returns
    -------
    dict of str -> float
        Relative error ``max|numeric - analytic| / max|numeric|`` for ``'x'``, ``'h0'``
        (and ``'c0'`` for LSTM) and every parameter name.
    """
    if model.dtype != np.float64:
        raise TypeError(f"model: gradient_check needs a float64 model, got {model.dtype}")
    if model.backend.xp is not np:
        raise ValueError("model: gradient_check needs NumPy arrays (backend 'cpu' or the simulator)")
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.train()
    y, final = model(x, state)
    final = _as_tuple(final)
    if state is None:
        state = tuple(np.zeros_like(s) for s in final)
    state = tuple(np.array(s, dtype=np.float64) for s in _as_tuple(state))
    x = np.array(x, dtype=np.float64)
    w_y = rng.standard_normal(y.shape)
    w_states = tuple(rng.standard_normal(s.shape) for s in final)

    model.zero_grad()
    dstate = w_states if len(w_states) == 2 else w_states[0]
    dx, dstate0 = model.backward(w_y, dstate)
    analytic = {"x": dx}
    state_names = ("h0", "c0")[: len(state)]
    analytic.update(zip(state_names, _as_tuple(dstate0)))
    analytic.update(model.grads)

    model.eval()

    def loss():
        s = state if len(state) == 2 else state[0]
        y, final = model(x, s)
        return np.sum(y * w_y) + sum(np.sum(f * w) for f, w in zip(_as_tuple(final), w_states))

    inputs = {"x": x, **dict(zip(state_names, state)), **model.params}
    errors = {}
    for name, array in inputs.items():
        numeric = np.empty(array.shape)
        flat, out = array.reshape(-1), numeric.reshape(-1)  # views: perturbations reach `array`
        for k in range(flat.size):
            original = flat[k]
            flat[k] = original + eps
            up = loss()
            flat[k] = original - eps
            down = loss()
            flat[k] = original
            out[k] = (up - down) / (2 * eps)
        scale = max(np.max(np.abs(numeric)), np.finfo(np.float64).tiny)
        errors[name] = float(np.max(np.abs(numeric - analytic[name])) / scale)
    model.train(was_training)
    return errors
