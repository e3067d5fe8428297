r"""The digits demo's runs: samplers on trained networks, as :class:`~validation.executor.Task` s.

Per diffusion, from the same :math:`n` start points drawn from the diffusion's prior at
``t_start`` (seed fixed):

reference
    The network's own probability-flow solution to ``t_end`` (cached with the weights): DOP853 (``scipy``, via
    :class:`~gddim_numerics.samplers.ivp.ProbabilityFlowIVP`) at ``rtol`` 1e-8, ``atol`` 1e-10, in float64
    (the network too); VP in the log-SNR (:mod:`.digits_reference`: ~400 evaluations instead of ~10 000 in
    ``t``, where the discrete schedule's spline kinks slow DOP853 down). Its accuracy is estimated by a
    second solve at 100× smaller tolerances from the first :data:`N_CHECK` start points. A network whose flow
    diverges (:func:`reference_task`) has no reference, and its samplers get a Fréchet distance only (plain
    CLD networks' flows did, below ``t`` ≈ 0.01; the demo's CLD network is preconditioned against it,
    :class:`~.digits_train.GaussianSkip`).
solver error
    :math:`\|X - X^*\|_F / \|X^*\|_F` over all start points and the full state (CLD: positions and
    velocities), for every deterministic sampler; stochastic samplers (EM, ancestral) solve another
    equation and get no solver error, only a Fréchet distance.
sample quality
    The Fréchet distance (:mod:`.digits_quality`) of the images (CLD: positions) to the held-out digits.
samplers
    :data:`SAMPLERS` — one table; :data:`BEST` names the library's methods whose best per diffusion and
    NFE is "the best library method" of the targets (the way diffusers' rows take the best of their
    options), and :data:`PAPER` the paper's scheme of the targets. diffusers' schedulers (:data:`PEERS`, VP only) run through
    :mod:`.peers` (its timestep mapping and two-stage option search, scored by the same solver error
    against the same reference); the best configuration per NFE is kept and named.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import gddim_numerics as gd
from gddim_numerics.samplers.ivp import ProbabilityFlowIVP

from . import peers
from .digits_quality import Classifier, train_classifier
from .digits_reference import log_snr_flow
from .digits_train import (DIFFUSIONS, TrainConfig, basis_matrix, ddpm_alphas_cumprod, eps_closure, load_or_train,
                           load_split, save_atomic)
from .executor import Task

N_IMAGES = 16  # images kept per run for the PNG grids
REFERENCE_ATOL_RATIO = 1e-2
N_CHECK = 32  # start points of the reference's accuracy check and divergence probe
#: RMS of the reference end states above which the network's flow counts as diverged (the data lie in [-1, 1];
#: the CLD flows reached 1e13-1e28, the tiny --quick VP network's ~240)
DIVERGED_RMS = 1e4


@dataclass(frozen=True)
class DigitsSampler:
    """A sampler of the demo: ``plan(diffusion, nfe, output, train_states)`` returns a plan with ``.sample``.

    ``train_states``: the clean training states ``(n, *state)`` (for a method that estimates data
    statistics); ``stochastic`` samplers get no solver error; ``diffusions`` limits where it applies.
    """

    label: str
    plan: Callable
    stochastic: bool = False
    diffusions: tuple[str, ...] | None = None


def _method(name: str, **options) -> Callable:
    return lambda diffusion, nfe, output, train_states: peers.method_plan(diffusion, name, nfe, output=output,
                                                                          **options)


def _auto(diffusion, nfe, output, train_states):
    """``gddim_auto`` with the data statistics estimated from the training images."""
    return gd.auto_plan(diffusion, nfe, gd.DataStatistics.from_samples(diffusion, train_states), output=output)


#: ``gddim_lsnr``: ε-form gDDIM, q = 3 with the evaluation-free corrector, on the grid uniform in the
#: log-SNR, extrapolating in the log-SNR: the analogue of DPM-Solver / UniPC (whose grid and variable are
#: the log-SNR too). Chosen on the randomized family (``family_problems``, seeds 0-59; nothing on the digits
#: networks): of the log-SNR-grid variants (ε/data form, q = 2/3, with the corrector) it has the smallest
#: error on the 10 VP problems (geometric mean 0.15× / 0.24× paper_q3's at NFE 10 / 20; 0.40× / 0.19× for
#: the same scheme on paper_q3's power grid), but is worse than paper_q3 on the BDM problems (1.5× / 2.2×),
#: and CLD's noise measure is not monotone: so it runs on the VP network only.
LSNR_OPTIONS = dict(grid="log_snr", order=3, corrector=True, variable="log_snr", form="eps")


def _heun(diffusion, nfe, output, train_states):
    return peers.method_plan(diffusion, "heun", nfe, output=output, final_euler=nfe % 2 == 1)


#: Every library sampler of the demo (the lead swaps the best method here).
SAMPLERS: dict[str, DigitsSampler] = {
    "gddim_q1": DigitsSampler("gDDIM q=1 (paper, grid uniform in sqrt(t))", _method("gddim", order=1)),
    "gddim_q2": DigitsSampler("gDDIM q=2 (paper)", _method("gddim", order=2)),
    "gddim_q3": DigitsSampler("gDDIM q=3 (paper)", _method("gddim", order=3)),
    "gddim_auto": DigitsSampler("gddim_auto (statistics from the training images)", _auto),
    "gddim_lsnr": DigitsSampler("gDDIM eps-form q=3 + corrector on the log-SNR grid (variable log-SNR)",
                                _method("gddim", **LSNR_OPTIONS), diffusions=("vp",)),
    "heun": DigitsSampler("probability-flow Heun (2 NFE/step)", _heun),
    "em": DigitsSampler("Euler-Maruyama, reverse SDE", _method("em", lam=1.0), stochastic=True),
    "ancestral": DigitsSampler("ancestral (DDPM / BDM)", _method("ancestral"), stochastic=True,
                               diffusions=("vp", "bdm")),
}
BEST, PAPER = ("gddim_auto", "gddim_lsnr"), "gddim_q2"
PEERS = ("DDIM", "DPM++2M", "UniPC-2")


@dataclass(frozen=True)
class DigitsConfig:
    """What the demo runs (:meth:`quick` for CI)."""

    diffusions: tuple[str, ...] = tuple(DIFFUSIONS)
    nfe: tuple[int, ...] = (5, 10, 20, 50)
    fd_nfe: int = 200
    n_samples: int = 256
    steps: int = 4000
    hidden: int = 256
    depth: int = 3
    classifier_steps: int = 600
    rk45_tolerances: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    peers: tuple[str, ...] = PEERS
    reference_rtol: float = 1e-8
    check_reference: bool = True
    seed: int = 0

    @classmethod
    def quick(cls) -> "DigitsConfig":
        """Tiny networks and few runs: every code path in well under a minute."""
        return cls(nfe=(5, 10), fd_nfe=20, n_samples=32, steps=100, hidden=32, depth=1, classifier_steps=100,
                   rk45_tolerances=(1e-2,), peers=("DDIM",), reference_rtol=1e-4, check_reference=False)

    def train_config(self, diffusion: str) -> TrainConfig:
        return TrainConfig(diffusion, hidden=self.hidden, depth=self.depth, steps=self.steps, seed=self.seed)


# ------------------------------------------------------------------------------------ task functions
def classifier_task(steps: int) -> Classifier:
    """The digits classifier of the Fréchet distance."""
    return train_classifier(*load_split(), steps=steps)


def net_task(config: TrainConfig, cache: str) -> dict:
    """The trained network of ``config`` (from the cache or trained now)."""
    return load_or_train(config, load_split()[0], cache)


def start_points(diffusion: gd.LinearDiffusion, state_shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """``n`` draws of the diffusion's prior :math:`N(0, \\Sigma_{prior})` at ``t_start``, ``(n, *state_shape)``."""
    z = np.random.default_rng(seed).standard_normal((n, *state_shape))
    cov = diffusion.prior_covariance()  # (M, k, k)
    vt = basis_matrix(diffusion)
    if vt is not None:
        return ((z.reshape(n, -1) * np.sqrt(cov[:, 0, 0])) @ vt).reshape(z.shape)
    if diffusion.block_size == 1:
        return z * np.sqrt(cov[0, 0, 0])
    return z @ np.linalg.cholesky(cov[0]).T


