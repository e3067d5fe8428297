r"""Mean and covariance of the clean data, in the diffusion's layout (:class:`DataStatistics`).

Conventions (the same as :class:`~gddim_numerics.problems.GaussianData`)
------------------------------------------------------------------------
``mean`` is a full state of shape ``event_shape`` (for CLD the velocity entries are usually 0), and
the covariance is the law at ``t = 0`` *in the augmented sense*:

.. math::  S = \Sigma_0 + \operatorname{Cov}(\text{clean data}) \succeq \Sigma_0 ,

with :math:`\Sigma_0` the diffusion's initial covariance (CLD: the data sit in the position entry and
:math:`\Sigma_0` carries the kernel's initial velocity law). A covariance is given in one of three
layouts:

* dense ``(D, D)`` over the flattened (C order) event;
* per-mode blocks ``(M, k, k)``, the same for every copy (the layout of the diffusion's tables);
* per-mode variances, shape ``event_shape``: :math:`S` is diagonal in the diffusion's mode coordinates
  (:func:`~gddim_numerics.layout.basis_matrix`): per-pixel variances for VP/VE, per-frequency
  variances (the DCT power spectrum) for BDM, per-entry variances for ``k > 1``.

Default statistics
------------------
:meth:`DataStatistics.default` is standardised data, mean 0 and clean covariance :math:`I` — the
scale diffusion models are trained at (the VP prior is :math:`N(0, I)`).
"""

from __future__ import annotations

import hashlib
import warnings
from functools import cached_property

import numpy as np

from ._checks import positive, symmetric_positive_definite
from .diffusion import LinearDiffusion
from .layout import basis_matrix, dense_operator, event_size, validate_event_shape


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    r"""Ledoit–Wolf shrinkage covariance of the rows of ``x`` (``n`` samples of dimension ``D``).

    :math:`\hat S = (1-\delta)S + \delta\mu I` with the sample covariance :math:`S` (divisor ``n``),
    :math:`\mu = \operatorname{tr}S/D` and the optimal intensity
    :math:`\delta = \min\big(1, \tfrac{1}{n^2}\sum_i\|x_ix_i^\top - S\|_F^2 / \|S - \mu I\|_F^2\big)`
    (Ledoit & Wolf 2004, centred data). Returns ``(S_hat, delta)``.
    """
    n, d = x.shape
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / n
    mu = np.trace(s) / d
    denom = np.sum((s - mu * np.eye(d)) ** 2)
    # sum_i ||x_i x_i^T - S||_F^2 = sum_i ||x_i||^4 - n ||S||_F^2
    num = (np.sum(np.sum(xc ** 2, axis=1) ** 2) - n * np.sum(s ** 2)) / n ** 2
    delta = 1.0 if denom <= 0 else float(min(1.0, max(0.0, num / denom)))
    return (1 - delta) * s + delta * mu * np.eye(d), delta


def sigma0_mode_diagonal(diffusion: LinearDiffusion, event_shape: tuple) -> np.ndarray:
    """Diagonal of :math:`\\Sigma_0` in mode coordinates, shape ``event_shape``."""
    s0 = np.diagonal(diffusion.initial_covariance, axis1=-2, axis2=-1)  # (M, k)
    if diffusion.n_modes > 1:  # DCT basis: the last two event axes are the modes
        return np.broadcast_to(s0[:, 0].reshape(event_shape[-2:]), event_shape).copy()
    return np.broadcast_to(s0[0], event_shape).copy()


