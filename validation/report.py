"""Reports of a validation study: Markdown tables (printed and saved), JSON and log-log PNG plots.

The tables are GitHub Markdown with aligned columns, so the same text reads well on a terminal and
in ``validation/README.md``; the plots are drawn by :mod:`.plots` and the files written by :mod:`.files`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .analysis import PAPER_SAMPLER, TUNED_SAMPLER

DATA_SHORT = {"gaussian": "gauss", "mixture": "mix", "dirac": "dirac"}


@dataclass(frozen=True)
class Table:
    """A titled table with explanatory notes (what is measured, units, how to read it)."""

    title: str
    notes: tuple[str, ...]
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def render(table: Table) -> str:
    """The table as aligned GitHub Markdown, preceded by its title and notes."""
    widths = [max(len(row[i]) for row in (table.header, *table.rows)) for i in range(len(table.header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    notes = "".join(f"{n}\n\n" for n in table.notes)
    body = "\n".join([line(table.header), rule, *(line(r) for r in table.rows)])
    return f"### {table.title}\n\n{notes}{body}\n"


# ------------------------------------------------------------------------------------ cell formats
def fmt_error(error: float | None, stderr: float | None = None, status: str = "ok") -> str:
    """``1.2e-03``, ``1.2e-03 ± 4e-04`` for Monte Carlo errors, ``diverged`` for NaN/Inf runs."""
    if status == "diverged" or error is None:
        return "diverged"
    text = f"{error:.1e}" + (f" ± {stderr:.0e}" if stderr is not None else "")
    return text if status == "ok" else text + " (stopped)"


def _approx(value: float | None, unit: str = "") -> str:
    """`` (≈ 1700)``: an extrapolated value to two significant digits, or nothing."""
    return "" if value is None else f" (≈ {float(f'{value:.2g}'):g}{unit})"


def fmt_nfe(reach: dict) -> str:
    """An NFE-to-target entry: ``37``, ``≤ 5``, ``> 200 (≈ 1700)`` (extrapolated), ``> 200 (fit: > 2000)``
    (the fitted order reaches the target only beyond the extrapolation limit), ``n/r``."""
    n, bound = reach["nfe"], reach["bound"]
    if bound == "unresolved":
        return "n/r"
    text = {"=": f"{n:.0f}", "<=": f"≤ {n:g}", ">": f"> {n:g}"}[bound]
    if "extrapolation_limit" in reach:
        return text + f" (fit: > {reach['extrapolation_limit']:g})"
    return text + _approx(reach.get("extrapolated"))


def fmt_speedup(ratio: dict | None) -> str:
    """``12.3×``, ``≥ 4.0×`` (lower bound), ``≤ 0.5×`` (upper bound) or ``n/a``; `` (≈ 33×)`` if extrapolated."""
    if ratio is None:
        return "n/a"
    low, high = ratio["low"], ratio["high"]
    if low is not None and high is not None and math.isclose(low, high):
        text = f"{low:.1f}×"
    elif low is not None:
        text = f"≥ {low:.1f}×"
    else:
        text = f"≤ {high:.1f}×" if high is not None else "n/a"
    return text + _approx(ratio["extrapolated"], "×")


def fmt_order(fit: dict) -> str:
    """A fitted order and its NFE range, ``2.01 (50–200)``, or ``n/a`` when the data do not resolve it."""
    if fit["order"] is None:
        return "n/a"
    lo, hi = fit["nfe_range"]
    return f"{fit['order']:.2f} ({lo:g}–{hi:g})"


def fmt_theory(order: float | str) -> str:
    """A theoretical order: ``2`` or a word such as ``varies``."""
    return order if isinstance(order, str) else f"{order:g}"


def fmt_switch(fraction: float | None, n_paths: int) -> str:
    """A mode-switch fraction as ``3/64 (4.7%)``; ``0/64``; ``n/a`` for a diverged run."""
    if fraction is None:
        return "n/a"
    count = round(fraction * n_paths)
    return f"{count}/{n_paths}" + (f" ({100 * fraction:.1f}%)" if count else "")


def fmt_ratio(ratio: float | None) -> str:
    """An error ratio with three significant digits, or ``n/a``."""
    return "n/a" if ratio is None else f"{ratio:.3g}"


def settings_label(options: dict) -> str:
    """A tuned setting in a few words: ``data q5+PEC, var t, power 2.5 grid, first step to log-SNR -6``."""
    grid = dict(options["grid"])
    kind = grid.pop("kind")
    first = grid.pop("first_log_snr", None)
    params = ", ".join(f"{k} {v:g}" for k, v in grid.items())
    corrector = "+PEC" if options["corrector"] else ""
    text = (f"{options['form']} q{options['order']}{corrector}, var {options['variable']}, {kind} grid"
            + (f" ({params})" if params else ""))
    return text + ("" if first is None else f", first step to log-SNR {first:g}")


# ------------------------------------------------------------------------------------ tables
def _problem_title(results: dict, diffusion: str, kind: str) -> str:
    p = results["problems"][diffusion]
    return f"{p['title']}; {p['data'][kind]}"


def _grid_samplers(results: dict, series: dict) -> list[str]:
    return [s for s in series if not results["samplers"][s]["adaptive"]]


def error_table(results: dict, diffusion: str, kind: str) -> Table:
    """Error vs NFE of every grid-based sampler on one problem."""
    block = results["results"][diffusion][kind]["samplers"]
    nfe = results["meta"]["options"]["nfe"]
    t_end = results["problems"][diffusion]["t_end"]
    notes = ("Entries: relative error (dimensionless) of the samples at t_end, by the error measure of the row "
             "(defined at the top); `± s`: Monte Carlo standard error.",)
    if kind == "mixture":
        points = results["results"][diffusion][kind].get("start_points")
        if points is not None:
            kept = points["n_paths"] - points["excluded"]
            notes += (f"Pathwise errors over the {kept} robust start points of {points['n_paths']} "
                      f"({points['excluded']} excluded: their reference end component is not robust; see the "
                      "definition at the top).",)
        notes += ("At low NFE a mixture error can be dominated by the few trajectories that end in another "
                  "component than the exact flow's (the mode-switch table), hence plateaus and jumps.",)
    if TUNED_SAMPLER in block:
        notes += (f"`{TUNED_SAMPLER}` runs on its own grid (and form, order, corrector) per NFE — see the settings "
                  "under the tuned ÷ paper table; every other row uses the common grid.",)
    rows = []
    for name in _grid_samplers(results, block):
        s = block[name]
        se = s["stderr"] or [None] * len(s["error"])
        rows.append((name, s["metric"], *(fmt_error(e, d, st) for e, d, st in zip(s["error"], se, s["status"]))))
    return Table(f"Relative error at t_end = {t_end:g} vs NFE — {_problem_title(results, diffusion, kind)}",
                 notes, ("sampler", "error measure", *(f"NFE {n}" for n in nfe)), tuple(rows))


def mode_switch_table(results: dict, diffusion: str) -> Table | None:
    """Mode switches of every deterministic grid sampler on the mixture problem of one diffusion, per NFE."""
    block = results["results"][diffusion].get("mixture")
    if block is None:
        return None
    grid = _grid_samplers(results, block["samplers"])
    series = {n: s for n, s in block["samplers"].items() if "mode_switch" in s and n in grid}
    if not series:
        return None
    n_paths = _robust_paths(results, diffusion)
    nfe = results["meta"]["options"]["nfe"]
    rows = tuple((name, *(fmt_switch(f, n_paths) for f in s["mode_switch"])) for name, s in series.items())
    notes = (f"Mode switches: {results['meta']['mode_switch']}.",
             f"Entries: switched trajectories / {n_paths} robust start points (the same start points as the pathwise "
             "error above); deterministic samplers only (a stochastic sampler has no trajectory to compare).")
    return Table(f"Mode switches vs NFE — {_problem_title(results, diffusion, 'mixture')}", notes,
                 ("sampler", *(f"NFE {n}" for n in nfe)), rows)


def _robust_paths(results: dict, diffusion: str) -> int:
    """The number of robust start points of the mixture problem of ``diffusion`` (all start points otherwise)."""
    points = results["results"][diffusion].get("mixture", {}).get("start_points")
    n_paths = results["meta"]["options"]["n_paths"]
    return n_paths if points is None else n_paths - points["excluded"]


def rk45_table(results: dict, diffusion: str) -> Table | None:
    """Adaptive RK45: measured NFE and pathwise error (and mode switches on the mixture) per tolerance."""
    rows = []
    n_paths = _robust_paths(results, diffusion)
    for kind, block in results["results"][diffusion].items():
        s = block["samplers"].get("rk45")
        if s is not None:
            switches = s.get("mode_switch")
            rows += [(kind, f"{tol:g}", str(n), fmt_error(e, None, st),
                      "—" if switches is None else fmt_switch(switches[i], n_paths))
                     for i, (tol, n, e, st) in enumerate(zip(s["rtol"], s["nfe"], s["error"], s["status"]))]
    if not rows:
        return None
    return Table(f"RK45 (adaptive) on the probability flow — {results['problems'][diffusion]['title']}",
                 ("NFE is measured (evaluations of the exact score); error measure `pathwise` as above; mode switches "
                  "(mixture only) as defined above.",),
                 ("data", "rtol = atol", "NFE", "relative error", "mode switches"), tuple(rows))


def order_table(results: dict) -> Table:
    """Fitted convergence order of every sampler on every problem, next to its theoretical order."""
    columns = [(d, k) for d, by_kind in results["results"].items() for k in by_kind]
    rows = []
    for name, info in results["samplers"].items():
        cells = []
        for d, k in columns:
            s = results["results"][d][k]["samplers"].get(name)
            cell = "—" if s is None else fmt_order(s["fitted_order"])
            if s is not None and name == TUNED_SAMPLER and _tuned_scheme_changes(results, d, s["fitted_order"]):
                cell += " †"
            cells.append(cell)
        rows.append((name, info["label"], fmt_theory(info["theoretical_order"]), *cells))
    notes = (f"Fitted order: {results['meta']['order_fit']}; the error measure is the one of the error tables.",
             "Theory: global order in the step size (in law for stochastic samplers). `n/a`: the errors do not "
             "reach an asymptotic range of enough NFE (pre-asymptotic, noisy, or exact to round-off); `—`: sampler "
             "not defined for that diffusion.",)
    notes += _tuned_order_note(results)
    header = ("sampler", "description", "theory", *(f"{d} {DATA_SHORT[k]}" for d, k in columns))
    return Table("Convergence order: fitted slope of log error vs log NFE", notes, header, tuple(rows))


def _tuned_labels(results: dict, diffusion: str, nfes) -> list[str]:
    """The distinct ``gddim_auto`` settings (as :func:`settings_label`) at ``nfes`` on ``diffusion``."""
    by_nfe = results.get("tuned_settings", {}).get(diffusion, {})
    return list(dict.fromkeys(settings_label(by_nfe[str(n)]) for n in nfes if str(n) in by_nfe))


def _tuned_scheme_changes(results: dict, diffusion: str, fit: dict) -> bool:
    """Whether ``gddim_auto`` switches scheme inside the NFE range of its order fit."""
    if fit["nfe_range"] is None:
        return False
    lo, hi = fit["nfe_range"]
    return len(_tuned_labels(results, diffusion, [n for n in results["meta"]["options"]["nfe"] if lo <= n <= hi])) > 1


def _tuned_order_note(results: dict) -> tuple[str, ...]:
    """Why :data:`TUNED_SAMPLER`'s theory is `varies`, and what `†` marks."""
    if not results.get("tuned_settings"):
        return ()
    return (f"`{TUNED_SAMPLER}`: theory `varies` — its scheme (form, order, corrector, grid) changes with the NFE "
            "(settings under the tuned ÷ paper table). A fitted slope over one fixed scheme is that scheme's observed "
            "order; `†`: the scheme changes inside the fitted NFE range, so the slope mixes schemes and is not an "
            "order.",)


