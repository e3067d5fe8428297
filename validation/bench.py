r"""``gddim-numerics bench``: plan cost, step overhead and accuracy per NFE against diffusers.

Sections (``--sections``, all by default)
-----------------------------------------
``plan``
    Wall time to build every table of a gDDIM plan (:data:`PLAN_VARIANTS`: q = 1…4, stochastic
    λ = 1, the ``K = L`` ablation and a data-form PEC plan) for VP, CLD and
    BDM 32×32 on the default power-2 grid at NFE 10, 50, 1000.

    * *cold*: a fresh diffusion object (so an empty plan cache). Its one-time set-up — what the
      diffusion computes on first use and keeps (CLD: the rotation angle table of :math:`R_t`;
      VP and BDM: nothing beyond the constructor) — is timed separately as ``setup_ms``;
      ``plan_ms`` is the plan alone and ``cold_total_ms`` the sum. Module-level caches that
      outlive a diffusion (the DCT matrices of :mod:`gddim_numerics.bases`) are warm.
    * *warm*: ``GDDIM(...)`` again on the same diffusion and grid, ``.tables`` from the cache.
    * *coefficient accuracy*: the tables against a higher-accuracy rebuild in the same run
      (:func:`rebuild_tables`: 30 instead of 20 Gauss–Legendre nodes, panel ratio 1.2 instead of
      1.5, a finer :math:`R_t` for CLD; stochastic plans by the cancellation-free route of
      :func:`stochastic_reference`), as
      ``max_k max|T_k - T*_k| / max|T*_k|`` over the state, history and noise tables ``T``.

    Medians over repeats; one untimed build of every plan at the smallest NFE first (warm-up). A
    case's cold builds stop after ``budget_s`` seconds (at least one is timed).
``overhead``
    The step-overhead benchmark of :mod:`.bench_overhead` (sampler step with a zero-cost network ÷
    the hand-written fused step, interleaved) on every backend present, several state sizes.
``peers``
    :mod:`.peers`: relative error per NFE of gDDIM next to diffusers' DDIM, DPM-Solver++ (2M, 3M),
    UniPC (2, 3) and DEIS (2, 3) with their best options, and gDDIM ÷ best peer.
``auto``
    :mod:`.bench_auto`: the cold cost of choosing a ``gddim_auto`` plan (grid optimised, and the family
    pick alone) for VP, CLD and BDM 32×32 at NFE 10 and 50, against the cold build of the paper's plan
    (medians of three interleaved cold builds).

A backend or peer that is not installed is reported as skipped with the reason. The output is a
set of Markdown tables on stdout and, with ``--out DIR``, ``bench.json`` and ``bench.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import platform
import sys
import time
import traceback
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp

import gddim_numerics as gd
from gddim_numerics.diffusion import (LinearDiffusion, MatrixDiffusion, ScalarModesDiffusion, _FactorByODE,
                                      _FactorByRotation, batched_transpose)
from gddim_numerics.plans import GDDIM, deterministic_tables, psd_factor
from gddim_numerics.quadrature import panel_nodes

from . import bench_auto, files, peers, report

PROG = "gddim-numerics"
USAGE_ERROR = 2
SECTIONS = ("plan", "overhead", "peers", "auto")

#: diffusions of the plan section (``--quick``: BDM on 8×8 images)
PLAN_DIFFUSIONS: dict[str, Callable[[], LinearDiffusion]] = {
    "vp": gd.VPSDE.linear, "cld": gd.CLD, "bdm32": lambda: gd.BDM((32, 32))}
QUICK_PLAN_DIFFUSIONS: dict[str, Callable[[], LinearDiffusion]] = {
    "vp": gd.VPSDE.linear, "cld": gd.CLD, "bdm8": lambda: gd.BDM((8, 8))}
#: plans of the plan section: ``GDDIM`` options
PLAN_VARIANTS: dict[str, dict] = {
    "q1": {"order": 1}, "q2": {"order": 2}, "q3": {"order": 3}, "q4": {"order": 4},
    "lam=1": {"lam": 1.0}, "K=L q1": {"order": 1, "factor": "L"},
    "data q3 PEC": {"form": "data", "order": 3, "corrector": True},
}
PLAN_NFE, QUICK_PLAN_NFE = (10, 50, 1000), (10,)
#: quadrature of the higher-accuracy rebuild (defaults of the plans: 20 nodes, ratio 1.5)
FINE_QUADRATURE = {"n_nodes": 30, "max_ratio": 1.2}
#: the plan-cost targets of issue 6
PLAN_TARGET = {"diffusion": "cld", "variant": "q3", "nfe": 50, "cold_ms": 50.0, "coef_rel_error": 1e-12}
OVERHEAD_SIZES = ((64, 3, 64, 64), (8, 3, 32, 32), (1, 3, 16, 16))
QUICK_OVERHEAD_SIZES = ((1, 3, 16, 16),)


@dataclass(frozen=True)
class BenchConfig:
    """Everything a bench run depends on (``--quick`` sets the small values)."""

    sections: tuple[str, ...] = SECTIONS
    quick: bool = False
    plan_nfe: tuple[int, ...] = PLAN_NFE
    nfe: tuple[int, ...] = peers.DEFAULT_NFE
    peer_names: tuple[str, ...] = peers.PEER_NAMES
    repeats: int = 5
    budget_s: float = 2.0
    overhead_sizes: tuple[tuple[int, ...], ...] = OVERHEAD_SIZES
    overhead_repeats: int = 10
    overhead_steps: int = 20
    n_states: int = peers.N_STATES
    reference_rtol: float = 1e-12
    torch_threads: int | None = 1
    plan_diffusions: tuple[str, ...] = tuple(PLAN_DIFFUSIONS)

    @classmethod
    def quick_config(cls) -> "BenchConfig":
        """A smoke test of every code path (well under 30 s on one core)."""
        return cls(quick=True, plan_nfe=QUICK_PLAN_NFE, nfe=peers.QUICK_NFE, repeats=1, budget_s=0.2,
                   overhead_sizes=QUICK_OVERHEAD_SIZES, overhead_repeats=3, overhead_steps=5, n_states=4,
                   reference_rtol=1e-9, plan_diffusions=tuple(QUICK_PLAN_DIFFUSIONS))


# ------------------------------------------------------------------------------------ plan cost
def prepare_diffusion(diffusion: LinearDiffusion) -> None:
    """Trigger the diffusion's one-time set-up (what it computes on first use and keeps)."""
    lo, hi = diffusion.time_range
    t = np.array([0.5 * (max(lo, diffusion.t_end) + hi)])
    diffusion.gddim_factor(t)
    diffusion.covariance(t)
    diffusion.transition(t, t)


