r"""Structured application of per-mode ``(M, k, k)`` coefficients to the caller's arrays.

Three layouts cover every diffusion (DESIGN.md, "a linear diffusion is a batch of small systems"):

* :class:`ScalarModes` (``M = k = 1``, VP/VE): coefficients are Python floats, any state shape;
* :class:`BlockModes` (``M = 1``, ``k > 1``, CLD and dense): ``k x k`` blocks along a block axis of
  size ``k * C``, component ``j`` being the slice ``[j C, (j + 1) C)`` (``C = 1``: a trailing
  ``(..., k)`` axis; ``C > 1``: a channel-split layout such as ``(B, 2C, H, W)`` for CLD);
* :class:`DCTModes` (``k = 1``, ``M = H W``, BDM): coefficients are ``(H, W)`` arrays applied to
  :math:`y = D_H x D_W^\top` (orthonormal DCT-II matrices along the two image axes).

Each operator turns a whole host table ``(N, M, k, k)`` into its array-side form once
(:meth:`prepare`), and forms a step's linear combination :math:`\sum_i c_i \cdot v_i` in one
expression (:meth:`combine`).
"""

from __future__ import annotations

import numpy as np

from gddim_numerics.bases import DCTBasis
from gddim_numerics.diffusion import LinearDiffusion

from .namespace import device_of


class ScalarModes:
    """``M = k = 1``: every coefficient is a Python float."""

    transforms = False

    def __init__(self, xp, x):
        self.xp = xp

    def to_modes(self, x):
        return x

    def from_modes(self, y):
        return y

    def prepare(self, table: np.ndarray) -> list:
        return [float(v) for v in table.reshape(table.shape[0], -1)[:, 0]]

    def combine(self, terms):
        """``sum_i c_i * v_i`` for ``terms = [(c_i, v_i)]``."""
        acc = None
        for c, v in terms:
            term = c * v
            acc = term if acc is None else acc + term
        return acc


class BlockModes:
    """``M = 1``, ``k x k`` blocks along ``axis`` (size ``k * C``)."""

    transforms = False

    def __init__(self, xp, x, k: int, axis: int = -1):
        self.xp, self.k = xp, k
        ndim = x.ndim
        self.axis = axis % ndim
        size = x.shape[self.axis]
        if size % k != 0 or size == 0:
            raise ValueError(f"x's block axis {axis} has size {size}; the diffusion's blocks need a multiple of k = {k} "
                             f"(k for a trailing (..., {k}) axis, or k*C for a channel-split layout)")
        self.width = size // k
        self._slices = [
            tuple(slice(None) for _ in range(self.axis)) + (slice(j * self.width, (j + 1) * self.width),)
            for j in range(k)
        ]

    def to_modes(self, x):
        return x

    def from_modes(self, y):
        return y

    def prepare(self, table: np.ndarray) -> list:
        return [[[float(c) for c in row] for row in block[0]] for block in table]

    def combine(self, terms):
        parts = [[v[s] for s in self._slices] for _, v in terms]
        out = []
        for i in range(self.k):
            acc = None
            for (c, _), comps in zip(terms, parts):
                for j in range(self.k):
                    cij = c[i][j]
                    if cij == 0.0:
                        continue
                    term = cij * comps[j]
                    acc = term if acc is None else acc + term
            if acc is None:
                acc = self.xp.zeros_like(parts[0][0])
            out.append(acc)
        return self.xp.concat(out, axis=self.axis)


class DCTModes:
    """``k = 1``, ``M = H W`` frequencies of the orthonormal 2-D DCT over the last two axes."""

    transforms = True

    def __init__(self, xp, x, basis: DCTBasis, dtype):
        self.xp = xp
        h, w = basis.shape
        if tuple(x.shape[-2:]) != (h, w):
            raise ValueError(f"x's last two axes must be the diffusion's image shape {(h, w)}; got {tuple(x.shape)}")
        dev = device_of(x)
        self.shape = (h, w)
        self.dtype = dtype
        self.dh = xp.asarray(basis.matrix(0), dtype=dtype, device=dev)
        self.dw = xp.asarray(basis.matrix(1), dtype=dtype, device=dev)
        self.dh_t = xp.asarray(basis.matrix(0).T.copy(), dtype=dtype, device=dev)
        self.dw_t = xp.asarray(basis.matrix(1).T.copy(), dtype=dtype, device=dev)
        self.device = dev

    def to_modes(self, x):
        return self.xp.matmul(self.xp.matmul(self.dh, x), self.dw_t)

    def from_modes(self, y):
        return self.xp.matmul(self.xp.matmul(self.dh_t, y), self.dw)

    def prepare(self, table: np.ndarray):
        arr = table.reshape((table.shape[0],) + self.shape)
        return self.xp.asarray(arr, dtype=self.dtype, device=self.device)

    def combine(self, terms):
        acc = None
        for c, v in terms:
            term = c * v
            acc = term if acc is None else acc + term
        return acc


def operator_for(diffusion: LinearDiffusion, xp, x, dtype, block_axis: int = -1):
    """The operator that serves ``diffusion`` on arrays like ``x``."""
    m, k = diffusion.shape
    if isinstance(diffusion.basis, DCTBasis):
        return DCTModes(xp, x, diffusion.basis, dtype)
    if m == 1 and k == 1:
        return ScalarModes(xp, x)
    if m == 1:
        if x.ndim < 2:
            raise ValueError(f"x must have a batch axis and a block axis of size {k}; got shape {tuple(x.shape)}")
        return BlockModes(xp, x, k, block_axis)
    raise ValueError(f"no array layout serves {diffusion!r} (M={m}, k={k}) in the identity basis")
