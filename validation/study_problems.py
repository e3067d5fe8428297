r"""The exact-score problems of the validation study and the bench that measures a plan on one of them.

Problems (per diffusion, parameters drawn once from the seed and the diffusion's name)
    ``gaussian``  Gaussian data :math:`N(\mu, S)` with an anisotropic covariance of scale ``data_std``;
    ``mixture``   a 3-component Gaussian mixture (weights 0.2/0.3/0.5, component std ``data_std``);
    ``dirac``     one data point (:math:`S = \Sigma_0`), where gDDIM with ``K = R`` is exact.
    For CLD the data live in the position channel (velocity mean 0, kernel's :math:`\Sigma_0`).

Robust start points (mixture)
    The pathwise reference is a DOP853 solve of the probability flow (rtol 1e-10). A start point
    near a separatrix of the flow ends in one component or another depending on rounding: a
    sampler's error there stalls at the distance between components however many steps it takes,
    and differs between machines. :class:`Bench` keeps only the start points whose reference end
    component is unchanged when the start point moves by :data:`ROBUST_PERTURBATION` (relative, both
    signs) and when the reference is solved at rtol :data:`ROBUST_RTOL`; it reports how many it
    excluded.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import gddim_numerics as gd
from gddim_numerics.layout import dense_operator

from .measures import (Measurement, affine_output_law, final_components, gaussian_distance, mixture_moments,
                       mode_switch_fraction, moment_stderr, moments, robust_points)

DATA_KINDS = ("gaussian", "mixture", "dirac")
MIXTURE_WEIGHTS = (0.2, 0.3, 0.5)
REFERENCE_RTOL, REFERENCE_ATOL = 1e-10, 1e-12
ROBUST_RTOL, ROBUST_ATOL = 1e-12, 1e-14
ROBUST_PERTURBATION = 1e-4

DATA_TITLES = {
    "gaussian": "Gaussian data N(mu, S), anisotropic S",
    "mixture": "3-component Gaussian mixture (weights 0.2/0.3/0.5)",
    "dirac": "a single data point (Dirac, S = Sigma_0)",
}

ROBUST_TEXT = (f"mixture errors and mode switches use only the start points whose reference end component is robust: "
               f"unchanged when the start point moves by {ROBUST_PERTURBATION:g} x its RMS size (one random direction, "
               f"both signs) and when the reference is solved at rtol {ROBUST_RTOL:g}; the others lie on a separatrix "
               "of the flow, where the end component is decided by rounding")


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


def study_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator determined by ``seed`` and the text ``keys`` (independent streams per purpose)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _lift(diffusion: gd.LinearDiffusion, event_shape: tuple[int, ...], mean: np.ndarray,
          cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clean data ``N(mean, cov)`` as a law of the full state at ``t = 0`` (augmented sense).

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
    rng = study_rng(seed, "problem", name)
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


def prepare_cases(config) -> list[Case]:
    """Build the diffusions and problems (cheap); raises ``ValueError`` on bad problem parameters."""
    cases = []
    for name in config.diffusions:
        diffusion = DIFFUSIONS[name].make()
        cases.append(Case(name, diffusion, make_problems(name, diffusion, config.data, config.seed, config.data_std)))
    return cases


def error_measure(stochastic: bool, kind: str) -> str:
    """The error measure of a sampler on data ``kind``: ``pathwise`` (deterministic), else ``law``
    (Gaussian, Dirac: exact by linear response) or ``moments`` (mixture: Monte Carlo)."""
    if not stochastic:
        return "pathwise"
    return "moments" if kind == "mixture" else "law"


@dataclass(frozen=True)
class Reference:
    """What a :class:`Bench` solved once (plain arrays, picklable): the start points ``paths`` at
    ``t_start`` (the robust ones on the mixture), their exact or DOP853 end points ``reference``,
    the mixture components of those (``None`` for other data) and the number of excluded start points."""

    paths: np.ndarray
    reference: np.ndarray
    components: np.ndarray | None
    n_excluded: int


class Bench:
    """One (diffusion, problem): start points, references, and the error measures.

    ``config`` gives ``seed``, ``n_paths`` and ``n_mc`` (a ``StudyConfig``). On the mixture the
    start points are the robust ones (:func:`~.measures.robust_points`); ``n_excluded`` counts
    the others. A :class:`Reference` solved before (:attr:`solved`) can be passed instead of
    solving again.
    """

    def __init__(self, case: Case, kind: str, config, solved: Reference | None = None):
        self.diffusion = case.diffusion
        self.problem = case.problems[kind]
        self.kind = kind
        self.config = config
        self.seed_keys = (case.name, kind)
        self.event_shape = self.problem.event_shape
        self.t_start, self.t_end = self.diffusion.t_start, self.diffusion.t_end
        self.solved = self._solve() if solved is None else solved
        self.paths, self.reference = self.solved.paths, self.solved.reference
        self.reference_components, self.n_excluded = self.solved.components, self.solved.n_excluded

    def _solve(self) -> Reference:
        """Draw the start points and solve their reference end points (robust start points only on the mixture)."""
        t0, t1 = self.t_start, self.t_end
        paths = self.problem.sample_prior(self.config.n_paths, study_rng(self.config.seed, "paths", *self.seed_keys))
        if self.kind != "mixture":
            return Reference(paths, self.problem.exact_flow(paths, t0, t1), None, 0)
        reference = self.problem.reference_flow(paths, t0, t1, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)
        components = final_components(self.problem, reference, t1)
        robust = self.robust_mask(paths, components)
        return Reference(paths[robust], reference[robust], components[robust], int(np.sum(~robust)))

    def robust_mask(self, paths: np.ndarray, components: np.ndarray) -> np.ndarray:
        """Which start points ``paths`` keep their reference end ``components`` (mixture data) when moved by
        :data:`ROBUST_PERTURBATION` (both signs) and when solved at :data:`ROBUST_RTOL`."""
        rng = study_rng(self.config.seed, "robust", *self.seed_keys)
        step = ROBUST_PERTURBATION * np.sqrt(np.mean(paths**2)) * rng.standard_normal(paths.shape)
        moved = self.problem.reference_flow(np.concatenate([paths + step, paths - step]), self.t_start, self.t_end,
                                            rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)
        tight = self.problem.reference_flow(paths, self.t_start, self.t_end, rtol=ROBUST_RTOL, atol=ROBUST_ATOL)
        checks = [final_components(self.problem, x, self.t_end) for x in (*np.split(moved, 2), tight)]
        return robust_points(components, checks)

    def metric(self, spec) -> str:
        """Which error measure ``spec`` (a sampler with a ``stochastic`` flag) gets on this problem."""
        return error_measure(spec.stochastic, self.kind)

    def measure(self, spec, plan) -> Measurement:
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
        rng = study_rng(self.config.seed, "monte-carlo", *self.seed_keys)
        res = plan.sample(self.problem.eps_R, self.problem.sample_prior(self.config.n_mc, rng), rng=rng)
        samples = np.asarray(res.x).reshape(self.config.n_mc, -1)
        if not np.all(np.isfinite(samples)):
            return Measurement(res.nfe, math.inf, status="diverged")
        error = gaussian_distance(*moments(samples), *mixture_moments(self.problem, self.t_end))
        return Measurement(res.nfe, error, stderr=moment_stderr(samples, rng))