def cold_build(factory: Callable[[], LinearDiffusion], ts: np.ndarray, options: dict) -> tuple[float, float, Any]:
    """``(set-up seconds, plan seconds, tables)`` with a fresh diffusion (empty plan cache)."""
    start = time.perf_counter()
    diffusion = factory()
    prepare_diffusion(diffusion)
    ready = time.perf_counter()
    tables = GDDIM(diffusion, ts, **options).tables
    return ready - start, time.perf_counter() - ready, tables


def warm_build(diffusion: LinearDiffusion, ts: np.ndarray, options: dict, repeats: int = 20) -> float:
    """Median seconds of ``GDDIM(...).tables`` when the plan is in the diffusion's cache."""
    GDDIM(diffusion, ts, **options).tables  # noqa: B018 - fill the cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        GDDIM(diffusion, ts, **options).tables  # noqa: B018
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def fine_diffusion(factory: Callable[[], LinearDiffusion]) -> LinearDiffusion:
    """A fresh diffusion whose numerical :math:`R_t` (matrix diffusions) is computed more accurately."""
    diffusion = factory()
    if isinstance(diffusion, MatrixDiffusion):
        if diffusion.block_size == 2:
            factor = _FactorByRotation(diffusion, ratio=1.01, n_nodes=30)
        else:
            factor = _FactorByODE(diffusion, rtol=1e-13, atol=1e-16)
        diffusion.__dict__["_factor"] = factor  # replaces the cached property of this instance only
    return diffusion


def _noise_integral(diffusion: ScalarModesDiffusion, s: np.ndarray, t: np.ndarray, chunk: int = 32) -> np.ndarray:
    r""":math:`I(s,t) = \int_s^t g_\tau^2/\Sigma_\tau\,d\tau` per step and mode (``k = 1``), fine GL panels."""
    out = []
    for c0 in range(0, len(s), chunk):
        tau, w = panel_nodes(s[c0:c0 + chunk], t[c0:c0 + chunk], n_nodes=30, max_ratio=1.1)
        flat = tau.ravel()
        rate = diffusion.diffusion(flat) / diffusion.covariance(flat)
        out.append(np.einsum("nm,nm...->n...", w, rate.reshape(tau.shape + rate.shape[1:])))
    return np.concatenate(out)


