r"""Blurring diffusion (Hoogeboom & Salimans 2022) as a diffusion diagonal in the DCT basis.

In frequency coordinates :math:`y = V^\top x` (orthonormal 2-D DCT-II over the image axes), mode
``k`` with Laplacian eigenvalue :math:`\Lambda_k` has mean coefficient :math:`a_t d_k(t)` and the
shared variance :math:`\sigma_t^2 = 1 - a_t^2`, where

* :math:`d_k(t) = (1 - d_{min}) e^{-\Lambda_k \tau_t} + d_{min}`,
  :math:`\tau_t = \sigma_B(t)^2/2`, :math:`\sigma_B(t) = \sigma_{B,max}\sin^2(\pi t/2)`;
* :math:`a_t^2 = \bar\alpha_t` from a noise schedule: ``"gddim"`` (the gDDIM code,
  :math:`\cos^2(\tfrac{t + 0.004}{1.008}\tfrac\pi2)`) or ``"bdm"`` (the BDM paper's
  :math:`\lambda_t = -2\log\tan(c_1 t + c_0)`, :math:`\lambda \in [-10, 10]`).

So :math:`F_k = \tfrac{d}{dt}\log(a_t d_k)`, :math:`g_k^2 = \dot\sigma_t^2 - 2F_k\sigma_t^2 \ge 0`,
:math:`\Sigma_t = \sigma_t^2 I` (with :math:`\Sigma_0 = \sigma_0^2 I`) and :math:`R_t = L_t = \sigma_t I`.
"""

from __future__ import annotations

import copy

import numpy as np

from ._checks import as_times, end_time, positive
from .bases import DCTBasis
from .diffusion import ScalarModesDiffusion
from .schedules import CosineSchedule, NoiseSchedule, TanLogSNRSchedule

BDM_SCHEDULES = ("gddim", "bdm")


def _image_shape(image_shape) -> tuple[int, int]:
    """``(H, W)`` as two Python ints >= 2, refusing anything else (no rounding, no guessing)."""
    valid = (
        isinstance(image_shape, (tuple, list))
        and len(image_shape) == 2
        and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in image_shape)
    )
    if not valid or min(image_shape) < 2:
        raise ValueError(f"image_shape must be two integers >= 2, (H, W); got {image_shape!r}")
    return (int(image_shape[0]), int(image_shape[1]))


