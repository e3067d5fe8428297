"""Summary and Markdown report of the problem-family benchmark (:mod:`.family`).

Every method's error is divided by ``paper_q3``'s on the same problem, NFE and robust start
points. Per method and NFE (and per diffusion kind) the report gives the median and the worst
ratio and the number of losses (ratio > 1); a method that raised or returned a non-finite state
where the paper's scheme gave a finite error counts as a loss and is listed as ``failed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .report import Table, render


def _value(x) -> float:
    """A stored error as a float (``None`` = the method raised -> nan; ``"inf"``/``"nan"`` strings)."""
    return float("nan") if x is None else float(x)


def ratio_stats(errors: Sequence, paper: Sequence) -> dict:
    """Median, worst and number of losses of ``errors / paper`` over problems where the paper's error is finite.

    A ratio is taken where both errors are finite and the paper's is positive; an error that is
    ``None``, ``inf`` or ``nan`` where the paper's is finite is a *failure* and counts as a loss.
    """
    ratios, failed = [], 0
    for e, p in zip(errors, paper):
        e, p = _value(e), _value(p)
        if not (math.isfinite(p) and p > 0):
            continue
        if math.isfinite(e):
            ratios.append(e / p)
        else:
            failed += 1
    r = np.asarray(ratios)
    return {"n": len(ratios) + failed, "median": float(np.median(r)) if r.size else None,
            "worst": (float("inf") if failed else (float(r.max()) if r.size else None)),
            "losses": int(np.sum(r > 1.0)) + failed, "failed": failed}


#: Issue-12 targets of a problem-aware method against the paper's scheme: no loss at NFE >= 10, and
#: median ratio <= 1/3 at NFE 10 and 20, <= 1/10 at NFE 50.
MEDIAN_TARGETS = {10: 1.0 / 3.0, 20: 1.0 / 3.0, 50: 0.1}
NO_LOSS_FROM_NFE = 10


def targets_met(nfe: Sequence[int], rows: Sequence[dict]) -> dict:
    """Per NFE whether ``rows`` (:func:`ratio_stats` per NFE) meet :data:`MEDIAN_TARGETS` and no-loss."""
    out = {}
    for n, s in zip(nfe, rows):
        checks = []
        if n >= NO_LOSS_FROM_NFE:
            checks.append(s["losses"] == 0)
        if n in MEDIAN_TARGETS:
            checks.append(s["median"] is not None and s["median"] <= MEDIAN_TARGETS[n])
        out[str(n)] = all(checks) if checks else None
    return out


def gain_stats(pick: Sequence, optimised: Sequence) -> dict:
    """Median and smallest gain ``pick / optimised`` over problems where both errors are finite and positive,
    and how many are below 1 (grid optimisation made the error larger)."""
    gains = [_value(a) / _value(b) for a, b in zip(pick, optimised)
             if math.isfinite(_value(a)) and math.isfinite(_value(b)) and _value(b) > 0]
    g = np.asarray(gains)
    return {"n": len(gains), "median": float(np.median(g)) if g.size else None,
            "smallest": float(g.min()) if g.size else None, "below_one": int(np.sum(g < 1.0))}


#: The variant that only picks from the scheme family (no grid optimisation) and the full method.
PICK, OPTIMISED = "auto_pick", "auto"


def summarize(results: dict, growth_base: str = "auto") -> dict:
    """Ratios to the paper's scheme per method x NFE, overall and per diffusion kind; exclusions.

    Also, when ``growth_base`` (the method with exact statistics) was run, every ``auto_*``
    variant's error ÷ its error (``"growth"``: what inexact statistics cost).
    """
    cfg = results["config"]
    paper, problems = cfg["paper"], results["problems"]
    out = {"overall": {}, "by_kind": {}, "median_error": {}, "targets": {}, "growth": {}, "grid_gain": {}}
    for name in cfg["methods"]:
        out["median_error"][name] = [
            _median([_value(p["errors"][name][i]) for p in problems]) for i in range(len(cfg["nfe"]))]
        if name == paper:
            continue
        out["overall"][name] = [ratio_stats([p["errors"][name][i] for p in problems],
                                            [p["errors"][paper][i] for p in problems]) for i in range(len(cfg["nfe"]))]
        out["by_kind"][name] = {
            kind: [ratio_stats([p["errors"][name][i] for p in problems if p["kind"] == kind],
                               [p["errors"][paper][i] for p in problems if p["kind"] == kind])
                   for i in range(len(cfg["nfe"]))]
            for kind in cfg["kinds"] if any(p["kind"] == kind for p in problems)}
        out["targets"][name] = targets_met(cfg["nfe"], out["overall"][name])
        if growth_base in cfg["methods"] and name.startswith(growth_base + "_") and name != PICK:
            out["growth"][name] = [ratio_stats([p["errors"][name][i] for p in problems],
                                               [p["errors"][growth_base][i] for p in problems])
                                   for i in range(len(cfg["nfe"]))]
    if PICK in cfg["methods"] and OPTIMISED in cfg["methods"]:
        for kind in ("all", *cfg["kinds"]):
            rows = [p for p in problems if kind in ("all", p["kind"])]
            if rows:
                out["grid_gain"][kind] = [gain_stats([p["errors"][PICK][i] for p in rows],
                                                     [p["errors"][OPTIMISED][i] for p in rows])
                                          for i in range(len(cfg["nfe"]))]
    excluded = [p.get("excluded", 0) for p in problems]
    changes = [_value(p.get("reference_tight_change")) for p in problems]
    finite_changes = [c for c in changes if math.isfinite(c)]
    out["exclusions"] = {"points": int(sum(p["points"] for p in problems)), "excluded": int(sum(excluded)),
                         "problems_with_exclusions": int(sum(e > 0 for e in excluded)),
                         "max_reference_tight_change": max(finite_changes) if finite_changes else None}
    return out


def _median(values: Sequence[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else None


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    return "inf" if x == float("inf") else f"{x:.{digits}g}"


def _stats_cell(s: dict) -> str:
    fail = f" ({s['failed']} failed)" if s["failed"] else ""
    return f"{_fmt(s['median'])} / {_fmt(s['worst'])} / {s['losses']} of {s['n']}{fail}"


def render_report(results: dict, summary: dict) -> str:
    """The Markdown report: ratio tables overall and per kind, median errors, exclusions, failures."""
    cfg = results["config"]
    nfe_cols = tuple(f"NFE {n}" for n in cfg["nfe"])
    paper = cfg["paper"]
    cell_note = (f"Each cell: median / worst ratio to {paper} / losses (ratio > 1) of problems; a method that "
                 "raised or returned a non-finite state counts as a loss (failed).")
    ex = summary["exclusions"]
    tables = [Table(
        f"Error ÷ {paper}, all {len(results['problems'])} problems (seeds {cfg['first_seed']}-"
        f"{cfg['first_seed'] + cfg['problems'] - 1})",
        (cell_note, "Error: relative Frobenius error at t_end against a DOP853 PF-ODE reference, robust start "
                    f"points only ({ex['excluded']} of {ex['points']} excluded)."),
        ("method", *nfe_cols),
        tuple((name, *map(_stats_cell, rows)) for name, rows in summary["overall"].items()))]
    for name, kinds in summary["by_kind"].items():
        tables.append(Table(f"{name} ÷ {paper} per diffusion kind", (cell_note,), ("kind", *nfe_cols),
                            tuple((kind, *map(_stats_cell, rows)) for kind, rows in kinds.items())))
    tables.append(Table(
        "Issue-12 targets", (f"yes = no loss to {paper} at NFE >= {NO_LOSS_FROM_NFE} and the median ratio at most "
                             + ", ".join(f"{v:.3g} at NFE {k}" for k, v in MEDIAN_TARGETS.items()) + ".",),
        ("method", *nfe_cols),
        tuple((name, *({True: "yes", False: "no", None: "-"}[v] for v in row.values()))
              for name, row in summary["targets"].items())))
    if summary["growth"]:
        tables.append(Table("Error growth from inexact statistics",
                            ("Each cell: median / worst / count > 1 of the variant's error ÷ auto's (exact statistics).",),
                            ("variant", *nfe_cols),
                            tuple((name, *map(_stats_cell, rows)) for name, rows in summary["growth"].items())))
    if summary["grid_gain"]:
        tables.append(Table(
            "Grid optimisation vs the best family pick",
            (f"Each cell: median / smallest of {PICK}'s error ÷ {OPTIMISED}'s (the gain of optimising the grid "
             "over picking a scheme on the base grid) / problems where the optimised grid was worse.",),
            ("kind", *nfe_cols),
            tuple((kind, *(f"{_fmt(g['median'])} / {_fmt(g['smallest'])} / {g['below_one']} of {g['n']}" for g in rows))
                  for kind, rows in summary["grid_gain"].items())))
    tables.append(Table("Median error per method", ("Median over problems of the relative error.",),
                        ("method", *nfe_cols),
                        tuple((name, *map(_fmt, row)) for name, row in summary["median_error"].items())))
    tables.append(Table(
        "Excluded start points", ("A start point is excluded when its reference end component changes under a "
                                  "1e-6 relative perturbation of the start point or under a tighter solve.",),
        ("points", "excluded", "problems with exclusions", "max reference change (tighter solve)"),
        ((str(ex["points"]), str(ex["excluded"]), str(ex["problems_with_exclusions"]),
          _fmt(ex["max_reference_tight_change"], 2)),)))
    text = "\n\n".join(map(render, tables))
    if results["failures"]:
        lines = [f"- seed {f['seed']} {f['method']} NFE {f['nfe']}: {f['error']}" for f in results["failures"]]
        text += f"\n\n### Failures ({len(lines)})\n\n" + "\n".join(lines)
    return text + "\n"