def _stochastic_step_ode(diffusion: LinearDiffusion, s: float, t: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    r"""``(D, P)`` of one step by a DOP853 solve (rtol 1e-13) that starts both at 0.

    :math:`D = \hat\Psi(\tau,s) - \Psi(\tau,s)` solves
    :math:`\dot D = \hat FD + \tfrac{1+\lambda^2}2GG^\top\Sigma^{-1}\Psi(\tau,s)` and
    :math:`\dot P = \hat FP + P\hat F^\top - \lambda^2GG^\top`: both are small over a small step
    and the tolerance applies to them, not to :math:`\hat\Psi \approx I`.
    """
    m, k = diffusion.shape
    n = m * k * k

    def rhs(tau, y):
        d, p = y[:n].reshape(m, k, k), y[n:].reshape(m, k, k)
        gg = diffusion.diffusion(tau)
        pull = 0.5 * (1 + lam * lam) * gg @ diffusion.covariance_inv(tau)
        f_hat = diffusion.drift(tau) + pull
        dd = f_hat @ d + pull @ diffusion.transition(tau, s)
        dp = f_hat @ p + p @ batched_transpose(f_hat) - lam * lam * gg
        return np.concatenate([dd.ravel(), dp.ravel()])

    sol = solve_ivp(rhs, (s, t), np.zeros(2 * n), method="DOP853", rtol=1e-13, atol=1e-30)
    return sol.y[:n, -1].reshape(m, k, k), sol.y[n:, -1].reshape(m, k, k)


def stochastic_reference(diffusion: LinearDiffusion, ts: np.ndarray, lam: float) -> dict:
    r"""State, history and noise of stochastic gDDIM by a cancellation-free route.

    ``k = 1``: with :math:`I = \int_s^t g^2/\Sigma` by quadrature,
    :math:`\hat\Psi - \Psi = \Psi\,\mathrm{expm1}(\tfrac{1+\lambda^2}2 I)` and
    :math:`P = -\Sigma_t\,\mathrm{expm1}(\lambda^2 I)`; otherwise :func:`_stochastic_step_ode`.
    The plan instead forms :math:`\hat\Psi - \Psi` from :math:`\hat\Psi` (closed form, or a joint ODE
    for :math:`\hat\Psi` and ``P``).
    """
    s, t = ts[:-1], ts[1:]
    psi = diffusion.transition(t, s)
    if isinstance(diffusion, ScalarModesDiffusion):
        integral = _noise_integral(diffusion, s, t)
        diff = psi * np.expm1(0.5 * (1 + lam * lam) * integral)
        p = -diffusion.covariance(t) * np.expm1(lam * lam * integral)
    else:
        pairs = [_stochastic_step_ode(diffusion, si, ti, lam) for si, ti in zip(s, t)]
        diff = np.stack([d for d, _ in pairs])
        p = np.stack([q for _, q in pairs])
    p = 0.5 * (p + batched_transpose(p))
    return {"state": psi, "history": (diff @ diffusion.gddim_factor(s))[:, None],
            "noise": psd_factor(p, "the reference noise covariance")}


def rebuild_tables(factory: Callable[[], LinearDiffusion], ts: np.ndarray, options: dict) -> dict:
    """The higher-accuracy rebuild of a plan's state, history and noise tables (see module docstring)."""
    diffusion = fine_diffusion(factory)
    if options.get("lam", 0.0) > 0:
        return stochastic_reference(diffusion, ts, options["lam"])
    opts = {"order": options.get("order", 1), "factor_name": options.get("factor", "R"),
            "form": options.get("form", "eps"), "corrector": options.get("corrector", False)}
    tables = deterministic_tables(diffusion, ts, **opts, **FINE_QUADRATURE)
    return {"state": tables.state, "history": tables.history, "noise": tables.noise}


def relative_table_error(table: np.ndarray, reference: np.ndarray) -> float:
    """``max_k max|T_k - T*_k| / max|T*_k|``: the worst step, relative to that step's largest entry."""
    axes = tuple(range(1, reference.ndim))
    scale = np.max(np.abs(reference), axis=axes)
    diff = np.max(np.abs(np.asarray(table) - reference), axis=axes)
    return float(np.max(diff / np.maximum(scale, np.finfo(float).tiny)))


def coefficient_errors(tables, reference: dict) -> dict:
    """Per-table relative errors of ``tables`` against the rebuild, and their maximum."""
    errors = {name: relative_table_error(getattr(tables, name), ref)
              for name, ref in reference.items() if ref is not None and getattr(tables, name) is not None}
    return {**errors, "max": max(errors.values())}


def plan_case(name: str, factory: Callable[[], LinearDiffusion], nfe: int, variant: str, *, repeats: int,
              budget_s: float) -> dict:
    """Cold and warm build times and coefficient accuracy of one plan (see module docstring)."""
    probe = factory()
    ts = gd.time_grid(probe, nfe)
    options = PLAN_VARIANTS[variant]
    setups, plans = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while len(plans) < repeats and (not plans or sum(setups) + sum(plans) < budget_s):
            setup, plan, tables = cold_build(factory, ts, options)
            setups.append(setup)
            plans.append(plan)
        prepare_diffusion(probe)
        warm = warm_build(probe, ts, options)
        errors = coefficient_errors(tables, rebuild_tables(factory, ts, options))
    setup_ms, plan_ms = 1e3 * float(np.median(setups)), 1e3 * float(np.median(plans))
    return {"diffusion": name, "nfe": nfe, "variant": variant, "options": options, "repeats": len(plans),
            "setup_ms": setup_ms, "plan_ms": plan_ms, "cold_total_ms": 1e3 * float(np.median(np.add(setups, plans))),
            "warm_us": 1e6 * warm, "coefficient_error": errors,
            "warnings": sorted({str(w.message) for w in caught})[:3]}


def plan_cost(config: BenchConfig, progress: Callable[[str], None]) -> dict:
    """The plan section: every diffusion × NFE × plan variant."""
    factories = QUICK_PLAN_DIFFUSIONS if config.quick else PLAN_DIFFUSIONS
    chosen = {k: factories[k] for k in config.plan_diffusions if k in factories}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, factory in chosen.items():  # warm-up, not timed
            for options in PLAN_VARIANTS.values():
                cold_build(factory, gd.time_grid(factory(), min(config.plan_nfe)), options)
    results = []
    for name, factory in chosen.items():
        for nfe in config.plan_nfe:
            for variant in PLAN_VARIANTS:
                results.append(plan_case(name, factory, nfe, variant, repeats=config.repeats,
                                         budget_s=config.budget_s))
                r = results[-1]
                progress(f"plan {name} NFE {nfe} {variant}: set-up {r['setup_ms']:.1f} ms + plan "
                         f"{r['plan_ms']:.1f} ms, coefficients {r['coefficient_error']['max']:.1e}")
    return {"status": "ok", "results": results, "targets": plan_targets(results),
            "grid": "time_grid(diffusion, nfe): power 2 from t_start to t_end", "fine_quadrature": FINE_QUADRATURE,
            "seconds": time.perf_counter() - start}


def plan_targets(results: list[dict]) -> list[dict]:
    """The issue-6 plan targets: CLD q = 3 NFE 50 cold (without and with set-up), worst coefficient error."""
    out = []
    case = next((r for r in results if all(r[k] == PLAN_TARGET[k] for k in ("diffusion", "variant", "nfe"))), None)
    if case is not None:
        label = f"{case['diffusion']} {case['variant']} NFE {case['nfe']} cold"
        for what, key in (("plan ms (set-up excluded)", "plan_ms"), ("plan ms incl. set-up", "cold_total_ms")):
            out.append({"target": f"{label}: {what}", "value": case[key], "limit": PLAN_TARGET["cold_ms"],
                        "meets": case[key] <= PLAN_TARGET["cold_ms"]})
    if results:
        worst = max(results, key=lambda r: r["coefficient_error"]["max"])
        table = max((k for k in worst["coefficient_error"] if k != "max"), key=lambda k: worst["coefficient_error"][k])
        value = worst["coefficient_error"]["max"]
        out.append({"target": f"coefficients vs rebuild, worst: {worst['diffusion']} {worst['variant']} "
                              f"NFE {worst['nfe']} ({table})", "value": value,
                    "limit": PLAN_TARGET["coef_rel_error"], "meets": value <= PLAN_TARGET["coef_rel_error"]})
    return out


def targets_table(targets: list[dict]) -> report.Table:
    """Measured value, limit and verdict of each target."""
    rows = tuple((t["target"], f"{t['value']:.3g}", f"{t['limit']:g}", "met" if t["meets"] else "MISSED")
                 for t in targets)
    return report.Table("Plan targets", (), ("target", "value", "limit", "verdict"), rows)


# ------------------------------------------------------------------------------------ step overhead
def _call_supported(fn: Callable, **kwargs) -> Any:
    """Call ``fn`` with the keyword arguments it accepts (the overhead module may grow or lose some)."""
    params = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in kwargs.items() if k in params})


