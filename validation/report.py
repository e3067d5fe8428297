"""Reports of a validation study: Markdown tables (printed and saved), JSON and log-log PNG plots.

The tables are GitHub Markdown with aligned columns, so the same text reads well on a terminal and
in ``validation/README.md``. Output files are written to a staging folder beside the destination
and moved into place only when all of them were written (nothing half-written on failure).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .study import DIFFUSIONS, GDDIM_DETERMINISTIC

JSON_NAME = "results.json"
TABLES_NAME = "tables.md"
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
    """An NFE-to-target entry: ``37``, ``≤ 5``, ``> 200 (≈ 1700)`` (extrapolated), ``n/r``."""
    n, bound = reach["nfe"], reach["bound"]
    if bound == "unresolved":
        return "n/r"
    text = {"=": f"{n:.0f}", "<=": f"≤ {n:g}", ">": f"> {n:g}"}[bound]
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
    """A fitted order with one decimal, or ``n/a`` when the data do not resolve it."""
    return "n/a" if fit["order"] is None else f"{fit['order']:.2f}"


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
        notes += ("At low NFE a mixture error can be dominated by the few trajectories that end in another "
                  "component than the exact flow's (MATH.md §3.9), hence plateaus and jumps.",)
    rows = []
    for name in _grid_samplers(results, block):
        s = block[name]
        se = s["stderr"] or [None] * len(s["error"])
        rows.append((name, s["metric"], *(fmt_error(e, d, st) for e, d, st in zip(s["error"], se, s["status"]))))
    return Table(f"Relative error at t_end = {t_end:g} vs NFE — {_problem_title(results, diffusion, kind)}",
                 notes, ("sampler", "error measure", *(f"NFE {n}" for n in nfe)), tuple(rows))


def rk45_table(results: dict, diffusion: str) -> Table | None:
    """Adaptive RK45: measured NFE and pathwise error per tolerance, for every problem of one diffusion."""
    rows = []
    for kind, block in results["results"][diffusion].items():
        s = block["samplers"].get("rk45")
        if s is not None:
            rows += [(kind, f"{tol:g}", str(n), fmt_error(e, None, st))
                     for tol, n, e, st in zip(s["rtol"], s["nfe"], s["error"], s["status"])]
    if not rows:
        return None
    return Table(f"RK45 (adaptive) on the probability flow — {results['problems'][diffusion]['title']}",
                 ("NFE is measured (evaluations of the exact score); error measure `pathwise` as above.",),
                 ("data", "rtol = atol", "NFE", "relative error"), tuple(rows))


def order_table(results: dict) -> Table:
    """Fitted convergence order of every sampler on every problem, next to its theoretical order."""
    columns = [(d, k) for d, by_kind in results["results"].items() for k in by_kind]
    rows = []
    for name, info in results["samplers"].items():
        cells = []
        for d, k in columns:
            s = results["results"][d][k]["samplers"].get(name)
            cells.append("—" if s is None else fmt_order(s["fitted_order"]))
        rows.append((name, info["label"], f"{info['theoretical_order']:g}", *cells))
    notes = (f"Fitted order: {results['meta']['order_fit']}; the error measure is the one of the error tables.",
             "Theory: global order in the step size (in law for stochastic samplers). `n/a`: fewer than two NFE "
             "with a resolvable error (e.g. exact to round-off); `—`: sampler not defined for that diffusion.",
             "A fitted order below theory means the NFE range is still pre-asymptotic for that problem.")
    header = ("sampler", "description", "theory", *(f"{d} {DATA_SHORT[k]}" for d, k in columns))
    return Table("Convergence order: fitted slope of log error vs log NFE", notes, header, tuple(rows))


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
             "gDDIM with K = R is exact for any step size here (MATH.md §3.2): expect round-off, ~1e-12. "
             "K = L equals K = R on VP and BDM (L = R there) and is not exact on CLD.")
    return Table("Dirac exactness of gDDIM (K = R) vs K = L", notes, ("sampler", "description", *exact), tuple(rows))


def target_table(results: dict, kind: str) -> Table | None:
    """NFE to reach the target error per sampler and diffusion, and the speed-up of the best gDDIM."""
    diffusions = [d for d, by_kind in results["results"].items() if kind in by_kind]
    if not diffusions:
        return None
    target = results["meta"]["options"]["target"]
    names = list(dict.fromkeys(s for d in diffusions for s in results["results"][d][kind]["samplers"]))
    rows = []
    for name in names:
        cells = []
        for d in diffusions:
            block = results["results"][d][kind]
            s = block["samplers"].get(name)
            if s is None:
                cells += ["—", "—"]
            else:
                cells += [fmt_nfe(s["nfe_to_target"]), _speedup_cell(block["speedup"], name)]
        rows.append((name, *cells))
    refs = ", ".join(f"{d}: {results['results'][d][kind]['speedup']['gddim'] or 'none reaches it'}" for d in diffusions)
    notes = (f"NFE at which the relative error first reaches {target:g} (log-log interpolation between the "
             "measured NFE; RK45: between its tolerances). `≤ n`: already at the smallest NFE; `> n`: not "
             "reached; `n/r`: Monte Carlo error e ± s not resolved (e - 2s <= target < e + 2s).",
             "`(≈ n)`: extrapolated with the fitted order (convergence-order table) — an estimate, not a "
             "measurement.",
             f"Speed-up = NFE(sampler) / NFE(best deterministic gDDIM) — reference per diffusion: {refs}. "
             "Bounds (≥, ≤) where an NFE is only bounded.",
             "Deterministic samplers are judged pathwise, stochastic ones in distribution (see the error tables).")
    header = ("sampler", *(h for d in diffusions for h in (f"{d} NFE", f"{d} speed-up")))
    title = f"NFE to reach relative error {target:g} — {kind} data"
    return Table(title, notes, header, tuple(rows))


def _speedup_cell(speedup: dict, name: str) -> str:
    if name == speedup["gddim"]:
        return "1× (reference)"
    if name in GDDIM_DETERMINISTIC:
        return "—"
    return fmt_speedup(speedup["ratios"].get(name))


def all_tables(results: dict) -> list[Table]:
    """Every table of the report, in reading order."""
    tables = []
    for diffusion, by_kind in results["results"].items():
        tables += [error_table(results, diffusion, kind) for kind in by_kind]
        tables.append(rk45_table(results, diffusion))
    tables += [order_table(results), dirac_table(results)]
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
             f"grid uniform in t^(1/{opts['grid_power']:g})):", ""]
    lines += [f"- **{d}**: {p['title']}; t_start = {p['t_start']:.6g}, t_end = {p['t_end']:g}"
              for d, p in results["problems"].items()]
    lines += ["", "Error measures (all relative, at t_end):", ""]
    lines += [f"- `{name}`: {text}." for name, text in meta["metrics"].items()]
    lines += ["", *(render(t) for t in all_tables(results))]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ plots
def plot_errors(results: dict, diffusion: str, path: Path) -> None:
    """Log-log error vs NFE of every sampler on every problem of one diffusion (one panel per problem)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_kind = results["results"][diffusion]
    target = results["meta"]["options"]["target"]
    fig, axes = plt.subplots(1, len(by_kind), figsize=(5.2 * len(by_kind), 4.4), squeeze=False)
    tab20 = plt.get_cmap("tab20").colors
    palette = tab20[0::2] + tab20[1::2]  # ten distinct hues first, then their light variants
    colors = {name: palette[i % len(palette)] for i, name in enumerate(results["samplers"])}
    legend = {}
    for ax, (kind, block) in zip(axes[0], by_kind.items()):
        for name, s in block["samplers"].items():
            _plot_series(ax, name, s, colors[name])
        ax.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {target:g}")
        ax.set(xscale="log", yscale="log", xlabel="NFE (network evaluations)", ylabel="relative error",
               title=f"{diffusion}: {kind} data")
        ax.grid(True, which="major", alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(7, len(legend)), fontsize=8,
               frameon=False)
    fig.suptitle(DIFFUSIONS[diffusion].title, fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_series(ax, name: str, series: dict, color) -> None:
    stderr = series["stderr"] or [None] * len(series["nfe"])
    points = [(n, e, d) for n, e, d in zip(series["nfe"], series["error"], stderr) if e is not None and e > 0]
    if not points:
        return
    points.sort()
    nfe, err, se = zip(*points)
    style = "-" if name in GDDIM_DETERMINISTIC else "--"
    if series["stderr"] is not None:
        below = [min(d, 0.9 * e) for e, d in zip(err, se)]  # a log axis cannot show bars that reach 0
        ax.errorbar(nfe, err, yerr=[below, se], color=color, ls=style, marker="o", ms=3, capsize=2, label=name)
    else:
        ax.plot(nfe, err, color=color, ls=style, marker="s" if series.get("rtol") else "o", ms=3, label=name)


# ------------------------------------------------------------------------------------ files
def check_writable_folder(path: str | os.PathLike, forbidden: Sequence[Path] = ()) -> Path:
    """Resolve an output folder and prove it can be written, before any work is done.

    Raises
    ------
    ValueError
        If ``path`` is a file, lies inside one of ``forbidden`` (the installed package), or its
        nearest existing folder refuses a trial sub-folder (which is removed at once).
    """
    out = Path(path).expanduser().resolve()
    for root in forbidden:
        if out == root.resolve() or root.resolve() in out.parents:
            raise ValueError(f"output folder {out} lies inside the package ({root}); choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    anchor = next(p for p in (out, *out.parents) if p.exists())
    if not anchor.is_dir():
        raise ValueError(f"cannot create output folder {out}: {anchor} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".gddim-write-check-", dir=anchor))
    except OSError as err:
        raise ValueError(f"cannot write to output folder {out}: {err.strerror} ({anchor})") from None
    return out


def check_writable_file(path: str | os.PathLike) -> Path:
    """Resolve an output file path (its folder is checked like :func:`check_writable_folder`)."""
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise ValueError(f"{target} is a folder; give a file path")
    check_writable_folder(target.parent)
    return target


def write_outputs(results: dict, out: Path, markdown: str, plots: bool) -> list[str]:
    """Write ``results.json``, ``tables.md`` and (with ``plots``) one PNG per diffusion into ``out``.

    Everything goes to a staging folder beside ``out`` first and is moved in at the end, so a
    failure leaves ``out`` as it was. Returns the file names written.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".gddim-validation-", dir=out.parent))
    try:
        stage.chmod(_folder_mode())  # mkdtemp's private 0o700 would become the output folder's mode
        (stage / JSON_NAME).write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
        (stage / TABLES_NAME).write_text(markdown)
        if plots:
            for diffusion in results["results"]:
                plot_errors(results, diffusion, stage / f"error_vs_nfe_{diffusion}.png")
        names = sorted(p.name for p in stage.iterdir())
        if out.exists():
            for name in names:
                os.replace(stage / name, out / name)
            stage.rmdir()
        else:
            os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return names


def _folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder (no partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def readme_text(results: dict, command: str) -> str:
    """``validation/README.md``: how to regenerate it, then the report of the run."""
    head = ["# Validation: the latest default run", "",
            "Generated by the `validate` command; regenerate with", "", "```bash", command, "```", "",
            "Every number below compares a sampler against an exact answer (closed-form Gaussian flows and laws,",
            "or a DOP853 reference at rtol 1e-10); the JSON and log-log plots of the same run are written to the",
            "output folder (`--out`).", "", ""]
    return "\n".join(head) + render_report(results)

