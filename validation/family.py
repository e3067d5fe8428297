r"""The problem-family benchmark: any sampler by name on a randomized family, as a ratio to the paper's scheme.

Problems: :mod:`.family_problems` (seeds ``1000…``, VP/VE/CLD/BDM/dense/time-varying diffusions,
Gaussian mixtures of 1-6 components). Per problem, ``n_points`` start points are drawn from the
exact :math:`p_{t_\mathrm{start}}` and carried to ``t_end``.

Reference and robust start points
---------------------------------
The reference end points :math:`x^{ref}` integrate the probability-flow ODE with the exact score
(DOP853, rtol ``1e-10``, atol ``1e-12``: :meth:`~gddim_numerics.GaussianMixture.reference_flow`).
A start point :math:`x` is *robust* when the mixture component of its reference end point (the
Bayes classifier of the exact :math:`p_{t_\mathrm{end}}`) is the same

* for the start points :math:`x \pm \delta u` (:math:`u` a random unit direction,
  :math:`\delta = 10^{-6}\|x\|`), and
* for a tighter solve (rtol ``1e-12``, atol ``1e-14``) from :math:`x`.

A start point near the flow's separatrix between two components fails this test: its end point
is decided by rounding, and no sampler can be judged on it. Errors are computed on the robust
points only; the report counts the excluded ones.

Error and ratio
---------------
:math:`e = \|X - X^{ref}\|_F / \|X^{ref}\|_F` over the robust rows (``inf`` if the sampler returned
a non-finite state), and per problem and NFE the ratio :math:`e_\text{method} / e_\text{paper\_q3}`;
:mod:`.family_report` summarizes the ratios (median, worst, number > 1) per NFE and diffusion kind.

Methods (:func:`method_names`)
------------------------------
``paper_q3``: ``gd.GDDIM(sde, gd.time_grid(sde, nfe, "power", power=2), order=3)`` (the paper's
scheme, every ratio is to it); any name of ``gd.METHODS`` (``gd.sample(..., method=name, nfe=nfe)``);
and the statistics variants of ``gddim_auto`` (:data:`AUTO_VARIANTS`), available once
``gd.DataStatistics`` and ``method="gddim_auto"`` exist.

The work is a list of :class:`~.executor.Task`: one reference per problem, and one error per
(problem, method, NFE) that needs it; every random draw is seeded by the problem's seed, so the
results do not depend on the order of execution.

Cost: ``gddim_auto``'s plan search dominates (one choice per problem and NFE; a worker builds each problem
once and the choices for its NFEs share the search's one-time work; the references take seconds). All 204
problems × ``paper_q3`` and ``auto`` × 4 NFE took 30 minutes with ``--workers 2`` on an idle 2-core machine
(13 schemes in ``gddim_auto``'s family).
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import gddim_numerics as gd
from gddim_numerics.layout import dense_operator

from .executor import Task, TaskOutcome, add_execution_arguments, execution_from_args, run_tasks
from .family_problems import FAMILY_KINDS, FIRST_SEED, FamilyProblem, family_seeds, make_problem
from .measures import final_components

PAPER = "paper_q3"
DEFAULT_NFE = (5, 10, 20, 50)
DEFAULT_PROBLEMS = 204
DEFAULT_POINTS = 16
QUICK = dict(problems=6, nfe=(5, 10), points=8)
REFERENCE_TOL = (1e-10, 1e-12)
TIGHT_TOL = (1e-12, 1e-14)
PERTURBATION = 1e-6
STATISTICS_SAMPLES = 100


def _stream(seed: int, *keys: str) -> np.random.Generator:
    """A generator fixed by the problem's ``seed`` and the text ``keys`` (independent of task order)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


# ------------------------------------------------------------------------------------ reference
@dataclass(frozen=True)
class Reference:
    r"""Start points of one problem, their reference end points and which of them are robust.

    Attributes
    ----------
    start, end : ndarray, shape ``(B, *event_shape)``
        Start points at ``t_start`` and reference end points at ``t_end``.
    robust : (B,) bool ndarray
        Start points whose reference end component is robust (module docstring).
    tight_change : float
        :math:`\max\|x^{ref} - x^{tight}\|/\|x^{ref}\|` over the robust rows: the reference's own error.
    """

    start: np.ndarray
    end: np.ndarray
    robust: np.ndarray
    tight_change: float

    @property
    def n_excluded(self) -> int:
        return int(np.sum(~self.robust))


