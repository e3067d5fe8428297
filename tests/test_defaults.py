"""Measured defaults (gddim_numerics.defaults) and the named methods "gddim" (paper) and "gddim_tuned"."""

import numpy as np
import pytest

import gddim_numerics as gd
from gddim_numerics import defaults
from gaussian_helpers import Gaussian, relative_error


def test_table_is_well_formed():
    for kind in defaults.KINDS:
        rows = defaults.TUNED[kind]
        assert [m for m, _ in rows] == sorted(m for m, _ in rows)
        for _, opts in rows:
            assert set(opts) == {"form", "variable", "order", "corrector", "grid"}
            assert opts["form"] in ("eps", "data") and 1 <= opts["order"] <= 5
            assert opts["grid"]["kind"] in gd.GRID_KINDS


@pytest.mark.parametrize("kind", defaults.KINDS)
@pytest.mark.parametrize("nfe", [1, 2, 5, 20])
def test_tuned_method_costs_nfe_and_is_exact_on_dirac_data(kind, nfe):
    """gddim_tuned evaluates the network exactly nfe times and is exact (1e-9) on Dirac data for every kind."""
    sde = defaults.study_diffusion(kind)
    ev = defaults.EVENT_SHAPES[kind]
    rng = np.random.default_rng(nfe)
    data = Gaussian(sde, ev, rng.standard_normal(ev) * (np.arange(ev[-1]) == 0 if kind == "cld" else 1.0))
    fast = gd.DiracData(sde, ev, data.mu.reshape(ev))
    x = fast.sample_marginal(sde.t_start, 2, rng=1)
    calls = []

    def eps(xx, t):
        calls.append(t)
        return fast.eps_R(xx, t)

    res = gd.sample(sde, eps, x, method="gddim_tuned", nfe=nfe)
    assert res.nfe == len(calls) == nfe
    w, off = data.eps_affine(res.ts[0])
    exact = data.mean(res.ts[-1]) + (x.reshape(2, -1) @ w.T + off) @ data.factor(res.ts[-1]).T
    assert relative_error(res.x, exact.reshape(x.shape)) <= 1e-9  # measured 8.8e-11


def test_diffusion_kinds():
    assert defaults.diffusion_kind(gd.VPSDE.cosine()) == "vp"
    assert defaults.diffusion_kind(gd.VESDE()) == "ve"
    assert defaults.diffusion_kind(gd.CLD()) == "cld"
    assert defaults.diffusion_kind(gd.BDM((4, 4))) == "bdm"
    assert defaults.diffusion_kind(defaults.study_diffusion("dense")) == "dense"


def test_gddim_keeps_the_papers_scheme():
    """method="gddim" is the paper's scheme: ε form, extrapolation in t, order 2, grid uniform in sqrt(t)."""
    sde = gd.CLD()
    prob = gd.GaussianData(sde, (1, 2), np.array([[0.5, 0.0]]), np.diag([0.25, 0.01 + 1e-6]))
    x = prob.sample_marginal(1.0, 3, rng=0)
    a = gd.sample(sde, prob.eps_R, x, method="gddim", nfe=10)
    ts = np.linspace(1.0, np.sqrt(sde.t_end), 11) ** 2
    b = gd.GDDIM(sde, ts, order=2, form="eps", variable="t", corrector=False).sample(prob.eps_R, x)
    np.testing.assert_allclose(a.ts, ts, rtol=1e-14)  # measured 1.7e-15 (relative)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-12, atol=1e-14)  # measured 0.004 x tolerance
    assert defaults.PAPER["form"] == "eps" and defaults.PAPER["grid"] == dict(kind="power", power=2.0)


def test_tuned_plan_options():
    """Overrides, a user grid, and the automatic drop of what one step cannot carry."""
    sde = gd.VPSDE.linear()
    plan = defaults.tuned_plan(sde, 10, order=2, power=2.5)
    assert plan.order == 2 and len(plan.ts) == 11
    ts = gd.time_grid(sde, 10, "power", power=2.0)
    assert np.array_equal(defaults.tuned_plan(sde, 10, ts=ts).ts, ts)
    assert defaults.tuned_plan(sde, 1).corrector is False
    with pytest.raises(ValueError, match="corrector"):
        defaults.tuned_plan(sde, 1, corrector=True)
    with pytest.raises(ValueError, match="ts"):
        defaults.tuned_plan(sde, 10, ts=ts[:5])
    with pytest.raises(ValueError, match="nfe"):
        defaults.tuned_options(sde, 0)


@pytest.mark.parametrize("kind", ["vp", "bdm"])
def test_tuned_beats_paper_on_the_tuning_gaussian(kind):
    """Regression on the tuning set (Gaussian data, S != Sigma_0): the defaults are at least 3x more accurate at NFE 10, 20."""
    case = defaults.study_case(kind, "gauss")
    for nfe in (10, 20):
        tuned = defaults.evaluate(case, nfe, defaults._fit_to_steps(defaults.tuned_options(case.diffusion, nfe), nfe))
        assert tuned * 3 <= defaults.paper_error(case, nfe), (nfe, tuned, defaults.paper_error(case, nfe))


def test_study_error_matches_an_independent_reference():
    """The study's error (paper scheme, VP, tuning Gaussian, NFE 10) equals the Frobenius error against a DOP853
    PF-ODE solve with the exact Gaussian score written in tests/gaussian_helpers (no problems.py, no R)."""
    case = defaults.study_case("vp", "gauss")
    problem, sde = case.problem, case.diffusion
    data = Gaussian(sde, problem.event_shape, np.ravel(problem.mean), problem.cov)
    ref = data.flow_ode(case.x_start, sde.t_start, sde.t_end)
    ts = gd.time_grid(sde, 10, "power", power=2.0)
    out = gd.GDDIM(sde, ts, order=2).sample(data.eps_fn(), case.x_start).x
    independent = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert defaults.paper_error(case, 10) == pytest.approx(independent, rel=1e-6)  # measured 2.4e-12
