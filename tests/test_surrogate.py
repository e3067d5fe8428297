"""Surrogate error of a plan (gddim_numerics.surrogate) against independent computations.

References: the dense affine output law (affine_law.output_law, docs/math §8.4) probed on basis vectors,
GaussianData.exact_flow (closed form / DOP853), and a hand-written DDIM recursion on 1-D data.
"""

import numpy as np
import pytest

import gddim_numerics as gd
from gddim_numerics.affine_law import output_law
from gddim_numerics.layout import dense_operator
from gddim_numerics.modal import modal_problems
from gddim_numerics.statistics import DataStatistics


def _random_gaussian(sde, ev, seed, spectrum=False):
    rng = np.random.default_rng(seed)
    d = int(np.prod(ev))
    s0 = dense_operator(sde, sde.initial_covariance, ev)
    mean = rng.normal(size=ev)
    a = rng.normal(size=(d, d)) * 0.4
    if sde.block_size > 1:  # data in the first block entry (CLD: positions)
        mask = (np.arange(d) % sde.block_size == 0).astype(float)
        a, mean = a * mask[:, None], mean * mask.reshape(ev)
    clean = a @ a.T
    if spectrum:  # diagonal in mode coordinates (a power spectrum)
        v = gd.layout.basis_matrix(sde, ev)
        clean = v @ np.diag(rng.uniform(0.01, 2.0, d)) @ v.T
    return gd.GaussianData(sde, ev, mean, s0 + clean)


def _dense_reference(problem, tables):
    """Relative RMS pathwise error from output_law (dense, probed on basis vectors) and exact_flow."""
    sde, ev, d = problem.diffusion, problem.event_shape, problem.dim
    ts = tables.ts

    def affine(t):
        m, c = problem.marginal(t)
        k = dense_operator(sde, sde.gddim_factor(np.asarray(t)), ev)
        w = k.T @ np.linalg.inv(c)
        return w, -w @ m

    zero = output_law(sde, tables, ev, affine, np.zeros(d), np.zeros((d, d)))[0]
    p = np.stack([output_law(sde, tables, ev, affine, e, np.zeros((d, d)))[0] - zero for e in np.eye(d)], axis=1)
    base = problem.exact_flow(np.zeros((1,) + ev), ts[0], ts[-1]).reshape(d)
    phi = problem.exact_flow(np.eye(d).reshape((d,) + ev), ts[0], ts[-1]).reshape(d, d).T - base[:, None]
    m_t, c_t = problem.marginal(ts[0])
    e = p - phi
    err2 = np.trace(e @ c_t @ e.T) + np.sum((p @ m_t + zero - phi @ m_t - base) ** 2)
    return np.sqrt(err2 / (np.trace(phi @ c_t @ phi.T) + np.sum((phi @ m_t + base) ** 2)))


CASES = [
    (gd.VPSDE.linear(), (5,), dict(order=3), False),
    (gd.VPSDE.linear(), (2, 3), dict(order=3, form="data", corrector=True), False),
    (gd.VESDE(), (4,), dict(order=2, corrector=True), False),
    (gd.CLD(), (3, 2), dict(order=3), False),
    (gd.CLD(), (3, 2), dict(order=2, form="data", corrector=True, variable="log_snr"), False),
    (gd.BDM((3, 3)), (3, 3), dict(order=3), False),          # dense covariance: one dense problem
    (gd.BDM((3, 3)), (2, 3, 3), dict(order=2, form="data"), True),  # power spectrum: per-mode problems
    (gd.ConstantCoefficientSDE(np.array([[-1.0, 0.5], [-0.3, -0.8]]), np.array([[1.0, 0.2], [0.2, 0.5]]),
                               initial_covariance=0.01 * np.eye(2)), (2, 2), dict(order=3, form="data"), False),
]


@pytest.mark.parametrize("sde, ev, opts, spectrum", CASES)
def test_surrogate_matches_dense_output_law(sde, ev, opts, spectrum):
    """Per-problem surrogate = dense output law + exact flow (measured agreement 3e-11 relative)."""
    problem = _random_gaussian(sde, ev, seed=3, spectrum=spectrum)
    plan = gd.GDDIM(sde, gd.time_grid(sde, 7, "power", power=2), **opts)
    stats = DataStatistics.from_problem(problem)
    got = gd.surrogate_error(plan, stats)
    assert got == pytest.approx(_dense_reference(problem, plan.tables), rel=1e-9)
    assert got > 1e-6  # a real error, not a trivial zero


