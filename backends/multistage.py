r"""The loops of the samplers that evaluate the network more than once per step, or mid-step.

Each loop runs the host tables of its plan (:class:`~gddim_numerics.samplers.heun.Heun`,
:class:`~gddim_numerics.samplers.sscs.SSCS`) with one :class:`~.run.ArrayRun`; the formulas are in
the plans' docstrings. Keywords as :func:`~gddim_numerics.backends.loop.run_tables`.
"""

from __future__ import annotations

from typing import Any

from gddim_numerics.result import SampleResult

from .loop import check_call, progress_bar
from .run import ArrayRun, denoised


def run_heun(plan: Any, eps_fn, x, *, rng=None, noise=None, callback=None, progress: bool = False,
             return_trajectory: bool = False, check_finite: bool = True, on_nonfinite: str = "raise",
             block_axis: int = -1) -> SampleResult:
    """Probability-flow Heun from ``x`` at ``plan.ts[0]`` (``rng``/``noise`` unused: no noise is drawn)."""
    check_call(eps_fn, on_nonfinite)
    run = ArrayRun(plan.diffusion, eps_fn, x, block_axis=block_axis, check_finite=check_finite)
    tab = {name: run.prepare(table) for name, table in plan.tables.items()}
    ts = plan.ts
    n = len(ts) - 1
    n_heun = n - int(plan.final_euler)
    u = run.start
    trajectory = [x] if return_trajectory else None
    for k in progress_bar(range(n), progress):
        y_raw, y = run.evaluate(u, ts[k])
        u_pred = run.combine((tab["predict_state"][k], u), (tab["predict_output"][k], y))
        if k < n_heun:
            _, y_pred = run.evaluate(u_pred, ts[k + 1])
            u_next = run.combine((tab["state"][k], u), (tab["output"][k], y),
                                 (tab["predicted_state"][k], u_pred), (tab["predicted_output"][k], y_pred))
        else:
            u_next = u_pred
        if callback is not None:
            run.report(callback, k, ts, u, y_raw, y, (tab["data_state"], tab["data_output"]))
        u = u_next
        if return_trajectory:
            trajectory.append(run.to_caller(u))
    head = run.result(u, ts, trajectory, on_nonfinite)
    return denoised(plan, head, eps_fn, callback, return_trajectory, check_finite, on_nonfinite, block_axis)


def run_sscs(plan: Any, eps_fn, x, *, rng=None, noise=None, callback=None, progress: bool = False,
             return_trajectory: bool = False, check_finite: bool = True, on_nonfinite: str = "raise",
             block_axis: int = -1) -> SampleResult:
    """CLD's SSCS from ``x`` at ``plan.ts[0]``; noise draws ``2k`` and ``2k + 1`` serve step ``k``."""
    check_call(eps_fn, on_nonfinite)
    run = ArrayRun(plan.diffusion, eps_fn, x, block_axis=block_axis, check_finite=check_finite,
                   stochastic=True, rng=rng, noise=noise)
    tab = {name: run.prepare(table) for name, table in plan.tables.items()}
    ts = plan.ts
    u = run.start
    trajectory = [x] if return_trajectory else None
    for k in progress_bar(range(len(ts) - 1), progress):
        v = run.combine((tab["first_state"][k], u), (tab["first_noise"][k], run.draw(2 * k)))
        y_raw, y = run.evaluate(v, ts[k])
        if callback is not None:
            run.report(callback, k, ts, v, y_raw, y, (tab["data_state"], tab["data_output"]))
        u = run.combine((tab["state"][k], v), (tab["output"][k], y),
                        (tab["second_noise"][k], run.draw(2 * k + 1)))
        if return_trajectory:
            trajectory.append(run.to_caller(u))
    head = run.result(u, ts, trajectory, on_nonfinite)
    return denoised(plan, head, eps_fn, callback, return_trajectory, check_finite, on_nonfinite, block_axis)
