"""The solve of :class:`~gddim_numerics.samplers.ivp.ProbabilityFlowIVP`: a ``scipy.integrate`` solver, counted evaluations.

The state is integrated on the host in float64 NumPy, in the caller's own coordinates and layout;
every evaluation copies the state to the caller's namespace, device and dtype and the output back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import is_cupy_array, is_numpy_array, is_torch_array
from array_api_compat import numpy as np_xp
from scipy.integrate import DOP853, RK23, RK45

from gddim_numerics.result import SampleResult

from .kernels import kernels_for
from .namespace import device_of, namespace_of, working_dtype
from .operators import operator_for
from .multistage import denoised
from .run import check_call, check_output

SOLVERS = {"RK23": RK23, "RK45": RK45, "DOP853": DOP853}


class _BudgetSpent(Exception):
    """Ends an adaptive solve whose next evaluation would exceed the budget."""


class _NonFinite(Exception):
    """Ends an adaptive solve at a NaN/Inf network output."""


def _to_numpy(a) -> np.ndarray:
    """An array of any library as float64 NumPy (a device-to-host copy for GPU arrays; no copy for float64 NumPy)."""
    if is_numpy_array(a):
        return np.asarray(a, dtype=np.float64)
    if is_torch_array(a):
        return a.detach().to(device="cpu").double().numpy()
    if is_cupy_array(a):
        return np.asarray(a.get(), dtype=np.float64)
    return np.asarray(np.from_dlpack(a), dtype=np.float64)


def run_ivp(plan: Any, eps_fn, x, *, rng=None, noise=None, callback=None, progress: bool = False,
            return_trajectory: bool = False, check_finite: bool = True, on_nonfinite: str = "raise",
            block_axis: int = -1) -> SampleResult:
    """Solve the probability flow of ``plan`` from ``x`` at ``t_start``; ``ts`` of the result are the accepted step times.

    ``rng``/``noise`` are unused (the flow is deterministic); ``return_trajectory`` keeps the
    state at every accepted step; ``check_finite``/``on_nonfinite`` as in ``run_tables``.
    """
    check_call(eps_fn, on_nonfinite)
    if callback is not None or progress:
        raise ValueError(f"the adaptive {plan.solver} solve has no per-step callback or progress bar; pass "
                         "callback=None, progress=False")
    xp = namespace_of(x, "x")
    working_dtype(xp, x.dtype, "x")
    dev, dtype, shape = device_of(x), x.dtype, tuple(x.shape)
    host = _to_numpy(x)
    if check_finite and not np.all(np.isfinite(host)):
        msg = "x, the start state, has NaN or Inf entries; check how the start state was drawn or scaled"
        if on_nonfinite == "raise":
            raise FloatingPointError(msg)
        return SampleResult(x=x, ts=np.asarray(plan.ts[:1]), nfe=0, success=False, message=msg, status=-1)
    op = operator_for(plan.diffusion, kernels_for(np_xp, np.float64, "cpu"), shape, block_axis)
    budget = None if plan.max_nfe is None else plan.max_nfe - int(plan.denoise)
    nfe = 0

    def network(u: np.ndarray, t: float) -> np.ndarray:
        nonlocal nfe
        if budget is not None and nfe >= budget:
            raise _BudgetSpent(f"the evaluation budget nfe={plan.max_nfe} was spent at t={t:g} before t_end; "
                               "loosen rtol/atol or raise nfe")
        y = eps_fn(xp.asarray(u, dtype=dtype, device=dev), t)
        check_output(xp, x, y, f"evaluation {nfe} (t={t:g})")
        nfe += 1
        y = _to_numpy(y)
        if check_finite and not np.all(np.isfinite(y)):
            raise _NonFinite(f"eps_fn returned NaN or Inf at evaluation {nfe - 1} (t={t:.6g}); the state after "
                             "it is not meaningful. Check the network's input scaling and dtype at that time.")
        return y

    def to_caller(u: np.ndarray):
        return xp.asarray(u, dtype=dtype, device=dev)

    def modes(v: np.ndarray) -> np.ndarray:
        return op.to_modes(v)

    def rhs(t: float, flat: np.ndarray) -> np.ndarray:
        u = flat.reshape(shape)
        y = network(u, float(t))
        vu, vy = (op.prepare(c)[0] for c in plan.velocity(float(t)))
        velocity = op.combine([(vu, modes(u)), (vy, modes(y))])
        return op.from_modes(velocity).ravel()

    times, last, trajectory = [float(plan.ts[0])], host, [x] if return_trajectory else None
    status, message, ode = 0, "The solver reached t_end.", None
    try:  # the solver's constructor evaluates the network too (f(t0) and an initial-step probe)
        ode = SOLVERS[plan.solver](rhs, float(plan.ts[0]), host.ravel(), float(plan.ts[1]),
                                       rtol=plan.rtol, atol=plan.atol)
        while ode.status == "running":
            ode.step()
            if ode.status == "failed":
                status, message = -1, f"{plan.solver} failed at t={ode.t:g}: step size too small"
                break
            times.append(ode.t)
            last = ode.y.reshape(shape)
            if return_trajectory:
                trajectory.append(to_caller(last))
    except _NonFinite as stop:
        if on_nonfinite == "raise":
            raise FloatingPointError(str(stop)) from None
        status, message = -1, str(stop)
    except _BudgetSpent as stop:
        status, message = -1, str(stop)

    head = SampleResult(x=to_caller(last), ts=np.asarray(times), nfe=nfe, trajectory=trajectory,
                        success=status == 0, message=message, status=status,
                        info=dict(solver=plan.solver, rtol=plan.rtol, atol=plan.atol, n_steps=len(times) - 1,
                                  nfev=nfe if ode is None else ode.nfev))
    return denoised(plan, head, eps_fn, None, return_trajectory, check_finite, on_nonfinite, block_axis)
