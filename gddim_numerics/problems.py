r"""Exact-score problems: Gaussian, Dirac and Gaussian-mixture data under any linear diffusion.

Data and marginals (docs/math §8.1, §8.3)
-----------------------------------------
The data law is given *in the augmented sense*: the state at ``t = 0`` is
:math:`u_0 \sim \sum_k \pi_k N(\mu_k, S_k)` with :math:`S_k \succeq \Sigma_0`, i.e. a clean data
point :math:`\bar u_0 \sim \sum_k \pi_k N(\mu_k, S_k - \Sigma_0)` seen through the diffusion's
kernel :math:`N(\Psi(t,0)\bar u_0, \Sigma_t)`. ``S_k = Σ_0`` is a Dirac point (for CLD: a position
with the kernel's initial velocity law). Every component stays Gaussian:

.. math::
    p_t = \sum_k \pi_k N(m^k_t, C^k_t),\qquad m^k_t = \Psi(t,0)\mu_k,\qquad
    C^k_t = \Psi(t,0)(S_k - \Sigma_0)\Psi(t,0)^\top + \Sigma_t .

Exact network outputs (docs/math §6)
------------------------------------
With responsibilities :math:`w_k(u) = \operatorname{softmax}_k\big(\log\pi_k + \log N(u; m^k_t, C^k_t)\big)`
(log-sum-exp), the score is :math:`s(u,t) = -\sum_k w_k(u)\,(C^k_t)^{-1}(u - m^k_t)` and

* :math:`\epsilon_R = -R_t^\top s`, :math:`\epsilon_L = -L_t^\top s` (``R_t`` the gDDIM factor,
  ``L_t`` the diffusion's per-mode Cholesky factor);
* the data prediction (Tweedie) :math:`D(u,t) = \Psi(0,t)(u + \Sigma_t s) = E[\bar u_0 \mid u_t = u]`.

These take states ``(..., *event_shape)`` of any array-API namespace (NumPy, PyTorch, CuPy,
array-api-strict, ...) and a scalar time, and return an array of the same shape, namespace,
device and dtype. The float64 tables are computed once per time and moved to the state's
namespace once per (time, namespace, device, dtype). Events are flattened in C order as in
:mod:`gddim_numerics.layout`, so every operator is a dense ``D x D`` matrix.

Reference flows (docs/math §8.2)
--------------------------------
:meth:`GaussianData.exact_flow` is the exact probability-flow solution for Gaussian data;
``reference_flow`` integrates the probability-flow ODE
:math:`\dot u = F_t u - \tfrac12 G_tG_t^\top \nabla\log p_t(u)` with DOP853 for any problem.
"""

from __future__ import annotations

from functools import cached_property, lru_cache

import numpy as np

from .components import _TABLE_CACHE_SIZE, GaussianComponents
from .diffusion import LinearDiffusion
from .layout import basis_matrix


