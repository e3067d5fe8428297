"""The caller's array namespace, device and dtype, through ``array_api_compat``."""

from __future__ import annotations

import array_api_compat


def namespace_of(x, name: str = "x"):
    """Array-API namespace of ``x``; a ``TypeError`` naming ``name`` when no backend serves it."""
    try:
        return array_api_compat.array_namespace(x)
    except TypeError as exc:
        raise TypeError(
            f"{name} must be an array of a library the array API serves (NumPy, CuPy, PyTorch, "
            f"array-api-strict, ...); got {type(x).__module__}.{type(x).__name__}"
        ) from exc


def device_of(x):
    """Device of ``x`` (``"cpu"`` for NumPy)."""
    return array_api_compat.device(x)


def check_real_floating(xp, x, name: str = "x") -> None:
    """Refuse integer, boolean and complex arrays (they are never recast silently)."""
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype (float16/bfloat16/float32/float64); got {x.dtype}")


def same_kind(xp, reference, other, name: str, ref_name: str = "x") -> None:
    """Check that ``other`` is an array of the namespace and device of ``reference``."""
    other_xp = namespace_of(other, name)
    if other_xp is not xp and other_xp.__name__ != xp.__name__:
        raise TypeError(f"{name} returned a {type(other).__module__}.{type(other).__name__} array, "
                        f"but {ref_name} is a {type(reference).__module__}.{type(reference).__name__}; "
                        "return arrays of the state's own library")
    if device_of(other) != device_of(reference):
        raise TypeError(f"{name} returned an array on device {device_of(other)}, but {ref_name} is on "
                        f"{device_of(reference)}; keep it on the state's device")
