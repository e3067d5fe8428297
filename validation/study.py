r"""The validation study: samplers × diffusions × NFE on exact-score problems.

Every number the ``validate`` command prints comes from :func:`run_study`, which returns plain
dicts (JSON-ready). The problems and the robust start points are described in
:mod:`.study_problems`, the error measures in :mod:`.measures`, the fits in :mod:`.analysis`.

Error measures (all relative, dimensionless, at the grid's end ``t_end``)
    ``pathwise``  deterministic samplers: :math:`\|X - X^*\|_F/\|X^*\|_F` over ``n_paths`` start
                  points drawn from the exact :math:`p_{t_\mathrm{start}}`; :math:`X^*` is the exact
                  probability-flow solution (Gaussian, Dirac) or the DOP853 reference (mixture,
                  rtol 1e-10, robust start points only) from the same start points.
    ``law``       stochastic samplers on Gaussian/Dirac data: the sampler is affine in (start point,
                  noise), so its output law :math:`N(m, C)` is computed exactly by linear response
                  and compared with the true marginal :math:`N(m^*, C^*)`.
    ``moments``   stochastic samplers on the mixture: the same distance between the sample
                  mean/covariance of ``n_mc`` samples and the exact mixture mean/covariance, with its
                  Monte Carlo standard error.

Tasks
    The study is a list of :class:`~.executor.Task` (:func:`study_tasks`): per diffusion and data
    kind one task that draws the start points and solves the reference (:class:`~.study_problems.Bench`),
    then one task per sampler that runs its NFE series and needs that reference. Every random
    stream is seeded from the seed and the task's names, so results do not depend on the order
    or the place the tasks run.

Samplers
    Named after :data:`gddim_numerics.METHODS`; a method with several variants in the study
    (``gddim``: orders 1–3, λ = 0.5 and 1) is named ``<method>_q<order>`` / ``<method>_lam<λ>``
    and a method name selects all its variants (:func:`resolve_samplers`). The sampler with
    measured defaults is the single entry :data:`~.analysis.TUNED_SAMPLER` of :data:`SAMPLERS`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import gddim_numerics as gd
from gddim_numerics import auto

from . import analysis
from .analysis import PAPER_SAMPLER, TUNED_SAMPLER, TUNED_TARGETS
from .executor import Task, TaskOutcome, run_tasks
from .measures import Measurement
from .study_problems import (DATA_KINDS, DATA_TITLES, DIFFUSIONS, ROBUST_TEXT, Bench, Case, Reference,
                             error_measure, make_problems, prepare_cases)

DEFAULT_NFE = (5, 10, 20, 50, 100, 200)
QUICK_NFE = (5, 10, 20)
DEFAULT_RK45_TOLERANCES = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
QUICK_RK45_TOLERANCES = (1e-3, 1e-5)
RK45_BUDGET = 20_000
DEFAULT_GRID_POWER = 2.0

METRICS = {
    "pathwise": "relative pathwise error ||X - X*||_F / ||X*||_F of the full states (CLD: positions and "
                "velocities) over the start points; X* = exact "
                "probability flow (Gaussian, Dirac) or DOP853 reference, rtol 1e-10 (mixture), from the same "
                "start points",
    "law": "exact distance of output law N(m, C) (by linear response; the sampler is affine on Gaussian data) "
           "to the true marginal N(m*, C*): sqrt(|m - m*|^2 + ||C^1/2 - C*^1/2||_F^2) / sqrt(|m*|^2 + tr C*) "
           "(W2 of the coupling through symmetric roots: = W2 when C, C* commute, an upper bound otherwise)",
    "moments": "the same distance between the sample mean/covariance of the sampler's output and the exact "
               "mean/covariance of the mixture marginal, +- its Monte Carlo standard error s (RMS distance of "
               "bootstrap-resampled moments from the sample moments; by the triangle inequality the noise-free "
               "error lies within about 2 s of the value)",
}

MODE_SWITCH = ("fraction of the (robust) start points whose end point is assigned to another mixture component "
               "than the reference end point from the same start point; a point is assigned to the component of "
               "largest posterior responsibility pi_k N(x; m_k, C_k) / p(x) under the exact marginal p_t_end (the "
               "Bayes classifier of the full state; CLD: positions and velocities)")


# ------------------------------------------------------------------------------------ samplers
def _fixed(**options) -> Callable[[int], dict]:
    return lambda nfe: dict(options)


def _heun_options(nfe: int) -> dict:
    """Heun costs 2 NFE per step; an odd NFE makes the last step an Euler step (Karras et al.)."""
    return {"final_euler": nfe % 2 == 1}


def _tuned_plan(diffusion: gd.LinearDiffusion, problem, nfe: int):
    """The :data:`TUNED_SAMPLER` plan: ``gddim_auto`` with the problem's statistics (mean and covariance)."""
    return auto.auto_plan(diffusion, nfe, None if problem is None else gd.DataStatistics.from_problem(problem))


