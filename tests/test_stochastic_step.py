"""Stochastic gDDIM step coefficients (``gddim_numerics.stochastic``) against independent references.

References: the lam = 1 closed form (the reverse step of the exact time reversal is the forward
bridge, ``Psi_hat = Sigma_t Psi(s, t)^T Sigma_s^{-1}``, ``P = Sigma_t - Psi_hat Sigma_s Psi_hat^T``),
the DDIM formulas on VP, a DOP853 solve of the step ODEs in the original variables, and the exact
output law of the whole stochastic sampler on Dirac data.
"""

import time

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import gddim_numerics as gd
from gaussian_helpers import Gaussian, random_dense
from gddim_numerics.affine_law import output_law
from gddim_numerics.stochastic import stochastic_coefficients


def step_ode(sde, s, t, lam):
    r"""``(Psi_hat - Psi, P)`` by DOP853 (rtol 1e-12) of :math:`dD = \hat F D + c\,GG^\top\Sigma^{-1}\Psi(\tau, s)`,
    :math:`dP = \hat FP + P\hat F^\top - \lambda^2GG^\top` from ``s`` down to ``t`` (zero start)."""
    m, k = sde.shape
    n = m * k * k
    c = 0.5 * (1 + lam * lam)

    def rhs(tau, y):
        d, p = y[:n].reshape(m, k, k), y[n:].reshape(m, k, k)
        gg = sde.diffusion(tau)
        push = c * gg @ np.linalg.inv(sde.covariance(tau))
        f_hat = sde.drift(tau) + push
        return np.concatenate([(f_hat @ d + push @ sde.transition(tau, s)).ravel(),
                               (f_hat @ p + p @ np.swapaxes(f_hat, -1, -2) - lam * lam * gg).ravel()])

    sol = solve_ivp(rhs, (s, t), np.zeros(2 * n), method="DOP853", rtol=1e-12, atol=1e-15)
    assert sol.success
    return sol.y[:n, -1].reshape(m, k, k), sol.y[n:, -1].reshape(m, k, k)


def per_step_error(a, b, scale):
    """Largest ``max|a_j - b_j| / max|scale_j|`` over steps ``j``."""
    return max(np.abs(a[j] - b[j]).max() / np.abs(scale[j]).max() for j in range(len(a)))


def test_cld_lambda_one_matches_the_bridge_closed_form():
    """lam = 1 on CLD, NFE 10: Psi_hat - Psi and P equal the forward-bridge closed form."""
    sde = gd.CLD()
    ts = gd.time_grid(sde, 10)
    s, t = ts[:-1], ts[1:]
    excess, p = stochastic_coefficients(sde, s, t, 1.0)
    psi, sig_t, sig_s = sde.transition(t, s), sde.covariance(t), sde.covariance(s)
    psi_hat = sig_t @ np.swapaxes(sde.transition(s, t), -1, -2) @ np.linalg.inv(sig_s)
    p_ref = sig_t - psi_hat @ sig_s @ np.swapaxes(psi_hat, -1, -2)
    assert per_step_error(excess, psi_hat - psi, psi_hat - psi) <= 5e-12  # measured 2.2e-14
    assert per_step_error(p, p_ref, p_ref) <= 1e-11  # measured 2.4e-14


@pytest.mark.parametrize("lam", [0.2, 1.0, 4.0])
def test_vp_steps_are_the_ddim_eta_formulas(lam):
    """VP (scalar modes), DDIM with sigma^2 = P = (1 - a_t)(1 - rho^{2 lam^2}): Psi_hat = sqrt(1 - a_t - P)/sqrt(1 - a_s),
    written without cancellation as sqrt((1 - a_t)/(1 - a_s)) rho^{lam^2}."""
    sde = gd.VPSDE.linear()
    ts = gd.time_grid(sde, 12)
    s, t = ts[:-1], ts[1:]
    excess, p = stochastic_coefficients(sde, s, t, lam)
    a_s, a_t = sde.alpha_bar(s), sde.alpha_bar(t)
    rho2 = (1 - a_t) * a_s / ((1 - a_s) * a_t)
    var = (1 - a_t) * (1 - rho2 ** (lam * lam))
    psi_hat = np.sqrt((1 - a_t) / (1 - a_s)) * rho2 ** (0.5 * lam * lam)
    np.testing.assert_allclose(p[:, 0, 0, 0], var, rtol=1e-12)  # measured 6.4e-14 (relative)
    np.testing.assert_allclose(excess[:, 0, 0, 0], psi_hat - np.sqrt(a_t / a_s), rtol=1e-10)  # measured 8.2e-15 (relative)


