"""Exact-score problems against independent computations.

Dense operators are built here with ``np.kron`` and ``scipy.fft.dctn`` (not with
``gddim_numerics.layout``); marginals come from a Lyapunov ``solve_ivp``; densities from
``scipy.stats.multivariate_normal``; posterior means from the Gaussian conditioning formula.
"""

from functools import lru_cache
from math import prod

import array_api_strict
import numpy as np
import pytest
import torch
from array_api_compat import array_namespace, is_array_api_strict_namespace
from hypothesis import given
from hypothesis import strategies as st
from scipy.fft import dctn, idctn
from scipy.integrate import solve_ivp
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

import gddim_numerics as gd
from gddim_numerics.problems import DiracData, GaussianData, GaussianMixture

VP = gd.VPSDE.linear()
CLD = gd.CLD()
BDM = gd.BDM((4, 4))
DENSE = gd.ConstantCoefficientSDE(
    np.array([[-1.0, 0.8, 0.0], [-0.4, -1.5, 0.6], [0.3, 0.0, -2.0]]),
    np.array([[1.0, 0.2, 0.0], [0.2, 0.5, 0.0], [0.0, 0.0, 0.0]]),
    beta=2.0,
    initial_covariance=np.diag([0.02, 0.01, 0.03]),
)
SETUPS = {"vp": (VP, (3,)), "cld": (CLD, (3, 2)), "bdm": (BDM, (1, 4, 4)), "dense": (DENSE, (2, 3))}
T_MID = 0.5


