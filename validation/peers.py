r"""Accuracy per NFE of gDDIM next to diffusers' samplers, on one exact-score VP problem.

Problem
-------
A Gaussian mixture in dimension 64 (:data:`N_COMPONENTS` components with small, random
covariances, fixed seed; :func:`mixture`) under the VP diffusion of diffusers' default DDPM table
(1000 linear betas 1e-4..0.02). The network is replaced by the exact
:math:`\epsilon = -\sigma_t\nabla\log p_t` (:meth:`~gddim_numerics.GaussianMixture.eps_R`). Every
sampler starts from the same :data:`N_STATES` states drawn from the exact marginal at
``t = 1`` (timestep 999) and is scored by the relative error
:math:`\|X - X^*\|_F / \|X^*\|_F` at ``t = 1/1000`` (timestep 0). This problem is not among the
problems on which ``gddim_auto``'s design choices were judged (:mod:`gddim_numerics.validation.auto_design`).

Mapping the discrete schedulers onto the continuous VP (exact)
--------------------------------------------------------------
* The diffusion is ``VPSDE.discrete(alphas_cumprod=scheduler.alphas_cumprod)``: table entry ``n``
  sits at ``t = (n + 1)/1000`` and is reproduced there exactly (the log-SNR in between is a
  monotone PCHIP spline; gDDIM's own grid uses those in-between times).
* diffusers computes ``alphas_cumprod`` in float32; we take those float32 values *as* the
  schedule (so the mapping is exact) and hand the scheduler the same values as float64
  (:func:`promote_float64`), so that its arithmetic adds no float32 rounding. ``set_timesteps``
  of the multistep schedulers still casts its step sigmas to float32 (a relative change of
  ~6e-8 per sigma; :data:`FLOAT32_NOTE`), far below every error reported.
* A call ``model(x, timestep=n)`` is answered with the exact ε at ``t = (n + 1)/1000``
  (``eval="timestep"``, what a discrete-time network sees). For Karras / exponential / beta / Lu
  sigmas the scheduler's step uses its own continuous sigma, not the sigma of the rounded
  timestep; ``eval="sigma"`` answers with ε at the continuous time of that sigma instead (what a
  continuous-time network would see). Both are tried; the better one is kept and named.
* End point: every sampler must end at timestep 0 (``t = 1/1000``, :math:`\bar\alpha_0`):
  DDIM with ``set_alpha_to_one=False`` (its last step then lands on ``alphas_cumprod[0]``;
  ``True`` would land on :math:`\bar\alpha = 1`, i.e. return the data prediction at ``t = 0``,
  another quantity), the multistep schedulers with ``final_sigmas_type="sigma_min"``
  (DEIS has no option and always ends there). ``"zero"`` / ``set_alpha_to_one=True`` runs solve a
  different problem and are not compared.
* A configuration whose last step has zero length (Karras-type sigmas end at the table's
  smallest sigma, and ``sigma_min`` appends it once more) is also run with one more scheduled step
  and that zero-length step left out (``skip_final_noop``), so that no evaluation is wasted: NFE is
  always the number of model calls.

Reference
---------
The probability-flow solution between two times depends on the schedule only through
:math:`\sigma_t/m_t` at the two ends (in :math:`x/m_t` it is a function of :math:`\sigma/m` alone), so
the reference is :meth:`~gddim_numerics.GaussianMixture.reference_flow` (DOP853, rtol 1e-12) on a
*smooth* VP (linear beta) whose :math:`\bar\alpha` equals the table's at ``t = 1/1000`` and
``t = 1`` exactly (:func:`surrogate_vp`). Integrating the discrete schedule's spline instead gives
the same end states (to ~1e-9) at ~100× the cost, because DOP853 must resolve the spline's 1000
second-derivative jumps. The reference's own accuracy is the difference to a rtol-1e-10 solve.

Option search per diffusers sampler and NFE
-------------------------------------------
Stage 1: every timestep choice — ``timestep_spacing`` in {linspace, leading, trailing} and each
sigma kind the class supports (``use_karras_sigmas``, ``use_exponential_sigmas``,
``use_beta_sigmas``, ``use_lu_lambdas``) — with ``eval`` in {timestep, sigma} and the
``skip_final_noop`` variant, at diffusers' default solver options. Stage 2: the
:data:`STAGE2_KEEP` best timestep choices crossed with every solver option of the sampler
(``solver_type``, ``lower_order_final``, ``euler_at_final``). The smallest error wins and its
options are reported. Runs that produce NaN/Inf count as diverged.
"""

