r"""The gDDIM factor :math:`R_t` and the Cholesky factor :math:`L_t` of matrix diffusions.

The independent reference solves the Lyapunov ODE together with the *linear* form of the factor ODE,
:math:`\dot R = (F + \tfrac12 GG^\top\Sigma^{-1})R`, :math:`R_{t_0} = \operatorname{chol}\Sigma_{t_0}`, with
DOP853 at rtol 1e-13 (the library solves the nonlinear form :math:`\dot R = FR + \tfrac12 GG^\top R^{-\top}`).
Scalar diffusions (:math:`R_t = \sigma_t I`) are covered in ``test_schedules.py``.
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import gddim_numerics as gd


def rel_err(a, b):
    """Largest relative Frobenius error ``|a - b| / |b|`` over all (time, mode) blocks."""
    a, b = np.broadcast_arrays(a, b)
    return float(np.max(np.linalg.norm(a - b, axis=(-2, -1)) / np.linalg.norm(b, axis=(-2, -1))))


def factor_by_linear_ode(drift, diffusion, t0, sigma0, ts):
    r"""``(Sigma_t, R_t)`` at ``ts`` from the Lyapunov ODE and the linear factor ODE, started at ``t0``."""
    k = sigma0.shape[-1]

    def rhs(t, y):
        s, r = y[: k * k].reshape(k, k), y[k * k:].reshape(k, k)
        f, gg = drift(t), diffusion(t)
        return np.concatenate([(f @ s + s @ f.T + gg).ravel(), ((f + 0.5 * gg @ np.linalg.inv(s)) @ r).ravel()])

    ts = np.asarray(ts, dtype=np.float64)
    assert np.all(ts >= t0), "the reference runs forwards from t0"
    y = np.empty((ts.size, 2 * k * k))
    state, start = np.concatenate([sigma0.ravel(), np.linalg.cholesky(sigma0).ravel()]), t0
    y[ts == t0] = state
    for stop in np.unique(ts[ts > t0]):  # each solve ends at a requested time: no dense-output interpolation
        sol = solve_ivp(rhs, (start, stop), state, method="DOP853", rtol=1e-13, atol=1e-16)
        assert sol.success
        state, start = sol.y[:, -1], stop
        y[ts == stop] = state
    return y[:, : k * k].reshape(-1, k, k), y[:, k * k:].reshape(-1, k, k)


def block_drift(sde):
    """``t -> F_t`` as one ``(k, k)`` block of a single-mode diffusion."""
    return lambda t: sde.drift(t)[0]


def block_diffusion(sde):
    r"""``t -> G_tG_t^T`` as one ``(k, k)`` block of a single-mode diffusion."""
    return lambda t: sde.diffusion(t)[0]


CLD_TIMES = np.unique(np.concatenate([np.geomspace(1e-5, 0.1, 25), np.linspace(0.1, 1.0, 19)]))
CLD_SIGMA0 = np.diag([1e-6, 0.04 * 0.25 + 1e-6])  # gDDIM code: diag(eps, gamma M + eps)


@pytest.fixture(scope="module")
def cld():
    """The default CLD (its R_t solve is cached on the instance)."""
    return gd.CLD()


@pytest.fixture(scope="module")
def cld_reference(cld):
    """Independent ``(Sigma_t, R_t)`` of the default CLD on ``CLD_TIMES``."""
    return factor_by_linear_ode(block_drift(cld), block_diffusion(cld), 0.0, CLD_SIGMA0, CLD_TIMES)


def test_cld_factor_reproduces_covariance(cld):
    r""":math:`R_tR_t^\top = \Sigma_t` (closed form) to 1e-11 relative over :math:`[10^{-5}, 1]`."""
    r = cld.gddim_factor(CLD_TIMES)
    assert rel_err(r @ np.swapaxes(r, -1, -2), cld.covariance(CLD_TIMES)) <= 1e-11  # measured 4.0e-16


def test_cld_factor_matches_linear_form_ode(cld, cld_reference):
    r""":math:`R_t` equals the solution of the linear ODE :math:`\dot R = (F + \tfrac12GG^\top\Sigma^{-1})R` from :math:`\operatorname{chol}\Sigma_0`."""
    _, r_ref = cld_reference
    assert rel_err(cld.gddim_factor(CLD_TIMES)[:, 0], r_ref) <= 1e-10  # measured 2.5e-13


def test_cld_cholesky_matches_closed_form(cld, cld_reference):
    r""":math:`L = [[\sqrt{\Sigma_{xx}}, 0], [\Sigma_{xv}/L_{xx}, \sqrt{\Sigma_{vv} - L_{vx}^2}]]` of the reference :math:`\Sigma_t`."""
    s, _ = cld_reference
    lxx = np.sqrt(s[:, 0, 0])
    lvx = s[:, 0, 1] / lxx
    ref = np.zeros_like(s)
    ref[:, 0, 0], ref[:, 1, 0], ref[:, 1, 1] = lxx, lvx, np.sqrt(s[:, 1, 1] - lvx**2)
    assert rel_err(cld.cholesky(CLD_TIMES)[:, 0], ref) <= 1e-10  # measured 2.7e-13


def test_cld_covariance_inverse_inverts_covariance(cld):
    r""":math:`\Sigma_t^{-1}\Sigma_t = I` over :math:`[10^{-5}, 1]`."""
    prod = cld.covariance_inv(CLD_TIMES) @ cld.covariance(CLD_TIMES)
    np.testing.assert_allclose(prod, np.broadcast_to(np.eye(2), prod.shape), atol=1e-10)  # measured 0.006 x tolerance


# ------------------------------------------------------------------------------- other matrix diffusions
def rotating_frame_sde():
    r"""A fixed non-commuting ``LinearSDE`` (:math:`F_t = e^{tW}A_0e^{-tW}`, :math:`GG^\top_t = e^{tW}Qe^{-tW}`) and its :math:`\Sigma_0`."""
    rng = np.random.default_rng(20230101)
    a0 = rng.uniform(-1.0, 1.0, (3, 3)) - 1.5 * np.eye(3)
    w = 2.0 * np.array([[0.0, -1.0, 0.5], [1.0, 0.0, -0.3], [-0.5, 0.3, 0.0]])
    c = rng.uniform(-1.0, 1.0, (3, 2))
    q = c @ c.T  # rank 2

    def f(t):
        return expm(t * w) @ a0 @ expm(-t * w)

    def ggt(t):
        rot = expm(t * w)
        return rot @ q @ rot.T

    sigma0 = np.diag([0.2, 0.05, 0.01])
    return gd.LinearSDE(f, ggt, initial_covariance=sigma0), sigma0


def singular_start_sde():
    r"""A ``ConstantCoefficientSDE`` with :math:`\Sigma_0 = 0`, so :math:`R` starts at ``t_lower = 0.01``, and :math:`\Sigma_{0.01}`.

    :math:`\Sigma_{0.01} = \int_0^{r}e^{uA}Qe^{uA^\top}du` (:math:`r = \beta \cdot 0.01`) by Van Loan's block exponential.
    """
    a, q, beta = np.array([[-0.5, 1.0], [-1.0, -0.7]]), np.diag([0.3, 1.0]), 2.0
    e = expm(beta * 0.01 * np.block([[-a, q], [np.zeros((2, 2)), a.T]]))
    sde = gd.ConstantCoefficientSDE(a, q, beta=beta, time_range=(0.01, 1.0))
    return sde, e[2:, 2:].T @ e[:2, 2:]


@pytest.mark.parametrize("make", [rotating_frame_sde, singular_start_sde], ids=["linear-sde", "singular-sigma0"])
def test_matrix_factor_reproduces_covariance(make):
    r""":math:`R_tR_t^\top = \Sigma_t` over the whole time range."""
    sde, _ = make()
    ts = np.linspace(*sde.time_range, 21)
    r = sde.gddim_factor(ts)
    assert rel_err(r @ np.swapaxes(r, -1, -2), sde.covariance(ts)) <= 2e-11  # measured 1.7e-12 (R by ODE, rtol 1e-12)


@pytest.mark.parametrize("make", [rotating_frame_sde, singular_start_sde], ids=["linear-sde", "singular-sigma0"])
def test_matrix_factor_matches_linear_form_ode(make):
    r""":math:`R_t` is the linear-ODE solution from the Cholesky factor of :math:`\Sigma` at the lower end of the range."""
    sde, sigma_lo = make()
    lo, hi = sde.time_range
    ts = np.linspace(lo, hi, 21)
    _, r_ref = factor_by_linear_ode(block_drift(sde), block_diffusion(sde), lo, sigma_lo, ts)
    assert rel_err(sde.gddim_factor(ts)[:, 0], r_ref) <= 1e-10  # measured 7.4e-13
