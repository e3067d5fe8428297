r"""A black-box ``scipy.integrate`` Runge–Kutta solver on the probability-flow ODE (``rk45``, ``dop853``).

The plan (tolerances, budget, interval) is host configuration; the solve runs in
``backends.ivp`` (float64 NumPy on the host, the network on the caller's arrays).
"""

from __future__ import annotations

import numpy as np

from ..diffusion import LinearDiffusion
from ..outputs import check_output_type
from ..result import SampleResult
from .common import FrozenPlan, check_diffusion, checked_grid, probability_flow_coefficients
from .method import Method

#: The explicit adaptive solvers of ``scipy.integrate`` this plan can run.
SOLVERS = ("RK23", "RK45", "DOP853")


class ProbabilityFlowIVP(FrozenPlan):
    r"""A black-box ``scipy.integrate`` Runge–Kutta solver on the probability-flow ODE.

    Integrates :math:`\dot u = V_u(t)u + V_y(t)\,y(u, t)` (:func:`probability_flow_coefficients`)
    from ``t_start`` down to ``t_end`` with the explicit adaptive solver ``solver`` (``"RK45"``,
    ``"DOP853"`` or ``"RK23"``) at tolerances ``rtol``, ``atol``. The state is integrated on the host
    in float64 NumPy, in the caller's own coordinates and layout, with the solver's own error norm.
    For states of another library (PyTorch, CuPy, ...) every evaluation copies the state to the
    caller's namespace, device and dtype, calls ``eps_fn`` there, and copies the output back to
    the host: one round trip per evaluation — this baseline is for accuracy studies, not speed.
    The result comes back in the caller's namespace, device and dtype.

    Evaluation count: the number of calls of ``eps_fn``, counted by wrapping it (equal to the
    solver's ``nfev``), reported as ``SampleResult.nfe``; it depends on the tolerances and the
    problem. ``max_nfe`` is a *budget*, not a target: a solve that would need more evaluations
    stops before exceeding it and returns the last accepted state with ``success=False`` (the
    time it reached is ``ts[-1]``). The tolerances are the user's to choose; the defaults
    ``rtol = atol = 1e-5`` are those of the score-SDE probability-flow sampler (Song et al. 2021),
    the paper's "Prob.Flow, RK45" baseline. With ``denoise`` the final step costs one more
    evaluation, counted in the budget.

    Parameters
    ----------
    diffusion : LinearDiffusion
    solver : {"RK45", "DOP853", "RK23"}
    rtol, atol : float
        Positive tolerances of the solver.
    max_nfe : int or None
        Evaluation budget (``None``: unlimited).
    t_start, t_end : float, optional
        Integration interval (defaults ``diffusion.t_start``, ``diffusion.t_end``).
    output : {"eps_R", "eps_L", "score", "data"}
        What ``eps_fn`` returns.
    denoise : bool
        Append the final denoising step (one evaluation).
    """

    def __init__(self, diffusion: LinearDiffusion, solver: str = "RK45", *, rtol: float = 1e-5, atol: float = 1e-5,
                 max_nfe: int | None = None, t_start: float | None = None, t_end: float | None = None,
                 output: str = "eps_R", denoise: bool = False):
        self.diffusion = check_diffusion(diffusion)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}; got {solver!r}")
        self.solver = solver
        for name, tol in (("rtol", rtol), ("atol", atol)):
            if not (isinstance(tol, (int, float, np.floating)) and np.isfinite(tol) and tol > 0):
                raise ValueError(f"{name} must be a positive finite number; got {tol!r}")
        self.rtol, self.atol = float(rtol), float(atol)
        self.denoise = bool(denoise)
        if max_nfe is not None and (isinstance(max_nfe, bool) or not isinstance(max_nfe, (int, np.integer))
                                    or max_nfe < 1 + int(self.denoise)):
            raise ValueError(f"max_nfe must be None or an integer >= {1 + int(self.denoise)}; got {max_nfe!r}")
        self.max_nfe = None if max_nfe is None else int(max_nfe)
        self.output = check_output_type(output, diffusion)
        t0 = diffusion.t_start if t_start is None else t_start
        t1 = diffusion.t_end if t_end is None else t_end
        self.ts = checked_grid(diffusion, [t0, t1], self.denoise)
        self._freeze()

    def velocity(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """``(V_u, V_y)`` of the probability-flow velocity at ``t`` (:func:`probability_flow_coefficients`)."""
        return probability_flow_coefficients(self.diffusion, np.array([t]), self.output)

    def sample(self, eps_fn, x, **kwargs) -> SampleResult:
        """Solve from ``x`` at ``t_start``; ``ts`` of the result are the accepted step times.

        ``rng``/``noise`` are unused (the flow is deterministic); ``return_trajectory`` keeps the
        state at every accepted step; ``check_finite``/``on_nonfinite`` as in ``run_tables``.
        """
        from ..backends.ivp import run_ivp  # the array side, loaded when a sample runs

        return run_ivp(self, eps_fn, x, **kwargs)

    def __repr__(self) -> str:
        return (f"ProbabilityFlowIVP({self.diffusion!r}, {self.solver!r}, rtol={self.rtol:g}, atol={self.atol:g}, "
                f"max_nfe={self.max_nfe}, denoise={self.denoise})")


def _method(solver: str) -> Method:
    def build(diffusion, ts, nfe: int, **options) -> ProbabilityFlowIVP:
        return ProbabilityFlowIVP(diffusion, solver, max_nfe=nfe, **options)

    first_step = {"RK45": 8, "DOP853": 14}[solver]  # f(t0) + initial-step probe + one step's stages
    return Method(build=build, options=("rtol", "atol", "output", "denoise"), steps_for_nfe=None, min_nfe=first_step,
                  description=f"scipy.integrate.{solver} on the probability-flow ODE (adaptive: rtol/atol, "
                              "default 1e-5; nfe is a budget, the result's nfe is measured)")


RK45 = _method("RK45")
DOP853 = _method("DOP853")
