r"""Array kernels of the sampler loop, one class per family of array libraries.

A step is a handful of products ``c * v`` (a Python float or a per-mode coefficient array ``c``)
and matrix products ``a @ b`` summed into one new array. How cheaply that can be written depends on
the library:

* :class:`StandardKernels` uses the array API standard only (out-of-place; every namespace);
* :class:`UfuncKernels` (NumPy, CuPy) writes into existing arrays with ``out=``: with recycled
  buffers a step allocates only the arrays it hands out (the state the network sees);
* :class:`TorchKernels` (PyTorch) also fuses each accumulation into one kernel (``add_`` with
  ``alpha``, ``addcmul_``, ``addmm_``, ``baddbmm_``), so a sum of ``n`` terms costs ``n`` passes.

Each instance serves one sample call (one dtype and device) and keeps the buffers the loop gives
back (:meth:`StandardKernels.release`) for reuse (:meth:`StandardKernels.buffer`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import is_cupy_namespace, is_numpy_namespace, is_torch_namespace


class StandardKernels:
    """Out-of-place kernels written with the array API standard only.

    Parameters
    ----------
    xp : module
        Array namespace of the state.
    dtype : dtype
        Working dtype of the sample call.
    device : device
        Device of the state.
    """

    def __init__(self, xp: Any, dtype: Any, device: Any):
        self.xp, self.dtype, self.device = xp, dtype, device

    def asarray(self, table: np.ndarray) -> Any:
        """A float64 host table as an array of the working dtype on the state's device."""
        return self.xp.asarray(table, dtype=self.dtype, device=self.device, copy=True)

    def buffer(self, shape: tuple[int, ...]) -> Any:
        """A released array of ``shape`` to write a result into, or ``None`` (then the result is new)."""
        return None

    def release(self, array: Any) -> None:
        """Hand back an array the loop owns and no longer needs (here: nothing to keep)."""

    def scratch(self, shape: tuple[int, ...]) -> Any:
        """A private array of ``shape`` for intermediate results, or ``None`` (here: always ``None``).

        The same array comes back for the same shape; it is never handed out or released.
        """
        return None

    def scale(self, c: Any, v: Any, out: Any = None) -> Any:
        """``c * v`` (into ``out`` where the library allows)."""
        return c * v

    def add_scaled(self, acc: Any, c: Any, v: Any) -> Any:
        """``acc + c * v`` (in place where the library allows); returns the sum."""
        return acc + c * v

    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        """``a @ b`` (into ``out`` where the library allows)."""
        return self.xp.matmul(a, b)

    def add_matmul(self, acc: Any, a: Any, b: Any) -> Any:
        """``acc + a @ b`` (in place where the library allows); returns the sum."""
        return acc + self.xp.matmul(a, b)


class _BufferedKernels(StandardKernels):
    """Kernels of libraries that write into existing arrays: keep released buffers by shape."""

    def __init__(self, xp: Any, dtype: Any, device: Any):
        super().__init__(xp, dtype, device)
        self._free: dict[tuple[int, ...], list] = {}
        self._scratch: dict[tuple[int, ...], Any] = {}

    def buffer(self, shape: tuple[int, ...]) -> Any:
        free = self._free.get(tuple(shape))
        return free.pop() if free else None

    def release(self, array: Any) -> None:
        self._free.setdefault(tuple(array.shape), []).append(array)

    def scratch(self, shape: tuple[int, ...]) -> Any:
        shape = tuple(shape)
        if shape not in self._scratch:
            self._scratch[shape] = self.xp.empty(shape, dtype=self.dtype, device=self.device)
        return self._scratch[shape]


class UfuncKernels(_BufferedKernels):
    """NumPy and CuPy: ufuncs and ``matmul`` with ``out=``."""

    def __init__(self, xp: Any, dtype: Any, device: Any, lib: Any):
        super().__init__(xp, dtype, device)
        self.lib = lib

    def scale(self, c: Any, v: Any, out: Any = None) -> Any:
        return self.lib.multiply(v, c, out=out)

    def add_scaled(self, acc: Any, c: Any, v: Any) -> Any:
        tmp = self.lib.multiply(v, c, out=self.scratch(acc.shape))
        return self.lib.add(acc, tmp, out=acc)

    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        return self.lib.matmul(a, b, out=out)

    def add_matmul(self, acc: Any, a: Any, b: Any) -> Any:
        tmp = self.lib.matmul(a, b, out=self.scratch(acc.shape))
        return self.lib.add(acc, tmp, out=acc)


class TorchKernels(_BufferedKernels):
    """PyTorch: ``out=`` and fused in-place accumulation.

    ``out=`` is not allowed with arrays that require gradients; such products are formed
    out-of-place and such arrays are never kept as buffers, so sampling stays differentiable.
    """

    def __init__(self, xp: Any, dtype: Any, device: Any):
        super().__init__(xp, dtype, device)
        import torch

        self.torch = torch

    def asarray(self, table: np.ndarray) -> Any:
        """As :meth:`StandardKernels.asarray`; to a CUDA device through pinned memory, without blocking."""
        if self.device.type != "cuda":
            return super().asarray(table)
        host_dtype = np.float64 if self.dtype == self.torch.float64 else np.float32
        pinned = self.torch.from_numpy(np.array(table, dtype=host_dtype)).pin_memory()
        return pinned.to(self.device, non_blocking=True)

    def release(self, array: Any) -> None:
        if not array.requires_grad:
            super().release(array)

    def scale(self, c: Any, v: Any, out: Any = None) -> Any:
        if out is None or v.requires_grad:
            return self.torch.mul(v, c)
        return self.torch.mul(v, c, out=out)

    def add_scaled(self, acc: Any, c: Any, v: Any) -> Any:
        if isinstance(c, float):
            return acc.add_(v, alpha=c)
        return acc.addcmul_(v, c)

    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        if out is None or a.requires_grad or b.requires_grad:
            return self.torch.matmul(a, b)
        return self.torch.matmul(a, b, out=out)

    def add_matmul(self, acc: Any, a: Any, b: Any) -> Any:
        if acc.ndim == 2:
            return acc.addmm_(a, b)
        if acc.ndim > 3:  # per-mode blocks over (B, M, Q, k): broadcasting product, then one add
            return acc.add_(self.torch.matmul(a, b))
        batch = acc.shape[0]
        return acc.baddbmm_(a.expand(batch, *a.shape[-2:]), b.expand(batch, *b.shape[-2:]))


def kernels_for(xp: Any, dtype: Any, device: Any) -> StandardKernels:
    """The fastest kernels available for the namespace ``xp``."""
    if is_numpy_namespace(xp):
        return UfuncKernels(xp, dtype, device, np)
    if is_cupy_namespace(xp):
        import cupy

        return UfuncKernels(xp, dtype, device, cupy)
    if is_torch_namespace(xp):
        return TorchKernels(xp, dtype, device)
    return StandardKernels(xp, dtype, device)
