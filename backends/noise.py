"""Standard normal noise for stochastic plans, drawn in the state's own library and device."""

from __future__ import annotations

import numpy as np
from array_api_compat import is_cupy_namespace, is_numpy_namespace, is_torch_namespace

from .namespace import device_of


def noise_source(xp, x, rng=None, noise=None):
    """A callable ``draw(step) -> z`` with ``z ~ N(0, I)`` shaped like ``x``.

    Parameters
    ----------
    rng : int, numpy.random.Generator, torch.Generator or cupy.random.RandomState, optional
        Source of randomness in the state's library (an int seeds one).
    noise : callable, optional
        ``noise(step, shape)`` returning the step's standard normal array (wins over ``rng``).
    """
    shape, dtype, dev = tuple(x.shape), x.dtype, device_of(x)
    if noise is not None:
        if not callable(noise):
            raise TypeError("noise must be a callable noise(step, shape) -> array")
        return lambda step: noise(step, shape)
    if rng is None:
        raise ValueError("a stochastic plan (lam > 0) needs a source of randomness: pass rng= (a seed or a "
                         "generator of the state's library) or noise=callable(step, shape)")
    if is_numpy_namespace(xp):
        gen = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        return lambda step: gen.standard_normal(shape, dtype=dtype)
    if is_torch_namespace(xp):
        import torch

        if isinstance(rng, torch.Generator):
            gen = rng
        else:
            gen = torch.Generator(device=dev)
            gen.manual_seed(int(rng))
        return lambda step: torch.randn(shape, generator=gen, device=dev, dtype=dtype)
    if is_cupy_namespace(xp):
        import cupy

        gen = rng if isinstance(rng, cupy.random.RandomState) else cupy.random.RandomState(int(rng))
        return lambda step: gen.standard_normal(shape, dtype=dtype)
    # any other namespace: draw with NumPy on the host once per step and move it
    gen = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    return lambda step: xp.asarray(gen.standard_normal(shape), dtype=dtype, device=dev)
