r"""Problem-aware gDDIM plans: :func:`auto_plan` and ``method="gddim_auto"``.

For a diffusion, an NFE and :class:`~gddim_numerics.statistics.DataStatistics`, :func:`auto_plan`
returns the :class:`~gddim_numerics.GDDIM` plan with the smallest objective it finds. Each member
``c`` of :data:`ENSEMBLE` is a Gaussian model of the data: the data's own Gaussian (``c = 1``) and
mixtures of ever sharper components :math:`N(\mu', \Sigma_0 + c(S - \Sigma_0))` with the data's
overall moments, down to nearly Dirac components. With :math:`e_c` a candidate's
:func:`~gddim_numerics.surrogate.surrogate_error` (the exact pathwise error) on member ``c`` and
:math:`e^{paper}_c` that of the paper's scheme on the base grid, the objective is

.. math:: J = \max_c \log\big(e_c / e^{paper}_c\big),

the worst improvement factor over the paper's scheme across the ensemble: :math:`J < 0` means better
than the paper's scheme on every member, and a candidate that gains on the data's Gaussian by
losing on sharp components (where multi-modal data spend the end of their trajectories) is not
picked. Three stages:

1. **Scheme pick.** Every scheme of :data:`FAMILY` (form × order 2–4 × corrector, extrapolation in
   ``t``, and the ε schemes extrapolated in the diffusion's log-SNR; the paper's scheme, ε form of order 3
   in ``t``, among them) on the grid uniform in
   :math:`t^{1/2}` (:data:`BASE_POWER`), ranked by :math:`J`; with ``optimize_grid=False`` the
   best-ranked scheme that passes the guard (below) is the plan. With ``optimize_grid=True`` stages 2
   and 3 run for each of the :data:`GRID_SCHEMES` best-ranked schemes that pass, and the (scheme, grid)
   of least :math:`J` is the plan (ties: the better-ranked scheme); the ranking on the base grid does
   not predict which scheme gains most from its own grid.
2. **First step** (``optimize_grid=True``, diffusions with one mode): the scheme with one large
   first step to the log-SNR levels :data:`FIRST_LOG_SNR`, kept if better. Not for multi-mode
   diffusions (BDM): one noise level cannot place the step for modes whose noise levels differ by
   orders of magnitude, and there such a step left an error that did not fall with NFE (131× the
   paper's scheme at NFE 50 on a 12×12 BDM mixture that the surrogate on the power spectrum scored
   as a gain).
3. **Grid optimisation** (``optimize_grid=True``) for the scheme: the ``N - 1`` interior times
   (after the first step, if stage 2 kept one) follow the monotone 3-parameter family :func:`warped_grid` (a power grid of exponent ``p`` in a
   warped step index :math:`w(u) = \int_0^u e^{\beta_1P_1 + \beta_2P_2} / \int_0^1 e^{\beta_1P_1 + \beta_2P_2}`,
   :math:`P_i` Legendre polynomials on ``[0, 1]``); Nelder–Mead on :math:`J` within
   the bounds :data:`BOUNDS` (``p`` in ``[1, 12]``, :math:`|\beta_i| \le 3`: first and last points
   fixed, steps monotone, neighbouring step ratios bounded), at most ``budget`` evaluations per scheme.
   A grid wins only if it beats the scheme's own base grid (or first step).

**Guard.** The surrogate is exact on Gaussians and blind to the switching of a trajectory between
the components of multi-modal data, which polynomial extrapolation of the data prediction follows
worse than the paper's ε extrapolation. Every candidate of every stage other than the paper's
scheme on the base grid must therefore, on each switching probe of :data:`PROBES`
(:class:`~gddim_numerics.probe.ProbeSet`: the data's top principal direction split into two sharp
components with the data's moments, run with its exact score against a DOP853 reference), have at
most :data:`PROBE_MARGIN` times (no loss) the error of the paper's scheme on the base grid. Multi-mode
diffusions scored per mode (BDM) are probed in one mode per frequency band
(:data:`~.auto_search.PROBE_BANDS`).

Stage 1 takes the best-ranked schemes that pass (the paper's scheme on the base grid always does); a first step or
grid that fails is not taken (Nelder–Mead sees it as :math:`+\infty`). ``plan.auto_report["rejected"]``
lists the schemes ranked above the pick that failed.

Candidates whose Dirac perturbation gain (:func:`~gddim_numerics.plans.dirac_gain`) exceeds :data:`MAX_GAIN` are
skipped, so every plan stays exact on Dirac data to rounding.

Without statistics :meth:`DataStatistics.default` (standardised data) is used. Plans are cached per
diffusion (bounded, :data:`CACHE_SIZE`) by (NFE, grid, options, statistics fingerprint); a failed
build caches nothing. The search's one-time work for a statistics fingerprint (modal problems, exact-flow
matrices, the probes and their reference solves) is kept too (:meth:`~.auto_search.Search.keep`, bounded by
:data:`~.auto_search.SEARCH_CACHE_SIZE`), so plans for other NFEs or options start from it, with the same result.

BDM with many modes: the surrogate of a candidate is evaluated on at most :data:`MAX_MODES`
representative modes (quantiles of the DCT frequency; every data mode is scored with the tables of
its group's representative), since a plan's cost grows with the number of modes. Data problems of
one mode whose covariances agree to :data:`~.auto_search.GROUP_TOL` are scored as one weighted
representative (:func:`~gddim_numerics.modal.group_problems`), since the search's cost grows with the
number of problems (an image: one per pixel for VP and CLD).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numpy.polynomial.legendre import legval

from .auto_search import ENSEMBLE, MAX_GAIN, MAX_MODES, PROBES, SEARCH_DENSE, Search
from .diffusion import LinearDiffusion
from .grids import check_grid, time_grid
from .samplers.gddim import GDDIM
from .statistics import DataStatistics

__all__ = ["ENSEMBLE", "FAMILY", "GRID_SCHEMES", "MAX_GAIN", "MAX_MODES", "PAPER", "PROBES",
           "PROBE_MARGIN", "SEARCH_DENSE", "Scheme", "auto_plan", "build_auto", "choose", "default_statistics",
           "warped_grid"]

#: Grid of stage 1 (uniform in t^(1/2), the paper's grid).
BASE_POWER = 2.0
#: Ends of a large first step tried in stage 1b (log-SNR levels, ``time_grid(first_log_snr=...)``).
FIRST_LOG_SNR = (-6.0, -4.0, -2.0)
#: Bounds of (log p, beta_1, beta_2) of :func:`warped_grid`.
BOUNDS = ((0.0, np.log(12.0)), (-3.0, 3.0), (-3.0, 3.0))
#: Plans kept per diffusion.
CACHE_SIZE = 32
#: A candidate other than the paper's scheme on its own grid is kept only if its error on every switching probe is
#: at most this multiple of the paper's scheme's (no loss on any probe; ties pass).
PROBE_MARGIN = 1.0
#: Stage 2 optimises the grid of this many best-ranked schemes that pass the guard; the best result is the plan.
GRID_SCHEMES = 3


@dataclass(frozen=True)
class Scheme:
    """One scheme of the family: options of :class:`~gddim_numerics.GDDIM`."""

    form: str
    order: int
    corrector: bool
    variable: str = "t"

    def options(self) -> dict:
        return dict(form=self.form, order=self.order, corrector=self.corrector, variable=self.variable)


PAPER = Scheme("eps", 3, False, "t")
#: The scheme family of stage 1: ε and data forms extrapolated in ``t``, and the ε forms extrapolated in log-SNR.
FAMILY = (PAPER, Scheme("eps", 2, False), Scheme("eps", 3, True), Scheme("eps", 4, True),
          Scheme("data", 2, False), Scheme("data", 3, False), Scheme("data", 2, True), Scheme("data", 3, True),
          Scheme("data", 4, True),
          Scheme("eps", 2, False, "log_snr"), Scheme("eps", 3, False, "log_snr"), Scheme("eps", 3, True, "log_snr"),
          Scheme("eps", 4, True, "log_snr"))


def warped_grid(diffusion: LinearDiffusion, n_steps: int, params, t_start: float, t_end: float,
                head: float | None = None) -> np.ndarray:
    r"""Grid of ``n_steps`` steps: power grid of exponent ``exp(params[0])`` in the warped index (module docstring).

    ``head``: one first step from ``t_start`` to ``head``, the other ``n_steps - 1`` warped from ``head``.
    """
    if head is not None:
        rest = warped_grid(diffusion, n_steps - 1, params, head, t_end)
        return check_grid(diffusion, np.concatenate([[t_start], rest]))
    log_p, b1, b2 = (float(v) for v in params)
    u = np.linspace(0.0, 1.0, 8 * n_steps + 1)
    dens = np.exp(legval(2 * u - 1, [0.0, b1, b2]))
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]))])
    w = (cum / cum[-1])[::8]
    p = np.exp(log_p)
    a, b = t_start ** (1 / p), t_end ** (1 / p)
    ts = (a + w * (b - a)) ** p
    ts[0], ts[-1] = t_start, t_end
    return check_grid(diffusion, ts)


def _check_nfe(nfe) -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < 1:
        raise ValueError(f"nfe must be an integer >= 1; got {nfe!r}")
    return int(nfe)


def default_statistics(diffusion: LinearDiffusion) -> DataStatistics:
    """:meth:`DataStatistics.default` on the smallest event the diffusion's layout admits (every copy is alike)."""
    from .bases import DCTBasis

    if isinstance(diffusion.basis, DCTBasis):
        ev = tuple(diffusion.basis.shape)
    else:
        ev = (diffusion.block_size,)
    return DataStatistics.default(diffusion, ev)


