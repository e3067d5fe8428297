"""Switching probes of gddim_auto's guard against independent computations, and auto vs the paper's scheme
on a fresh switching mixture."""

import numpy as np
import pytest

import gddim_numerics as gd
from gddim_numerics import auto
from gddim_numerics.modal import modal_problems
from gddim_numerics.probe import ProbeSet
from gddim_numerics.statistics import DataStatistics


def _mixture(sde, ev, probes: ProbeSet, i: int) -> gd.GaussianMixture:
    """The probe ``i`` as a GaussianMixture of ``sde`` on a one-copy event (the probed problem is the whole event)."""
    pr = probes.probes[i]
    s0 = sde.initial_covariance[0]
    return gd.GaussianMixture(sde, ev, pr.weights, pr.means.reshape((2,) + ev), [s0 + pr.excess] * 2)


def _vp_probe(weight=0.3, scale=0.05):
    sde = gd.VPSDE.linear()
    stats = DataStatistics(sde, (1,), np.array([0.4]), np.array([[1.7]]))
    return sde, stats, ProbeSet(sde, modal_problems(stats), sde.t_start, sde.t_end, [(weight, scale)])


def test_probe_keeps_the_data_moments():
    """Mean and variance of the two-component probe are the statistics' (closed form of a mixture's moments)."""
    _, _, probes = _vp_probe()
    pr = probes.probes[0]
    mean = pr.weights @ pr.means[:, 0]
    var = pr.excess[0, 0] + pr.weights @ (pr.means[:, 0] - mean) ** 2
    assert mean == pytest.approx(0.4, abs=1e-14) and var == pytest.approx(1.7, rel=1e-13)
    assert pr.excess[0, 0] == pytest.approx(0.05 * 1.7, rel=1e-13)  # the components' own variance c * lambda


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.4, 1.0])
def test_probe_score_matches_gaussian_mixture(t):
    """The probe's exact score equals GaussianMixture.score (separate implementation) and a finite difference of
    the log density."""
    sde, _, probes = _vp_probe()
    mix = _mixture(sde, (1,), probes, 0)
    u = np.linspace(-3.0, 3.0, 13)[None, :]
    got = probes.score(probes.probes[0], t, u)[0]
    want = mix.score(u.T, t)[:, 0]
    assert np.max(np.abs(got - want)) <= 1e-10 * np.max(np.abs(want))  # measured 1.2e-15
    h = 1e-5
    fd = (mix.log_prob(u.T + h, t) - mix.log_prob(u.T - h, t)) / (2 * h)
    assert np.max(np.abs(got - fd)) <= 1e-6 * np.max(np.abs(fd))  # measured 1.3e-9 (O(h^2) + rounding/h)


