r"""Linear diffusions as batches of small systems.

A linear forward diffusion :math:`du = F_t u\,dt + G_t\,dw` is, in a fixed orthonormal basis, a
batch of ``M`` independent ``k x k`` systems ("modes"). Every host-side quantity is therefore a
float64 array of shape ``t.shape + (M, k, k)``:

* :math:`\Psi(t, s)` solves :math:`\partial_t \Psi(t,s) = F_t \Psi(t,s)`, :math:`\Psi(s,s) = I`;
* :math:`\Sigma_t` solves the Lyapunov ODE :math:`\dot\Sigma = F\Sigma + \Sigma F^\top + GG^\top`
  from :math:`\Sigma_0`;
* :math:`L_t` is the lower Cholesky factor of :math:`\Sigma_t`;
* :math:`R_t` is the gDDIM factor, :math:`\dot R = (F + \tfrac12 GG^\top\Sigma^{-1}) R` with
  :math:`R_0 R_0^\top = \Sigma_0`, so that :math:`R_t R_t^\top = \Sigma_t` for all ``t``.
"""

from __future__ import annotations

import abc
from functools import cached_property

import numpy as np
from numpy.polynomial.legendre import legval

from ._checks import as_times, times_in_range
from .bases import IdentityBasis
from .quadrature import gauss_legendre