def choose(statistics: DataStatistics, nfe: int, ts=None, optimize_grid: bool = True, budget: int = 20,
           t_start: float | None = None, t_end: float | None = None) -> tuple[Scheme, np.ndarray, dict]:
    """The scheme and grid :func:`auto_plan` builds, and a report ``{"error", "pick_error", "paper_error", ...}``.

    The search's one-time work is kept on the diffusion after a successful choice (:meth:`Search.keep`), so a
    choice for another NFE, grid or option on the same statistics starts from it.
    """
    search = Search.take(statistics)
    with search.choice():
        result = _choose(search, nfe, ts, optimize_grid, budget, t_start, t_end)
    search.keep()
    return result


def _choose(search: Search, nfe, ts, optimize_grid, budget, t_start, t_end) -> tuple[Scheme, np.ndarray, dict]:
    diffusion = search.diffusion
    t0 = diffusion.t_start if t_start is None else float(t_start)
    t1 = diffusion.t_end if t_end is None else float(t_end)
    base = time_grid(diffusion, nfe, "power", power=BASE_POWER, t_start=t0, t_end=t1) if ts is None else ts
    reference = search.member_errors(PAPER, base)
    search.reference = reference if np.all(np.isfinite(reference)) else None
    scores = {s: search.error(s, base) for s in FAMILY if not (s.corrector and nfe < 2)}
    if not any(np.isfinite(v[0]) for v in scores.values()):
        raise ValueError(f"no scheme of the family can serve nfe={nfe} on this grid (every candidate failed to "
                         "build or amplifies rounding beyond MAX_GAIN)")
    paper = scores.get(PAPER, (np.inf, np.inf))
    paper_probe = search.probe_errors(PAPER, base) if PAPER in scores else None

    def safe(scheme, grid) -> bool:
        """The guard: on every switching probe (every probed problem, every :data:`PROBES` entry) at most
        PROBE_MARGIN times the error of the paper's scheme on the base grid."""
        if paper_probe is None or (scheme == PAPER and grid is base):
            return True
        return bool(np.all(search.probe_errors(scheme, grid) <= PROBE_MARGIN * paper_probe))

    ranked = sorted((s for s in scores if np.isfinite(scores[s][0])), key=lambda s: scores[s][0])
    n_refined = GRID_SCHEMES if ts is None and optimize_grid else 1  # without grid stages only the pick matters
    passing = []
    for scheme in ranked:  # the guard is evaluated only as far as it is needed
        if len(passing) == n_refined:
            break
        if safe(scheme, base):
            passing.append(scheme)
    if not passing:  # the paper's scheme is not a candidate itself (unbuilt or beyond MAX_GAIN): least excess
        def excess(scheme):
            return float(np.max(search.probe_errors(scheme, base) / (PROBE_MARGIN * paper_probe)))

        passing = [min(ranked, key=excess)]
    best = passing[0]
    report = dict(pick_error=scores[best][1], paper_error=paper[1], pick_objective=scores[best][0],
                  paper_objective=paper[0], evaluations=len(scores),
                  rejected=[s.options() for s in ranked[:ranked.index(best)]])
    if ts is None and optimize_grid:
        refined = [(scheme, *_refine_grid(search, scheme, scores[scheme], base, nfe, t0, t1, budget, safe))
                   for scheme in passing]
        best, grid, obj, err, details = min(refined, key=lambda r: r[2])  # first minimum: ties to the better-ranked
        report["evaluations"] += sum(r[4].pop("evaluations") for r in refined)
        report.update(details)
    else:
        grid, (obj, err) = base, scores[best]
    report.update(error=err, objective=obj, scheme=best.options(), exact_split=search.problems.exact,
                  representative_modes=search.search_diffusion is not diffusion)
    return best, grid, report


