r"""The diffusion contract: float64 ``t.shape + (M, k, k)`` arrays, group laws of :math:`\Psi`, priors, bases, defaults.

Numerical accuracy against independent references lives in ``test_transitions.py``,
``test_factors.py`` and ``test_schedules.py``; this file checks structure and the constants of
docs/math §5.
"""

import numpy as np
import pytest
import scipy.fft

import gddim_numerics as gd


def rotating_drift(t):
    """A time-varying, non-commuting 2x2 drift."""
    c, s = np.cos(2.0 * t), np.sin(2.0 * t)
    rot = np.array([[c, -s], [s, c]])
    return rot @ np.array([[-1.0, 2.0], [0.0, -0.5]]) @ rot.T


DIFFUSIONS = {
    "vp-linear": gd.VPSDE.linear(),
    "vp-cosine": gd.VPSDE.cosine(),
    "vp-discrete": gd.VPSDE.discrete(),
    "ve": gd.VESDE(),
    "cld": gd.CLD(),
    "bdm-gddim": gd.BDM((4, 6)),
    "bdm-bdm": gd.BDM((4, 6), schedule="bdm"),
    "constant-coefficient": gd.ConstantCoefficientSDE(
        np.array([[-1.0, 0.5, 0.0], [0.0, -2.0, 1.0], [0.3, 0.0, -0.7]]), np.diag([1.0, 0.0, 0.5]),
        beta=2.0, initial_covariance=np.eye(3)),
    "linear-sde": gd.LinearSDE(rotating_drift, lambda t: np.diag([0.5, 1.0 + t]), initial_covariance=0.1 * np.eye(2)),
}

SHAPES = {"vp-linear": (1, 1), "vp-cosine": (1, 1), "vp-discrete": (1, 1), "ve": (1, 1), "cld": (1, 2),
          "bdm-gddim": (24, 1), "bdm-bdm": (24, 1), "constant-coefficient": (1, 3), "linear-sde": (1, 2)}


def times_of_shape(sde, shape):
    """Times of the given array shape spread inside the open time range."""
    lo, hi = sde.time_range
    n = int(np.prod(shape))
    return (lo + (hi - lo) * (np.arange(1, n + 1) / (n + 1))).reshape(shape)


@pytest.mark.parametrize("name", sorted(DIFFUSIONS))
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)], ids=["scalar", "vector", "matrix"])
def test_every_quantity_is_float64_blocks_over_the_times(name, shape):
    """Every quantity is a float64 array of shape ``t.shape + (M, k, k)``."""
    sde = DIFFUSIONS[name]
    t = times_of_shape(sde, shape)
    blocks = shape + (sde.n_modes, sde.block_size, sde.block_size)
    assert (sde.n_modes, sde.block_size) == SHAPES[name] == sde.shape
    for quantity in (sde.drift, sde.diffusion, sde.mean_coefficient, sde.covariance, sde.covariance_inv,
                     sde.cholesky, sde.gddim_factor, lambda t: sde.transition(t, sde.time_range[1])):
        out = quantity(t)
        assert out.dtype == np.float64 and out.shape == blocks
    assert sde.log_snr(t).shape == shape
    assert sde.initial_covariance.shape == sde.prior_covariance().shape == blocks[-3:]


@pytest.mark.parametrize("name", sorted(DIFFUSIONS))
def test_transition_is_a_group(name):
    r""":math:`\Psi(t,s)\Psi(s,r) = \Psi(t,r)` and :math:`\Psi(s,t)\Psi(t,s) = I` for times in any order."""
    sde = DIFFUSIONS[name]
    t, s, r = times_of_shape(sde, (3,))[[2, 0, 1]]
    np.testing.assert_allclose(sde.transition(t, s) @ sde.transition(s, r), sde.transition(t, r), rtol=1e-12, atol=1e-14)  # measured 0.005 x tolerance
    prod = sde.transition(s, t) @ sde.transition(t, s)
    np.testing.assert_allclose(prod, np.broadcast_to(np.eye(sde.block_size), prod.shape), rtol=0, atol=1e-12)  # measured 5.6e-16


@pytest.mark.parametrize("name", sorted(DIFFUSIONS))
def test_transition_broadcasts_its_two_times(name):
    r""":math:`\Psi(t, s)` broadcasts ``t`` against ``s``: ``(3, 1)`` with ``(4,)`` gives ``(3, 4, M, k, k)``."""
    sde = DIFFUSIONS[name]
    t = times_of_shape(sde, (3, 1))
    s = times_of_shape(sde, (4,))
    assert sde.transition(t, s).shape == (3, 4) + (sde.n_modes, sde.block_size, sde.block_size)


@pytest.mark.parametrize("name", sorted(DIFFUSIONS))
def test_covariance_inverse_and_cholesky_are_consistent(name):
    r""":math:`\Sigma^{-1}\Sigma = I`; :math:`L` is lower triangular with a positive diagonal and :math:`LL^\top = \Sigma`."""
    sde = DIFFUSIONS[name]
    t = times_of_shape(sde, (5,))
    sig, low = sde.covariance(t), sde.cholesky(t)
    eye = np.broadcast_to(np.eye(sde.block_size), sig.shape)
    np.testing.assert_allclose(sde.covariance_inv(t) @ sig, eye, rtol=0, atol=1e-11)  # measured 1.8e-15
    assert np.all(np.triu(low, 1) == 0.0) and np.all(np.diagonal(low, axis1=-2, axis2=-1) > 0)
    np.testing.assert_allclose(low @ np.swapaxes(low, -1, -2), sig, rtol=1e-13, atol=0)  # measured 2.6e-16 (relative)


