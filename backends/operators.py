r"""Structured application of per-mode ``(M, k, k)`` coefficients to the caller's arrays.

Four layouts cover every diffusion (docs/math §0: a linear diffusion is a batch of small systems);
the state is ``(B, *event_shape)``:

* :class:`ScalarModes` (``M = k = 1``: VP, VE): coefficients are Python floats, any state shape;
* :class:`BlockModes` (``M = 1``, ``k > 1``: CLD, dense ``d x d``): ``k x k`` blocks along a block
  axis of size ``k * C``, component ``j`` being the slice ``[j C, (j + 1) C)`` of that axis. ``C = 1``
  is a trailing ``(..., k)`` axis (``block_axis=-1``); ``C > 1`` a channel-split layout such as
  ``(B, 2C, H, W)`` for CLD (``block_axis=1``). A block is applied as one matrix product with a
  ``(k, k)`` coefficient array on the state's device, whatever ``k``;
* :class:`DCTModes` (``k = 1``, ``M = H W``: BDM): coefficients are ``(H, W)`` arrays acting on
  :math:`y = D_H x D_W^\top` over the last two axes (orthonormal DCT-II matrices ``D``); the loop
  keeps the state in these coordinates;
* :class:`ModeBlocks` (any ``M``, ``k``): the identity basis with the modes on the first event axis
  (e.g. a per-channel VP), or a user :class:`~gddim_numerics.bases.OrthogonalBasis`.

The basis picks the operator (:func:`operator_for`), so a new diffusion in one of these bases, with
any mode count and block size, needs no backend change.

Each operator turns a whole host table ``(N, M, k, k)`` into its array-side form once
(:meth:`ScalarModes.prepare`) and forms a step's linear combination :math:`\sum_i c_i v_i`
(:meth:`ScalarModes.combine`) with the call's :mod:`~gddim_numerics.backends.kernels`.
"""

from __future__ import annotations

import operator
from math import prod
from typing import Any

import numpy as np

from gddim_numerics.bases import DCTBasis
from gddim_numerics.diffusion import LinearDiffusion

from .kernels import StandardKernels


class ScalarModes:
    """``M = k = 1``: every coefficient is a Python float; any state shape.

    Parameters
    ----------
    kernels : StandardKernels
        Kernels of the sample call.
    shape : tuple of int
        Shape of the state.
    """

    #: whether the mode coordinates differ from the caller's layout
    transforms = False

    def __init__(self, kernels: StandardKernels, shape: tuple[int, ...]):
        self.kernels, self.shape = kernels, tuple(shape)

    def prepare(self, table: np.ndarray) -> list:
        """Per-step coefficients of a host table ``(N, M, k, k)``: a list of ``N`` (one move per table)."""
        return [float(v) for v in table[:, 0, 0, 0]]

    def to_modes(self, x: Any, out: Any = None) -> Any:
        """Mode coordinates of an array in the caller's layout (``out``: a buffer to write into)."""
        return x

    def from_modes(self, u: Any, out: Any = None) -> Any:
        """Caller's layout of mode coordinates ``u`` (``out``: a buffer to write into)."""
        return u

    def combine(self, terms: list[tuple[Any, Any]], out: Any = None) -> Any:
        """``sum_i c_i v_i`` of ``terms = [(c_i, v_i), ...]`` (mode coordinates), into ``out`` if given."""
        (c, v), *rest = terms
        acc = self.kernels.scale(c, v, out)
        for c, v in rest:
            acc = self.kernels.add_scaled(acc, c, v)
        return acc


