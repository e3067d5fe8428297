r"""Design family of ``gddim_auto`` (seeds 0–99): the problems its choices were judged on.

Every choice of :mod:`gddim_numerics.auto` (the scheme family, the grid family and optimiser
settings, the default statistics) was judged on these problems; the reporting family (seeds >= 1000)
is the ``family`` benchmark's. The objective of :mod:`gddim_numerics.auto` (the worst error ratio to the
paper's scheme over the ensemble, replacing the worst absolute error) was judged on seeds 2000–2047 of
the ``family`` generator (``gddim-numerics family --first-seed 2000 --problems 48 --nfe 10 20``), and its
switching probes in four frequency bands for BDM (:data:`gddim_numerics.auto_search.PROBE_BANDS`) on the 18
BDM problems above 64 pixels among seeds 3000–3599 of that generator, and its guard margin (no loss on any probe)
and the three schemes whose grids stage 2 optimises (:data:`gddim_numerics.auto.GRID_SCHEMES`) on seeds 3000–3059
at NFE 10, 20 and 50; none of these sets is ever reported. Problem ``seed`` (:func:`design_problem`): the diffusion kind cycles
through VP, VE, CLD (random :math:`M^{-1}`, :math:`\Gamma`), BDM (4x4–8x8, smooth random mean
images, full covariances), a random stable dense ``k x k`` (k = 2–4) and a time-varying
``LinearSDE``; the data are a Gaussian mixture of 1–6 components, scale 0.05–2 (log-uniform).

Error (:func:`path_error`): :math:`\|x - x_{ref}\|_F / \|x_{ref}\|_F` over 16 start states drawn
from the exact :math:`p_{t_{start}}`, the reference by DOP853 (rtol 1e-10) on the exact probability flow.

Run::

    python -m gddim_numerics.validation.auto_design --seeds 0 30 --nfe 5 10 20 50 --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import gddim_numerics as gd
from gddim_numerics.layout import basis_matrix, dense_operator

KINDS = ("vp", "ve", "cld", "bdm", "dense", "ltv")


def _stable(rng, k):
    a = rng.normal(size=(k, k)) / np.sqrt(k)
    return a - (np.max(np.linalg.eigvals(a).real) + rng.uniform(0.3, 1.5)) * np.eye(k)


def design_diffusion(kind: str, rng):
    """A random diffusion of ``kind`` and an event shape for it."""
    if kind == "vp":
        return gd.VPSDE.linear(), (int(rng.integers(2, 7)),)
    if kind == "ve":
        return gd.VESDE(), (int(rng.integers(2, 5)),)
    if kind == "cld":
        m_inv = float(rng.uniform(1.0, 8.0))
        gamma = float(2.0 / np.sqrt(m_inv) * rng.uniform(0.7, 1.5))
        return gd.CLD(mass_inv=m_inv, gamma_friction=gamma), (int(rng.integers(2, 5)), 2)
    if kind == "bdm":
        h = int(rng.integers(4, 9))
        return gd.BDM((h, h)), (h, h)
    k = int(rng.integers(2, 5))
    a = _stable(rng, k)
    b = rng.normal(size=(k, k))
    q = b @ b.T / k + 0.2 * np.eye(k)
    if kind == "dense":
        return gd.ConstantCoefficientSDE(a, q, initial_covariance=1e-3 * np.eye(k)), (k,)
    w = float(rng.uniform(0.5, 3.0))
    return gd.LinearSDE(lambda t: (1.0 + 0.5 * np.sin(w * t)) * a, lambda t: (1.0 + t) * q,
                        initial_covariance=1e-3 * np.eye(k)), (k,)


def design_problem(seed: int):
    """The mixture problem of ``seed`` (module docstring)."""
    rng = np.random.default_rng(seed)
    kind = KINDS[seed % len(KINDS)]
    sde, ev = design_diffusion(kind, rng)
    d = int(np.prod(ev))
    n_comp = int(rng.integers(1, 7))
    scale = float(np.exp(rng.uniform(np.log(0.05), np.log(2.0))))
    means = rng.normal(size=(n_comp,) + ev) * scale
    if kind == "bdm":  # smooth mean images: damp high DCT frequencies
        v = basis_matrix(sde, ev)
        damp = np.exp(-sde.basis.eigenvalues.ravel())
        means = (rng.normal(size=(n_comp, d)) * damp * scale * 3) @ v.T
        means = means.reshape((n_comp,) + ev)
    mask = np.ones(d)
    if kind == "cld":
        mask = (np.arange(d) % 2 == 0).astype(float)
        means = means * mask.reshape(ev)
    s0 = dense_operator(sde, sde.initial_covariance, ev)
    covs = []
    for _ in range(n_comp):
        a = rng.normal(size=(d, d)) * mask[:, None] * scale * 0.3 / np.sqrt(d)
        covs.append(s0 + a @ a.T + np.diag(mask) * (0.05 * scale) ** 2)
    weights = rng.dirichlet(np.ones(n_comp))
    return kind, gd.GaussianMixture(sde, ev, weights, means, np.array(covs))


def path_error(problem, plan, x, ref) -> float:
    """Relative pathwise error of ``plan`` from start states ``x`` against ``ref``."""
    out = np.asarray(plan.sample(problem.eps_R, x).x)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def paper_plan(sde, nfe):
    """The paper's scheme at q = 3: ε form, extrapolation in t, grid uniform in sqrt(t)."""
    return gd.GDDIM(sde, gd.time_grid(sde, nfe, "power", power=2), order=3)


def run_seed(seed: int, nfes, sensitivity: bool) -> dict:
    kind, problem = design_problem(seed)
    sde = problem.diffusion
    rng = np.random.default_rng(10_000 + seed)
    x = problem.sample_marginal(sde.t_start, 16, rng=rng)
    ref = problem.reference_flow(x, sde.t_start, sde.t_end, rtol=1e-10, atol=1e-12)
    stats = gd.DataStatistics.from_problem(problem)
    variants = {"true": stats}
    if sensitivity:
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                samples = gd.DataStatistics.from_samples(sde, problem.sample_data(100, rng=rng), layout="dense")
        variants.update(x3=stats.scaled(3.0), x1_3=stats.scaled(1 / 3), diagonal=stats.diagonal(), samples100=samples,
                        default=None)
    row = dict(seed=seed, kind=kind, event_shape=list(problem.event_shape), components=problem.n_components)
    for nfe in nfes:
        res = dict(paper=path_error(problem, paper_plan(sde, nfe), x, ref))
        for name, st in variants.items():
            t0 = time.perf_counter()
            plan = gd.auto_plan(sde, nfe, st)
            res[f"auto_{name}_seconds"] = time.perf_counter() - t0
            res[f"auto_{name}"] = path_error(problem, plan, x, ref)
            if name == "true":
                res["report"] = {k: v for k, v in plan.auto_report.items()}
                pick = gd.auto_plan(sde, nfe, st, optimize_grid=False)
                res["pick"] = path_error(problem, pick, x, ref)
        row[str(nfe)] = res
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs=2, default=(0, 100))
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--sensitivity", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for seed in range(*a.seeds):
        path = a.out / f"seed{seed:03d}.json"
        if path.exists():
            continue
        row = run_seed(seed, a.nfe, a.sensitivity)
        path.write_text(json.dumps(row, default=float, indent=1))
        summary = {n: round(row[str(n)]["auto_true"] / row[str(n)]["paper"], 3) for n in a.nfe}
        print(seed, row["kind"], summary, flush=True)


if __name__ == "__main__":
    main()
