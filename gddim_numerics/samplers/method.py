"""What a sampler is to :func:`gddim_numerics.sample`: a plan builder, its options, its grid for an NFE.

A :class:`Method` turns ``(diffusion, nfe, grid, **options)`` into a plan: a fixed-step method
derives its step count from ``nfe`` (:attr:`Method.steps_for_nfe`), builds its own grid for that
count (:attr:`Method.grid`, by default :func:`~gddim_numerics.grids.time_grid`'s ``"power"`` grid) or
takes the caller's (a grid kind, or an explicit decreasing array whose step count must match), and
passes the remaining options to :attr:`Method.build`. An adaptive method (``steps_for_nfe=None``)
takes ``nfe`` as its evaluation budget and ``t_start``/``t_end`` instead of a grid.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..grids import check_grid, time_grid

#: Keywords of :func:`~gddim_numerics.grids.time_grid` every fixed-step method accepts.
GRID_OPTIONS = ("t_start", "t_end", "power", "rho", "offset", "first_log_snr")


#: Plans of more steps than this warn with their memory estimate (:func:`plan_memory`).
MAX_STEPS = 10_000
#: Peak bytes of a plan build per step and per ``M k^2`` (measured with ``tracemalloc``: 3.3-6.6 KB for
#: multistep gDDIM on VP, CLD, BDM; the quadrature nodes dominate).
BYTES_PER_STEP_AND_BLOCK = 7_000


def plan_memory(diffusion, n_steps: int) -> int:
    """Estimated peak bytes of building a plan of ``n_steps`` steps: ``n_steps M k^2`` x :data:`BYTES_PER_STEP_AND_BLOCK`."""
    m, k = diffusion.shape
    return int(n_steps) * m * k * k * BYTES_PER_STEP_AND_BLOCK


def _available_memory() -> int | None:
    """Free physical memory in bytes (``None`` where the system does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_steps(diffusion, n_steps: int, name: str) -> None:
    """Warn above :data:`MAX_STEPS` steps with the plan's memory estimate; refuse beyond the free memory."""
    if n_steps <= MAX_STEPS:
        return
    need, free = plan_memory(diffusion, n_steps), _available_memory()
    if free is not None and need > free:
        raise ValueError(f"method {name!r} with {n_steps} steps needs ~{need / 2**30:.1f} GiB to build its plan, "
                         f"more than the {free / 2**30:.1f} GiB free; lower nfe (gDDIM reaches 1e-6 errors with "
                         "tens to hundreds of evaluations)")
    warnings.warn(f"method {name!r} with {n_steps} steps (> {MAX_STEPS}) builds a large plan: ~{need / 2**20:.0f} MiB "
                  "and a build time that grows with the step count", RuntimeWarning, stacklevel=4)


def one_per_step(nfe: int, denoise: bool = False, **_) -> int:
    """Steps of a one-evaluation-per-step method: ``nfe`` less the denoising step's evaluation."""
    return nfe - int(bool(denoise))


def power_grid(diffusion, nfe: int, n_steps: int, options: dict, **grid_options) -> np.ndarray:
    """The default grid of a fixed-step method: ``time_grid(diffusion, n_steps, "power", **grid_options)``."""
    return time_grid(diffusion, n_steps, "power", **grid_options)


@dataclass(frozen=True)
class Method:
    """A sampler known by name.

    Attributes
    ----------
    build : callable
        ``build(diffusion, ts, **options) -> plan`` (adaptive methods: ``build(diffusion, None,
        nfe=nfe, t_start=..., t_end=..., **options)``); the plan has ``.sample(eps_fn, x, **kw)``
        and ``.nfe``.
    options : tuple of str
        The plan options ``build`` accepts (besides the grid's).
    description : str
        One line for ``gd.METHODS``.
    steps_for_nfe : callable or None
        ``steps_for_nfe(nfe, **options)``: grid steps that cost exactly ``nfe`` evaluations;
        ``None`` for adaptive methods.
    grid : callable
        ``grid(diffusion, nfe, n_steps, options, **grid_options)``: the method's own grid.
    min_nfe : int
        Smallest ``nfe`` the method can meet.
    """

    build: Callable
    options: tuple[str, ...]
    description: str
    steps_for_nfe: Callable | None = one_per_step
    grid: Callable = power_grid
    min_nfe: int = 1

    def accepted(self) -> tuple[str, ...]:
        """Every keyword option of this method: its plan options, then its grid options."""
        extra = ("t_start", "t_end") if self.steps_for_nfe is None else GRID_OPTIONS
        return tuple(self.options) + tuple(o for o in extra if o not in self.options)

    def make(self, name: str, diffusion, nfe: int, grid, options: dict):
        """The plan of this method for ``nfe`` evaluations on ``grid`` (None: the method's own grid)."""
        unknown = sorted(set(options) - set(self.accepted()))
        if unknown:
            raise TypeError(f"method {name!r} does not take the option(s) {', '.join(map(repr, unknown))}; it "
                            f"accepts {', '.join(self.accepted())} (and sample keywords rng, noise, callback, "
                            "progress, return_trajectory, check_finite, on_nonfinite, block_axis)")
        if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < self.min_nfe:
            raise ValueError(f"nfe must be an integer >= {self.min_nfe} for method {name!r}; got {nfe!r}")
        nfe = int(nfe)
        grid_options = {k: options.pop(k) for k in GRID_OPTIONS if k in options and k not in self.options}
        if self.steps_for_nfe is None:
            if grid is not None:
                raise ValueError(f"method {name!r} chooses its own steps; pass t_start/t_end, not grid={grid!r}")
            return self.build(diffusion, None, nfe=nfe, **grid_options, **options)
        n_steps = self.steps_for_nfe(nfe, **options)
        if n_steps < 1:
            raise ValueError(f"nfe={nfe} leaves no step for method {name!r} with these options")
        check_steps(diffusion, n_steps, name)
        if grid is None:
            ts = self.grid(diffusion, nfe, n_steps, options, **grid_options)
        elif isinstance(grid, str):
            ts = time_grid(diffusion, n_steps, grid, **grid_options)
        else:
            if grid_options:
                raise ValueError(f"grid options {sorted(grid_options)} need a grid kind; got an explicit grid")
            ts = check_grid(diffusion, grid, "grid")
            if len(ts) - 1 != n_steps:
                raise ValueError(f"grid has {len(ts) - 1} steps but method {name!r} needs {n_steps} for nfe={nfe}")
        return self.build(diffusion, ts, **options)
