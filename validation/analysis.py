r"""Analysis of the validation study's error series: fitted orders, NFE to a target error, speed-ups.

Everything here works on plain numbers (one error per NFE) and is independent of how they were
measured.

Fitted order
    The slope of :math:`-\log(\text{error})` vs :math:`\log(\text{NFE})`, fitted only over the
    asymptotic range: the largest NFE (at least :data:`ORDER_FIT_MIN_POINTS`) whose local slopes
    between neighbouring NFE agree with the fitted slope to within :data:`ORDER_SLOPE_SPREAD`
    (relative, absolute below order 1). Errors at round-off (below :data:`ORDER_FIT_FLOOR`) or within
    3 Monte Carlo standard errors of 0 are not used.

NFE to reach a target error
    Interpolated in log-log between measured NFE; when the target is not reached it is
    extrapolated with the fitted order, but never beyond :data:`EXTRAPOLATION_LIMIT` times the
    largest NFE run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ORDER_FIT_FLOOR = 1e-10
ORDER_FIT_MIN_POINTS = 3
ORDER_SLOPE_SPREAD = 0.2
EXTRAPOLATION_LIMIT = 10.0

#: The paper's deterministic gDDIM variants; the best of them is the reference of the speed-up table.
GDDIM_PAPER = ("gddim_q1", "gddim_q2", "gddim_q3")
PAPER_SAMPLER = "gddim_q2"
#: The study's sampler with measured defaults (the one name to change when it is replaced).
TUNED_SAMPLER = "gddim_auto"
#: Issue-7 targets: TUNED_SAMPLER error / paper-scheme (gddim_q2) error on the mixture problems at NFE 10 and 20.
TUNED_TARGETS = {"vp": 1 / 3, "cld": 1 / 5, "bdm": 1 / 2}
TUNED_TARGET_NFE = (10, 20)

ORDER_FIT_TEXT = (f"slope of -log(error) vs log(NFE) by least squares over the asymptotic range: the largest NFE (at "
                  f"least {ORDER_FIT_MIN_POINTS}) whose local slopes between neighbouring NFE all lie within "
                  f"{ORDER_SLOPE_SPREAD:g} x max(1, slope) of the fitted slope; errors below {ORDER_FIT_FLOOR:g} "
                  "(round-off) or within 3 standard errors (Monte Carlo) are not used")


def fit_order(nfe: Sequence[float], error: Sequence[float], stderr: Sequence[float | None] | None = None,
              floor: float = ORDER_FIT_FLOOR, min_points: int = ORDER_FIT_MIN_POINTS,
              spread: float = ORDER_SLOPE_SPREAD) -> dict:
    r"""Convergence order over the asymptotic range of an error series.

    With the usable points sorted by NFE (error finite, above ``floor`` and, for Monte Carlo
    errors, above 3 standard errors), the range is the longest run of the largest NFE, with at
    least ``min_points`` points, whose local slopes
    :math:`s_i = -\Delta\log e / \Delta\log n` all satisfy :math:`|s_i - p| \le` ``spread``
    :math:`\cdot\max(1, |p|)` for the least-squares slope :math:`p` over the run.

    Returns
    -------
    dict
        ``order`` (``None`` when no run of ``min_points`` points qualifies: the data are not in the
        asymptotic range or not resolved), ``log_constant`` (``log C`` of the fitted
        :math:`\text{error} \approx C\,\text{NFE}^{-\text{order}}`), ``nfe_range`` (``[lo, hi]``
        of the points used, or ``None``) and ``n_points``.
    """
    se = [None] * len(nfe) if stderr is None else list(stderr)
    usable = [(n, e) for n, e, s in zip(nfe, error, se)
              if e is not None and math.isfinite(e) and e > floor and (s is None or e > 3 * s)]
    usable = sorted(dict(usable).items())  # one point per NFE (the last one measured)
    best = None
    for start in range(len(usable) - min_points, -1, -1):
        logn, loge = np.log([u[0] for u in usable[start:]]), np.log([u[1] for u in usable[start:]])
        slope, intercept = np.polyfit(logn, loge, 1)
        local = -np.diff(loge) / np.diff(logn)
        if np.any(np.abs(local + slope) > spread * max(1.0, abs(slope))):
            break
        best = {"order": float(-slope), "log_constant": float(intercept),
                "nfe_range": [usable[start][0], usable[-1][0]], "n_points": len(usable) - start}
    return best or {"order": None, "log_constant": None, "nfe_range": None, "n_points": 0}


def nfe_to_target(nfe: Sequence[float], error: Sequence[float], target: float,
                  stderr: Sequence[float | None] | None = None) -> dict:
    """NFE at which the error first reaches ``target``, interpolated linearly in log-log.

    A Monte Carlo error ``e ± s`` counts as above the target when ``e - 2s > target`` and as
    below when ``e + 2s <= target``; in between the crossing is not resolved.

    Returns
    -------
    dict
        ``nfe`` and ``bound``: ``"="`` (interpolated), ``"<="`` (already reached at the smallest
        NFE), ``">"`` (not reached; ``nfe`` is the largest tried) or ``"unresolved"`` (``nfe`` is
        ``None``).
    """
    se = [None] * len(nfe) if stderr is None else list(stderr)
    points = sorted((n, e, s or 0.0) for n, e, s in zip(nfe, error, se) if e is not None and math.isfinite(e))
    for i, (n, e, s) in enumerate(points):
        if e - 2 * s > target:
            continue
        if e + 2 * s > target:
            return {"nfe": None, "bound": "unresolved"}
        if i == 0:
            return {"nfe": float(n), "bound": "<="}
        n0, e0, _ = points[i - 1]
        frac = math.log(target / e0) / math.log(e / e0)
        return {"nfe": float(math.exp(math.log(n0) + frac * math.log(n / n0))), "bound": "="}
    return {"nfe": float(max(nfe)), "bound": ">"}


def extrapolate_nfe(fit: dict, target: float, largest_nfe: float, limit: float = EXTRAPOLATION_LIMIT) -> float | None:
    """NFE at which the fitted power law (:func:`fit_order`) reaches ``target``.

    ``None`` without a fit, or when that NFE lies beyond ``limit`` times ``largest_nfe`` (the
    largest NFE run): a power law is not trusted that far outside the data.
    """
    if fit["order"] is None or fit["order"] <= 0:
        return None
    value = math.exp((fit["log_constant"] - math.log(target)) / fit["order"])
    return float(value) if value <= limit * largest_nfe else None


def _nfe_interval(reach: dict) -> tuple[float, float]:
    """``[lo, hi]`` of the true NFE-to-target given a :func:`nfe_to_target` result (``nan`` if unknown)."""
    n, bound = reach["nfe"], reach["bound"]
    return {"=": (n, n), "<=": (0.0, n), ">": (n, math.inf)}.get(bound, (math.nan, math.nan))


def speedup(baseline: dict, gddim: dict) -> dict:
    """NFE ratio baseline / gDDIM to reach the target from two :func:`nfe_to_target` results.

    Returns ``{"low", "high"}``: measured bounds (``None``: unbounded or unknown), and
    ``extrapolated``: the ratio of point estimates when one of them is only extrapolated
    (``"extrapolated"`` key of a ``">"`` result), else ``None``.
    """
    b_lo, b_hi = _nfe_interval(baseline)
    g_lo, g_hi = _nfe_interval(gddim)
    low = b_lo / g_hi if g_hi > 0 else math.nan
    high = b_hi / g_lo if g_lo > 0 else math.inf
    b_point, g_point = _point_estimate(baseline), _point_estimate(gddim)
    measured = baseline["bound"] == gddim["bound"] == "="
    extrapolated = None if measured or b_point is None or g_point is None else b_point / g_point
    return {"low": _json_float(low) if low > 0 else None, "high": _json_float(high) if math.isfinite(high) else None,
            "extrapolated": extrapolated}


def _point_estimate(reach: dict) -> float | None:
    return reach["nfe"] if reach["bound"] == "=" else reach.get("extrapolated")


def _json_float(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def series_dict(metric: str, runs: Sequence, target: float, tolerances: Sequence[float] | None) -> dict:
    """One sampler's error series on one problem, with its fitted order and NFE to ``target``.

    ``runs`` are measurements with ``nfe``, ``error``, ``stderr``, ``status`` and ``mode_switch``
    attributes (:class:`~gddim_numerics.validation.measures.Measurement`).
    """
    nfe = [r.nfe for r in runs]
    errors = [r.error for r in runs]
    stderr = [r.stderr for r in runs] if metric == "moments" else None
    fit = fit_order(nfe, errors, stderr)
    reach = nfe_to_target(nfe, errors, target, stderr)
    if reach["bound"] == ">":
        reach["extrapolated"] = extrapolate_nfe(fit, target, max(nfe))
        if reach["extrapolated"] is None and fit["order"] is not None and fit["order"] > 0:
            reach["extrapolation_limit"] = EXTRAPOLATION_LIMIT * max(nfe)  # the fit reaches it only beyond
    out = {
        "metric": metric,
        "nfe": nfe,
        "error": [_json_float(e) for e in errors],
        "stderr": stderr,
        "status": [r.status for r in runs],
        "fitted_order": fit,
        "nfe_to_target": reach,
    }
    if tolerances is not None:
        out["rtol"] = list(tolerances)
    if metric == "pathwise" and any(r.mode_switch is not None for r in runs):
        out["mode_switch"] = [r.mode_switch for r in runs]
    return out


def _best_gddim(series: dict) -> str | None:
    """The paper's deterministic gDDIM variant that reaches the target with the fewest NFE."""
    candidates = [s for s in GDDIM_PAPER if s in series and series[s]["nfe_to_target"]["bound"] in ("=", "<=")]
    return min(candidates, key=lambda s: series[s]["nfe_to_target"]["nfe"], default=None)


