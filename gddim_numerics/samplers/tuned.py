"""``gddim_tuned``: gDDIM with the measured per-diffusion settings of :mod:`gddim_numerics.defaults`.

The method supplies its own grid for an NFE (the tuned grid) and accepts a grid of the caller's.
"""

from __future__ import annotations

from ..defaults import tuned_plan
from .gddim import OPTIONS
from .method import Method


def _grid(diffusion, nfe: int, n_steps: int, options: dict, **grid_options):
    """The tuned grid for ``nfe`` (its arguments overridden by ``grid_options``)."""
    return tuned_plan(diffusion, nfe, **options, **grid_options).ts


def _build(diffusion, ts, **options):
    """The tuned plan on the grid ``ts``; its NFE is the grid's step count (+1 with ``denoise``)."""
    nfe = len(ts) - 1 + int(bool(options.get("denoise", False)))
    return tuned_plan(diffusion, nfe, ts=ts, **options)


METHOD = Method(build=_build, options=OPTIONS, grid=_grid,
                description="gDDIM with the measured defaults of gddim_numerics.defaults.TUNED for the diffusion and "
                            "NFE (form, extrapolation variable, order, corrector, grid); a grid of your own replaces "
                            "the tuned grid")
