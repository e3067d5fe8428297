"""Ancestral sampling (DDPM; BDM per frequency): the posterior of the forward kernel, one step at a time."""

from __future__ import annotations

import numpy as np

from ..diffusion import LinearDiffusion
from ..grids import check_grid
from ..outputs import check_output_type
from ..plans import io_tables
from ..tables import StepTables
from .common import TablePlan, check_diffusion, checked_grid, table_plan
from .method import Method


def ancestral_tables(diffusion: LinearDiffusion, ts, output: str = "eps_R") -> StepTables:
    r"""Ancestral sampling (DDPM; BDM per frequency, docs/math §5.4) as :class:`StepTables`.

    For ``k = 1`` modes with mean coefficient :math:`\alpha_t = \Psi(t, 0)` and variance
    :math:`\sigma_t^2 = \Sigma_t`: draw from the kernel's posterior :math:`q(u_t \mid u_s, \hat u_0)`
    with the predicted data :math:`\hat u_0 = \Psi(0, s)(u_s - R_s\epsilon_R)`. With
    :math:`\alpha_{s|t} = \Psi(s, t)` and the forward step variance
    :math:`\sigma^2_{s|t} = \Sigma_s - \alpha_{s|t}^2\Sigma_t`,

    .. math::
        u_t = \frac{\alpha_{s|t}\Sigma_t}{\Sigma_s}\,u_s + \frac{\sigma^2_{s|t}}{\Sigma_s}\,\Psi(t, 0)\hat u_0
              + \sqrt{\frac{\Sigma_t\,\sigma^2_{s|t}}{\Sigma_s}}\;z .

    In the BDM paper's notation (current time ``t``, next ``s``) this is its pseudo-code's
    :math:`\mu = \frac{\alpha_{t|s}\sigma^2_{t\to s}}{\sigma^2_{t|s}}y_t
    + \frac{\sigma^2_{t\to s}}{\alpha_{t|s}\sigma_s^2}(y_t - \sigma_t\hat\epsilon)`,
    :math:`\sigma^2_{t\to s} = (\sigma_s^{-2} + \alpha_{t|s}^2/\sigma_{t|s}^2)^{-1}`, per frequency; it equals
    stochastic gDDIM with λ = 1 (docs/math §4.1, §5.4). Denominators are not clipped: a step whose
    signal-to-noise ratio does not decrease is refused.

    Raises
    ------
    ValueError
        If the diffusion has ``k > 1`` blocks (e.g. CLD): use ``"em"`` or ``"gddim"`` with ``lam=1``.
    """
    diffusion = check_diffusion(diffusion)
    check_output_type(output, diffusion)
    if diffusion.block_size != 1:
        raise ValueError(
            f"ancestral sampling needs a diffusion with k = 1 modes (VP, VE, BDM); {diffusion!r} has "
            f"k = {diffusion.block_size}. Use method='em' or method='gddim' with order=1, lam=1 instead"
        )
    ts = check_grid(diffusion, ts)
    s, t = ts[:-1], ts[1:]
    alpha_st = diffusion.transition(s, t)
    psi = diffusion.transition(t, s)
    var_s, var_t = diffusion.covariance(s), diffusion.covariance(t)
    step_var = var_s - alpha_st**2 * var_t
    if np.any(step_var <= 0):
        k = int(np.argmax(np.any(step_var <= 0, axis=(1, 2, 3))))
        raise ValueError(f"the signal-to-noise ratio does not decrease over step {k} ({s[k]:g} -> {t[k]:g}); "
                         "ancestral sampling needs Sigma_s > Psi(s,t)^2 Sigma_t on every step")
    to_data_weight = step_var / var_s * psi
    state = alpha_st * var_t / var_s + to_data_weight
    history = (-to_data_weight * diffusion.gddim_factor(s))[:, None]
    noise = np.sqrt(var_t * step_var / var_s)
    return StepTables(ts=ts, state=state, history=history, orders=np.ones(len(s), dtype=int), noise=noise,
                      info=dict(method="ancestral", output=output), **io_tables(diffusion, s, output, "R"))



def ancestral(diffusion: LinearDiffusion, ts, output: str = "eps_R", denoise: bool = False) -> TablePlan:
    """Ancestral (DDPM/BDM) plan; see :func:`ancestral_tables`."""
    return table_plan(diffusion, ancestral_tables(diffusion, checked_grid(diffusion, ts, denoise), output), output, denoise)


METHOD = Method(build=ancestral, options=("output", "denoise"),
                description="ancestral sampling (DDPM; BDM per frequency) for k = 1 diffusions; = stochastic gDDIM lam = 1")