def _refine_grid(search: Search, scheme: Scheme, score, base, nfe, t0, t1, budget, safe):
    """Stages 1b and 2 for one scheme: ``(grid, objective, error, details)``, the base grid if nothing beats it."""
    diffusion = search.diffusion
    grid, head = base, None
    obj, err = score
    details: dict = {"evaluations": 0}
    if nfe >= 3 and diffusion.n_modes == 1:  # stage 1b: a large first step
        for level in FIRST_LOG_SNR:
            try:
                cand_ts = time_grid(diffusion, nfe, "power", power=BASE_POWER, t_start=t0, t_end=t1, first_log_snr=level)
            except ValueError:
                continue
            cand, cand_err = search.error(scheme, cand_ts)
            details["evaluations"] += 1
            if cand < obj and safe(scheme, cand_ts):
                grid, head, obj, err = cand_ts, float(cand_ts[1]), cand, cand_err
                details["first_log_snr"] = level
    if nfe >= 2 + (head is not None):
        start = np.array([np.log(BASE_POWER), 0.0, 0.0])
        lo, hi = np.array(BOUNDS).T
        cache: dict = {}

        def objective(x):
            """The log surrogate error; ``inf`` for a grid that would win but fails the guard."""
            x = np.clip(x, lo, hi)
            key = tuple(np.round(x, 6))
            if key not in cache:
                cand_grid = warped_grid(diffusion, nfe, x, t0, t1, head)
                cand, cand_err = search.error(scheme, cand_grid)
                cache[key] = (cand if cand >= obj or safe(scheme, cand_grid) else np.inf, cand_err)
            return cache[key][0]

        from scipy.optimize import minimize  # keeps the package import light

        simplex = start + np.vstack([np.zeros(3), np.diag([0.6, 1.0, 1.0])])
        res = minimize(objective, start, method="Nelder-Mead",
                       options=dict(maxfev=budget, initial_simplex=simplex, xatol=1e-3, fatol=1e-3))
        x = np.clip(res.x, lo, hi)
        cand = objective(x)
        if cand < obj:
            grid, obj, err = warped_grid(diffusion, nfe, x, t0, t1, head), cand, cache[tuple(np.round(x, 6))][1]
            details["grid_params"] = dict(power=float(np.exp(x[0])), beta1=float(x[1]), beta2=float(x[2]))
        details["evaluations"] += len(cache)
    return grid, obj, err, details