def test_split_kinds():
    """VP/CLD split into eigen-directions / 2x2 blocks, BDM with a spectrum per mode, BDM dense otherwise."""
    assert modal_problems(DataStatistics.from_problem(_random_gaussian(gd.VPSDE.linear(), (6,), 0))).size == 1
    cld = modal_problems(DataStatistics.from_problem(_random_gaussian(gd.CLD(), (4, 2), 0)))
    assert cld.size == 2 and cld.mean.shape == (4, 2) and cld.exact
    bdm = gd.BDM((3, 3))
    assert modal_problems(DataStatistics.from_problem(_random_gaussian(bdm, (3, 3), 0, spectrum=True))).size == 1
    assert modal_problems(DataStatistics.from_problem(_random_gaussian(bdm, (3, 3), 0))).mode is None


def test_ddim_closed_form_on_one_dimensional_data():
    """q = 1 on N(mu, s^2) under VP: the hand-written DDIM recursion and sqrt(C_end / C_T) flow (to 1e-12)."""
    sde = gd.VPSDE.linear()
    mu, s2 = 0.7, 0.3
    stats = DataStatistics(sde, (1,), [mu], [[s2]])
    ts = gd.time_grid(sde, 6, "uniform")
    m = lambda t: float(sde.mean_coefficient(t)[0, 0, 0])  # noqa: E731
    sig = lambda t: float(np.sqrt(sde.covariance(t)[0, 0, 0]))  # noqa: E731
    c = lambda t: m(t) ** 2 * s2 + sig(t) ** 2  # noqa: E731
    gain, off = 1.0, 0.0  # x_k = gain x_T + off
    for s, t in zip(ts[:-1], ts[1:]):
        # eps = sigma_s (x - m_s mu) / C_s ; x_t = m_t/m_s (x - sigma_s eps) + sigma_t eps
        e_gain, e_off = sig(s) / c(s), -sig(s) * m(s) * mu / c(s)
        a, b = m(t) / m(s), sig(t) - m(t) / m(s) * sig(s)
        gain, off = a * gain + b * e_gain * gain, a * off + b * (e_gain * off + e_off)
    phi = np.sqrt(c(ts[-1]) / c(ts[0]))
    m_t, m_e = m(ts[0]) * mu, m(ts[-1]) * mu
    err2 = (gain - phi) ** 2 * c(ts[0]) + (gain * m_t + off - m_e) ** 2
    expected = np.sqrt(err2 / (phi ** 2 * c(ts[0]) + m_e ** 2))
    assert gd.surrogate_error(gd.GDDIM(sde, ts, order=1), stats) == pytest.approx(expected, rel=1e-12)


def test_dirac_data_have_zero_error_and_stochastic_law_distance():
    """Dirac data: q = 1 exact (1e-12), stochastic gDDIM exact in law; Gaussian data: W2 from the dense law."""
    sde = gd.CLD()
    dirac = DataStatistics.from_problem(gd.DiracData(sde, (2, 2), [[0.5, 0.0], [-1.0, 0.0]]))
    ts = gd.time_grid(sde, 5, "power", power=2)
    assert gd.surrogate_error(gd.GDDIM(sde, ts, order=1), dirac) < 1e-10
    assert gd.surrogate_error(gd.GDDIM(sde, ts, order=1, lam=0.7), dirac) < 1e-6
    # 1-D VP, lam = 1: W2 of the dense output law (affine_law) against N(m_end, C_end)
    vp = gd.VPSDE.linear()
    prob = gd.GaussianData(vp, (1,), [0.4], [[0.5]])
    plan = gd.GDDIM(vp, gd.time_grid(vp, 6, "power", power=2), order=1, lam=1.0)

    def affine(t):
        m, c = prob.marginal(t)
        w = np.sqrt(vp.covariance(t)[0]) / c
        return w, -w @ m

    m_t, c_t = prob.marginal(plan.ts[0])
    mean, cov = output_law(vp, plan.tables, (1,), affine, m_t, c_t)
    m_e, c_e = prob.marginal(plan.ts[-1])
    w2 = np.sqrt((mean[0] - m_e[0]) ** 2 + (np.sqrt(cov[0, 0]) - np.sqrt(c_e[0, 0])) ** 2)
    phi2 = c_e[0, 0] / c_t[0, 0]
    expected = w2 / np.sqrt(phi2 * c_t[0, 0] + m_e[0] ** 2)
    assert gd.surrogate_error(plan, DataStatistics.from_problem(prob)) == pytest.approx(expected, rel=1e-9)


