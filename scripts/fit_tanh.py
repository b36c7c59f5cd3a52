"""Fit the float32 rational approximation of tanh used in kernels/cells.py.

tanh(x) ~ x * P(x^2) / Q(x^2) on [0, 9], P of degree 5 and Q of degree 3 in x^2 with
Q(0) = 1, minimising the maximum relative error by Lawson-weighted linearised least
squares (Loeb's iteration for the denominator). Prints the coefficients as float32 and the
error of the float32 evaluation against float64 tanh, in ulp.

    python scripts/fit_tanh.py
"""

import numpy as np

CLAMP = 9.0
P_DEGREE, Q_DEGREE = 5, 3


def fit(iterations=60):
    x = np.linspace(1e-5, CLAMP, 40000)
    s = (x / CLAMP) ** 2  # scaled variable keeps the least-squares problem well conditioned
    f = np.tanh(x) / x
    q_prev = np.ones_like(x)
    weights = np.full_like(x, 1.0 / x.size)
    for _ in range(iterations):
        columns = [s**k for k in range(P_DEGREE + 1)] + [-f * s**k for k in range(1, Q_DEGREE + 1)]
        scale = np.sqrt(weights) / (q_prev * f)
        sol = np.linalg.lstsq(np.stack(columns, 1) * scale[:, None], f * scale, rcond=None)[0]
        p = sol[: P_DEGREE + 1]
        q = np.concatenate([[1.0], sol[P_DEGREE + 1 :]])
        q_prev = np.polyval(q[::-1], s)
        err = (x * np.polyval(p[::-1], s) / q_prev - np.tanh(x)) / np.tanh(x)
        weights = weights * np.abs(err)
        weights /= weights.sum()
    unscale = lambda c: c / CLAMP ** (2 * np.arange(c.size))  # noqa: E731
    return unscale(p), unscale(q), np.abs(err).max()


def float32_ulp_error(p, q):
    x = np.linspace(0, CLAMP, 400001).astype(np.float32)
    s = x * x
    num = np.zeros_like(x)
    for c in p[::-1].astype(np.float32):
        num = num * s + c
    den = np.zeros_like(x)
    for c in q[::-1].astype(np.float32):
        den = den * s + c
    approx = x * num / den
    exact = np.tanh(x.astype(np.float64))
    return np.max(np.abs(approx - exact) / np.spacing(exact.astype(np.float32)))


if __name__ == "__main__":
    p, q, rel = fit()
    print("P:", ", ".join(repr(float(np.float32(c))) for c in p))
    print("Q:", ", ".join(repr(float(np.float32(c))) for c in q))
    print(f"max relative error (exact arithmetic) {rel:.2e}; float32 evaluation {float32_ulp_error(p, q):.1f} ulp")
