"""``sample`` and ``plan``: pick a sampler by name, as ``scipy.integrate.solve_ivp`` picks a method.

>>> import numpy as np, gddim_numerics as gd
>>> sde = gd.VPSDE.linear()
>>> res = gd.sample(sde, lambda x, t: np.zeros_like(x), np.ones((2, 3)), method="gddim", nfe=10)
>>> res.nfe
10
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .diffusion import LinearDiffusion
from .result import SampleResult
from .samplers import METHODS, Method


def _method(method: str) -> Method:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[method]


def plan(diffusion: LinearDiffusion, method: str = "gddim", nfe: int = 20, grid: str | np.ndarray | None = None,
         **options) -> Any:
    """The plan of sampler ``method`` for exactly ``nfe`` network evaluations.

    Parameters
    ----------
    diffusion : LinearDiffusion
    method : str
        A key of :data:`METHODS`.
    nfe : int
        Network evaluations (an adaptive method's budget).
    grid : None, str or array
        ``None``: the method's own grid for ``nfe``; a :func:`~gddim_numerics.grids.time_grid` kind; or
        an explicit decreasing grid whose step count the method needs for ``nfe``.
    **options
        The method's options (``order``, ``lam``, ``output``, ``denoise``, ...) and grid arguments
        (``t_start``, ``t_end``, ``power``, ...). An option the method does not take raises a
        ``TypeError`` that lists the ones it does.

    Returns
    -------
    plan
        An immutable plan with ``.sample(eps_fn, x, **kw)`` and ``.nfe``.
    """
    if not isinstance(diffusion, LinearDiffusion):
        raise TypeError(f"diffusion must be a LinearDiffusion; got {type(diffusion).__name__}")
    return _method(method).make(method, diffusion, nfe, grid, dict(options))


def sample(diffusion: LinearDiffusion, eps_fn: Callable, x: Any, method: str = "gddim", nfe: int = 20,
           grid: str | np.ndarray | None = None, *, rng: Any = None, noise: Callable | None = None,
           callback: Callable | None = None, progress: bool = False, return_trajectory: bool = False,
           check_finite: bool = True, on_nonfinite: str = "raise", block_axis: int = -1,
           **options) -> SampleResult:
    """Sample from ``x`` at the grid's start with the sampler ``method`` and ``nfe`` evaluations.

    Parameters
    ----------
    diffusion : LinearDiffusion
    eps_fn : callable
        ``eps_fn(x, t)``: the network, in the caller's array library (``t`` a Python float).
    x : array
        Start state ``(B, *event_shape)`` at the grid's first time.
    method : str
        A key of :data:`METHODS` (``gd.METHODS`` lists them with descriptions).
    nfe : int
        Exact number of network evaluations (adaptive ``rk45``/``dop853``: the budget).
    grid : None, str or array
        ``None``: the method's own grid; a :func:`~gddim_numerics.grids.time_grid` kind; or an
        explicit decreasing grid (its step count must match ``nfe``).
    rng, noise, callback, progress, return_trajectory, check_finite, on_nonfinite, block_axis
        How to run the plan: see :func:`gddim_numerics.backends.run_tables` (``rng``: a seed, one seed
        per sample, or a generator of ``x``'s library).
    **options
        The method's options (``order``, ``lam``, ``output``, ``denoise``, ...) and grid arguments
        (``t_start``, ``t_end``, ``power``, ``offset``, ``first_log_snr``, ``rho``); see :func:`plan`.

    Returns
    -------
    SampleResult
        ``x``: the final state (caller's array type, device, dtype, shape); ``ts``: the times visited;
        ``nfe``: network evaluations made; ``trajectory``: states at ``ts`` (with
        ``return_trajectory=True``, else ``None``); ``success``/``status``/``message``: whether the
        end was reached (``False``/-1 e.g. after a non-finite output with ``on_nonfinite="return"`` or
        a spent budget); ``info``: method details.

    Raises
    ------
    TypeError
        An option the method does not take (the message lists the ones it does), or ``lam`` that is
        not a real number.
    ValueError
        A bad ``nfe``, grid, ``lam`` or option value; a plan that would not fit in free memory.
    FloatingPointError
        A non-finite start state or network output (``on_nonfinite="raise"``).

    Warns
    -----
    RuntimeWarning
        A plan of more than :data:`~gddim_numerics.samplers.method.MAX_STEPS` steps, with its memory
        estimate.

    Examples
    --------
    >>> import numpy as np, gddim_numerics as gd
    >>> sde = gd.CLD()
    >>> data = gd.DiracData(sde, (1, 2), point=[[0.5, 0.0]])
    >>> x_T = data.sample_prior(4, rng=np.random.default_rng(0))
    >>> res = gd.sample(sde, data.eps_R, x_T, method="gddim", nfe=10, order=3)
    >>> res.nfe, res.success, bool(np.abs(res.x - data.exact_flow(x_T, sde.t_start, sde.t_end)).max() < 1e-10)
    (10, True, True)
    """
    chosen = plan(diffusion, method, nfe, grid, **options)
    return chosen.sample(eps_fn, x, rng=rng, noise=noise, callback=callback, progress=progress,
                         return_trajectory=return_trajectory, check_finite=check_finite,
                         on_nonfinite=on_nonfinite, block_axis=block_axis)