# ---------------------------------------------------------------------- independent constructions
def dense(diffusion, mats, event_shape):
    """Per-mode blocks as a matrix on the flattened event, built from np.kron and scipy's dctn."""
    mats = np.asarray(mats)
    if isinstance(diffusion.basis, gd.DCTBasis):
        t = dct_2d(diffusion.basis.shape)
        unit = t.T @ np.diag(mats[:, 0, 0]) @ t
    else:
        unit = mats[0]
    return np.kron(np.eye(prod(event_shape) // unit.shape[0]), unit)


@lru_cache(maxsize=None)
def dct_2d(shape):
    """Flattened orthonormal 2-D DCT-II: column j is dctn of the j-th unit image."""
    h, w = shape
    return np.stack([dctn(e.reshape(h, w), type=2, norm="ortho").ravel() for e in np.eye(h * w)], axis=1)


def random_psd(rng, d, scale):
    b = scale * rng.standard_normal((d, d))
    return b @ b.T


def sigma0(name):
    diffusion, event_shape = SETUPS[name]
    return dense(diffusion, diffusion.initial_covariance, event_shape)


def random_mean(rng, name):
    diffusion, event_shape = SETUPS[name]
    mean = rng.standard_normal(event_shape)
    if diffusion is CLD:
        mean[..., 1] = 0.0
    return mean


@lru_cache(maxsize=None)
def gaussian(name, seed=0):
    diffusion, event_shape = SETUPS[name]
    rng = np.random.default_rng(seed)
    d = prod(event_shape)
    return GaussianData(diffusion, event_shape, random_mean(rng, name), sigma0(name) + random_psd(rng, d, 0.4))


@lru_cache(maxsize=None)
def mixture(name, dirac=False, seed=0):
    diffusion, event_shape = SETUPS[name]
    rng = np.random.default_rng(seed)
    d = prod(event_shape)
    weights = np.array([0.5, 0.3, 0.2])
    means = np.stack([random_mean(rng, name) for _ in weights])
    covs = None if dirac else np.stack([sigma0(name) + random_psd(rng, d, 0.3) for _ in weights])
    return GaussianMixture(diffusion, event_shape, weights, means, covs)


@lru_cache(maxsize=None)
def lyapunov_marginal(problem, k, t):
    """Mean and covariance of component ``k`` at ``t`` by solve_ivp from ``(mu_k, S_k)``."""
    diffusion, event_shape, d = problem.diffusion, problem.event_shape, problem.dim

    def rhs(tau, y):
        f = dense(diffusion, diffusion.drift(tau), event_shape)
        gg = dense(diffusion, diffusion.diffusion(tau), event_shape)
        m, c = y[:d], y[d:].reshape(d, d)
        return np.concatenate([f @ m, (f @ c + c @ f.T + gg).ravel()])

    y0 = np.concatenate([problem.means[k].ravel(), problem.covs[k].ravel()])
    y = solve_ivp(rhs, (0.0, t), y0, method="DOP853", rtol=1e-12, atol=1e-14).y[:, -1]
    return y[:d], y[d:].reshape(d, d)


def log_density(problem, x, t):
    """log p_t at flattened points ``x`` (B, D) by scipy's multivariate normal."""
    terms = [np.log(w) + multivariate_normal(*lyapunov_marginal(problem, k, t)).logpdf(x)
             for k, w in enumerate(problem.weights)]
    return logsumexp(np.stack(terms), axis=0), np.stack(terms)


def states(problem, t, n, seed=1):
    return problem.sample_marginal(t, n, np.random.default_rng(seed))


# ---------------------------------------------------------------------- marginals and score
@pytest.mark.parametrize("name", list(SETUPS))
def test_marginal_matches_lyapunov_propagation(name):
    problem = gaussian(name)
    mean, cov = problem.marginal(T_MID)
    ref_mean, ref_cov = lyapunov_marginal(problem, 0, T_MID)
    np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=1e-10)  # measured 1.4e-14
    np.testing.assert_allclose(cov, ref_cov, rtol=0, atol=1e-10 * np.abs(ref_cov).max())  # measured 4.3e-14


@pytest.mark.parametrize("name", ["cld", "bdm", "dense"])
def test_mixture_marginals_match_lyapunov_propagation(name):
    problem = mixture(name)
    means, covs = problem.marginal(T_MID)
    for k in range(problem.n_components):
        ref_mean, ref_cov = lyapunov_marginal(problem, k, T_MID)
        np.testing.assert_allclose(means[k], ref_mean, rtol=0, atol=1e-10)  # measured 9.5e-15
        np.testing.assert_allclose(covs[k], ref_cov, rtol=0, atol=1e-10 * np.abs(ref_cov).max())  # measured 3.6e-14


@pytest.mark.parametrize("kind", ["gaussian", "mixture", "dirac_mixture"])
@pytest.mark.parametrize("name", list(SETUPS))
def test_score_is_the_gradient_of_scipy_log_density(name, kind):
    problem = {"gaussian": gaussian, "mixture": mixture, "dirac_mixture": lambda n: mixture(n, dirac=True)}[kind](name)
    x = states(problem, T_MID, 4).reshape(4, -1)
    logp = log_density(problem, x, T_MID)[0]
    log_prob = problem.log_prob(x.reshape((4,) + problem.event_shape), T_MID)
    np.testing.assert_allclose(log_prob, logp, rtol=1e-12, atol=1e-10)  # measured 0.01 x tolerance
    h = 1e-5
    steps = h * np.eye(problem.dim)
    fd = np.stack([(log_density(problem, x + e, T_MID)[0] - log_density(problem, x - e, T_MID)[0]) / (2 * h)
                   for e in steps], axis=-1)
    score = problem.score(x.reshape((4,) + problem.event_shape), T_MID).reshape(4, -1)
    np.testing.assert_allclose(score, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())  # measured 0.005 x tolerance


@given(seed=st.integers(0, 2**16), t=st.floats(0.05, 0.95), name=st.sampled_from(["cld", "dense", "bdm"]))
def test_noise_outputs_are_factor_transposes_times_score(seed, t, name):
    r""":math:`\epsilon_R = -R^\top s`, :math:`\epsilon_L = -L^\top s`, :math:`\epsilon_L = L^{-1}R\epsilon_R`."""
    problem = mixture(name)
    diffusion, event_shape = SETUPS[name]
    x = states(problem, t, 3, seed)
    score = problem.score(x, t).reshape(3, -1)
    r = dense(diffusion, diffusion.gddim_factor(t), event_shape)
    lo = dense(diffusion, diffusion.cholesky(t), event_shape)
    eps_r = problem.eps_R(x, t).reshape(3, -1)
    eps_l = problem.eps_L(x, t).reshape(3, -1)
    scale = np.abs(eps_r).max()
    np.testing.assert_allclose(eps_r, -score @ r, rtol=0, atol=1e-12 * scale)  # measured 1.3e-15
    np.testing.assert_allclose(eps_l, -score @ lo, rtol=0, atol=1e-12 * scale)  # measured 1.3e-15
    np.testing.assert_allclose(eps_l.T, np.linalg.solve(lo, r @ eps_r.T), rtol=0, atol=1e-10 * scale)  # measured 5.3e-12


# ---------------------------------------------------------------------- data prediction (Tweedie)
def posterior_mean(problem, x, t):
    r"""E[clean u0 | u_t = x] by conditioning: clean ~ N(mu_k, S_k - Sigma_0), u_t = Psi clean + N(0, Sigma_t)."""
    diffusion, event_shape = problem.diffusion, problem.event_shape
    psi = dense(diffusion, diffusion.mean_coefficient(t), event_shape)
    sig = dense(diffusion, diffusion.covariance(t), event_shape)
    s0 = dense(diffusion, diffusion.initial_covariance, event_shape)
    resp = softmax(log_density(problem, x, t)[1], axis=0)  # (K, B)
    out = 0.0
    for k, mu in enumerate(problem.means.reshape(problem.n_components, -1)):
        prior = problem.covs[k] - s0
        gain = prior @ psi.T @ np.linalg.inv(psi @ prior @ psi.T + sig)
        out = out + resp[k][:, None] * (mu + (x - psi @ mu) @ gain.T)
    return out


@pytest.mark.parametrize("kind", ["gaussian", "mixture", "dirac_mixture"])
@pytest.mark.parametrize("name", list(SETUPS))
def test_data_prediction_is_the_posterior_mean(name, kind):
    problem = {"gaussian": gaussian, "mixture": mixture, "dirac_mixture": lambda n: mixture(n, dirac=True)}[kind](name)
    for t in (0.1, T_MID):
        x = states(problem, t, 5)
        got = problem.data_prediction(x, t).reshape(5, -1)
        expected = posterior_mean(problem, x.reshape(5, -1), t)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * max(1.0, np.abs(expected).max()))  # measured 7.0e-13