def robust_points(problem: gd.GaussianMixture, end: np.ndarray, perturbed_ends: Sequence[np.ndarray],
                  tight_end: np.ndarray, t_end: float) -> np.ndarray:
    """Rows whose end component agrees between ``end``, every ``perturbed_ends`` and ``tight_end``."""
    if problem.n_components == 1:
        return np.ones(len(end), dtype=bool)
    comp = final_components(problem, end, t_end)
    keep = comp == final_components(problem, tight_end, t_end)
    for other in perturbed_ends:
        keep &= comp == final_components(problem, other, t_end)
    return keep


def compute_reference(seed: int, n_points: int) -> Reference:
    """The :class:`Reference` of problem ``seed`` from ``n_points`` start points drawn from its exact prior."""
    fam = make_problem(seed)
    start = fam.data.sample_prior(n_points, rng=_stream(seed, "start"))
    return reference_for(fam.data, start, _stream(seed, "perturbation"))


def reference_for(data: gd.GaussianMixture, start: np.ndarray, rng: np.random.Generator) -> Reference:
    """Reference end points of ``start`` (``(B, *event_shape)``) and their robustness (module docstring).

    ``rng`` draws the perturbation directions. One component: every point is robust, no extra solve.
    """
    sde = data.diffusion
    s, t, n_points = sde.t_start, sde.t_end, len(start)
    flat = np.asarray(start, dtype=np.float64).reshape(n_points, -1)
    u = rng.standard_normal(flat.shape)
    step = (PERTURBATION * np.linalg.norm(flat, axis=1) / np.linalg.norm(u, axis=1))[:, None] * u
    if data.n_components == 1:
        end = data.reference_flow(start, s, t, *REFERENCE_TOL)
        return Reference(start, end, np.ones(n_points, dtype=bool), float("nan"))
    stacked = np.concatenate([flat, flat + step, flat - step]).reshape((3 * n_points,) + start.shape[1:])
    ends = data.reference_flow(stacked, s, t, *REFERENCE_TOL).reshape(3, *start.shape)
    tight = data.reference_flow(start, s, t, *TIGHT_TOL)
    robust = robust_points(data, ends[0], ends[1:], tight, t)
    return Reference(start, ends[0], robust, _row_change(ends[0][robust], tight[robust]))


