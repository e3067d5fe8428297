"""The run context of the multi-evaluation samplers (Heun, SSCS) and their final denoising step.

:class:`ArrayRun` holds what one sample call needs on the caller's arrays: namespace, working
dtype, the diffusion's mode operator, counted and checked network evaluations, noise, the
non-finite report and the result, so that a sampler's loop is only its step.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gddim_numerics.diffusion import LinearDiffusion
from gddim_numerics.result import SampleResult, StepInfo

from .kernels import kernels_for
from .loop import check_output, report_nonfinite, run_tables
from .namespace import device_of, namespace_of, working_dtype
from .noise import noise_source
from .operators import operator_for


class ArrayRun:
    """One sample call of a multi-stage sampler: the caller's namespace, the mode operator, counted evaluations.

    States are kept in mode coordinates in the working dtype (the state's own float32/float64;
    float32 for half precision), as in :func:`~gddim_numerics.backends.run_tables`; every
    combination is a new array (no buffer recycling: these baselines are for accuracy studies).
    """

    def __init__(self, diffusion: LinearDiffusion, eps_fn, x, *, block_axis: int, check_finite: bool,
                 stochastic: bool = False, rng=None, noise=None):
        xp = namespace_of(x, "x")
        self.xp, self.x, self.eps_fn, self.check_finite = xp, x, eps_fn, check_finite
        self.work_dtype = working_dtype(xp, x.dtype, "x")
        self.op = operator_for(diffusion, kernels_for(xp, self.work_dtype, device_of(x)), tuple(x.shape), block_axis)
        self._draw = noise_source(xp, x, self.work_dtype, rng=rng, noise=noise) if stochastic else None
        self.start = self._modes(x if x.dtype == self.work_dtype else xp.astype(x, self.work_dtype))
        self.nfe = 0
        self._sums: list = [xp.sum(self.start)] if check_finite else []  # the start state's, then one per evaluation
        self._times: list[float] = []

    def _modes(self, v):
        return self.op.to_modes(v)

    def prepare(self, table: np.ndarray) -> list:
        """Per-step array-side coefficients of a host table ``(N, M, k, k)`` (moved once per call)."""
        return self.op.prepare(np.ascontiguousarray(table))

    def combine(self, *terms):
        """``sum_i c_i v_i`` for the pairs ``(c_i, v_i)``, mode by mode (a new array)."""
        return self.op.combine(list(terms))

    def evaluate(self, u, t: float):
        """The network at the mode-coordinate state ``u`` and time ``t``: ``(raw output, output in modes)``."""
        t = float(t)
        y = self.eps_fn(self.to_caller(u), t)
        check_output(self.xp, self.x, y, f"evaluation {self.nfe} (t={t:g})")
        self.nfe += 1
        yw = y if y.dtype == self.work_dtype else self.xp.astype(y, self.work_dtype)
        if self.check_finite:
            self._sums.append(self.xp.sum(yw))
            self._times.append(t)
        return y, self._modes(yw)

    def draw(self, index: int):
        """Standard normal noise number ``index`` (a user ``noise(index, shape)`` callable sees ``index``)."""
        return self._modes(self._draw(index))

    def report(self, callback, k: int, ts: np.ndarray, u, y_raw, y, data: tuple) -> None:
        """Call ``callback`` with the :class:`StepInfo` of step ``k``: the network saw ``u``, returned ``y_raw``."""
        x0 = self.combine((data[0][k], u), (data[1][k], y))
        callback(StepInfo(step=k, t=float(ts[k]), t_next=float(ts[k + 1]), x=self.to_caller(u),
                          x0_pred=self.to_caller(x0), eps=y_raw, nfe=self.nfe))

    def to_caller(self, u):
        """A mode-coordinate state as an array of the caller's layout and dtype."""
        v = self.op.from_modes(u)
        return v if v.dtype == self.x.dtype else self.xp.astype(v, self.x.dtype)

    def result(self, u, ts: np.ndarray, trajectory, on_nonfinite: str) -> SampleResult:
        """The :class:`SampleResult`; non-finite outputs are detected here, with one host transfer."""
        res = SampleResult(x=self.to_caller(u), ts=np.asarray(ts), nfe=self.nfe, trajectory=trajectory)
        report_nonfinite(self.xp, self._sums, self._times, res, on_nonfinite, unit="evaluation")
        return res


def denoised(plan, head: SampleResult, eps_fn, callback, return_trajectory: bool, check_finite: bool,
              on_nonfinite: str, block_axis: int) -> SampleResult:
    """``head`` followed by the final denoising step (MATH.md §3.6) when the plan asks for it."""
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
