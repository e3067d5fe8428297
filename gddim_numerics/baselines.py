r"""Baseline samplers beside gDDIM, under the same API, result object and exact evaluation counts.

Time runs down, as everywhere in the library (MATH.md §0): a step goes from ``s = ts[k]`` to
``t = ts[k+1] < s`` with :math:`\Delta t = t - s < 0`. Networks may return any output type of
:mod:`gddim_numerics.outputs`; it is converted exactly (affinely) to
:math:`\epsilon_R = a_s u + b_s y`, so the score is :math:`\nabla\log p_s = -R_s^{-\top}\epsilon_R`.

=============  ======================================================  ===========================
method         update (per step)                                       evaluations
=============  ======================================================  ===========================
``em``         Euler–Maruyama on the λ-family reverse SDE               ``N`` (+1 with ``denoise``)
``euler``      probability-flow Euler (``em`` with λ = 0)              ``N`` (+1)
``heun``       probability-flow Heun (explicit trapezoid)              ``2N`` or ``2N - 1`` (+1)
``sscs``       CLD's symmetric splitting (A ½, S, A ½)                 ``N`` (+1)
``ancestral``  DDPM/BDM ancestral sampling (posterior of the kernel)   ``N`` (+1)
``rk45``       ``scipy.integrate.RK45`` on the probability-flow ODE    measured, capped by ``nfe``
``dop853``     ``scipy.integrate.DOP853`` on the probability-flow ODE  measured, capped by ``nfe``
=============  ======================================================  ===========================

``em``, ``euler`` and ``ancestral`` are affine samplers: one evaluation per step and an update
affine in (state, network output, fresh noise), so they are :class:`~gddim_numerics.tables.StepTables`
run by :func:`gddim_numerics.backends.run_tables` on every backend. ``heun`` and ``sscs`` need two
evaluations per step or an evaluation at an intermediate state; they run a short loop of their own
on the same structured per-mode operators (:func:`gddim_numerics.backends.operator_for`), so they
also work on any array-API namespace. ``rk45``/``dop853`` integrate on the host in float64 NumPy.

Every method takes ``denoise=True`` to append the final denoising step of MATH.md §3.6 (one Euler
step of the λ = 1 reverse drift, without noise, from the grid's last time to 0; one evaluation).

Importing this module registers the methods with :func:`gddim_numerics.sample`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from array_api_compat import is_cupy_array, is_numpy_array, is_torch_array
from array_api_compat import numpy as np_xp
from scipy.integrate import DOP853, RK23, RK45
from scipy.linalg import solve_continuous_lyapunov

from .backends import device_of, kernels_for, namespace_of, noise_source, operator_for, run_tables, working_dtype
from .backends.loop import check_call, check_output, progress_bar, report_nonfinite
from .cld import CLD
from .diffusion import LinearDiffusion, batched_inverse, batched_transpose
from .grids import check_grid
from .linear_sde import ConstantCoefficientSDE
from .outputs import check_output_type, to_data, to_noise
from .plans import check_lam, io_tables, denoise_tables, psd_factor
from .result import SampleResult, StepInfo
from .sampling import Method, register_method
from .tables import StepTables, concatenate

__all__ = [
    "Heun",
    "ProbabilityFlowIVP",
    "SSCS",
    "TablePlan",
    "ancestral",
    "ancestral_tables",
    "em",
    "em_tables",
    "euler",
    "probability_flow_coefficients",
    "sscs_half_step",
]

IVP_SOLVERS = {"RK23": RK23, "RK45": RK45, "DOP853": DOP853}


# --------------------------------------------------------------------------------------------
# host coefficients shared by the samplers
# --------------------------------------------------------------------------------------------
def _check_diffusion(diffusion) -> LinearDiffusion:
    if not isinstance(diffusion, LinearDiffusion):
        raise TypeError(f"diffusion must be a LinearDiffusion; got {type(diffusion).__name__}")
    return diffusion


def _eye_like(blocks: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.eye(blocks.shape[-1]), blocks.shape)


def _noise_maps(diffusion: LinearDiffusion, times: np.ndarray, output: str) -> tuple[np.ndarray, np.ndarray]:
    r"""Dense ``(a, b)`` with :math:`\epsilon_R = a u + b y` (zeros / identity where ``to_noise`` omits them)."""
    a, b = to_noise(diffusion, times, output, "R")
    shape = times.shape + diffusion.shape + (diffusion.block_size,)
    a = np.zeros(shape) if a is None else a
    b = np.broadcast_to(np.eye(diffusion.block_size), shape) if b is None else b
    return a, b


def _data_maps(diffusion: LinearDiffusion, times: np.ndarray, output: str) -> tuple[np.ndarray, np.ndarray]:
    r"""Dense ``(c, d)`` with the predicted data :math:`\hat u_0 = c u + d y`."""
    c, d = to_data(diffusion, times, output)
    return (np.zeros_like(d) if c is None else c), d


def _score_gain(diffusion: LinearDiffusion, times: np.ndarray) -> np.ndarray:
    r""":math:`G_tG_t^\top R_t^{-\top}`: maps :math:`\epsilon_R` to :math:`-G_tG_t^\top\nabla\log p_t`."""
    return diffusion.diffusion(times) @ batched_transpose(batched_inverse(diffusion.gddim_factor(times)))


def probability_flow_coefficients(diffusion: LinearDiffusion, times, output: str = "eps_R"):
    r"""Per-mode ``(V_u, V_y)`` of the probability-flow velocity at ``times``.

    The PF ODE (MATH.md §2.1, λ = 0) in the network's output ``y`` (MATH.md §6):

    .. math::
        \dot u = F_t u - \tfrac12 G_tG_t^\top\nabla\log p_t(u) = F_t u + \tfrac12 G_tG_t^\top R_t^{-\top}\epsilon_R
               = V_u(t)\,u + V_y(t)\,y,\quad
        V_u = F + \tfrac12GG^\top R^{-\top}a_t,\ V_y = \tfrac12GG^\top R^{-\top}b_t .

    Returns two float64 arrays of shape ``times.shape + (M, k, k)``.
    """
    times = np.asarray(times, dtype=np.float64)
    a, b = _noise_maps(diffusion, times, output)
    half_gain = 0.5 * _score_gain(diffusion, times)
    return diffusion.drift(times) + half_gain @ a, half_gain @ b


def _grid(diffusion: LinearDiffusion, ts, denoise: bool) -> np.ndarray:
    """``ts`` checked by :func:`check_grid`, ending above 0 when a denoising step follows."""
    ts = check_grid(_check_diffusion(diffusion), ts)
    if denoise and ts[-1] <= 0:
        raise ValueError("denoise=True needs a grid that ends at t_end > 0 (the denoising step goes from t_end to 0)")
    return ts


# --------------------------------------------------------------------------------------------
# affine baselines: StepTables
# --------------------------------------------------------------------------------------------
def em_tables(diffusion: LinearDiffusion, ts, lam: float = 1.0, output: str = "eps_R") -> StepTables:
    r"""Euler–Maruyama on the λ-family reverse SDE (MATH.md §2.1) as :class:`StepTables`.

    The reverse SDE :math:`du = [F_tu - \tfrac{1+\lambda^2}{2}G_tG_t^\top\nabla\log p_t(u)]\,dt
    + \lambda G_t\,d\bar w`, frozen at the step's start ``s`` over :math:`\Delta t = t - s < 0`:

    .. math::
        u_t = (I + \Delta t\,F_s)\,u_s + \Delta t\,\tfrac{1+\lambda^2}{2}G_sG_s^\top R_s^{-\top}\epsilon_R
              + \big(\lambda^2|\Delta t|\,G_sG_s^\top\big)^{1/2} z,\qquad z\sim N(0, I),

    with the symmetric PSD square root as noise factor (any factor gives the same law). ``lam = 0``
    is probability-flow Euler (no noise); ``lam = 1`` the usual reverse SDE.

    The authors' code (``cld_jax/sampling.py:get_em_sampler``, MATH.md §4.2) weights the score by
    :math:`(1+\lambda)/2` instead of :math:`(1+\lambda^2)/2`; the two agree only for λ ∈ {0, 1},
    and only the latter keeps the marginals :math:`p_t` for every λ. Their paper's Table 2 EM row
    comes from the code's weighting.
    """
    diffusion = _check_diffusion(diffusion)
    lam = check_lam(lam)
    check_output_type(output, diffusion)
    ts = check_grid(diffusion, ts)
    s = ts[:-1]
    dt = (ts[1:] - s)[:, None, None, None]
    gg = diffusion.diffusion(s)
    state = _eye_like(gg) + dt * diffusion.drift(s)
    history = (dt * 0.5 * (1.0 + lam * lam) * _score_gain(diffusion, s))[:, None]
    noise = psd_factor(lam * lam * np.abs(dt) * gg, "the Euler-Maruyama noise covariance") if lam > 0 else None
    return StepTables(ts=ts, state=state, history=history, orders=np.ones(len(s), dtype=int), noise=noise,
                      info=dict(method="em", lam=lam, output=output), **io_tables(diffusion, s, output, "R"))


def ancestral_tables(diffusion: LinearDiffusion, ts, output: str = "eps_R") -> StepTables:
    r"""Ancestral sampling (DDPM; BDM per frequency, MATH.md §5.4) as :class:`StepTables`.

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
    stochastic gDDIM with λ = 1 (MATH.md §4.1, §5.4). Denominators are not clipped: a step whose
    signal-to-noise ratio does not decrease is refused.

    Raises
    ------
    ValueError
        If the diffusion has ``k > 1`` blocks (e.g. CLD): use ``"em"`` or ``"gddim"`` with ``lam=1``.
    """
    diffusion = _check_diffusion(diffusion)
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


class TablePlan:
    """A plan made of :class:`StepTables` (``em``, ``euler``, ``ancestral``), run by ``run_tables``.

    Build it with :func:`em`, :func:`euler` or :func:`ancestral`.
    """

    def __init__(self, diffusion: LinearDiffusion, tables: StepTables):
        self.diffusion = diffusion
        self.tables = tables

    @property
    def nfe(self) -> int:
        """Network evaluations of one sample call."""
        return self.tables.n_steps

    def sample(self, eps_fn, x, **kwargs) -> SampleResult:
        """Run from ``x`` at ``tables.ts[0]``; keywords as :func:`gddim_numerics.backends.run_tables`."""
        return run_tables(self.diffusion, self.tables, eps_fn, x, **kwargs)

    def __repr__(self) -> str:
        return f"TablePlan({self.diffusion!r}, N={self.tables.n_steps}, {self.tables.info})"


def _table_plan(diffusion: LinearDiffusion, tables: StepTables, output: str, denoise: bool) -> TablePlan:
    if denoise:
        tables = concatenate(tables, denoise_tables(diffusion, float(tables.ts[-1]), "R", output))
    return TablePlan(diffusion, tables)


def em(diffusion: LinearDiffusion, ts, lam: float = 1.0, output: str = "eps_R", denoise: bool = False) -> TablePlan:
    """Euler–Maruyama plan on the λ-family reverse SDE; see :func:`em_tables`."""
    return _table_plan(diffusion, em_tables(diffusion, _grid(diffusion, ts, denoise), lam, output), output, denoise)


def euler(diffusion: LinearDiffusion, ts, output: str = "eps_R", denoise: bool = False) -> TablePlan:
    r"""Probability-flow Euler plan (:func:`em_tables` with λ = 0).

    :math:`u_t = u_s + \Delta t\,(F_su_s + \tfrac12G_sG_s^\top R_s^{-\top}\epsilon_R)`.
    """
    return _table_plan(diffusion, em_tables(diffusion, _grid(diffusion, ts, denoise), 0.0, output), output, denoise)


def ancestral(diffusion: LinearDiffusion, ts, output: str = "eps_R", denoise: bool = False) -> TablePlan:
    """Ancestral (DDPM/BDM) plan; see :func:`ancestral_tables`."""
    return _table_plan(diffusion, ancestral_tables(diffusion, _grid(diffusion, ts, denoise), output), output, denoise)


# --------------------------------------------------------------------------------------------
# multi-stage baselines on the caller's arrays
# --------------------------------------------------------------------------------------------
class _ArrayRun:
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
        self._sums: list = []
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


def _denoised(plan, head: SampleResult, eps_fn, callback, return_trajectory: bool, check_finite: bool,
              on_nonfinite: str, block_axis: int) -> SampleResult:
    """``head`` followed by the final denoising step (MATH.md §3.6) when the plan asks for it."""
    if not plan.denoise or not head.success:
        return head
    t_end = float(head.ts[-1])
    steps = len(head.ts) - 1

    def shifted(info: StepInfo) -> None:
        callback(dataclasses.replace(info, step=info.step + steps, nfe=info.nfe + head.nfe))

    tail = run_tables(plan.diffusion, denoise_tables(plan.diffusion, t_end, "R", plan.output), eps_fn, head.x,
                      callback=None if callback is None else shifted, return_trajectory=return_trajectory,
                      check_finite=check_finite, on_nonfinite=on_nonfinite, block_axis=block_axis)
    return SampleResult(x=tail.x, ts=np.concatenate([head.ts, tail.ts[1:]]), nfe=head.nfe + tail.nfe,
                        trajectory=head.trajectory + tail.trajectory[1:] if return_trajectory else None,
                        success=tail.success, message=tail.message, status=tail.status, info=head.info)


class Heun:
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
    output : {"eps_R", "eps_L", "score", "data", "v"}
        What ``eps_fn`` returns.
    denoise : bool
        Append the final denoising step (one evaluation).
    final_euler : bool
        Make the last step an Euler step.
    """

    def __init__(self, diffusion: LinearDiffusion, ts, output: str = "eps_R", denoise: bool = False,
                 final_euler: bool = False):
        self.diffusion = _check_diffusion(diffusion)
        self.output = check_output_type(output, diffusion)
        self.denoise, self.final_euler = bool(denoise), bool(final_euler)
        self.ts = _grid(diffusion, ts, self.denoise)
        s, t = self.ts[:-1], self.ts[1:]
        n_heun = len(s) - int(self.final_euler)
        if n_heun > 0 and np.any(np.linalg.eigvalsh(diffusion.covariance(t[n_heun - 1])) <= 0):
            raise ValueError(f"Heun's second evaluation of the last step would be at t={t[n_heun - 1]:g}, where "
                             "Sigma_t is singular (no score); pass final_euler=True or end the grid at t > 0")
        dt = (t - s)[:, None, None, None]
        vu_s, vy_s = probability_flow_coefficients(diffusion, s, output)
        vu_t, vy_t = probability_flow_coefficients(diffusion, t[:n_heun], output) if n_heun else (vu_s[:0], vy_s[:0])
        eye = _eye_like(vu_s)
        h = 0.5 * dt[:n_heun]
        self.tables = {
            "predict_state": eye + dt * vu_s, "predict_output": dt * vy_s,
            "state": eye[:n_heun] + h * vu_s[:n_heun], "output": h * vy_s[:n_heun],
            "predicted_state": h * vu_t, "predicted_output": h * vy_t,
        }
        self.tables.update(zip(("data_state", "data_output"), _data_maps(diffusion, s, output)))
        for table in self.tables.values():
            table.setflags(write=False)

    @property
    def nfe(self) -> int:
        """Network evaluations of one sample call: ``2N`` (``- 1`` with ``final_euler``, ``+ 1`` with ``denoise``)."""
        return 2 * (len(self.ts) - 1) - int(self.final_euler) + int(self.denoise)

    def sample(self, eps_fn, x, *, rng=None, noise=None, callback=None, progress: bool = False,
               return_trajectory: bool = False, check_finite: bool = True, on_nonfinite: str = "raise",
               block_axis: int = -1) -> SampleResult:
        """Run from ``x`` at ``ts[0]``; keywords as :func:`~gddim_numerics.backends.run_tables` (no noise is drawn)."""
        check_call(eps_fn, on_nonfinite)
        run = _ArrayRun(self.diffusion, eps_fn, x, block_axis=block_axis, check_finite=check_finite)
        tab = {name: run.prepare(table) for name, table in self.tables.items()}
        n = len(self.ts) - 1
        n_heun = n - int(self.final_euler)
        u = run.start
        trajectory = [x] if return_trajectory else None
        for k in progress_bar(range(n), progress):
            y_raw, y = run.evaluate(u, self.ts[k])
            u_pred = run.combine((tab["predict_state"][k], u), (tab["predict_output"][k], y))
            if k < n_heun:
                _, y_pred = run.evaluate(u_pred, self.ts[k + 1])
                u_next = run.combine((tab["state"][k], u), (tab["output"][k], y),
                                     (tab["predicted_state"][k], u_pred), (tab["predicted_output"][k], y_pred))
            else:
                u_next = u_pred
            if callback is not None:
                run.report(callback, k, self.ts, u, y_raw, y, (tab["data_state"], tab["data_output"]))
            u = u_next
            if return_trajectory:
                trajectory.append(run.to_caller(u))
        head = run.result(u, self.ts, trajectory, on_nonfinite)
        return _denoised(self, head, eps_fn, callback, return_trajectory, check_finite, on_nonfinite, block_axis)

    def __repr__(self) -> str:
        return (f"Heun({self.diffusion!r}, N={len(self.ts) - 1}, output={self.output!r}, "
                f"final_euler={self.final_euler}, denoise={self.denoise})")


