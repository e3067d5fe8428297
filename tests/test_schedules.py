r"""Scalar diffusions (VP, VE, BDM) against their textbook closed forms.

Every reference is written here from the definitions in docs/math §5, evaluated without cancellation
(``expm1``, :math:`\cos^2a - \cos^2b = \sin(b - a)\sin(b + a)`); BDM's drift is checked against a
complex-step derivative of the textbook mean. For these diffusions :math:`R_t = L_t = \sigma_t I`.
"""

import numpy as np
import pytest

import gddim_numerics as gd


def times_in(t_max):
    """Times clustered at 0 (where cancellation would show) and spread up to ``t_max``."""
    return np.unique(np.concatenate([np.geomspace(1e-8, 1e-2, 13), np.linspace(0.0, t_max, 41)]))


def modes(a):
    """A per-mode array ``t.shape + (M,)`` as the library's ``t.shape + (M, 1, 1)`` blocks."""
    return np.asarray(a)[..., None, None]


# ------------------------------------------------------------------------------- VP, linear beta
@pytest.mark.parametrize("beta_min, beta_max", [(0.1, 20.0), (0.5, 10.0)])
def test_vp_linear_matches_closed_forms(beta_min, beta_max):
    r""":math:`\bar\alpha_t = e^{-\beta_{min}t - \frac12(\beta_{max} - \beta_{min})t^2}`, :math:`\sigma_t^2 = 1 - \bar\alpha_t`, :math:`\lambda_t = \log\bar\alpha_t/\sigma_t^2` to 1e-13."""
    sde = gd.VPSDE.linear(beta_min, beta_max)
    t = times_in(1.0)
    log_abar = -beta_min * t - 0.5 * (beta_max - beta_min) * t * t
    sigma2 = -np.expm1(log_abar)
    np.testing.assert_allclose(sde.alpha_bar(t), np.exp(log_abar), rtol=1e-13, atol=0)  # measured 0
    np.testing.assert_allclose(sde.mean_coefficient(t), modes(np.exp(0.5 * log_abar)[:, None]), rtol=1e-13, atol=0)  # measured 0
    np.testing.assert_allclose(sde.covariance(t), modes(sigma2[:, None]), rtol=1e-13, atol=0)  # measured 0
    np.testing.assert_allclose(sde.std(t)[:, 0], np.sqrt(sigma2), rtol=1e-13, atol=0)  # measured 0
    positive = t > 0
    # log-SNR is a logarithm: an absolute error of 1e-13 is a relative SNR error of 1e-13
    np.testing.assert_allclose(sde.log_snr(t[positive]), log_abar[positive] - np.log(sigma2[positive]), rtol=0, atol=1e-13)  # measured 0


@pytest.mark.parametrize("beta_min, beta_max", [(0.1, 20.0), (0.5, 10.0)])
def test_vp_linear_drift_and_diffusion_are_beta(beta_min, beta_max):
    r""":math:`F_t = -\tfrac12\beta(t)`, :math:`G_tG_t^\top = \beta(t)`, :math:`\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})`."""
    sde = gd.VPSDE.linear(beta_min, beta_max)
    t = times_in(1.0)
    beta = modes((beta_min + t * (beta_max - beta_min))[:, None])
    np.testing.assert_allclose(sde.drift(t), -0.5 * beta, rtol=1e-14, atol=0)  # measured 0
    np.testing.assert_allclose(sde.diffusion(t), beta, rtol=1e-13, atol=0)  # measured 2.2e-16 (relative)


# ------------------------------------------------------------------------------- VP, cosine
@pytest.mark.parametrize("s", [0.008, 0.02])
def test_vp_cosine_matches_closed_forms(s):
    r""":math:`\bar\alpha_t = \cos^2\theta_t/\cos^2\theta_0`, :math:`\theta_t = \frac{t + s}{1 + s}\frac\pi2`; :math:`\sigma_t^2` and :math:`\lambda_t` to 1e-13."""
    sde = gd.VPSDE.cosine(s=s)
    t = times_in(sde.time_range[1])
    theta, theta0 = (t + s) / (1 + s) * np.pi / 2, s / (1 + s) * np.pi / 2
    abar = np.cos(theta) ** 2 / np.cos(theta0) ** 2
    sigma2 = np.sin(t / (1 + s) * np.pi / 2) * np.sin(theta + theta0) / np.cos(theta0) ** 2
    # near t_max, cos(theta) ~ 0.008 and the reference cos^2 carries ~eps / 0.008 relative rounding
    np.testing.assert_allclose(sde.alpha_bar(t), abar, rtol=1e-12, atol=0)  # measured 6.3e-14 (relative)
    np.testing.assert_allclose(sde.covariance(t), modes(sigma2[:, None]), rtol=1e-13, atol=0)  # measured 6.2e-16 (relative)
    positive = t > 0
    np.testing.assert_allclose(sde.log_snr(t[positive]), np.log(abar[positive] / sigma2[positive]), rtol=0,
                               atol=1e-12)  # measured 6.2e-14


