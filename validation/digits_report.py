"""The digits demo's outputs: results from task outcomes, the markdown report, PNG grids and the error plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .digits_runs import BEST, DIVERGED_RMS, N_CHECK, PAPER, DigitsConfig
from .digits_train import DIFFUSIONS, N_HELD_OUT
from .executor import TaskOutcome

TARGET_NFE = (10, 20)
VP_RATIO_TARGET, PAPER_GAIN_TARGET, FD_TARGET = 0.5, 3.0, 0.10


def collect(outcomes: Sequence[TaskOutcome], config: DigitsConfig, real_fd: float) -> tuple[dict, dict]:
    """``(results, images)``: JSON-ready results and the kept images per ``(diffusion, sampler, nfe)``."""
    by_key = {o.key: o for o in outcomes}
    clf = by_key[("classifier",)]
    results = {"config": asdict(config), "failed": [{"task": list(o.key), "error": o.error} for o in outcomes
                                                    if not o.ok],
               "classifier": {"held_out_accuracy": clf.value.accuracy if clf.ok else None, "held_out": N_HELD_OUT,
                              "real_train_fd": real_fd, "seconds": clf.seconds},
               "diffusions": {}}
    images = {}
    for name in config.diffusions:
        net, ref = by_key[("net", name)], by_key[("reference", name)]
        rows = []
        for o in outcomes:
            if o.key[0] not in ("run", "rk45", "peer") or o.key[1] != name or not o.ok:
                continue
            kind = {"run": "library", "rk45": "rk45", "peer": "diffusers"}[o.key[0]]
            sampler = f"rk45 tol {o.key[2]:g}" if kind == "rk45" else o.key[2]
            v = o.value
            rows.append({"sampler": sampler, "kind": kind, "nfe": v["nfe"], "error": v["error"], "fd": v["fd"],
                         "options": v.get("options"), "seconds": o.seconds})
            images[(name, sampler, v["nfe"])] = v["images"]
        results["diffusions"][name] = {
            "title": DIFFUSIONS[name].title,
            "net": None if not net.ok else {k: net.value[k] for k in ("config", "loss", "cached", "path")}
            | {"seconds": net.seconds},
            "reference": None if not ref.ok else {k: ref.value[k] for k in ("nfe", "rtol", "accuracy", "rms")}
            | {"seconds": ref.seconds},
            "rows": rows}
    results["targets"] = targets(results)
    return results, images


def _value(results: dict, name: str, sampler: str, nfe: int, field: str = "error") -> float | None:
    rows = results["diffusions"].get(name, {"rows": []})["rows"]
    return next((r[field] for r in rows if r["sampler"] == sampler and r["nfe"] == nfe), None)


def best_library(results: dict, name: str, nfe: int) -> tuple[str | None, float | None]:
    """``(sampler, error)``: the most accurate of the library's :data:`BEST` methods on ``name`` at ``nfe``."""
    found = [(e, s) for s in BEST if (e := _value(results, name, s, nfe)) is not None]
    if not found:
        return None, None
    error, sampler = min(found)
    return sampler, error


def targets(results: dict) -> list[dict]:
    """The issue's targets with measured values (``met`` is ``None`` when a value is missing)."""
    out = []
    fd_nfe = results["config"]["fd_nfe"]
    for name in results["diffusions"]:
        for nfe in TARGET_NFE:
            sampler, best = best_library(results, name, nfe)
            if name == "vp":
                peers = [r["error"] for r in results["diffusions"][name]["rows"]
                         if r["kind"] == "diffusers" and r["nfe"] == nfe and r["error"] is not None]
                ratio = None if best is None or not peers else best / min(peers)
                out.append({"diffusion": name, "nfe": nfe,
                            "what": f"{sampler or 'library'} error / best diffusers error",
                            "value": ratio, "target": f"<= {VP_RATIO_TARGET}",
                            "met": None if ratio is None else ratio <= VP_RATIO_TARGET})
            else:
                paper = _value(results, name, PAPER, nfe)
                gain = None if best is None or paper is None else paper / best
                out.append({"diffusion": name, "nfe": nfe, "what": f"{PAPER} error / {sampler or 'library'} error",
                            "value": gain, "target": f">= {PAPER_GAIN_TARGET}",
                            "met": None if gain is None else gain >= PAPER_GAIN_TARGET})
        sampler = best_library(results, name, 10)[0] or BEST[0]  # no solver error (CLD): gddim_auto
        lo, hi = _value(results, name, sampler, 10, "fd"), _value(results, name, sampler, fd_nfe, "fd")
        rel = None if lo is None or hi is None else lo / hi - 1.0
        out.append({"diffusion": name, "nfe": 10, "what": f"{sampler} FD at NFE 10 / FD at NFE {fd_nfe} - 1",
                    "value": rel, "target": f"in [-{FD_TARGET}, {FD_TARGET}]",
                    "met": None if rel is None else abs(rel) <= FD_TARGET})
    return out