def dirac_table(results: dict) -> Table | None:
    """Dirac exactness: largest error over NFE of the gDDIM family (K = R) and the K = L ablation."""
    exact = results["dirac_exactness"]
    if not exact:
        return None
    names = list(dict.fromkeys(s for by_sampler in exact.values() for s in by_sampler))
    rows = [(name, results["samplers"][name]["label"],
             *(fmt_error(exact[d].get(name)) if name in exact[d] else "—" for d in exact)) for name in names]
    nfe = results["meta"]["options"]["nfe"]
    notes = (f"Largest relative error over NFE ∈ {{{', '.join(map(str, nfe))}}} on a single data point "
             "(deterministic: pathwise; stochastic: exact distance in law).",
             "gDDIM with K = R is exact for any step size here (docs/math §3.2) — every order, stochastic or not, and "
             f"`{TUNED_SAMPLER}` (data or ε form, any extrapolation variable, with or without the PEC corrector): "
             "expect round-off, ~1e-12. K = L equals K = R on VP and BDM (L = R there) and is not exact on CLD.")
    return Table("Dirac exactness of gDDIM (K = R) vs K = L", notes, ("sampler", "description", *exact), tuple(rows))


def target_table(results: dict, kind: str) -> Table | None:
    """NFE to reach the target error per sampler and diffusion, and the speed-up of the best gDDIM."""
    diffusions = [d for d, by_kind in results["results"].items() if kind in by_kind]
    if not diffusions:
        return None
    target = results["meta"]["options"]["target"]
    names = list(dict.fromkeys(s for d in diffusions for s in results["results"][d][kind]["samplers"]))
    tuned = any(TUNED_SAMPLER in results["results"][d][kind]["samplers"] for d in diffusions)
    rows = []
    for name in names:
        cells = []
        for d in diffusions:
            block = results["results"][d][kind]
            s = block["samplers"].get(name)
            if s is None:
                cells += ["—"] * (3 if tuned else 2)
            else:
                cells += [fmt_nfe(s["nfe_to_target"]), _speedup_cell(block["speedup"], name)]
                if tuned:
                    cells.append(_speedup_cell(block["speedup"], name, tuned=True))
        rows.append((name, *cells))
    refs = ", ".join(f"{d}: {results['results'][d][kind]['speedup']['gddim'] or 'none reaches it'}" for d in diffusions)
    notes = (f"NFE at which the relative error first reaches {target:g} (log-log interpolation between the "
             "measured NFE; RK45: between its tolerances). `≤ n`: already at the smallest NFE; `> n`: not "
             "reached; `n/r`: Monte Carlo error e ± s not resolved (e - 2s <= target < e + 2s).",
             "`(≈ n)`: extrapolated with the fitted order (convergence-order table) — an estimate, not a "
             "measurement.",
             "`speed-up of paper`: of the paper's gDDIM over the sampler = NFE(sampler) / NFE(best of "
             f"gddim_q1..q3) — reference per diffusion: {refs}. Bounds (≥, ≤) where an NFE is only bounded; below 1× "
             "the sampler needs fewer NFE.",
             "Deterministic samplers are judged pathwise, stochastic ones in distribution (see the error tables).")
    if tuned:
        notes += (f"`speed-up of tuned`: of `{TUNED_SAMPLER}` over the sampler = NFE(sampler) / "
                  f"NFE({TUNED_SAMPLER}) (`n/a` where {TUNED_SAMPLER} does not reach the target).",)
    heads = ("NFE", "speed-up of paper", "speed-up of tuned") if tuned else ("NFE", "speed-up of paper")
    header = ("sampler", *(f"{d} {h}" for d in diffusions for h in heads))
    title = f"NFE to reach relative error {target:g} — {kind} data"
    return Table(title, notes, header, tuple(rows))