from __future__ import annotations

import inspect
import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq

import gddim_numerics as gd
from gddim_numerics.plans import GDDIM

#: dimension, number of mixture components, start states and seed of the problem
DIM, N_COMPONENTS, N_STATES, SEED = 64, 6, 32, 2024
#: NFE of the default run and of ``--quick``
DEFAULT_NFE = (5, 10, 15, 20, 30, 50, 100)
QUICK_NFE = (10,)
#: training timesteps of the diffusers schedulers (their DDPM table)
N_TRAIN = 1000
#: number of stage-1 timestep choices carried into stage 2
STAGE2_KEEP = 2
#: where the headline ratio's targets apply: issue 6 (<= 1) and issue 7 (the best method)
TARGETS_ISSUE6 = {10: 1.0, 20: 1.0, 50: 1.0}
TARGETS_ISSUE12 = {10: 0.4, 20: 0.3, 50: 0.1}
FLOAT32_NOTE = ("diffusers' multistep set_timesteps casts its step sigmas to float32 "
                "(relative rounding <= 6e-8 per sigma); every other coefficient is float64 here")
PEERS_INSTALL = "pip install 'gddim-numerics[peers]'"


# ------------------------------------------------------------------------------------ the problem
def surrogate_vp(alphas_cumprod: np.ndarray) -> gd.VPSDE:
    r"""A linear-beta VP whose :math:`\bar\alpha` equals the table's at ``t = 1/N`` and ``t = 1``.

    With :math:`\log\bar\alpha(t) = -b_0t - c\,t^2`, the two conditions are linear in
    :math:`(b_0, c)`; ``beta_max = b_0 + 2c``.
    """
    n = len(alphas_cumprod)
    t0 = 1.0 / n
    l0, l1 = -math.log(alphas_cumprod[0]), -math.log(alphas_cumprod[-1])
    b0 = (l0 - t0 * t0 * l1) / (t0 - t0 * t0)
    c = l1 - b0
    if b0 < 0 or c < 0:
        raise ValueError("the table's end points admit no linear-beta VP with beta >= 0")
    return gd.VPSDE.linear(beta_min=b0, beta_max=b0 + 2.0 * c, t_end=t0)


def _random_covariance(rng: np.random.Generator, dim: int, scale: float) -> np.ndarray:
    g = rng.standard_normal((dim, dim))
    return scale**2 * (0.3 * np.eye(dim) + 0.7 * g @ g.T / dim)


