"""Probability-flow Heun (explicit trapezoid): host tables here, its loop in ``backends.multistage``."""

from __future__ import annotations

import numpy as np

from ..diffusion import LinearDiffusion
from ..outputs import check_output_type
from ..result import SampleResult
from .common import FrozenPlan, check_diffusion, checked_grid, data_maps, eye_like, probability_flow_coefficients
from .method import Method


class Heun(FrozenPlan):
    r"""Probability-flow Heun (explicit trapezoid rule; "2nd Heun" of Karras et al. 2022).

    With the PF velocity :math:`f(u, t) = V_u(t)u + V_y(t)\,y(u, t)`
    (:func:`probability_flow_coefficients`) and :math:`\Delta t = t - s`:

    .. math::
        \tilde u = u_s + \Delta t\,f(u_s, s),\qquad
        u_t = u_s + \tfrac{\Delta t}2\big(f(u_s, s) + f(\tilde u, t)\big),

    two evaluations per step, global order 2. Choice for the last step: Karras et al. take an
    Euler step (:math:`u_t = \tilde u`) there because their grid ends at :math:`\sigma = 0`, where
    the second evaluation is useless. The library's grids end at ``t_end > 0``, so by default every
    step is a Heun step (``2N`` evaluations); ``final_euler=True`` gives Karras's variant
    (``2N - 1`` evaluations) and is required when the grid ends where :math:`\Sigma_t` is singular
    (e.g. ``t = 0``).

    Parameters
    ----------
    diffusion : LinearDiffusion
    ts : array_like
        Decreasing grid.
    output : {"eps_R", "eps_L", "score", "data"}
        What ``eps_fn`` returns.
    denoise : bool
        Append the final denoising step (one evaluation).
    final_euler : bool
        Make the last step an Euler step.
    """

    def __init__(self, diffusion: LinearDiffusion, ts, output: str = "eps_R", denoise: bool = False,
                 final_euler: bool = False):
        self.diffusion = check_diffusion(diffusion)
        self.output = check_output_type(output, diffusion)
        self.denoise, self.final_euler = bool(denoise), bool(final_euler)
        self.ts = checked_grid(diffusion, ts, self.denoise)
        s, t = self.ts[:-1], self.ts[1:]
        n_heun = len(s) - int(self.final_euler)
        if n_heun > 0 and np.any(np.linalg.eigvalsh(diffusion.covariance(t[n_heun - 1])) <= 0):
            raise ValueError(f"Heun's second evaluation of the last step would be at t={t[n_heun - 1]:g}, where "
                             "Sigma_t is singular (no score); pass final_euler=True or end the grid at t > 0")
        dt = (t - s)[:, None, None, None]
        vu_s, vy_s = probability_flow_coefficients(diffusion, s, output)
        vu_t, vy_t = probability_flow_coefficients(diffusion, t[:n_heun], output) if n_heun else (vu_s[:0], vy_s[:0])
        eye = eye_like(vu_s)
        h = 0.5 * dt[:n_heun]
        self.tables = {
            "predict_state": eye + dt * vu_s, "predict_output": dt * vy_s,
            "state": eye[:n_heun] + h * vu_s[:n_heun], "output": h * vy_s[:n_heun],
            "predicted_state": h * vu_t, "predicted_output": h * vy_t,
        }
        self.tables.update(zip(("data_state", "data_output"), data_maps(diffusion, s, output)))
        self._freeze()

    @property
    def nfe(self) -> int:
        """Network evaluations of one sample call: ``2N`` (``- 1`` with ``final_euler``, ``+ 1`` with ``denoise``)."""
        return 2 * (len(self.ts) - 1) - int(self.final_euler) + int(self.denoise)

    def sample(self, eps_fn, x, **kwargs) -> SampleResult:
        """Run from ``x`` at ``ts[0]``; keywords as :func:`~gddim_numerics.backends.run_tables` (no noise is drawn)."""
        from ..backends.multistage import run_heun  # the array side, loaded when a sample runs

        return run_heun(self, eps_fn, x, **kwargs)

    def __repr__(self) -> str:
        return (f"Heun({self.diffusion!r}, N={len(self.ts) - 1}, output={self.output!r}, "
                f"final_euler={self.final_euler}, denoise={self.denoise})")


def heun_steps(nfe: int, denoise: bool = False, final_euler: bool = False, **_) -> int:
    evaluations = nfe - int(bool(denoise)) + int(bool(final_euler))
    if evaluations % 2:
        raise ValueError(f"heun costs 2 evaluations per step{' (1 on the Euler last step)' if final_euler else ''}"
                         f"{' plus 1 for denoise' if denoise else ''}, so nfe={nfe} cannot be met exactly; pass "
                         f"nfe={nfe + 1} or final_euler={not final_euler}")
    return evaluations // 2


METHOD = Method(build=Heun, options=("output", "denoise", "final_euler"), steps_for_nfe=heun_steps, min_nfe=2,
                description="probability-flow Heun, 2 evaluations per step (final_euler: Euler last step, as Karras et al.)")