@pytest.mark.parametrize("sde", [gd.VPSDE.linear(), gd.VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("weight, scale", [(0.3, 0.05), (0.5, 0.01)])
def test_scalar_probe_reference_matches_reference_flow(sde, weight, scale):
    """Scalar problems: the quantile-map end points equal GaussianMixture.reference_flow (DOP853, rtol 1e-12)."""
    stats = DataStatistics(sde, (1,), np.array([0.4]), np.array([[1.7]]) + sde.initial_covariance[0])
    probes = ProbeSet(sde, modal_problems(stats), sde.t_start, sde.t_end, [(weight, scale)])
    pr = probes.probes[0]
    want = _mixture(sde, (1,), probes, 0).reference_flow(pr.start.T, sde.t_start, sde.t_end, 1e-12, 1e-14)[:, 0]
    assert np.max(np.abs(pr.end[0] - want)) <= 1e-10 * np.max(np.abs(want))  # measured 3.4e-13 at most


def test_cld_probe_reference_matches_reference_flow():
    """CLD (2 x 2 blocks): the probe's end points equal GaussianMixture.reference_flow of the same mixture."""
    sde = gd.CLD()
    cov = sde.initial_covariance[0].copy()
    cov[0, 0] += 0.8
    stats = DataStatistics(sde, (1, 2), np.array([[0.2, 0.0]]), cov)
    probes = ProbeSet(sde, modal_problems(stats), sde.t_start, sde.t_end, [(0.5, 0.05)])
    pr = probes.probes[0]
    mix = _mixture(sde, (1, 2), probes, 0)
    want = mix.reference_flow(pr.start.T[:8, None, :], probes.t_start, probes.t_end, 1e-11, 1e-13)[:, 0, :]
    assert np.max(np.abs(pr.end.T[:8] - want)) <= 1e-6 * np.max(np.abs(want))  # measured 1.7e-11


def test_probe_errors_of_a_plan_match_sampling_the_mixture():
    """ProbeSet.errors runs a plan's tables on the probe as GDDIM.sample does on the GaussianMixture's network."""
    sde, _, probes = _vp_probe()
    pr = probes.probes[0]
    plan = gd.GDDIM(sde, gd.time_grid(sde, 10, "power", power=2), order=2, form="data", corrector=True)
    x = plan.sample(_mixture(sde, (1,), probes, 0).eps_R, pr.start.T.copy()).x[:, 0]
    want = np.linalg.norm(x - pr.end[0]) / np.linalg.norm(pr.end[0])
    assert probes.errors(plan.tables)[0] == pytest.approx(want, rel=1e-9)  # measured 2e-13


@pytest.mark.parametrize("kind, nfe", [("ve", 10), ("vp", 10)])
def test_auto_not_worse_than_paper_on_a_fresh_switching_mixture(kind, nfe):
    """A 3-component sharp mixture (not from the design family): gddim_auto's error <= the paper's scheme's
    against a DOP853 reference of the exact flow."""
    rng = np.random.default_rng(20261207)
    sde, d = (gd.VESDE(), 6) if kind == "ve" else (gd.VPSDE.linear(), 5)
    means = rng.normal(size=(3, d))
    covs = [0.01 * np.eye(d) + sde.initial_covariance[0, 0, 0] * np.eye(d)] * 3
    data = gd.GaussianMixture(sde, (d,), [0.5, 0.3, 0.2], means, covs)
    x = data.sample_prior(32, rng=rng)
    ref = data.reference_flow(x, sde.t_start, sde.t_end, 1e-10, 1e-12)
    paper = gd.GDDIM(sde, gd.time_grid(sde, nfe, "power", power=2), order=3)
    plan = gd.auto_plan(sde, nfe, DataStatistics.from_problem(data))

    def err(p):
        return np.linalg.norm(p.sample(data.eps_R, x.copy()).x - ref) / np.linalg.norm(ref)

    # measured ratio 0.26 (VE: data form q=3 + corrector), 0.81 (VP: the paper's scheme, optimised grid)
    assert err(plan) <= err(paper)


def test_multi_mode_diffusion_probes_one_problem_per_frequency_band():
    """BDM scored per mode: the probes run in the largest-variance mode of each of PROBE_BANDS bands of the modes'
    decay rate (the largest first); a spike of variance planted inside each band is found."""
    from gddim_numerics.auto_search import PROBE_BANDS, PROBES, Search
    from gddim_numerics.statistics import sigma0_mode_diagonal

    sde = gd.BDM((12, 12))
    rate = sde._dlog_mean(np.asarray(0.5 * (sde.t_start + sde.t_end)))
    rank = np.argsort(np.argsort(rate, kind="stable"), kind="stable")  # rank of each mode's decay rate
    excess = np.random.default_rng(11).uniform(0.01, 0.1, 144)
    spiked = [np.flatnonzero(rank == r)[0] for r in (128, 96, 60, 20)]  # well inside the bands of 40, 40, 32, 32 ranks
    excess[spiked] = [5.0, 4.0, 3.0, 2.0]  # the largest first
    variances = sigma0_mode_diagonal(sde, (12, 12)).ravel() + excess
    search = Search(DataStatistics(sde, (12, 12), np.zeros((12, 12)), variances.reshape(12, 12)))
    assert PROBE_BANDS == 4
    np.testing.assert_allclose(search.problems.cov[search.probed, 0, 0], variances[spiked], rtol=1e-14)
    plan = gd.GDDIM(sde, gd.time_grid(sde, 6, "power", power=2), order=2)
    errors = search.probe_errors(auto.Scheme("eps", 2, False), plan.ts)
    assert errors.shape == (PROBE_BANDS, len(PROBES)) and np.all(np.isfinite(errors)) and np.all(errors > 0)


@pytest.mark.parametrize("sde, ev", [(gd.VPSDE.linear(), (1,)), (gd.CLD(), (1, 2))])
def test_probes_run_together_match_sampling_each_mixture(sde, ev):
    """Several probes run in one recursion (ProbeSet.errors): each error equals GDDIM.sample on that probe's
    GaussianMixture, for a scalar (VP) and a 2x2-block (CLD) problem."""
    d = int(np.prod(ev))
    clean = np.diag([1.3] + [0.0] * (d - 1))
    s0 = gd.layout.dense_operator(sde, sde.initial_covariance, ev)
    stats = DataStatistics(sde, ev, np.full(ev, 0.2) * (np.arange(d) == 0).reshape(ev), s0 + clean)
    specs = [(0.3, 0.05), (0.5, 0.2), (0.8, 0.01)]
    probes = ProbeSet(sde, modal_problems(stats), sde.t_start, sde.t_end, specs)
    plan = gd.GDDIM(sde, gd.time_grid(sde, 8, "power", power=2), order=3, form="data", corrector=True)
    got = probes.errors(plan.tables)
    for i, pr in enumerate(probes.probes):
        start = pr.start.T.reshape((-1,) + ev)
        x = plan.sample(_mixture(sde, ev, probes, i).eps_R, start.copy()).x.reshape(len(start), -1)
        want = np.linalg.norm(x.T - pr.end) / np.linalg.norm(pr.end)
        assert got[i] == pytest.approx(want, rel=1e-9)
