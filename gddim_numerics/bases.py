"""Orthonormal bases in which a diffusion splits into independent ``k x k`` modes.

The host side only *describes* the basis (its ``kind`` and matrices); the array side supplies the
operator of each kind (``gddim_numerics.backends.operators``), so a diffusion in one of these bases
samples with any number of modes ``M`` and block size ``k``:

* :class:`IdentityBasis`: the state's own coordinates. ``M = 1``: every ``k``-block of the event (the
  block axis holds ``k``, or ``k * C`` channel-split); ``M > 1``: the first event axis holds the
  ``M`` modes, e.g. a per-channel diffusion of ``(B, C, H, W)`` images (``k > 1``: block axis last);
* :class:`DCTBasis`: the orthonormal 2-D DCT over the last two (image) axes, ``M = H W``, ``k = 1``;
* :class:`OrthogonalBasis`: a user orthogonal ``D x D`` matrix ``V`` on the flattened event
  (``D = M k``); mode coordinates ``y = V^T x``, mode ``m`` holding ``y[m k : (m + 1) k]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class IdentityBasis:
    """The state's own coordinates: one mode (``M = 1``) or an explicit dense block."""

    kind: str = "identity"


@dataclass(frozen=True, eq=False)
class OrthogonalBasis:
    """A user orthogonal matrix ``V`` (``D x D``, ``V^T V = I`` to 1e-12): mode coordinates ``y = V^T x``.

    Raises
    ------
    ValueError
        If ``matrix`` is not a finite square orthogonal matrix.
    """

    matrix: np.ndarray
    kind: str = "orthogonal"

    def __post_init__(self):
        v = np.array(self.matrix, dtype=np.float64, copy=True)
        if v.ndim != 2 or v.shape[0] != v.shape[1] or not np.all(np.isfinite(v)):
            raise ValueError(f"matrix must be a finite square (D, D) array; got shape {v.shape}")
        err = float(np.abs(v.T @ v - np.eye(v.shape[0])).max())
        if err > 1e-12:
            raise ValueError(f"matrix must be orthogonal (V^T V = I to 1e-12); |V^T V - I| = {err:.2e}: "
                             "orthonormalise it first, e.g. with numpy.linalg.qr")
        v.setflags(write=False)
        object.__setattr__(self, "matrix", v)


@dataclass(frozen=True)
class DCTBasis:
    """Orthonormal 2-D DCT-II over two image axes.

    With ``V^T`` the orthonormal DCT-II, the state ``x`` of shape ``(..., H, W)`` has frequency
    coordinates ``y = V^T x``; mode ``m = i * W + j`` is the frequency pair ``(i, j)``.
    """

    shape: tuple[int, int]
    kind: str = "dct2"

    def matrix(self, axis: int) -> np.ndarray:
        """Orthonormal DCT-II matrix ``D`` of size ``n x n`` for image axis 0 or 1 (``y = D x``)."""
        return dct_matrix(self.shape[axis])

    @property
    def eigenvalues(self) -> np.ndarray:
        """Laplacian eigenvalues ``Lambda_ij = (pi i / H)^2 + (pi j / W)^2``, flattened row-major."""
        h, w = self.shape
        li = (np.pi * np.arange(h) / h) ** 2
        lj = (np.pi * np.arange(w) / w) ** 2
        return (li[:, None] + lj[None, :]).reshape(-1)


@lru_cache(maxsize=32)
def dct_matrix(n: int) -> np.ndarray:
    r"""Orthonormal DCT-II matrix :math:`D_{ij} = c_i \cos(\pi (2j + 1) i / (2n))`.

    ``c_0 = sqrt(1/n)``, ``c_i = sqrt(2/n)`` otherwise, so that ``D @ D.T = I`` and ``D @ x`` equals
    ``scipy.fft.dct(x, type=2, norm="ortho")``.
    """
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * j + 1) * i / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    d.setflags(write=False)
    return d