def _row_change(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0:
        return float("nan")
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def relative_error(x: np.ndarray, reference: np.ndarray, rows: np.ndarray) -> float:
    r""":math:`\|X - X^{ref}\|_F/\|X^{ref}\|_F` over ``rows`` (``inf`` if ``x`` is not finite, ``nan`` if no row)."""
    x, reference = np.asarray(x, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if x.shape != reference.shape:
        raise ValueError(f"x has shape {x.shape}, the reference {reference.shape}; they must match")
    rows = np.asarray(rows, dtype=bool)
    if not rows.any():
        return float("nan")
    if not np.all(np.isfinite(x[rows])):
        return float("inf")
    return float(np.linalg.norm(x[rows] - reference[rows]) / np.linalg.norm(reference[rows]))


# ------------------------------------------------------------------------------------ methods
def _exact_statistics(fam: FamilyProblem):
    return gd.DataStatistics.from_problem(fam.data)


def clean_samples(data: gd.GaussianMixture, n: int, rng: np.random.Generator) -> np.ndarray:
    r"""``n`` clean data samples ``(n, *event_shape)``: :math:`\sum_k\pi_kN(\mu_k, S_k - \Sigma_0)` (no :math:`\Sigma_0`)."""
    sigma0 = dense_operator(data.diffusion, data.diffusion.initial_covariance, data.event_shape)
    comp = rng.choice(data.n_components, size=n, p=data.weights)
    z = rng.standard_normal((n, data.dim))
    out = data.means.reshape(data.n_components, -1)[comp]
    for k, cov in enumerate(data.covs):
        vals, vecs = np.linalg.eigh(cov - sigma0)
        out[comp == k] += z[comp == k] @ (vecs * np.sqrt(np.clip(vals, 0.0, None))).T
    return out.reshape((n,) + data.event_shape)


def _sample_statistics(fam: FamilyProblem):
    samples = clean_samples(fam.data, STATISTICS_SAMPLES, _stream(fam.seed, "statistics"))
    return gd.DataStatistics.from_samples(fam.diffusion, samples)


@dataclass(frozen=True)
class AutoVariant:
    """A ``gddim_auto`` run: ``statistics(problem)`` (or ``None``: none given) and extra options."""

    description: str
    statistics: Callable | None
    options: tuple[tuple[str, object], ...] = ()


#: The ``gddim_auto`` variants by name (add a row, e.g. an option that only picks from the family).
AUTO_VARIANTS: dict[str, AutoVariant] = {
    "auto": AutoVariant("gddim_auto, exact mean and covariance of the data", _exact_statistics),
    "auto_scaled3": AutoVariant("gddim_auto, statistics with the covariance scale off by 3x",
                                lambda fam: _exact_statistics(fam).scaled(3.0)),
    "auto_diagonal": AutoVariant("gddim_auto, only the diagonal of the statistics",
                                 lambda fam: _exact_statistics(fam).diagonal()),
    "auto_samples100": AutoVariant(f"gddim_auto, statistics estimated from {STATISTICS_SAMPLES} data samples",
                                   _sample_statistics),
    "auto_nostats": AutoVariant("gddim_auto without statistics (its documented default)", None),
    "auto_pick": AutoVariant("gddim_auto, exact statistics, optimize_grid=False (family pick on the base grid only)",
                             _exact_statistics, (("optimize_grid", False),)),
}


def auto_available() -> bool:
    """Whether the ``gddim_auto`` variants can run (``gd.DataStatistics`` and the method exist)."""
    return hasattr(gd, "DataStatistics") and "gddim_auto" in gd.METHODS


def method_names() -> list[str]:
    """Every method name the benchmark knows now."""
    return [PAPER, *sorted(gd.METHODS), *(AUTO_VARIANTS if auto_available() else ())]


def default_methods() -> tuple[str, ...]:
    """``paper_q3`` and every ``gddim_auto`` variant."""
    return (PAPER, *(AUTO_VARIANTS if auto_available() else ()))


def check_methods(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` with ``paper_q3`` first (added if missing); ``ValueError`` naming an unknown method."""
    for name in names:
        if name in AUTO_VARIANTS and not auto_available():
            raise ValueError(f"method {name!r} needs gd.DataStatistics and method='gddim_auto', which this "
                             "version of gddim_numerics does not have")
        if name != PAPER and name not in gd.METHODS and name not in AUTO_VARIANTS:
            raise ValueError(f"unknown method {name!r} in --methods; known: {', '.join(method_names())}")
    return (PAPER, *dict.fromkeys(n for n in names if n != PAPER))


def run_method(fam: FamilyProblem, name: str, nfe: int, x: np.ndarray) -> np.ndarray:
    """End states of method ``name`` with ``nfe`` evaluations from ``x`` on problem ``fam``."""
    if name == PAPER:
        ts = gd.time_grid(fam.diffusion, nfe, "power", power=2)
        return gd.GDDIM(fam.diffusion, ts, order=3).sample(fam.data.eps_R, x).x
    options = {}
    if name in AUTO_VARIANTS:
        variant = AUTO_VARIANTS[name]
        name, options = "gddim_auto", dict(variant.options)
        if variant.statistics is not None:
            options["statistics"] = variant.statistics(fam)
    return gd.sample(fam.diffusion, fam.data.eps_R, x, method=name, nfe=nfe, **options).x


def measure(reference: Reference, seed: int, name: str, nfe: int) -> float:
    """Error (:func:`relative_error` on the robust rows) of method ``name`` at ``nfe`` on problem ``seed``."""
    fam = make_problem(seed)
    x = run_method(fam, name, nfe, reference.start.copy())
    return relative_error(np.asarray(x), reference.end, reference.robust)


# ------------------------------------------------------------------------------------ the study
@dataclass(frozen=True)
class FamilyConfig:
    """What to run: ``problems`` seeds from ``first_seed``, ``methods`` × ``nfe``, ``points`` per problem."""

    problems: int = DEFAULT_PROBLEMS
    first_seed: int = FIRST_SEED
    methods: tuple[str, ...] = ()
    nfe: tuple[int, ...] = DEFAULT_NFE
    points: int = DEFAULT_POINTS

    def checked(self) -> FamilyConfig:
        """This config with defaults filled in; ``ValueError`` naming a bad field."""
        seeds = family_seeds(self.problems, self.first_seed)
        if not self.nfe or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in self.nfe):
            raise ValueError(f"nfe must be integers >= 2; got {self.nfe!r}")
        if isinstance(self.points, bool) or not isinstance(self.points, int) or self.points < 1:
            raise ValueError(f"points must be a positive int (start points per problem); got {self.points!r}")
        methods = check_methods(self.methods or default_methods())
        return FamilyConfig(len(seeds), self.first_seed, methods, tuple(sorted(set(self.nfe))), self.points)

    @property
    def seeds(self) -> list[int]:
        return family_seeds(self.problems, self.first_seed)


def build_tasks(config: FamilyConfig) -> list[Task]:
    """One reference task per problem, then one :func:`measure` task per (method, NFE) needing it."""
    tasks = []
    for seed in config.seeds:
        ref = ("reference", seed)
        tasks.append(Task(ref, compute_reference, (seed, config.points)))
        tasks += [Task(("error", seed, name, nfe), measure, (seed, name, nfe), needs=(ref,))
                  for name in config.methods for nfe in config.nfe]
    return tasks


def collect(config: FamilyConfig, outcomes: Sequence[TaskOutcome]) -> dict:
    """The raw results as JSON-ready data: per problem its description, exclusions and errors."""
    by_key = {o.key: o for o in outcomes}
    problems, failures = [], []
    for seed in config.seeds:
        fam = make_problem(seed)
        ref = by_key[("reference", seed)]
        row = {"seed": seed, "kind": fam.kind, "label": fam.label, "dim": fam.dim,
               "components": fam.data.n_components, "scale": fam.scale, "points": config.points,
               "seconds": ref.seconds}
        if ref.ok:
            row.update(excluded=ref.value.n_excluded, reference_tight_change=_json_float(ref.value.tight_change))
        errors = {}
        for name in config.methods:
            errors[name] = []
            for nfe in config.nfe:
                o = by_key[("error", seed, name, nfe)]
                errors[name].append(_json_float(o.value) if o.ok else None)
                row["seconds"] += o.seconds
                if not o.ok:
                    failures.append({"seed": seed, "method": name, "nfe": nfe, "error": o.error.strip().splitlines()[-1]})
        row["errors"] = errors
        problems.append(row)
    return {"config": {"problems": config.problems, "first_seed": config.first_seed, "methods": list(config.methods),
                       "nfe": list(config.nfe), "points": config.points, "paper": PAPER,
                       "kinds": list(FAMILY_KINDS)},
            "problems": problems, "failures": failures}


def _json_float(x: float) -> float | str:
    """A float for JSON: ``inf``/``nan`` as strings (JSON has no such numbers)."""
    x = float(x)
    return x if math.isfinite(x) else str(x)


def run_family(config: FamilyConfig, progress: Callable[[int, int, TaskOutcome], None] | None = None, *,
               workers: int | None = None, scheduler: str | None = None) -> dict:
    """Run the benchmark of ``config`` (checked first) and return :func:`collect`'s results; ``workers`` and
    ``scheduler`` say where the tasks run (:func:`~.executor.run_tasks`), not what they give."""
    config = config.checked()
    outcomes = run_tasks(build_tasks(config), workers=workers, scheduler=scheduler, progress=progress)
    return collect(config, outcomes)


# ------------------------------------------------------------------------------------ command line
def add_parser(subparsers) -> None:
    """Add the ``family`` subcommand."""
    p = subparsers.add_parser(
        "family", help="any sampler on a randomized problem family, as error ratios to the paper's scheme",
        description="Run methods x NFE on a randomized family of exact-score problems (VP, VE, CLD, BDM, dense and "
                    "time-varying diffusions; Gaussian mixtures), measure the error against a DOP853 reference on "
                    f"robust start points, and report each method's error ÷ {PAPER}'s per NFE and diffusion kind.")
    p.add_argument("--methods", nargs="+", metavar="NAME",
                   help=f"methods: {PAPER}, any of gd.METHODS, or a gddim_auto variant ({', '.join(AUTO_VARIANTS)}); "
                        f"{PAPER} is always run (default: {PAPER} and every gddim_auto variant)")
    p.add_argument("--problems", type=int, metavar="N", help=f"number of problems (default {DEFAULT_PROBLEMS})")
    p.add_argument("--first-seed", type=int, metavar="S", help=f"seed of the first problem (default {FIRST_SEED})")
    p.add_argument("--nfe", nargs="+", type=int, metavar="N",
                   help=f"evaluations per sample (default {' '.join(map(str, DEFAULT_NFE))})")
    p.add_argument("--points", type=int, metavar="B", help=f"start points per problem (default {DEFAULT_POINTS})")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK['problems']} problems (one per kind), NFE {' '.join(map(str, QUICK['nfe']))}, "
                        f"{QUICK['points']} points: about a minute")
    p.add_argument("--out", default="gddim-family", metavar="DIR",
                   help="output folder for family.json and family.md (default ./gddim-family)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--write-readme", metavar="PATH",
                   help="also write the report, headed by this command and its run time, to PATH (e.g. validation/FAMILY.md)")
    add_execution_arguments(p)
    p.set_defaults(func=run_command)


def config_from_args(args) -> FamilyConfig:
    """The checked :class:`FamilyConfig` of the options (``--quick`` first, explicit options win)."""
    base = dict(QUICK) if args.quick else {}
    explicit = {"problems": args.problems, "first_seed": args.first_seed, "points": args.points,
                "nfe": None if args.nfe is None else tuple(args.nfe),
                "methods": None if args.methods is None else tuple(n for m in args.methods for n in m.split(",") if n)}
    base.update({k: v for k, v in explicit.items() if v is not None})
    return FamilyConfig(**base).checked()


def _progress_printer(enabled: bool) -> Callable[[int, int, TaskOutcome], None] | None:
    if not enabled:
        return None
    started = time.perf_counter()

    def show(done: int, total: int, outcome: TaskOutcome) -> None:
        if outcome.key[0] == "reference" or done == total:
            spent = time.perf_counter() - started
            print(f"family: {done}/{total} tasks, {spent:.0f} s, about {spent * (total - done) / done:.0f} s left",
                  file=sys.stderr, flush=True)
    return show


def run_command(args) -> int:
    """The ``family`` subcommand: check the options, run, write ``family.json`` and ``family.md`` to ``--out``."""
    from . import files
    from .cli import PACKAGE_DIRS, PROG
    from .family_report import render_report, summarize

    try:
        config = config_from_args(args)
        out = files.check_writable_folder(args.out, forbidden=PACKAGE_DIRS)
        readme = None if args.write_readme is None else files.check_writable_file(args.write_readme)
        execution = execution_from_args(args)
    except (ValueError, ImportError) as err:
        print(f"{PROG} family: error: {err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        results = run_family(config, _progress_printer(not args.no_progress), **execution)
    except ConnectionError as err:
        print(f"{PROG} family: error: {err}", file=sys.stderr)
        return 2
    summary = summarize(results)
    markdown = render_report(results, summary)
    print(markdown)
    files.write_text_atomic(out / "family.json", json.dumps({**results, "summary": summary}, indent=1))
    files.write_text_atomic(out / "family.md", markdown)
    print(f"wrote family.json, family.md to {out}")
    if readme is not None:
        command = shlex.join([PROG, *getattr(args, "argv", ["family"])])
        header = (f"# The randomized problem family\n\nRegenerated by `{command}` "
                  f"({time.perf_counter() - started:.0f} s on this machine).\n\n")
        files.write_text_atomic(readme, header + markdown)
        print(f"wrote {readme}")
    return 0