def mixture(diffusion: gd.LinearDiffusion, seed: int = SEED) -> gd.GaussianMixture:
    """The benchmark mixture: means U(-1, 1)^64, weights Dirichlet(2), covariance scales U(0.05, 0.15)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(2.0 * np.ones(N_COMPONENTS))
    means = rng.uniform(-1.0, 1.0, (N_COMPONENTS, DIM))
    covs = np.stack([_random_covariance(rng, DIM, rng.uniform(0.05, 0.15)) for _ in range(N_COMPONENTS)])
    return gd.GaussianMixture(diffusion, (DIM,), weights, means, covs)


@dataclass
class PeerProblem:
    """The discrete VP, the mixture on it, the start states and the reference end states."""

    diffusion: gd.VPSDE
    problem: gd.GaussianMixture
    x_start: np.ndarray
    reference: np.ndarray
    reference_error: float
    surrogate: dict
    _times: dict = field(default_factory=dict, repr=False)

    @property
    def t_end(self) -> float:
        return self.diffusion.time_range[0]

    def error(self, x: Any) -> float:
        """Relative error ``||x - x_ref||_F / ||x_ref||_F`` (``inf`` for non-finite ``x``)."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            return math.inf
        return float(np.linalg.norm(x - self.reference) / np.linalg.norm(self.reference))

    def nearest_components(self, x: np.ndarray) -> np.ndarray:
        """Index of the mixture component whose mean at ``t_end`` is nearest to each state."""
        means, _ = self.problem.component_marginals(self.t_end)
        return np.argmin(np.sum((np.asarray(x)[:, None, :] - means[None]) ** 2, axis=-1), axis=1)

    def mode_switches(self, x: Any) -> int | None:
        """Trajectories that end nearest another component than the reference's (``None`` if not finite).

        One such trajectory among 32 adds ~0.2 to the relative error: large errors at low NFE are
        mostly these discrete events.
        """
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            return None
        return int(np.sum(self.nearest_components(x) != self.nearest_components(self.reference)))

    def time_of_timestep(self, timestep: Any) -> float:
        """Continuous time ``(n + 1)/N`` of the discrete timestep ``n``."""
        return (int(timestep) + 1) / N_TRAIN

    def time_of_sigma(self, sigma: float) -> float:
        r"""Continuous time whose :math:`\sigma_t/m_t` is ``sigma`` (a scheduler's VE sigma)."""
        sigma = float(sigma)
        if sigma not in self._times:
            lo, hi = self.diffusion.time_range
            target = -2.0 * math.log(sigma)
            lam_lo, lam_hi = float(self.diffusion.log_snr(lo)), float(self.diffusion.log_snr(hi))
            if target >= lam_lo:
                self._times[sigma] = lo
            elif target <= lam_hi:
                self._times[sigma] = hi
            else:
                self._times[sigma] = brentq(lambda t: float(self.diffusion.log_snr(t)) - target, lo, hi,
                                            xtol=1e-15, rtol=4 * np.finfo(float).eps)
        return self._times[sigma]


def make_problem(alphas_cumprod: np.ndarray, n_states: int = N_STATES, rtol: float = 1e-12) -> PeerProblem:
    """The benchmark problem on the table ``alphas_cumprod`` (float64 copy of the scheduler's).

    The reference is solved at ``rtol`` and again at ``100 * rtol``; their relative difference is
    reported as the reference's error.
    """
    alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
    diffusion = gd.VPSDE.discrete(alphas_cumprod=alphas_cumprod)
    problem = mixture(diffusion)
    smooth = surrogate_vp(alphas_cumprod)
    smooth_problem = mixture(smooth)
    t0, t1 = diffusion.time_range
    x_start = problem.sample_marginal(t1, n_states, rng=SEED + 1)
    reference = smooth_problem.reference_flow(x_start, t1, t0, rtol=rtol, atol=rtol * 1e-2)
    loose = smooth_problem.reference_flow(x_start, t1, t0, rtol=100 * rtol, atol=rtol)
    ends = np.array([t0, t1])
    mismatch = float(np.max(np.abs(smooth.alpha_bar(ends) / diffusion.alpha_bar(ends) - 1.0)))
    surrogate = {"beta_min": smooth.schedule.beta_min, "beta_max": smooth.schedule.beta_max,
                 "alpha_bar_end_mismatch": mismatch, "rtol": rtol}
    return PeerProblem(diffusion, problem, x_start, reference,
                       float(np.linalg.norm(loose - reference) / np.linalg.norm(reference)), surrogate)


# ------------------------------------------------------------------------------------ diffusers
def import_diffusers():
    """``(diffusers module, None)``, or ``(None, reason)`` when it cannot be imported."""
    try:
        import diffusers
        import torch  # noqa: F401  (diffusers' schedulers need it)
    except ImportError as err:
        return None, f"diffusers is not installed ({err}); {PEERS_INSTALL}"
    return diffusers, None


def promote_float64(scheduler) -> Any:
    """Hand the scheduler its own ``alphas_cumprod`` values as float64 (and what it derives from them)."""
    import torch

    ac = scheduler.alphas_cumprod.to(torch.float64)
    scheduler.alphas_cumprod = ac
    if hasattr(scheduler, "final_alpha_cumprod"):
        one = torch.tensor(1.0, dtype=torch.float64)
        scheduler.final_alpha_cumprod = one if scheduler.config.set_alpha_to_one else ac[0]
    derived = {"alpha_t": lambda: ac.sqrt(), "sigma_t": lambda: (1 - ac).sqrt(),
               "lambda_t": lambda: ac.sqrt().log() - (1 - ac).sqrt().log(),
               "sigmas": lambda: ((1 - ac) / ac).sqrt()}
    for name, value in derived.items():
        if hasattr(scheduler, name):
            setattr(scheduler, name, value())
    return scheduler


