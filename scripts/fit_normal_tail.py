#!/usr/bin/env python3
"""The fit behind approx::normal_tail_factor (core/activation.hpp): Phi(-x), the normal
distribution's tail, for x >= 0 as t Q(t) e^(-x^2 / 2) with t = 1 / (1 + k x) and Q a polynomial
fitted to erfcx(x / sqrt 2) / (2 t) (erfcx(z) = e^(z^2) erfc(z): smooth, so a low degree holds it;
t maps x in [0, inf) onto (0, 1] and follows erfcx's 1/x tail).

Q is fitted over x in [0, XMAX] with Chebyshev-weighted least squares reweighted towards the
largest relative error (Lawson), for each k on a grid; prints the best k's constants as float
literals and Q's relative error evaluated in float (Horner with FMA, the coefficients rounded to
float), inside the range and beyond it up to where Phi(-x) underflows.
Usage: .venv/bin/python scripts/fit_normal_tail.py [--degree D] [--xmax X]"""
import argparse

import numpy as np
from numpy.polynomial import Chebyshev, Polynomial
from scipy.special import erfcx

SQRT2 = np.sqrt(2.0)


def fit(k, degree, xmax, rounds=30):
    """Q as a polynomial in t, fitted over x in [0, xmax]."""
    tmin = 1.0 / (1.0 + k * xmax)
    u = np.cos(np.pi * (np.arange(3000) + 0.5) / 3000)  # Chebyshev nodes of [tmin, 1]
    t = tmin + (1.0 - tmin) * (u + 1.0) / 2.0
    q = erfcx((1.0 - t) / (k * t) / SQRT2) / (2.0 * t)
    weights = np.ones_like(u)
    for _ in range(rounds + 1):
        cheb = Chebyshev.fit(t, q, degree, domain=[tmin, 1.0], w=np.sqrt(weights) / q)
        err = np.abs(cheb(t) / q - 1.0)
        weights *= err / err.mean()
    return cheb.convert(kind=Polynomial).coef.astype(np.float32)


def float_error(coef, k, xs):
    """Q's largest relative error at xs, t and Q evaluated in float as the kernels do."""
    t = (1.0 / (1.0 + np.float32(k) * xs.astype(np.float32))).astype(np.float32)
    acc = np.full_like(t, coef[-1])
    for c in coef[-2::-1]:
        acc = (acc.astype(np.float64) * t + c).astype(np.float32)  # one rounding, as an FMA
    # Q at the t the float code has, against Q at that t exactly
    x_at_t = (1.0 / t.astype(np.float64) - 1.0) / k
    q_at_t = erfcx(x_at_t / SQRT2) / (2.0 * t.astype(np.float64))
    return np.max(np.abs(acc / q_at_t - 1.0))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--degree", type=int, default=6)
    p.add_argument("--xmax", type=float, default=12.73)  # 9 sqrt 2: Phi(-x) x < 1e-35 beyond
    a = p.parse_args()
    if not 1 <= a.degree <= 12:
        p.error(f"--degree {a.degree}: a whole number from 1 to 12")
    if not 1.0 <= a.xmax < 23.0:  # a number (NaN is not), below the check's end at 23
        p.error(f"--xmax {a.xmax}: a number from 1 to below 23")
    inside = np.linspace(0.0, a.xmax, 400001)
    best = min(
        (float_error(fit(k, a.degree, a.xmax, rounds=0), k, inside), k)
        for k in np.linspace(0.15, 0.7, 56)
    )
    k = float(np.float32(best[1]))
    coef = fit(k, a.degree, a.xmax)
    beyond = np.linspace(a.xmax, 23.0, 100001)
    print(f"k = {k:.9g}f  (t = 1 / (1 + k x))")
    print("Q(t) coefficients, t^0 first:")
    print("  " + ", ".join(f"{c:.9e}f" for c in coef))
    print(f"relative error in float: {float_error(coef, k, inside):.2e} for x in [0, {a.xmax}], "
          f"{float_error(coef, k, beyond):.2e} from there to 23")


if __name__ == "__main__":
    main()