def test_vp_cosine_drift_and_diffusion_are_beta():
    r""":math:`\beta(t) = -\tfrac{d}{dt}\log\bar\alpha_t = \frac{\pi}{1 + s}\tan\theta_t`, :math:`F = -\beta/2`, :math:`GG^\top = \beta`."""
    s = 0.008
    sde = gd.VPSDE.cosine(s=s)
    t = times_in(sde.time_range[1])
    beta = modes((np.pi / (1 + s) * np.tan((t + s) / (1 + s) * np.pi / 2))[:, None])
    np.testing.assert_allclose(sde.drift(t), -0.5 * beta, rtol=1e-13, atol=0)  # measured 2.1e-16 (relative)
    np.testing.assert_allclose(sde.diffusion(t), beta, rtol=1e-13, atol=0)  # measured 2.1e-16 (relative)


# ------------------------------------------------------------------------------- VP, discrete DDPM table
def ddpm_table(betas):
    r""":math:`\bar\alpha_n = \prod_{i \le n}(1 - \beta_i)` at :math:`t_n = (n + 1)/N`."""
    betas = np.asarray(betas)
    return np.arange(1, betas.size + 1) / betas.size, np.cumprod(1.0 - betas)


def test_vp_discrete_default_table_is_ddpm_linear_betas():
    r"""The default table is DDPM's 1000 linear betas from 1e-4 to 0.02: :math:`\bar\alpha_n`, :math:`1 - \bar\alpha_n` and :math:`R = \sqrt{1 - \bar\alpha_n}` to 1e-12."""
    t_n, abar_n = ddpm_table(np.linspace(1e-4, 0.02, 1000))
    sde = gd.VPSDE.discrete()
    np.testing.assert_allclose(sde.alpha_bar(t_n), abar_n, rtol=1e-12, atol=0)  # measured 9.1e-16 (relative)
    np.testing.assert_allclose(sde.covariance(t_n), modes((1.0 - abar_n)[:, None]), rtol=1e-12, atol=0)  # measured 7.8e-16 (relative)
    np.testing.assert_allclose(sde.gddim_factor(t_n), modes(np.sqrt(1.0 - abar_n)[:, None]), rtol=1e-12, atol=0)  # measured 4.2e-16 (relative)


def test_vp_discrete_alphas_cumprod_table_is_reproduced():
    r"""A given :math:`\bar\alpha` table (every 20th DDPM step, as DDIM uses) is reproduced at its grid points, log-SNR included."""
    _, abar = ddpm_table(np.linspace(1e-4, 0.02, 1000))
    abar_n = abar[19::20]
    t_n = np.arange(1, 51) / 50
    sde = gd.VPSDE.discrete(alphas_cumprod=abar_n)
    np.testing.assert_allclose(sde.alpha_bar(t_n), abar_n, rtol=1e-12, atol=0)  # measured 2.7e-15 (relative)
    np.testing.assert_allclose(sde.log_snr(t_n), np.log(abar_n / (1.0 - abar_n)), rtol=0, atol=1e-12)  # measured 3.6e-15


def test_vp_discrete_log_snr_decreases_between_grid_points():
    r"""The continuous extension is monotone in log-SNR: :math:`\lambda_t` strictly decreases on a grid 10x finer than the table."""
    sde = gd.VPSDE.discrete()
    lam = sde.log_snr(np.linspace(*sde.time_range, 9991))
    assert np.all(np.diff(lam) < 0)


def test_vp_discrete_data_point_is_at_time_zero():
    r"""DDPM's :math:`x_0` sits at ``t = 0``: :math:`\Sigma_0 = 0` and :math:`\Psi(t, 0) = \sqrt{\bar\alpha_t}` at the table's grid points."""
    t_n, abar_n = ddpm_table(np.linspace(1e-4, 0.02, 1000))
    sde = gd.VPSDE.discrete()
    assert np.all(sde.initial_covariance == 0.0)
    np.testing.assert_allclose(sde.transition(t_n, 0.0), modes(np.sqrt(abar_n)[:, None]), rtol=1e-12, atol=0)  # measured 5.5e-16 (relative)