def _stationary_split(diffusion: CLD) -> tuple[np.ndarray, np.ndarray]:
    r"""``(A_tilde, Sigma_inf)``: drift of SSCS's A part per unit of :math:`\beta`, and the stationary covariance."""
    sigma_inf = solve_continuous_lyapunov(diffusion.A, -diffusion.Q)
    return -(diffusion.A + diffusion.Q @ np.linalg.inv(sigma_inf)), sigma_inf


def sscs_half_step(diffusion: CLD, s, t) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact law of SSCS's linear part ("A") from time ``s`` down to ``t < s``: ``(Phi, P)``.

    The λ = 1 reverse SDE of CLD in reverse time :math:`r` (:math:`dr = -dt`) is
    :math:`du = [-F u + GG^\top\nabla\log p]\,dr + G\,dw`. Adding and subtracting the score of the
    stationary law :math:`N(0, \Sigma_\infty)` (:math:`A\Sigma_\infty + \Sigma_\infty A^\top + Q = 0`;
    :math:`\Sigma_\infty = \operatorname{diag}(1, M)` for CLD) splits it into

    * A: :math:`du = \beta\tilde A u\,dr + \sqrt\beta\,Q^{1/2}dw`,
      :math:`\tilde A = -(A + Q\Sigma_\infty^{-1})` — for CLD
      :math:`dx = -M^{-1}v\,\beta dr`, :math:`dv = (x - \Gamma M^{-1}v)\beta dr + \sqrt{2\Gamma\beta}\,dw`;
    * S: :math:`du = \beta Q(\nabla\log p + \Sigma_\infty^{-1}u)\,dr` — for CLD
      :math:`dv = 2\Gamma\beta(s_v + M^{-1}v)\,dr` (MATH.md §4.3).

    A is a constant-coefficient linear SDE in the time :math:`b = B(s) - B(t)` (:math:`B = \int\beta`),
    so its exact transition is Gaussian: :math:`u \mapsto \Phi u + N(0, P)` with
    :math:`\Phi = e^{b\tilde A}` and :math:`P = \int_0^b e^{r\tilde A}Qe^{r\tilde A^\top}dr`, the
    Van Loan block exponential (:meth:`ConstantCoefficientSDE.van_loan`) iterated over ``n``
    sub-steps with :math:`\|\tilde A\|\,b/n \le 1` (MATH.md §1.3):
    :math:`P \leftarrow \Phi_h P\Phi_h^\top + Q_d(h)`. (A is the time reversal of the stationary
    forward diffusion, so also :math:`\Phi = \Sigma_\infty\Psi(s,t)^\top\Sigma_\infty^{-1}` and
    :math:`P = \Sigma_\infty - \Phi\Sigma_\infty\Phi^\top` — a cross-check, used in the tests.)

    Returns
    -------
    Phi, P : arrays of shape ``broadcast(s, t).shape + (1, k, k)``
    """
    s, t = np.broadcast_arrays(diffusion.check_times(s, "s"), diffusion.check_times(t, "t"))
    b = diffusion.beta_integral(s) - diffusion.beta_integral(t)
    if np.any(b < 0):
        raise ValueError("sscs_half_step goes down in time: need t <= s")
    a_tilde, sigma_inf = _stationary_split(diffusion)
    a_part = ConstantCoefficientSDE(a_tilde, diffusion.Q, initial_covariance=sigma_inf)  # A, in its stationary law
    n_sub = max(1, int(np.ceil(np.linalg.norm(a_tilde, 2) * float(np.max(b, initial=0.0)))))
    phi_h, q_h = a_part.van_loan(b / n_sub)
    phi, cov = _eye_like(phi_h), np.zeros_like(q_h)
    for _ in range(n_sub):
        phi, cov = phi_h @ phi, phi_h @ cov @ batched_transpose(phi_h) + q_h
    return phi[..., None, :, :], 0.5 * (cov + batched_transpose(cov))[..., None, :, :]


class SSCS:
    r"""CLD's symmetric splitting sampler (Dockhorn et al. 2022; MATH.md §4.3).

    Per step from ``s`` to ``t`` (mid time :math:`m = (s+t)/2`, :math:`\Delta r = s - t`), with the
    split of :func:`sscs_half_step`:

    .. math::
        v = \Phi_{s\to m}u_s + \xi_1,\quad
        v' = v + \Delta r\,G_sG_s^\top\big(\Sigma_\infty^{-1}v - R_s^{-\top}\epsilon_R(v, s)\big),\quad
        u_t = \Phi_{m\to t}v' + \xi_2,

    :math:`\xi_i \sim N(0, P_i)` exact, and one evaluation per step, at the intermediate state
    :math:`v` and the step's start time ``s`` (as both reference codes do; the S update changes
    only the velocity). The half steps split the step at the time midpoint, as both codes do.
    Noise draws ``2k`` and ``2k + 1`` serve step ``k`` (a ``noise(index, shape)`` callable sees these
    indices). A callback's ``StepInfo.x`` is :math:`v`, the state the network saw. The reference
    codes use ``denoise=True`` (MATH.md §3.6).

    Raises
    ------
    ValueError
        If the diffusion is not a :class:`~gddim_numerics.cld.CLD`.
    """

    def __init__(self, diffusion: CLD, ts, output: str = "eps_R", denoise: bool = False):
        if not isinstance(diffusion, CLD):
            raise ValueError(f"sscs (symmetric splitting) is CLD's sampler and needs a gd.CLD diffusion; got "
                             f"{diffusion!r}. Use method='em' or 'gddim' for other diffusions")
        self.diffusion = diffusion
        self.output = check_output_type(output, diffusion)
        self.denoise = bool(denoise)
        self.ts = _grid(diffusion, ts, self.denoise)
        s, t = self.ts[:-1], self.ts[1:]
        mid = 0.5 * (s + t)
        phi1, p1 = sscs_half_step(diffusion, s, mid)
        phi2, p2 = sscs_half_step(diffusion, mid, t)
        precision = np.linalg.inv(_stationary_split(diffusion)[1])
        a, b = _noise_maps(diffusion, s, output)
        kick = (s - t)[:, None, None, None] * diffusion.diffusion(s)
        gain = kick @ batched_transpose(batched_inverse(diffusion.gddim_factor(s)))
        self.tables = {
            "first_state": phi1, "first_noise": psd_factor(p1, "the SSCS half-step covariance"),
            "state": phi2 @ (_eye_like(phi2) + kick @ precision - gain @ a), "output": -phi2 @ gain @ b,
            "second_noise": psd_factor(p2, "the SSCS half-step covariance"),
        }
        self.tables.update(zip(("data_state", "data_output"), _data_maps(diffusion, s, output)))
        for table in self.tables.values():
            table.setflags(write=False)

    @property
    def nfe(self) -> int:
        """Network evaluations of one sample call: ``N`` (``+ 1`` with ``denoise``)."""
        return len(self.ts) - 1 + int(self.denoise)

    def sample(self, eps_fn, x, *, rng=None, noise=None, callback=None, progress: bool = False,
               return_trajectory: bool = False, check_finite: bool = True, on_nonfinite: str = "raise",
               block_axis: int = -1) -> SampleResult:
        """Run from ``x`` at ``ts[0]``; keywords as :func:`~gddim_numerics.backends.run_tables`."""
        check_call(eps_fn, on_nonfinite)
        run = _ArrayRun(self.diffusion, eps_fn, x, block_axis=block_axis, check_finite=check_finite,
                        stochastic=True, rng=rng, noise=noise)
        tab = {name: run.prepare(table) for name, table in self.tables.items()}
        n = len(self.ts) - 1
        u = run.start
        trajectory = [x] if return_trajectory else None
        for k in progress_bar(range(n), progress):
            v = run.combine((tab["first_state"][k], u), (tab["first_noise"][k], run.draw(2 * k)))
            y_raw, y = run.evaluate(v, self.ts[k])
            if callback is not None:
                run.report(callback, k, self.ts, v, y_raw, y, (tab["data_state"], tab["data_output"]))
            u = run.combine((tab["state"][k], v), (tab["output"][k], y),
                            (tab["second_noise"][k], run.draw(2 * k + 1)))
            if return_trajectory:
                trajectory.append(run.to_caller(u))
        head = run.result(u, self.ts, trajectory, on_nonfinite)
        return _denoised(self, head, eps_fn, callback, return_trajectory, check_finite, on_nonfinite, block_axis)

    def __repr__(self) -> str:
        return f"SSCS({self.diffusion!r}, N={len(self.ts) - 1}, output={self.output!r}, denoise={self.denoise})"


# --------------------------------------------------------------------------------------------
# black-box adaptive solvers on the probability-flow ODE
# --------------------------------------------------------------------------------------------
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


class ProbabilityFlowIVP:
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
    output : {"eps_R", "eps_L", "score", "data", "v"}
        What ``eps_fn`` returns.
    denoise : bool
        Append the final denoising step (one evaluation).
    """

    def __init__(self, diffusion: LinearDiffusion, solver: str = "RK45", *, rtol: float = 1e-5, atol: float = 1e-5,
                 max_nfe: int | None = None, t_start: float | None = None, t_end: float | None = None,
                 output: str = "eps_R", denoise: bool = False):
        self.diffusion = _check_diffusion(diffusion)
        if solver not in IVP_SOLVERS:
            raise ValueError(f"solver must be one of {tuple(IVP_SOLVERS)}; got {solver!r}")
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
        self.ts = _grid(diffusion, [t0, t1], self.denoise)

    def sample(self, eps_fn, x, *, rng=None, noise=None, return_trajectory: bool = False, check_finite: bool = True,
               on_nonfinite: str = "raise", block_axis: int = -1) -> SampleResult:
        """Solve from ``x`` at ``t_start``; ``ts`` of the result are the accepted step times.

        ``rng``/``noise`` are unused (the flow is deterministic); ``return_trajectory`` keeps the
        state at every accepted step; ``check_finite``/``on_nonfinite`` as in ``run_tables``.
        """
        check_call(eps_fn, on_nonfinite)
        xp = namespace_of(x, "x")
        working_dtype(xp, x.dtype, "x")
        dev, dtype, shape = device_of(x), x.dtype, tuple(x.shape)
        host = _to_numpy(x)
        op = operator_for(self.diffusion, kernels_for(np_xp, np.float64, "cpu"), shape, block_axis)
        budget = None if self.max_nfe is None else self.max_nfe - int(self.denoise)
        nfe = 0

        def network(u: np.ndarray, t: float) -> np.ndarray:
            nonlocal nfe
            if budget is not None and nfe >= budget:
                raise _BudgetSpent(f"the evaluation budget nfe={self.max_nfe} was spent at t={t:g} before t_end; "
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
            coefficients = probability_flow_coefficients(self.diffusion, np.array([t]), self.output)
            vu, vy = (op.prepare(c)[0] for c in coefficients)
            velocity = op.combine([(vu, modes(u)), (vy, modes(y))])
            return op.from_modes(velocity).ravel()

        times, last, trajectory = [float(self.ts[0])], host, [x] if return_trajectory else None
        status, message, ode = 0, "The solver reached t_end.", None
        try:  # the solver's constructor evaluates the network too (f(t0) and an initial-step probe)
            ode = IVP_SOLVERS[self.solver](rhs, float(self.ts[0]), host.ravel(), float(self.ts[1]),
                                           rtol=self.rtol, atol=self.atol)
            while ode.status == "running":
                ode.step()
                if ode.status == "failed":
                    status, message = -1, f"{self.solver} failed at t={ode.t:g}: step size too small"
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
                            info=dict(solver=self.solver, rtol=self.rtol, atol=self.atol, n_steps=len(times) - 1,
                                      nfev=nfe if ode is None else ode.nfev))
        return _denoised(self, head, eps_fn, None, return_trajectory, check_finite, on_nonfinite, block_axis)

    def __repr__(self) -> str:
        return (f"ProbabilityFlowIVP({self.diffusion!r}, {self.solver!r}, rtol={self.rtol:g}, atol={self.atol:g}, "
                f"max_nfe={self.max_nfe}, denoise={self.denoise})")