# ------------------------------------------------------------------------------------ markdown
def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "—"
    if not math.isfinite(x):
        return "diverged"
    return f"{x:.{digits}e}" if abs(x) < 1e-2 or abs(x) >= 1e3 else f"{x:.{digits + 1}g}"


def _table(results: dict, name: str, field: str, nfes: Sequence[int]) -> list[str]:
    rows = results["diffusions"][name]["rows"]
    samplers = list(dict.fromkeys(r["sampler"] for r in rows if r["kind"] != "rk45"))
    lines = ["| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---" * (len(nfes) + 1) + "|"]
    for s in samplers:
        lines.append(f"| {s} | " + " | ".join(_fmt(_value(results, name, s, n, field)) for n in nfes) + " |")
    for r in (r for r in rows if r["kind"] == "rk45"):
        lines.append(f"| {r['sampler']} (NFE {r['nfe']}) | {_fmt(r[field])} |" + " |" * (len(nfes) - 1))
    return lines


def _reference_line(ref: dict) -> str:
    if ref.get("rms") is not None and ref["rms"] > DIVERGED_RMS:
        return (f"reference: **the network's own probability flow diverges** (RMS of the end states "
                f"{_fmt(ref['rms'])} from {N_CHECK} start points; the data lie in [-1, 1]): no solver error exists, "
                "the samplers are compared by FD only.")
    return (f"reference: {ref.get('nfe')} evaluations, estimated accuracy {_fmt(ref.get('accuracy'))} "
            "(vs. 100× tighter tolerances).")