@dataclass(frozen=True)
class PeerSpec:
    """A diffusers sampler: class, fixed options and the solver options searched in stage 2."""

    name: str
    class_name: str
    fixed: dict
    solver_options: dict
    multistep: bool = True

    def default_solver(self, cls) -> dict:
        """diffusers' defaults of the searched solver options."""
        params = inspect.signature(cls.__init__).parameters
        return {k: params[k].default for k in self.solver_options if k in params}

    def solver_grid(self, cls) -> list[dict]:
        """Every combination of the solver options the class accepts."""
        params = inspect.signature(cls.__init__).parameters
        keys = [k for k in self.solver_options if k in params]
        return [dict(zip(keys, values)) for values in itertools.product(*(self.solver_options[k] for k in keys))]


_MULTISTEP_END = {"final_sigmas_type": "sigma_min"}
PEERS: tuple[PeerSpec, ...] = (
    PeerSpec("DDIM", "DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, {}, multistep=False),
    PeerSpec("DPM++2M", "DPMSolverMultistepScheduler",
             {"algorithm_type": "dpmsolver++", "solver_order": 2, **_MULTISTEP_END},
             {"solver_type": ("midpoint", "heun"), "lower_order_final": (True, False),
              "euler_at_final": (False, True)}),
    PeerSpec("DPM++3M", "DPMSolverMultistepScheduler",
             {"algorithm_type": "dpmsolver++", "solver_order": 3, **_MULTISTEP_END},
             {"solver_type": ("midpoint", "heun"), "lower_order_final": (True, False),
              "euler_at_final": (False, True)}),
    PeerSpec("UniPC-2", "UniPCMultistepScheduler", {"solver_order": 2, "predict_x0": True, **_MULTISTEP_END},
             {"solver_type": ("bh2", "bh1"), "lower_order_final": (True, False)}),
    PeerSpec("UniPC-3", "UniPCMultistepScheduler", {"solver_order": 3, "predict_x0": True, **_MULTISTEP_END},
             {"solver_type": ("bh2", "bh1"), "lower_order_final": (True, False)}),
    PeerSpec("DEIS-2", "DEISMultistepScheduler", {"solver_order": 2, "algorithm_type": "deis"},
             {"lower_order_final": (True, False)}),
    PeerSpec("DEIS-3", "DEISMultistepScheduler", {"solver_order": 3, "algorithm_type": "deis"},
             {"lower_order_final": (True, False)}),
)
PEER_NAMES = tuple(p.name for p in PEERS)
SPACINGS = ("linspace", "leading", "trailing")
SIGMA_KINDS = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas",
               "beta": "use_beta_sigmas", "lu": "use_lu_lambdas"}


def timestep_choices(spec: PeerSpec, cls) -> list[dict]:
    """Stage-1 choices: each spacing and each sigma kind the class supports, with the ``eval`` modes
    (both for sigma kinds) and, for multistep samplers, with and without ``skip_final_noop``."""
    params = inspect.signature(cls.__init__).parameters
    choices = [{"timestep_spacing": s, "eval": "timestep"} for s in SPACINGS]
    if not spec.multistep:
        return choices
    for flag in SIGMA_KINDS.values():
        if flag in params:
            choices += [{flag: True, "eval": mode} for mode in ("timestep", "sigma")]
    return [{**c, "skip_final_noop": skip} for c in choices for skip in (False, True)]


def _scheduler(cls, spec: PeerSpec, options: dict):
    kwargs = {**spec.fixed, **{k: v for k, v in options.items() if k not in ("eval", "skip_final_noop")}}
    return promote_float64(cls(**kwargs))


