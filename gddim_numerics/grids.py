r"""Sampling time grids: decreasing arrays ``ts[0] = t_start > ts[1] > ... > ts[N] = t_end``.

Kinds
-----
``"uniform"``
    uniform in ``t``.
``"power"``
    uniform in :math:`t^{1/p}` (``power=2`` is the papers' "quadratic" grid).
``"log_snr"``
    uniform in the diffusion's noise-level measure :meth:`LinearDiffusion.log_snr`
    (log-SNR for VP/VE/BDM, position log-SNR for CLD, :math:`\log(\operatorname{tr}\Psi\Psi^\top/\operatorname{tr}\Sigma)` otherwise).
``"karras"``
    Karras et al. (2022): uniform in :math:`\sigma^{1/\rho}` with :math:`\sigma = e^{-\lambda/2}`.
``"log"``
    uniform in :math:`\log(t + c)` (``offset=c``).

Large first step
----------------
``first_log_snr=λ₁`` puts the first step's end where the diffusion's noise-level measure
(:meth:`LinearDiffusion.log_snr`: log-SNR for VP/VE/BDM, position log-SNR for CLD) equals
``λ₁``, and spreads the remaining ``n_steps - 1`` steps from there to ``t_end`` by ``kind``. The
level is a noise level, not a fraction of ``T``; it must lie strictly between the measure's values
at ``t_start`` and ``t_end`` (the error message gives that interval).

Passing your own grid
---------------------
Every sampler takes an explicit grid: ``gd.GDDIM(sde, ts, ...)``, or
``gd.sample(sde, eps_fn, x, nfe=len(ts) - 1, grid=ts, ...)`` (for ``gd.sample`` the step count
must match ``nfe``). A grid is any 1-D float array, strictly decreasing (noise first:
``ts[0] = t_start > ... > ts[-1] = t_end``), inside ``diffusion.time_range``;
:func:`check_grid` validates it and says what is wrong. Grids can be composed by hand, e.g. a
hand-placed first step followed by a power grid::

    head = 0.6
    ts = np.concatenate([[sde.t_start], gd.time_grid(sde, n - 1, "power", power=5, t_start=head)])

and :func:`time_at_log_snr` converts noise levels to times (to build a grid uniform in any
function of the noise level).
"""

from __future__ import annotations

import numpy as np

from ._checks import as_times
from .diffusion import LinearDiffusion

GRID_KINDS = ("uniform", "power", "log_snr", "karras", "log")


def check_grid(diffusion: LinearDiffusion, ts, name: str = "ts", allow_final_zero: bool = False) -> np.ndarray:
    """Validate a user grid: 1-D, finite, strictly decreasing, inside ``diffusion.time_range``.

    Returns a read-only float64 copy. ``allow_final_zero`` admits a last point ``0.0`` (the end of a
    final denoising step) below the time range.
    """
    ts = as_times(ts, name)
    if ts.ndim != 1 or ts.size < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 times; got shape {ts.shape}")
    steps = np.diff(ts)
    if np.any(steps >= 0):
        k = int(np.argmax(steps >= 0))
        raise ValueError(
            f"{name} must be strictly decreasing (sampling runs from noise at t_start down to t_end) "
            f"with no zero-length step; {name}[{k}]={ts[k]!r} is followed by {ts[k + 1]!r}"
        )
    lo, hi = diffusion.time_range
    inner = ts[:-1] if (allow_final_zero and ts[-1] == 0.0) else ts
    if inner[0] > hi or inner[-1] < lo:
        raise ValueError(f"{name} must lie in the diffusion's time range [{lo:g}, {hi:g}]; got [{ts[-1]:g}, {ts[0]:g}]")
    out = ts.copy()
    out.setflags(write=False)
    return out