def test_surrogate_bad_input():
    sde = gd.VPSDE.linear()
    plan = gd.GDDIM(sde, gd.time_grid(sde, 4), order=2)
    with pytest.raises(TypeError, match="statistics"):
        gd.surrogate_error(plan, None)
    with pytest.raises(ValueError, match="another diffusion"):
        gd.surrogate_error(plan, DataStatistics.default(gd.VPSDE.linear(), (2,)))
    with pytest.raises(ValueError, match="measure"):
        gd.surrogate_error(plan, DataStatistics.default(sde, (2,)), measure="kl")


def test_component_average_equals_quadrature_over_component_means():
    """component_scale c: the same as summing the c = 1 surrogate over Gauss-Hermite component means (1e-10)."""
    sde = gd.VESDE()
    mu, clean, c = 0.6, 0.8, 0.2
    s0 = float(sde.initial_covariance[0, 0, 0])
    plan = gd.GDDIM(sde, gd.time_grid(sde, 6, "power", power=2), order=2, form="data")
    got = gd.surrogate_error(plan, DataStatistics(sde, (1,), [mu], [[s0 + clean]]), component_scale=c)
    x, w = np.polynomial.hermite_e.hermegauss(12)  # exact for the quadratic dependence on mu'
    err2 = norm2 = 0.0
    for xi, wi in zip(x, w / w.sum()):
        m = mu + np.sqrt((1 - c) * clean) * xi
        stats = DataStatistics(sde, (1,), [m], [[s0 + c * clean]])
        e = gd.surrogate_error(plan, stats)
        t = plan.ts[-1]
        mt = float(sde.mean_coefficient(t)[0, 0, 0]) * m
        ct1 = c * clean * float(sde.mean_coefficient(t)[0, 0, 0]) ** 2 + float(sde.covariance(t)[0, 0, 0])
        n2 = ct1 + mt ** 2  # E|u*|^2 = tr(Phi C_T Phi^T) + m_end^2 with Phi^2 = C_end / C_T
        err2 += wi * e ** 2 * n2
        norm2 += wi * n2
    assert got == pytest.approx(np.sqrt(err2 / norm2), rel=1e-10)


@pytest.mark.parametrize("sde, ev", [(gd.CLD(), (3, 2)), (gd.ConstantCoefficientSDE(
    np.array([[-1.0, 0.4], [-0.3, -0.8]]), np.array([[1.0, 0.2], [0.2, 0.5]]), beta=2.0,
    initial_covariance=0.01 * np.eye(2)), (2, 2))])
