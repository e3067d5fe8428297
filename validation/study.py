r"""The validation study: samplers × diffusions × NFE on exact-score problems (MATH.md §8).

Every number the ``validate`` command prints comes from :func:`run_study`, which returns plain
dicts (JSON-ready). The problems, error measures and fits are:

Problems (per diffusion, parameters drawn once from ``seed``)
    ``gaussian``  Gaussian data :math:`N(\mu, S)` with an anisotropic covariance of scale ``data_std``;
    ``mixture``   a 3-component Gaussian mixture (weights 0.2/0.3/0.5, component std ``data_std``);
    ``dirac``     one data point (:math:`S = \Sigma_0`), where gDDIM with ``K = R`` is exact (§3.2).
    For CLD the data live in the position channel (velocity mean 0, kernel's :math:`\Sigma_0`).

Error measures (all relative, dimensionless, at the grid's end ``t_end``)
    ``pathwise``  deterministic samplers: :math:`\|X - X^*\|_F/\|X^*\|_F` over ``n_paths`` start
                  points drawn from the exact :math:`p_{t_\mathrm{start}}`; :math:`X^*` is the exact
                  probability-flow solution (Gaussian, Dirac) or the DOP853 reference (mixture,
                  rtol 1e-10) from the same start points.
    ``law``       stochastic samplers on Gaussian/Dirac data: the sampler is affine in (start point,
                  noise), so its output law :math:`N(m, C)` is computed exactly by linear response
                  (:func:`affine_output_law`) and compared with the true marginal
                  :math:`N(m^*, C^*)` by :func:`gaussian_distance`.
    ``moments``   stochastic samplers on the mixture: :func:`gaussian_distance` between the sample
                  mean/covariance of ``n_mc`` samples and the exact mixture mean/covariance, with its
                  Monte Carlo standard error (:meth:`Bench.measure`).

Mode switches (mixture, deterministic samplers)
    The fraction of start points whose end point is assigned to another mixture component than
    the reference end point from the same start point (:func:`mode_switch_fraction`). A point is
    assigned to the component of largest posterior responsibility under the exact final marginal
    :math:`p_{t_\mathrm{end}} = \sum_k \pi_k N(m^k, C^k)` (:func:`assign_components`; the Bayes
    classifier of the full state, CLD: positions and velocities).

Samplers
    The paper's gDDIM (``gddim_q1..3``: ε form, extrapolation in t, grid uniform in √t) and the tuned
    name ``gddim_tuned``, which now runs :func:`gddim_numerics.auto.auto_plan` with default statistics (it
    builds its own grid, ``grid_power`` does not apply) next to the baselines. :func:`tuned_vs_paper` compares the two on the mixture problems
    against the issue-7 targets (:data:`TUNED_TARGETS`).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

import gddim_numerics as gd
from gddim_numerics import baselines  # noqa: F401  (importing registers the baseline methods)
from gddim_numerics import auto
from gddim_numerics.layout import dense_operator

DATA_KINDS = ("gaussian", "mixture", "dirac")
DEFAULT_NFE = (5, 10, 20, 50, 100, 200)
QUICK_NFE = (5, 10, 20)
DEFAULT_RK45_TOLERANCES = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
QUICK_RK45_TOLERANCES = (1e-3, 1e-5)
RK45_BUDGET = 20_000
DEFAULT_GRID_POWER = 2.0
REFERENCE_RTOL, REFERENCE_ATOL = 1e-10, 1e-12
N_BOOTSTRAP = 20
MIXTURE_WEIGHTS = (0.2, 0.3, 0.5)
ORDER_FIT_POINTS = 3
ORDER_FIT_FLOOR = 1e-10

METRICS = {
    "pathwise": "relative pathwise error ||X - X*||_F / ||X*||_F of the full states (CLD: positions and "
                "velocities) over the start points; X* = exact "
                "probability flow (Gaussian, Dirac) or DOP853 reference, rtol 1e-10 (mixture), from the same "
                "start points",
    "law": "exact distance of output law N(m, C) (by linear response; the sampler is affine on Gaussian data) "
           "to the true marginal N(m*, C*): sqrt(|m - m*|^2 + ||C^1/2 - C*^1/2||_F^2) / sqrt(|m*|^2 + tr C*) "
           "(W2 of the coupling through symmetric roots: = W2 when C, C* commute, an upper bound otherwise)",
    "moments": "the same distance between the sample mean/covariance of the sampler's output and the exact "
               "mean/covariance of the mixture marginal, +- its Monte Carlo standard error s (RMS distance of "
               "bootstrap-resampled moments from the sample moments; by the triangle inequality the noise-free "
               "error lies within about 2 s of the value)",
}

MODE_SWITCH = ("fraction of the start points whose end point is assigned to another mixture component than the "
               "reference end point from the same start point; a point is assigned to the component of largest "
               "posterior responsibility pi_k N(x; m_k, C_k) / p(x) under the exact marginal p_t_end (the Bayes "
               "classifier of the full state; CLD: positions and velocities)")

#: Issue-7 targets: gddim_tuned error / paper-scheme (gddim_q2) error on the mixture problems at NFE 10 and 20.
TUNED_TARGETS = {"vp": 1 / 3, "cld": 1 / 5, "bdm": 1 / 2}
TUNED_TARGET_NFE = (10, 20)
PAPER_SAMPLER, TUNED_SAMPLER = "gddim_q2", "gddim_tuned"

DATA_TITLES = {
    "gaussian": "Gaussian data N(mu, S), anisotropic S",
    "mixture": "3-component Gaussian mixture (weights 0.2/0.3/0.5)",
    "dirac": "a single data point (Dirac, S = Sigma_0)",
}


# ------------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class DiffusionSetup:
    """A diffusion of the study: how to build it and the shape of one clean data sample."""

    title: str
    make: Callable[[], gd.LinearDiffusion]
    data_shape: tuple[int, ...]

    def event_shape(self, diffusion: gd.LinearDiffusion) -> tuple[int, ...]:
        """The state's event shape: the data shape, plus the block axis for ``k > 1`` (CLD's ``[x, v]``)."""
        k = diffusion.block_size
        return self.data_shape + ((k,) if k > 1 else ())


DIFFUSIONS = {
    "vp": DiffusionSetup("VP-SDE (linear beta 0.1..20), 2-D data", gd.VPSDE.linear, (2,)),
    "cld": DiffusionSetup("CLD (M^-1 = 4, Gamma = 1, beta = 4), 2-D positions + velocities", gd.CLD, (2,)),
    "bdm": DiffusionSetup("BDM (gDDIM schedule, sigma_B,max = 10), one-channel 4x4 image",
                          lambda: gd.BDM((4, 4)), (4, 4)),
}


def _no_options(nfe: int) -> dict:
    return {}


def _fixed(**options) -> Callable[[int], dict]:
    return lambda nfe: dict(options)


def _heun_options(nfe: int) -> dict:
    """Heun costs 2 NFE per step; an odd NFE makes the last step an Euler step (Karras et al.)."""
    return {"final_euler": nfe % 2 == 1}


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler of the study: a registered method with fixed options and its theoretical order.

    ``order`` is the global order in the step size (weak order, in law, for stochastic samplers),
    or ``"varies"`` for a sampler whose scheme changes with the NFE; ``diffusions`` restricts the
    sampler to some diffusions (``None``: all); ``builder(diffusion, nfe)``, if given, builds the plan
    itself (a sampler with its own grid).
    """

    method: str
    label: str
    order: float | str
    options: Callable[[int], dict] = _no_options
    stochastic: bool = False
    adaptive: bool = False
    diffusions: tuple[str, ...] | None = None
    builder: Callable[[gd.LinearDiffusion, int], object] | None = None

    def applies_to(self, diffusion: str) -> bool:
        """Whether the sampler is defined for the named diffusion."""
        return self.diffusions is None or diffusion in self.diffusions

    @property
    def min_nfe(self) -> int:
        """The smallest NFE the registered method accepts."""
        return gd.METHODS[self.method].min_nfe

    def build(self, diffusion: gd.LinearDiffusion, nfe: int, grid_power: float = DEFAULT_GRID_POWER):
        """The plan costing exactly ``nfe`` evaluations on a grid uniform in ``t**(1/grid_power)``
        (a sampler with a ``builder`` uses its own grid)."""
        if self.builder is not None:
            return self.builder(diffusion, nfe)
        options = self.options(nfe)
        method = gd.METHODS[self.method]
        ts = gd.time_grid(diffusion, method.steps_for_nfe(nfe, **options), "power", power=grid_power)
        return method.build(diffusion, ts, **options)