class DataStatistics:
    r"""Mean and covariance of the data at ``t = 0`` for one diffusion and event shape.

    Parameters
    ----------
    diffusion : LinearDiffusion
    event_shape : tuple of int
        Shape of one sample (fits the diffusion's layout).
    mean : array_like, shape ``event_shape``
        Data mean :math:`\mu` (full state).
    cov : array_like
        :math:`S \succeq \Sigma_0` (augmented sense, see the module docstring): dense ``(D, D)``,
        per-mode blocks ``(M, k, k)`` or per-mode variances of shape ``event_shape``.

    Attributes
    ----------
    dense_cov : (D, D) ndarray or None
        :math:`S` when given dense or as blocks; ``None`` when given as per-mode variances.
    mode_variances : ndarray or None
        :math:`S` in mode coordinates (shape ``event_shape``) when given as per-mode variances.
    """

    def __init__(self, diffusion: LinearDiffusion, event_shape, mean, cov):
        if not isinstance(diffusion, LinearDiffusion):
            raise TypeError(f"diffusion must be a LinearDiffusion; got {type(diffusion).__name__}")
        self.diffusion = diffusion
        self.event_shape = validate_event_shape(diffusion, event_shape)
        self.dim = event_size(self.event_shape)
        mean = np.asarray(mean, dtype=np.float64)
        if mean.shape != self.event_shape:
            raise ValueError(f"mean must have the event shape {self.event_shape}; got {mean.shape}")
        if not np.all(np.isfinite(mean)):
            raise ValueError("mean must be finite (no NaN/Inf)")
        self.mean = mean.copy()
        self.mean.setflags(write=False)
        self.dense_cov, self.mode_variances = self._check_cov(cov)

    # ------------------------------------------------------------------ checks
    def _check_cov(self, cov):
        a = np.asarray(cov, dtype=np.float64)
        m, k, d = self.diffusion.n_modes, self.diffusion.block_size, self.dim
        if not np.all(np.isfinite(a)):
            raise ValueError("cov must be finite (no NaN/Inf)")
        sigma0_modes = self._sigma0_mode_diagonal()
        if a.shape == self.event_shape and a.shape != (m, k, k) and a.shape != (d, d):
            gap = a - sigma0_modes
            if np.any(gap < -1e-12 * max(1.0, float(np.max(np.abs(a))))):
                raise ValueError(
                    "cov (per-mode variances) must be >= the diffusion's initial variance Sigma_0 in every mode: "
                    "S is the law at t = 0 in the augmented sense, Sigma_0 + the clean data's variance; "
                    f"the smallest excess is {gap.min():.3g}")
            if k > 1 and np.any(np.abs(self._sigma0_offdiag()) > 0):
                raise ValueError(
                    f"cov as per-mode variances (shape {self.event_shape}) cannot hold the off-diagonal initial "
                    f"covariance Sigma_0 of {self.diffusion!r}; pass (M, k, k) blocks or a dense (D, D) matrix")
            out = a.copy()
            out.setflags(write=False)
            return None, out
        if a.shape == (m, k, k):
            a = dense_operator(self.diffusion, a, self.event_shape)
        elif a.shape != (d, d):
            raise ValueError(
                f"cov must have shape (D, D) = {(d, d)}, per-mode blocks (M, k, k) = {(m, k, k)} or per-mode "
                f"variances {self.event_shape}; got {a.shape}")
        symmetric_positive_definite(a, "cov", allow_semidefinite=True)
        gap = np.linalg.eigvalsh(a - self._sigma0_dense()).min()
        if gap < -1e-12 * max(1.0, float(np.max(np.abs(a)))):
            raise ValueError(
                "cov must satisfy S >= Sigma_0 (the diffusion's initial covariance): S is the law at t = 0 in the "
                f"augmented sense, Sigma_0 + the clean data's covariance; the smallest eigenvalue of S - Sigma_0 "
                f"is {gap:.3g}")
        a = 0.5 * (a + a.T)
        a.setflags(write=False)
        return a, None

    def _sigma0_dense(self) -> np.ndarray:
        return dense_operator(self.diffusion, self.diffusion.initial_covariance, self.event_shape)

    def _sigma0_offdiag(self) -> np.ndarray:
        s0 = self.diffusion.initial_covariance
        return s0 - s0 * np.eye(s0.shape[-1])

    def _sigma0_mode_diagonal(self) -> np.ndarray:
        return sigma0_mode_diagonal(self.diffusion, self.event_shape)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def default(cls, diffusion: LinearDiffusion, event_shape) -> "DataStatistics":
        """Standardised data: mean 0, clean covariance ``I`` (per-mode variances ``Sigma_0 + 1``).

        For ``k > 1`` (CLD) only the first block entry (the position) carries data.
        """
        ev = validate_event_shape(diffusion, event_shape)
        clean = np.ones(ev)
        if diffusion.block_size > 1:
            clean = np.zeros(ev)
            clean[..., 0] = 1.0
            s0 = dense_operator(diffusion, diffusion.initial_covariance, ev)
            return cls(diffusion, ev, np.zeros(ev), s0 + np.diag(clean.ravel()))
        return cls(diffusion, ev, np.zeros(ev), sigma0_mode_diagonal(diffusion, ev) + clean)

    @classmethod
    def from_problem(cls, problem) -> "DataStatistics":
        r"""Exact moments at ``t = 0`` of a ``GaussianData`` / ``DiracData`` / ``GaussianMixture``.

        Mixture: :math:`\bar\mu = \sum_k\pi_k\mu_k`,
        :math:`S = \sum_k\pi_k\big(S_k + (\mu_k-\bar\mu)(\mu_k-\bar\mu)^\top\big)`.
        """
        from .components import GaussianComponents

        if not isinstance(problem, GaussianComponents):
            raise TypeError("problem must be a GaussianData, DiracData or GaussianMixture; got "
                            f"{type(problem).__name__}")
        w, mu = problem.weights, problem._means
        mean = w @ mu
        dev = mu - mean
        cov = np.einsum("k,kij->ij", w, problem.covs) + np.einsum("k,ki,kj->ij", w, dev, dev)
        return cls(problem.diffusion, problem.event_shape, mean.reshape(problem.event_shape), cov)

    @classmethod
    def from_samples(cls, diffusion: LinearDiffusion, samples, layout: str | None = None) -> "DataStatistics":
        r"""Estimate from clean data samples ``(n, *event_shape)`` (full states; CLD velocities usually 0).

        ``layout="dense"``: the sample covariance when ``n > D``, else the Ledoit–Wolf shrinkage
        estimate (:func:`ledoit_wolf`; a ``UserWarning`` names it); ``layout="modes"``: per-mode
        variances (the power spectrum for BDM), unbiased (divisor ``n - 1``). Default: ``"dense"`` for
        ``D <= 1024``, else ``"modes"``. Then :math:`\Sigma_0` is added (augmented sense).
        """
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim < 2:
            raise ValueError(f"samples must have shape (n, *event_shape); got {x.shape}")
        ev = validate_event_shape(diffusion, x.shape[1:])
        n, d = x.shape[0], event_size(ev)
        if not np.all(np.isfinite(x)):
            raise ValueError("samples must be finite (no NaN/Inf)")
        if n < 2:
            raise ValueError(f"samples must hold at least 2 samples to estimate a covariance; got {n}")
        layout = ("dense" if d <= 1024 else "modes") if layout is None else layout
        if layout not in ("dense", "modes"):
            raise ValueError(f"layout must be 'dense', 'modes' or None; got {layout!r}")
        flat = x.reshape(n, d)
        mean = flat.mean(axis=0).reshape(ev)
        if layout == "modes":
            coords = flat @ basis_matrix(diffusion, ev)
            if n < 10:
                warnings.warn(f"from_samples: per-mode variances from only {n} samples (unbiased sample variance); "
                              "expect errors of order 1/sqrt(n)", UserWarning, stacklevel=2)
            return cls(diffusion, ev, mean, sigma0_mode_diagonal(diffusion, ev) + coords.var(axis=0, ddof=1).reshape(ev))
        if n > d:
            clean = np.cov(flat, rowvar=False, ddof=1).reshape(d, d)
        else:
            clean, delta = ledoit_wolf(flat)
            warnings.warn(f"from_samples: n = {n} samples <= D = {d}: using the Ledoit-Wolf shrinkage estimator "
                          f"(intensity {delta:.3g})", UserWarning, stacklevel=2)
        return cls(diffusion, ev, mean, dense_operator(diffusion, diffusion.initial_covariance, ev) + clean)

    # ------------------------------------------------------------------ variants
    def _mode_excess(self) -> np.ndarray:
        """Clean covariance in mode coordinates: dense ``(D, D)`` or diagonal ``event_shape``."""
        if self.mode_variances is not None:
            return self.mode_variances - self._sigma0_mode_diagonal()
        v = basis_matrix(self.diffusion, self.event_shape)
        return v.T @ (self.dense_cov - self._sigma0_dense()) @ v

    def diagonal(self) -> "DataStatistics":
        """The same statistics with the clean covariance cut to its diagonal in mode coordinates."""
        if self.mode_variances is not None:
            return self
        excess = np.diagonal(self._mode_excess()).reshape(self.event_shape)
        if self.diffusion.block_size > 1:
            return DataStatistics(self.diffusion, self.event_shape, self.mean,
                                  self._sigma0_dense() + np.diag(excess.ravel()))
        return DataStatistics(self.diffusion, self.event_shape, self.mean, self._sigma0_mode_diagonal() + excess)

    def scaled(self, c: float) -> "DataStatistics":
        r"""Statistics of the data scaled by ``c`` (:math:`x \to c x`): mean :math:`c\mu`, clean covariance :math:`c^2`."""
        c = positive(c, "c")
        if self.mode_variances is not None:
            base = self._sigma0_mode_diagonal()
            return DataStatistics(self.diffusion, self.event_shape, c * self.mean,
                                  base + c * c * (self.mode_variances - base))
        base = self._sigma0_dense()
        return DataStatistics(self.diffusion, self.event_shape, c * self.mean, base + c * c * (self.dense_cov - base))

    # ------------------------------------------------------------------ identity
    @cached_property
    def fingerprint(self) -> str:
        """A hash of the mean and covariance (cache key of plans chosen for these statistics)."""
        h = hashlib.sha1()
        h.update(repr(self.event_shape).encode())
        for a in (self.mean, self.dense_cov, self.mode_variances):
            h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        layout = "dense" if self.dense_cov is not None else "per-mode variances"
        return f"DataStatistics({self.diffusion!r}, event_shape={self.event_shape}, {layout})"