def _tuned_settings(diffusion: gd.LinearDiffusion, nfe: int) -> dict:
    """What :data:`TUNED_SAMPLER` runs at ``nfe`` with default statistics (form, variable, order, corrector, grid)."""
    report = auto.auto_plan(diffusion, nfe).auto_report
    grid = {"kind": "optimised" if "grid_params" in report else f"power {auto.BASE_POWER:g}"}
    if "first_log_snr" in report:
        grid["first_log_snr"] = report["first_log_snr"]
    return {**report["scheme"], "grid": grid}


TUNED_NOTE = ("gddim_auto chooses form, order, corrector and grid per diffusion, NFE and data statistics by the "
              "exact surrogate errors, relative to the paper's scheme, on Gaussian models with the problem's mean "
              "and covariance; nothing is tuned on these problems (its design problems: "
              "validation/auto_design.py).")


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler of the study: a registered method with fixed options and its theoretical order.

    ``order`` is the global order in the step size (weak order, in law, for stochastic samplers),
    or ``"varies"`` for a sampler whose scheme changes with the NFE; ``diffusions`` restricts the
    sampler to some diffusions (``None``: all); ``builder(diffusion, problem, nfe)``, if given,
    builds the plan itself (a sampler with its own grid, possibly fitted to the problem) and
    ``settings(diffusion, nfe)`` describes what it runs; ``note`` is printed under its table.
    """

    method: str
    label: str
    order: float | str
    options: Callable[[int], dict] = _fixed()
    stochastic: bool = False
    adaptive: bool = False
    diffusions: tuple[str, ...] | None = None
    builder: Callable[..., object] | None = None
    settings: Callable[[gd.LinearDiffusion, int], dict] | None = None
    note: str = ""

    def applies_to(self, diffusion: str) -> bool:
        """Whether the sampler is defined for the named diffusion."""
        return self.diffusions is None or diffusion in self.diffusions

    @property
    def min_nfe(self) -> int:
        """The smallest NFE the registered method accepts."""
        return gd.METHODS[self.method].min_nfe

    def build(self, diffusion: gd.LinearDiffusion, nfe: int, grid_power: float = DEFAULT_GRID_POWER, problem=None):
        """The plan costing exactly ``nfe`` evaluations on a grid uniform in ``t**(1/grid_power)``
        (a sampler with a ``builder`` uses its own grid)."""
        if self.builder is not None:
            return self.builder(diffusion, problem, nfe)
        options = self.options(nfe)
        method = gd.METHODS[self.method]
        ts = gd.time_grid(diffusion, method.steps_for_nfe(nfe, **options), "power", power=grid_power)
        return method.build(diffusion, ts, **options)


SAMPLERS = {
    "gddim_q1": SamplerSpec("gddim", "gDDIM q=1 (K=R, deterministic)", 1, _fixed(order=1)),
    "gddim_q2": SamplerSpec("gddim", "gDDIM q=2 (multistep)", 2, _fixed(order=2)),
    "gddim_q3": SamplerSpec("gddim", "gDDIM q=3 (multistep)", 3, _fixed(order=3)),
    TUNED_SAMPLER: SamplerSpec("gddim_auto", "gDDIM problem-aware (form, order, corrector, grid from the data statistics)",
                               "varies", builder=_tuned_plan, settings=_tuned_settings, note=TUNED_NOTE),
    "gddim_L": SamplerSpec("gddim_L", "K=L ablation of gDDIM, q=1", 1, _fixed(order=1)),
    "gddim_lam0.5": SamplerSpec("gddim", "stochastic gDDIM q=1, lambda=0.5", 1, _fixed(order=1, lam=0.5),
                                stochastic=True),
    "gddim_lam1": SamplerSpec("gddim", "stochastic gDDIM q=1, lambda=1", 1, _fixed(order=1, lam=1.0),
                              stochastic=True),
    "em": SamplerSpec("em", "Euler-Maruyama, reverse SDE (lambda=1)", 1, _fixed(lam=1.0), stochastic=True),
    "euler": SamplerSpec("euler", "probability-flow Euler", 1),
    "heun": SamplerSpec("heun", "probability-flow Heun (2 NFE/step)", 2, _heun_options),
    "rk45": SamplerSpec("rk45", "RK45 on the probability flow (adaptive, rtol=atol)", 5, adaptive=True),
    "sscs": SamplerSpec("sscs", "SSCS (CLD's symmetric splitting)", 1, stochastic=True, diffusions=("cld",)),
    "ancestral": SamplerSpec("ancestral", "ancestral sampling (DDPM / BDM)", 1, stochastic=True,
                             diffusions=("vp", "bdm")),
}


def method_variants() -> dict[str, tuple[str, ...]]:
    """``{method: study samplers}`` for every method of :data:`gddim_numerics.METHODS` with a sampler here."""
    out: dict[str, tuple[str, ...]] = {}
    for name, spec in SAMPLERS.items():
        out[spec.method] = out.get(spec.method, ()) + (name,)
    return out


def resolve_samplers(names: Sequence[str]) -> tuple[str, ...]:
    """Study sampler names from sampler or method names (a method selects all its variants), in order.

    Raises ``ValueError`` naming an unknown name, the study's samplers and the methods.
    """
    variants = method_variants()
    out: list[str] = []
    for name in names:
        if name in SAMPLERS:
            out.append(name)
        elif name in variants:
            out += variants[name]
        elif name in gd.METHODS:
            raise ValueError(f"method {name!r} is registered but not part of the study; samplers: "
                             f"{', '.join(SAMPLERS)}")
        else:
            listed = ", ".join(f"{m} ({', '.join(v)})" for m, v in variants.items() if v != (m,))
            raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}; or a method name for all "
                             f"its variants: {listed}")
    return tuple(dict.fromkeys(out))


# ------------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class StudyConfig:
    """What the study runs; :meth:`check` refuses bad input with a message that names the fix.

    Attributes
    ----------
    diffusions, samplers, data : tuple of str
        Keys of :data:`DIFFUSIONS`, :data:`SAMPLERS` and :data:`DATA_KINDS`.
    nfe : tuple of int
        Network evaluations per sample for the grid-based samplers (sorted, distinct).
    rk45_tolerances : tuple of float
        ``rtol = atol`` values of the adaptive RK45 baseline (its NFE is measured).
    seed : int
        Seed of the problem parameters, start points and sampler noise.
    n_paths : int
        Start points of the pathwise error.
    n_mc : int
        Samples of the Monte Carlo moment distance.
    grid_power : float
        Grids are uniform in ``t**(1/grid_power)`` (2: the papers' "quadratic" grid).
    target : float
        Relative error of the "NFE to reach a target error" table.
    data_std : float
        Scale of the data covariance (Gaussian data and mixture components).
    """

    diffusions: tuple[str, ...] = tuple(DIFFUSIONS)
    samplers: tuple[str, ...] = tuple(SAMPLERS)
    data: tuple[str, ...] = DATA_KINDS
    nfe: tuple[int, ...] = DEFAULT_NFE
    rk45_tolerances: tuple[float, ...] = DEFAULT_RK45_TOLERANCES
    seed: int = 0
    n_paths: int = 64
    n_mc: int = 4_000
    grid_power: float = DEFAULT_GRID_POWER
    target: float = 1e-3
    data_std: float = 0.2
    quick: bool = False

    @classmethod
    def quick_config(cls) -> StudyConfig:
        """The ``--quick`` configuration: every code path in seconds (NFE 5, 10, 20; fewer samples)."""
        return cls(nfe=QUICK_NFE, rk45_tolerances=QUICK_RK45_TOLERANCES, n_paths=16, n_mc=2_000, quick=True)

    def check(self) -> None:
        """Raise ``ValueError`` naming the bad option and the valid values."""
        _check_names("diffusion", self.diffusions, DIFFUSIONS)
        _check_names("sampler", self.samplers, SAMPLERS)
        _check_names("data kind", self.data, DATA_KINDS)
        if not self.nfe or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.nfe):
            raise ValueError(f"nfe must be positive integers; got {list(self.nfe)}")
        if list(self.nfe) != sorted(set(self.nfe)):
            raise ValueError(f"nfe must be sorted and distinct; got {list(self.nfe)}")
        for name in self.samplers:
            spec = SAMPLERS[name]
            if not spec.adaptive and self.nfe[0] < spec.min_nfe:
                raise ValueError(f"sampler {name!r} needs NFE >= {spec.min_nfe}; the smallest --nfe is {self.nfe[0]}")
        if not any(SAMPLERS[s].applies_to(d) for s in self.samplers for d in self.diffusions):
            raise ValueError(f"none of the samplers {list(self.samplers)} applies to the diffusions "
                             f"{list(self.diffusions)} (sscs is CLD-only, ancestral is VP/BDM-only)")
        _check_positive_finite("target", self.target, upper=1.0)
        _check_positive_finite("data_std", self.data_std)
        _check_positive_finite("grid_power", self.grid_power)
        for tol in self.rk45_tolerances:
            _check_positive_finite("rk45 tolerance", tol, upper=1.0)
        for name in ("n_paths", "n_mc"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2; got {getattr(self, name)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")

    def pairs(self) -> Iterator[tuple[str, str]]:
        """The ``(diffusion, sampler)`` pairs that run (samplers restricted to some diffusions skip the rest)."""
        for d in self.diffusions:
            for s in self.samplers:
                if SAMPLERS[s].applies_to(d):
                    yield d, s


def _check_names(what: str, names: Sequence[str], valid) -> None:
    if not names:
        raise ValueError(f"no {what} selected; valid: {', '.join(valid)}")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")


def _check_positive_finite(name: str, value: float, upper: float = math.inf) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < upper):
        bound = f" and below {upper:g}" if math.isfinite(upper) else ""
        raise ValueError(f"{name} must be a finite number above 0{bound}; got {value!r}")


# ------------------------------------------------------------------------------------ tasks
@functools.lru_cache(maxsize=len(DIFFUSIONS))
def _diffusion(name: str) -> gd.LinearDiffusion:
    """The diffusion ``name``, one per process: its plans are cached on it and shared by every problem."""
    return DIFFUSIONS[name].make()


@functools.lru_cache(maxsize=len(DIFFUSIONS) * len(DATA_KINDS))
def _case(name: str, kind: str, seed: int, data_std: float) -> Case:
    """The problem of a task, kept for the next tasks on the same problem (it shares the problem's table cache);
    every problem is kept: a Dask worker runs the problems' tasks interleaved."""
    diffusion = _diffusion(name)
    return Case(name, diffusion, make_problems(name, diffusion, (kind,), seed, data_std))


def solve_reference(name: str, kind: str, config: StudyConfig) -> Reference:
    """Task: the start points of problem ``kind`` of diffusion ``name`` and their reference end points."""
    return Bench(_case(name, kind, config.seed, config.data_std), kind, config).solved


def run_series(solved: Reference, name: str, kind: str, sampler: str, config: StudyConfig) -> list[Measurement]:
    """Task: measurements of one sampler on one problem, one per NFE (per tolerance for adaptive samplers),
    against the reference ``solved`` by :func:`solve_reference` (the problem itself is rebuilt: it is cheap)."""
    bench = Bench(_case(name, kind, config.seed, config.data_std), kind, config, solved)
    spec = SAMPLERS[sampler]
    if spec.adaptive:
        method = gd.METHODS[spec.method]
        return [bench.measure(spec, method.build(bench.diffusion, None, nfe=RK45_BUDGET, rtol=tol, atol=tol))
                for tol in config.rk45_tolerances]
    return [bench.measure(spec, spec.build(bench.diffusion, nfe, config.grid_power, bench.problem))
            for nfe in config.nfe]


def study_tasks(config: StudyConfig) -> list[Task]:
    """The study as tasks: per (diffusion, data) a reference task ``(d, kind, "reference")``, then one
    task ``(d, kind, sampler)`` per sampler that needs it."""
    tasks = []
    for d in config.diffusions:
        for kind in config.data:
            ref = (d, kind, "reference")
            tasks.append(Task(ref, solve_reference, (d, kind, config)))
            tasks += [Task((d, kind, s), run_series, (d, kind, s, config), needs=(ref,))
                      for s in config.samplers if SAMPLERS[s].applies_to(d)]
    return tasks


def run_study(config: StudyConfig, progress: Callable[[int, int, TaskOutcome], None] | None = None, *,
              workers: int | None = None, scheduler: str | None = None) -> dict:
    """Run the study and return every number as plain dicts (the JSON of the ``validate`` command).

    Parameters
    ----------
    config : StudyConfig
        What to run (checked here).
    progress : callable, optional
        ``progress(done, total, outcome)`` after each task of :func:`study_tasks`.
    workers, scheduler
        Where the tasks run (:func:`~.executor.run_tasks`: default a local Dask cluster, one
        process per core; ``workers=1`` serially here); the numbers do not depend on it.

    Returns
    -------
    dict
        ``meta`` (options, metrics, timing), ``problems`` (what was solved), ``samplers`` (labels and
        theoretical orders), ``results[diffusion][data]`` with ``samplers[name]`` (``metric``,
        ``nfe``, ``error``, ``stderr``, ``status``, ``fitted_order``, ``nfe_to_target``; on the
        mixture ``mode_switch`` per NFE for pathwise series), ``speedup`` and ``start_points``
        (``n_paths``, ``excluded``); ``dirac_exactness``, ``tuned_vs_paper``, ``failures`` (tasks that
        raised: ``task``, ``error``) and, when :data:`TUNED_SAMPLER` runs, ``tuned_settings``.
    """
    config.check()
    started = time.perf_counter()
    outcomes = {o.key: o for o in run_tasks(study_tasks(config), workers=workers, scheduler=scheduler,
                                                    progress=progress)}
    results: dict = {}
    failures = [{"task": "/".join(k), "error": o.error} for k, o in outcomes.items() if not o.ok]
    for (d, kind, name), outcome in outcomes.items():
        block = results.setdefault(d, {}).setdefault(kind, {"samplers": {}})
        if name == "reference":
            if outcome.ok:
                block["start_points"] = {"n_paths": config.n_paths, "excluded": outcome.value.n_excluded}
        elif outcome.ok:
            spec = SAMPLERS[name]
            tolerances = config.rk45_tolerances if spec.adaptive else None
            block["samplers"][name] = analysis.series_dict(error_measure(spec.stochastic, kind), outcome.value,
                                                           config.target, tolerances)
    for by_kind in results.values():
        for block in by_kind.values():
            block["speedup"] = analysis.speedups(block["samplers"])
    cases = prepare_cases(config)
    out = {
        "meta": _meta(config, time.perf_counter() - started),
        "problems": {c.name: _describe_case(c, config) for c in cases},
        "samplers": {s: {"label": SAMPLERS[s].label, "theoretical_order": SAMPLERS[s].order,
                         "stochastic": SAMPLERS[s].stochastic, "adaptive": SAMPLERS[s].adaptive,
                         "note": SAMPLERS[s].note} for s in config.samplers},
        "results": results,
        "dirac_exactness": analysis.dirac_exactness(results),
        "tuned_vs_paper": {"targets": {d: TUNED_TARGETS[d] for d in config.diffusions if d in TUNED_TARGETS},
                           "paper": PAPER_SAMPLER, "rows": analysis.tuned_vs_paper(results)},
        "failures": failures,
    }
    if TUNED_SAMPLER in config.samplers and SAMPLERS[TUNED_SAMPLER].settings is not None:
        settings = SAMPLERS[TUNED_SAMPLER].settings
        out["tuned_settings"] = {c.name: {str(n): settings(c.diffusion, n) for n in config.nfe} for c in cases}
    return out


def _describe_case(case: Case, config: StudyConfig) -> dict:
    d = case.diffusion
    return {"title": DIFFUSIONS[case.name].title, "diffusion": repr(d),
            "event_shape": list(DIFFUSIONS[case.name].event_shape(d)),
            "t_start": float(d.t_start), "t_end": float(d.t_end),
            "grid": f"uniform in t^(1/{config.grid_power:g}) from t_start to t_end"
                    + (f" ({TUNED_SAMPLER}: its own grid)" if TUNED_SAMPLER in config.samplers else ""),
            "data": {k: DATA_TITLES[k] + ("" if k == "dirac" else f", data std {config.data_std:g}")
                     for k in config.data}}


def _meta(config: StudyConfig, elapsed: float) -> dict:
    return {
        "version": gd.__version__,
        "options": {
            "diffusions": list(config.diffusions), "samplers": list(config.samplers), "data": list(config.data),
            "nfe": list(config.nfe), "rk45_tolerances": list(config.rk45_tolerances), "seed": config.seed,
            "n_paths": config.n_paths, "n_mc": config.n_mc, "target": config.target,
            "data_std": config.data_std, "grid_power": config.grid_power, "quick": config.quick,
        },
        "metrics": METRICS,
        "mode_switch": MODE_SWITCH,
        "robust_start_points": ROBUST_TEXT,
        "order_fit": analysis.ORDER_FIT_TEXT,
        "extrapolation_limit": analysis.EXTRAPOLATION_LIMIT,
        "elapsed_s": round(elapsed, 2),
    }
