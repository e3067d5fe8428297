"""Input checks shared by the host-side numerics.

Every check raises a ``ValueError``/``TypeError`` that names the argument and says what would be
valid; nothing is clipped or recast silently.
"""

from __future__ import annotations

import numpy as np


def as_times(t, name: str = "t") -> np.ndarray:
    """Return ``t`` as a float64 array, refusing non-real or non-finite entries."""
    arr = np.asarray(t)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be real numbers (got dtype {arr.dtype}); pass floats")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite; got {arr[~np.isfinite(arr)][:3]!r}")
    return arr


def times_in_range(t, lower: float, upper: float, name: str = "t") -> np.ndarray:
    """Return ``t`` as float64 after checking ``lower <= t <= upper``."""
    arr = np.asarray(t)
    if arr.dtype.kind in "iuf" and arr.size:  # fast path: NaN fails every comparison, so this implies finite
        arr = arr.astype(np.float64)
        low, high = float(arr.min()), float(arr.max())
        if lower <= low and high <= upper and -np.inf < low and high < np.inf:
            return arr
    arr = as_times(t, name)
    if ((arr >= lower) & (arr <= upper)).all():
        return arr
    bad = (arr < lower) | (arr > upper)
    if bad.any():
        raise ValueError(
            f"{name} must lie in the diffusion's time range [{lower:g}, {upper:g}]; "
            f"got {arr[bad].ravel()[:3]!r}"
        )
    return arr


def positive(value: float, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as float after checking it is one real, finite, positive number (no strings or bools)."""
    if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0 or np.asarray(value).dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number; got {value!r}")
    v = float(value)
    ok = np.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        need = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite {need} number; got {value!r}")
    return v


def symmetric_positive_definite(mat, name: str, allow_semidefinite: bool = False) -> np.ndarray:
    """Check a batch ``(..., k, k)`` of matrices for symmetry and (semi-)definiteness."""
    a = np.asarray(mat, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must be square matrices (..., k, k); got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    scale = max(1.0, float(np.max(np.abs(a))))
    if np.max(np.abs(a - np.swapaxes(a, -1, -2))) > 1e-12 * scale:
        raise ValueError(f"{name} must be symmetric; symmetrize it, e.g. (S + S.T) / 2")
    eig = np.linalg.eigvalsh(a)
    tol = -1e-14 * scale
    if allow_semidefinite and np.any(eig < tol):
        raise ValueError(f"{name} must be positive semi-definite; smallest eigenvalue {eig.min():.3g}")
    if not allow_semidefinite and np.any(eig <= 0):
        raise ValueError(f"{name} must be positive definite; smallest eigenvalue {eig.min():.3g}")
    return a


def square_matrix(mat, name: str) -> np.ndarray:
    """Return a finite float64 ``(k, k)`` matrix."""
    a = np.asarray(mat, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square (k, k) matrix; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def end_time(t_end, time_range: tuple[float, float], t_start: float, name: str = "t_end") -> float:
    """Return the default last grid time ``t_end`` after checking ``t_lower <= t_end < t_start`` and ``t_end > 0``.

    ``t_end > 0`` because sampling stops short of the data time, where the kernel covariance of a data
    point is singular; nothing is clamped into the range.
    """
    arr = as_times(t_end, name)
    if arr.ndim != 0:
        raise TypeError(f"{name} must be one real number; got an array of shape {arr.shape}")
    value = float(arr)
    lower = float(time_range[0])
    if not (value > 0 and lower <= value < t_start):
        interval = f"(0, {t_start:g})" if lower <= 0 else f"[{lower:g}, {t_start:g})"
        raise ValueError(f"{name} (the last time of a sampling grid) must lie in {interval}, between the "
                         f"diffusion's earliest time and its start time t_start; got {t_end!r}")
    return value