def _flow(name: str, diffusion: gd.LinearDiffusion, eps_fn, x: np.ndarray, rtol: float) -> tuple[np.ndarray, int]:
    """``(end states, evaluations)`` of the network's flow from ``x``: VP in the log-SNR, the others in ``t``."""
    output = DIFFUSIONS[name].output
    if name == "vp":
        res = log_snr_flow(diffusion, eps_fn, x, output, rtol=rtol, atol=rtol * REFERENCE_ATOL_RATIO)
        return res["x"], res["nfe"]
    res = ProbabilityFlowIVP(diffusion, "DOP853", rtol=rtol, atol=rtol * REFERENCE_ATOL_RATIO,
                             output=output).sample(eps_fn, x)
    return res.x, res.nfe


def reference_task(net: dict, name: str, n: int, seed: int, rtol: float, check: bool) -> dict:
    """Start points and the network's DOP853 probability-flow solution from them (``x_ref``).

    First the first :data:`N_CHECK` start points are solved at 100× looser tolerances: if their end
    states' RMS exceeds :data:`DIVERGED_RMS` (the data lie in [-1, 1]) the network's flow diverges, there
    is no solver error to measure, and ``x_ref`` is ``None`` (``rms`` says how far it went). Cached beside
    the network's weights (keyed by the network, the coordinates, ``n``, ``seed``, ``rtol``, ``check``).
    """
    setup = DIFFUSIONS[name]
    diffusion = setup.make()
    x = start_points(diffusion, setup.state_shape, n, seed)
    variable = "lsnr-" if name == "vp" else ""
    path = Path(net["path"]).with_suffix(f".ref-{variable}{n}-{seed}-{rtol:g}-{int(check)}.npz")
    if path.exists():
        saved = np.load(path)
        if np.array_equal(saved["x_start"], x):
            diverged = saved["x_ref"].size == 0
            return {"x_start": x, "x_ref": None if diverged else saved["x_ref"], "nfe": int(saved["nfe"]),
                    "rtol": rtol, "rms": float(saved["rms"]), "cached": True,
                    "accuracy": None if np.isnan(saved["accuracy"]) else float(saved["accuracy"])}
    eps_fn = eps_closure(net["net"])
    probe, nfe = _flow(name, diffusion, eps_fn, x[:N_CHECK], rtol * 100)
    rms = float(np.sqrt(np.mean(np.square(probe)))) if np.all(np.isfinite(probe)) else math.inf
    x_ref, accuracy = None, None
    if rms <= DIVERGED_RMS:
        x_ref, nfe = _flow(name, diffusion, eps_fn, x, rtol)
        rms = float(np.sqrt(np.mean(np.square(x_ref))))
        if check:
            accuracy = relative_error(x_ref[:N_CHECK], _flow(name, diffusion, eps_fn, x[:N_CHECK], rtol / 100)[0])

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, x_start=x, x_ref=np.zeros(0) if x_ref is None else x_ref, nfe=nfe, rms=rms,
                     accuracy=np.nan if accuracy is None else accuracy)

    save_atomic(path, write)
    return {"x_start": x, "x_ref": x_ref, "nfe": nfe, "rtol": rtol, "rms": rms, "accuracy": accuracy,
            "cached": False}


