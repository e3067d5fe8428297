"""The run context every sampler loop shares, and the checks of its arguments and outputs.

:class:`ArrayRun` holds what one sample call needs on the caller's arrays: namespace, working
dtype, the diffusion's mode operator, counted and checked network evaluations, noise, the
non-finite report and the result, so that a sampler's loop is only its step.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from gddim_numerics.diffusion import LinearDiffusion
from gddim_numerics.result import SampleResult, StepInfo

from .kernels import kernels_for
from .namespace import check_like, device_of, namespace_of, working_dtype
from .noise import noise_source
from .operators import operator_for


class ArrayRun:
    """One sample call on the caller's arrays: the context every sampler loop shares.

    Namespace, working dtype, device, kernels and the diffusion's mode operator of the state ``x``;
    the start state in mode coordinates (:attr:`start`); counted, checked evaluations of the
    network; noise; the per-evaluation sums that find non-finite values after the loop (the start
    state's first); and the result. States are kept in mode coordinates in the working dtype (the
    state's own float32/float64; float32 for half precision). :func:`~.loop.run_tables` uses the
    context with its own recycled buffers; the multi-evaluation samplers use :meth:`evaluate`,
    :meth:`combine` and :meth:`draw`, which make new arrays.
    """

    def __init__(self, diffusion: LinearDiffusion, eps_fn, x, *, block_axis: int, check_finite: bool,
                 on_nonfinite: str, stochastic: bool = False, rng=None, noise=None):
        check_call(eps_fn, on_nonfinite)
        xp = namespace_of(x, "x")
        self.xp, self.x, self.eps_fn = xp, x, eps_fn
        self.check_finite, self.on_nonfinite = check_finite, on_nonfinite
        self.out_dtype = x.dtype
        self.work_dtype = working_dtype(xp, x.dtype, "x")
        self.device = device_of(x)
        self.shape = tuple(x.shape)
        self.kern = kernels_for(xp, self.work_dtype, self.device)
        self.op = operator_for(diffusion, self.kern, self.shape, block_axis)
        self.noise = noise_source(xp, x, self.work_dtype, rng=rng, noise=noise) if stochastic else None
        xw = x if x.dtype == self.work_dtype else xp.astype(x, self.work_dtype)
        self.start = self.to_modes(xw)
        self.nfe = 0
        #: sums of the start state, then of each evaluation's output, looked at once after the loop
        self.sums: list = [xp.sum(self.start)] if check_finite else []
        self.times: list[float] = []

    def to_modes(self, v, out=None):
        """Mode coordinates of an array in the caller's layout (``out``: a buffer; the array itself without a transform)."""
        return self.op.to_modes(v, out) if self.op.transforms else v

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
            self.sums.append(self.xp.sum(yw))
            self.times.append(t)
        return y, self.op.to_modes(yw)

    def draw(self, index: int):
        """Standard normal noise number ``index`` in mode coordinates (a user ``noise(index, shape)`` sees ``index``)."""
        return self.op.to_modes(self.noise(index))

    def report(self, callback, k: int, ts: np.ndarray, u, y_raw, y, data: tuple) -> None:
        """Call ``callback`` with the :class:`StepInfo` of step ``k``: the network saw ``u``, returned ``y_raw``."""
        x0 = self.combine((data[0][k], u), (data[1][k], y))
        callback(StepInfo(step=k, t=float(ts[k]), t_next=float(ts[k + 1]), x=self.to_caller(u),
                          x0_pred=self.to_caller(x0), eps=y_raw, nfe=self.nfe))

    def to_caller(self, u):
        """A mode-coordinate state as an array of the caller's layout and dtype."""
        v = self.op.from_modes(u)
        return v if v.dtype == self.out_dtype else self.xp.astype(v, self.out_dtype)

    def result(self, u, ts: np.ndarray, trajectory, unit: str = "evaluation") -> SampleResult:
        """The :class:`SampleResult`; non-finite values are detected here, with one host transfer."""
        res = SampleResult(x=self.to_caller(u), ts=np.asarray(ts), nfe=self.nfe, trajectory=trajectory)
        report_nonfinite(self.xp, self.sums, self.times, res, self.on_nonfinite, unit=unit)
        return res


def check_call(eps_fn, on_nonfinite: str) -> None:
    """Validate the arguments every sampler loop shares: the network and the non-finite policy."""
    if on_nonfinite not in ("raise", "return"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'return'; got {on_nonfinite!r}")
    if not callable(eps_fn):
        raise TypeError(f"eps_fn must be a callable eps_fn(x, t) -> array; got {type(eps_fn).__name__}")


def check_output(xp, x, y, where: str, fast: bool = False) -> None:
    """Check a network output ``y`` against the state ``x``: library, device, dtype kind and shape.

    ``fast`` skips the library/device check when the caller already knows they match (no host work).
    """
    if not fast:
        check_like(xp, x, y, "eps_fn", "x")
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(f"eps_fn returned shape {tuple(y.shape)} at {where}; expected the state's shape {tuple(x.shape)}")


def report_nonfinite(xp, sums: list, times, result: SampleResult, on_nonfinite: str, unit: str = "step") -> None:
    """Check the sums of the start state and of the network outputs once, after the loop (one host read).

    ``sums[0]`` is the start state's sum, ``sums[1 + i]`` that of evaluation ``i``. A non-finite start
    state is reported as such; otherwise the first non-finite output names the ``unit`` index and
    its time. Raise a ``FloatingPointError`` or mark ``result`` as failed (``on_nonfinite="return"``).
    """
    if not sums:
        return
    finite = xp.isfinite(xp.stack(sums))
    if bool(xp.all(finite)):
        return
    bad = int(xp.argmax(xp.astype(xp.logical_not(finite), xp.int8))) - 1
    if bad < 0:
        msg = ("x, the start state, has NaN or Inf entries (found after the run, which did not stop for them); "
               "check how the start state was drawn or scaled")
    else:
        msg = (f"eps_fn returned NaN or Inf at {unit} {bad} (t={float(times[bad]):.6g}); the states after it are "
               "not meaningful. Check the network's input scaling and dtype at that time.")
    if on_nonfinite == "raise":
        raise FloatingPointError(msg)
    result.success, result.status, result.message = False, -1, msg


def progress_bar(steps: range, enabled: bool) -> Iterable[int]:
    if not enabled:
        return steps
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:  # pragma: no cover - tqdm is an optional extra
        raise ImportError("progress=True needs tqdm: pip install 'gddim-numerics[progress]'") from exc
    return tqdm(steps, total=len(steps), desc="sampling", unit="step")
