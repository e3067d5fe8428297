"""Bad input to the diffusions: each refusal is a ValueError/TypeError that names the argument."""

import numpy as np
import pytest

import gddim_numerics as gd

A = np.array([[-1.0, 0.5], [0.0, -2.0]])
Q = np.diag([0.0, 1.0])


def drift(t):
    """A valid 2x2 drift."""
    return A * (1.0 + t)


def noise(t):
    """A valid 2x2 diffusion matrix."""
    return Q


@pytest.mark.parametrize("sde", [gd.VPSDE.linear(), gd.VESDE(), gd.CLD(), gd.BDM((4, 4)),
                                 gd.ConstantCoefficientSDE(A, Q, initial_covariance=np.eye(2)),
                                 gd.LinearSDE(drift, noise, initial_covariance=np.eye(2))],
                         ids=["vp", "ve", "cld", "bdm", "constant-coefficient", "linear-sde"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, [0.5, 2.0]], ids=["below", "above", "one-of-many"])
def test_times_outside_the_range_are_refused(sde, bad):
    """A time outside ``time_range`` raises a ValueError naming ``t`` and the valid range."""
    for quantity in (sde.drift, sde.diffusion, sde.covariance, sde.cholesky, sde.gddim_factor, sde.mean_coefficient):
        with pytest.raises(ValueError, match=r"t must lie in the diffusion's time range \[0, 1\]"):
            quantity(bad)
    with pytest.raises(ValueError, match=r"t must lie in the diffusion's time range"):
        sde.transition(bad, 0.5)
    with pytest.raises(ValueError, match=r"s must lie in the diffusion's time range"):
        sde.transition(0.5, bad)


def test_discrete_vp_refuses_times_before_its_first_table_entry():
    """The discrete DDPM table covers [1/N, 1]; earlier times (other than the data time s = 0) are refused."""
    sde = gd.VPSDE.discrete()
    with pytest.raises(ValueError, match=r"t must lie in the diffusion's time range \[0.001, 1\]"):
        sde.covariance(5e-4)
    with pytest.raises(ValueError, match=r"s must lie in the diffusion's time range"):
        sde.transition(0.5, [0.0, 5e-4])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("sde", [gd.VPSDE.linear(), gd.CLD(), gd.BDM((4, 4))], ids=["vp", "cld", "bdm"])
def test_non_finite_times_are_refused(sde, bad):
    """NaN and infinite times raise a ValueError naming ``t`` (or ``s``)."""
    with pytest.raises(ValueError, match="t must be finite"):
        sde.covariance([0.5, bad])
    with pytest.raises(ValueError, match="s must be finite"):
        sde.transition(0.5, bad)


@pytest.mark.parametrize("bad", ["0.5", 0.5 + 0.1j, None], ids=["string", "complex", "none"])
def test_non_real_times_are_refused(bad):
    """Strings, complex numbers and None are not times: TypeError naming ``t``."""
    with pytest.raises(TypeError, match="t must be real numbers"):
        gd.VPSDE.linear().covariance(bad)


