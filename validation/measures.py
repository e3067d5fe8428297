r"""Error measures of the validation study: distances between laws, Monte Carlo errors, mode switches.

Every function is host NumPy in float64 and independent of the samplers it judges.

Distances
    :func:`gaussian_distance` between :math:`N(m, C)` and :math:`N(m^*, C^*)`, the exact output law
    of an affine stochastic sampler (:func:`affine_output_law`) and sample moments with a bootstrap
    standard error (:func:`moments`, :func:`moment_stderr`).

Mode switches (mixture data)
    :func:`assign_components` is the Bayes classifier of a Gaussian mixture;
    :func:`mode_switch_fraction` counts the end points assigned to another component than the
    reference's; :func:`robust_points` marks the start points whose reference component is well
    determined (unchanged under a tiny perturbation of the start point and a tighter solve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import gddim_numerics as gd

N_BOOTSTRAP = 20


@dataclass
class Measurement:
    """One run of one sampler: measured NFE, error, standard error (``None`` if exact) and status;
    ``mode_switch``: :func:`mode_switch_fraction` (pathwise errors on the mixture only)."""

    nfe: int
    error: float
    stderr: float | None = None
    status: str = "ok"
    mode_switch: float | None = None


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
    :math:`N(A m_T + c,\ A C_T A^\top + \sum_k B_k B_k^\top)`. It works for every
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



def robust_points(reference: np.ndarray, checks: list[np.ndarray]) -> np.ndarray:
    """Start points whose reference end component is robust: the same in every check.

    Parameters
    ----------
    reference : (B,) ndarray of int
        Component of each reference end point (:func:`final_components`).
    checks : list of (B,) ndarray of int
        Components of the same start points' end points under a perturbation of the start point
        or a tighter reference solve.

    Returns
    -------
    (B,) ndarray of bool
        ``True`` where every check agrees with ``reference``: the point is far enough from the
        flow's separatrix that its exact end component is determined, so a sampler's error on it
        converges instead of stalling at the distance between two components.
    """
    reference = np.asarray(reference)
    robust = np.ones(reference.shape, dtype=bool)
    for check in checks:
        robust &= np.asarray(check) == reference
    return robust