def test_dirac_data_prediction_is_the_point():
    mu = np.array([[0.3, 0.0], [-1.2, 0.0], [2.0, 0.0]])
    problem = DiracData(CLD, (3, 2), mu)
    x = states(problem, 0.02, 4)
    np.testing.assert_allclose(problem.data_prediction(x, 0.02), np.broadcast_to(mu, x.shape), rtol=0, atol=1e-12)  # measured 2.5e-16


# ---------------------------------------------------------------------- flows
@pytest.mark.parametrize("name", ["cld", "dense"])
def test_dirac_eps_R_is_constant_along_reference_flow_but_eps_L_is_not_on_cld(name):
    """docs/math §2.4: with S = Sigma_0, eps_R(u(t), t) is constant on probability-flow trajectories."""
    diffusion, event_shape = SETUPS[name]
    problem = DiracData(diffusion, event_shape, random_mean(np.random.default_rng(3), name))
    x_start = problem.sample_prior(3, np.random.default_rng(4))
    eps_r0, eps_l0 = problem.eps_R(x_start, 1.0), problem.eps_L(x_start, 1.0)
    eps_l_drift = 0.0
    for t in (0.5, 0.1, 1e-2, 1e-3):
        x = problem.reference_flow(x_start, 1.0, t)
        # reference_flow is DOP853 at rtol 1e-10: measured 4.3e-10 (eps ~ 1)
        np.testing.assert_allclose(problem.eps_R(x, t), eps_r0, rtol=0, atol=5e-9)  # measured 4.2e-10
        eps_l_drift = max(eps_l_drift, np.abs(problem.eps_L(x, t) - eps_l0).max())
    if diffusion is CLD:
        assert eps_l_drift > 0.1 * np.abs(eps_l0).max()


@pytest.mark.parametrize("name", list(SETUPS))
def test_exact_flow_matches_reference_flow(name):
    problem = gaussian(name)
    s, t = problem.diffusion.t_start, 0.01
    x_s = problem.sample_prior(3, np.random.default_rng(5))
    reference = problem.reference_flow(x_s, s, t)
    np.testing.assert_allclose(problem.exact_flow(x_s, s, t), reference, rtol=0, atol=1e-9)  # measured 8.6e-11
    back = problem.exact_flow(reference, t, s)  # the flow runs both ways
    np.testing.assert_allclose(back, x_s, rtol=0, atol=1e-8 * np.abs(x_s).max())  # measured 1.2e-10


