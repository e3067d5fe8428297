r"""Variance-exploding diffusion (NCSN / VE-SDE).

:math:`dx = \sqrt{\tfrac{d\sigma_t^2}{dt}}\,dw` with :math:`\sigma_t = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`:
:math:`F = 0`, :math:`\Psi \equiv 1`, :math:`GG^\top = 2\sigma_t^2\log(\sigma_{max}/\sigma_{min})`, and the exact kernel
covariance of a data point :math:`\Sigma_t = \sigma_t^2 - \sigma_{min}^2` (so :math:`\Sigma_0 = 0`),
:math:`R_t = L_t = \sqrt{\Sigma_t}`.
"""

from __future__ import annotations

import numpy as np

from ._checks import end_time, positive
from .diffusion import ScalarModesDiffusion


class VESDE(ScalarModesDiffusion):
    """VE-SDE with geometric noise levels (score-SDE CIFAR-10: ``sigma_min=0.01``, ``sigma_max=50``)."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_end: float = 1e-5):
        self.sigma_min = positive(sigma_min, "sigma_min")
        self.sigma_max = positive(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
        self._log_ratio = float(np.log(self.sigma_max / self.sigma_min))
        self.time_range = (0.0, 1.0)
        self.t_start = 1.0
        self.t_end = end_time(t_end, self.time_range, self.t_start)

    def sigma(self, t) -> np.ndarray:
        r"""Noise level :math:`\sigma_t = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`."""
        return self.sigma_min * np.exp(self._log_ratio * np.asarray(t, dtype=np.float64))

    def _log_mean(self, t):
        return np.zeros(np.shape(t) + (1,))

    def _dlog_mean(self, t):
        return np.zeros(np.shape(t) + (1,))

    def _variance(self, t):
        t = np.asarray(t, dtype=np.float64)
        # sigma_min^2 (e^{2 t log r} - 1) without cancellation near t = 0
        return (self.sigma_min**2 * np.expm1(2.0 * self._log_ratio * t))[..., None]

    def _dvariance(self, t):
        return (2.0 * self._log_ratio * self.sigma(t) ** 2)[..., None]

    def log_snr(self, t) -> np.ndarray:
        r""":math:`-\log\Sigma_t` (data scale 1)."""
        return -np.log(self._variance(self.check_times(t))[..., 0])

    def prior_covariance(self) -> np.ndarray:
        r"""The usual prior :math:`N(0, \sigma_{max}^2 I)`."""
        return np.full((1, 1, 1), self.sigma_max**2)
