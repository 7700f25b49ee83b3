#!/usr/bin/env python3
"""Reference values for Cohort's PLD accountant (dp/src/accountant/pld.rs), from Google's dp-accounting.

Run:  python3 -m venv /tmp/dpa && /tmp/dpa/bin/pip install dp-accounting==0.6.0
      /tmp/dpa/bin/python benches/peers/dp_accounting_reference.py

CI does not run this; the values it prints are hard-coded in the Rust tests, which name this script and the
dp-accounting version. Every PLD figure is `dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)`
(neighbouring relation ADD_OR_REMOVE_ONE, the default) composing
`SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)`, queried at delta = 1e-5 unless
stated otherwise. The exact epsilon of the plain Gaussian (q = 1) is from Balle and Wang 2018, Theorem 8.
"""

import math
import sys
import time

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant, privacy_loss_distribution as pld_lib
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import optimize, stats

DELTA = 1e-5
VDI = 1e-4


def sg_event(q, sigma, steps):
    return dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps)


def pld_eps(q, sigma, steps, delta=DELTA, vdi=VDI):
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=vdi)
    acc.compose(sg_event(q, sigma, steps))
    return acc.get_epsilon(delta)


def pld_delta(q, sigma, steps, eps, vdi=VDI):
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=vdi)
    acc.compose(sg_event(q, sigma, steps))
    return acc.get_delta(eps)


def rdp_eps(q, sigma, steps, delta=DELTA):
    acc = rdp_privacy_accountant.RdpAccountant()
    acc.compose(sg_event(q, sigma, steps))
    return acc.get_epsilon(delta)


def exact_gaussian_delta(mu, eps):
    """Balle and Wang 2018, Theorem 8: delta(eps) of N(0,1) vs N(mu,1)."""
    return stats.norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * stats.norm.cdf(-mu / 2 - eps / mu)


def exact_gaussian_eps(sigma, steps, delta=DELTA):
    mu = math.sqrt(steps) / sigma  # T-fold composition of N(0, sigma^2), sensitivity 1
    return optimize.brentq(lambda e: exact_gaussian_delta(mu, e) - delta, 0.0, 500.0, xtol=1e-12)


def main():
    print(f"# dp-accounting {dp_accounting.__version__ if hasattr(dp_accounting, '__version__') else '0.6.0'}, "
          f"python {sys.version.split()[0]}")
    print("## design table: q, sigma, steps, eps_pld, eps_rdp, eps_exact(q=1)")
    for q, s, t in [(256 / 60000, 1.1, 14063), (0.01, 1.0, 1000), (0.001, 0.8, 10000), (1.0, 5.0, 10)]:
        t0 = time.time()
        e = pld_eps(q, s, t)
        ex = exact_gaussian_eps(s, t) if q == 1.0 else float('nan')
        print(f"({q!r}, {s}, {t}, {e:.6f}, {rdp_eps(q, s, t):.6f}, {ex:.6f}),  # {time.time() - t0:.1f}s")
    print("## extra grid: q, sigma, steps, eps_pld, eps_rdp")
    for q in [0.005, 0.02, 0.1, 0.5]:
        for s in [0.6, 1.5, 3.0]:
            for t in [1, 50, 3000]:
                e = pld_eps(q, s, t)
                print(f"({q}, {s}, {t}, {e:.6f}, {rdp_eps(q, s, t):.6f}),")
    print("## exact Gaussian (q = 1): sigma, steps, eps_pld, eps_exact")
    for s, t in [(1.0, 1), (2.0, 4), (0.8, 100), (5.0, 10)]:
        print(f"({s}, {t}, {pld_eps(1.0, s, t):.6f}, {exact_gaussian_eps(s, t):.6f}),")
    print("## other deltas: q, sigma, steps, delta, eps_pld")
    for q, s, t, d in [(0.01, 1.0, 1000, 1e-3), (0.01, 1.0, 1000, 1e-8), (0.02, 0.8, 500, 1e-6)]:
        print(f"({q}, {s}, {t}, {d}, {pld_eps(q, s, t, d):.6f}),")
    print("## delta for epsilon: q, sigma, steps, eps, delta_pld")
    for q, s, t, e in [(0.01, 1.0, 1000, 1.0), (0.01, 1.0, 1000, 2.0), (1.0, 5.0, 10, 1.0)]:
        print(f"({q}, {s}, {t}, {e}, {pld_delta(q, s, t, e):.9e}),")
    print("## pure eps releases composed with the sampled Gaussian (from_privacy_parameters(eps, 0))")
    for q, s, t, pures in [(0.01, 1.0, 1000, [0.1]), (0.01, 1.0, 1000, [0.1, 0.25]), (None, None, 0, [0.5, 0.5, 0.5]),
                           (None, None, 0, [0.1] * 20), (1.0, 5.0, 10, [1.0])]:
        p = pld_lib.identity(VDI)
        if t:
            p = p.compose(pld_lib.from_gaussian_mechanism(s, value_discretization_interval=VDI, sampling_prob=q)
                          .self_compose(t))
        for e in pures:
            p = p.compose(pld_lib.from_privacy_parameters(
                dp_accounting.pld.common.DifferentialPrivacyParameters(e, 0.0), VDI))
        print(f"({q}, {s}, {t}, {pures}, {p.get_epsilon_for_delta(DELTA):.6f}),")
    print("## PLD calibration at q = 0.01, 1000 steps, delta = 1e-5: target, sigma")
    for target in [1.0, 3.0, 8.0]:
        sigma = optimize.brentq(lambda x: pld_eps(0.01, x, 1000) - target, 0.3, 5.0, xtol=1e-5)
        print(f"({target}, {sigma:.6f}),")


if __name__ == "__main__":
    main()