SAMPLERS = {
    "gddim_q1": SamplerSpec("gddim", "gDDIM q=1 (K=R, deterministic)", 1, _fixed(order=1)),
    "gddim_q2": SamplerSpec("gddim", "gDDIM q=2 (multistep)", 2, _fixed(order=2)),
    "gddim_q3": SamplerSpec("gddim", "gDDIM q=3 (multistep)", 3, _fixed(order=3)),
    "gddim_tuned": SamplerSpec("gddim_auto", "gDDIM tuned defaults (form, order, corrector, own grid per NFE)",
                               "varies", builder=lambda diffusion, nfe: auto.auto_plan(diffusion, nfe)),
    "gddim_L": SamplerSpec("gddim_L", "K=L ablation of gDDIM, q=1", 1, _fixed(order=1)),
    "gddim_lam0.5": SamplerSpec("gddim", "stochastic gDDIM, lambda=0.5", 1, _fixed(order=1, lam=0.5),
                                stochastic=True),
    "gddim_lam1": SamplerSpec("gddim", "stochastic gDDIM, lambda=1", 1, _fixed(order=1, lam=1.0), stochastic=True),
    "em": SamplerSpec("em", "Euler-Maruyama, reverse SDE (lambda=1)", 1, _fixed(lam=1.0), stochastic=True),
    "euler": SamplerSpec("euler", "probability-flow Euler", 1),
    "heun": SamplerSpec("heun", "probability-flow Heun (2 NFE/step)", 2, _heun_options),
    "rk45": SamplerSpec("rk45", "RK45 on the probability flow (adaptive, rtol=atol)", 5, adaptive=True),
    "sscs": SamplerSpec("sscs", "SSCS (CLD's symmetric splitting)", 1, stochastic=True, diffusions=("cld",)),
    "ancestral": SamplerSpec("ancestral", "ancestral sampling (DDPM / BDM)", 1, stochastic=True,
                             diffusions=("vp", "bdm")),
}

