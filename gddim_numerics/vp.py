r"""Variance-preserving diffusion (DDPM / VP-SDE).

:math:`dx = -\tfrac12\beta(t) x\,dt + \sqrt{\beta(t)}\,dw` with :math:`\beta = -\tfrac{d}{dt}\log\bar\alpha_t`:
:math:`\Psi(t,s) = m_t/m_s`, :math:`m_t = \sqrt{\bar\alpha_t}`, :math:`\Sigma_t = 1 - \bar\alpha_t`
(plus the schedule's own :math:`\Sigma_0 = 1 - \bar\alpha_0`, zero for the usual schedules), and
:math:`R_t = L_t = \sigma_t`.
"""

from __future__ import annotations

import numpy as np

from ._checks import end_time
from .diffusion import ScalarModesDiffusion
from .schedules import CosineSchedule, DiscreteSchedule, LinearBetaSchedule, NoiseSchedule


class VPSDE(ScalarModesDiffusion):
    """VP-SDE for a given :class:`~gddim_numerics.schedules.NoiseSchedule`.

    Use the constructors :meth:`linear`, :meth:`cosine` and :meth:`discrete`.
    """

    name = "vp"

    def __init__(self, schedule: NoiseSchedule, t_end: float = 1e-3):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule; got {type(schedule).__name__}")
        self.schedule = schedule
        self.time_range = schedule.time_range
        self.t_start = schedule.time_range[1]
        self.t_end = end_time(t_end, self.time_range, self.t_start)

    @classmethod
    def linear(cls, beta_min: float = 0.1, beta_max: float = 20.0, t_end: float = 1e-3) -> "VPSDE":
        """Linear-beta VP-SDE (docs/math §5.1): ``beta_min = 0.1``, ``beta_max = 20``, ``T = 1``."""
        return cls(LinearBetaSchedule(beta_min, beta_max), t_end=t_end)

    @classmethod
    def cosine(cls, s: float = 0.008, t_max: float = 0.9946, t_end: float = 1e-3) -> "VPSDE":
        """Cosine-schedule VP-SDE (normalized so that ``alpha_bar(0) = 1``)."""
        return cls(CosineSchedule(s, normalize=True, t_max=t_max), t_end=t_end)

    @classmethod
    def discrete(cls, alphas_cumprod=None, betas=None) -> "VPSDE":
        """VP-SDE through a discrete DDPM table (default: 1000 linear betas 1e-4..0.02)."""
        sched = DiscreteSchedule(alphas_cumprod=alphas_cumprod, betas=betas)
        return cls(sched, t_end=sched.time_range[0])

    def _log_mean(self, t):
        return 0.5 * self.schedule.log_alpha_bar(t)[..., None]

    def _dlog_mean(self, t):
        return 0.5 * self.schedule.dlog_alpha_bar(t)[..., None]

    def _variance(self, t):
        return self.schedule.sigma2(t)[..., None]

    def _dvariance(self, t):
        return self.schedule.dsigma2(t)[..., None]

    def alpha_bar(self, t) -> np.ndarray:
        r""":math:`\bar\alpha_t`."""
        return self.schedule.alpha_bar(self.check_times(t))

    def log_snr(self, t) -> np.ndarray:
        r""":math:`\lambda_t = \log(\bar\alpha_t/(1 - \bar\alpha_t))`."""
        return self.schedule.log_snr(self.check_times(t))

    def prior_covariance(self) -> np.ndarray:
        """The standard prior ``N(0, I)``."""
        return np.ones((1, 1, 1))
