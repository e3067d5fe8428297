"""A new diffusion = (basis, F, GG^T, Sigma_0) samples with no backend change, for any mode count.

Two user diffusions built from the exported base class :class:`gd.ScalarModesDiffusion`: a
per-channel VP (``M = 3`` modes on the channel axis, identity basis) and a diffusion with ``M = 4``
modes in a user orthogonal basis. On Dirac data gDDIM (ε form, ``K = R``) is exact for any grid, so
the sampled state must equal the exact probability-flow solution
(:meth:`~gddim_numerics.problems.DiracData.exact_flow`, a closed form computed on the host) to
rounding on every array backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import gddim_numerics as gd
from test_backends import xp  # noqa: F401  (the NumPy / array-api-strict / torch fixture)


class LinearModesVP(gd.ScalarModesDiffusion):
    r"""VP with one linear β schedule per mode: :math:`\log\mu_m = -\tfrac12(b_m t + \tfrac12(B_m - b_m)t^2)`,
    :math:`v_m = 1 - \mu_m^2`."""

    time_range = (0.0, 1.0)
    t_start, t_end = 1.0, 1e-3

    def __init__(self, beta_min, beta_max, basis=None):
        self.b0, self.b1 = np.asarray(beta_min, float), np.asarray(beta_max, float)
        self.n_modes = len(self.b0)
        if basis is not None:
            self.basis = basis

    def _log_mean(self, t):
        t = np.asarray(t)[..., None]
        return -0.5 * (self.b0 * t + 0.5 * (self.b1 - self.b0) * t**2)

    def _dlog_mean(self, t):
        t = np.asarray(t)[..., None]
        return -0.5 * (self.b0 + (self.b1 - self.b0) * t)

    def _variance(self, t):
        return -np.expm1(2.0 * self._log_mean(t))

    def _dvariance(self, t):
        return -2.0 * self._dlog_mean(t) * np.exp(2.0 * self._log_mean(t))


def _orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


CASES = {
    "per_channel_vp": (lambda: LinearModesVP([0.1, 0.5, 2.0], [20.0, 10.0, 5.0]), (3, 2, 2)),
    "orthogonal_basis": (lambda: LinearModesVP([0.1, 0.3, 1.0, 3.0], [20.0, 12.0, 8.0, 4.0],
                                               basis=gd.OrthogonalBasis(_orthogonal(4, 3))), (4,)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("order", [1, 3])
def test_new_diffusion_samples_exactly_on_dirac_data(xp, case, order):  # noqa: F811
    make, event = CASES[case]
    sde = make()
    rng = np.random.default_rng(5)
    data = gd.DiracData(sde, event, point=rng.standard_normal(event))
    x_t = data.sample_prior(3, rng=rng)
    ts = gd.time_grid(sde, 8, "power", power=2)
    exact = data.exact_flow(x_t, ts[0], ts[-1])
    res = gd.GDDIM(sde, ts, order=order).sample(data.eps_R, xp.asarray(x_t, "float64"))
    # measured max error 4.4e-16 (NumPy); the gDDIM step is exact on Dirac data, so 1e-9 has > 1e6 margin
    assert np.abs(xp.to_numpy(res.x) - exact).max() <= 1e-9


def test_mode_layout_is_checked():
    sde = CASES["per_channel_vp"][0]()
    data = gd.DiracData(sde, (3, 2), point=np.zeros((3, 2)))
    plan = gd.GDDIM(sde, gd.time_grid(sde, 4), order=1)
    with pytest.raises(ValueError, match="first event axis holds the diffusion's M = 3 modes"):
        plan.sample(data.eps_R, np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="orthogonal"):
        gd.OrthogonalBasis(np.ones((2, 2)))