@pytest.mark.parametrize("name", sorted(DIFFUSIONS))
def test_noise_level_decreases_in_time(name):
    """The scalar noise measure ``log_snr`` strictly decreases over the time range."""
    sde = DIFFUSIONS[name]
    lo, hi = sde.time_range
    t = np.linspace(lo, hi, 201)[1:]
    assert np.all(np.diff(sde.log_snr(t)) < 0)


def test_cld_log_snr_is_position_log_snr():
    r"""CLD's noise level is :math:`\log(\Psi_{xx}(t,0)^2/\Sigma_{xx})`: :math:`\Psi_{xx} = e^{-2B}(1 + 2B)`, :math:`\Sigma_{xx}` of docs/math §5.3 (:math:`B = 4t`)."""
    t = np.linspace(0.01, 1.0, 25)
    big_b, s_x, s_v = 4.0 * t, 1e-6, 0.01 + 1e-6
    e = np.exp(-4.0 * big_b)
    sigma_xx = -np.expm1(-4.0 * big_b) - e * (4 * big_b + 8 * big_b**2) + e * (s_x * (1 + 2 * big_b) ** 2 + 16 * big_b**2 * s_v)
    psi_xx = np.exp(-2.0 * big_b) * (1.0 + 2.0 * big_b)
    np.testing.assert_allclose(gd.CLD().log_snr(t), np.log(psi_xx**2 / sigma_xx), rtol=0, atol=1e-12)  # measured 1.8e-15


# ------------------------------------------------------------------------------- priors and defaults
def test_priors_are_the_standard_ones():
    r"""Priors: VP and BDM :math:`N(0, I)`, VE :math:`N(0, \sigma_{max}^2)`, CLD :math:`N(0, \operatorname{diag}(1, M))`."""
    np.testing.assert_array_equal(gd.VPSDE.linear().prior_covariance(), np.ones((1, 1, 1)))
    np.testing.assert_array_equal(gd.BDM((4, 6)).prior_covariance(), np.ones((24, 1, 1)))
    np.testing.assert_array_equal(gd.VESDE(sigma_max=80.0).prior_covariance(), np.full((1, 1, 1), 6400.0))
    np.testing.assert_array_equal(gd.CLD(mass_inv=4.0).prior_covariance(), np.diag([1.0, 0.25])[None])


@pytest.mark.parametrize("mass_inv, gamma", [(4.0, 1.0), (1.0, 2.0), (4.0, 0.5)])
def test_cld_prior_is_stationary(mass_inv, gamma):
    r""":math:`P = \operatorname{diag}(1, M)` solves :math:`AP + PA^\top + Q = 0` with :math:`A = [[0, M^{-1}], [-1, -\Gamma M^{-1}]]`, :math:`Q = \operatorname{diag}(0, 2\Gamma)`."""
    p = gd.CLD(mass_inv=mass_inv, gamma_friction=gamma).prior_covariance()[0]
    a = np.array([[0.0, mass_inv], [-1.0, -gamma * mass_inv]])
    np.testing.assert_allclose(a @ p + p @ a.T + np.diag([0.0, 2.0 * gamma]), np.zeros((2, 2)), atol=1e-15)  # measured 0


def test_defaults_follow_the_specification():
    """Time ranges and sampling ends of docs/math §5: T = 1; t_min 1e-3 (VP, CLD) and 1e-5 (VE, BDM)."""
    assert gd.VPSDE.linear().time_range == (0.0, 1.0) and gd.VPSDE.linear().t_end == 1e-3
    assert gd.VPSDE.cosine().time_range == (0.0, 0.9946)
    assert gd.VPSDE.discrete().time_range == (1e-3, 1.0)
    assert gd.VESDE().time_range == (0.0, 1.0) and gd.VESDE().t_end == 1e-5
    assert gd.CLD().time_range == (0.0, 1.0) and gd.CLD().t_end == 1e-3
    assert gd.BDM((8, 8)).time_range == (0.0, 1.0) and gd.BDM((8, 8)).t_end == 1e-5
    assert gd.BDM((8, 8), schedule="bdm").t_start == 1.0


def test_cld_with_singular_initial_covariance_starts_after_zero():
    r"""With a singular :math:`\Sigma_0` (CLD-SGM's DSM convention) the range starts at 1e-5, where :math:`\Sigma_t` is invertible."""
    sde = gd.CLD(initial_covariance=np.zeros((2, 2)))
    assert sde.time_range == (1e-5, 1.0)
    assert np.all(np.linalg.eigvalsh(sde.covariance(1e-5)) > 0)


# ------------------------------------------------------------------------------- DCT basis
@pytest.mark.parametrize("n", [2, 5, 8])
def test_dct_matrix_is_scipy_orthonormal_dct_ii(n):
    """``DCTBasis.matrix`` is ``scipy.fft.dct(type=2, norm='ortho')`` and orthogonal."""
    d = gd.DCTBasis((n, 3)).matrix(0)
    np.testing.assert_allclose(d, scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0), rtol=0,
                               atol=2e-14)  # measured 1.8e-15 (OPENBLAS_CORETYPE=Haswell), 2.8e-16 here
    np.testing.assert_allclose(d @ d.T, np.eye(n), rtol=0, atol=2e-14)  # measured 1.4e-15


def test_dct_eigenvalues_are_row_major_frequency_pairs():
    r"""Mode ``m = i W + j`` has :math:`\Lambda = (\pi i/H)^2 + (\pi j/W)^2`."""
    h, w = 4, 6
    i, j = np.divmod(np.arange(h * w), w)
    np.testing.assert_allclose(gd.DCTBasis((h, w)).eigenvalues, (np.pi * i / h) ** 2 + (np.pi * j / w) ** 2, rtol=1e-15)  # measured 0
