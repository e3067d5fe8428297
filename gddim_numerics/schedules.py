r"""Variance-preserving noise schedules :math:`\bar\alpha_t` with exact derivatives.

A schedule gives :math:`\log\bar\alpha_t` and :math:`\tfrac{d}{dt}\log\bar\alpha_t`; everything
else follows: mean coefficient :math:`m_t = \sqrt{\bar\alpha_t}`, variance
:math:`\sigma_t^2 = 1 - \bar\alpha_t` (computed as ``-expm1(log abar)``), log-SNR
:math:`\lambda_t = \log\bar\alpha_t - \log\sigma_t^2`, and the VP-SDE coefficients
:math:`f_t = \tfrac12 \tfrac{d}{dt}\log\bar\alpha_t`, :math:`g_t^2 = -\tfrac{d}{dt}\log\bar\alpha_t`.
"""

from __future__ import annotations

import abc

import numpy as np

from ._checks import as_times, positive


class NoiseSchedule(abc.ABC):
    """A decreasing :math:`\\bar\\alpha_t` on ``time_range``."""

    time_range: tuple[float, float] = (0.0, 1.0)

    @abc.abstractmethod
    def log_alpha_bar(self, t: np.ndarray) -> np.ndarray:
        r""":math:`\log\bar\alpha_t`."""

    @abc.abstractmethod
    def dlog_alpha_bar(self, t: np.ndarray) -> np.ndarray:
        r""":math:`\tfrac{d}{dt}\log\bar\alpha_t` (negative)."""

    def alpha_bar(self, t) -> np.ndarray:
        r""":math:`\bar\alpha_t`."""
        return np.exp(self.log_alpha_bar(np.asarray(t, dtype=np.float64)))

    def sigma2(self, t) -> np.ndarray:
        r""":math:`\sigma_t^2 = 1 - \bar\alpha_t`, without cancellation at small ``t``."""
        return -np.expm1(self.log_alpha_bar(np.asarray(t, dtype=np.float64)))

    def dsigma2(self, t) -> np.ndarray:
        r""":math:`\tfrac{d}{dt}\sigma_t^2 = -\bar\alpha_t \tfrac{d}{dt}\log\bar\alpha_t`."""
        t = np.asarray(t, dtype=np.float64)
        return -np.exp(self.log_alpha_bar(t)) * self.dlog_alpha_bar(t)

    def log_snr(self, t) -> np.ndarray:
        r""":math:`\lambda_t = \log(\bar\alpha_t / (1 - \bar\alpha_t))`."""
        t = np.asarray(t, dtype=np.float64)
        la = self.log_alpha_bar(t)
        return la - np.log(-np.expm1(la))