def _speedup_cell(speedup: dict, name: str, tuned: bool = False) -> str:
    reference = TUNED_SAMPLER if tuned else speedup["gddim"]
    ratios = speedup.get("tuned_ratios", {}) if tuned else speedup["ratios"]
    if name == reference and (ratios or not tuned):
        return "1× (ref.)"
    return fmt_speedup(ratios.get(name))


def tuned_table(results: dict) -> Table | None:
    """gddim_auto ÷ the paper's scheme on the mixture problems at NFE 10 and 20, against the targets."""
    block = results.get("tuned_vs_paper")
    if not block or not block["rows"]:
        return None
    rows = []
    for r in block["rows"]:
        target, n_paths = r["target"], _robust_paths(results, r["diffusion"])
        verdict = "n/a" if r["met"] is None else ("✓" if r["met"] else "✗")
        rows.append((r["diffusion"], str(r["nfe"]), fmt_error(r[TUNED_SAMPLER]), fmt_error(r[PAPER_SAMPLER]),
                     fmt_ratio(r[f"ratio_{PAPER_SAMPLER}"]), "n/a" if target is None else f"≤ 1/{round(1 / target)}",
                     verdict, fmt_error(r["gddim_q3"]), fmt_ratio(r["ratio_gddim_q3"]),
                     " / ".join("n/a" if r[f"{n}_mode_switch"] is None else str(round(r[f"{n}_mode_switch"] * n_paths))
                                for n in (TUNED_SAMPLER, PAPER_SAMPLER, "gddim_q3")) + f" of {n_paths}"))
    notes = ("Pathwise relative error on each diffusion's mixture problem (the error tables above) of "
             f"`{TUNED_SAMPLER}` ({results['samplers'][TUNED_SAMPLER]['label']}) divided by that of the paper's scheme "
             f"`{PAPER_SAMPLER}` (ε form, Lagrange extrapolation in t, order 2, grid uniform in √t) and of `gddim_q3` "
             f"(the same, order 3). Target: ÷ {PAPER_SAMPLER} ≤ 1/3 on VP, ≤ 1/5 on CLD, ≤ 1/2 on BDM; "
             "✓ met, ✗ missed.",
             f"Mode switches: trajectories of {TUNED_SAMPLER} / {PAPER_SAMPLER} / gddim_q3, out of the robust start "
             "points, that end in another mixture component than the reference (definition above); at low NFE a few "
             "switches dominate the error.")
    note = results["samplers"][TUNED_SAMPLER].get("note")
    notes += (note,) if note else ()
    notes += _tuned_settings_note(results, [r["nfe"] for r in block["rows"]])
    header = ("diffusion", "NFE", TUNED_SAMPLER, PAPER_SAMPLER, f"÷ {PAPER_SAMPLER}", "target", "met",
              "gddim_q3", "÷ gddim_q3", "mode switches")
    return Table("Tuned defaults ÷ the paper's scheme — mixture data", notes, header, tuple(rows))