class BlockModes(ScalarModes):
    """``M = 1``, ``k x k`` blocks along ``axis`` (size ``k * C``), applied by matrix products.

    The state is viewed as ``(P, k, Q)`` with ``P`` the product of the axes before the block axis
    and ``Q = C * (product of the axes after it)``; a block ``A`` acts as ``A @ v`` on that view,
    or as ``v @ A^T`` on the ``(P, k)`` view when ``Q = 1`` (a trailing block axis of size ``k``).

    Raises
    ------
    TypeError
        If ``axis`` is not an integer.
    ValueError
        If ``axis`` is out of range, is the batch axis, or its size is not a multiple of ``k``.
    """

    def __init__(self, kernels: StandardKernels, shape: tuple[int, ...], k: int, axis: int = -1):
        super().__init__(kernels, shape)
        ndim = len(self.shape)
        try:
            axis = operator.index(axis)
        except TypeError:
            raise TypeError(f"block_axis must be an integer; got {axis!r}") from None
        if ndim < 2:
            raise ValueError(f"x must have a batch axis and a block axis of size {k} (e.g. shape (B, ..., {k})); "
                             f"got shape {self.shape}")
        if not -ndim <= axis < ndim or axis % ndim == 0:
            raise ValueError(f"block_axis={axis} must name an event axis of x (1..{ndim - 1}, or negative); "
                             f"x has shape {self.shape} and axis 0 is the batch axis")
        self.axis = axis % ndim
        size = self.shape[self.axis]
        if size % k != 0:
            raise ValueError(f"x's block axis {self.axis} has size {size}; the diffusion's {k}x{k} blocks need "
                             f"size {k} (a trailing (..., {k}) axis) or a multiple k*C of it (channel-split "
                             f"layout, e.g. (B, {k}*C, H, W) with block_axis=1); x has shape {self.shape}")
        self.k = k
        outer = prod(self.shape[: self.axis])
        inner = (size // k) * prod(self.shape[self.axis + 1:])
        self._left = inner > 1
        self._view = (outer, k, inner) if self._left else (outer, k)

    def prepare(self, table: np.ndarray) -> list:
        blocks = table[:, 0] if self._left else np.swapaxes(table[:, 0], -1, -2)
        return _steps(self.kernels.asarray(np.ascontiguousarray(blocks)))

    def combine(self, terms: list[tuple[Any, Any]], out: Any = None) -> Any:
        xp, kern = self.kernels.xp, self.kernels
        view = None if out is None else xp.reshape(out, self._view)
        (c, v), *rest = terms
        if self._left:
            acc = kern.matmul(c, xp.reshape(v, self._view), view)
            for c, v in rest:
                acc = kern.add_matmul(acc, c, xp.reshape(v, self._view))
        else:
            acc = kern.matmul(xp.reshape(v, self._view), c, view)
            for c, v in rest:
                acc = kern.add_matmul(acc, xp.reshape(v, self._view), c)
        return xp.reshape(acc, self.shape)


class DCTModes(ScalarModes):
    r"""``k = 1``, ``M = H W`` frequencies of the orthonormal 2-D DCT over the last two axes.

    Mode coordinates are :math:`y = D_H x D_W^\top` (two matrix products in the state's namespace);
    a coefficient is an ``(H, W)`` array that broadcasts over the leading axes.

    Raises
    ------
    ValueError
        If the state's last two axes are not the diffusion's image shape ``(H, W)``, or there is no
        batch axis before them.
    """

    transforms = True

    def __init__(self, kernels: StandardKernels, shape: tuple[int, ...], basis: DCTBasis):
        super().__init__(kernels, shape)
        h, w = basis.shape
        if len(self.shape) < 3 or self.shape[-2:] != (h, w):
            raise ValueError(f"x must have shape (B, ..., {h}, {w}): a batch axis, then the diffusion's image shape "
                             f"(H, W) = {(h, w)} on the last two axes; got shape {self.shape}")
        self.image_shape = (h, w)
        self._dh = kernels.asarray(basis.matrix(0))
        self._dw = kernels.asarray(basis.matrix(1))
        self._dh_t = kernels.asarray(np.ascontiguousarray(basis.matrix(0).T))
        self._dw_t = kernels.asarray(np.ascontiguousarray(basis.matrix(1).T))

    def prepare(self, table: np.ndarray) -> list:
        return _steps(self.kernels.asarray(table.reshape((table.shape[0],) + self.image_shape)))

    def to_modes(self, x: Any, out: Any = None) -> Any:
        kern = self.kernels
        tmp = kern.matmul(self._dh, x, kern.scratch(tuple(x.shape)))
        return kern.matmul(tmp, self._dw_t, out)

    def from_modes(self, u: Any, out: Any = None) -> Any:
        kern = self.kernels
        tmp = kern.matmul(self._dh_t, u, kern.scratch(tuple(u.shape)))
        return kern.matmul(tmp, self._dw, out)


class ModeBlocks(ScalarModes):
    r"""``M`` modes of ``k x k`` blocks: identity basis (modes on the first event axis) or an orthogonal ``V``.

    The mode coordinates are viewed as ``(B, M, Q, k)``: in the identity basis the state itself
    (``Q`` copies of each mode's block, block axis last); with an
    :class:`~gddim_numerics.bases.OrthogonalBasis` the coordinates :math:`y = V^\top x` of the
    flattened event (``Q = 1``, ``D = M k``). A step's per-mode blocks ``(M, k, k)`` act as one
    batched matrix product on that view.

    Raises
    ------
    ValueError
        If the state's shape does not carry ``M`` modes in this layout.
    """

    def __init__(self, kernels: StandardKernels, shape: tuple[int, ...], m: int, k: int,
                 matrix: np.ndarray | None = None):
        super().__init__(kernels, shape)
        if len(self.shape) < 2:
            raise ValueError(f"x must have a batch axis and event axes; got shape {self.shape}")
        batch, event = self.shape[0], self.shape[1:]
        if matrix is None:
            if event[0] != m or (k > 1 and (len(event) < 2 or event[-1] != k)):
                raise ValueError(f"x must have shape (B, {m}, ...{', ' + str(k) if k > 1 else ''}): the first event "
                                 f"axis holds the diffusion's M = {m} modes{' and the last its k = ' + str(k) + ' block' if k > 1 else ''}; "
                                 f"got shape {self.shape}")
            self._view = (batch, m, prod(event[1:]) // k, k)
        else:
            d = matrix.shape[0]
            if prod(event) != d:
                raise ValueError(f"x must hold D = {d} numbers per sample (the diffusion's orthogonal basis is "
                                 f"{d} x {d}); got shape {self.shape}")
            self.transforms = True
            self._flat = (batch, d)
            self._view = (batch, m, 1, k)
            self._v = kernels.asarray(np.ascontiguousarray(matrix))
            self._v_t = kernels.asarray(np.ascontiguousarray(matrix.T))

    def prepare(self, table: np.ndarray) -> list:
        return _steps(self.kernels.asarray(np.ascontiguousarray(np.swapaxes(table, -1, -2))))

    def combine(self, terms: list[tuple[Any, Any]], out: Any = None) -> Any:
        xp, kern = self.kernels.xp, self.kernels
        view = None if out is None else xp.reshape(out, self._view)
        (c, v), *rest = terms
        acc = kern.matmul(xp.reshape(v, self._view), c, view)
        for c, v in rest:
            acc = kern.add_matmul(acc, xp.reshape(v, self._view), c)
        return xp.reshape(acc, self.shape)

    def _rotate(self, x: Any, matrix: Any, out: Any) -> Any:
        xp = self.kernels.xp
        flat = None if out is None else xp.reshape(out, self._flat)
        return xp.reshape(self.kernels.matmul(xp.reshape(x, self._flat), matrix, flat), self.shape)

    def to_modes(self, x: Any, out: Any = None) -> Any:
        return self._rotate(x, self._v, out) if self.transforms else x

    def from_modes(self, u: Any, out: Any = None) -> Any:
        return self._rotate(u, self._v_t, out) if self.transforms else u


def _steps(table: Any) -> list:
    """The per-step views ``table[k, ...]`` of a device table (made once, indexed by a list per step)."""
    return [table[k, ...] for k in range(table.shape[0])]


def operator_for(diffusion: LinearDiffusion, kernels: StandardKernels, shape: tuple[int, ...],
                 block_axis: int = -1) -> ScalarModes:
    """The operator that serves ``diffusion`` on states of ``shape``.

    Parameters
    ----------
    diffusion : LinearDiffusion
        Gives ``(M, k)`` and the basis.
    kernels : StandardKernels
        Kernels of the sample call (see :func:`~gddim_numerics.backends.kernels.kernels_for`).
    shape : tuple of int
        Shape ``(B, *event_shape)`` of the state.
    block_axis : int
        Block axis of ``k > 1`` diffusions (ignored otherwise).

    Raises
    ------
    ValueError
        If the state's shape does not carry the diffusion's layout.
    """
    m, k = diffusion.shape
    if len(shape) < 1:
        raise ValueError("x must have a leading batch axis, shape (B, *event_shape); got a 0-d array")
    basis = diffusion.basis
    build = _BY_BASIS.get(getattr(basis, "kind", None))
    if build is None:
        raise ValueError(f"no array operator serves the basis {basis!r}; use IdentityBasis, DCTBasis or "
                         "OrthogonalBasis (gddim_numerics.bases)")
    return build(kernels, shape, basis, m, k, block_axis)


def _identity(kernels: StandardKernels, shape: tuple[int, ...], basis: Any, m: int, k: int, block_axis: int):
    if m == 1 and k == 1:
        return ScalarModes(kernels, shape)
    if m == 1:
        return BlockModes(kernels, shape, k, block_axis)
    return ModeBlocks(kernels, shape, m, k)


#: The operator of each basis kind (``basis.kind``): ``build(kernels, shape, basis, M, k, block_axis)``.
_BY_BASIS = {
    "identity": _identity,
    "dct2": lambda kernels, shape, basis, m, k, block_axis: DCTModes(kernels, shape, basis),
    "orthogonal": lambda kernels, shape, basis, m, k, block_axis: ModeBlocks(kernels, shape, m, k, basis.matrix),
}
