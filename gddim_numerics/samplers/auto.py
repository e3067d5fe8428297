"""``gddim_auto``: problem-aware gDDIM (:func:`gddim_numerics.auto.auto_plan`).

The method supplies its own grid for an NFE (optimised for the statistics); a grid of the caller's
is kept and only the scheme is chosen.
"""

from __future__ import annotations

import numpy as np

from ..auto import auto_plan
from .method import Method

OPTIONS = ("statistics", "optimize_grid", "output", "budget")


def _grid(diffusion, nfe: int, n_steps: int, options: dict, **grid_options):
    """The grid :func:`auto_plan` chooses for ``nfe`` (``grid_options``: ``t_start``, ``t_end``)."""
    return auto_plan(diffusion, nfe, **options, **grid_options).ts


def _build(diffusion, ts, **options):
    """The auto plan whose grid is ``ts`` (its own, from the cache), else the best scheme on ``ts``."""
    nfe = len(ts) - 1
    own = auto_plan(diffusion, nfe, **options, t_start=float(ts[0]), t_end=float(ts[-1]))
    return own if np.array_equal(own.ts, ts) else auto_plan(diffusion, nfe, ts=ts, **options)


METHOD = Method(build=_build, options=OPTIONS, grid=_grid,
                description="problem-aware gDDIM (gddim_numerics.auto.auto_plan): form, order, corrector and grid "
                            "chosen by the exact error on Gaussians with the data's statistics (option statistics=, "
                            "a DataStatistics; default: standardised data); a grid of your own keeps its times")