# ------------------------------------------------------------------------------- VE
@pytest.mark.parametrize("sigma_min, sigma_max", [(0.01, 50.0), (0.002, 80.0)])
def test_ve_matches_closed_forms(sigma_min, sigma_max):
    r""":math:`\sigma_t = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`, :math:`\Sigma_t = \sigma_t^2 - \sigma_{min}^2`, :math:`GG^\top = 2\sigma_t^2\log\frac{\sigma_{max}}{\sigma_{min}}`, :math:`F = 0`, :math:`\Psi = 1`."""
    sde = gd.VESDE(sigma_min, sigma_max)
    t = times_in(1.0)
    log_ratio = np.log(sigma_max / sigma_min)
    sigma_t = sigma_min * (sigma_max / sigma_min) ** t
    variance = sigma_min**2 * np.expm1(2.0 * t * log_ratio)
    np.testing.assert_allclose(sde.sigma(t), sigma_t, rtol=1e-13, atol=0)  # measured 1.6e-15 (relative)
    np.testing.assert_allclose(sde.covariance(t), modes(variance[:, None]), rtol=1e-13, atol=0)  # measured 0
    np.testing.assert_allclose(sde.diffusion(t), modes((2.0 * sigma_t**2 * log_ratio)[:, None]), rtol=1e-13, atol=0)  # measured 3.0e-15 (relative)
    assert np.all(sde.drift(t) == 0.0) and np.all(sde.transition(t, 0.5) == 1.0)
    np.testing.assert_allclose(sde.log_snr(t[t > 0]), -np.log(variance[t > 0]), rtol=0, atol=1e-13)  # measured 0


# ------------------------------------------------------------------------------- BDM
BDM_CASES = {
    "gddim-8x8": dict(image_shape=(8, 8), schedule="gddim"),
    "bdm-8x8": dict(image_shape=(8, 8), schedule="bdm"),
    "gddim-4x6-params": dict(image_shape=(4, 6), schedule="gddim", blur_sigma_max=20.0, min_scale=0.01),
}


def bdm_textbook(case, t):
    r"""``(a_t, sigma_t, d_k(t))`` of docs/math §5.4 for real or complex ``t``; modes ``k = i W + j``.

    gDDIM schedule: :math:`a = \cos\theta`, :math:`\sigma = \sin\theta`, :math:`\theta = \frac{t + 0.004}{1.008}\frac\pi2`.
    BDM schedule: :math:`\lambda = -2\log\tan u`, :math:`u = c_1t + c_0`, so :math:`a = \cos u`, :math:`\sigma = \sin u`.
    """
    kw = BDM_CASES[case]
    h, w = kw["image_shape"]
    if kw["schedule"] == "gddim":
        angle = (t + 0.004) / 1.008 * np.pi / 2
    else:
        c0 = np.arctan(np.exp(-10.0 / 2))
        angle = (np.arctan(np.exp(10.0 / 2)) - c0) * t + c0
    lam = ((np.pi * np.arange(h) / h) ** 2)[:, None] + ((np.pi * np.arange(w) / w) ** 2)[None, :]
    blur_sigma = kw.get("blur_sigma_max", 10.0) * np.sin(np.pi * t / 2) ** 2
    d_min = kw.get("min_scale", 1e-3)
    d = (1 - d_min) * np.exp(-lam.ravel() * (blur_sigma**2 / 2)[..., None]) + d_min
    return np.cos(angle), np.sin(angle), d


@pytest.mark.parametrize("case", sorted(BDM_CASES))
def test_bdm_mean_and_covariance_match_closed_forms(case):
    r""":math:`\Psi_k(t, 0) = a_td_k(t)/a_0`, :math:`\Sigma_t = \sigma_t^2 I`, :math:`R_t = L_t = \sigma_tI` per frequency."""
    sde = gd.BDM(**BDM_CASES[case])
    t = times_in(1.0)
    a, sigma, d = bdm_textbook(case, t)
    a0, sigma0, _ = bdm_textbook(case, 0.0)
    np.testing.assert_allclose(sde.mean_coefficient(t), modes(a[:, None] * d / a0), rtol=1e-12, atol=0)  # measured 3.3e-15 (relative)
    np.testing.assert_allclose(sde.covariance(t), modes(np.broadcast_to(sigma[:, None] ** 2, d.shape)), rtol=1e-13, atol=0)  # measured 1.0e-15 (relative)
    np.testing.assert_allclose(sde.gddim_factor(t), modes(np.broadcast_to(sigma[:, None], d.shape)), rtol=1e-13, atol=0)  # measured 5.1e-16 (relative)
    np.testing.assert_allclose(sde.initial_covariance, np.full((d.shape[1], 1, 1), sigma0**2), rtol=1e-13, atol=0)  # measured 0


