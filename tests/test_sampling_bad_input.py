"""Bad input to grids, plans and the sampler: clear errors naming the argument, never a silent fix."""

import numpy as np
import pytest

import gddim_numerics as gd


@pytest.fixture(scope="module")
def vp():
    return gd.VPSDE.linear()


@pytest.mark.parametrize("ts, match", [
    ([1.0, 0.5, 0.7, 0.1], "strictly decreasing"),
    ([1.0, 0.5, 0.5, 0.1], "strictly decreasing"),
    ([0.1, 0.5, 1.0], "strictly decreasing"),
    ([1.5, 0.5, 0.1], "time range"),
    ([1.0, 0.5, -0.1], "time range"),
    ([1.0, np.nan, 0.1], "finite"),
    ([1.0], "at least 2"),
])
def test_bad_grids_are_refused(vp, ts, match):
    """Non-monotone, repeated, out-of-range, non-finite or too short grids raise ValueError."""
    with pytest.raises(ValueError, match=match):
        gd.GDDIM(vp, ts)


@pytest.mark.parametrize("order", [0, 6, 2.5, True])
def test_bad_order(vp, order):
    """q must be an integer in 1..5."""
    with pytest.raises(ValueError, match="order"):
        gd.GDDIM(vp, [1.0, 0.5, 0.1], order=order)


def test_negative_lambda(vp):
    """lam < 0 is refused."""
    with pytest.raises(ValueError, match="lam"):
        gd.GDDIM(vp, [1.0, 0.5, 0.1], lam=-0.1)


def test_unknown_output_and_variable(vp):
    """Unknown network output types and extrapolation variables list the valid ones."""
    with pytest.raises(ValueError, match="eps_R"):
        gd.GDDIM(vp, [1.0, 0.5, 0.1], output="x0")
    with pytest.raises(ValueError, match="sqrt_t"):
        gd.GDDIM(vp, [1.0, 0.5, 0.1], order=2, variable="cube")
    with pytest.raises(ValueError, match="monotone"):
        gd.GDDIM(vp, [1.0, 0.5, 0.1], order=2, variable=lambda t: (t - 0.5) ** 2)


def test_stochastic_without_randomness(vp):
    """A stochastic plan without rng or noise names both ways to supply randomness."""
    plan = gd.GDDIM(vp, [1.0, 0.5, 0.1], lam=0.5)
    with pytest.raises(ValueError, match="rng="):
        plan.sample(lambda x, t: x * 0, np.zeros((2, 3)))


def test_eps_fn_wrong_shape(vp):
    """An eps_fn returning the wrong shape is reported with step and time."""
    plan = gd.GDDIM(vp, [1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="shape"):
        plan.sample(lambda x, t: np.zeros((2, 4)), np.zeros((2, 3)))


def test_eps_fn_other_array_type(vp):
    """An eps_fn returning another array library's array is a TypeError naming both."""
    torch = pytest.importorskip("torch")
    plan = gd.GDDIM(vp, [1.0, 0.5, 0.1])
    with pytest.raises(TypeError, match="eps_fn"):
        plan.sample(lambda x, t: torch.zeros(2, 3, dtype=torch.float64), np.zeros((2, 3)))


def test_eps_fn_nan_reports_step_and_time(vp):
    """A NaN from the network names the step index and time of its first occurrence."""
    ts = [1.0, 0.8, 0.6, 0.5, 0.2, 0.1]

    def eps(x, t):
        return np.full_like(x, np.nan) if t < 0.55 else np.zeros_like(x)

    with pytest.raises(FloatingPointError, match=r"step 3 \(t=0\.5"):
        gd.GDDIM(vp, ts).sample(eps, np.zeros((2, 3)))
    res = gd.GDDIM(vp, ts).sample(eps, np.zeros((2, 3)), on_nonfinite="return")
    assert not res.success and "step 3" in res.message


def test_cld_block_axis_of_wrong_size():
    """A CLD state whose block axis is not a multiple of 2 is refused."""
    sde = gd.CLD()
    with pytest.raises(ValueError, match="block axis"):
        gd.GDDIM(sde, [1.0, 0.5, 0.1]).sample(lambda x, t: x, np.zeros((2, 3, 3)))


def test_bdm_image_shape_mismatch():
    """A BDM state whose last two axes differ from the image shape is refused."""
    sde = gd.BDM((4, 4))
    with pytest.raises(ValueError, match="image shape"):
        gd.GDDIM(sde, [0.9, 0.5, 0.1]).sample(lambda x, t: x, np.zeros((2, 1, 4, 5)))


@pytest.mark.parametrize("dtype", [np.int64, np.complex128, bool])
def test_non_real_floating_states(vp, dtype):
    """Integer, boolean and complex states are refused, not recast."""
    with pytest.raises(TypeError, match="floating"):
        gd.GDDIM(vp, [1.0, 0.5, 0.1]).sample(lambda x, t: x, np.zeros((2, 3), dtype=dtype))


def test_unknown_method_lists_valid_ones(vp):
    """sample() with an unknown method name lists the valid names."""
    with pytest.raises(ValueError, match="gddim"):
        gd.sample(vp, lambda x, t: x, np.zeros((2, 3)), method="dpm++")


def test_nfe_must_match_an_explicit_grid(vp):
    """An explicit grid fixes the step count."""
    with pytest.raises(ValueError, match="steps"):
        gd.sample(vp, lambda x, t: x * 0, np.zeros((2, 3)), nfe=5, grid=[1.0, 0.5, 0.1])


def test_not_a_diffusion():
    """GDDIM refuses objects that are not diffusions."""
    with pytest.raises(TypeError, match="LinearDiffusion"):
        gd.GDDIM("vp", [1.0, 0.5])
