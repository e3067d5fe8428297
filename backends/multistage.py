r"""The loops of the samplers that evaluate the network more than once per step, or mid-step.

Each loop runs the host tables of its plan (:class:`~gddim_numerics.samplers.heun.Heun`,
:class:`~gddim_numerics.samplers.sscs.SSCS`) with one :class:`~.run.ArrayRun`; the formulas are in
the plans' docstrings. Keywords as :func:`~gddim_numerics.backends.loop.run_tables`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gddim_numerics.result import SampleResult, StepInfo

from .loop import run_tables
from .run import ArrayRun, progress_bar


def run_heun(plan: Any, eps_fn, x, *, rng=None, noise=None, callback=None, progress: bool = False,
             return_trajectory: bool = False, check_finite: bool = True, on_nonfinite: str = "raise",
             block_axis: int = -1) -> SampleResult:
    """Probability-flow Heun from ``x`` at ``plan.ts[0]`` (``rng``/``noise`` unused: no noise is drawn)."""
    run = ArrayRun(plan.diffusion, eps_fn, x, block_axis=block_axis, check_finite=check_finite,
                   on_nonfinite=on_nonfinite)
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
    head = run.result(u, ts, trajectory)
    return denoised(plan, head, eps_fn, callback, return_trajectory, check_finite, on_nonfinite, block_axis)


def run_sscs(plan: Any, eps_fn, x, *, rng=None, noise=None, callback=None, progress: bool = False,
             return_trajectory: bool = False, check_finite: bool = True, on_nonfinite: str = "raise",
             block_axis: int = -1) -> SampleResult:
    """CLD's SSCS from ``x`` at ``plan.ts[0]``; noise draws ``2k`` and ``2k + 1`` serve step ``k``."""
    run = ArrayRun(plan.diffusion, eps_fn, x, block_axis=block_axis, check_finite=check_finite,
                   on_nonfinite=on_nonfinite, stochastic=True, rng=rng, noise=noise)
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
    head = run.result(u, ts, trajectory)
    return denoised(plan, head, eps_fn, callback, return_trajectory, check_finite, on_nonfinite, block_axis)


def denoised(plan, head: SampleResult, eps_fn, callback, return_trajectory: bool, check_finite: bool,
              on_nonfinite: str, block_axis: int) -> SampleResult:
    """``head`` followed by the final denoising step (docs/math §3.6) when the plan asks for it."""
    if not plan.denoise or not head.success:
        return head
    t_end = float(head.ts[-1])
    steps = len(head.ts) - 1

    def shifted(info: StepInfo) -> None:
        callback(dataclasses.replace(info, step=info.step + steps, nfe=info.nfe + head.nfe))

    tail = run_tables(plan.diffusion, plan.denoise_step(t_end), eps_fn, head.x,
                      callback=None if callback is None else shifted, return_trajectory=return_trajectory,
                      check_finite=check_finite, on_nonfinite=on_nonfinite, block_axis=block_axis)
    return SampleResult(x=tail.x, ts=np.concatenate([head.ts, tail.ts[1:]]), nfe=head.nfe + tail.nfe,
                        trajectory=head.trajectory + tail.trajectory[1:] if return_trajectory else None,
                        success=tail.success, message=tail.message, status=tail.status, info=head.info)