def render(results: dict, command: str) -> str:
    """The report (``DIGITS.md``)."""
    cfg = results["config"]
    clf = results["classifier"]
    lines = [
        "# Trained networks on scikit-learn's digits", "",
        f"Regenerated by `{command}` ({results['seconds']:.0f} s on this machine; "
        f"{results['cold_nets']} of {len(cfg['diffusions'])} networks trained, the rest from the cache).", "",
        "Score networks (an MLP with smooth sinusoidal features of t and log t, "
        f"{cfg['depth']} residual blocks of width {cfg['hidden']}, {cfg['steps']} Adam steps) are trained on the "
        f"1437 training images (8×8, scaled to [-1, 1]) for each diffusion, predicting gDDIM's ε (VP) or the data "
        "(CLD: the exact denoiser of Gaussian pixels plus the network's residual scaled by the posterior standard "
        "deviation, validation/digits_train.py's GaussianSkip; BDM). "
        f"From the same {cfg['n_samples']} prior draws every sampler is scored by",
        "- **solver error**: ‖X − X*‖_F / ‖X*‖_F against the same network's probability-flow solution X* "
        f"(DOP853, rtol {cfg['reference_rtol']:g}, float64; VP integrated in the "
        "log-SNR, validation/digits_reference.py), over the full state (CLD: positions and velocities); "
        "stochastic samplers (EM, ancestral) solve another equation and have none;",
        f"- **FD**: Fréchet distance d² in the 32 features of a digits classifier trained here (held-out accuracy "
        f"{_fmt(clf['held_out_accuracy'])}) to the {clf['held_out']} held-out digits; "
        f"{cfg['n_samples']} real training images score {_fmt(clf['real_train_fd'])}.", "",
        f"The targets' *best library method* is the more accurate of the library's named methods "
        f"{' and '.join(f'`{b}`' for b in BEST)} per diffusion and NFE (named in each target row), just as "
        "diffusers' samplers run on the VP network with the best of their timestep/solver options per NFE "
        "(validation/peers.py's search, scored the same way); `gddim_lsnr` is one fixed scheme (ε-form gDDIM, q = 3 "
        "with the evaluation-free corrector, grid uniform in log-SNR, extrapolation in log-SNR: the analogue of "
        "DPM-Solver/UniPC), chosen on the randomized exact-score family (seeds 0-59), not on these networks, and "
        f"run on VP only. `{PAPER}` is the paper's scheme of the targets. Every sampler, diffusers' included, ends "
        "at the diffusion's t_end with no extra denoising step (VP: t = 1/1000 = timestep 0; diffusers with "
        "set_alpha_to_one=False / final_sigmas_type='sigma_min'), where the reference ends.", "", "## Targets", "",
        "| diffusion | NFE | measure | value | target | met |", "|---|---|---|---|---|---|"]
    for t in results["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['diffusion']} | {t['nfe']} | {t['what']} | {_fmt(t['value'])} | {t['target']} | {met} |")
    nfes = sorted(set(cfg["nfe"]) | {cfg["fd_nfe"]})
    for name, d in results["diffusions"].items():
        ref, net = d["reference"] or {}, d["net"] or {}
        lines += ["", f"## {name.upper()}: {d['title']}", "",
                  f"Training loss (last 10% of steps) {_fmt(net.get('loss'))}; {_reference_line(ref)}", "",
                  "Solver error:", "", *_table(results, name, "error", nfes), "", "FD:", "",
                  *_table(results, name, "fd", nfes)]
        chosen = [r for r in d["rows"] if r["kind"] == "diffusers"]
        if chosen:
            lines += ["", "diffusers options chosen: " + "; ".join(f"{r['sampler']} NFE {r['nfe']}: {r['options']}"
                                                                  for r in chosen)]
    if results["failed"]:
        lines += ["", "## Failed tasks", ""] + [f"- `{f['task']}`: {f['error'].strip().splitlines()[-1]}"
                                               for f in results["failed"]]
    lines += ["", "Figures (in the output folder): `digits_errors.png` (solver error vs NFE, log-log), "
              "`digits_samples_<diffusion>.png` (16 samples per sampler and NFE)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ figures
def _montage(images: np.ndarray) -> np.ndarray:
    """16 images ``(16, 8, 8)`` as one 4×4 montage with 1-pixel gaps (NaN: shown blank)."""
    grid = np.full((4 * 9 - 1, 4 * 9 - 1), np.nan)
    for i, img in enumerate(images[:16]):
        r, c = divmod(i, 4)
        grid[9 * r:9 * r + 8, 9 * c:9 * c + 8] = img
    return grid


def plot_samples(results: dict, images: dict, real: np.ndarray, out: Path) -> list[str]:
    """One PNG per diffusion: rows are samplers, columns NFE (grey scale, display range [-1, 1])."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for name, d in results["diffusions"].items():
        samplers = list(dict.fromkeys(r["sampler"] for r in d["rows"] if r["kind"] != "rk45"))
        nfes = sorted({r["nfe"] for r in d["rows"] if r["kind"] != "rk45"})
        fig, axes = plt.subplots(len(samplers) + 1, len(nfes), figsize=(1.3 * len(nfes) + 1.5, 1.3 * len(samplers) + 1.6),
                                 squeeze=False)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
        axes[0, 0].imshow(_montage(real), cmap="gray", vmin=-1, vmax=1)
        axes[0, 0].set_ylabel("real", rotation=0, ha="right", va="center", fontsize=8)
        for i, s in enumerate(samplers, start=1):
            axes[i, 0].set_ylabel(s, rotation=0, ha="right", va="center", fontsize=8)
            for j, n in enumerate(nfes):
                if (name, s, n) in images:
                    axes[i, j].imshow(_montage(images[(name, s, n)]), cmap="gray", vmin=-1, vmax=1)
                    axes[i, j].set_title(f"NFE {n}, FD {_fmt(_value(results, name, s, n, 'fd'), 1)}", fontsize=6)
        fig.suptitle(f"{name.upper()}: samples from the same start points", fontsize=9)
        fig.tight_layout()
        fname = f"digits_samples_{name}.png"
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        names.append(fname)
    return names


def plot_errors(results: dict, out: Path) -> str:
    """Solver error against NFE, log-log, one panel per diffusion."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = results["diffusions"]
    fig, axes = plt.subplots(1, len(ds), figsize=(4.6 * len(ds), 4.0), squeeze=False)
    for ax, (name, d) in zip(axes[0], ds.items()):
        det = [r for r in d["rows"] if r["error"] is not None and math.isfinite(r["error"]) and r["error"] > 0]
        for s in dict.fromkeys(r["sampler"] for r in det if r["kind"] != "rk45"):
            pts = sorted((r["nfe"], r["error"]) for r in det if r["sampler"] == s)
            style = "--" if any(r["kind"] == "diffusers" for r in det if r["sampler"] == s) else "-"
            lw = 2.5 if s in BEST else 1.2
            ax.loglog(*zip(*pts), style, marker="o", ms=3, lw=lw, label=s)
        rk = sorted((r["nfe"], r["error"]) for r in det if r["kind"] == "rk45")
        if rk:
            ax.loglog(*zip(*rk), ":", marker="s", ms=3, color="k", label="rk45 (tolerances)")
        ticks = sorted({r["nfe"] for r in det if r["kind"] != "rk45"})
        ax.set_xticks(ticks, [str(n) for n in ticks], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_title(name.upper())
        ax.set_xlabel("NFE")
        ax.set_ylabel("solver error vs DOP853 (relative)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "digits_errors.png", dpi=110)
    plt.close(fig)
    return "digits_errors.png"
