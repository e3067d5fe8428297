"""Standard normal noise for stochastic plans, drawn by the state's own library on its device.

``rng`` may be

* an ``int`` seed: one generator of the state's library for the whole batch;
* a generator of the state's library: ``numpy.random.Generator`` (NumPy, and any other namespace,
  whose noise is drawn on the host and moved once per step), ``torch.Generator`` on the state's
  device, ``cupy.random.Generator`` or ``cupy.random.RandomState`` (CuPy);
* a sequence of ``B`` int seeds (one per sample): sample ``i`` draws from its own generator seeded
  with ``rng[i]``, so its noise, and so its result, does not depend on the batch it is in.

A user ``noise(step, shape)`` callable instead returns the step's standard normal array itself.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from array_api_compat import is_cupy_namespace, is_numpy_namespace, is_torch_namespace

from .namespace import check_like, device_of


def noise_source(xp: Any, x: Any, dtype: Any, rng: Any = None,
                 noise: Callable | None = None) -> Callable[[int], Any]:
    """A callable ``draw(step) -> z`` with ``z ~ N(0, I)`` of ``x``'s shape, dtype ``dtype``, device and library.

    Parameters
    ----------
    xp : module
        Namespace of ``x``.
    x : array
        The state ``(B, *event_shape)`` in the caller's layout.
    dtype : dtype
        Dtype of the draws (the sampler's working dtype).
    rng : int, sequence of int, or a generator of ``x``'s library
        Source of randomness (see the module docstring).
    noise : callable, optional
        ``noise(step, shape) -> array`` returning the step's standard normal array in the caller's
        layout; it wins over ``rng``. Its arrays must be of ``x``'s library and device; another
        floating dtype is cast to ``dtype``.

    Raises
    ------
    ValueError
        If neither ``rng`` nor ``noise`` is given, or the number of per-sample seeds is not ``B``.
    TypeError
        If ``rng`` is not a seed, a seed sequence or a generator of ``x``'s library.
    """
    shape, dev = tuple(x.shape), device_of(x)
    if noise is not None:
        if not callable(noise):
            raise TypeError(f"noise must be a callable noise(step, shape) -> array; got {type(noise).__name__}")
        return _user_noise(xp, x, dtype, noise)
    if rng is None:
        raise ValueError("a stochastic plan (lam > 0) needs a source of randomness: pass rng= (a seed, one seed "
                         "per sample, or a generator of the state's library) or noise=callable(step, shape)")
    seeds = _seeds(rng, shape[0])
    if is_torch_namespace(xp):
        return _torch_noise(rng, seeds, shape, dtype, dev)
    if is_cupy_namespace(xp):
        return _cupy_noise(rng, seeds, shape, dtype, dev)
    host_dtype = np.float32 if dtype == xp.float32 else np.float64
    draw = _draw(_numpy_generators(rng, seeds), seeds is not None,
                 lambda g, out: g.standard_normal(dtype=host_dtype, out=out),
                 lambda: np.empty(shape, dtype=host_dtype))
    if is_numpy_namespace(xp):
        return draw
    return lambda step: xp.asarray(draw(step), dtype=dtype, device=dev)


def _user_noise(xp: Any, x: Any, dtype: Any, noise: Callable) -> Callable[[int], Any]:
    shape = tuple(x.shape)

    def draw(step: int) -> Any:
        z = noise(step, shape)
        check_like(xp, x, z, "noise", "x")
        if tuple(z.shape) != shape:
            raise ValueError(f"noise returned shape {tuple(z.shape)} at step {step}; expected the state's shape {shape}")
        return z if z.dtype == dtype else xp.astype(z, dtype)

    return draw


def _seeds(rng: Any, batch: int) -> list[int] | None:
    """The per-sample seeds in ``rng`` (``None`` when ``rng`` is one seed or a generator)."""
    if isinstance(rng, (str, bytes)) or not isinstance(rng, (Sequence, np.ndarray)) or np.ndim(rng) == 0:
        return None
    seeds = [_seed(s, "rng[i]") for s in rng]
    if len(seeds) != batch:
        raise ValueError(f"rng has {len(seeds)} per-sample seeds but x has batch size {batch}; pass one seed "
                         "per sample")
    return seeds


def _seed(value: Any, name: str) -> int:
    try:
        seed = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int seed; got {value!r}") from None
    if isinstance(value, bool) or seed < 0:
        raise ValueError(f"{name} must be a non-negative int seed; got {value!r}")
    return seed


def _wrong_rng(rng: Any, expected: str) -> TypeError:
    return TypeError(f"rng must be an int seed, a sequence of one int seed per sample, or {expected}; "
                     f"got {type(rng).__module__}.{type(rng).__qualname__}")


def _draw(gens: list, per_sample: bool, fill: Callable[[Any, Any], Any],
          empty: Callable[[], Any]) -> Callable[[int], Any]:
    """``draw(step)``: ``gens[0]`` fills the whole batch, or (``per_sample``) ``gens[i]`` fills sample ``i``."""
    if not per_sample:
        gen = gens[0]
        return lambda step: fill(gen, empty())

    def draw_samples(step: int) -> Any:
        z = empty()
        for i, g in enumerate(gens):
            fill(g, z[i:i + 1])  # a view also when the event shape is ()
        return z

    return draw_samples


def _numpy_generators(rng: Any, seeds: list[int] | None) -> list:
    if seeds is not None:
        return [np.random.default_rng(s) for s in seeds]
    if isinstance(rng, np.random.Generator):
        return [rng]
    try:
        return [np.random.default_rng(_seed(rng, "rng"))]
    except TypeError:
        raise _wrong_rng(rng, "a numpy.random.Generator") from None


def _torch_noise(rng: Any, seeds: list[int] | None, shape: tuple[int, ...], dtype: Any, dev: Any) -> Callable:
    import torch

    if seeds is not None:
        gens = [torch.Generator(device=dev).manual_seed(s) for s in seeds]
    elif isinstance(rng, torch.Generator):
        if rng.device != dev:
            raise ValueError(f"rng is a torch.Generator on {rng.device}, but x is on {dev}; "
                             "create it with torch.Generator(device=x.device)")
        gens = [rng]
    else:
        try:
            gens = [torch.Generator(device=dev).manual_seed(_seed(rng, "rng"))]
        except TypeError:
            raise _wrong_rng(rng, "a torch.Generator on the state's device") from None
    return _draw(gens, seeds is not None, lambda g, out: out.normal_(generator=g),
                 lambda: torch.empty(shape, dtype=dtype, device=dev))


def _cupy_noise(rng: Any, seeds: list[int] | None, shape: tuple[int, ...], dtype: Any, dev: Any) -> Callable:
    import cupy

    kinds = (cupy.random.Generator, cupy.random.RandomState)
    with dev:
        if seeds is not None:
            gens = [cupy.random.default_rng(s) for s in seeds]
        elif isinstance(rng, kinds):
            gens = [rng]
        else:
            try:
                gens = [cupy.random.default_rng(_seed(rng, "rng"))]
            except TypeError:
                raise _wrong_rng(rng, "a cupy.random.Generator or cupy.random.RandomState") from None
    if seeds is None:
        gen = gens[0]

        def draw_batch(step: int) -> Any:
            with dev:
                return gen.standard_normal(shape, dtype=dtype)

        return draw_batch

    def draw_samples(step: int) -> Any:
        with dev:
            return cupy.stack([g.standard_normal(shape[1:], dtype=dtype) for g in gens])

    return draw_samples