def auto_plan(diffusion: LinearDiffusion, nfe: int, statistics: DataStatistics | None = None, *, ts=None,
              optimize_grid: bool = True, output: str = "eps_R", budget: int = 20,
              t_start: float | None = None, t_end: float | None = None) -> GDDIM:
    """The most accurate gDDIM plan for ``diffusion``, ``nfe`` evaluations and ``statistics`` (module docstring).

    Parameters
    ----------
    diffusion : LinearDiffusion
    nfe : int
        Network evaluations (= grid steps).
    statistics : DataStatistics, optional
        Mean and covariance of the data; default :func:`default_statistics` (standardised data).
    ts : array, optional
        A grid of ``nfe`` steps: then only the scheme is chosen.
    optimize_grid : bool
        Stage 2 (grid optimisation); ``False`` only picks the scheme on the base grid.
    output : str
        The network's output type (the plan converts it; the choice does not depend on it).
    budget : int
        Most surrogate evaluations of the grid optimisation of each scheme (:data:`GRID_SCHEMES`).
    t_start, t_end : float, optional
        Ends of the grid (default: the diffusion's).

    Returns
    -------
    GDDIM
        The plan; ``plan.auto_report`` holds the surrogate errors of the choice, of the best
        stage-1 pick and of the paper's scheme on the base grid.
    """
    if not isinstance(diffusion, LinearDiffusion):
        raise TypeError(f"diffusion must be a LinearDiffusion; got {type(diffusion).__name__}")
    nfe = _check_nfe(nfe)
    if statistics is None:
        statistics = default_statistics(diffusion)
    if not isinstance(statistics, DataStatistics):
        raise TypeError(f"statistics must be a DataStatistics or None; got {type(statistics).__name__}")
    if statistics.diffusion is not diffusion:
        raise ValueError("statistics were made for another diffusion object; build them with this diffusion")
    if ts is not None:
        ts = check_grid(diffusion, ts)
        if len(ts) - 1 != nfe:
            raise ValueError(f"ts has {len(ts) - 1} steps; nfe={nfe} needs {nfe}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"budget must be an integer >= 1; got {budget!r}")
    # the ends as floats, so that the defaults and the same times given explicitly share one cache entry
    t_start = diffusion.t_start if t_start is None else float(t_start)
    t_end = diffusion.t_end if t_end is None else float(t_end)
    key = (nfe, None if ts is None else ts.tobytes(), bool(optimize_grid), int(budget), t_start, t_end,
           statistics.fingerprint)
    cache = diffusion.__dict__.setdefault("_auto_cache", OrderedDict())
    if key in cache:
        cache.move_to_end(key)
        scheme, grid, report = cache[key]
    else:
        scheme, grid, report = choose(statistics, nfe, ts, optimize_grid, int(budget), t_start, t_end)
        cache[key] = (scheme, grid, report)
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
    plan = GDDIM(diffusion, grid, output=output, **scheme.options())
    object.__setattr__(plan, "auto_report", dict(report))  # frozen plan: an attribute beside its fields
    return plan


def build_auto(diffusion: LinearDiffusion, ts, nfe: int | None = None, statistics=None, **options) -> GDDIM:
    """``build`` of the registered method ``"gddim_auto"``: :func:`auto_plan` (``ts``: the user's grid or ``None``)."""
    n = len(ts) - 1 if ts is not None else nfe
    return auto_plan(diffusion, n, statistics, ts=ts, **options)
