"""``sample``: pick a sampler by name, as ``scipy.integrate.solve_ivp`` picks a method.

>>> import numpy as np, gddim_numerics as gd
>>> sde = gd.VPSDE.linear()
>>> res = gd.sample(sde, lambda x, t: np.zeros_like(x), np.ones((2, 3)), method="gddim", nfe=10)
>>> res.nfe
10
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .diffusion import LinearDiffusion
from .grids import check_grid, time_grid
from .plans import GDDIM
from .result import SampleResult


@dataclass(frozen=True)
class Method:
    """A sampler known by name.

    ``build(diffusion, ts, **options)`` returns a plan with ``.sample(eps_fn, x, **kw)``;
    ``steps_for_nfe(nfe, **options)`` is the number of grid steps that costs exactly ``nfe``
    evaluations (``None`` for adaptive solvers, which take ``t_start``/``t_end`` instead of a grid).
    """

    build: Callable
    steps_for_nfe: Callable | None
    description: str
    min_nfe: int = 1


METHODS: dict[str, Method] = {}


def register_method(name: str, method: Method) -> None:
    """Make ``method`` available to :func:`sample` under ``name``."""
    METHODS[name] = method


def _gddim_steps(nfe: int, denoise: bool = False, **_) -> int:
    return nfe - int(bool(denoise))


register_method("gddim", Method(
    build=lambda d, ts, **o: GDDIM(d, ts, **{"order": 1 if o.get("lam", 0) > 0 else 2, **o}),
    steps_for_nfe=_gddim_steps,
    description="gDDIM: exponential Adams-Bashforth in eps (order q, default 2), stochastic with lam > 0 (order 1)"))
register_method("gddim_L", Method(
    build=lambda d, ts, **o: GDDIM(d, ts, **{"order": 2, **o, "factor": "L"}),
    steps_for_nfe=_gddim_steps,
    description="the K = L (Cholesky) ablation of gDDIM (MATH.md §3.2, paper Table 1)"))


def sample(diffusion: LinearDiffusion, eps_fn, x, method: str = "gddim", nfe: int = 20,
           grid: str | np.ndarray = "power", grid_options: dict | None = None,
           sample_options: dict | None = None, **options) -> SampleResult:
    """Sample from ``x`` at the grid's start with the sampler ``method`` and ``nfe`` evaluations.

    Parameters
    ----------
    diffusion : LinearDiffusion
    eps_fn : callable
        ``eps_fn(x, t)``: the network, in the caller's array library.
    x : array
        Start state ``(B, *event_shape)``.
    method : str
        A key of :data:`METHODS` (``gd.METHODS`` lists them with descriptions).
    nfe : int
        Exact number of network evaluations.
    grid : str or array
        A :func:`~gddim_numerics.grids.time_grid` kind, or an explicit decreasing grid (then its
        length fixes the step count and ``nfe`` must match).
    grid_options : dict
        Keyword arguments of :func:`~gddim_numerics.grids.time_grid` (``power``, ``t_end``, ...).
    sample_options : dict
        Keyword arguments of the plan's ``sample`` (``rng``, ``callback``, ``progress``, ...).
    **options
        Options of the method (``order``, ``lam``, ``output``, ``denoise``, ...).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(sorted(METHODS))}")
    m = METHODS[method]
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < m.min_nfe:
        raise ValueError(f"nfe must be an integer >= {m.min_nfe} for method {method!r}; got {nfe!r}")
    grid_options = dict(grid_options or {})
    if m.steps_for_nfe is None:
        if not isinstance(grid, str):
            raise ValueError(f"method {method!r} chooses its own steps; pass t_start/t_end in grid_options, not a grid")
        plan = m.build(diffusion, None, nfe=nfe, **grid_options, **options)
    else:
        n_steps = m.steps_for_nfe(int(nfe), **options)
        if n_steps < 1:
            raise ValueError(f"nfe={nfe} leaves no step for method {method!r} with these options")
        if isinstance(grid, str):
            ts = time_grid(diffusion, n_steps, grid, **grid_options)
        else:
            ts = check_grid(diffusion, grid, "grid")
            if len(ts) - 1 != n_steps:
                raise ValueError(f"grid has {len(ts) - 1} steps but method {method!r} needs {n_steps} for nfe={nfe}")
        plan = m.build(diffusion, ts, **options)
    return plan.sample(eps_fn, x, **(sample_options or {}))


from .auto import build_auto  # noqa: E402  (the registry above must exist first)

register_method("gddim_auto", Method(
    build=build_auto,
    steps_for_nfe=None,
    description="problem-aware gDDIM (gddim_numerics.auto.auto_plan): scheme and grid chosen by the exact error on "
                "the Gaussian with the data's statistics (option statistics=, a DataStatistics; default: "
                "standardised data); pass t_start/t_end, or use gd.auto_plan(..., ts=...) for a grid of your own"))