def _invert_monotone(fn, targets: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Solve ``fn(t) = y`` for each target on ``[lo, hi]`` (``fn`` strictly monotone)."""
    from scipy.optimize import brentq  # lazy: keeps `import gddim_numerics` light
    out = np.empty_like(targets)
    for i, y in enumerate(targets):
        out[i] = brentq(lambda t: float(fn(t)) - y, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200)
    return out


def _check_monotone_measure(diffusion: LinearDiffusion, lo: float, hi: float) -> None:
    probe = np.linspace(lo, hi, 257)
    lam = diffusion.log_snr(probe)
    if not np.all(np.diff(lam) < 0):
        raise ValueError(
            f"the noise-level measure of {diffusion!r} is not strictly decreasing on [{lo:g}, {hi:g}]; "
            "use kind='power' or pass a grid"
        )


def time_at_log_snr(diffusion: LinearDiffusion, log_snr, t_start: float | None = None,
                    t_end: float | None = None, name: str = "log_snr") -> np.ndarray:
    """Times in ``(t_end, t_start)`` at which the noise-level measure equals ``log_snr`` (array or scalar).

    Raises a ``ValueError`` naming ``name`` if a level is not strictly inside the measure's range on
    ``[t_end, t_start]`` (defaults: the diffusion's sampling interval), or if the measure is not
    strictly monotone there.
    """
    t0 = diffusion.t_start if t_start is None else float(t_start)
    t1 = diffusion.t_end if t_end is None else float(t_end)
    _check_monotone_measure(diffusion, t1, t0)
    lam0, lam1 = float(diffusion.log_snr(t0)), float(diffusion.log_snr(t1))
    vals = np.asarray(log_snr, dtype=np.float64)
    if not np.all(np.isfinite(vals)) or np.any(vals <= lam0) or np.any(vals >= lam1):
        raise ValueError(
            f"{name} must lie strictly inside the noise-level range of {diffusion!r} on [t_end, t_start] = "
            f"[{t1:g}, {t0:g}]: log-SNR in ({lam0:.6g}, {lam1:.6g}) (its value at t_start and at t_end); "
            f"got {log_snr!r}"
        )
    out = _invert_monotone(diffusion.log_snr, np.atleast_1d(vals).ravel(), t1, t0)
    return out.reshape(vals.shape)


def time_grid(
    diffusion: LinearDiffusion,
    n_steps: int,
    kind: str = "power",
    *,
    t_start: float | None = None,
    t_end: float | None = None,
    power: float = 2.0,
    rho: float = 7.0,
    offset: float = 3e-3,
    first_log_snr: float | None = None,
) -> np.ndarray:
    """A decreasing grid of ``n_steps + 1`` times from ``t_start`` to ``t_end``.

    Parameters
    ----------
    diffusion : LinearDiffusion
    n_steps : int
        Number of steps ``N >= 1``.
    kind : {"uniform", "power", "log_snr", "karras", "log"}
    t_start, t_end : float, optional
        Defaults: ``diffusion.t_start`` and ``diffusion.t_end``.
    power : float
        Exponent ``p`` of the power grid (uniform in ``t**(1/p)``).
    rho : float
        Karras exponent.
    offset : float
        ``c`` of the ``log(t + c)`` grid.
    first_log_snr : float, optional
        End of one large first step, given as a noise level (a value of ``diffusion.log_snr``
        strictly between its values at ``t_start`` and ``t_end``); the other ``n_steps - 1`` steps
        follow ``kind`` from there. Needs ``n_steps >= 2``.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1; got {n_steps!r}")
    t0 = diffusion.t_start if t_start is None else float(t_start)
    t1 = diffusion.t_end if t_end is None else float(t_end)
    lo, hi = diffusion.time_range
    if not (np.isfinite(t0) and np.isfinite(t1) and lo <= t1 < t0 <= hi):
        raise ValueError(f"need time_range[0] <= t_end < t_start <= time_range[1] = [{lo:g}, {hi:g}]; got t_start={t0!r}, t_end={t1!r}")
    if first_log_snr is not None:
        if isinstance(first_log_snr, bool) or not isinstance(first_log_snr, (int, float, np.integer, np.floating)):
            raise ValueError(f"first_log_snr must be a number (a log-SNR level); got {first_log_snr!r}")
        if n_steps < 2:
            raise ValueError(f"first_log_snr needs n_steps >= 2 (one large first step plus the rest); got n_steps={n_steps}")
        head = float(time_at_log_snr(diffusion, float(first_log_snr), t0, t1, name="first_log_snr"))
        rest = time_grid(diffusion, n_steps - 1, kind, t_start=head, t_end=t1, power=power, rho=rho, offset=offset)
        return check_grid(diffusion, np.concatenate([[t0], rest]))
    u = np.linspace(0.0, 1.0, n_steps + 1)
    if kind == "uniform":
        ts = t0 + u * (t1 - t0)
    elif kind == "power":
        if not (np.isfinite(power) and power > 0):
            raise ValueError(f"power must be positive; got {power!r}")
        ts = (t0 ** (1 / power) + u * (t1 ** (1 / power) - t0 ** (1 / power))) ** power
    elif kind == "log":
        if not (np.isfinite(offset) and offset > 0):
            raise ValueError(f"offset must be positive; got {offset!r}")
        ts = np.exp(np.log(t0 + offset) + u * (np.log(t1 + offset) - np.log(t0 + offset))) - offset
    elif kind in ("log_snr", "karras"):
        _check_monotone_measure(diffusion, t1, t0)
        lam0, lam1 = float(diffusion.log_snr(t0)), float(diffusion.log_snr(t1))
        if kind == "log_snr":
            targets = lam0 + u * (lam1 - lam0)
        else:
            if not (np.isfinite(rho) and rho > 0):
                raise ValueError(f"rho must be positive; got {rho!r}")
            s0, s1 = np.exp(-lam0 / 2) ** (1 / rho), np.exp(-lam1 / 2) ** (1 / rho)
            targets = -2.0 * rho * np.log(s0 + u * (s1 - s0))
        ts = _invert_monotone(diffusion.log_snr, targets[1:-1], t1, t0)
        ts = np.concatenate([[t0], ts, [t1]])
    else:
        raise ValueError(f"kind must be one of {GRID_KINDS}; got {kind!r}")
    ts[0], ts[-1] = t0, t1
    return check_grid(diffusion, ts)
