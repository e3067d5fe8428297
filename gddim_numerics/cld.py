r"""Critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis 2022) on ``u = [x, v]``.

:math:`F_t = \beta(t) A`, :math:`G_tG_t^\top = \beta(t) Q` per pixel, with
:math:`A = \begin{bmatrix}0 & M^{-1}\\ -1 & -\Gamma M^{-1}\end{bmatrix}`,
:math:`Q = \begin{bmatrix}0 & 0\\ 0 & 2\Gamma\end{bmatrix}`, :math:`\beta(t) = \beta_0 + \beta_1 t`.
Defaults (gDDIM code): :math:`M^{-1} = 4`, :math:`\Gamma = 1` (critical, :math:`\Gamma^2 = 4M`),
:math:`\beta = 4`, :math:`\Sigma_0 = \operatorname{diag}(\varepsilon, \gamma M + \varepsilon)`,
:math:`\gamma = 0.04`, :math:`\varepsilon = 10^{-6}`.

At critical damping, with :math:`a = \Gamma M^{-1}`, :math:`b = B(t) - B(s)`:
:math:`\Psi(t,s) = e^{-ab/2}\begin{bmatrix}1 + ab/2 & a^2b/4\\ -b & 1 - ab/2\end{bmatrix}`, and
:math:`\Sigma_t` has the closed form of docs/math §5.3 (with :math:`g = 1/\Gamma`, :math:`e = e^{-4gB}`).
Off critical damping the ``expm`` / Van Loan path of the base class is used.
"""

from __future__ import annotations

import numpy as np

from ._checks import as_times, positive, symmetric_positive_definite
from .linear_sde import ConstantCoefficientSDE


class CLD(ConstantCoefficientSDE):
    """Critically-damped Langevin diffusion; the state's block axis holds ``[x, v]``."""

    name = "cld"

    def __init__(
        self,
        mass_inv: float = 4.0,
        gamma_friction: float = 1.0,
        beta0: float = 4.0,
        beta1: float = 0.0,
        init_velocity_scale: float = 0.04,
        numerical_eps: float = 1e-6,
        initial_covariance=None,
        t_end: float = 1e-3,
    ):
        self.mass_inv = positive(mass_inv, "mass_inv")
        self.gamma_friction = positive(gamma_friction, "gamma_friction")
        self.beta0 = positive(beta0, "beta0", allow_zero=True)
        self.beta1 = float(as_times(beta1, "beta1"))
        if not np.isfinite(self.beta1) or self.beta0 + min(self.beta1, 0.0) <= 0:
            raise ValueError(f"beta(t) = beta0 + beta1 t must stay positive on [0, 1]; got beta0={beta0}, beta1={beta1}")
        self.init_velocity_scale = positive(init_velocity_scale, "init_velocity_scale", allow_zero=True)
        self.numerical_eps = positive(numerical_eps, "numerical_eps", allow_zero=True)
        mass = 1.0 / self.mass_inv
        if initial_covariance is None:
            initial_covariance = np.diag([self.numerical_eps, self.init_velocity_scale * mass + self.numerical_eps])
        A = np.array([[0.0, self.mass_inv], [-1.0, -self.gamma_friction * self.mass_inv]])
        Q = np.array([[0.0, 0.0], [0.0, 2.0 * self.gamma_friction]])
        b0, b1 = self.beta0, self.beta1
        sig0 = symmetric_positive_definite(initial_covariance, "initial_covariance", allow_semidefinite=True)
        super().__init__(
            A,
            Q,
            beta=lambda t: b0 + b1 * np.asarray(t, dtype=np.float64),
            beta_integral=lambda t: b0 * np.asarray(t, dtype=np.float64) + 0.5 * b1 * np.asarray(t, dtype=np.float64) ** 2,
            initial_covariance=sig0,
            time_range=(0.0 if np.all(np.linalg.eigvalsh(sig0) > 0) else 1e-5, 1.0),
            t_end=t_end,
        )
        self.critical = abs(self.gamma_friction**2 * self.mass_inv - 4.0) < 1e-12
        self._diagonal_sigma0 = sig0[0, 1] == 0.0

    def transition(self, t, s) -> np.ndarray:
        if not self.critical:
            return super().transition(t, s)
        t = self.check_times(t, "t")
        s = self.check_source_times(s, "s")
        b = self.beta_integral(t) - self.beta_integral(s)
        a = self.gamma_friction * self.mass_inv
        e = np.exp(-0.5 * a * b)
        out = np.empty(b.shape + (1, 2, 2))
        out[..., 0, 0, 0] = e * (1 + 0.5 * a * b)
        out[..., 0, 0, 1] = e * 0.25 * a * a * b
        out[..., 0, 1, 0] = -e * b
        out[..., 0, 1, 1] = e * (1 - 0.5 * a * b)
        return out

    def covariance(self, t) -> np.ndarray:
        if not (self.critical and self._diagonal_sigma0):
            return super().covariance(t)
        t = self.check_times(t)
        big_b = self.beta_integral(t)
        g = 1.0 / self.gamma_friction
        sx, sv = self._sigma0[0, 0, 0], self._sigma0[0, 1, 1]
        e = np.exp(-4.0 * g * big_b)
        em1 = -np.expm1(-4.0 * g * big_b)  # 1 - e, accurate at small B
        gb = g * big_b
        out = np.empty(big_b.shape + (1, 2, 2))
        # e * (e^{4gB} - 1) = 1 - e
        xx = em1 - e * (4 * gb + 8 * gb * gb) + e * (sx * (1 + 2 * gb) ** 2 + 16 * g**4 * big_b**2 * sv)
        xv = e * (4 * g * big_b**2 - sx * big_b * (1 + 2 * gb) + 4 * g * g * big_b * sv * (1 - 2 * gb))
        vv = (self.gamma_friction**2 / 4) * em1 + e * (self.gamma_friction * big_b - 2 * big_b**2 + sx * big_b**2 + sv * (1 - 2 * gb) ** 2)
        out[..., 0, 0, 0] = xx
        out[..., 0, 0, 1] = xv
        out[..., 0, 1, 0] = xv
        out[..., 0, 1, 1] = vv
        return out

    def log_snr(self, t) -> np.ndarray:
        r"""Position log-SNR :math:`\log(\Psi_{xx}(t,0)^2/\Sigma_{xx,t})` (the data lives in ``x``)."""
        psi = self.mean_coefficient(t)
        sig = self.covariance(t)
        return 2.0 * np.log(np.abs(psi[..., 0, 0, 0])) - np.log(sig[..., 0, 0, 0])

    def prior_covariance(self) -> np.ndarray:
        r"""The stationary law :math:`\operatorname{diag}(1, M)`."""
        return np.diag([1.0, 1.0 / self.mass_inv])[None]
