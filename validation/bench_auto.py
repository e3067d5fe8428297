r"""The ``auto`` section of ``gddim-numerics bench``: the cold cost of choosing a ``gddim_auto`` plan.

For VP, CLD and BDM on 32×32 images at NFE 10 and 50 (``--quick``: 8×8 at NFE 5), with :class:`~gddim_numerics.DataStatistics`
estimated from :data:`N_IMAGES` synthetic smooth images (a stationary Gaussian random field with mean
0.3 and a ``1 / (1 + 40|f|^2)`` spectrum, fixed seed; per-pixel variances for VP and CLD, per-frequency
for BDM, as ``from_samples`` estimates them for images this size), every build uses a fresh
diffusion (an empty plan cache):

* ``full``: :func:`~gddim_numerics.auto_plan` with the grid optimised (the default);
* ``pick``: ``optimize_grid=False`` (the scheme family on the base grid only);
* baseline, measured in the same run: the cold build of the paper's plan (ε form, order 3, the
  :math:`t^{1/2}` grid) on a fresh diffusion; ``full ÷ paper`` is the cost of the choice in units of
  one plan build.

Targets of issue 12: ``full`` ≤ 2 s and ``pick`` ≤ 0.2 s for these diffusions at NFE ≤ 50. Each time
is the median of :data:`AUTO_REPEATS` cold builds (``--quick``: one), the three kinds interleaved so that a
load spike spreads over all of them; the fastest and slowest build are reported beside it, since single
builds of seconds vary by ~15% on a shared machine, and the 1-minute load is recorded.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable

import numpy as np

import gddim_numerics as gd
from gddim_numerics.auto import auto_plan

from . import report

#: Images the statistics are estimated from.
N_IMAGES = 256
#: Targets (seconds) of the full choice and of the family pick.
FULL_TARGET_S, PICK_TARGET_S = 2.0, 0.2
#: NFE of the section, and of ``--quick`` (8×8 images).
AUTO_NFE, QUICK_AUTO_NFE = (10, 50), (5,)
#: Cold builds per case (``--quick``: one); the median is reported.
AUTO_REPEATS = 3


def smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` stationary Gaussian random images ``(n, size, size)``: mean 0.3, spectrum ``1 / (1 + 40|f|^2)``."""
    rng = np.random.default_rng(seed)
    freq = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2
    noise = rng.standard_normal((n, size, size)) + 1j * rng.standard_normal((n, size, size))
    return 0.3 + np.real(np.fft.ifft2(noise / (1 + 40 * freq)))


def problems(size: int) -> dict[str, Callable[[], tuple[gd.LinearDiffusion, gd.DataStatistics]]]:
    """Factories of (fresh diffusion, its statistics) per diffusion name."""
    images = smooth_images(N_IMAGES, size)
    positions = np.stack([images, np.zeros_like(images)], axis=-1)  # CLD: velocities 0

    def vp():
        d = gd.VPSDE.linear()
        return d, gd.DataStatistics.from_samples(d, images.reshape(N_IMAGES, -1), layout="modes")

    def cld():
        d = gd.CLD()
        return d, gd.DataStatistics.from_samples(d, positions.reshape(N_IMAGES, -1, 2), layout="modes")

    def bdm():
        d = gd.BDM((size, size))
        return d, gd.DataStatistics.from_samples(d, images, layout="modes")

    return {"vp": vp, "cld": cld, f"bdm{size}": bdm}


def timed_choice(factory, nfe: int, optimize_grid: bool) -> tuple[float, dict]:
    """Seconds of one cold :func:`auto_plan` (statistics built beforehand, not timed) and its report."""
    diffusion, statistics = factory()
    start = time.perf_counter()
    plan = auto_plan(diffusion, nfe, statistics, optimize_grid=optimize_grid)
    return time.perf_counter() - start, plan.auto_report


def timed_paper_plan(factory, nfe: int) -> float:
    """Seconds of one cold build of the paper's plan (ε, q = 3, power-2 grid) on a fresh diffusion."""
    diffusion, _ = factory()
    start = time.perf_counter()
    gd.GDDIM(diffusion, gd.time_grid(diffusion, nfe, "power", power=2.0), order=3).tables  # noqa: B018
    return time.perf_counter() - start


def auto_cost(config, progress: Callable[[str], None]) -> dict:
    """The section: every diffusion × NFE, full choice, pick, and the paper-plan baseline."""
    size, nfes = (8, QUICK_AUTO_NFE) if config.quick else (32, AUTO_NFE)
    repeats = 1 if config.quick else AUTO_REPEATS
    factories = problems(size)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for factory in factories.values():  # warm-up (imports, module caches), not timed
            timed_choice(factory, 2, False)
        results = []
        for name, factory in factories.items():
            for nfe in nfes:
                runs: dict[str, list[float]] = {"paper": [], "full": [], "pick": []}
                for _ in range(repeats):  # interleaved: a load spike spreads over all three
                    runs["paper"].append(timed_paper_plan(factory, nfe))
                    seconds, full_report = timed_choice(factory, nfe, True)
                    runs["full"].append(seconds)
                    runs["pick"].append(timed_choice(factory, nfe, False)[0])
                full, pick, paper = (float(np.median(runs[k])) for k in ("full", "pick", "paper"))
                results.append({"diffusion": name, "nfe": nfe, "full_s": full, "pick_s": pick, "paper_plan_s": paper,
                                "runs_s": runs, "evaluations": full_report["evaluations"],
                                "scheme": full_report["scheme"],
                                "meets_full": full <= FULL_TARGET_S, "meets_pick": pick <= PICK_TARGET_S})
                progress(f"auto {name} NFE {nfe}: full {full:.2f} s, pick {pick:.3f} s, paper plan {paper:.3f} s "
                         f"(medians of {repeats})")
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"status": "ok", "results": results, "image_size": size, "images": N_IMAGES, "repeats": repeats,
            "load_average": load, "seconds": time.perf_counter() - start}


def auto_table(section: dict) -> report.Table:
    """Cold cost of gddim_auto per diffusion and NFE, with the targets."""
    def spread(r, kind, digits):
        runs = r["runs_s"][kind]
        return f" ({min(runs):.{digits}f}–{max(runs):.{digits}f})" if len(runs) > 1 else ""

    rows = tuple((r["diffusion"], str(r["nfe"]),
                  f"{r['full_s']:.2f}" + (" ✓" if r["meets_full"] else " ✗") + spread(r, "full", 2),
                  f"{r['pick_s']:.3f}" + (" ✓" if r["meets_pick"] else " ✗") + spread(r, "pick", 3),
                  f"{r['paper_plan_s']:.3f}", f"{r['full_s'] / r['paper_plan_s']:.0f}", str(r["evaluations"]))
                 for r in section["results"])
    size, repeats = section["image_size"], section["repeats"]
    return report.Table(
        "gddim_auto cold cost",
        (f"statistics from {section['images']} synthetic smooth {size}×{size} images (per-pixel / per-frequency "
         f"variances); fresh diffusion per build; median of {repeats} cold build{'s' if repeats > 1 else ''} each"
         + (" (fastest–slowest in brackets)." if repeats > 1 else "."),
         f"targets: full ≤ {FULL_TARGET_S:g} s, pick ≤ {PICK_TARGET_S:g} s; paper plan = cold build of ε q=3 on the "
         f"power-2 grid (baseline in the same run); 1-minute load {section['load_average']}."),
        ("diffusion", "NFE", "full s", "pick s", "paper plan s", "full ÷ paper plan", "surrogate evaluations"), rows)
