"""Euler–Maruyama on the λ-family reverse SDE, and probability-flow Euler (its λ = 0 case)."""

from __future__ import annotations

import numpy as np

from ..diffusion import LinearDiffusion
from ..grids import check_grid
from ..outputs import check_output_type
from ..plans import check_lam, io_tables, psd_factor
from ..tables import StepTables
from .common import TablePlan, check_diffusion, checked_grid, eye_like, score_gain, table_plan
from .method import Method


def em_tables(diffusion: LinearDiffusion, ts, lam: float = 1.0, output: str = "eps_R") -> StepTables:
    r"""Euler–Maruyama on the λ-family reverse SDE (docs/math §2.1) as :class:`StepTables`.

    The reverse SDE :math:`du = [F_tu - \tfrac{1+\lambda^2}{2}G_tG_t^\top\nabla\log p_t(u)]\,dt
    + \lambda G_t\,d\bar w`, frozen at the step's start ``s`` over :math:`\Delta t = t - s < 0`:

    .. math::
        u_t = (I + \Delta t\,F_s)\,u_s + \Delta t\,\tfrac{1+\lambda^2}{2}G_sG_s^\top R_s^{-\top}\epsilon_R
              + \big(\lambda^2|\Delta t|\,G_sG_s^\top\big)^{1/2} z,\qquad z\sim N(0, I),

    with the symmetric PSD square root as noise factor (any factor gives the same law). ``lam = 0``
    is probability-flow Euler (no noise); ``lam = 1`` the usual reverse SDE.

    The authors' code (``cld_jax/sampling.py:get_em_sampler``, docs/math §4.2) weights the score by
    :math:`(1+\lambda)/2` instead of :math:`(1+\lambda^2)/2`; the two agree only for λ ∈ {0, 1},
    and only the latter keeps the marginals :math:`p_t` for every λ. Their paper's Table 2 EM row
    comes from the code's weighting.
    """
    diffusion = check_diffusion(diffusion)
    lam = check_lam(lam)
    check_output_type(output, diffusion)
    ts = check_grid(diffusion, ts)
    s = ts[:-1]
    dt = (ts[1:] - s)[:, None, None, None]
    gg = diffusion.diffusion(s)
    state = eye_like(gg) + dt * diffusion.drift(s)
    history = (dt * 0.5 * (1.0 + lam * lam) * score_gain(diffusion, s))[:, None]
    noise = psd_factor(lam * lam * np.abs(dt) * gg, "the Euler-Maruyama noise covariance") if lam > 0 else None
    return StepTables(ts=ts, state=state, history=history, orders=np.ones(len(s), dtype=int), noise=noise,
                      info=dict(method="em", lam=lam, output=output), **io_tables(diffusion, s, output, "R"))



def em(diffusion: LinearDiffusion, ts, lam: float = 1.0, output: str = "eps_R", denoise: bool = False) -> TablePlan:
    """Euler–Maruyama plan on the λ-family reverse SDE; see :func:`em_tables`."""
    return table_plan(diffusion, em_tables(diffusion, checked_grid(diffusion, ts, denoise), lam, output), output, denoise)


def euler(diffusion: LinearDiffusion, ts, output: str = "eps_R", denoise: bool = False) -> TablePlan:
    r"""Probability-flow Euler plan (:func:`em_tables` with λ = 0).

    :math:`u_t = u_s + \Delta t\,(F_su_s + \tfrac12G_sG_s^\top R_s^{-\top}\epsilon_R)`.
    """
    return table_plan(diffusion, em_tables(diffusion, checked_grid(diffusion, ts, denoise), 0.0, output), output, denoise)


METHOD = Method(build=em, options=("lam", "output", "denoise"),
                description="Euler-Maruyama on the lambda-family reverse SDE (lam, default 1; drift weight (1+lam^2)/2)")
EULER = Method(build=euler, options=("output", "denoise"),
               description="probability-flow Euler (the lam = 0 case of em)")