def relative_error(x, ref: np.ndarray) -> float:
    """``||x - ref||_F / ||ref||_F`` (``inf`` when ``x`` is not finite)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        return math.inf
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def _outcome(name: str, x, ref: dict, clf: Classifier, nfe: int, stochastic: bool, **extra) -> dict:
    images = DIFFUSIONS[name].image_of(np.asarray(x))
    return {"nfe": int(nfe), "error": None if stochastic or ref["x_ref"] is None else relative_error(x, ref["x_ref"]),
            "fd": clf.frechet(images), "images": images[:N_IMAGES], **extra}


def sampler_task(net: dict, ref: dict, clf: Classifier, name: str, key: str, nfe: int, seed: int) -> dict:
    """One library sampler at ``nfe`` from the reference's start points."""
    spec = SAMPLERS[key]
    diffusion = DIFFUSIONS[name].make()
    train_states = DIFFUSIONS[name].clean_state(load_split()[0])
    plan = spec.plan(diffusion, nfe, DIFFUSIONS[name].output, train_states)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = plan.sample(eps_closure(net["net"]), ref["x_start"].copy(), rng=np.random.default_rng(seed + 1))
    if res.nfe != nfe:
        raise RuntimeError(f"{key} made {res.nfe} evaluations, not {nfe}")
    return _outcome(name, res.x, ref, clf, res.nfe, spec.stochastic)