#: The paper's deterministic gDDIM; the best of them is the reference of the speed-up table.
GDDIM_PAPER = ("gddim_q1", "gddim_q2", "gddim_q3")
GDDIM_DETERMINISTIC = GDDIM_PAPER + (TUNED_SAMPLER,)


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs; :meth:`check` refuses bad input with a message that names the fix.

    Attributes
    ----------
    diffusions, samplers, data : tuple of str
        Keys of :data:`DIFFUSIONS`, :data:`SAMPLERS` and :data:`DATA_KINDS`.
    nfe : tuple of int
        Network evaluations per sample for the grid-based samplers (sorted, distinct).
    rk45_tolerances : tuple of float
        ``rtol = atol`` values of the adaptive RK45 baseline (its NFE is measured).
    seed : int
        Seed of the problem parameters, start points and sampler noise.
    n_paths : int
        Start points of the pathwise error.
    n_mc : int
        Samples of the Monte Carlo moment distance.
    grid_power : float
        Grids are uniform in ``t**(1/grid_power)`` (2: the papers' "quadratic" grid).
    target : float
        Relative error of the "NFE to reach a target error" table.
    data_std : float
        Scale of the data covariance (Gaussian data and mixture components).
    """

    diffusions: tuple[str, ...] = tuple(DIFFUSIONS)
    samplers: tuple[str, ...] = tuple(SAMPLERS)
    data: tuple[str, ...] = DATA_KINDS
    nfe: tuple[int, ...] = DEFAULT_NFE
    rk45_tolerances: tuple[float, ...] = DEFAULT_RK45_TOLERANCES
    seed: int = 0
    n_paths: int = 64
    n_mc: int = 10_000
    grid_power: float = DEFAULT_GRID_POWER
    target: float = 1e-3
    data_std: float = 0.2
    quick: bool = False

    @classmethod
    def quick_config(cls) -> StudyConfig:
        """The ``--quick`` configuration: every code path in seconds (NFE 5, 10, 20; fewer samples)."""
        return cls(nfe=QUICK_NFE, rk45_tolerances=QUICK_RK45_TOLERANCES, n_paths=16, n_mc=2_000, quick=True)

    def check(self) -> None:
        """Raise ``ValueError`` naming the bad option and the valid values."""
        _check_names("diffusion", self.diffusions, DIFFUSIONS)
        _check_names("sampler", self.samplers, SAMPLERS)
        _check_names("data kind", self.data, DATA_KINDS)
        if not self.nfe or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.nfe):
            raise ValueError(f"nfe must be positive integers; got {list(self.nfe)}")
        if list(self.nfe) != sorted(set(self.nfe)):
            raise ValueError(f"nfe must be sorted and distinct; got {list(self.nfe)}")
        for name in self.samplers:
            spec = SAMPLERS[name]
            if not spec.adaptive and self.nfe[0] < spec.min_nfe:
                raise ValueError(f"sampler {name!r} needs NFE >= {spec.min_nfe}; the smallest --nfe is {self.nfe[0]}")
        if not any(SAMPLERS[s].applies_to(d) for s in self.samplers for d in self.diffusions):
            raise ValueError(f"none of the samplers {list(self.samplers)} applies to the diffusions "
                             f"{list(self.diffusions)} (sscs is CLD-only, ancestral is VP/BDM-only)")
        _check_positive_finite("target", self.target, upper=1.0)
        _check_positive_finite("data_std", self.data_std)
        _check_positive_finite("grid_power", self.grid_power)
        for tol in self.rk45_tolerances:
            _check_positive_finite("rk45 tolerance", tol, upper=1.0)
        for name in ("n_paths", "n_mc"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2; got {getattr(self, name)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")

    def pairs(self) -> Iterator[tuple[str, str]]:
        """The ``(diffusion, sampler)`` pairs that run (samplers restricted to some diffusions skip the rest)."""
        for d in self.diffusions:
            for s in self.samplers:
                if SAMPLERS[s].applies_to(d):
                    yield d, s


def _check_names(what: str, names: Sequence[str], valid) -> None:
    if not names:
        raise ValueError(f"no {what} selected; valid: {', '.join(valid)}")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")


def _check_positive_finite(name: str, value: float, upper: float = math.inf) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < upper):
        bound = f" and below {upper:g}" if math.isfinite(upper) else ""
        raise ValueError(f"{name} must be a finite number above 0{bound}; got {value!r}")


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator determined by ``seed`` and the text ``keys`` (independent streams per purpose)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


# ------------------------------------------------------------------------------------ problems
def _lift(diffusion: gd.LinearDiffusion, event_shape: tuple[int, ...], mean: np.ndarray,
          cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clean data ``N(mean, cov)`` as a law of the full state at ``t = 0`` (augmented sense, MATH.md §1.4).

    The data sit in the first entry of each ``k``-block (CLD's position; velocity mean 0), and the
    state covariance is ``Sigma_0 + E cov E^T``.
    """
    k = diffusion.block_size
    embed = np.zeros((mean.size * k, mean.size))
    embed[np.arange(mean.size) * k, np.arange(mean.size)] = 1.0
    sigma0 = dense_operator(diffusion, diffusion.initial_covariance, event_shape)
    return (embed @ mean).reshape(event_shape), sigma0 + embed @ cov @ embed.T


def make_problems(name: str, diffusion: gd.LinearDiffusion, kinds: Sequence[str], seed: int,
                  data_std: float) -> dict:
    """The exact-score problems of one diffusion (parameters drawn from ``seed`` and the diffusion's name).

    Returns
    -------
    dict
        ``kind -> GaussianData | GaussianMixture | DiracData``.
    """
    setup = DIFFUSIONS[name]
    event_shape = setup.event_shape(diffusion)
    d = math.prod(setup.data_shape)
    rng = _rng(seed, "problem", name)
    mean = 0.5 * rng.standard_normal(d)
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
    cov = data_std**2 * (rotation * np.linspace(0.5, 1.5, d)) @ rotation.T
    centres = rng.standard_normal((len(MIXTURE_WEIGHTS), d))
    makers = {
        "gaussian": lambda: gd.GaussianData(diffusion, event_shape, *_lift(diffusion, event_shape, mean, cov)),
        "dirac": lambda: gd.DiracData(diffusion, event_shape, _lift(diffusion, event_shape, mean, cov)[0]),
        "mixture": lambda: gd.GaussianMixture(
            diffusion, event_shape, MIXTURE_WEIGHTS,
            *map(np.stack, zip(*(_lift(diffusion, event_shape, c, data_std**2 * np.eye(d)) for c in centres)))),
    }
    return {kind: makers[kind]() for kind in kinds}


@dataclass
class Case:
    """One diffusion of the study with its problems."""

    name: str
    diffusion: gd.LinearDiffusion
    problems: dict


def prepare_cases(config: StudyConfig) -> list[Case]:
    """Build the diffusions and problems (cheap); raises ``ValueError`` on bad problem parameters."""
    cases = []
    for name in config.diffusions:
        diffusion = DIFFUSIONS[name].make()
        cases.append(Case(name, diffusion, make_problems(name, diffusion, config.data, config.seed, config.data_std)))
    return cases


# ------------------------------------------------------------------------------------ distances
def psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (rounding-level negative eigenvalues count as 0)."""
    lam, vec = np.linalg.eigh(0.5 * (cov + cov.T))
    return (vec * np.sqrt(np.maximum(lam, 0.0))) @ vec.T


def gaussian_distance(mean: np.ndarray, cov: np.ndarray, mean_ref: np.ndarray, cov_ref: np.ndarray) -> float:
    r"""Relative distance of :math:`N(m, C)` to :math:`N(m^*, C^*)`.

    :math:`\sqrt{|m - m^*|^2 + \|C^{1/2} - C^{*1/2}\|_F^2}\,/\,\sqrt{|m^*|^2 + \operatorname{tr}C^*}`:
    the 2-Wasserstein cost of the coupling through symmetric square roots, relative to the RMS
    norm of the reference. It equals :math:`W_2` when the covariances commute and bounds it from
    above otherwise; unlike the Bures formula it has no cancellation, so it resolves ~1e-15.
    """
    num = np.sum((mean - mean_ref) ** 2) + np.sum((psd_sqrt(cov) - psd_sqrt(cov_ref)) ** 2)
    return float(np.sqrt(num / (np.sum(mean_ref**2) + np.trace(cov_ref))))


def moments(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean ``(D,)`` and covariance ``(D, D)`` of rows ``(n, D)``."""
    return samples.mean(axis=0), np.cov(samples, rowvar=False).reshape(samples.shape[1], samples.shape[1])


def moment_stderr(samples: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOTSTRAP) -> float:
    """Standard error of the sample moments in the :func:`gaussian_distance` metric.

    The RMS distance of bootstrap-resampled moments from the sample moments: by the triangle
    inequality the error of the sample moments differs from that of the sampler's exact output
    law by about this much.
    """
    estimate = moments(samples)
    n = len(samples)
    spread = [gaussian_distance(*moments(samples[rng.integers(0, n, n)]), *estimate) for _ in range(n_boot)]
    return float(np.sqrt(np.mean(np.square(spread))))


def mixture_moments(problem: gd.GaussianMixture, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of the mixture marginal :math:`p_t` (flattened event)."""
    means, covs = problem.component_marginals(t)
    w = problem.weights
    mean = w @ means
    second = np.einsum("k,kij->ij", w, covs + means[:, :, None] * means[:, None, :])
    return mean, second - np.outer(mean, mean)


def affine_output_law(plan, eps_fn, event_shape: tuple[int, ...], mean_start: np.ndarray,
                      cov_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact output law ``(mean, cov)`` of a stochastic sampler that is affine on Gaussian data.

    With an affine network the output is :math:`x = A u_T + \sum_k B_k z_k + c`. One batched call
    with a ``noise(index, shape)`` callable reads off :math:`A` (rows :math:`m_T + e_i`, no noise)
    and every :math:`B_k` (row :math:`m_T` with :math:`z_k = e_j`), so for
    :math:`u_T \sim N(m_T, C_T)` the output is exactly
    :math:`N(A m_T + c,\ A C_T A^\top + \sum_k B_k B_k^\top)` (MATH.md §8.4). It works for every
    affine sampler, with or without :class:`~gddim_numerics.tables.StepTables` (SSCS has none).
    """
    d = mean_start.size
    draws = _count_draws(plan, eps_fn, mean_start.reshape((1,) + event_shape))
    rows = 1 + d + draws * d
    x = np.tile(mean_start, (rows, 1))
    x[1:1 + d] += np.eye(d)

    def noise(index: int, shape: tuple[int, ...]) -> np.ndarray:
        z = np.zeros((rows, d))
        z[1 + d + index * d: 1 + d + (index + 1) * d] = np.eye(d)
        return z.reshape(shape)

    out = plan.sample(eps_fn, x.reshape((rows,) + event_shape), noise=noise).x.reshape(rows, d)
    gain = (out[1:] - out[0]).T
    a, b = gain[:, :d], gain[:, d:]
    cov = a @ cov_start @ a.T + b @ b.T
    return out[0], 0.5 * (cov + cov.T)


def _count_draws(plan, eps_fn, x: np.ndarray) -> int:
    """Number of noise draws of one sample call (a dry run with zero noise)."""
    seen = [-1]

    def zeros(index: int, shape: tuple[int, ...]) -> np.ndarray:
        seen[0] = max(seen[0], index)
        return np.zeros(shape)

    plan.sample(eps_fn, x, noise=zeros)
    return seen[0] + 1


# ------------------------------------------------------------------------------------ mode switches
def assign_components(means: np.ndarray, covs: np.ndarray, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    r"""Index of the component of largest posterior responsibility for each row of ``x``.

    :math:`\arg\max_k\ \log\pi_k - \tfrac12\log\det C_k - \tfrac12(x - m_k)^\top C_k^{-1}(x - m_k)`:
    the Bayes classifier of the mixture :math:`\sum_k\pi_kN(m_k, C_k)`.

    Parameters
    ----------
    means : (K, D) ndarray
    covs : (K, D, D) ndarray
        Symmetric positive definite.
    weights : (K,) ndarray
    x : (B, D) ndarray

    Returns
    -------
    (B,) ndarray of int
    """
    x = np.asarray(x, dtype=np.float64)
    logits = np.empty((len(weights), len(x)))
    for k, (m, c, w) in enumerate(zip(means, covs, weights)):
        chol = np.linalg.cholesky(c)
        z = np.linalg.solve(chol, (x - m).T)
        logits[k] = math.log(w) - np.sum(np.log(np.diag(chol))) - 0.5 * np.sum(z * z, axis=0)
    return np.argmax(logits, axis=0)


def final_components(problem: gd.GaussianMixture, x: np.ndarray, t: float) -> np.ndarray:
    """:func:`assign_components` of the states ``x`` ``(B, *event_shape)`` under the exact marginal ``p_t``."""
    means, covs = problem.component_marginals(t)
    return assign_components(means, covs, problem.weights, np.asarray(x).reshape(len(x), -1))


def mode_switch_fraction(components: np.ndarray, reference_components: np.ndarray) -> float:
    """Fraction of rows whose component differs from the reference's (0 = no trajectory switched mode)."""
    components, reference_components = np.asarray(components), np.asarray(reference_components)
    if components.shape != reference_components.shape or components.size == 0:
        raise ValueError(f"components {components.shape} and reference_components {reference_components.shape} "
                         "must be non-empty and of the same shape")
    return float(np.mean(components != reference_components))


# ------------------------------------------------------------------------------------ measurements
@dataclass
class Measurement:
    """One run of one sampler: measured NFE, error, standard error (``None`` if exact) and status;
    ``mode_switch``: :func:`mode_switch_fraction` (pathwise errors on the mixture only)."""

    nfe: int
    error: float
    stderr: float | None = None
    status: str = "ok"
    mode_switch: float | None = None


class Bench:
    """One (diffusion, problem): start points, references, and the error measures of MATH.md §8."""

    def __init__(self, case: Case, kind: str, config: StudyConfig):
        self.diffusion = case.diffusion
        self.problem = case.problems[kind]
        self.kind = kind
        self.config = config
        self.seed_keys = (case.name, kind)
        self.event_shape = self.problem.event_shape
        t0, t1 = self.diffusion.t_start, self.diffusion.t_end
        self.t_start, self.t_end = t0, t1
        self.paths = self.problem.sample_prior(config.n_paths, _rng(config.seed, "paths", *self.seed_keys))
        if kind == "mixture":
            self.reference = self.problem.reference_flow(self.paths, t0, t1, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)
            self.reference_components = final_components(self.problem, self.reference, t1)
        else:
            self.reference = self.problem.exact_flow(self.paths, t0, t1)
            self.reference_components = None

    def metric(self, spec: SamplerSpec) -> str:
        """Which error measure ``spec`` gets on this problem."""
        if not spec.stochastic:
            return "pathwise"
        return "moments" if self.kind == "mixture" else "law"

    def measure(self, spec: SamplerSpec, plan) -> Measurement:
        """Run ``plan`` and measure its error; a diverging run (NaN/Inf) gives ``status="diverged"``."""
        measure = {"pathwise": self._pathwise, "law": self._law, "moments": self._moments}[self.metric(spec)]
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                result = measure(plan)
        except FloatingPointError:
            return Measurement(plan.nfe, math.inf, status="diverged")
        if not math.isfinite(result.error):
            result.status = "diverged"
        return result

    def _pathwise(self, plan) -> Measurement:
        res = plan.sample(self.problem.eps_R, self.paths)
        status = "ok" if res.success else "stopped: " + res.message
        err = np.linalg.norm(res.x - self.reference) / np.linalg.norm(self.reference)
        switch = None
        if self.reference_components is not None and np.all(np.isfinite(res.x)):
            switch = mode_switch_fraction(final_components(self.problem, res.x, self.t_end),
                                          self.reference_components)
        return Measurement(res.nfe, float(err), status=status, mode_switch=switch)

    def _law(self, plan) -> Measurement:
        mean_start, cov_start = self.problem.marginal(self.t_start)
        mean, cov = affine_output_law(plan, self.problem.eps_R, self.event_shape, mean_start, cov_start)
        return Measurement(plan.nfe, gaussian_distance(mean, cov, *self.problem.marginal(self.t_end)))

    def _moments(self, plan) -> Measurement:
        rng = _rng(self.config.seed, "monte-carlo", *self.seed_keys)
        res = plan.sample(self.problem.eps_R, self.problem.sample_prior(self.config.n_mc, rng), rng=rng)
        samples = np.asarray(res.x).reshape(self.config.n_mc, -1)
        if not np.all(np.isfinite(samples)):
            return Measurement(res.nfe, math.inf, status="diverged")
        error = gaussian_distance(*moments(samples), *mixture_moments(self.problem, self.t_end))
        return Measurement(res.nfe, error, stderr=moment_stderr(samples, rng))


def run_series(spec: SamplerSpec, bench: Bench, config: StudyConfig,
               on_step: Callable[[str], None]) -> list[Measurement]:
    """Measurements of one sampler on one problem: one per NFE (per tolerance for adaptive samplers)."""
    out = []
    if spec.adaptive:
        for tol in config.rk45_tolerances:
            plan = gd.METHODS[spec.method].build(bench.diffusion, None, nfe=RK45_BUDGET, rtol=tol, atol=tol)
            out.append(bench.measure(spec, plan))
            on_step(f"rtol={tol:g}")
    else:
        for nfe in config.nfe:
            out.append(bench.measure(spec, spec.build(bench.diffusion, nfe, config.grid_power)))
            on_step(f"nfe={nfe}")
    return out


# ------------------------------------------------------------------------------------ analysis
def fit_order(nfe: Sequence[float], error: Sequence[float], stderr: Sequence[float | None] | None = None,
              n_points: int = ORDER_FIT_POINTS, floor: float = ORDER_FIT_FLOOR) -> dict:
    r"""Convergence order: the slope of :math:`-\log(\text{error})` vs :math:`\log(\text{NFE})`.

    The fit uses the ``n_points`` largest distinct NFE whose error is finite, above ``floor``
    (round-off) and, for Monte Carlo errors, above 3 standard errors: the asymptotic range the
    data resolve.

    Returns
    -------
    dict
        ``order`` (float or ``None`` when fewer than 2 points qualify), ``log_constant`` (``log C``
        of the fitted :math:`\text{error} \approx C\,\text{NFE}^{-\text{order}}`) and ``nfe_range``
        (``[lo, hi]`` of the points used, or ``None``).
    """
    se = [None] * len(nfe) if stderr is None else list(stderr)
    usable = [(n, e) for n, e, s in zip(nfe, error, se)
              if e is not None and math.isfinite(e) and e > floor and (s is None or e > 3 * s)]
    usable = sorted(dict(usable).items())[-n_points:]  # one point per NFE (the last one measured)
    if len(usable) < 2:
        return {"order": None, "log_constant": None, "nfe_range": None}
    slope, intercept = np.polyfit(np.log([u[0] for u in usable]), np.log([u[1] for u in usable]), 1)
    return {"order": float(-slope), "log_constant": float(intercept), "nfe_range": [usable[0][0], usable[-1][0]]}


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


def extrapolate_nfe(fit: dict, target: float) -> float | None:
    """NFE at which the fitted power law :func:`fit_order` reaches ``target`` (``None`` without a fit)."""
    if fit["order"] is None or fit["order"] <= 0:
        return None
    return float(math.exp((fit["log_constant"] - math.log(target)) / fit["order"]))


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


def _series_dict(metric: str, runs: list[Measurement], target: float, tolerances: Sequence[float] | None) -> dict:
    nfe = [r.nfe for r in runs]
    errors = [r.error for r in runs]
    stderr = [r.stderr for r in runs] if metric == "moments" else None
    fit = fit_order(nfe, errors, stderr)
    reach = nfe_to_target(nfe, errors, target, stderr)
    if reach["bound"] == ">":
        reach["extrapolated"] = extrapolate_nfe(fit, target)
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


def _speedups(series: dict) -> dict:
    """NFE ratios of every sampler to the best paper gDDIM (``gddim``, ``ratios``) and to ``gddim_tuned``
    (``tuned_ratios``; empty when it did not run or does not reach the target)."""
    best = _best_gddim(series)
    tuned_reaches = TUNED_SAMPLER in series and series[TUNED_SAMPLER]["nfe_to_target"]["bound"] in ("=", "<=")
    return {"gddim": best, "ratios": _ratios(series, best),
            "tuned_ratios": _ratios(series, TUNED_SAMPLER) if tuned_reaches else {}}


def tuned_vs_paper(results: dict, nfes: Sequence[int] = TUNED_TARGET_NFE) -> list[dict]:
    """``gddim_tuned`` error ÷ the paper's scheme's error on the mixture problems, against :data:`TUNED_TARGETS`.

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


def tuned_settings(config: StudyConfig, cases: Sequence[Case]) -> dict:
    """The settings ``gddim_tuned`` runs, ``{diffusion: {nfe: options}}``
    (the scheme :func:`gddim_numerics.auto.auto_plan` picks)."""
    def settings(diffusion, nfe):
        report = auto.auto_plan(diffusion, nfe).auto_report
        grid = {"kind": "optimised" if "grid_params" in report else f"power {auto.BASE_POWER:g}"}
        if "first_log_snr" in report:
            grid["first_log_snr"] = report["first_log_snr"]
        return {**report["scheme"], "grid": grid}

    return {c.name: {str(n): settings(c.diffusion, n) for n in config.nfe} for c in cases}


def dirac_exactness(results: dict) -> dict:
    """Largest error over NFE of every gDDIM-family sampler on the Dirac problem, per diffusion.

    With ``K = R`` gDDIM is exact for any step size on a single data point (MATH.md §2.4, §3.2,
    §8.4: also in law for every lambda); ``K = L`` is not where ``L != R`` (CLD).
    """
    out = {}
    for diffusion, by_kind in results.items():
        if "dirac" not in by_kind:
            continue
        series = by_kind["dirac"]["samplers"]
        out[diffusion] = {s: _json_float(max(math.inf if e is None else e for e in v["error"]))
                          for s, v in series.items() if s.startswith("gddim")}  # includes gddim_tuned
    return out


def count_steps(config: StudyConfig) -> int:
    """Progress units of :func:`run_study`: one per reference solve and per sampler run."""
    per_sampler = {s: len(config.rk45_tolerances) if SAMPLERS[s].adaptive else len(config.nfe) for s in config.samplers}
    return sum(len(config.data) * per_sampler[s] for _, s in config.pairs()) + len(config.diffusions) * len(config.data)


def run_study(config: StudyConfig, cases: list[Case] | None = None,
              on_step: Callable[[str], None] | None = None) -> dict:
    """Run the study and return every number as plain dicts (the JSON of the ``validate`` command).

    Parameters
    ----------
    config : StudyConfig
        What to run (checked here).
    cases : list of Case, optional
        Prepared diffusions and problems (:func:`prepare_cases`); built from ``config`` if omitted.
    on_step : callable, optional
        Called with a short label after each of the :func:`count_steps` units of work.

    Returns
    -------
    dict
        ``meta`` (options, metrics, timing), ``problems`` (what was solved), ``samplers`` (labels and
        theoretical orders), ``results[diffusion][data]`` with ``samplers[name]`` (``metric``,
        ``nfe``, ``error``, ``stderr``, ``status``, ``fitted_order``, ``nfe_to_target``) and
        ``speedup`` (the best deterministic paper gDDIM and the NFE ratios to it, ``tuned_ratios``: to
        ``gddim_tuned``); for pathwise series on the mixture also ``mode_switch`` (fractions, per
        NFE); ``dirac_exactness`` (:func:`dirac_exactness`), ``tuned_vs_paper`` (:func:`tuned_vs_paper`,
        with the ``targets``) and, when ``gddim_tuned`` runs, ``tuned_settings`` (:func:`tuned_settings`).
    """
    config.check()
    cases = prepare_cases(config) if cases is None else cases
    step = on_step or (lambda label: None)
    started = time.perf_counter()
    results, problems = {}, {}
    for case in cases:
        problems[case.name] = _describe_case(case, config)
        results[case.name] = {}
        for kind in config.data:
            bench = Bench(case, kind, config)
            step(f"{case.name}/{kind} reference")
            series = {}
            for name in config.samplers:
                spec = SAMPLERS[name]
                if not spec.applies_to(case.name):
                    continue
                runs = run_series(spec, bench, config, lambda label: step(f"{case.name}/{kind}/{name} {label}"))
                tolerances = config.rk45_tolerances if spec.adaptive else None
                series[name] = _series_dict(bench.metric(spec), runs, config.target, tolerances)
            results[case.name][kind] = {"samplers": series, "speedup": _speedups(series)}
    out = {
        "meta": _meta(config, time.perf_counter() - started),
        "problems": problems,
        "samplers": {s: {"label": SAMPLERS[s].label, "theoretical_order": SAMPLERS[s].order,
                         "stochastic": SAMPLERS[s].stochastic, "adaptive": SAMPLERS[s].adaptive}
                     for s in config.samplers},
        "results": results,
        "dirac_exactness": dirac_exactness(results),
        "tuned_vs_paper": {"targets": {d: TUNED_TARGETS[d] for d in config.diffusions if d in TUNED_TARGETS},
                           "paper": PAPER_SAMPLER, "rows": tuned_vs_paper(results)},
    }
    if TUNED_SAMPLER in config.samplers:
        out["tuned_settings"] = tuned_settings(config, cases)
    return out


def _describe_case(case: Case, config: StudyConfig) -> dict:
    d = case.diffusion
    return {"title": DIFFUSIONS[case.name].title, "diffusion": repr(d),
            "event_shape": list(DIFFUSIONS[case.name].event_shape(d)),
            "t_start": float(d.t_start), "t_end": float(d.t_end),
            "grid": f"uniform in t^(1/{config.grid_power:g}) from t_start to t_end"
                    + (f" ({TUNED_SAMPLER}: its own grid)" if TUNED_SAMPLER in config.samplers else ""),
            "data": {k: DATA_TITLES[k] + ("" if k == "dirac" else f", data std {config.data_std:g}")
                     for k in config.data}}


def _meta(config: StudyConfig, elapsed: float) -> dict:
    return {
        "version": gd.__version__,
        "options": {
            "diffusions": list(config.diffusions), "samplers": list(config.samplers), "data": list(config.data),
            "nfe": list(config.nfe), "rk45_tolerances": list(config.rk45_tolerances), "seed": config.seed,
            "n_paths": config.n_paths, "n_mc": config.n_mc, "target": config.target,
            "data_std": config.data_std, "grid_power": config.grid_power, "quick": config.quick,
        },
        "metrics": METRICS,
        "mode_switch": MODE_SWITCH,
        "order_fit": f"slope of -log(error) vs log(NFE) over the {ORDER_FIT_POINTS} largest NFE with error above "
                     f"{ORDER_FIT_FLOOR:g} (and above 3 standard errors for Monte Carlo errors)",
        "elapsed_s": round(elapsed, 2),
    }
