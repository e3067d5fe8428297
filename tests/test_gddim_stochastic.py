"""Stochastic gDDIM (docs/math §4.1, §5.1): DDIM correspondence and exact output laws.

The exact output law of the affine sampler on Gaussian data is propagated without Monte Carlo
(``gddim_numerics.affine_law.output_law``, docs/math §8.4) and compared with the true marginal.
"""

import numpy as np
import pytest

import gddim_numerics as gd
from gaussian_helpers import Gaussian
from gddim_numerics.affine_law import output_law


def abar(t, bmin=0.1, bmax=20.0):
    return np.exp(-bmin * t - 0.5 * (bmax - bmin) * t * t)


def test_deterministic_q1_is_ddim_eta0():
    """q = 1 on VP equals the DDIM (eta = 0) recursion with textbook alpha-bar to 1e-12."""
    sde = gd.VPSDE.linear()
    ts = gd.time_grid(sde, 15, "uniform")
    x = np.random.default_rng(3).standard_normal((3, 5))
    eps_fn = lambda u, t: np.sin(u) * (1 + t)  # noqa: E731 - any network
    res = gd.GDDIM(sde, ts, order=1).sample(eps_fn, x)
    u = x.copy()
    for s, t in zip(ts[:-1], ts[1:]):
        e = eps_fn(u, s)
        x0 = (u - np.sqrt(1 - abar(s)) * e) / np.sqrt(abar(s))
        u = np.sqrt(abar(t)) * x0 + np.sqrt(1 - abar(t)) * e
    assert np.max(np.abs(res.x - u)) <= 1e-12 * np.max(np.abs(u))  # measured 9.6e-16


@pytest.mark.parametrize("lam", [0.3, 1.0])
def test_one_step_law_matches_theorem_1_and_ddim(lam):
    """Mean coefficients and variance of one step equal [P Thm 1]; lam = 1 equals DDIM eta = 1."""
    sde = gd.VPSDE.linear()
    ts = np.array([0.8, 0.5, 0.2, 0.05])
    tab = gd.GDDIM(sde, ts, lam=lam).tables
    for k, (s, t) in enumerate(zip(ts[:-1], ts[1:])):
        a_s, a_t = abar(s), abar(t)
        rho2 = (1 - a_t) * a_s / ((1 - a_s) * a_t)
        var = (1 - a_t) * (1 - rho2**lam**2)
        eps_coef = np.sqrt(1 - a_t - var) - np.sqrt(a_t / a_s) * np.sqrt(1 - a_s)
        assert tab.state[k].item() == pytest.approx(np.sqrt(a_t / a_s), rel=1e-12)  # measured 1.9e-16
        assert tab.history[k, 0].item() == pytest.approx(eps_coef, rel=1e-11)  # measured 4.0e-16
        assert tab.noise[k].item() ** 2 == pytest.approx(var, rel=1e-11)  # measured 2.8e-16
        if lam == 1.0:
            ddim_var = (1 - a_t) / (1 - a_s) * (1 - a_s / a_t)
            assert tab.noise[k].item() ** 2 == pytest.approx(ddim_var, rel=1e-11)  # measured 3.4e-16


def test_lam_zero_is_the_deterministic_plan():
    """lam = 0 gives exactly the deterministic q = 1 tables (no noise)."""
    sde = gd.CLD()
    ts = gd.time_grid(sde, 6)
    det = gd.GDDIM(sde, ts, order=1).tables
    zero = gd.GDDIM(sde, ts, order=1, lam=0.0).tables
    assert zero.noise is None
    np.testing.assert_array_equal(zero.history, det.history)


def test_small_lambda_matrix_step_approaches_deterministic():
    """CLD: lam -> 0 coefficients converge to R_t - Psi R_s and P -> 0 (ODE path, not closed form)."""
    sde = gd.CLD()
    ts = np.array([0.6, 0.3])
    det = gd.GDDIM(sde, ts).tables.history[0, 0]
    sto = gd.GDDIM(sde, ts, lam=1e-4).tables
    assert np.max(np.abs(sto.history[0, 0] - det)) <= 1e-6  # measured 2.5e-8
    assert np.max(np.abs(sto.noise[0])) <= 3e-3  # measured 2.2e-4 (P^(1/2) ~ lam)


CASES = {
    "vp": (lambda: gd.VPSDE.linear(), (2,)),
    "cld": (lambda: gd.CLD(), (1, 2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("lam", [0.1, 0.5, 1.0])
def test_stochastic_gddim_output_law_is_exact_on_dirac_data(name, lam):
    """Started from the true marginal at T, the output law equals N(m, Sigma) at t_min to 1e-9."""
    sde, ev = CASES[name][0](), CASES[name][1]
    data = Gaussian(sde, ev, np.array([0.7, -0.2]) if name == "vp" else np.array([0.7, 0.0]))
    ts = gd.time_grid(sde, 10)
    tables = gd.GDDIM(sde, ts, lam=lam).tables
    mean, cov = output_law(sde, tables, ev, data.eps_affine, data.mean(ts[0]), data.cov(ts[0]))
    true_cov = data.cov(ts[-1])
    assert np.max(np.abs(mean - data.mean(ts[-1]))) <= 1e-9 * np.max(np.abs(data.mean(ts[-1])))  # measured 2.1e-15
    assert np.max(np.abs(cov - true_cov)) <= 1e-9 * np.max(np.abs(true_cov))  # measured 1.0e-12


def test_output_law_detects_a_biased_sampler():
    """The same law for Gaussian data with S != Sigma_0 is not exact (q = 1 is only first order)."""
    sde = gd.VPSDE.linear()
    data = Gaussian(sde, (2,), np.array([0.7, -0.2]), 0.3 * np.eye(2))
    ts = gd.time_grid(sde, 10)
    mean, cov = output_law(sde, gd.GDDIM(sde, ts, lam=0.5).tables, (2,), data.eps_affine,
                           data.mean(ts[0]), data.cov(ts[0]))
    assert np.max(np.abs(cov - data.cov(ts[-1]))) >= 1e-4


def test_monte_carlo_agrees_with_output_law():
    """4000 stochastic samples on VP reproduce the propagated mean within 4 standard errors."""
    sde = gd.VPSDE.linear()
    data = Gaussian(sde, (2,), np.array([0.7, -0.2]), 0.3 * np.eye(2))
    ts = gd.time_grid(sde, 8)
    plan = gd.GDDIM(sde, ts, lam=0.7)
    mean, cov = output_law(sde, plan.tables, (2,), data.eps_affine, data.mean(ts[0]), data.cov(ts[0]))
    rng = np.random.default_rng(11)
    x = rng.multivariate_normal(data.mean(ts[0]), data.cov(ts[0]), size=4000)
    out = plan.sample(data.eps_fn(), x, rng=rng).x
    se = np.sqrt(np.diag(cov) / len(out))
    assert np.all(np.abs(out.mean(axis=0) - mean) <= 4 * se)