def test_bdm_exact_flow_closed_form_for_mode_diagonal_data():
    """S diagonal in the DCT basis: the flow is a scalar map per frequency (scipy.fft.dctn).

    Per frequency ``f``: ``C_t = m_t^2 (S_f - Sigma_0) + Sigma_t`` and
    ``x(t) = m_t mu + sqrt(C_t / C_s) (x(s) - m_s mu)``; measured 2.2e-15 (tolerance 1e-12). The
    DOP853 ``reference_flow`` (rtol 1e-10) agrees to 1.0e-9 on values of size ~3; its tolerance
    1e-7 is 100x that (a 1e-9 tolerance failed on another CPU's BLAS).
    """
    rng = np.random.default_rng(6)
    sigma0 = BDM.initial_covariance[:, 0, 0]
    per_mode = BDM.initial_covariance + rng.uniform(0.1, 1.0, (16, 1, 1))
    mu = rng.standard_normal((2, 4, 4))
    problem = GaussianData(BDM, (2, 4, 4), mu, per_mode)
    assert problem._flow_basis is not None  # closed-form branch
    x_s = problem.sample_prior(2, rng)
    s, t = 0.9, 0.01

    def m(tt):
        return BDM.mean_coefficient(tt)[:, 0, 0]

    def c(tt):
        return m(tt) ** 2 * (per_mode[:, 0, 0] - sigma0) + BDM.covariance(tt)[:, 0, 0]

    x_hat = dctn(x_s, axes=(-2, -1), norm="ortho").reshape(2, 2, 16)
    mu_hat = dctn(mu, axes=(-2, -1), norm="ortho").reshape(2, 16)
    y_hat = m(t) * mu_hat + np.sqrt(c(t) / c(s)) * (x_hat - m(s) * mu_hat)
    expected = idctn(y_hat.reshape(2, 2, 4, 4), axes=(-2, -1), norm="ortho")
    flow = problem.exact_flow(x_s, s, t)
    np.testing.assert_allclose(flow, expected, rtol=0, atol=1e-12)  # measured 2.2e-15
    np.testing.assert_allclose(flow, problem.reference_flow(x_s, s, t), rtol=0, atol=1e-7)  # measured 1.0e-09


def test_vp_exact_flow_matches_the_scalar_closed_form():
    """docs/math §8.2: x(t) = m_t mu + sqrt(C_t / C_s)(x(s) - m_s mu), C_t = m_t^2 s^2 + sigma_t^2."""
    mu, var = np.array([0.5, -1.0, 2.0]), 0.3
    problem = GaussianData(VP, (3,), mu, var * np.eye(3))
    x_s = np.random.default_rng(7).standard_normal((4, 3))
    s, t = 0.8, 0.05
    abar = VP.alpha_bar(np.array([s, t]))
    c = abar * var + 1 - abar
    expected = np.sqrt(abar[1]) * mu + np.sqrt(c[1] / c[0]) * (x_s - np.sqrt(abar[0]) * mu)
    np.testing.assert_allclose(problem.exact_flow(x_s, s, t), expected, rtol=1e-13, atol=1e-14)  # measured 0


@pytest.mark.parametrize("name", ["cld", "bdm"])
def test_mixture_reference_flow_is_cached_and_reversible(name):
    problem = mixture(name)
    s, t = problem.diffusion.t_start, 0.05
    x_s = problem.sample_prior(3, np.random.default_rng(8))
    first = problem.reference_flow(x_s, s, t)
    first[...] = np.nan  # callers get copies; the cache is unharmed
    again = problem.reference_flow(x_s.copy(), s, t)
    assert np.all(np.isfinite(again))
    np.testing.assert_allclose(problem.reference_flow(again, t, s), x_s, rtol=0, atol=1e-8 * np.abs(x_s).max())  # measured 4.0e-11


# ---------------------------------------------------------------------- array namespaces
OUTPUTS = ["eps_R", "eps_L", "score_fn", "data_prediction"]


@pytest.mark.parametrize("name", ["cld", "bdm", "dense"])
def test_outputs_agree_across_numpy_array_api_strict_and_torch(name):
    problem = mixture(name)
    t = 0.3
    x = states(problem, t, 4)
    for output in OUTPUTS:
        fn = getattr(problem, output)
        ref = fn(x, t)
        assert isinstance(ref, np.ndarray) and ref.dtype == np.float64 and ref.shape == x.shape
        strict = fn(array_api_strict.asarray(x), t)
        assert is_array_api_strict_namespace(array_namespace(strict)) and strict.dtype == array_api_strict.float64
        tensor = fn(torch.asarray(x), t)
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64
        scale = np.abs(ref).max()
        np.testing.assert_allclose(np.asarray(strict), ref, rtol=0, atol=1e-12 * scale)  # measured 0
        np.testing.assert_allclose(tensor.numpy(), ref, rtol=0, atol=1e-12 * scale)  # measured 1.9e-13
    logp = problem.log_prob(torch.asarray(x), t)
    np.testing.assert_allclose(logp.numpy(), problem.log_prob(x, t), rtol=1e-12)  # measured 2.2e-16 (relative)


