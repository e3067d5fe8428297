r"""The VP network's probability flow solved in the log-SNR: a smooth right-hand side for DOP853.

The discrete VP (``VPSDE.discrete``) interpolates the log-SNR between its 1000 table entries by a
monotone PCHIP spline, so :math:`\beta_t` has a kink at every table time and DOP853 in ``t`` must
resolve 1000 kinks (rtol 1e-8: ~10 000 evaluations, 12 minutes for 256 points on this machine's
cores). With :math:`\lambda = \log(m_t^2/\sigma_t^2)`, :math:`m_t^2 = \operatorname{sigmoid}(\lambda)`,
:math:`\sigma_t^2 = \operatorname{sigmoid}(-\lambda)` and the data prediction
:math:`D = c_tu + d_ty` of the network output ``y`` (:func:`gddim_numerics.outputs.to_data`), the
probability flow in :math:`z = u/\sigma` is exactly (the data form of DPM-Solver++)

.. math::
    \frac{dz}{d\lambda} = \tfrac12 e^{\lambda/2}\,D\big(\sigma(\lambda) z,\ t(\lambda)\big),

whose only dependence on the spline is the network's time input :math:`t(\lambda)` (the spline's
inverse, by ``brentq`` to 4 ulp): the schedule's kinks no longer multiply the whole right-hand side.
It is the same ODE, not an approximation; :func:`log_snr_flow` checks nothing about the schedule
beyond ``M = k = 1`` with :math:`m_t^2 + \sigma_t^2 = 1` (VP).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import DOP853
from scipy.optimize import brentq

import gddim_numerics as gd
from gddim_numerics.outputs import to_data


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def log_snr_flow(diffusion: gd.LinearDiffusion, model, x: np.ndarray, output: str, *, rtol: float,
                 atol: float) -> dict:
    r"""The VP probability-flow solution from ``x`` at ``t_start`` to ``t_end`` by DOP853 in :math:`\lambda`.

    Parameters
    ----------
    diffusion : LinearDiffusion
        A VP diffusion (one scalar mode, :math:`m_t^2 + \sigma_t^2 = 1`).
    model : callable
        ``model(u, t)`` for float64 NumPy states ``(B, *event_shape)`` and a float ``t``.
    x : ndarray
        Start states ``(B, *event_shape)`` at ``diffusion.t_start``.
    output : str
        What ``model`` returns (``"eps_R"``, ``"data"``, ...).
    rtol, atol : float
        DOP853 tolerances on :math:`z = u/\sigma` (~1 at ``t_start``, ~1/σ_end at the end).

    Returns
    -------
    dict
        ``{"x": end states, "nfe": model calls, "steps": accepted steps}``.
    """
    if diffusion.shape != (1, 1):
        raise ValueError(f"log_snr_flow needs a VP diffusion (one scalar mode); got {diffusion!r}")
    t0, t1 = diffusion.t_start, diffusion.t_end
    lam0, lam1 = float(diffusion.log_snr(t0)), float(diffusion.log_snr(t1))
    ends = np.array([t0, t1])
    if not np.allclose(diffusion.mean_coefficient(ends)[:, 0, 0, 0] ** 2 + diffusion.covariance(ends)[:, 0, 0, 0], 1.0,
                       rtol=1e-12, atol=0):
        raise ValueError(f"log_snr_flow needs m_t^2 + sigma_t^2 = 1 (VP); {diffusion!r} is not variance preserving")
    x = np.asarray(x, dtype=np.float64)
    nfe = 0
    times: dict[float, float] = {lam0: t0, lam1: t1}

    def time_of(lam: float) -> float:
        if lam not in times:
            times[lam] = brentq(lambda t: float(diffusion.log_snr(t)) - lam, t1, t0, xtol=1e-15,
                                rtol=4 * np.finfo(float).eps)
        return times[lam]

    def rhs(lam: float, flat: np.ndarray) -> np.ndarray:
        nonlocal nfe
        t = time_of(float(lam))
        u = math.sqrt(_sigmoid(-lam)) * flat.reshape(x.shape)
        y = np.asarray(model(u, t), dtype=np.float64)
        nfe += 1
        if y.shape != x.shape or not np.all(np.isfinite(y)):
            raise FloatingPointError(f"the model returned shape {y.shape} or non-finite values at t={t:g}")
        c, d = to_data(diffusion, np.array([t]), output)
        data = d[0, 0, 0, 0] * y + (0.0 if c is None else c[0, 0, 0, 0] * u)
        return (0.5 * math.exp(lam / 2) * data).ravel()

    ode = DOP853(rhs, lam0, (x / math.sqrt(_sigmoid(-lam0))).ravel(), lam1, rtol=rtol, atol=atol)
    steps = 0
    while ode.status == "running":
        ode.step()
        steps += 1
    if ode.status != "finished":
        raise RuntimeError(f"DOP853 in the log-SNR failed at log-SNR {ode.t:g}")
    return {"x": math.sqrt(_sigmoid(-lam1)) * ode.y.reshape(x.shape), "nfe": nfe, "steps": steps}
