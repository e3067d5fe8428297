"""Time grids: power grids with any exponent, log(t + c), a first step ending at a noise level, user grids."""

import numpy as np
import pytest
from scipy.optimize import brentq

import gddim_numerics as gd
from gddim_numerics.grids import time_at_log_snr

SDES = [gd.VPSDE.linear(), gd.CLD(), gd.BDM((4, 4)), gd.VESDE()]


@pytest.mark.parametrize("power", [0.7, 1.0, 2.5, 3.7, 7.0])
def test_power_grid_is_uniform_in_t_to_the_one_over_p(power):
    sde = gd.VPSDE.linear()
    ts = gd.time_grid(sde, 9, "power", power=power)
    assert ts[0] == sde.t_start and ts[-1] == sde.t_end
    np.testing.assert_allclose(np.diff(ts ** (1 / power)), np.diff(ts ** (1 / power))[0], rtol=1e-10)  # measured 3.2e-15 (relative)


@pytest.mark.parametrize("offset", [1e-3, 3e-3, 0.1])
def test_log_grid_is_uniform_in_log_t_plus_c(offset):
    sde = gd.CLD()
    ts = gd.time_grid(sde, 7, "log", offset=offset)
    assert ts[0] == sde.t_start and ts[-1] == sde.t_end
    np.testing.assert_allclose(np.diff(np.log(ts + offset)), np.diff(np.log(ts + offset))[0], rtol=1e-10)  # measured 1.3e-15 (relative)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("level", [-4.0, 0.0, 3.0])
def test_first_step_ends_at_the_requested_noise_level(sde, level):
    """ts[1] has log-SNR == level (1e-9); the other steps follow the grid kind from ts[1] to t_end."""
    ts = gd.time_grid(sde, 6, "power", power=3.0, first_log_snr=level)
    assert len(ts) == 7 and ts[0] == sde.t_start and ts[-1] == sde.t_end
    assert abs(float(sde.log_snr(ts[1])) - level) <= 1e-9  # measured 4.2e-15
    rest = ts[1:] ** (1 / 3)
    np.testing.assert_allclose(np.diff(rest), np.diff(rest)[0], rtol=1e-9)  # measured 1.3e-15 (relative)
    root = brentq(lambda t: float(sde.log_snr(t)) - level, sde.t_end, sde.t_start, xtol=1e-15, rtol=1e-15)
    np.testing.assert_allclose(time_at_log_snr(sde, level), root, rtol=1e-10)  # measured 0


@pytest.mark.parametrize("level", [-20.0, 30.0, float("nan")])
def test_first_step_level_outside_the_range_is_refused(level):
    sde = gd.CLD()
    with pytest.raises(ValueError, match="first_log_snr"):
        gd.time_grid(sde, 6, first_log_snr=level)


def test_first_step_needs_two_steps_and_a_number():
    sde = gd.VPSDE.linear()
    with pytest.raises(ValueError, match="first_log_snr"):
        gd.time_grid(sde, 1, first_log_snr=0.0)
    with pytest.raises(ValueError, match="first_log_snr"):
        gd.time_grid(sde, 4, first_log_snr="high")


def test_user_grid_through_sample_and_plan():
    """Any strictly decreasing grid in range is accepted by GDDIM and by sample(grid=...)."""
    sde = gd.VPSDE.linear()
    ts = np.concatenate([[1.0], gd.time_grid(sde, 4, "log", offset=1e-2, t_start=0.6)])
    data = gd.DiracData(sde, (2,), np.array([0.3, -0.2]))
    x = data.sample_marginal(1.0, 3, rng=0)
    a = gd.sample(sde, data.eps_R, x, method="gddim", nfe=5, grid=ts, order=3, form="data")
    b = gd.GDDIM(sde, ts, order=3, form="data").sample(data.eps_R, x)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.ts, ts)
    with pytest.raises(ValueError, match="decreasing"):
        gd.GDDIM(sde, ts[::-1])