def _final_sigma(scheduler, n_evals: int) -> float:
    """The VE sigma at which the state sits after ``n_evals`` steps."""
    if hasattr(scheduler, "sigmas") and len(scheduler.sigmas) == len(scheduler.timesteps) + 1:
        return float(scheduler.sigmas[n_evals])
    prev = int(scheduler.timesteps[n_evals - 1]) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    ac = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
    return float(((1 - ac) / ac).sqrt())


def run_scheduler(problem: PeerProblem, scheduler, nfe: int, eval_mode: str = "timestep",
                  skip_final_noop: bool = False) -> tuple[np.ndarray | None, str | None]:
    """Run ``scheduler`` with ``nfe`` model calls on the problem; ``(x, None)`` or ``(None, why not)``.

    ``skip_final_noop``: schedule ``nfe + 1`` steps and leave out the last, which must have zero
    length. The state must end at timestep 0 (sigma of ``alphas_cumprod[0]``).
    """
    import torch

    n_steps = nfe + int(skip_final_noop)
    scheduler.set_timesteps(n_steps)
    if len(scheduler.timesteps) != n_steps:
        return None, f"set_timesteps({n_steps}) made {len(scheduler.timesteps)} steps"
    sigmas = getattr(scheduler, "sigmas", None)
    if skip_final_noop and not (sigmas is not None and float(sigmas[nfe]) == float(sigmas[nfe + 1])):
        return None, "the last scheduled step is not a zero-length step"
    ac0 = float(scheduler.alphas_cumprod[0])
    end = _final_sigma(scheduler, nfe)
    if not math.isclose(end, math.sqrt((1 - ac0) / ac0), rel_tol=1e-6):
        return None, f"ends at sigma {end:.4g}, not at timestep 0"
    x = torch.from_numpy(problem.x_start.copy())
    for i in range(nfe):
        timestep = scheduler.timesteps[i]
        if eval_mode == "sigma":
            t = problem.time_of_sigma(float(sigmas[i]))
        else:
            t = problem.time_of_timestep(timestep)
        x = scheduler.step(problem.problem.eps_R(x, t), timestep, x).prev_sample
    return x.numpy(), None


def _describe(options: dict) -> str:
    """Compact text of a configuration (``trailing``, ``karras, eval=sigma``, ``solver_type=heun``...)."""
    flags = {flag: kind for kind, flag in SIGMA_KINDS.items()}
    parts = []
    for key, value in options.items():
        if key == "timestep_spacing":
            parts.append(str(value))
        elif key in flags:
            parts.append(flags[key])
        elif key == "eval":
            parts.append("" if value == "timestep" else f"eval={value}")
        elif key == "skip_final_noop":
            parts.append("skip-final-noop" if value else "")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(p for p in parts if p)


