r"""How a diffusion's per-mode ``k x k`` blocks act on the caller's arrays.

A state array has shape ``(B, *event_shape)``; its event part, flattened in C order, is a vector
:math:`u \in \mathbb R^D` with ``D = prod(event_shape)``. A diffusion with ``M`` modes of block
size ``k`` acts on it as follows (the fixed layout convention of the library):

* ``M = 1``, ``k = 1`` (VP, VE): every element is an independent scalar system, so a block
  :math:`b` acts as :math:`b\,I_D`; any ``event_shape`` fits.
* ``M = 1``, ``k > 1`` (CLD with ``k = 2``, dense user matrices): the **last** event axis is the
  block axis of size ``k`` and the other axes are independent copies, so a block :math:`B` acts
  as :math:`I_c \otimes B` with ``c = D / k``.
* ``M = H W``, ``k = 1`` with a :class:`~gddim_numerics.bases.DCTBasis` (BDM): the **last two**
  event axes are the image axes ``(H, W)``; mode ``m = i W + j`` is the DCT-II frequency
  ``(i, j)`` of the orthonormal 2-D DCT :math:`y = D_H\,x\,D_W^\top`, i.e. in flattened form
  :math:`y = T x` with :math:`T = D_H \otimes D_W`. Per-mode values :math:`d_m` act on one image as
  :math:`T^\top \operatorname{diag}(d)\,T`, and leading event axes (channels) are copies:
  :math:`I_c \otimes T^\top \operatorname{diag}(d)\,T`.

* ``M > 1`` modes in the identity basis (e.g. a per-channel VP): the **first** event axis holds
  the modes (size ``M``), and within a mode the layout is that of ``M = 1`` (block axis last when
  ``k > 1``): the operator is :math:`\operatorname{blockdiag}_m(I_c \otimes B_m)`.
* :class:`~gddim_numerics.bases.OrthogonalBasis` ``V`` (``D = M k``): :math:`V\operatorname{blockdiag}(B)V^\top`.

:func:`dense_operator` builds these ``D x D`` matrices (float64, vectorised over leading axes);
:func:`basis_matrix` gives the orthogonal ``V`` with ``dense_operator(mats) = V blockdiag(mats) V^T``.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import numpy as np

from .bases import DCTBasis, OrthogonalBasis
from .diffusion import LinearDiffusion


def validate_event_shape(diffusion: LinearDiffusion, event_shape: Sequence[int]) -> tuple[int, ...]:
    """Check that ``event_shape`` fits the layout convention of ``diffusion``.

    Parameters
    ----------
    diffusion : LinearDiffusion
        The diffusion whose ``(M, k)`` structure the event must carry.
    event_shape : sequence of int
        Shape of one sample (the state array is ``(B, *event_shape)``).

    Returns
    -------
    tuple of int
        ``event_shape`` as a tuple of Python ints.

    Raises
    ------
    ValueError
        If the entries are not positive integers, or the shape does not carry the diffusion's
        block axis (``k > 1``: last axis of size ``k``) or image axes (DCT basis: last two axes
        ``(H, W)``), or the diffusion's structure is not one the convention covers.
    """
    shape = _as_shape(event_shape)
    m, k = diffusion.n_modes, diffusion.block_size
    if isinstance(diffusion.basis, DCTBasis):
        hw = tuple(diffusion.basis.shape)
        if k != 1 or m != prod(hw):
            raise ValueError(f"{diffusion!r}: a DCT basis needs k = 1 and M = H*W = {prod(hw)} modes")
        if shape[-2:] != hw:
            raise ValueError(
                f"event_shape {shape} does not fit {diffusion!r}: the last two axes must be the image "
                f"axes {hw}, e.g. (C, {hw[0]}, {hw[1]}) or {hw}"
            )
    elif isinstance(diffusion.basis, OrthogonalBasis):
        d = diffusion.basis.matrix.shape[0]
        if d != m * k or prod(shape) != d:
            raise ValueError(f"event_shape {shape} does not fit {diffusion!r}: its orthogonal basis is {d} x {d}, "
                             f"so one sample must hold D = M k = {m * k} = {d} numbers")
    elif m != 1 and (len(shape) < 1 + (k > 1) or shape[0] != m or (k > 1 and shape[-1] != k)):
        raise ValueError(f"event_shape {shape} does not fit {diffusion!r}: M = {m} modes in the identity basis "
                         f"are the first event axis, e.g. ({m}, H, W)" + (f" with a last block axis {k}" if k > 1 else ""))
    elif k > 1 and shape[-1:] != (k,):
        raise ValueError(
            f"event_shape {shape} does not fit {diffusion!r}: the last axis must be the block axis of "
            f"size k = {k}, e.g. (..., {k})"
        )
    return shape


def event_size(event_shape: Sequence[int]) -> int:
    """Number ``D = prod(event_shape)`` of scalars in one sample."""
    return prod(_as_shape(event_shape))


def dense_operator(diffusion: LinearDiffusion, mats, event_shape: Sequence[int]) -> np.ndarray:
    r"""Full matrix of per-mode blocks acting on the flattened event.

    Parameters
    ----------
    diffusion : LinearDiffusion
        Gives ``(M, k)`` and the basis.
    mats : array_like, shape ``(..., M, k, k)``
        Per-mode blocks (e.g. ``diffusion.covariance(t)``); leading axes are kept.
    event_shape : sequence of int
        Event shape; validated with :func:`validate_event_shape`.

    Returns
    -------
    numpy.ndarray, shape ``(..., D, D)``
        ``I_c ⊗ B`` (identity basis) or ``I_c ⊗ T^T diag(d) T`` (DCT basis), float64, such that
        ``(op @ x.reshape(-1)).reshape(event_shape)`` applies the blocks to one sample ``x``.
    """
    shape = validate_event_shape(diffusion, event_shape)
    blocks = _check_blocks(diffusion, mats)
    if isinstance(diffusion.basis, DCTBasis):
        t = _dct_2d(diffusion)
        unit = (t.T * blocks[..., :, 0, 0][..., None, :]) @ t
    elif isinstance(diffusion.basis, OrthogonalBasis):
        v = diffusion.basis.matrix
        return v @ _block_diagonal(blocks) @ v.T
    elif diffusion.n_modes > 1:  # identity basis, the modes on the first event axis
        copies = prod(shape[1:]) // diffusion.block_size
        return _block_diagonal(_kron_identity(blocks, copies))
    else:
        unit = blocks[..., 0, :, :]
    return _kron_identity(unit, prod(shape) // unit.shape[-1])


def basis_matrix(diffusion: LinearDiffusion, event_shape: Sequence[int]) -> np.ndarray:
    r"""Orthogonal ``V`` (``D x D``) whose columns are the mode coordinates of the event.

    ``dense_operator(diffusion, mats, event_shape) = V · blockdiag · V^T`` where ``blockdiag`` is
    block diagonal with the blocks ``mats`` (one per copy and mode, in C order). It is
    :math:`I_D` for the identity basis and :math:`I_c \otimes T^\top` for the DCT basis.
    """
    shape = validate_event_shape(diffusion, event_shape)
    if isinstance(diffusion.basis, DCTBasis):
        t = _dct_2d(diffusion)
        return _kron_identity(t.T, prod(shape) // t.shape[0])
    if isinstance(diffusion.basis, OrthogonalBasis):
        return diffusion.basis.matrix.copy()
    return np.eye(prod(shape))


def _as_shape(event_shape) -> tuple[int, ...]:
    try:
        shape = tuple(event_shape)
    except TypeError:
        raise ValueError(f"event_shape must be a tuple of positive ints; got {event_shape!r}") from None
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(f"event_shape must be a tuple of positive ints; got {event_shape!r}")
    return tuple(int(n) for n in shape)


def _check_blocks(diffusion: LinearDiffusion, mats) -> np.ndarray:
    a = np.asarray(mats, dtype=np.float64)
    m, k = diffusion.n_modes, diffusion.block_size
    if a.ndim < 3 or a.shape[-3:] != (m, k, k):
        raise ValueError(f"mats must have shape (..., M, k, k) = (..., {m}, {k}, {k}); got {a.shape}")
    return a


def _dct_2d(diffusion: LinearDiffusion) -> np.ndarray:
    """``T = D_H ⊗ D_W``: the flattened orthonormal 2-D DCT-II of one ``(H, W)`` image."""
    return np.kron(diffusion.basis.matrix(0), diffusion.basis.matrix(1))


def _kron_identity(unit: np.ndarray, copies: int) -> np.ndarray:
    """``I_copies ⊗ unit`` for a batch ``(..., n, n)`` of matrices."""
    n = unit.shape[-1]
    out = np.einsum("ab,...ij->...aibj", np.eye(copies), unit)
    return out.reshape(unit.shape[:-2] + (copies * n, copies * n))


def _block_diagonal(blocks: np.ndarray) -> np.ndarray:
    """The block-diagonal ``(..., M n, M n)`` matrix of a batch ``(..., M, n, n)`` of blocks."""
    m, n = blocks.shape[-3], blocks.shape[-1]
    out = np.einsum("ab,...aij->...aibj", np.eye(m), blocks)
    return out.reshape(blocks.shape[:-3] + (m * n, m * n))