def rk45_task(net: dict, ref: dict, clf: Classifier, name: str, tol: float) -> dict:
    """scipy's RK45 on the probability flow at ``rtol = atol = tol`` (its NFE is measured)."""
    res = ProbabilityFlowIVP(DIFFUSIONS[name].make(), "RK45", rtol=tol, atol=tol, output=DIFFUSIONS[name].output).sample(
        eps_closure(net["net"]), ref["x_start"].copy())
    return _outcome(name, res.x, ref, clf, res.nfe, False, tol=tol)


class _NetworkProblem(peers.PeerProblem):
    """:class:`~validation.peers.PeerProblem` whose "exact" ε is the trained network (no mixture modes)."""

    def mode_switches(self, x) -> None:
        return None


def peer_task(net: dict, ref: dict, clf: Classifier, peer: str, nfe: int) -> dict:
    """The best configuration of a diffusers sampler at ``nfe`` on the VP network (:func:`peers.search_peer`)."""
    diffusers, reason = peers.import_diffusers()
    if diffusers is None:
        raise RuntimeError(reason)
    if ref["x_ref"] is None:
        raise RuntimeError("the VP network's flow diverges: there is no reference to search the options against")
    spec = next(p for p in peers.PEERS if p.name == peer)
    cls = getattr(diffusers, spec.class_name)
    diffusion = DIFFUSIONS["vp"].make()
    if not np.array_equal(cls(**spec.fixed).alphas_cumprod.double().numpy(), ddpm_alphas_cumprod()):
        raise RuntimeError(f"{spec.class_name}'s alphas_cumprod is not the table the VP network was trained on")
    problem = _NetworkProblem(diffusion, SimpleNamespace(eps_R=eps_closure(net["net"])), ref["x_start"],
                              ref["x_ref"], ref["accuracy"] or 0.0, {})
    best = peers.search_peer(problem, spec, cls, nfe)
    if best["options"] is None:
        raise RuntimeError(f"no configuration of {peer} runs at NFE {nfe}")
    opts = best["options"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, why = peers.run_scheduler(problem, peers._scheduler(cls, spec, opts), nfe, opts.get("eval", "timestep"),
                                     opts.get("skip_final_noop", False))
    if x is None:
        raise RuntimeError(f"{peer} at NFE {nfe}: {why}")
    return _outcome("vp", x, ref, clf, nfe, False, options=best["description"], tried=best["tried"])


def tasks(config: DigitsConfig, cache: str) -> list[Task]:
    """Every task of the demo, in dependency order."""
    out = [Task(("classifier",), classifier_task, (config.classifier_steps,))]
    for name in config.diffusions:
        out.append(Task(("net", name), net_task, (config.train_config(name), str(cache))))
        out.append(Task(("reference", name), reference_task,
                        (name, config.n_samples, config.seed, config.reference_rtol, config.check_reference),
                        needs=(("net", name),)))
        needs = (("net", name), ("reference", name), ("classifier",))
        for key, spec in SAMPLERS.items():
            if spec.diffusions is not None and name not in spec.diffusions:
                continue
            nfes = list(config.nfe) + ([config.fd_nfe] if key in BEST else [])
            out += [Task(("run", name, key, nfe), sampler_task, (name, key, nfe, config.seed), needs=needs)
                    for nfe in nfes]
        out += [Task(("rk45", name, tol), rk45_task, (name, tol), needs=needs) for tol in config.rk45_tolerances]
        if name == "vp":
            out += [Task(("peer", name, peer, nfe), peer_task, (peer, nfe), needs=needs)
                    for peer in config.peers for nfe in config.nfe]
    return out