def test_outputs_keep_float32_and_extra_batch_axes():
    problem = mixture("cld")
    x = states(problem, 0.3, 6).reshape(2, 3, 3, 2)
    out = problem.eps_R(torch.asarray(x, dtype=torch.float32), 0.3)
    assert out.dtype == torch.float32 and tuple(out.shape) == x.shape
    np.testing.assert_allclose(out.numpy(), problem.eps_R(x, 0.3), rtol=1e-4, atol=1e-4)  # measured 0.002 x tolerance
    assert problem.log_prob(x, 0.3).shape == (2, 3)


# ---------------------------------------------------------------------- sampling
def test_samples_have_the_event_shape_and_are_reproducible():
    problem = mixture("bdm")
    a = problem.sample_prior(5, np.random.default_rng(9))
    b = problem.sample_prior(5, 9)
    assert a.shape == (5, 1, 4, 4)
    np.testing.assert_array_equal(a, b)
    assert problem.sample_marginal(0.2, 0, 1).shape == (0, 1, 4, 4)


def test_dirac_mixture_data_samples_are_the_points():
    means = np.array([[1.0, 2.0], [-3.0, 0.5]])
    problem = GaussianMixture(VP, (2,), [0.25, 0.75], means)
    samples = problem.sample_data(50, np.random.default_rng(10))
    assert all(any(np.array_equal(x, m) for m in means) for x in samples)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "build, needle",
    [
        (lambda: GaussianData(VP, (3,), [0.0, np.nan, 1.0]), "mean must be finite"),
        (lambda: GaussianData(VP, (3,), [0.0, 1.0]), "mean must have shape (3,)"),
        (lambda: GaussianData(VP, (3,), np.zeros(3), np.ones((2, 2))), "cov must have shape"),
        (lambda: GaussianData(VP, (3,), np.zeros(3), np.diag([1.0, -1.0, 1.0])), "cov must be positive semi-definite"),
        (lambda: GaussianData(VP, (3,), np.zeros(3), np.diag([1.0, np.inf, 1.0])), "cov must be finite"),
        (lambda: GaussianData(CLD, (3, 2), np.zeros((3, 2)), np.eye(6) * 1e-3), "cov must satisfy S >= Sigma_0"),
        (lambda: GaussianData(CLD, (2, 3), np.zeros((2, 3))), "event_shape"),
        (lambda: GaussianMixture(VP, (2,), [0.5, 0.6], np.zeros((2, 2))), "weights must sum to 1"),
        (lambda: GaussianMixture(VP, (2,), [1.5, -0.5], np.zeros((2, 2))), "weights must be finite and positive"),
        (lambda: GaussianMixture(VP, (2,), [0.5, 0.5], np.zeros((3, 2))), "means must have shape (2, 2)"),
        (lambda: GaussianMixture(VP, (2,), [0.5, 0.5], np.zeros((2, 2)), np.stack([np.eye(2)] * 3)), "covs must hold"),
        (lambda: GaussianMixture(VP, (2,), [0.5, 0.5], np.zeros((2, 2)), np.stack([np.eye(2), -np.eye(2)])), "covs[1]"),
    ],
)
def test_bad_parameters_raise_value_errors_naming_the_argument(build, needle):
    with pytest.raises(ValueError) as info:
        build()
    assert needle in str(info.value)


def test_bad_calls_are_refused():
    problem = gaussian("cld")
    x = states(problem, 0.5, 2)
    with pytest.raises(ValueError, match="x must have shape"):
        problem.eps_R(x[..., :1], 0.5)
    with pytest.raises(TypeError, match="real floating"):
        problem.eps_R(x.astype(np.int64), 0.5)
    with pytest.raises(ValueError, match="time range"):
        problem.score(x, 1.5)
    with pytest.raises(TypeError, match="scalar time"):
        problem.score(x, np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="x_s must be finite"):
        problem.reference_flow(np.full_like(x, np.nan), 0.5, 0.1)
    with pytest.raises(ValueError, match="rtol"):
        problem.reference_flow(x, 0.5, 0.1, rtol=-1.0)
    with pytest.raises(ValueError, match="singular at t=0"):
        DiracData(VP, (2,), np.zeros(2)).score(np.zeros((1, 2)), 0.0)
