"""DataStatistics: constructors against independent estimates (NumPy, scikit-learn), variants, bad input."""

import warnings

import numpy as np
import pytest

import gddim_numerics as gd
from gddim_numerics.layout import basis_matrix, dense_operator
from gddim_numerics.statistics import DataStatistics


def test_from_problem_mixture_moments():
    """Mixture mean/covariance equal the moments of a large weighted sample of the exact components (law of total covariance)."""
    sde = gd.CLD()
    rng = np.random.default_rng(0)
    means = np.zeros((3, 2, 2))
    means[..., 0] = rng.normal(size=(3, 2))
    mix = gd.GaussianMixture(sde, (2, 2), [0.2, 0.5, 0.3], means)
    stats = DataStatistics.from_problem(mix)
    w = np.array([0.2, 0.5, 0.3])
    mu = means.reshape(3, 4)
    expected = (w[:, None] * mu).sum(0)
    cov = sum(wk * (mix.covs[k] + np.outer(mu[k] - expected, mu[k] - expected)) for k, wk in enumerate(w))
    assert np.allclose(stats.mean.ravel(), expected, atol=1e-15)
    assert np.allclose(stats.dense_cov, cov, atol=1e-15)
    dirac = DataStatistics.from_problem(gd.DiracData(sde, (2, 2), means[0]))
    assert np.allclose(dirac.dense_cov, dense_operator(sde, sde.initial_covariance, (2, 2)), atol=0)


def test_from_samples_dense_modes_and_ledoit_wolf():
    sde = gd.VPSDE.linear()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    s0 = float(sde.initial_covariance[0, 0, 0])
    stats = DataStatistics.from_samples(sde, x)
    assert np.allclose(stats.dense_cov - s0 * np.eye(6), np.cov(x, rowvar=False), atol=1e-12)
    # n <= D: Ledoit-Wolf, checked against scikit-learn's implementation
    sklearn = pytest.importorskip("sklearn.covariance")
    few = x[:5]
    with pytest.warns(UserWarning, match="Ledoit-Wolf"):
        lw = DataStatistics.from_samples(sde, few)
    assert np.allclose(lw.dense_cov - s0 * np.eye(6), sklearn.LedoitWolf().fit(few).covariance_, atol=1e-12)
    # BDM per-mode variances = variances of the DCT coefficients (scipy.fft, independent of the basis matrix)
    from scipy.fft import dctn
    bdm = gd.BDM((4, 4))
    imgs = rng.normal(size=(50, 2, 4, 4))
    spec = DataStatistics.from_samples(bdm, imgs, layout="modes")
    coef = dctn(imgs, type=2, norm="ortho", axes=(-2, -1))
    s0b = bdm.initial_covariance[:, 0, 0].reshape(4, 4)
    assert np.allclose(spec.mode_variances - s0b, coef.var(axis=0, ddof=1), atol=1e-12)


def test_diagonal_scaled_default():
    sde = gd.BDM((3, 3))
    rng = np.random.default_rng(2)
    a = rng.normal(size=(9, 9))
    s0 = dense_operator(sde, sde.initial_covariance, (3, 3))
    stats = DataStatistics(sde, (3, 3), rng.normal(size=(3, 3)), s0 + a @ a.T)
    v = basis_matrix(sde, (3, 3))
    diag = stats.diagonal()
    assert np.allclose(diag.mode_variances.ravel(), np.diagonal(v.T @ stats.dense_cov @ v), atol=1e-12)
    sc = stats.scaled(3.0)
    assert np.allclose(sc.mean, 3 * stats.mean) and np.allclose(sc.dense_cov - s0, 9 * (a @ a.T), atol=1e-10)
    d = DataStatistics.default(gd.CLD(), (2, 2))
    assert np.allclose(np.diag(d.dense_cov - dense_operator(d.diffusion, d.diffusion.initial_covariance, (2, 2))),
                       [1, 0, 1, 0])
    assert stats.fingerprint != sc.fingerprint and stats.fingerprint == DataStatistics(
        sde, (3, 3), stats.mean, stats.dense_cov).fingerprint


@pytest.mark.parametrize("cov, match", [
    (np.eye(3), "shape"),
    (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
    (-np.eye(2), "semi-definite|Sigma_0"),
    (np.array([[np.nan, 0], [0, 1]]), "finite"),
    (np.array([-1.0, 1.0]), "Sigma_0"),
])
def test_bad_covariance(cov, match):
    with pytest.raises(ValueError, match=match):
        DataStatistics(gd.VPSDE.linear(), (2,), np.zeros(2), cov)


def test_bad_samples_and_mean():
    sde = gd.VPSDE.linear()
    with pytest.raises(ValueError, match="mean"):
        DataStatistics(sde, (2,), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="at least 2"):
        DataStatistics.from_samples(sde, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="finite"):
        DataStatistics.from_samples(sde, np.full((4, 2), np.inf))
    with pytest.raises(ValueError, match="layout"):
        DataStatistics.from_samples(sde, np.zeros((4, 2)), layout="blocks")
    with pytest.raises(ValueError, match="c must"):
        DataStatistics.default(sde, (2,)).scaled(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DataStatistics.from_samples(sde, np.random.default_rng(0).normal(size=(10, 2)))  # n > D: no warning