def _try(problem: PeerProblem, cls, spec: PeerSpec, nfe: int, options: dict) -> dict:
    """One configuration: its error (``inf`` when diverged) or why it does not apply."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            x, why = run_scheduler(problem, _scheduler(cls, spec, options), nfe, options.get("eval", "timestep"),
                                   options.get("skip_final_noop", False))
        except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as err:
            x, why = None, f"{type(err).__name__}: {err}"
    if x is None:
        return {"options": options, "error": None, "skipped": why}
    return {"options": options, "error": problem.error(x), "mode_switches": problem.mode_switches(x)}


def search_peer(problem: PeerProblem, spec: PeerSpec, cls, nfe: int) -> dict:
    """Best configuration of one diffusers sampler at ``nfe`` (two-stage search, module docstring)."""
    defaults = spec.default_solver(cls)
    tried = [_try(problem, cls, spec, nfe, {**c, **defaults}) for c in timestep_choices(spec, cls)]
    ok = sorted((r for r in tried if r["error"] is not None), key=lambda r: r["error"])
    top = []
    for r in ok:
        base = {k: v for k, v in r["options"].items() if k not in defaults}
        if base not in top:
            top.append(base)
    for base, solver in itertools.product(top[:STAGE2_KEEP], spec.solver_grid(cls)):
        if solver != defaults:
            tried.append(_try(problem, cls, spec, nfe, {**base, **solver}))
    valid = [r for r in tried if r["error"] is not None]
    best = min(valid, key=lambda r: r["error"]) if valid else None
    return {"sampler": spec.name, "nfe": nfe, "error": None if best is None else best["error"],
            "options": None if best is None else best["options"],
            "mode_switches": None if best is None else best["mode_switches"],
            "description": None if best is None else _describe(best["options"]),
            "tried": len(valid), "diverged": sum(1 for r in valid if not math.isfinite(r["error"])),
            "not_applicable": len(tried) - len(valid)}


# ------------------------------------------------------------------------------------ gDDIM
@dataclass(frozen=True)
class GddimEntry:
    """A gDDIM sampler of the comparison: a registered method with options."""

    name: str
    method: str
    options: dict
    note: str
    #: pass the problem's exact mean and covariance as ``statistics`` (``gddim_auto``)
    problem_statistics: bool = False


GDDIM_ENTRIES: tuple[GddimEntry, ...] = (
    GddimEntry("gddim", "gddim", {}, "the paper's scheme: eps form, Lagrange in t, q = 2, grid uniform in sqrt(t)"),
    GddimEntry("gddim q3", "gddim", {"order": 3}, "the paper's scheme with q = 3"),
    GddimEntry("gddim_auto", "gddim_auto", {},
               "problem-aware gDDIM: scheme and grid chosen on the Gaussian with the data's mean and covariance",
               problem_statistics=True),
    GddimEntry("gddim_auto default", "gddim_auto", {},
               "gddim_auto without statistics (its default: standardised data)"),
)
#: the entry whose ratio to the best peer is the headline figure
HEADLINE = "gddim_auto"
#: fields of a GDDIM plan that define it, to rebuild it on another grid
PLAN_FIELDS = ("order", "lam", "factor", "output", "denoise", "lower_order_final", "variable", "form", "corrector")


def method_plan(diffusion: gd.LinearDiffusion, method: str, nfe: int, **options) -> Any:
    """The plan ``gd.sample`` would run for ``method`` at ``nfe`` (the default grid of the method)."""
    return gd.plan(diffusion, method, nfe, **options)


def integer_timestep_grid(ts: np.ndarray) -> np.ndarray | None:
    """``ts`` moved to the nearest discrete timesteps ``(n + 1)/N``, or ``None`` if two points merge."""
    rounded = (np.clip(np.round(np.asarray(ts) * N_TRAIN) - 1, 0, N_TRAIN - 1) + 1) / N_TRAIN
    return rounded if np.all(np.diff(rounded) < 0) else None


def run_gddim(problem: PeerProblem, entry: GddimEntry, nfe: int, integer_grid: bool = False) -> dict:
    """Error of one gDDIM entry at ``nfe`` (``integer_grid``: its grid rounded to discrete timesteps)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options = dict(entry.options)
        if entry.problem_statistics:
            options["statistics"] = gd.DataStatistics.from_problem(problem.problem)
        plan = method_plan(problem.diffusion, entry.method, nfe, **options)
        if integer_grid:
            ts = integer_timestep_grid(plan.ts) if isinstance(plan, GDDIM) else None
            if ts is None:
                return {"error": None, "skipped": "two grid points round to the same timestep"}
            plan = GDDIM(plan.diffusion, ts, **{k: getattr(plan, k) for k in PLAN_FIELDS})
        res = plan.sample(problem.problem.eps_R, problem.x_start)
    if res.nfe != nfe:
        raise RuntimeError(f"{entry.name} made {res.nfe} evaluations, not {nfe}")
    messages = sorted({str(w.message) for w in caught})
    return {"error": problem.error(res.x), "mode_switches": problem.mode_switches(res.x),
            "plan": describe_plan(plan), "warnings": messages[:3], "n_warnings": len(caught)}


def describe_plan(plan: Any) -> dict:
    """The options and grid of a plan that was run (so a result names the exact scheme behind it)."""
    fields = {k: getattr(plan, k) for k in PLAN_FIELDS if hasattr(plan, k)}
    fields["variable"] = fields.get("variable") if isinstance(fields.get("variable"), str) else "custom"
    return {"type": type(plan).__name__, **fields, "ts": [float(t) for t in getattr(plan, "ts", [])]}


