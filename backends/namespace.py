"""The caller's array namespace, device and dtype, and the checks that keep every array alike.

Everything goes through :mod:`array_api_compat`: ``xp = namespace_of(x)`` serves NumPy, CuPy,
PyTorch, array-api-strict and any library array-api-compat wraps. Every check raises a
``TypeError`` (wrong kind of array or dtype) or a ``ValueError`` (wrong device or shape) that names
the arrays involved and says what is expected.
"""

from __future__ import annotations

from typing import Any

import array_api_compat


def namespace_of(x: Any, name: str = "x") -> Any:
    """Array-API namespace of ``x``.

    Parameters
    ----------
    x : array
        An array of any library array-api-compat serves.
    name : str
        How to call ``x`` in the error message.

    Returns
    -------
    module
        The namespace (e.g. ``array_api_compat.numpy``, ``array_api_compat.torch``).

    Raises
    ------
    TypeError
        If no backend serves the type of ``x`` (a list, a scalar, an unknown array class).
    """
    try:
        return array_api_compat.array_namespace(x)
    except TypeError as exc:
        raise TypeError(
            f"{name} must be an array of a library the array API serves (NumPy, CuPy, PyTorch, "
            f"array-api-strict, ...); got {_type_name(x)}"
        ) from exc


def device_of(x: Any) -> Any:
    """Device of ``x`` (``"cpu"`` for NumPy)."""
    return array_api_compat.device(x)


def working_dtype(xp: Any, dtype: Any, name: str = "x") -> Any:
    """The dtype the sampler computes in for a state of dtype ``dtype``.

    float64 and float32 are computed in their own dtype; float16 and bfloat16 in float32 (the
    result is cast back). Integer, boolean, complex and wider floating dtypes are refused: nothing
    is recast silently.

    Raises
    ------
    TypeError
        For any other dtype, naming ``name``.
    """
    if dtype == xp.float64 or dtype == xp.float32:
        return dtype
    if _is_half(xp, dtype):
        return xp.float32
    raise TypeError(f"{name} must have dtype float64, float32, float16 or bfloat16; got {dtype}. "
                    "Convert integer data to floating point first; complex states are not supported")


def check_like(xp: Any, reference: Any, other: Any, name: str, ref_name: str = "x") -> None:
    """Check that ``other`` is a real floating array of the namespace and device of ``reference``.

    Parameters
    ----------
    xp : module
        Namespace of ``reference``.
    reference, other : array
        The state and an array the sampler received for it (a network output, a noise draw).
    name, ref_name : str
        How to call ``other`` and ``reference`` in the messages.

    Raises
    ------
    TypeError
        If ``other`` is not an array of the state's own library, or not real floating.
    ValueError
        If ``other`` lives on another device.
    """
    try:
        other_xp = array_api_compat.array_namespace(other)
    except TypeError:
        other_xp = None
    if other_xp is not xp:
        raise TypeError(f"{name} returned {_type_name(other)}, but {ref_name} is {_type_name(reference)}; "
                        f"return arrays of {ref_name}'s own library")
    if device_of(other) != device_of(reference):
        raise ValueError(f"{name} returned an array on device {device_of(other)}, but {ref_name} is on "
                         f"{device_of(reference)}; return arrays on {ref_name}'s device")
    if not xp.isdtype(other.dtype, "real floating"):
        raise TypeError(f"{name} returned an array of dtype {other.dtype}; expected a real floating dtype "
                        f"(that of {ref_name}, {reference.dtype})")


def _is_half(xp: Any, dtype: Any) -> bool:
    """Whether ``dtype`` is float16 or bfloat16 (bfloat16 is outside the standard: named by string)."""
    return dtype == getattr(xp, "float16", None) or str(dtype).rsplit(".", 1)[-1] == "bfloat16"


def _type_name(x: Any) -> str:
    """``module.Class`` of ``x``, e.g. ``numpy.ndarray`` or ``torch.Tensor``."""
    cls = type(x)
    return f"a {cls.__module__}.{cls.__qualname__}"