def _ratios(series: dict, reference: str | None) -> dict:
    if reference is None or reference not in series:
        return {}
    ref = series[reference]["nfe_to_target"]
    return {s: speedup(v["nfe_to_target"], ref) for s, v in series.items() if s != reference}


def speedups(series: dict) -> dict:
    """NFE ratios of every sampler to the best paper gDDIM (``gddim``, ``ratios``) and to ``gddim_auto``
    (``tuned_ratios``; empty when it did not run or does not reach the target)."""
    best = _best_gddim(series)
    tuned_reaches = TUNED_SAMPLER in series and series[TUNED_SAMPLER]["nfe_to_target"]["bound"] in ("=", "<=")
    return {"gddim": best, "ratios": _ratios(series, best),
            "tuned_ratios": _ratios(series, TUNED_SAMPLER) if tuned_reaches else {}}


def tuned_vs_paper(results: dict, nfes: Sequence[int] = TUNED_TARGET_NFE) -> list[dict]:
    """``gddim_auto`` error ÷ the paper's scheme's error on the mixture problems, against :data:`TUNED_TARGETS`.

    The paper's scheme is ``gddim_q2`` (ε form, extrapolation in t, order 2, grid uniform in √t);
    ``gddim_q3`` is shown as well. One row per diffusion and NFE of ``nfes`` that the study ran with
    both samplers; ``met`` is ``ratio_q2 <= target`` (``None`` without a target or a ratio).
    """
    rows = []
    for diffusion, by_kind in results.items():
        series = by_kind.get("mixture", {}).get("samplers", {})
        if TUNED_SAMPLER not in series or PAPER_SAMPLER not in series:
            continue
        for nfe in nfes:
            if nfe not in series[TUNED_SAMPLER]["nfe"] or nfe not in series[PAPER_SAMPLER]["nfe"]:
                continue
            row = {"diffusion": diffusion, "nfe": nfe}
            for name in (TUNED_SAMPLER, PAPER_SAMPLER, "gddim_q3"):
                s = series.get(name)
                i = None if s is None else s["nfe"].index(nfe)
                row[name] = None if s is None else s["error"][i]
                row[f"{name}_mode_switch"] = None if s is None else s.get("mode_switch", [None] * len(s["nfe"]))[i]
            tuned = row[TUNED_SAMPLER]
            for name in (PAPER_SAMPLER, "gddim_q3"):
                ok = tuned is not None and row[name] not in (None, 0.0)
                row[f"ratio_{name}"] = _json_float(tuned / row[name]) if ok else None
            target = TUNED_TARGETS.get(diffusion)
            row["target"] = target
            ratio = row[f"ratio_{PAPER_SAMPLER}"]
            row["met"] = None if target is None or ratio is None else bool(ratio <= target)
            rows.append(row)
    return rows




def dirac_exactness(results: dict) -> dict:
    """Largest error over NFE of every gDDIM-family sampler on the Dirac problem, per diffusion.

    With ``K = R`` gDDIM is exact for any step size on a single data point (also in law, for
    every lambda); ``K = L`` is not where ``L != R`` (CLD).
    """
    out = {}
    for diffusion, by_kind in results.items():
        if "dirac" not in by_kind:
            continue
        series = by_kind["dirac"]["samplers"]
        out[diffusion] = {s: _json_float(max(math.inf if e is None else e for e in v["error"]))
                          for s, v in series.items() if s.startswith("gddim")}  # includes gddim_auto
    return out