class GaussianMixture(GaussianComponents):
    r"""Gaussian-mixture data :math:`u_0 \sim \sum_k\pi_kN(\mu_k, S_k)` (docs/math §8.3).

    Parameters
    ----------
    diffusion : LinearDiffusion
        The forward diffusion.
    event_shape : tuple of int
        Shape of one sample, fitting the diffusion's layout
        (:func:`~gddim_numerics.layout.validate_event_shape`).
    weights : (K,) array_like
        Positive weights :math:`\pi_k` summing to 1.
    means : array_like, shape ``(K, *event_shape)``
        Component means :math:`\mu_k` (full states; for CLD the velocity entries are usually 0).
    covs : None or (K, D, D) or (K, M, k, k) array_like, optional
        :math:`S_k \succeq \Sigma_0` in the augmented sense (:math:`S_k - \Sigma_0` is the clean
        data's covariance), dense or as per-mode blocks. ``None``: every :math:`S_k = \Sigma_0`,
        a Dirac mixture.

    Notes
    -----
    The flow has no closed form; :meth:`reference_flow` integrates it.
    """

    def __init__(self, diffusion: LinearDiffusion, event_shape, weights, means, covs=None):
        super().__init__(diffusion, event_shape)
        self.weights = _check_weights(weights)
        n = len(self.weights)
        self._means = _check_finite(means, (n,) + self.event_shape, "means").reshape(n, self.dim)
        if covs is None:
            covs = [None] * n
        elif np.ndim(covs) == 0 or len(covs) != n:
            raise ValueError(f"covs must hold one covariance per component (K = {n}); got {np.shape(covs)}")
        self.covs = np.stack([self._check_cov(c, f"covs[{i}]") for i, c in enumerate(covs)])

    def marginal(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        r"""Component means ``(K, D)`` and covariances ``(K, D, D)`` of :math:`p_t` (:meth:`component_marginals`)."""
        return self.component_marginals(t)


class GaussianData(GaussianComponents):
    r"""Gaussian data :math:`u_0 \sim N(\mu, S)` under any linear diffusion (docs/math §8.1–8.2).

    Parameters
    ----------
    diffusion : LinearDiffusion
        The forward diffusion.
    event_shape : tuple of int
        Shape of one sample, fitting the diffusion's layout.
    mean : array_like, shape ``event_shape``
        :math:`\mu` (a full state; for CLD the velocity entries are usually 0).
    cov : None or (D, D) or (M, k, k) array_like, optional
        :math:`S \succeq \Sigma_0` at ``t = 0`` (augmented sense), dense or as per-mode blocks;
        ``None`` means :math:`S = \Sigma_0` (Dirac data).

    Notes
    -----
    :math:`p_t = N(m_t, C_t)` with :math:`m_t = \Psi(t,0)\mu` and
    :math:`C_t = \Psi(t,0)(S-\Sigma_0)\Psi(t,0)^\top + \Sigma_t`; the exact network output
    :math:`\epsilon_K(u,t) = K_t^\top C_t^{-1}(u - m_t)` is affine in ``u``.
    """

    def __init__(self, diffusion: LinearDiffusion, event_shape, mean, cov=None):
        super().__init__(diffusion, event_shape)
        self.weights = np.ones(1)
        self._means = _check_finite(mean, self.event_shape, "mean").reshape(1, self.dim)
        self.covs = self._check_cov(cov, "cov")[None]
        self._flow_matrices = lru_cache(maxsize=_TABLE_CACHE_SIZE)(self._flow_matrix)

    @property
    def mean(self) -> np.ndarray:
        r""":math:`\mu`, shape ``event_shape``."""
        return self.means[0]

    @property
    def cov(self) -> np.ndarray:
        r""":math:`S`, shape ``(D, D)``."""
        return self.covs[0]

    def marginal(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        r"""Mean :math:`m_t` ``(D,)`` and covariance :math:`C_t` ``(D, D)`` of :math:`p_t`."""
        means, covs = self.component_marginals(t)
        return means[0], covs[0]

    def exact_flow(self, x_s, s: float, t: float) -> np.ndarray:
        r"""Exact probability-flow solution :math:`u(t) = m_t + Q_tQ_s^{-1}(u(s) - m_s)` (docs/math §8.2).

        ``Q`` solves :math:`\dot Q = (F_t + \tfrac12G_tG_t^\top C_t^{-1})Q`. The flow matrix
        :math:`\Phi(t,s) = Q_tQ_s^{-1}` is

        * in closed form :math:`W\operatorname{diag}(\sqrt{c_t/c_s})\,W^\top`,
          :math:`c_\tau = \operatorname{diag}(W^\top C_\tau W)`, when one orthonormal ``W``
          diagonalizes every :math:`F_\tau, G_\tau G_\tau^\top, C_\tau` (then
          :math:`Q_\tau = C_\tau^{1/2}`): ``k = 1`` diffusions with one mode (``W`` = eigenvectors
          of ``S``), or with ``S`` diagonal in the mode basis (BDM: ``W`` = the DCT basis);
        * otherwise the transition matrix of that linear ODE from ``s`` to ``t`` in ``D``
          dimensions (DOP853, rtol 1e-12, atol 1e-14), cached per ``(s, t)``.

        Parameters
        ----------
        x_s : array_like, shape ``(B, *event_shape)``
            States at time ``s``.
        s, t : float
            Start and end times (either order), with :math:`C_s, C_t` nonsingular.

        Returns
        -------
        numpy.ndarray
            float64 states at time ``t``, shape of ``x_s``.
        """
        u = self._host_states(x_s, "x_s")
        s, t = self._check_time(s, "s"), self._check_time(t, "t")
        phi = self._flow_matrices(s, t)
        m_s, m_t = (self._means[0] @ self._dense(self.diffusion.mean_coefficient(tau)).T for tau in (s, t))
        return (m_t + (u - m_s) @ phi.T).reshape(np.shape(x_s))

    @cached_property
    def _flow_basis(self) -> np.ndarray | None:
        """Orthonormal ``W`` diagonalizing every ``C_t`` when the structure gives one, else ``None``."""
        if self.diffusion.block_size != 1:
            return None
        if self.diffusion.n_modes == 1:
            return np.linalg.eigh(self.cov)[1]
        w = basis_matrix(self.diffusion, self.event_shape)
        s_modes = w.T @ self.cov @ w
        off = s_modes - np.diag(np.diag(s_modes))
        return w if np.max(np.abs(off)) <= 1e-12 * max(1.0, float(np.max(np.abs(s_modes)))) else None

    def _flow_matrix(self, s: float, t: float) -> np.ndarray:
        if s == t:
            return np.eye(self.dim)
        if self._flow_basis is not None:
            return self._closed_form_flow(self._flow_basis, s, t)
        return self._ode_flow(s, t)

    def _closed_form_flow(self, w: np.ndarray, s: float, t: float) -> np.ndarray:
        c_s, c_t = (np.einsum("ij,ik,kj->j", w, self.marginal(tau)[1], w) for tau in (s, t))
        if np.any(c_s <= 0) or np.any(c_t <= 0):
            raise ValueError(f"C is singular at s={s:g} or t={t:g}; the flow needs nonsingular marginals")
        return (w * np.sqrt(c_t / c_s)) @ w.T

    def _ode_flow(self, s: float, t: float) -> np.ndarray:
        d = self.dim

        def rhs(tau, y):
            f = self._dense(self.diffusion.drift(tau))
            gg = self._dense(self.diffusion.diffusion(tau))
            a = f + 0.5 * np.linalg.solve(self.marginal(tau)[1], gg).T  # F + GG C^{-1} / 2
            return (a @ y.reshape(d, d)).ravel()

        from scipy.integrate import solve_ivp
        sol = solve_ivp(rhs, (s, t), np.eye(d).ravel(), method="DOP853", rtol=1e-12, atol=1e-14)
        if not sol.success:
            raise RuntimeError(f"exact-flow ODE solve failed: {sol.message}")
        return sol.y[:, -1].reshape(d, d)


class DiracData(GaussianData):
    r"""A single data point: :class:`GaussianData` with :math:`S = \Sigma_0` (docs/math §1.4, §8.1).

    The exact :math:`\epsilon_R` is constant along probability-flow trajectories and one-step
    gDDIM is exact for any step size (docs/math §2.4, §3.2).

    Parameters
    ----------
    diffusion : LinearDiffusion
        The forward diffusion.
    event_shape : tuple of int
        Shape of one sample, fitting the diffusion's layout.
    point : array_like, shape ``event_shape``
        The data point :math:`\mu` (for CLD the velocity entries are usually 0).
    """

    def __init__(self, diffusion: LinearDiffusion, event_shape, point):
        super().__init__(diffusion, event_shape, point, cov=None)


# ---------------------------------------------------------------------- validation helpers
def _check_weights(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array; got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"weights must be finite and positive; got {w!r}")
    if abs(w.sum() - 1.0) > 1e-10:
        raise ValueError(f"weights must sum to 1; they sum to {w.sum():.17g} (divide them by their sum)")
    return w


def _check_finite(values, shape: tuple, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a
