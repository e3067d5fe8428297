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


@pytest.mark.parametrize("lam", ["0.5", None, [0.5], True])
def test_lam_must_be_a_real_number(vp, lam):
    """lam="0.5" (and other non-numbers) is a TypeError naming lam, in gd.sample, GDDIM and em alike."""
    with pytest.raises(TypeError, match="lam"):
        gd.sample(vp, lambda x, t: 0 * x, np.ones((2, 3)), nfe=4, lam=lam)
    with pytest.raises(TypeError, match="lam"):
        gd.GDDIM(vp, [1.0, 0.5, 0.1], lam=lam)
    with pytest.raises(TypeError, match="lam"):
        gd.sample(vp, lambda x, t: 0 * x, np.ones((2, 3)), method="em", nfe=4, lam=lam)


@pytest.mark.parametrize("lam", [-0.1, np.inf, np.nan])
def test_lam_must_be_finite_and_non_negative(vp, lam):
    with pytest.raises(ValueError, match="lam"):
        gd.sample(vp, lambda x, t: 0 * x, np.ones((2, 3)), nfe=4, lam=lam)


@pytest.mark.parametrize("method, option", [("heun", "lam"), ("gddim", "sample_options"), ("rk45", "order"),
                                            ("sscs", "power_of_two")])
def test_unknown_option_names_the_method_and_its_options(method, option):
    sde = gd.CLD()
    with pytest.raises(TypeError, match=rf"method '{method}' does not take the option\(s\) '{option}'; it accepts "
                                        r"(\w+, )+"):
        gd.sample(sde, lambda x, t: 0 * x, np.ones((2, 2)), method=method, nfe=20, **{option: 1})


@pytest.mark.parametrize("method", ["gddim", "heun", "sscs", "rk45"])
@pytest.mark.parametrize("on_nonfinite", ["raise", "return"])
def test_nonfinite_start_state_is_reported_as_the_start_state(method, on_nonfinite):
    """NaN in x_T: reported as "start state", not as a network failure at step 0 and not success=True."""
    sde = gd.CLD()
    x = np.zeros((3, 2))
    x[1, 0] = np.nan
    run = lambda: gd.sample(sde, lambda u, t: 0 * u, x, method=method, nfe=20, on_nonfinite=on_nonfinite, rng=0)  # noqa: E731
    if on_nonfinite == "raise":
        with pytest.raises(FloatingPointError, match="start state"):
            run()
    else:
        res = run()
        assert not res.success and res.status == -1 and "start state" in res.message


@pytest.mark.parametrize("order, corrector", [(2, False), (3, False), (1, True)])
def test_grid_ending_at_zero_is_refused_up_front_for_multistep_orders(vp, order, corrector):
    """Order >= 2 (or the corrector) extrapolates through R_0 = 0: refused when the plan is made, naming t = 0."""
    with pytest.raises(ValueError, match="ends at t = 0"):
        gd.GDDIM(vp, [1.0, 0.5, 0.2, 0.0], order=order, corrector=corrector)
    plan = gd.GDDIM(vp, [1.0, 0.5, 0.2, 0.0], order=1)  # order 1 steps to t = 0 in closed form
    assert plan.nfe == 3


@pytest.mark.parametrize("t_end", [-1.0, 2.0, np.nan])
def test_bad_t_end_is_refused_up_front(vp, t_end):
    with pytest.raises(ValueError, match="t_end"):
        gd.sample(vp, lambda x, t: 0 * x, np.ones((2, 3)), nfe=4, t_end=t_end)


def test_nfe_above_the_limit_warns_with_the_memory_estimate_and_refuses_beyond_free_memory(vp, monkeypatch):
    from gddim_numerics.samplers import method as method_module

    monkeypatch.setattr(method_module, "MAX_STEPS", 3)
    with pytest.warns(RuntimeWarning, match=r"5 steps \(> 3\) builds a large plan: ~\d+ MiB"):
        gd.plan(vp, "gddim", nfe=5, order=1)
    monkeypatch.setattr(method_module, "_available_memory", lambda: 1000)
    with pytest.raises(ValueError, match=r"nfe|GiB"):
        gd.plan(vp, "gddim", nfe=5, order=1)
    assert method_module.plan_memory(vp, 10**6) >= 10**6 * 3_000  # the issue measured ~17 KB per step at nfe=1e6