@pytest.mark.parametrize("lam", [0.3, 3.0])
def test_cld_matches_the_step_ode(lam):
    """CLD, first and last steps of NFE 10: Psi_hat - Psi (relative to Psi) and P agree with DOP853."""
    sde = gd.CLD()
    ts = gd.time_grid(sde, 10)
    steps = [0, 9]
    s, t = ts[:-1][steps], ts[1:][steps]
    excess, p = stochastic_coefficients(sde, s, t, lam)
    ref = [step_ode(sde, si, ti, lam) for si, ti in zip(s, t)]
    psi = sde.transition(t, s)
    assert per_step_error(excess, [r[0] for r in ref], psi) <= 1e-10  # measured 2.4e-12 (lam = 3)
    assert per_step_error(p, [r[1] for r in ref], [r[1] for r in ref]) <= 1e-10  # measured 2.1e-12 (lam = 3)


def test_dense_non_commuting_diffusion_matches_the_step_ode():
    """A random 3 x 3 beta(t) A diffusion (R_t by ODE), lam = 0.7, two steps: agree with DOP853."""
    sde = random_dense(5)
    ts = np.array([1.0, 0.55, 0.2])
    s, t = ts[:-1], ts[1:]
    excess, p = stochastic_coefficients(sde, s, t, 0.7)
    ref = [step_ode(sde, si, ti, 0.7) for si, ti in zip(s, t)]
    psi = sde.transition(t, s)
    assert per_step_error(excess, [r[0] for r in ref], psi) <= 1e-11  # measured 1.8e-14
    assert per_step_error(p, [r[1] for r in ref], [r[1] for r in ref]) <= 1e-11  # measured 2.5e-13


def test_tiny_lambda_noise_keeps_its_digits():
    r"""lam = 1e-9 on CLD: P / lam^2 equals its lam -> 0 limit, the DOP853 solution of
    :math:`dQ = F_0Q + QF_0^\top - GG^\top`, :math:`F_0 = F + \tfrac12GG^\top\Sigma^{-1}` (P ~ 1e-18 is not
    lost to rounding of I - W W^T)."""
    sde = gd.CLD()
    ts = gd.time_grid(sde, 10)
    s, t = ts[:-1], ts[1:]

    def limit(si, ti):
        def rhs(tau, y):
            q, gg = y.reshape(1, 2, 2), sde.diffusion(tau)
            f0 = sde.drift(tau) + 0.5 * gg @ np.linalg.inv(sde.covariance(tau))
            return (f0 @ q + q @ np.swapaxes(f0, -1, -2) - gg).ravel()

        return solve_ivp(rhs, (si, ti), np.zeros(4), method="DOP853", rtol=1e-12, atol=1e-14).y[:, -1].reshape(1, 2, 2)

    ref = np.stack([limit(a, b) for a, b in zip(s, t)])
    _, p = stochastic_coefficients(sde, s, t, 1e-9)
    assert per_step_error(p / 1e-18, ref, ref) <= 1e-11  # measured 1.2e-13


def test_cld_lambda_ten_plan_is_fast_and_exact_on_dirac_data():
    """lam = 10, NFE 10 on CLD: the plan builds in well under a second of CPU (was ~100 s) and the
    sampler's exact output law on Dirac data is the true marginal at t_end."""
    sde = gd.CLD()
    data = Gaussian(sde, (1, 2), np.array([0.7, 0.0]))
    ts = gd.time_grid(sde, 10)
    start = time.process_time()
    tables = gd.GDDIM(sde, ts, lam=10.0).tables
    assert time.process_time() - start <= 5.0  # measured 0.13-0.35 s CPU (idle / loaded 2-core machine)
    mean, cov = output_law(sde, tables, (1, 2), data.eps_affine, data.mean(ts[0]), data.cov(ts[0]))
    true_cov = data.cov(ts[-1])
    assert np.max(np.abs(mean - data.mean(ts[-1]))) <= 1e-12 * np.max(np.abs(data.mean(ts[-1])))  # measured 1.6e-16
    assert np.max(np.abs(cov - true_cov)) <= 1e-12 * np.max(np.abs(true_cov))  # measured 2.2e-15


def test_huge_lambda_is_refused_naming_lambda():
    """lam = 1e9 would need ~1e20 sub-steps: a ValueError that names lam, before any large allocation."""
    sde = gd.CLD()
    with pytest.raises(ValueError, match=r"lam=1e\+09"):
        gd.GDDIM(sde, gd.time_grid(sde, 10), lam=1e9).tables