class LinearBetaSchedule(NoiseSchedule):
    r"""Linear :math:`\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})` (Song et al. 2021).

    :math:`\log\bar\alpha_t = -\beta_{min} t - \tfrac12(\beta_{max} - \beta_{min}) t^2`.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_max: float = 1.0):
        self.beta_min = positive(beta_min, "beta_min", allow_zero=True)
        self.beta_max = positive(beta_max, "beta_max")
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max ({beta_max}) must be >= beta_min ({beta_min})")
        if self.beta_max == 0:
            raise ValueError("beta_max must be positive")
        self.time_range = (0.0, positive(t_max, "t_max"))

    def beta(self, t) -> np.ndarray:
        """:math:`\\beta(t)`."""
        return self.beta_min + np.asarray(t, dtype=np.float64) * (self.beta_max - self.beta_min)

    def log_alpha_bar(self, t):
        t = np.asarray(t, dtype=np.float64)
        return -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t * t

    def dlog_alpha_bar(self, t):
        return -self.beta(t)


class CosineSchedule(NoiseSchedule):
    r"""Cosine schedule (Nichol & Dhariwal 2021):

    :math:`\bar\alpha_t = \cos^2\theta_t / c`, :math:`\theta_t = \tfrac{t + s}{w}\tfrac\pi2`, with
    ``w = 1 + s`` by default, :math:`c = \cos^2\theta_0` when ``normalize`` (so
    :math:`\bar\alpha_0 = 1`) and :math:`c = 1` otherwise (the gDDIM BDM code uses ``s = 0.004``,
    ``w = 1.008``, no normalization). ``t_max`` must keep :math:`\bar\alpha > 0`; the default
    0.9946 is the usual continuous-time cut-off.
    """

    def __init__(self, s: float = 0.008, normalize: bool = True, t_max: float = 0.9946, width: float | None = None):
        self.s = positive(s, "s", allow_zero=True)
        self.width = positive(1.0 + self.s if width is None else width, "width")
        t_max = positive(t_max, "t_max")
        if (t_max + self.s) / self.width >= 1.0:
            raise ValueError(f"t_max must satisfy (t_max + s)/width < 1 so that alpha_bar > 0; got {t_max}")
        if not isinstance(normalize, (bool, np.bool_)):
            raise TypeError(f"normalize must be True or False; got {normalize!r}")
        self.normalize = bool(normalize)
        self.time_range = (0.0, t_max)
        theta0 = self.s / self.width * (np.pi / 2)
        self._tan0 = np.tan(theta0)
        # log(cos^2 theta_0 / c): 0 when normalized, else log1p(-sin^2 theta_0) (accurate near 1)
        self._log_abar0 = 0.0 if normalize else float(np.log1p(-np.sin(theta0) ** 2))

    def _theta(self, t):
        return (np.asarray(t, dtype=np.float64) + self.s) / self.width * (np.pi / 2)

    def log_alpha_bar(self, t):
        # cos(theta_0 + d)/cos(theta_0) - 1 = -2 sin^2(d/2) - tan(theta_0) sin(d), d = theta_t - theta_0:
        # no cancellation at small t, where 2 log cos(theta_t) - 2 log cos(theta_0) loses ~1e-16/t.
        d = np.asarray(t, dtype=np.float64) / self.width * (np.pi / 2)
        ratio_m1 = -2.0 * np.sin(0.5 * d) ** 2 - self._tan0 * np.sin(d)
        return 2.0 * np.log1p(ratio_m1) + self._log_abar0

    def dlog_alpha_bar(self, t):
        return -2.0 * np.tan(self._theta(t)) * (np.pi / 2) / self.width


class TanLogSNRSchedule(NoiseSchedule):
    r"""BDM-paper schedule :math:`\lambda_t = -2\log\tan(c_1 t + c_0)`.

    :math:`c_0 = \arctan e^{-\lambda_{max}/2}`, :math:`c_1 = \arctan e^{-\lambda_{min}/2} - c_0`, so
    :math:`\lambda_0 = \lambda_{max}` and :math:`\lambda_1 = \lambda_{min}`;
    :math:`\bar\alpha_t = \operatorname{sigmoid}(\lambda_t)`.
    """

    def __init__(self, logsnr_min: float = -10.0, logsnr_max: float = 10.0):
        logsnr_min, logsnr_max = float(as_times(logsnr_min, "logsnr_min")), float(as_times(logsnr_max, "logsnr_max"))
        if not (np.isfinite(logsnr_min) and np.isfinite(logsnr_max) and logsnr_min < logsnr_max):
            raise ValueError(f"need finite logsnr_min < logsnr_max; got {logsnr_min}, {logsnr_max}")
        self.c0 = float(np.arctan(np.exp(-logsnr_max / 2)))
        self.c1 = float(np.arctan(np.exp(-logsnr_min / 2)) - self.c0)
        self.time_range = (0.0, 1.0)

    def _lam(self, t):
        return -2.0 * np.log(np.tan(self.c1 * np.asarray(t, dtype=np.float64) + self.c0))

    def log_alpha_bar(self, t):
        return -np.logaddexp(0.0, -self._lam(t))

    def dlog_alpha_bar(self, t):
        t = np.asarray(t, dtype=np.float64)
        arg = self.c1 * t + self.c0
        dlam = -4.0 * self.c1 / np.sin(2.0 * arg)
        return -np.expm1(self.log_alpha_bar(t)) * dlam  # (1 - abar) * dlambda/dt


class DiscreteSchedule(NoiseSchedule):
    r"""A discrete DDPM :math:`\bar\alpha` table made continuous in time.

    Table entry ``n`` (``n = 0..N-1``) sits at :math:`t_n = (n + 1)/N`; the log-SNR
    :math:`\lambda_n = \log(\bar\alpha_n/(1 - \bar\alpha_n))` is interpolated by a monotone,
    continuously differentiable PCHIP spline in ``t``, so the table's values are reproduced at its
    grid points and :math:`\tfrac{d\lambda}{dt} \le 0` everywhere. The time range is
    ``[1/N, 1]``. :math:`\tfrac{d}{dt}\log\bar\alpha = (1 - \bar\alpha)\tfrac{d\lambda}{dt}`.
    ``t = 0`` is the clean data point (DDPM's :math:`x_0`, :math:`\bar\alpha = 1`), so the kernel
    of a data point has :math:`\Sigma_0 = 0` and mean map :math:`\Psi(t, 0) = \sqrt{\bar\alpha_t}`.
    """

    def __init__(self, alphas_cumprod=None, betas=None):
        from scipy.interpolate import PchipInterpolator

        if (alphas_cumprod is None) == (betas is None):
            if betas is None:
                betas = np.linspace(1e-4, 0.02, 1000)
            else:
                raise ValueError("give either alphas_cumprod or betas, not both")
        if alphas_cumprod is None:
            b = np.asarray(betas, dtype=np.float64)
            if b.ndim != 1 or np.any(~np.isfinite(b)) or np.any(b <= 0) or np.any(b >= 1):
                raise ValueError("betas must be a 1-D array with entries in (0, 1)")
            alphas_cumprod = np.cumprod(1.0 - b)
        a = np.asarray(alphas_cumprod, dtype=np.float64)
        if a.ndim != 1 or a.size < 2:
            raise ValueError("alphas_cumprod must be a 1-D array with at least 2 entries")
        if np.any(~np.isfinite(a)) or np.any(a <= 0) or np.any(a >= 1) or np.any(np.diff(a) >= 0):
            raise ValueError("alphas_cumprod must be strictly decreasing with entries in (0, 1)")
        self.alphas_cumprod = a
        n = a.size
        self.table_times = np.arange(1, n + 1) / n
        lam = np.log(a) - np.log1p(-a)
        self._lam = PchipInterpolator(self.table_times, lam, extrapolate=False)
        self._dlam = self._lam.derivative()
        self.time_range = (float(self.table_times[0]), 1.0)

    def log_snr(self, t):
        t = np.asarray(t, dtype=np.float64)
        lam = self._lam(np.where(t == 0.0, self.table_times[0], t))
        return np.where(t == 0.0, np.inf, lam)

    def log_alpha_bar(self, t):
        return -np.logaddexp(0.0, -self.log_snr(t))

    def dlog_alpha_bar(self, t):
        t = np.asarray(t, dtype=np.float64)
        return -np.expm1(self.log_alpha_bar(t)) * self._dlam(t)