class BDM(ScalarModesDiffusion):
    """Blurring diffusion for images of shape ``image_shape = (H, W)``.

    Parameters
    ----------
    image_shape : (int, int)
        Height and width (each >= 2); the state's last two axes by default.
    schedule : {"gddim", "bdm"} or NoiseSchedule
        Noise schedule of :math:`a_t^2`.
    blur_sigma_max : float
        :math:`\\sigma_{B,max}` (gDDIM code default 10; the BDM paper uses 20 for some data sets).
    min_scale : float
        :math:`d_{min}` in (0, 1), default 0.001.
    """

    name = "bdm"

    def __init__(
        self,
        image_shape=(8, 8),
        schedule: str | NoiseSchedule = "gddim",
        blur_sigma_max: float = 10.0,
        min_scale: float = 1e-3,
        t_end: float = 1e-5,
    ):
        self.image_shape = _image_shape(image_shape)
        shape = self.image_shape
        self.basis = DCTBasis(shape)
        self.n_modes = shape[0] * shape[1]
        self.blur_sigma_max = positive(blur_sigma_max, "blur_sigma_max", allow_zero=True)
        self.min_scale = float(as_times(min_scale, "min_scale"))
        if not 0.0 < self.min_scale < 1.0:
            raise ValueError(f"min_scale (d_min) must lie in (0, 1); got {min_scale!r}")
        if isinstance(schedule, NoiseSchedule):
            self.schedule = schedule
        elif schedule == "gddim":
            self.schedule = CosineSchedule(s=0.004, width=1.008, normalize=False, t_max=1.0)
        elif schedule == "bdm":
            self.schedule = TanLogSNRSchedule(-10.0, 10.0)
        else:
            raise ValueError(f"schedule must be one of {BDM_SCHEDULES} or a NoiseSchedule; got {schedule!r}")
        self.schedule_name = schedule if isinstance(schedule, str) else type(schedule).__name__
        self.time_range = self.schedule.time_range
        self._lambda = self.basis.eigenvalues
        self.t_start = self._gddim_start(80.0) if schedule == "gddim" else self.time_range[1]
        self.t_end = end_time(t_end, self.time_range, self.t_start)

    def _gddim_start(self, rho: float) -> float:
        """Start time ``t(rho)`` of the gDDIM code: ``abar = abar_0 / ((rho + sqrt(1-abar_0))^2 + abar_0)``."""
        a0 = float(self.schedule.alpha_bar(0.0))
        target = np.log(a0 / ((rho + np.sqrt(1.0 - a0)) ** 2 + a0))
        from scipy.optimize import brentq

        return float(brentq(lambda t: self.schedule.log_alpha_bar(t) - target, 0.5, self.time_range[1], xtol=1e-15))

    # blur ------------------------------------------------------------------------------------
    def _tau(self, t):
        sb = self.blur_sigma_max * np.sin(0.5 * np.pi * t) ** 2
        return 0.5 * sb * sb

    def _dtau(self, t):
        sb = self.blur_sigma_max * np.sin(0.5 * np.pi * t) ** 2
        dsb = self.blur_sigma_max * 0.5 * np.pi * np.sin(np.pi * t)
        return sb * dsb

    def blur_scale(self, t) -> np.ndarray:
        """Per-frequency blur factor :math:`d_k(t)`, shape ``t.shape + (M,)``."""
        t = self.check_times(t)
        return np.exp(self._log_d(t))

    def _log_d(self, t):
        t = np.asarray(t, dtype=np.float64)[..., None]
        e = np.exp(-self._lambda * self._tau(t))
        return np.log((1.0 - self.min_scale) * e + self.min_scale)

    def _dlog_d(self, t):
        t = np.asarray(t, dtype=np.float64)[..., None]
        e = np.exp(-self._lambda * self._tau(t))
        d = (1.0 - self.min_scale) * e + self.min_scale
        return -(1.0 - self.min_scale) * self._lambda * self._dtau(t) * e / d

    def mode_functions(self, idx) -> "BDM":
        """A copy whose per-mode functions (``_log_mean``, ``_variance``, ...) cover the modes ``idx`` only.

        For searches that score a plan on a few representative frequencies; the copy's basis is still
        the full image's, so it is not a diffusion to sample with.
        """
        sub = copy.copy(self)
        sub._lambda = self._lambda[np.asarray(idx)]
        sub.n_modes = len(sub._lambda)
        return sub

    # ScalarModesDiffusion --------------------------------------------------------------------
    @property
    def breakpoints(self) -> np.ndarray:
        """The schedule's breakpoints (the blur is analytic): empty unless it is a tabulated schedule."""
        return self.schedule.breakpoints

    def _log_mean(self, t):
        return 0.5 * self.schedule.log_alpha_bar(t)[..., None] + self._log_d(t)

    def _dlog_mean(self, t):
        return 0.5 * self.schedule.dlog_alpha_bar(t)[..., None] + self._dlog_d(t)

    def _variance(self, t):
        v = self.schedule.sigma2(t)[..., None]
        return np.broadcast_to(v, np.shape(t) + (self.n_modes,))

    def _dvariance(self, t):
        v = self.schedule.dsigma2(t)[..., None]
        return np.broadcast_to(v, np.shape(t) + (self.n_modes,))

    def log_snr(self, t) -> np.ndarray:
        r"""Log-SNR of the unblurred (DC) frequency, :math:`\log(a_t^2/\sigma_t^2)`."""
        return self.schedule.log_snr(self.check_times(t))

    def prior_covariance(self) -> np.ndarray:
        """The standard prior ``N(0, I)``."""
        return np.ones((self.n_modes, 1, 1))