# ------------------------------------------------------------------------------------ mapping checks
def ddim_mapping_check(problem: PeerProblem, diffusers, nfe: int = 10) -> dict:
    """DDIM (eta 0, trailing, ``set_alpha_to_one=False``) against gDDIM q = 1 on the same times.

    Returns the relative difference with the float64 hand-over (:func:`promote_float64`) and as
    shipped (float32 tables): the first checks the mapping, the second is the float32 effect.
    """
    out = {}
    for label, promote in (("float64", True), ("float32_as_shipped", False)):
        sched = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
        if promote:
            promote_float64(sched)
        x, why = run_scheduler(problem, sched, nfe)
        if x is None:
            raise RuntimeError(f"DDIM mapping check: {why}")
        out[label] = x
    ts = np.concatenate([(sched.timesteps.numpy() + 1) / N_TRAIN, [problem.t_end]])
    ref = gd.GDDIM(problem.diffusion, ts, order=1).sample(problem.problem.eps_R, problem.x_start).x
    scale = np.linalg.norm(ref)
    return {"nfe": nfe, "timesteps": sched.timesteps.tolist(),
            "ddim_vs_gddim_q1": float(np.linalg.norm(out["float64"] - ref) / scale),
            "ddim_float32_vs_gddim_q1": float(np.linalg.norm(out["float32_as_shipped"] - ref) / scale)}


# ------------------------------------------------------------------------------------ the section
def peer_accuracy(nfes: Sequence[int] = DEFAULT_NFE, peers: Sequence[str] = PEER_NAMES,
                  n_states: int = N_STATES, rtol: float = 1e-12,
                  progress: Callable[[str], None] | None = None) -> dict:
    """The accuracy-per-NFE comparison; a plain dict (``status`` ``"skipped"`` without diffusers).

    Parameters
    ----------
    nfes : sequence of int
        Numbers of network evaluations.
    peers : sequence of str
        Names from :data:`PEER_NAMES`.
    n_states : int
        Start states (trajectories) per run.
    rtol : float
        Tolerance of the reference solve.
    progress : callable, optional
        Called with a short text after each sampler and NFE.
    """
    say = progress or (lambda text: None)
    diffusers, reason = import_diffusers()
    if diffusers is None:
        return {"status": "skipped", "reason": reason}
    start = time.perf_counter()
    import torch

    table = diffusers.DDIMScheduler().alphas_cumprod.to(torch.float64).numpy()
    problem = make_problem(table, n_states, rtol)
    say(f"reference solved (rel. accuracy {problem.reference_error:.1e})")
    peer_rows, skipped = [], {}
    for spec in (p for p in PEERS if p.name in peers):
        cls = getattr(diffusers, spec.class_name, None)
        if cls is None:
            skipped[spec.name] = f"diffusers {diffusers.__version__} has no {spec.class_name}"
            continue
        for nfe in nfes:
            peer_rows.append(search_peer(problem, spec, cls, nfe))
            say(f"{spec.name} NFE {nfe}: {peer_rows[-1]['error']:.2e} ({peer_rows[-1]['description']})"
                if peer_rows[-1]["error"] is not None else f"{spec.name} NFE {nfe}: no valid configuration")
    gddim_rows = _gddim_rows(problem, nfes, skipped, say)
    return {
        "status": "ok",
        "problem": _describe_problem(problem),
        "mapping": {**ddim_mapping_check(problem, diffusers), "notes": mapping_notes()},
        "peers": peer_rows, "gddim": gddim_rows, "skipped": skipped,
        "best_peer": best_peers(peer_rows), "ratios": ratios(gddim_rows, best_peers(peer_rows)),
        "versions": {"diffusers": diffusers.__version__, "torch": torch.__version__},
        "seconds": time.perf_counter() - start,
    }