def _tuned_settings_note(results: dict, nfes: Sequence[int]) -> tuple[str, ...]:
    settings = results.get("tuned_settings")
    if not settings:
        return ()
    parts = [f"{d} NFE {n}: {settings_label(by_nfe[str(n)])}" for d, by_nfe in settings.items()
             for n in dict.fromkeys(nfes) if str(n) in by_nfe]
    return ("Tuned settings at these NFE, of gddim_auto with its default statistics (the rows above give it each "
            "problem's own mean and covariance, so their plans can differ) — " + "; ".join(parts) + ".",) if parts else ()


def all_tables(results: dict) -> list[Table]:
    """Every table of the report, in reading order."""
    tables = []
    for diffusion, by_kind in results["results"].items():
        for kind in by_kind:
            tables.append(error_table(results, diffusion, kind))
            if kind == "mixture":
                tables.append(mode_switch_table(results, diffusion))
        tables.append(rk45_table(results, diffusion))
    tables += [order_table(results), dirac_table(results), tuned_table(results)]
    tables += [target_table(results, kind) for kind in ("mixture", "gaussian")]
    return [t for t in tables if t is not None]


def render_report(results: dict) -> str:
    """The whole report as Markdown: a summary of the setup, then every table."""
    meta = results["meta"]
    opts = meta["options"]
    lines = ["## gDDIM validation study", "",
             f"gddim-numerics {meta['version']}; seed {opts['seed']}; {opts['n_paths']} start points per pathwise "
             f"error, {opts['n_mc']} samples per Monte Carlo error; run time {meta['elapsed_s']:.0f} s"
             + (" (--quick)" if opts["quick"] else "") + ".", "",
             "Problems (exact scores; samplers start from the exact marginal at t_start and stop at t_end, on a "
             f"grid uniform in t^(1/{opts['grid_power']:g})"
             + (f"; `{TUNED_SAMPLER}` on its own grid" if TUNED_SAMPLER in results["samplers"] else "") + "):", ""]
    lines += [f"- **{d}**: {p['title']}; t_start = {p['t_start']:.6g}, t_end = {p['t_end']:g}"
              for d, p in results["problems"].items()]
    lines += ["", "Error measures (all relative, at t_end):", ""]
    lines += [f"- `{name}`: {text}." for name, text in meta["metrics"].items()]
    if "mode_switch" in meta:
        lines += ["", f"Mode switches (mixture, deterministic samplers): {meta['mode_switch']}."]
    if "robust_start_points" in meta:
        lines += ["", f"Robust start points: {meta['robust_start_points']}."]
    lines += ["", *(render(t) for t in all_tables(results))]
    failures = results.get("failures", [])
    if failures:
        lines += ["### Failed tasks", "", "These tasks raised; their rows are missing above.", ""]
        lines += [f"- `{f['task']}`: {f['error'].strip().splitlines()[-1]}" for f in failures]
    return "\n".join(lines)


def readme_text(results: dict, command: str) -> str:
    """``validation/README.md``: how long the run takes, how to regenerate it and the snapshot, then the report."""
    elapsed = results["meta"]["elapsed_s"]
    head = ["# Validation: the latest default run", "",
            "Generated by the `validate` command. Try the quick run first (NFE 5, 10, 20; fewer start points and "
            "samples; about 30 s):", "",
            "```bash", "gddim-numerics validate --quick --out /tmp/gq", "```", "",
            f"This report is the default run, which took {elapsed:.0f} s here (about 1.5 minutes of CPU time, so "
            "about as long on 2 idle cores; it prints one line per finished section). Regenerate it with", "",
            "```bash", command, "```", "",
            "and the snapshot that `tests/test_validate_cli.py` compares a fresh `--quick` run against with", "",
            "```bash", "gddim-numerics validate --quick --no-plots --no-progress --out /tmp/gq && "
            "cp /tmp/gq/results.json tests/data/validate_quick.json", "```", "",
            "Every number below compares a sampler against an exact answer (closed-form Gaussian flows and laws,",
            "or a DOP853 reference at rtol 1e-10); the JSON and log-log plots of the same run are written to the",
            "output folder (`--out`).", "", ""]
    return "\n".join(head) + render_report(results)
