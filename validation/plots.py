"""Log-log plots of a validation study: one figure per diffusion, one panel per data kind and error measure.

The palette is Okabe & Ito's colour-blind-safe one; every sampler has its own colour and marker,
gDDIM-family lines are solid and baselines dashed (the legend says so), and a series that prints
on top of another is drawn hollow and named above its panel.
"""

from __future__ import annotations

import math
from pathlib import Path

from .study import DIFFUSIONS

#: Okabe & Ito's colour-blind-safe palette (black first; yellow last, it is faint on white).
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
#: Two series closer than this (relative, at every NFE), or both below OVERLAP_FLOOR (round-off), overlap.
OVERLAP_RTOL, OVERLAP_FLOOR = 0.02, 1e-10


def _styles(results: dict) -> dict:
    """A fixed (colour, marker) per sampler: distinct within the deterministic and within the stochastic ones."""
    styles = {}
    for stochastic in (False, True):
        names = [n for n, info in results["samplers"].items() if info["stochastic"] == stochastic]
        for i, name in enumerate(names):
            styles[name] = (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)])
    return styles


def _overlaps(series: dict) -> dict[str, str]:
    """``{name: earlier name}`` for series equal to an earlier one within :data:`OVERLAP_RTOL`, or both at
    round-off (below :data:`OVERLAP_FLOOR`), at every NFE."""
    out: dict[str, str] = {}
    names = list(series)
    for i, name in enumerate(names):
        a = series[name]
        for other in names[:i]:
            b = series[other]
            if other not in out and a["nfe"] == b["nfe"] and all(
                    x is not None and y is not None
                    and (abs(x - y) <= OVERLAP_RTOL * max(abs(x), abs(y)) or max(x, y) < OVERLAP_FLOOR)
                    for x, y in zip(a["error"], b["error"])):
                out[name] = other
                break
    return out


def plot_errors(results: dict, diffusion: str, path: Path) -> None:
    """Log-log error vs NFE on one diffusion: one row per data kind, one panel per error measure.

    Left column: deterministic samplers (``pathwise``); right: stochastic samplers (``law`` on
    Gaussian and Dirac data, ``moments`` with Monte Carlo error bars on the mixture). A series that
    prints on top of an earlier one is drawn with large hollow markers and named in the panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    by_kind = results["results"][diffusion]
    target = results["meta"]["options"]["target"]
    styles = _styles(results)
    fig, axes = plt.subplots(len(by_kind), 2, figsize=(11, 3.3 * len(by_kind) + 0.6), squeeze=False)
    legends: list[dict] = [{}, {}]
    for row, (kind, block) in enumerate(by_kind.items()):
        for col, stochastic in enumerate((False, True)):
            ax = axes[row, col]
            series = {n: s for n, s in block["samplers"].items() if results["samplers"][n]["stochastic"] == stochastic}
            overlaps = _overlaps(series)
            for name, s in series.items():
                _plot_series(ax, name, s, styles[name], hollow=name in overlaps)
            metrics = sorted({s["metric"] for s in series.values()})
            ax.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {target:g}")
            ax.set(xscale="log", yscale="log", xlabel="NFE (network evaluations)",
                   ylabel=f"relative error ({', '.join(metrics) or '—'})",
                   title=f"{kind} data — {'stochastic' if stochastic else 'deterministic'} samplers")
            lo, hi = ax.get_xlim()
            decades = [10.0**k for k in range(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1)]
            ax.set_xticks(sorted(set(results["meta"]["options"]["nfe"]) | set(decades)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, which="major", alpha=0.3)
            if overlaps:  # name the hidden series above the panel, where no data can be
                groups: dict[str, list[str]] = {}
                for name, first in overlaps.items():
                    groups.setdefault(first, []).append(name)
                text = "; ".join(f"{', '.join(names)} ≈ {first}" for first, names in groups.items())
                ax.set_title(f"{ax.get_title()}\n(hollow, on top of another: {text})", fontsize=9)
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legends[col].setdefault(label, handle)
    for col, title in enumerate(("deterministic — pathwise error", "stochastic — error in law / of moments (± s)")):
        axes[-1, col].legend(legends[col].values(), legends[col].keys(), loc="upper center", ncol=2, fontsize=8,
                             bbox_to_anchor=(0.5, -0.22), title=f"{title}; solid: gDDIM family, dashed: baselines",
                             title_fontsize=8, frameon=False)
    fig.suptitle(DIFFUSIONS[diffusion].title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_series(ax, name: str, series: dict, style: tuple[str, str], hollow: bool = False) -> None:
    stderr = series["stderr"] or [None] * len(series["nfe"])
    points = sorted((n, e, d) for n, e, d in zip(series["nfe"], series["error"], stderr) if e is not None and e > 0)
    if not points:
        return
    nfe, err, se = zip(*points)
    color, marker = style
    line = {"color": color, "ls": "-" if name.startswith("gddim") else "--", "lw": 1.4, "marker": marker,
            "ms": 9 if hollow else 5, "mfc": "none" if hollow else color, "label": name}
    if series["stderr"] is not None:
        below = [min(d, 0.9 * e) for e, d in zip(err, se)]  # a log axis cannot show bars that reach 0
        ax.errorbar(nfe, err, yerr=[below, se], capsize=2, **line)
    else:
        ax.plot(nfe, err, **line)