def _gddim_rows(problem: PeerProblem, nfes: Sequence[int], skipped: dict, say: Callable[[str], None]) -> list[dict]:
    rows = []
    for entry in GDDIM_ENTRIES:
        if entry.method not in gd.METHODS:
            skipped[entry.name] = f"method {entry.method!r} is not registered in gddim_numerics.METHODS"
            continue
        variants = (False, True) if entry.name == HEADLINE else (False,)
        for integer_grid, nfe in itertools.product(variants, nfes):
            name = entry.name + (" @int" if integer_grid else "")
            row = {"sampler": name, "nfe": nfe, "note": entry.note + ("; grid rounded to discrete timesteps"
                                                                       if integer_grid else "")}
            rows.append({**row, **run_gddim(problem, entry, nfe, integer_grid)})
            if rows[-1]["error"] is not None:
                say(f"{name} NFE {nfe}: {rows[-1]['error']:.2e}")
    return rows


def best_peers(peer_rows: list[dict]) -> dict:
    """``{nfe: {"sampler", "error", "description"}}``: the most accurate diffusers sampler per NFE."""
    best: dict = {}
    for row in peer_rows:
        if row["error"] is None or not math.isfinite(row["error"]):
            continue
        current = best.get(row["nfe"])
        if current is None or row["error"] < current["error"]:
            best[row["nfe"]] = {k: row[k] for k in ("sampler", "error", "description")}
    return best


def ratios(gddim_rows: list[dict], best: dict) -> list[dict]:
    """gDDIM error ÷ best peer error per gDDIM sampler and NFE, with the targets that apply."""
    out = []
    for row in gddim_rows:
        peer = best.get(row["nfe"])
        if row["error"] is None or peer is None:
            continue
        ratio = row["error"] / peer["error"]
        entry = {"sampler": row["sampler"], "nfe": row["nfe"], "ratio": ratio}
        if row["nfe"] in TARGETS_ISSUE6:
            entry["target_issue6"] = TARGETS_ISSUE6[row["nfe"]]
            entry["meets_issue6"] = ratio <= TARGETS_ISSUE6[row["nfe"]]
        if row["sampler"] == HEADLINE and row["nfe"] in TARGETS_ISSUE12:
            entry["target_issue12"] = TARGETS_ISSUE12[row["nfe"]]
            entry["meets_issue12"] = ratio <= TARGETS_ISSUE12[row["nfe"]]
        out.append(entry)
    return out


def _describe_problem(problem: PeerProblem) -> dict:
    return {
        "diffusion": "VPSDE.discrete(alphas_cumprod of diffusers' default DDPM table: 1000 linear betas "
                     "1e-4..0.02), timestep n at t = (n + 1)/1000",
        "data": f"Gaussian mixture, dimension {DIM}, {N_COMPONENTS} components, seed {SEED} (validation.peers.mixture)",
        "n_states": len(problem.x_start), "t_start": problem.diffusion.time_range[1], "t_end": problem.t_end,
        "error": "||X - X_ref||_F / ||X_ref||_F at t_end over all start states",
        "reference": "reference_flow (DOP853) on a linear-beta VP with the same alpha_bar at t_start and t_end",
        "reference_rel_accuracy": problem.reference_error, "surrogate": problem.surrogate,
    }


def mapping_notes() -> list[str]:
    """The mapping of diffusers' discrete schedulers onto the continuous VP, as text (module docstring)."""
    return [
        "timestep n <-> t = (n + 1)/1000 of VPSDE.discrete(alphas_cumprod=the scheduler's table): exact at "
        "every table entry",
        "model(x, n) is answered with the exact eps at t = (n + 1)/1000 (eval=timestep) or, for Karras/"
        "exponential/beta/Lu sigmas, at the continuous time of the scheduler's own sigma (eval=sigma)",
        "every run ends at timestep 0 (t = 1/1000): DDIM set_alpha_to_one=False, multistep "
        "final_sigmas_type='sigma_min' (DEIS always); runs ending at alpha_bar = 1 solve another problem",
        "skip-final-noop: a zero-length last step is scheduled but not run, so no evaluation is wasted",
        "the scheduler gets its float32 alphas_cumprod values as float64; " + FLOAT32_NOTE,
        "DDIM's non-trailing spacings end with a zero-length step from timestep 0 (one wasted evaluation), "
        "and for NFE not dividing 1000 its 'previous timestep' differs from the next evaluated one by up to "
        "1/1000: both are diffusers' behaviour and are kept",
    ]