def missing_backends(present: Sequence[str]) -> dict:
    """``{backend: why it is skipped}`` for the backends of the overhead benchmark that are absent."""
    reasons = {}
    try:
        import torch

        if not torch.cuda.is_available():
            reasons["torch_cuda"] = "no CUDA device visible to PyTorch"
    except ImportError:
        reasons["torch"] = reasons["torch_cuda"] = "torch is not installed; pip install 'gddim-numerics[torch]'"
    try:
        import cupy  # noqa: F401
    except ImportError:
        reasons["cupy"] = "cupy is not installed; pip install 'gddim-numerics[cupy]'"
    else:
        reasons.setdefault("cupy", "no CUDA device visible to CuPy")
    return {k: v for k, v in reasons.items() if k not in present}


def step_overhead(config: BenchConfig, progress: Callable[[str], None]) -> dict:
    """The overhead section: :func:`.bench_overhead.bench_overhead` on every backend present."""
    try:
        from . import bench_overhead
    except ImportError as err:
        return {"status": "skipped", "reason": f"the step-overhead benchmark is not available: {err}"}
    present = bench_overhead.available_backends()

    def report_case(r: dict) -> None:
        progress(f"overhead {r['backend']} {r['case']} {r['shape']}: ratio {r['ratio']:.2f}")

    before = load_average()
    result = _call_supported(bench_overhead.bench_overhead, backends=present, sizes=config.overhead_sizes,
                             repeats=config.overhead_repeats, n_steps=config.overhead_steps,
                             progress=report_case, max_seconds=1.0 if config.quick else 3.0)
    load = {"before": before, "after": load_average(), "cpu_count": os.cpu_count(), "limit": loaded_limit()}
    load["loaded"] = any(v is not None and v[0] > load["limit"] for v in (load["before"], load["after"]))
    return {"status": "ok", **result, "skipped_backends": missing_backends(present), "load": load}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the platform has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def loaded_limit() -> float:
    """The 1-minute load above which the machine counts as loaded: this benchmark's own process, plus other work
    on more than a quarter of the CPUs (timing ratios then carry load noise)."""
    return 1.0 + 0.25 * (os.cpu_count() or 1)


