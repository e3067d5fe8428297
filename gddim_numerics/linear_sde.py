r"""Dense linear diffusions given by matrices: the ``beta(t) A`` class and general callables.

* :class:`ConstantCoefficientSDE`: :math:`F_t = \beta(t) A`, :math:`G_tG_t^\top = \beta(t) Q` with
  constant ``A``, ``Q``. With :math:`r = B(t) - B(s)`, :math:`B = \int_0^t\beta`,
  :math:`\Psi(t, s) = e^{rA}` (``scipy.linalg.expm``) and :math:`\Sigma` by the Van Loan block
  exponential, sub-stepped so that :math:`\|A\| h \le 1` (docs/math §1.3):
  :math:`\exp\!\big(h\begin{bmatrix}-A & Q\\ 0 & A^\top\end{bmatrix}\big) = \begin{bmatrix}E_{11}&E_{12}\\0&E_{22}\end{bmatrix}`,
  :math:`Q_d(h) = E_{22}^\top E_{12}`, :math:`\Sigma \leftarrow e^{hA}\Sigma e^{hA^\top} + Q_d(h)`.
* :class:`LinearSDE`: user callables ``F(t)``, ``GGT(t)``; :math:`\Psi(t, 0)` and :math:`\Sigma_t`
  by tight DOP853 solves with dense output, :math:`\Psi(t,s) = \Psi(t,0)\Psi(s,0)^{-1}`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np

from ._checks import as_times, end_time, positive, square_matrix, symmetric_positive_definite
from .diffusion import MatrixDiffusion


def _check_time_range(time_range) -> tuple[float, float]:
    lo, hi = (float(v) for v in time_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0.0 <= lo < hi):
        raise ValueError(f"time_range must be (t_lower, T) with 0 <= t_lower < T; got {time_range!r}")
    return lo, hi


class ConstantCoefficientSDE(MatrixDiffusion):
    r"""``du = beta(t) A u dt + sqrt(beta(t)) Q^{1/2} dw`` with constant ``A`` and PSD ``Q``.

    Parameters
    ----------
    A, Q : (k, k) array_like
        Drift and diffusion matrices (``Q`` symmetric positive semi-definite).
    beta : float or callable
        Positive time change :math:`\beta(t)`; a float means a constant.
    beta_integral : callable, optional
        :math:`B(t) = \int_0^t\beta`; computed by adaptive quadrature when omitted.
    initial_covariance : (k, k) array_like, optional
        :math:`\Sigma_0` (default 0). If it is singular, ``time_range[0]`` must be positive.
    time_range : (float, float)
        Admissible times ``(t_lower, T)``.
    t_end : float, optional
        Default last grid time, in ``[t_lower, T)`` and positive (default ``max(t_lower, 1e-3 T)``).
    """

    name = "dense"

    def __init__(
        self,
        A,
        Q,
        beta: float | Callable = 1.0,
        beta_integral: Callable | None = None,
        initial_covariance=None,
        time_range=(0.0, 1.0),
        t_end: float | None = None,
    ):
        self.A = square_matrix(A, "A")
        k = self.A.shape[0]
        self.Q = symmetric_positive_definite(Q, "Q", allow_semidefinite=True)
        if self.Q.shape != (k, k):
            raise ValueError(f"Q must have the shape of A, {(k, k)}; got {self.Q.shape}")
        self.block_size = k
        self.n_modes = 1
        self.time_range = _check_time_range(time_range)
        self.t_start = self.time_range[1]
        self.t_end = end_time(max(self.time_range[0], 1e-3 * self.time_range[1]) if t_end is None else t_end,
                              self.time_range, self.t_start)
        if beta_integral is not None and not callable(beta_integral):
            raise TypeError(f"beta_integral must be a callable t -> B(t) or None; got {type(beta_integral).__name__}")
        if callable(beta):
            self._beta = beta
            self._beta_integral = beta_integral
        else:
            b = float(beta)
            if not (np.isfinite(b) and b > 0):
                raise ValueError(f"beta must be positive; got {beta!r}")
            self._beta = lambda t, b=b: b * np.ones_like(np.asarray(t, dtype=np.float64))
            self._beta_integral = lambda t, b=b: b * np.asarray(t, dtype=np.float64)
        probe = np.asarray(self._beta(np.linspace(*self.time_range, 5)), dtype=np.float64)
        if probe.shape != (5,) or np.any(~np.isfinite(probe)) or np.any(probe < 0):
            raise ValueError("beta(t) must return finite non-negative values, vectorised over t")
        if callable(beta) and beta_integral is not None:
            self._check_beta_integral()
        sig0 = np.zeros((k, k)) if initial_covariance is None else initial_covariance
        self._sigma0 = symmetric_positive_definite(sig0, "initial_covariance", allow_semidefinite=True)[None]
        if self._sigma0.shape != (1, k, k):
            raise ValueError(f"initial_covariance must be ({k}, {k}); got {np.shape(sig0)}")
        if np.any(np.linalg.eigvalsh(self._sigma0) <= 0) and self.time_range[0] <= 0:
            raise ValueError(
                "initial_covariance is singular, so Sigma_t^{-1} and R_t do not exist at t = 0; "
                "give time_range a positive lower bound (e.g. (1e-5, 1))"
            )

    def _check_beta_integral(self) -> None:
        r"""Refuse a ``beta_integral`` that is not :math:`\int_0^t\beta`: compared with adaptive quadrature at 3 times."""
        from scipy.integrate import quad

        times = np.array([0.0, 0.5, 1.0]) * self.time_range[1]
        got = np.asarray(self._beta_integral(times), dtype=np.float64)
        ref = np.array([quad(lambda x: float(self._beta(x)), 0.0, ti, epsabs=0, epsrel=1e-10, limit=200)[0] for ti in times])
        if got.shape != (3,) or not np.allclose(got, ref, rtol=1e-6, atol=1e-9 * max(1.0, abs(ref[-1]))):
            raise ValueError(f"beta_integral(t) must be B(t) = int_0^t beta, vectorised over t; at t = {times} it "
                             f"returns {got!r}, quadrature of beta gives {ref!r}")

    # definitions -----------------------------------------------------------------------------
    def beta(self, t) -> np.ndarray:
        r""":math:`\beta(t)`."""
        return np.asarray(self._beta(as_times(t)), dtype=np.float64)

    def beta_integral(self, t) -> np.ndarray:
        r""":math:`B(t) = \int_0^t\beta(\tau)\,d\tau`."""
        t = as_times(t)
        if self._beta_integral is not None:
            return np.asarray(self._beta_integral(t), dtype=np.float64)
        from scipy.integrate import quad
        flat = [quad(lambda x: float(self._beta(x)), 0.0, ti, epsabs=0, epsrel=1e-13, limit=200)[0] for ti in t.ravel()]
        return np.asarray(flat).reshape(t.shape)

    def drift(self, t) -> np.ndarray:
        t = self.check_times(t)
        return self.beta(t)[..., None, None, None] * self.A

    def diffusion(self, t) -> np.ndarray:
        t = self.check_times(t)
        return self.beta(t)[..., None, None, None] * self.Q

    @property
    def initial_covariance(self) -> np.ndarray:
        return self._sigma0

    # exact quantities ------------------------------------------------------------------------
    def transition(self, t, s) -> np.ndarray:
        t = self.check_times(t, "t")
        s = self.check_source_times(s, "s")
        r = self.beta_integral(t) - self.beta_integral(s)
        return self.exp_a(r)[..., None, :, :]

    @cached_property
    def _eigen(self):
        w, v = np.linalg.eig(self.A)
        if np.linalg.cond(v) > 1e3:
            return None
        return w, v, np.linalg.inv(v)

    def exp_a(self, r) -> np.ndarray:
        r"""``expm(r A)`` for an array of ``r``: :math:`V e^{r\Lambda} V^{-1}` when ``A``'s eigenvectors are
        well conditioned (cond <= 1e3, error ~1e-13), ``scipy.linalg.expm`` otherwise."""
        r = np.asarray(r, dtype=np.float64)
        if self._eigen is None:
            from scipy.linalg import expm
            return expm(r[..., None, None] * self.A)
        w, v, v_inv = self._eigen
        out = (v * np.exp(r[..., None] * w)[..., None, :]) @ v_inv
        return out.real

    def van_loan(self, h) -> tuple[np.ndarray, np.ndarray]:
        r"""``(e^{hA}, Q_d(h))`` for an array of increments ``h`` of :math:`B`, by one block exponential."""
        h = np.asarray(h, dtype=np.float64)
        k = self.block_size
        block = np.zeros((2 * k, 2 * k))
        block[:k, :k] = -self.A
        block[:k, k:] = self.Q
        block[k:, k:] = self.A.T
        from scipy.linalg import expm
        e = expm(h[..., None, None] * block)
        e12 = e[..., :k, k:]
        e22 = e[..., k:, k:]
        return np.swapaxes(e22, -1, -2), np.swapaxes(e22, -1, -2) @ e12

    def covariance(self, t) -> np.ndarray:
        r"""Exact :math:`\Sigma_t` (:meth:`_eigen_covariance` when ``A`` is well diagonalisable, else sub-stepped Van Loan)."""
        t = self.check_times(t)
        r = self.beta_integral(t)
        if self._eigen is not None:
            return self._eigen_covariance(r)[..., None, :, :]
        norm_a = np.linalg.norm(self.A, 2)
        n_sub = max(1, int(np.ceil(float(np.max(r, initial=0.0)) * norm_a)))
        phi, qd = self.van_loan(r / n_sub)
        sig = np.broadcast_to(self._sigma0[0], r.shape + self._sigma0.shape[1:])
        for _ in range(n_sub):
            sig = phi @ sig @ np.swapaxes(phi, -1, -2) + qd
        sig = 0.5 * (sig + np.swapaxes(sig, -1, -2))
        return sig[..., None, :, :]


    def _eigen_covariance(self, r: np.ndarray) -> np.ndarray:
        r""":math:`\Sigma` after the time change ``r = B(t)``, in the eigenbasis :math:`A = V\Lambda V^{-1}`.

        With :math:`W = V^{-1}`, :math:`\tilde S = W\Sigma_0W^\top`, :math:`\tilde Q = WQW^\top` and
        :math:`z_{ij} = r(\lambda_i + \lambda_j)`,

        .. math:: \Sigma = V\big[e^{z_{ij}}\tilde S_{ij} + r\,\varphi_1(z_{ij})\tilde Q_{ij}\big]V^\top,
                  \qquad \varphi_1(z) = (e^z - 1)/z,

        the closed form of :math:`\Sigma' = A\Sigma + \Sigma A^\top + Q` (``expm1`` keeps
        :math:`\varphi_1` accurate for small :math:`|z|`).
        """
        w, v, v_inv = self._eigen
        s_t = v_inv @ self._sigma0[0] @ v_inv.T
        q_t = v_inv @ self.Q @ v_inv.T
        z = r[..., None, None] * (w[:, None] + w[None, :])
        safe = np.where(z == 0, 1.0, z)
        phi1 = np.where(z == 0, 1.0, np.expm1(z) / safe)
        inner = np.exp(z) * s_t + r[..., None, None] * phi1 * q_t
        sig = (v @ inner @ v.T).real
        return 0.5 * (sig + np.swapaxes(sig, -1, -2))


class LinearSDE(MatrixDiffusion):
    r"""A general linear diffusion from callables (dense, time-varying, non-commuting).

    Parameters
    ----------
    F, GGT : callable
        ``F(t)`` and ``GGT(t)`` return ``(k, k)`` arrays for a float ``t``; ``GGT`` symmetric PSD.
    initial_covariance : (k, k) array_like, optional
        :math:`\Sigma_0` (default 0; then ``time_range[0]`` must be positive).
    time_range : (float, float)
        Admissible times ``(t_lower, T)``.
    t_end : float, optional
        Default last grid time, in ``[t_lower, T)`` and positive (default ``max(t_lower, 1e-3 T)``).
    rtol, atol : float
        Tolerances of the DOP853 solves for :math:`\Psi(t, 0)`, :math:`\Sigma_t` and :math:`R_t`.
    """

    name = "dense"

    def __init__(self, F: Callable, GGT: Callable, initial_covariance=None, time_range=(0.0, 1.0),
                 t_end: float | None = None, rtol: float = 1e-12, atol: float = 1e-14):
        if not (callable(F) and callable(GGT)):
            raise TypeError("F and GGT must be callables t -> (k, k) array")
        self.time_range = _check_time_range(time_range)
        self.t_start = self.time_range[1]
        self.t_end = end_time(max(self.time_range[0], 1e-3 * self.time_range[1]) if t_end is None else t_end,
                              self.time_range, self.t_start)
        self._F, self._GGT = F, GGT
        f1 = np.asarray(F(self.time_range[1]), dtype=np.float64)
        if f1.ndim != 2 or f1.shape[0] != f1.shape[1]:
            raise ValueError(f"F(t) must return a square (k, k) array; got shape {f1.shape}")
        k = f1.shape[0]
        self.block_size, self.n_modes = k, 1
        for probe in (self.time_range[0], 0.5 * sum(self.time_range), self.time_range[1]):
            if not np.all(np.isfinite(self._call("F", probe))):
                raise ValueError(f"F(t) must return a finite ({k}, {k}) array at every t; failed at t={probe:g}")
            symmetric_positive_definite(self._call("GGT", probe), f"GGT({probe:g})", allow_semidefinite=True)
        sig0 = np.zeros((k, k)) if initial_covariance is None else initial_covariance
        self._sigma0 = symmetric_positive_definite(sig0, "initial_covariance", allow_semidefinite=True)[None]
        if self._sigma0.shape != (1, k, k):
            raise ValueError(f"initial_covariance must be ({k}, {k}); got {np.shape(sig0)}")
        if np.any(np.linalg.eigvalsh(self._sigma0) <= 0) and self.time_range[0] <= 0:
            raise ValueError("initial_covariance is singular; give time_range a positive lower bound")
        self.rtol, self.atol = positive(rtol, "rtol"), positive(atol, "atol")

    def _call(self, name: str, t: float) -> np.ndarray:
        """``F(t)`` or ``GGT(t)`` for a float ``t``, refusing a result of the wrong shape."""
        k = self.block_size
        out = np.asarray((self._F if name == "F" else self._GGT)(t), dtype=np.float64)
        if out.shape != (k, k):
            raise ValueError(f"{name}(t) must return a ({k}, {k}) array at every t; got shape {out.shape} at t={t:g}")
        return out

    def _eval(self, name: str, t) -> np.ndarray:
        t = self.check_times(t)
        k = self.block_size
        return np.array([self._call(name, float(x)) for x in t.ravel()]).reshape(t.shape + (1, k, k))

    def drift(self, t) -> np.ndarray:
        return self._eval("F", t)

    def diffusion(self, t) -> np.ndarray:
        return self._eval("GGT", t)

    @property
    def initial_covariance(self) -> np.ndarray:
        return self._sigma0

    @cached_property
    def _psi_solution(self):
        k = self.block_size

        def rhs(t, y):
            return (self._call("F", t) @ y.reshape(k, k)).ravel()

        from scipy.integrate import solve_ivp
        sol = solve_ivp(rhs, (0.0, self.time_range[1]), np.eye(k).ravel(), method="DOP853",
                        rtol=self.rtol, atol=self.atol, dense_output=True)
        if not sol.success:
            raise RuntimeError(f"Psi ODE solve failed: {sol.message}")
        return sol

    @cached_property
    def _sigma_solution(self):
        k = self.block_size

        def rhs(t, y):
            s = y.reshape(k, k)
            f = self._call("F", t)
            return (f @ s + s @ f.T + self._call("GGT", t)).ravel()

        from scipy.integrate import solve_ivp
        sol = solve_ivp(rhs, (0.0, self.time_range[1]), self._sigma0[0].ravel(), method="DOP853",
                        rtol=self.rtol, atol=self.atol, dense_output=True)
        if not sol.success:
            raise RuntimeError(f"Lyapunov ODE solve failed: {sol.message}")
        return sol

    def _dense(self, sol, t) -> np.ndarray:
        k = self.block_size
        vals = sol.sol(np.ravel(t))
        return np.moveaxis(vals, -1, 0).reshape(np.shape(t) + (1, k, k))

    def mean_coefficient(self, t) -> np.ndarray:
        return self._dense(self._psi_solution, self.check_times(t))

    def transition(self, t, s) -> np.ndarray:
        t = self.check_times(t, "t")
        s = self.check_source_times(s, "s")
        t, s = np.broadcast_arrays(t, s)
        return self.mean_coefficient(t) @ np.linalg.inv(self._dense(self._psi_solution, s))

    def covariance(self, t) -> np.ndarray:
        sig = self._dense(self._sigma_solution, self.check_times(t))
        return 0.5 * (sig + np.swapaxes(sig, -1, -2))