# --------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------
def _one_per_step(nfe: int, denoise: bool = False, **_) -> int:
    return nfe - int(bool(denoise))


def _heun_steps(nfe: int, denoise: bool = False, final_euler: bool = False, **_) -> int:
    evaluations = nfe - int(bool(denoise)) + int(bool(final_euler))
    if evaluations % 2:
        raise ValueError(f"heun costs 2 evaluations per step{' (1 on the Euler last step)' if final_euler else ''}"
                         f"{' plus 1 for denoise' if denoise else ''}, so nfe={nfe} cannot be met exactly; pass "
                         f"nfe={nfe + 1} or final_euler={not final_euler}")
    return evaluations // 2


def _ivp_method(solver: str) -> Method:
    def build(diffusion, ts, nfe: int, **options) -> ProbabilityFlowIVP:
        return ProbabilityFlowIVP(diffusion, solver, max_nfe=nfe, **options)

    first_step = {"RK45": 8, "DOP853": 14}[solver]  # f(t0) + initial-step probe + one step's stages
    return Method(build=build, steps_for_nfe=None, min_nfe=first_step,
                  description=f"scipy.integrate.{solver} on the probability-flow ODE (adaptive: rtol/atol, "
                              "default 1e-5; nfe is a budget, the result's nfe is measured)")


register_method("em", Method(
    build=em, steps_for_nfe=_one_per_step,
    description="Euler-Maruyama on the lambda-family reverse SDE (lam, default 1; drift weight (1+lam^2)/2)"))
register_method("euler", Method(
    build=euler, steps_for_nfe=_one_per_step, description="probability-flow Euler (the lam = 0 case of em)"))
register_method("heun", Method(
    build=Heun, steps_for_nfe=_heun_steps, min_nfe=2,
    description="probability-flow Heun, 2 evaluations per step (final_euler: Euler last step, as Karras et al.)"))
register_method("sscs", Method(
    build=SSCS, steps_for_nfe=_one_per_step,
    description="CLD's symmetric splitting sampler: exact linear half steps around an Euler score step"))
register_method("ancestral", Method(
    build=ancestral, steps_for_nfe=_one_per_step,
    description="ancestral sampling (DDPM; BDM per frequency) for k = 1 diffusions; = stochastic gDDIM lam = 1"))
register_method("rk45", _ivp_method("RK45"))
register_method("dop853", _ivp_method("DOP853"))