# ------------------------------------------------------------------------------------ the run
def machine() -> dict:
    """Machine, versions, thread counts and load of this process."""
    try:
        from .bench_overhead import machine_info

        info = machine_info()
    except ImportError:
        info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                "numpy": np.__version__, "gddim_numerics": gd.__version__}
    import scipy

    info["scipy"] = scipy.__version__
    diffusers, _ = peers.import_diffusers()
    if diffusers is not None:
        info["diffusers"] = diffusers.__version__
    info["load_average"] = load_average()
    return info


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set ``torch.set_num_threads(n)`` for the block (nothing without torch or with ``n=None``)."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _peer_section(config: BenchConfig, progress: Callable[[str], None]) -> dict:
    return peers.peer_accuracy(config.nfe, config.peer_names, config.n_states, config.reference_rtol,
                               progress=lambda text: progress(f"peers {text}"))


RUNNERS: dict[str, Callable[[BenchConfig, Callable[[str], None]], dict]] = {
    "plan": plan_cost, "overhead": step_overhead, "peers": _peer_section, "auto": bench_auto.auto_cost}


def run_bench(config: BenchConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Run the chosen sections; a section that fails is recorded with its error, the others still run."""
    say = progress or (lambda text: None)
    start = time.perf_counter()
    out: dict[str, Any] = {"config": asdict(config), "sections": {}}
    with torch_threads(config.torch_threads):
        out["machine"] = machine()
        for name in config.sections:
            try:
                out["sections"][name] = RUNNERS[name](config, say)
            except Exception as err:  # a bug in one section must not hide the others' results
                traceback.print_exc(file=sys.stderr)
                out["sections"][name] = {"status": "error", "reason": f"{type(err).__name__}: {err}"}
    out["seconds"] = time.perf_counter() - start
    return out


# ------------------------------------------------------------------------------------ tables
def _fmt(x: float | None, spec: str = ".1e") -> str:
    return "n/a" if x is None else ("inf" if not math.isfinite(x) else format(x, spec))


def plan_table(section: dict) -> report.Table:
    """Plan cost and coefficient accuracy per diffusion, NFE and plan."""
    rows = tuple((r["diffusion"], str(r["nfe"]), r["variant"], _fmt(r["setup_ms"], ".1f"), _fmt(r["plan_ms"], ".1f"),
                  _fmt(r["cold_total_ms"], ".1f"), _fmt(r["warm_us"], ".0f"), str(r["repeats"]),
                  _fmt(r["coefficient_error"]["max"])) for r in section["results"])
    return report.Table(
        "Plan cost", ("cold = fresh diffusion, empty plan cache; set-up = the diffusion's one-time set-up "
                      "(CLD: R_t rotation table), not part of 'plan'; warm = plan from the cache; medians.",
                      "coef. err = max over steps of max|T - T*| / max|T*| against the higher-accuracy rebuild "
                      f"({FINE_QUADRATURE['n_nodes']} GL nodes, panel ratio {FINE_QUADRATURE['max_ratio']}, finer "
                      "R_t; stochastic: cancellation-free D = Psi_hat - Psi and P at rtol 1e-13 / by quadrature)."),
        ("diffusion", "NFE", "plan", "set-up ms", "plan ms", "cold total ms", "warm µs", "n", "coef. err"), rows)


def overhead_table(section: dict) -> report.Table:
    """Step overhead per backend, case and state size."""
    load = section.get("load", {})
    above = "above target (machine loaded)" if load.get("loaded") else "ABOVE TARGET (machine idle)"
    rows = tuple((r["backend"], r["case"], "x".join(map(str, r["shape"])), _fmt(r["sampler_ms"], ".3f"),
                  _fmt(r["reference_ms"], ".3f"), _fmt(r["ratio"], ".2f"), _fmt(r["target"], ".1f"),
                  "ok" if r["meets_target"] else above) for r in section["results"])
    skipped = "; ".join(f"{k}: {v}" for k, v in section.get("skipped_backends", {}).items())
    return report.Table(
        "Step overhead", ("sampler time per step with a zero-cost network ÷ the hand-written fused step on the same "
                          "arrays (interleaved, medians).", f"skipped backends: {skipped or 'none'}",
                          load_note(section)),
        ("backend", "case", "shape", "step ms", "fused ms", "ratio", "target", "verdict"), rows)


def load_note(section: dict) -> str:
    """How loaded the machine was while the overhead ran, and what that means for the ratios above target."""
    load = section.get("load")
    if not load or load["before"] is None:
        return "load average: not available on this platform; a ratio above target may be load noise."
    above = sum(not r["meets_target"] for r in section["results"])
    text = (f"load average (1, 5, 15 min) before {', '.join(map(str, load['before']))}, after "
            f"{', '.join(map(str, load['after']))} on {load['cpu_count']} CPUs; the machine counts as loaded above "
            f"{load['limit']:g} (1-minute).")
    if not above:
        return text
    if load["loaded"]:
        return text + (f" {above} ratio(s) above target while the machine was loaded: they may be load noise, not "
                       "overhead; rerun `bench --sections overhead` on an idle machine.")
    return text + f" {above} ratio(s) above target on an idle machine: a real overhead."


def _columns(section: dict) -> list[str]:
    names = list(dict.fromkeys(r["sampler"] for r in section["gddim"]))
    return names + list(dict.fromkeys(r["sampler"] for r in section["peers"]))


def _error_cell(row: dict) -> str:
    """``1.2e-03``, with ``(m)`` when ``m`` trajectories switched mixture component."""
    switches = row.get("mode_switches")
    return _fmt(row["error"]) + (f" ({switches})" if switches else "")


def peer_error_table(section: dict) -> report.Table:
    """Relative error per NFE of every gDDIM entry and every diffusers sampler (best options)."""
    errors = {(r["sampler"], r["nfe"]): _error_cell(r) for r in section["gddim"] + section["peers"]}
    columns = _columns(section)
    nfes = sorted({nfe for _, nfe in errors})
    best = {int(k): v for k, v in section["best_peer"].items()}
    rows = tuple((str(n), *(errors.get((c, n), "n/a") for c in columns),
                  f"{best[n]['sampler']} {_fmt(best[n]['error'])}" if n in best else "n/a") for n in nfes)
    problem = section["problem"]
    return report.Table(
        "Accuracy per NFE against diffusers (VP, exact-score Gaussian mixture)",
        (f"{problem['data']}; {problem['n_states']} trajectories from t = {problem['t_start']:g} to "
         f"t = {problem['t_end']:g}; error = {problem['error']}; reference accuracy "
         f"{_fmt(problem['reference_rel_accuracy'])}.",
         "diffusers samplers: best options per NFE (next table); '@int': gDDIM grid rounded to discrete timesteps; "
         "(m): m trajectories end nearest another mixture component than the reference's.",
         "mapping check: DDIM (eta 0) vs gDDIM q = 1 on the same timesteps "
         f"{_fmt(section['mapping']['ddim_vs_gddim_q1'])}"
         f" (float32 tables as shipped: {_fmt(section['mapping']['ddim_float32_vs_gddim_q1'])})."),
        ("NFE", *columns, "best peer"), rows)


def ratio_table(section: dict) -> report.Table:
    """gDDIM error ÷ best peer error with the issue targets."""
    by = {(r["sampler"], r["nfe"]): r for r in section["ratios"]}
    columns = list(dict.fromkeys(r["sampler"] for r in section["ratios"]))
    nfes = sorted({r["nfe"] for r in section["ratios"]})

    def cell(r: dict | None) -> str:
        if r is None:
            return "n/a"
        marks = [("✓" if r[f"meets_{i}"] else "✗") + f"≤{r[f'target_{i}']:g}" for i in ("issue6", "issue12")
                 if f"meets_{i}" in r]
        return f"{r['ratio']:.2f}" + (f" ({', '.join(marks)})" if marks else "")

    rows = tuple((str(n), *(cell(by.get((c, n))) for c in columns)) for n in nfes)
    return report.Table("gDDIM error ÷ best diffusers error",
                        ("targets: issue 6 ≤ 1 at NFE 10, 20, 50; issue 12 (gddim_auto) ≤ 0.4, 0.3, 0.1.",),
                        ("NFE", *columns), rows)


def scheme_table(section: dict) -> report.Table:
    """The scheme each gDDIM entry ran per NFE (form, order, corrector, variable, grid end points)."""
    rows = tuple((r["sampler"], str(r["nfe"]), str(r["plan"].get("form")), str(r["plan"].get("order")),
                  str(r["plan"].get("corrector")), str(r["plan"].get("variable")),
                  f"{r['plan']['ts'][1]:.4g} … {r['plan']['ts'][-2]:.3g}")
                 for r in section["gddim"] if "plan" in r and len(r["plan"]["ts"]) > 2)
    return report.Table("gDDIM schemes run", ("grid: second and second-to-last time (first is t_start, last t_end).",),
                        ("sampler", "NFE", "form", "q", "corrector", "variable", "grid"), rows)


def options_table(section: dict) -> report.Table:
    """The best options found per diffusers sampler and NFE."""
    rows = tuple((r["sampler"], str(r["nfe"]), _error_cell(r), r["description"] or "none valid",
                  f"{r['tried']} ({r['diverged']} diverged)") for r in section["peers"])
    return report.Table("Best diffusers options per NFE",
                        tuple(section["mapping"]["notes"]),
                        ("sampler", "NFE", "error", "best options", "configurations run"), rows)


def render_tables(results: dict) -> str:
    """The bench as Markdown: machine, then each section's tables (or why it was skipped)."""
    lines = ["## gddim-numerics bench", "", *(f"- {k}: {v}" for k, v in results["machine"].items()), ""]
    renderers = {"plan": (plan_table,), "overhead": (overhead_table,),
                 "peers": (peer_error_table, ratio_table, scheme_table, options_table),
                 "auto": (bench_auto.auto_table,)}
    for name, section in results["sections"].items():
        if section["status"] != "ok":
            lines += [f"### {name}: {section['status']}", "", section["reason"], ""]
            continue
        lines += [report.render(fn(section)) for fn in renderers[name]]
        if name == "plan" and section["targets"]:
            lines.append(report.render(targets_table(section["targets"])))
    lines.append(f"({results['seconds']:.0f} s)")
    return "\n".join(lines)


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers and non-finite floats as ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------------ command line
def _names(valid: Sequence[str], what: str) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names from ``valid``."""
    def parse(text: str) -> list[str]:
        names = [part for part in text.split(",") if part]
        for name in names:
            if name not in valid:
                raise argparse.ArgumentTypeError(f"unknown {what} {name!r}; valid: {', '.join(valid)}")
        return names
    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _refuse_unknown(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` itself reject unknown options, so its error shows its own usage (the valid options)."""
    parse_known = parser.parse_known_args

    def strict(self, args=None, namespace=None):
        namespace, extras = parse_known(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    parser.parse_known_args = types.MethodType(strict, parser)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``subparsers`` (sets ``func=run``)."""
    p = subparsers.add_parser(
        "bench", help="benchmarks: plan cost, step overhead, accuracy per NFE against diffusers",
        description="Measure on this machine: the cost and coefficient accuracy of gDDIM plans, the sampler's "
                    "per-step overhead on every array backend present, and gDDIM's accuracy per network "
                    "evaluation next to diffusers' samplers on an exact-score VP problem. Prints Markdown "
                    "tables; --out DIR also writes bench.json and bench.md.")
    p.add_argument("--quick", action="store_true", help="a smoke test of every section (< 30 s)")
    p.add_argument("--sections", nargs="+", type=_names(SECTIONS, "section"), metavar="NAME",
                   help=f"sections to run (default: all of {', '.join(SECTIONS)})")
    p.add_argument("--nfe", nargs="+", type=_positive_int, metavar="N",
                   help=f"NFE of the peer comparison (default: {' '.join(map(str, peers.DEFAULT_NFE))})")
    p.add_argument("--plan-nfe", nargs="+", type=_positive_int, metavar="N",
                   help=f"NFE of the plan-cost section (default: {' '.join(map(str, PLAN_NFE))})")
    p.add_argument("--peers", nargs="+", type=_names(peers.PEER_NAMES, "peer"), metavar="NAME",
                   help=f"diffusers samplers to compare (default: all of {', '.join(peers.PEER_NAMES)})")
    p.add_argument("--repeats", type=_positive_int, metavar="N", help="timed cold builds per plan (default 5)")
    p.add_argument("--torch-threads", type=_positive_int, metavar="N",
                   help="torch.set_num_threads for the run (default 1)")
    p.add_argument("--out", metavar="DIR", help="write bench.json and bench.md to this folder")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)
    _refuse_unknown(p)
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` of the options (``--quick`` first, explicit options win)."""
    config = BenchConfig.quick_config() if args.quick else BenchConfig()
    explicit = {
        "sections": None if args.sections is None else tuple(dict.fromkeys(n for g in args.sections for n in g)),
        "peer_names": None if args.peers is None else tuple(dict.fromkeys(n for g in args.peers for n in g)),
        "nfe": None if args.nfe is None else tuple(sorted(set(args.nfe))),
        "plan_nfe": None if args.plan_nfe is None else tuple(sorted(set(args.plan_nfe))),
        "repeats": args.repeats, "torch_threads": args.torch_threads,
    }
    return replace(config, **{k: v for k, v in explicit.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """The ``bench`` subcommand: 0 on success, 2 for bad input, 1 if a section failed."""
    config = config_from_args(args)
    out = None
    if args.out is not None:
        try:
            out = files.check_writable_folder(args.out, forbidden=(Path(gd.__file__).parent, Path(__file__).parent))
        except ValueError as err:
            print(f"{PROG} bench: error: {err}", file=sys.stderr)
            return USAGE_ERROR
    progress = (lambda text: None) if args.no_progress else (lambda text: print(text, file=sys.stderr, flush=True))
    results = run_bench(config, progress)
    results["command"] = " ".join([PROG, *getattr(args, "argv", ["bench"])])
    markdown = render_tables(results)
    print(markdown)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        files.write_text_atomic(out / "bench.json", json.dumps(jsonable(results), indent=1))
        files.write_text_atomic(out / "bench.md", markdown + "\n")
        print(f"wrote bench.json, bench.md to {out}")
    overhead = results["sections"].get("overhead", {})
    if overhead.get("status") == "ok" and not all(r["meets_target"] for r in overhead["results"]):
        print(f"{PROG} bench: {load_note(overhead)}", file=sys.stderr)
    failed = [n for n, s in results["sections"].items() if s["status"] == "error"]
    return 1 if failed else 0