@pytest.mark.parametrize("case", sorted(BDM_CASES))
def test_bdm_drift_is_complex_step_derivative_of_log_mean(case):
    r""":math:`F_k = \tfrac{d}{dt}\log(a_td_k(t))`, by the complex-step derivative :math:`\operatorname{Im}\log m(t + ih)/h` of the textbook mean."""
    sde = gd.BDM(**BDM_CASES[case])
    t = times_in(1.0)[1:-1]
    h = 1e-30
    a, _, d = bdm_textbook(case, t + 1j * h)
    dlog_mean = np.imag(np.log(a[:, None] * d)) / h
    np.testing.assert_allclose(sde.drift(t), modes(dlog_mean), rtol=1e-11, atol=1e-13)  # measured 7e-05 x tolerance


@pytest.mark.parametrize("case", sorted(BDM_CASES))
def test_bdm_diffusion_is_nonnegative_and_keeps_noise_isotropic(case):
    r""":math:`g_k^2 = \tfrac{d\sigma_t^2}{dt} - 2F_k\sigma_t^2 \ge 0` for every frequency (complex-step derivatives of the textbook forms)."""
    sde = gd.BDM(**BDM_CASES[case])
    t = times_in(1.0)[1:-1]
    h = 1e-30
    a, sigma, d = bdm_textbook(case, t + 1j * h)
    g2 = np.imag(sigma**2)[:, None] / h - 2.0 * np.imag(np.log(a[:, None] * d)) / h * np.real(sigma[:, None]) ** 2
    assert np.all(sde.diffusion(t) >= 0.0)
    np.testing.assert_allclose(sde.diffusion(t), modes(g2), rtol=1e-11, atol=0)  # measured 9.9e-16 (relative)


def test_bdm_gddim_start_time_solves_the_rho_equation():
    r""":math:`t_{start}` solves :math:`\bar\alpha = \bar\alpha_0/((80 + \sqrt{1 - \bar\alpha_0})^2 + \bar\alpha_0)` (docs/math §5.4: :math:`\approx 0.99598`)."""
    sde = gd.BDM((8, 8))
    a_start, _, _ = bdm_textbook("gddim-8x8", sde.t_start)
    a0, sigma0, _ = bdm_textbook("gddim-8x8", 0.0)
    np.testing.assert_allclose(a_start**2, a0**2 / ((80.0 + sigma0) ** 2 + a0**2), rtol=1e-11)  # measured 6.8e-14 (relative)
    assert abs(sde.t_start - 0.99598) < 1e-5  # measured 2e-7


@pytest.mark.parametrize("case", ["gddim-8x8", "bdm-8x8"])
def test_bdm_log_snr_is_that_of_the_unblurred_frequency(case):
    r"""BDM's noise level is the DC log-SNR :math:`\log(a_t^2/\sigma_t^2)`."""
    t = times_in(1.0)[1:]
    a, sigma, _ = bdm_textbook(case, t)
    np.testing.assert_allclose(gd.BDM(**BDM_CASES[case]).log_snr(t), 2.0 * np.log(a / sigma), rtol=0, atol=1e-12)  # measured 5.3e-15


# ------------------------------------------------------------------------------- R = L = sigma I
SCALAR_FACTORS = {
    "vp-linear": (gd.VPSDE.linear(), lambda t: np.sqrt(-np.expm1(-0.1 * t - 9.95 * t * t))),
    "vp-cosine": (gd.VPSDE.cosine(), lambda t: np.sqrt(
        np.sin(t / 1.008 * np.pi / 2) * np.sin((t + 0.016) / 1.008 * np.pi / 2)) / np.cos(0.008 / 1.008 * np.pi / 2)),
    "ve": (gd.VESDE(), lambda t: 0.01 * np.sqrt(np.expm1(2.0 * t * np.log(5000.0)))),
}


@pytest.mark.parametrize("name", sorted(SCALAR_FACTORS))
def test_scalar_factor_is_sigma(name):
    r""":math:`R_t = L_t = \sigma_t I` with the textbook :math:`\sigma_t` (zero at ``t = 0``)."""
    sde, sigma = SCALAR_FACTORS[name]
    t = times_in(sde.time_range[1])
    np.testing.assert_allclose(sde.gddim_factor(t), modes(sigma(t)[:, None]), rtol=1e-13, atol=0)  # measured 2.6e-16 (relative)
    np.testing.assert_allclose(sde.cholesky(t), modes(sigma(t)[:, None]), rtol=1e-13, atol=0)  # measured 2.6e-16 (relative)