def batched_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of every ``k x k`` block of ``a`` (closed forms for ``k = 1, 2``: the adjugate over the determinant).

    Raises
    ------
    numpy.linalg.LinAlgError
        If a block is singular.
    """
    if a.shape[-1] == 1:
        return 1.0 / a
    if a.shape[-1] != 2:
        return np.linalg.inv(a)
    p, q, r, s = a[..., 0, 0], a[..., 0, 1], a[..., 1, 0], a[..., 1, 1]
    det = p * s - q * r
    if not np.all(det != 0):
        raise np.linalg.LinAlgError("Singular matrix")
    out = np.empty(a.shape)
    out[..., 0, 0], out[..., 0, 1], out[..., 1, 0], out[..., 1, 1] = s / det, -q / det, -r / det, p / det
    return out


def batched_cholesky(a: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of every symmetric positive definite ``k x k`` block (closed form for ``k = 2``).

    Raises
    ------
    numpy.linalg.LinAlgError
        If a block is not positive definite.
    """
    if a.shape[-1] != 2:
        return np.linalg.cholesky(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        l11 = np.sqrt(a[..., 0, 0])
        l21 = a[..., 1, 0] / l11
        l22 = np.sqrt(a[..., 1, 1] - l21 * l21)
    if not (np.all(l11 > 0) and np.all(l22 > 0)):
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    out = np.zeros(a.shape)
    out[..., 0, 0], out[..., 1, 0], out[..., 1, 1] = l11, l21, l22
    return out


def batched_transpose(a: np.ndarray) -> np.ndarray:
    """Swap the last two axes."""
    return np.swapaxes(a, -1, -2)


class LinearDiffusion(abc.ABC):
    r"""A linear diffusion ``du = F_t u dt + G_t dw`` split into ``M`` modes of size ``k``.

    Subclasses provide :meth:`drift`, :meth:`diffusion`, :attr:`initial_covariance` and the exact
    :meth:`transition` and :meth:`covariance`; this class derives the rest.

    Attributes
    ----------
    n_modes : int
        Number of independent modes ``M``.
    block_size : int
        Size ``k`` of each mode's block.
    basis : IdentityBasis or DCTBasis
        Orthonormal basis in which the modes are independent.
    time_range : tuple of float
        Closed interval of admissible times ``[t_lower, T]``.
    t_start, t_end : float
        Default first and last time of a sampling grid.
    """

    name: str = "linear"
    n_modes: int = 1
    block_size: int = 1
    basis = IdentityBasis()
    time_range: tuple[float, float] = (0.0, 1.0)
    t_start: float = 1.0
    t_end: float = 1e-3

    # ------------------------------------------------------------------ definitions
    @abc.abstractmethod
    def drift(self, t) -> np.ndarray:
        """Drift matrix :math:`F_t`, shape ``t.shape + (M, k, k)``."""

    @abc.abstractmethod
    def diffusion(self, t) -> np.ndarray:
        r"""Diffusion matrix :math:`G_t G_t^\top`, shape ``t.shape + (M, k, k)``."""

    @property
    @abc.abstractmethod
    def initial_covariance(self) -> np.ndarray:
        r"""Covariance :math:`\Sigma_0` of the kernel at ``t = 0``, shape ``(M, k, k)``."""

    @abc.abstractmethod
    def transition(self, t, s) -> np.ndarray:
        r"""Transition matrix :math:`\Psi(t, s)` (maps a state at ``s`` to ``t``), broadcast."""

    @abc.abstractmethod
    def covariance(self, t) -> np.ndarray:
        r"""Kernel covariance :math:`\Sigma_t`, shape ``t.shape + (M, k, k)``."""

    @abc.abstractmethod
    def gddim_factor(self, t) -> np.ndarray:
        r"""gDDIM factor :math:`R_t` (:math:`R_t R_t^\top = \Sigma_t`), shape ``t.shape + (M, k, k)``."""

    # ------------------------------------------------------------------ derived quantities
    @property
    def shape(self) -> tuple[int, int]:
        """``(M, k)``."""
        return (self.n_modes, self.block_size)

    def check_times(self, t, name: str = "t") -> np.ndarray:
        """Return ``t`` as float64 after checking it lies in :attr:`time_range`."""
        return times_in_range(t, *self.time_range, name=name)

    def check_source_times(self, s, name: str = "s") -> np.ndarray:
        r"""Like :meth:`check_times`, but also admits ``s = 0`` (the data time of :math:`\Psi(t, 0)`)."""
        s = as_times(s, name)
        times_in_range(s[s != 0], *self.time_range, name=name)
        return s

    def mean_coefficient(self, t) -> np.ndarray:
        r"""Mean map :math:`\Psi(t, 0)`: the kernel mean is ``Psi(t, 0) @ u0``."""
        return self.transition(t, 0.0)

    def covariance_inv(self, t) -> np.ndarray:
        r""":math:`\Sigma_t^{-1}`; raises where :math:`\Sigma_t` is singular (e.g. ``t = 0``)."""
        sig = self.covariance(t)
        if self.block_size == 1:
            if np.any(sig <= 0):
                raise ValueError("Sigma_t is singular at some of the requested times t; use t > 0")
            return 1.0 / sig
        return batched_inverse(sig)

    def cholesky(self, t) -> np.ndarray:
        r"""Lower Cholesky factor :math:`L_t` of :math:`\Sigma_t`."""
        sig = self.covariance(t)
        if self.block_size == 1:
            return np.sqrt(sig)
        try:
            return batched_cholesky(sig)
        except np.linalg.LinAlgError as exc:
            raise ValueError("Sigma_t is not positive definite at some requested time t") from exc

    def log_snr(self, t) -> np.ndarray:
        r"""Noise-level measure :math:`\log\big(\operatorname{tr}\Psi\Psi^\top / \operatorname{tr}\Sigma\big)`.

        Summed over modes: :math:`\log \sum_m \|\Psi_m(t,0)\|_F^2 - \log\sum_m\operatorname{tr}\Sigma_{m,t}`.
        For a scalar diffusion (``M = k = 1``) this is the usual log-SNR
        :math:`\log(m_t^2/\sigma_t^2)`; it decreases with ``t`` for every built-in.
        """
        psi = self.mean_coefficient(t)
        sig = self.covariance(t)
        signal = np.sum(psi**2, axis=(-3, -2, -1))
        noise = np.trace(sig, axis1=-2, axis2=-1).sum(axis=-1)
        return np.log(signal) - np.log(noise)

    def prior_covariance(self) -> np.ndarray:
        r"""Covariance of the prior at :attr:`t_start`: :math:`\Sigma_{t_\mathrm{start}}` by default."""
        return self.covariance(self.t_start)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(M={self.n_modes}, k={self.block_size})"


class ScalarModesDiffusion(LinearDiffusion):
    r"""Diffusion with ``k = 1`` modes, each given by its mean coefficient and variance.

    For mode ``m``: :math:`\Psi_m(t, s) = \mu_m(t)/\mu_m(s)`, :math:`\Sigma_m(t) = v_m(t)`,
    :math:`F_m = \tfrac{d}{dt}\log\mu_m`, :math:`g_m^2 = \dot v_m - 2 F_m v_m` and, since every
    matrix commutes, :math:`R_t = L_t = \sqrt{v_m(t)}`.
    """

    block_size = 1

    @abc.abstractmethod
    def _log_mean(self, t: np.ndarray) -> np.ndarray:
        """``log mu_m(t)``, shape ``t.shape + (M,)``."""

    @abc.abstractmethod
    def _dlog_mean(self, t: np.ndarray) -> np.ndarray:
        """``d/dt log mu_m(t)``, shape ``t.shape + (M,)``."""

    @abc.abstractmethod
    def _variance(self, t: np.ndarray) -> np.ndarray:
        """``v_m(t)``, shape ``t.shape + (M,)``."""

    @abc.abstractmethod
    def _dvariance(self, t: np.ndarray) -> np.ndarray:
        """``d/dt v_m(t)``, shape ``t.shape + (M,)``."""

    @staticmethod
    def _as_blocks(a: np.ndarray) -> np.ndarray:
        return a[..., None, None]

    def drift(self, t) -> np.ndarray:
        t = self.check_times(t)
        return self._as_blocks(self._dlog_mean(t))

    def diffusion(self, t) -> np.ndarray:
        t = self.check_times(t)
        return self._as_blocks(self._dvariance(t) - 2.0 * self._dlog_mean(t) * self._variance(t))

    @property
    def initial_covariance(self) -> np.ndarray:
        return self._as_blocks(self._variance(np.asarray(0.0)))

    def transition(self, t, s) -> np.ndarray:
        t = self.check_times(t, "t")
        s = self.check_source_times(s, "s")
        return self._as_blocks(np.exp(self._log_mean(t) - self._log_mean(s)))

    def covariance(self, t) -> np.ndarray:
        t = self.check_times(t)
        return self._as_blocks(self._variance(t))

    def gddim_factor(self, t) -> np.ndarray:
        return self.cholesky(t)

    def std(self, t) -> np.ndarray:
        """Per-mode noise standard deviation ``sqrt(v_m(t))``, shape ``t.shape + (M,)``."""
        return np.sqrt(self._variance(self.check_times(t)))


class _FactorByODE:
    r"""The gDDIM factor :math:`R_t` of a matrix diffusion, by one tight ODE solve.

    Solves :math:`\dot R = F R + \tfrac12 GG^\top R^{-\top}` (DOP853, rtol 1e-12, atol 1e-14 relative
    to the scale of :math:`R`) from :math:`R_{t_0} = \operatorname{chol}\Sigma_{t_0}` with
    ``t0 = 0`` when :math:`\Sigma_0` is positive definite and ``t0 = t_lower`` otherwise (any right
    orthogonal factor gives another valid solution, so the start is a convention). Between solver
    steps the 7th-order dense output is used.
    """

    def __init__(self, diffusion: LinearDiffusion, rtol: float = 1e-12, atol: float = 1e-14):
        from scipy.integrate import solve_ivp

        self.diffusion = diffusion
        m, k = diffusion.n_modes, diffusion.block_size
        sig0 = diffusion.initial_covariance
        t0 = 0.0
        if np.any(np.linalg.eigvalsh(sig0) <= 0):
            t0 = diffusion.time_range[0]
            if t0 <= 0:
                raise ValueError(
                    "Sigma_0 is singular, so R_t must start at a positive time; give the diffusion "
                    "a positive lower time bound (t_lower)"
                )
            sig0 = diffusion.covariance(t0)
        r0 = np.linalg.cholesky(sig0)
        self.t0 = t0

        def rhs(t, y):
            r = y.reshape(m, k, k)
            f = diffusion.drift(t)
            gg = diffusion.diffusion(t)
            r_inv_t = np.swapaxes(np.linalg.inv(r), -1, -2)
            return (f @ r + 0.5 * gg @ r_inv_t).ravel()

        t1 = diffusion.time_range[1]
        self.solution = solve_ivp(
            rhs, (t0, t1), r0.ravel(), method="DOP853", rtol=rtol, atol=atol, dense_output=True
        )
        if not self.solution.success:
            raise RuntimeError(f"R_t ODE solve failed: {self.solution.message}")
        self.nfev = self.solution.nfev

    def __call__(self, t: np.ndarray) -> np.ndarray:
        m, k = self.diffusion.n_modes, self.diffusion.block_size
        flat = np.ravel(t)
        if np.any(flat < self.t0):
            raise ValueError(f"R_t is defined for t >= {self.t0:g}; got {flat[flat < self.t0][:3]!r}")
        vals = self.solution.sol(flat)  # (m*k*k, n)
        return np.moveaxis(vals, -1, 0).reshape(np.shape(t) + (m, k, k))


def _cholesky_rotation_rate(diffusion: LinearDiffusion, t: np.ndarray) -> np.ndarray:
    r"""Rate :math:`\Omega_{21}` of the rotation :math:`O_t = L_t^{-1}R_t` of ``k = 2`` blocks, shape ``t.shape + (M,)``.

    From :math:`R = LO` and :math:`\dot R = (F + \tfrac12 GG^\top\Sigma^{-1})R`:
    :math:`\dot O = \Omega O`, :math:`\Omega = L^{-1}\big[(F + \tfrac12GG^\top\Sigma^{-1})L - \dot L\big]`,
    with :math:`\dot L = L\,\Phi(L^{-1}\dot\Sigma L^{-\top})` (``Phi``: strict lower part plus half
    the diagonal) and :math:`\dot\Sigma = F\Sigma + \Sigma F^\top + GG^\top`. Written out for
    :math:`2\times2` blocks (elementwise, fast on many nodes): with :math:`W = L^{-1}`,
    :math:`\Omega_{21} = \sum_i W_{2i}(M_{i1}L_{11} + M_{i2}L_{21}) - W_{11}(W_{21}\dot\Sigma_{11} + W_{22}\dot\Sigma_{21})`,
    :math:`M = F + \tfrac12GG^\top\Sigma^{-1}`.
    """
    f, gg, sig = diffusion.drift(t), diffusion.diffusion(t), diffusion.covariance(t)
    low = batched_cholesky(sig)
    l11, l21, l22 = low[..., 0, 0], low[..., 1, 0], low[..., 1, 1]
    w11, w21, w22 = 1.0 / l11, -l21 / (l11 * l22), 1.0 / l22
    dsig = f @ sig + sig @ batched_transpose(f) + gg
    m = f + 0.5 * gg @ batched_inverse(sig)
    y21 = w21 * (m[..., 0, 0] * l11 + m[..., 0, 1] * l21) + w22 * (m[..., 1, 0] * l11 + m[..., 1, 1] * l21)
    x21 = w11 * (w21 * dsig[..., 0, 0] + w22 * dsig[..., 1, 0])
    return y21 - x21


class _FactorByRotation:
    r"""The gDDIM factor of ``k = 2`` blocks as :math:`R_t = L_t\,\mathrm{rot}(\theta_t)`.

    For ``k = 2`` the skew generators :math:`\Omega_t` commute, so :math:`O_t = L_t^{-1}R_t` is the
    rotation by :math:`\theta_t = \int_{t_0}^t \Omega_{21}(\tau)\,d\tau` (``O_{t_0} = I`` since
    :math:`R_{t_0} = L_{t_0}`). The rate is expanded in a degree-19 Legendre series on each of the
    geometric panels (ratio 1.05) from :math:`t_0` (or 1e-12 when :math:`t_0 = 0`), by Gauss
    projection, and the angle is the series' exact antiderivative; :math:`L_t` is the Cholesky factor of the exact
    :math:`\Sigma_t`. So ``R R^T = Sigma`` holds to rounding and ``R`` is as accurate as the quadrature
    (~1e-15), unlike a tolerance-limited ODE solve of ``R`` itself.
    """

    def __init__(self, diffusion: LinearDiffusion, ratio: float = 1.05, n_nodes: int = 20):
        from numpy.polynomial.legendre import legint, legvander

        self.diffusion = diffusion
        lo, hi = diffusion.time_range
        self.t0 = lo if np.any(np.linalg.eigvalsh(diffusion.initial_covariance) <= 0) else 0.0
        start = max(self.t0, 1e-12 * hi)
        n_panels = max(1, int(np.ceil(np.log(hi / start) / np.log(ratio))))
        edges = start * (hi / start) ** np.linspace(0.0, 1.0, n_panels + 1)
        edges[-1] = hi
        if self.t0 < start:
            edges = np.concatenate([[self.t0], edges])
        self.edges = edges
        x, w = gauss_legendre(n_nodes)
        half = 0.5 * np.diff(edges)
        nodes = 0.5 * (edges[:-1] + edges[1:])[:, None] + half[:, None] * x
        vals = _cholesky_rotation_rate(diffusion, nodes)  # (P, n, M)
        # Legendre coefficients of omega on each panel (Gauss projection), then the antiderivative
        # from the panel's left edge: theta(t) = theta(edge_j) + half_j * int_{-1}^{x} omega.
        basis = legvander(x, n_nodes - 1)  # (n, n): P_k(x_i)
        coef = np.einsum("i,ik,pim->kpm", w, basis, vals) * ((2 * np.arange(n_nodes) + 1) / 2)[:, None, None]
        self._antiderivative = legint(coef, lbnd=-1)  # (n + 1, P, M)
        panel = half[:, None] * legval(1.0, self._antiderivative)
        self.theta_edges = np.concatenate([np.zeros((1, panel.shape[1])), np.cumsum(panel, axis=0)])  # (P + 1, M)
        self._half = half

    def angle(self, t: np.ndarray) -> np.ndarray:
        """Rotation angle :math:`\theta_t` per mode, shape ``t.shape + (M,)``."""
        flat = np.ravel(t)
        j = np.clip(np.searchsorted(self.edges, flat, side="right") - 1, 0, len(self.edges) - 2)
        x = (flat - self.edges[j]) / self._half[j] - 1.0
        inner = legval(x[:, None], self._antiderivative[:, j, :], tensor=False)
        theta = self.theta_edges[j] + self._half[j][:, None] * inner
        return theta.reshape(np.shape(t) + (self.theta_edges.shape[1],))

    def __call__(self, t: np.ndarray) -> np.ndarray:
        flat = np.ravel(t)
        if np.any(flat < self.t0):
            raise ValueError(f"R_t is defined for t >= {self.t0:g}; got {flat[flat < self.t0][:3]!r}")
        theta = self.angle(flat)
        c, s = np.cos(theta), np.sin(theta)
        rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
        low = batched_cholesky(self.diffusion.covariance(flat))
        return (low @ rot).reshape(np.shape(t) + low.shape[1:])


class MatrixDiffusion(LinearDiffusion):
    """Base for diffusions with ``k >= 1`` blocks whose :math:`R_t` is computed numerically.

    ``k = 2``: :class:`_FactorByRotation` (Cholesky factor times an integrated rotation);
    otherwise :class:`_FactorByODE` (a tight DOP853 solve of the ``R`` ODE).
    """

    @cached_property
    def _factor(self):
        if self.block_size == 2:
            return _FactorByRotation(self)
        return _FactorByODE(self)

    def gddim_factor(self, t) -> np.ndarray:
        return self._factor(self.check_times(t))