BAD_SIGMA0 = {
    "non-symmetric": (np.array([[1.0, 0.5], [0.0, 1.0]]), "initial_covariance must be symmetric"),
    "indefinite": (np.array([[1.0, 2.0], [2.0, 1.0]]), "initial_covariance must be positive semi-definite"),
    "negative": (-np.eye(2), "initial_covariance must be positive semi-definite"),
    "non-finite": (np.array([[1.0, np.nan], [np.nan, 1.0]]), "initial_covariance must be finite"),
    "not-square": (np.ones((2, 3)), "initial_covariance must be square"),
    "wrong-size": (np.eye(3), r"initial_covariance must be \(2, 2\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_SIGMA0))
@pytest.mark.parametrize("make", [
    lambda s0: gd.CLD(initial_covariance=s0),
    lambda s0: gd.ConstantCoefficientSDE(A, Q, initial_covariance=s0),
    lambda s0: gd.LinearSDE(drift, noise, initial_covariance=s0),
], ids=["cld", "constant-coefficient", "linear-sde"])
def test_invalid_initial_covariance_is_refused(make, case):
    r"""A non-symmetric, indefinite, non-finite or mis-shaped :math:`\Sigma_0` raises a ValueError naming ``initial_covariance``."""
    sigma0, message = BAD_SIGMA0[case]
    with pytest.raises(ValueError, match=message):
        make(sigma0)


@pytest.mark.parametrize("make", [
    lambda: gd.ConstantCoefficientSDE(A, Q, initial_covariance=np.diag([1.0, 0.0])),
    lambda: gd.LinearSDE(drift, noise, initial_covariance=np.zeros((2, 2))),
], ids=["constant-coefficient", "linear-sde"])
def test_singular_initial_covariance_needs_a_positive_lower_time(make):
    r"""A singular :math:`\Sigma_0` with ``time_range`` starting at 0 is refused: :math:`\Sigma_0^{-1}` and :math:`R_0` do not exist."""
    with pytest.raises(ValueError, match="initial_covariance is singular.*positive lower bound"):
        make()


BAD_CALLABLES = {
    "F-rectangular": (lambda t: np.ones((2, 3)), noise, r"F\(t\) must return"),
    "F-scalar": (lambda t: 1.0, noise, r"F\(t\) must return"),
    "F-non-finite": (lambda t: np.full((2, 2), np.nan), noise, r"F\(t\) must return a finite"),
    "GGT-wrong-size": (drift, lambda t: np.eye(3), r"GGT\(t\) must return a \(2, 2\) array"),
    "GGT-vector": (drift, lambda t: np.ones(2), r"GGT\(t\) must return a \(2, 2\) array"),
    "GGT-non-symmetric": (drift, lambda t: np.array([[1.0, 1.0], [0.0, 1.0]]), r"GGT\(.*\) must be symmetric"),
    "GGT-indefinite": (drift, lambda t: np.diag([1.0, -1.0]), r"GGT\(.*\) must be positive semi-definite"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLABLES))
def test_linear_sde_callables_returning_wrong_arrays_are_refused(case):
    r"""``F``/``GGT`` returning the wrong shape, non-finite values or a non-PSD :math:`GG^\top` raise a ValueError naming the callable."""
    f, ggt, message = BAD_CALLABLES[case]
    with pytest.raises(ValueError, match=message):
        gd.LinearSDE(f, ggt, initial_covariance=np.eye(2))


def test_linear_sde_callable_changing_shape_mid_range_is_refused_when_used():
    """A callable whose shape goes wrong only at an unprobed time is refused when that time is reached."""
    sde = gd.LinearSDE(lambda t: A if t < 0.6 or t > 0.7 else np.eye(3), noise, initial_covariance=np.eye(2))
    with pytest.raises(ValueError, match=r"F\(t\) must return a \(2, 2\) array at every t; got shape \(3, 3\) at t=0.65"):
        sde.drift(0.65)
    with pytest.raises(ValueError, match=r"F\(t\) must return a \(2, 2\) array"):
        sde.transition(1.0, 0.0)


def test_linear_sde_needs_callables():
    """``F`` and ``GGT`` must be callables (a constant matrix is a ConstantCoefficientSDE)."""
    with pytest.raises(TypeError, match="F and GGT must be callables"):
        gd.LinearSDE(A, noise)


@pytest.mark.parametrize("make, message", [
    (lambda: gd.VPSDE.linear(beta_min=-0.1), "beta_min must be a finite non-negative number"),
    (lambda: gd.VPSDE.linear(beta_max=-1.0), "beta_max must be a finite positive number"),
    (lambda: gd.VPSDE.linear(beta_min=5.0, beta_max=1.0), r"beta_max \(1.0\) must be >= beta_min"),
    (lambda: gd.VPSDE.discrete(betas=[0.1, -0.1]), r"betas must be a 1-D array with entries in \(0, 1\)"),
    (lambda: gd.VPSDE.discrete(alphas_cumprod=[0.9, 0.95]), "alphas_cumprod must be strictly decreasing"),
    (lambda: gd.VPSDE.cosine(s=-0.01), "s must be a finite non-negative number"),
    (lambda: gd.VESDE(sigma_min=-0.01), "sigma_min must be a finite positive number"),
    (lambda: gd.VESDE(sigma_max=0.0), "sigma_max must be a finite positive number"),
    (lambda: gd.VESDE(sigma_min=1.0, sigma_max=0.5), r"sigma_max \(0.5\) must exceed sigma_min"),
    (lambda: gd.CLD(beta0=-4.0), "beta0 must be a finite non-negative number"),
    (lambda: gd.CLD(beta0=1.0, beta1=-2.0), r"beta\(t\) = beta0 \+ beta1 t must stay positive"),
    (lambda: gd.CLD(mass_inv=-4.0), "mass_inv must be a finite positive number"),
    (lambda: gd.CLD(gamma_friction=0.0), "gamma_friction must be a finite positive number"),
    (lambda: gd.BDM((8, 8), blur_sigma_max=-1.0), "blur_sigma_max must be a finite non-negative number"),
    (lambda: gd.BDM((8, 8), min_scale=0.0), r"min_scale \(d_min\) must lie in \(0, 1\)"),
    (lambda: gd.ConstantCoefficientSDE(A, Q, beta=-1.0, initial_covariance=np.eye(2)), "beta must be positive"),
    (lambda: gd.ConstantCoefficientSDE(A, Q, beta=lambda t: 0.5 - t, initial_covariance=np.eye(2)),
     r"beta\(t\) must return finite non-negative values"),
    (lambda: gd.ConstantCoefficientSDE(A, -np.eye(2), initial_covariance=np.eye(2)), "Q must be positive semi-definite"),
], ids=["vp-beta-min", "vp-beta-max", "vp-beta-order", "ddpm-betas", "ddpm-alphas", "cosine-s", "ve-sigma-min",
        "ve-sigma-max", "ve-sigma-order", "cld-beta0", "cld-beta-negative-later", "cld-mass", "cld-friction",
        "bdm-blur", "bdm-d-min", "cc-beta", "cc-beta-callable", "cc-Q"])
def test_negative_or_inconsistent_parameters_are_refused(make, message):
    """Negative beta, sigma, mass, friction or blur parameters (and inconsistent pairs) raise a ValueError naming them."""
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("shape", [(1, 8), (8, 1), (8,), (8, 8, 8), (8.5, 8), (8.0, 8.0), ("8", 8), (True, 8), 8, None],
                         ids=["1x8", "8x1", "one-axis", "three-axes", "fraction", "floats", "string", "bool", "int",
                              "none"])
def test_bdm_refuses_image_shapes_it_cannot_take(shape):
    """BDM needs two integers >= 2; anything else raises a ValueError naming ``image_shape``."""
    with pytest.raises(ValueError, match=r"image_shape must be two integers >= 2, \(H, W\)"):
        gd.BDM(shape)


def test_bdm_refuses_unknown_schedules():
    """The schedule is "gddim", "bdm" or a NoiseSchedule."""
    with pytest.raises(ValueError, match=r"schedule must be one of \('gddim', 'bdm'\)"):
        gd.BDM((8, 8), schedule="cosine")


END_TIMES = {
    "vp-negative": (lambda: gd.VPSDE.linear(t_end=-1.0), r"t_end .* must lie in \(0, 1\)"),
    "vp-zero": (lambda: gd.VPSDE.linear(t_end=0.0), r"t_end .* must lie in \(0, 1\)"),
    "vp-above": (lambda: gd.VPSDE.linear(t_end=2.0), r"t_end .* must lie in \(0, 1\)"),
    "vp-at-start": (lambda: gd.VPSDE.linear(t_end=1.0), r"t_end .* must lie in \(0, 1\)"),
    "cosine-above": (lambda: gd.VPSDE.cosine(t_end=0.995), r"t_end .* must lie in \(0, 0.9946\)"),
    "ddpm-before-table": (lambda: gd.VPSDE(gd.schedules.DiscreteSchedule(), t_end=5e-4),
                          r"t_end .* must lie in \[0.001, 1\)"),
    "ve-above": (lambda: gd.VESDE(t_end=2.0), r"t_end .* must lie in \(0, 1\)"),
    "bdm-above": (lambda: gd.BDM((4, 4), schedule="bdm", t_end=2.0), r"t_end .* must lie in \(0, 1\)"),
    "bdm-zero": (lambda: gd.BDM((4, 4), t_end=0.0), r"t_end .* must lie in \(0, 0.99"),
    "cld-negative": (lambda: gd.CLD(t_end=-1.0), r"t_end .* must lie in \(0, 1\)"),
    "cld-above": (lambda: gd.CLD(t_end=1.5), r"t_end .* must lie in \(0, 1\)"),
    "cld-singular-before-range": (lambda: gd.CLD(initial_covariance=np.zeros((2, 2)), t_end=1e-6),
                                  r"t_end .* must lie in \[1e-05, 1\)"),
    "cc-above": (lambda: gd.ConstantCoefficientSDE(A, Q, initial_covariance=np.eye(2), time_range=(0.0, 2.0), t_end=3.0),
                 r"t_end .* must lie in \(0, 2\)"),
    "linear-sde-zero": (lambda: gd.LinearSDE(drift, noise, initial_covariance=np.eye(2), t_end=0.0),
                        r"t_end .* must lie in \(0, 1\)"),
}


@pytest.mark.parametrize("case", sorted(END_TIMES))
def test_end_times_outside_the_sampling_range_are_refused(case):
    """``t_end`` outside ``[t_lower, t_start)``, or 0, raises a ValueError naming ``t_end`` and the interval (never clamped)."""
    make, message = END_TIMES[case]
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("bad, error, message", [
    ("0.01", TypeError, "t_end must be real numbers"),
    (np.nan, ValueError, "t_end must be finite"),
    ([0.01, 0.02], TypeError, "t_end must be one real number"),
], ids=["string", "nan", "array"])
def test_end_times_that_are_not_one_real_number_are_refused(bad, error, message):
    """A string, NaN or array ``t_end`` is refused, naming ``t_end``."""
    for make in (gd.VPSDE.linear, gd.VESDE, gd.CLD):
        with pytest.raises(error, match=message):
            make(t_end=bad)


def test_valid_end_times_are_kept_exactly():
    """A valid ``t_end`` is stored as given (the old VPSDE clamped into range silently)."""
    assert gd.VPSDE.linear(t_end=0.0123).t_end == 0.0123
    assert gd.VPSDE(gd.schedules.DiscreteSchedule(), t_end=1e-3).t_end == 1e-3
    assert gd.CLD(t_end=0.5).t_end == 0.5
    assert gd.BDM((4, 4), t_end=0.25).t_end == 0.25


@pytest.mark.parametrize("make, error, message", [
    (lambda: gd.VESDE(sigma_min="0.01"), TypeError, "sigma_min must be a real number"),
    (lambda: gd.CLD(mass_inv=True), TypeError, "mass_inv must be a real number"),
    (lambda: gd.CLD(beta1="1"), TypeError, "beta1 must be real numbers"),
    (lambda: gd.VPSDE.linear(beta_max=[20.0, 30.0]), TypeError, "beta_max must be a real number"),
    (lambda: gd.BDM((4, 4), min_scale="0.1"), TypeError, "min_scale must be real numbers"),
    (lambda: gd.schedules.CosineSchedule(normalize="no"), TypeError, "normalize must be True or False"),
    (lambda: gd.schedules.TanLogSNRSchedule("low", 10.0), TypeError, "logsnr_min must be real numbers"),
    (lambda: gd.LinearSDE(drift, noise, initial_covariance=np.eye(2), rtol=-1e-9), ValueError,
     "rtol must be a finite positive number"),
    (lambda: gd.ConstantCoefficientSDE(A, Q, beta=lambda t: 1.0 + t, beta_integral=0.5, initial_covariance=np.eye(2)),
     TypeError, "beta_integral must be a callable"),
    (lambda: gd.ConstantCoefficientSDE(A, Q, beta=lambda t: 1.0 + t, beta_integral=lambda t: t,
                                       initial_covariance=np.eye(2)),
     ValueError, r"beta_integral\(t\) must be B\(t\) = int_0\^t beta"),
], ids=["string-sigma", "bool-mass", "string-beta1", "array-beta", "string-d-min", "normalize-string",
        "logsnr-string", "negative-rtol", "beta-integral-not-callable", "beta-integral-wrong"])
def test_parameters_of_the_wrong_kind_are_refused(make, error, message):
    """Strings, bools and arrays for numeric parameters, and a B(t) that is not the integral of beta, are refused."""
    with pytest.raises(error, match=message):
        make()
