"""Breakpoints of a diffusion: the multistep weights on a tabulated schedule converge again.

``VPSDE.discrete`` interpolates the DDPM log-SNR by a PCHIP spline whose second derivative jumps at
every table knot; the weights quadrature splits its panels there. References: ``scipy.integrate.quad_vec``
with ``points=`` at the knots (adaptive Gauss–Kronrod on each smooth piece) of integrands written here
from the diffusion's Psi, GG^T, Sigma and R, and the exact Dirac solution u = m_t + R_t R_T^{-1}(u_T - m_T).
"""

import warnings
from functools import lru_cache

import numpy as np
import pytest
from scipy.integrate import quad_vec

import gddim_numerics as gd
from gaussian_helpers import Gaussian, lagrange, relative_error
from gddim_numerics.quadrature import panel_nodes


@lru_cache(maxsize=None)
def discrete_vp():
    return gd.VPSDE.discrete()  # 1000 knots at t = (n + 1)/1000


def integrand(sde, form, s_to, nodes, j):
    """Weight integrand of ``form`` at tau for the step ending at ``s_to`` (scalar modes: plain products)."""

    def f(tau):
        ta = np.array([tau])
        gg, sig, r_tau = sde.diffusion(ta)[0, 0, 0, 0], sde.covariance(ta)[0, 0, 0, 0], sde.gddim_factor(ta)[0, 0, 0, 0]
        if form == "eps":  # 1/2 Psi(t, tau) GG^T R^{-T}
            kern = 0.5 * sde.transition(np.array([s_to]), ta)[0, 0, 0, 0] * gg / r_tau
        else:  # -R_t R_tau^{-1} 1/2 GG^T Sigma^{-1} Psi(tau, 0)
            r_t = sde.gddim_factor(np.array([s_to]))[0, 0, 0, 0]
            kern = -0.5 * r_t / r_tau * gg / sig * sde.mean_coefficient(ta)[0, 0, 0, 0]
        return np.array([kern * lagrange(nodes, j, tau)])

    return f


def test_discrete_vp_exposes_its_knots_and_analytic_diffusions_none():
    sde = discrete_vp()
    assert np.array_equal(sde.breakpoints, np.arange(1, 1001) / 1000)
    for analytic in (gd.VPSDE.linear(), gd.VPSDE.cosine(), gd.VESDE(), gd.CLD(), gd.BDM((2, 2))):
        assert analytic.breakpoints.shape == (0,)


def test_panels_split_at_breakpoints_integrate_a_kinked_function_exactly():
    """int |tau - c|^3 over intervals holding 0, 1 or 3 kinks: 20-node panels split there are exact to rounding."""
    knots = np.array([0.3, 0.41, 0.55, 0.9])
    a, b = np.array([0.2, 0.35, 0.95, 0.5]), np.array([0.25, 0.5, 0.38, 0.8])  # last two: downward / one knot

    def f(tau):
        return np.sum(np.abs(tau[..., None] - knots) ** 3, axis=-1)

    def antiderivative(x):  # of |x - c|^3: sign(x - c) (x - c)^4 / 4
        d = x[:, None] - knots
        return np.sum(np.sign(d) * d**4 / 4, axis=-1)

    tau, w = panel_nodes(a, b, breakpoints=knots)
    got = np.sum(w * f(tau), axis=1)
    exact = antiderivative(b) - antiderivative(a)
    assert np.max(np.abs(got - exact) / np.abs(exact)) <= 1e-13  # measured 2.4e-16
    tau_plain, w_plain = panel_nodes(a, b)  # without the split the kink costs digits
    assert np.max(np.abs(np.sum(w_plain * f(tau_plain), axis=1) - exact) / np.abs(exact)) > 1e-9


@pytest.mark.parametrize("bad", [[0.5, 0.4], [[0.1, 0.2]], [0.1, np.nan]])
def test_bad_breakpoints_are_refused(bad):
    with pytest.raises(ValueError, match="breakpoints must be a 1-D array of finite, strictly increasing times"):
        panel_nodes(np.array([0.1]), np.array([0.6]), breakpoints=bad)


@lru_cache(maxsize=None)
def short_table_vp():
    """Every 50th entry of the DDPM table: 20 knots, so that quad_vec's pieces stay few."""
    return gd.VPSDE.discrete(alphas_cumprod=discrete_vp().schedule.alphas_cumprod[49::50])


@pytest.mark.parametrize("form", ["eps", "data"])
@pytest.mark.parametrize("order", [2, 3])
def test_discrete_vp_weights_match_quad_vec_at_the_knots_without_warning(form, order):
    """Weights of steps with knots inside agree with quad_vec (epsrel 1e-13) to 1e-11; no warning."""
    sde = short_table_vp()
    ts = gd.time_grid(sde, 8, "power", power=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = gd.GDDIM(sde, ts, order=order, form=form).tables.history
    knots = sde.breakpoints
    worst = 0.0
    for k in (order - 1, 7):
        q, lo, hi = order, min(ts[k], ts[k + 1]), max(ts[k], ts[k + 1])
        nodes = ts[k - np.arange(q)]
        inside = knots[(knots > lo) & (knots < hi)]
        # increasing limits (quad_vec with b < a and points= was off by 2e-11 here), oriented by the sign
        ref = -np.array([quad_vec(integrand(sde, form, ts[k + 1], nodes, j), lo, hi, epsabs=0, epsrel=1e-13,
                                  points=inside, limit=200)[0][0] for j in range(q)])
        worst = max(worst, np.max(np.abs(hist[k, :q, 0, 0, 0] - ref)) / np.max(np.abs(ref)))
    assert worst <= 1e-11  # measured 7.3e-16 (before the knots were panel edges: a RuntimeWarning)


@pytest.mark.parametrize("form", ["eps", "data"])
def test_discrete_vp_corrector_plans_do_not_warn_and_stay_exact_on_dirac_data(form):
    """Order 3 with the corrector at NFE 50 (every knot inside some step): no warning, Dirac error <= 1e-9."""
    sde = discrete_vp()
    rng = np.random.default_rng(0)
    data = Gaussian(sde, (3,), rng.standard_normal(3))
    ts = gd.time_grid(sde, 50)
    x_start = rng.standard_normal((2, 3)) + data.mean(ts[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = gd.GDDIM(sde, ts, order=3, form=form, corrector=True).sample(data.eps_fn("R"), x_start)
    w_start, off = data.eps_affine(ts[0])
    exact = data.mean(ts[-1]) + (x_start @ w_start.T + off) @ data.factor(ts[-1]).T
    assert relative_error(res.x, exact) <= 1e-9  # measured 1.7e-16
