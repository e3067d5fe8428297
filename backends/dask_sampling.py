r"""Sampling a Dask array of start states, one chunk per task, for millions of samples of a cheap model.

``sample_dask(plan, eps_factory, x)`` runs ``plan.sample`` on every chunk of the Dask array ``x``
(batch axis first, chunked along it) wherever Dask runs the chunk's task: threads, processes, or
the workers of a ``dask.distributed`` cluster. The plan travels as one shared graph node, so a
worker receives it once and builds its float64 tables once, on its first chunk (they are cached
in the worker's process). The network does not travel: each task builds it with
``eps_factory()`` (a picklable callable, e.g. a module-level function or a ``functools.partial``
that loads weights), so device handles and large modules stay where they are made.

Every sample is computed independently of the others, so the result is that of
``plan.sample(eps_fn, x.compute(), rng=rng)`` on the concatenated array, whatever the chunking, to
rounding (a BLAS product may round a batch of one sample differently from a larger batch): for a
deterministic plan directly, and for a stochastic plan (``lam > 0``) when ``rng`` gives one seed
per sample (sample :math:`i` draws its noise from its own generator seeded with ``rng[i]``;
see :mod:`gddim_numerics.backends.noise`). One seed, or one generator, for the whole array would
repeat the same noise in every chunk and is refused. Adaptive plans (``rk45``, ``dop853``) are
the exception: they choose one step sequence per batch, so each chunk takes its own steps (to the
same tolerance) and the result depends on the chunking within that tolerance.

Dask is optional (the ``dask`` extra): it is imported when :func:`sample_dask` runs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import dask.array

DASK_EXTRA = "pip install 'gddim-numerics[dask]'"


def sample_dask(plan: Any, eps_factory: Callable[[], Callable], x: dask.array.Array, *, rng: Any = None,
                **run_options: Any) -> dask.array.Array:
    """Final states of ``plan`` from every start state of the Dask array ``x``, one task per batch chunk.

    Parameters
    ----------
    plan : plan
        Any plan with ``sample(eps_fn, x, rng=..., **run_options)``: ``gd.plan(sde, method, nfe, ...)``
        for a method of ``gd.METHODS`` by name, or ``gd.GDDIM(sde, ts, ...)``. Picklable.
    eps_factory : callable
        ``eps_factory() -> eps_fn``, called once per chunk on the worker; ``eps_fn(x, t)`` is the
        network in the chunk's array library. Must be picklable (cloudpickle).
    x : dask.array.Array
        Start states ``(B, *event_shape)`` at the plan's first time, chunked along the batch axis
        (chunks along the event axes are merged: a sample is never split).
    rng : sequence of int or array of int, optional
        One non-negative seed per sample (length ``B``; a NumPy or Dask array, chunked like ``x``
        here). Needed by stochastic plans; e.g. ``np.arange(B)`` or
        ``np.random.SeedSequence(seed).generate_state(B, np.uint64)``.
    **run_options
        Further keywords of ``plan.sample`` (``check_finite``, ``on_nonfinite``, ...), the same
        for every chunk. ``return_trajectory`` is not available (one state per sample comes back).

    Returns
    -------
    dask.array.Array
        The final states, with ``x``'s shape, chunks and dtype; lazy: ``.compute()`` it (on a
        ``distributed.Client``, the cluster's workers run the chunks) or store it chunk by chunk
        (``da.to_zarr``, ...).

    Raises
    ------
    TypeError
        ``x`` not a Dask array, ``plan`` without ``sample``, ``eps_factory`` not callable, ``rng``
        not integer seeds.
    ValueError
        ``x`` without a batch axis, ``rng`` one seed/generator or of the wrong length,
        ``return_trajectory`` asked for.
    ImportError
        Dask is not installed.
    """
    try:
        import dask
        import dask.array as da
    except ImportError as err:
        raise ImportError(f"sample_dask needs dask: {DASK_EXTRA}") from err
    if not isinstance(x, da.Array):
        raise TypeError(f"x must be a dask.array.Array of start states (B, *event_shape); got {type(x).__name__}; "
                        "wrap a NumPy array with dask.array.from_array(x, chunks=(chunk, *x.shape[1:]))")
    if x.ndim < 1:
        raise ValueError("x must have a batch axis first: shape (B, *event_shape)")
    if not callable(getattr(plan, "sample", None)):
        raise TypeError(f"plan must be a sampler plan with .sample(eps_fn, x, ...), e.g. gd.GDDIM(sde, ts); "
                        f"got {type(plan).__name__}")
    if not callable(eps_factory):
        raise TypeError("eps_factory must be a picklable callable eps_factory() -> eps_fn(x, t); got "
                        f"{type(eps_factory).__name__} (wrap a network in a function that builds or loads it)")
    if run_options.get("return_trajectory"):
        raise ValueError("return_trajectory is not available in sample_dask (one final state per sample comes "
                         "back); sample a few start points with plan.sample(..., return_trajectory=True)")
    x = x.rechunk({axis: -1 for axis in range(1, x.ndim)})
    blocks = [x] if rng is None else [x, _seed_blocks(da, rng, x)]
    shared = dask.delayed(plan, pure=True)  # one graph node: a worker receives the plan once, not per chunk
    return da.map_blocks(_sample_block, *blocks, plan=shared, eps_factory=eps_factory, run_options=run_options,
                         dtype=x.dtype, meta=x._meta)


def _seed_blocks(da: Any, rng: Any, x: dask.array.Array) -> dask.array.Array:
    """``rng`` as an integer Dask array of one seed per sample, shape ``(B, 1, ...)`` (it broadcasts against ``x``
    block by block), chunked like ``x``'s batch axis."""
    if isinstance(rng, (np.random.Generator, np.random.RandomState)) or np.ndim(rng) == 0:
        raise ValueError("rng must give one seed per sample (e.g. numpy.arange(B)): one seed or one generator for "
                         "the whole Dask array would repeat the same noise in every chunk")
    seeds = rng if isinstance(rng, da.Array) else da.from_array(np.asarray(rng))
    if seeds.ndim != 1 or seeds.shape[0] != x.shape[0]:
        raise ValueError(f"rng must hold one seed per sample, shape ({x.shape[0]},); got shape {seeds.shape}")
    if not np.issubdtype(seeds.dtype, np.integer):
        raise TypeError(f"rng must hold integer seeds; got dtype {seeds.dtype}")
    return seeds.rechunk((x.chunks[0],)).reshape(seeds.shape + (1,) * (x.ndim - 1))


def _sample_block(x: Any, seeds: Any = None, *, plan: Any, eps_factory: Callable[[], Callable],
                  run_options: dict) -> Any:
    """One chunk on its worker: build the network, run the plan, return the final states."""
    rng = None if seeds is None else [operator.index(s) for s in seeds.reshape(-1)]
    return plan.sample(eps_factory(), x, rng=rng, **run_options).x