def test_prefetched_flows_equal_separate_solves(sde, ev):
    """One stacked ODE solve for several component scales gives each scale's own flow matrix."""
    from gddim_numerics.surrogate import _flow_matrix, component_problems, flow_matrix, prefetch_flows

    stats = DataStatistics.from_problem(_random_gaussian(sde, ev, 3))
    s, t = float(sde.t_start), float(sde.t_end)
    scales = (1.0, 0.1, 1e-3)
    shared = modal_problems(stats)
    prefetch_flows(sde, shared, scales, s, t)
    for c in scales:
        fresh = modal_problems(stats)
        own = fresh if c == 1.0 else component_problems(fresh, sde, c)
        mine = flow_matrix(sde, shared if c == 1.0 else component_problems(shared, sde, c), s, t)
        np.testing.assert_allclose(mine, _flow_matrix(sde, own, s, t), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("sde, ev", [(gd.VPSDE.linear(), (4,)), (gd.CLD(), (3, 2)), (gd.BDM((4, 4)), (4, 4)),
                                     (gd.ConstantCoefficientSDE(np.array([[-1.0, 0.4], [-0.3, -0.8]]),
                                                                np.eye(2), beta=2.0,
                                                                initial_covariance=0.01 * np.eye(2)), (3, 2))])
def test_ensemble_errors_equal_each_members_surrogate_error(sde, ev):
    """ensemble_errors (the members' problems stacked, one recursion) gives every component scale the error
    surrogate_error gives it alone."""
    from gddim_numerics.surrogate import ensemble_errors

    stats = DataStatistics.from_problem(_random_gaussian(sde, ev, 5, spectrum=sde.n_modes > 1))
    plan = gd.GDDIM(sde, gd.time_grid(sde, 7, "power", power=2), order=3, form="data", corrector=True)
    scales = (1.0, 0.1, 1e-3)
    want = [gd.surrogate_error(plan, stats, component_scale=c) for c in scales]
    np.testing.assert_allclose(ensemble_errors(plan.tables, stats, scales), want, rtol=1e-12)


@pytest.mark.parametrize("sde, ev", [(gd.VPSDE.linear(), (40,)), (gd.CLD(), (40, 2))])
def test_grouped_problems_are_exact_for_equal_covariances_and_any_parallel_means(sde, ev):
    """Problems with one covariance and means along one direction merge into one weighted representative
    (modal.group_problems) whose surrogate error equals the ungrouped sum to rounding."""
    from gddim_numerics.modal import group_problems
    from gddim_numerics.surrogate import ensemble_errors

    rng = np.random.default_rng(7)
    copies = ev[0]
    mean, clean = np.zeros((copies, sde.block_size)), np.zeros((copies, sde.block_size))
    mean[:, 0], clean[:, 0] = rng.normal(size=copies), 0.7  # CLD: positions carry the data
    mean, clean = mean.reshape(ev), clean.reshape(ev)
    s0 = np.broadcast_to(np.diagonal(sde.initial_covariance[0]), (copies, sde.block_size)).reshape(ev)
    stats = DataStatistics(sde, ev, mean, s0 + clean)
    problems = modal_problems(stats)
    grouped = group_problems(problems, sde, 1e-2)
    assert grouped.cov.shape[0] == 1 and grouped.weights[0] == copies
    plan = gd.GDDIM(sde, gd.time_grid(sde, 6, "power", power=2), order=3, form="data", corrector=True)
    scales = (1.0, 0.1)
    np.testing.assert_allclose(ensemble_errors(plan.tables, stats, scales, problems=grouped),
                               ensemble_errors(plan.tables, stats, scales, problems=problems), rtol=1e-12)


def test_grouped_problems_of_nearly_equal_variances_stay_close():
    """Variances spread by 0.5% (within the grouping tolerance 1e-2): the grouped error is within 1e-4 relative
    of the ungrouped one (measured 1.8e-6); a spread beyond the tolerance is not grouped."""
    from gddim_numerics.modal import group_problems
    from gddim_numerics.surrogate import ensemble_errors

    sde = gd.VPSDE.linear()
    rng = np.random.default_rng(8)
    var = 0.8 * (1 + 0.005 * rng.uniform(size=64))
    stats = DataStatistics(sde, (64,), rng.normal(size=64), var)  # VP: Sigma_0 = 0
    problems = modal_problems(stats)
    grouped = group_problems(problems, sde, 1e-2)
    assert grouped.cov.shape[0] == 1
    plan = gd.GDDIM(sde, gd.time_grid(sde, 10, "power", power=2), order=3, form="data", corrector=True)
    scales = (1.0, 0.01)
    np.testing.assert_allclose(ensemble_errors(plan.tables, stats, scales, problems=grouped),
                               ensemble_errors(plan.tables, stats, scales, problems=problems), rtol=1e-4)
    spread = DataStatistics(sde, (64,), np.zeros(64), np.geomspace(0.1, 10.0, 64))  # 7.6% apart
    assert group_problems(modal_problems(spread), sde, 1e-2).cov.shape[0] == 64


def test_ensemble_errors_bad_input():
    """Scales outside (0, 1], a stochastic plan or wrong argument types: errors naming the argument."""
    from gddim_numerics.surrogate import ensemble_errors

    sde = gd.VPSDE.linear()
    stats = DataStatistics(sde, (2,), np.zeros(2), np.ones(2))
    plan = gd.GDDIM(sde, gd.time_grid(sde, 5, "power", power=2), order=2)
    for bad in ([0.0], [1.5, 0.1], [], [np.nan]):
        with pytest.raises(ValueError, match="scales"):
            ensemble_errors(plan.tables, stats, bad)
    with pytest.raises(ValueError, match="deterministic"):
        ensemble_errors(gd.GDDIM(sde, gd.time_grid(sde, 5), lam=1.0).tables, stats, [1.0])
    with pytest.raises(TypeError, match="tables"):
        ensemble_errors(plan, stats, [1.0])
    with pytest.raises(TypeError, match="statistics"):
        ensemble_errors(plan.tables, None, [1.0])
