r"""What a trained network calls "time", and what it calls its prediction (host side, float64).

A network is trained with its own time input. :class:`TimeConvention` maps the library's time
``t`` (data at 0, noise at ``T``) to it:

``"t"``
    ``t`` itself (continuous-time models);
``"scaled"``
    ``scale * t`` (e.g. ``scale=999``: score-SDE's continuous DDPM++ models);
``"index"``
    the integer index ``n`` of a discrete training table (``VPSDE.discrete``: entry ``n``
    sits at ``t_n = (n + 1)/N``, :attr:`DiscreteSchedule.table_times`), the nearest knot
    (``rounding="nearest"``: the network then sees a time up to ``1/(2N)`` away from
    the sampler's, an error of the sampler's own making) or the knot itself
    (``rounding="exact"``: every time of the grid must be a knot; build such grids with
    :func:`timestep_grid`);
``"sigma"``
    the noise-to-signal ratio :math:`\sigma = e^{-\lambda_t/2}` (EDM's :math:`\sigma`: VP
    :math:`\sigma_t/\alpha_t`; VE :math:`\sqrt{\Sigma_t} = \sqrt{\sigma_t^2 - \sigma_{min}^2}`; a
    score-SDE VE model conditioned on :math:`\sigma_{min}(\sigma_{max}/\sigma_{min})^t`
    takes ``time=sde.sigma``);
``"log_snr"``
    the log-SNR :math:`\lambda_t` (:meth:`~gddim_numerics.LinearDiffusion.log_snr`);

or any callable ``time(t) -> float``.

:func:`output_type` maps a prediction name (``"eps"``, ``"x0"``, ``"v"``, ``"score"``, diffusers'
``"epsilon"``/``"sample"``/``"v_prediction"``, or a library output type) to the output type a
plan takes (:mod:`gddim_numerics.outputs`); the plan then converts it exactly in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .diffusion import LinearDiffusion
from .outputs import OUTPUT_TYPES, check_output_type

TIME_CONVENTIONS = ("t", "scaled", "index", "sigma", "log_snr")
ROUNDINGS = ("nearest", "exact")
#: prediction names and the output type each one is; "eps" is resolved per diffusion
PREDICTIONS = {"eps": None, "epsilon": None, "x0": "data", "sample": "data", "v_prediction": "v",
               **{name: name for name in OUTPUT_TYPES}}
#: a grid time within this relative distance of a knot is that knot (rounding="exact")
KNOT_RTOL = 1e-9


def output_type(prediction: str, diffusion: LinearDiffusion) -> str:
    """The plan's ``output`` for a network predicting ``prediction`` (see the module docstring).

    ``"eps"``/``"epsilon"`` name :math:`\\epsilon_R = \\epsilon_L` on ``k = 1`` diffusions; on ``k > 1``
    ones (CLD) the two noises differ and must be named (``"eps_R"`` or ``"eps_L"``).
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {prediction!r}; valid: {', '.join(PREDICTIONS)}")
    out = PREDICTIONS[prediction]
    if out is None:
        if diffusion.block_size != 1:
            raise ValueError(f"prediction={prediction!r} is ambiguous on {diffusion!r} (k = {diffusion.block_size}): "
                             "say 'eps_R' (gDDIM's noise) or 'eps_L' (Cholesky noise, e.g. CLD's HSM networks)")
        out = "eps_R"
    return check_output_type(out, diffusion)


def timestep_grid(diffusion: LinearDiffusion, timesteps) -> np.ndarray:
    """The library times of a discrete table's integer ``timesteps`` (e.g. diffusers' ``[999, 899, ...]``).

    Timestep ``n`` is the knot ``table_times[n] = (n + 1)/N`` of ``VPSDE.discrete``; the result is a
    grid on which ``TimeConvention("index", rounding="exact")`` calls the network at exactly those
    timesteps.
    """
    table = _table_times(diffusion)
    steps = np.asarray(timesteps)
    if steps.ndim != 1 or steps.size < 2 or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(f"timesteps must be a 1-D integer array of at least 2 entries; got {timesteps!r}")
    if steps.min() < 0 or steps.max() >= table.size:
        raise ValueError(f"timesteps must lie in 0..{table.size - 1} (the training table); got {steps.min()}..{steps.max()}")
    if np.any(np.diff(steps) >= 0):
        raise ValueError("timesteps must be strictly decreasing (noise first)")
    return table[steps]


def _table_times(diffusion: LinearDiffusion) -> np.ndarray:
    table = getattr(getattr(diffusion, "schedule", None), "table_times", None)
    if table is None:
        raise ValueError(f"time='index' needs a diffusion with a discrete training table (gd.VPSDE.discrete(...)); "
                         f"{diffusion!r} has none. Use time='scaled' with the table size as scale instead")
    return table


@dataclass(frozen=True)
class TimeConvention:
    """Map the library time ``t`` to a network's time input (see the module docstring).

    Parameters
    ----------
    diffusion : LinearDiffusion
    kind : str or callable
        One of :data:`TIME_CONVENTIONS`, or ``kind(t) -> float``.
    scale : float
        Factor of ``"scaled"``.
    rounding : {"nearest", "exact"}
        How ``"index"`` treats a time between two knots.
    """

    diffusion: LinearDiffusion
    kind: str | Callable = "t"
    scale: float = 1.0
    rounding: str = "nearest"

    def __post_init__(self):
        if not callable(self.kind) and self.kind not in TIME_CONVENTIONS:
            raise ValueError(f"time must be one of {TIME_CONVENTIONS} or a callable time(t) -> float; got {self.kind!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}; got {self.rounding!r}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite number > 0; got {self.scale!r}")
        if self.kind == "index":
            _table_times(self.diffusion)

    @property
    def integer(self) -> bool:
        """Whether the network's time is an integer timestep."""
        return self.kind == "index"

    def __call__(self, t: float) -> float | int:
        """The network time of library time ``t`` (an ``int`` for ``"index"``)."""
        if callable(self.kind):
            return float(self.kind(t))
        if self.kind == "t":
            return float(t)
        if self.kind == "scaled":
            return self.scale * float(t)
        if self.kind == "index":
            return self._index(float(t))
        lam = float(self.diffusion.log_snr(t))
        return lam if self.kind == "log_snr" else float(np.exp(-0.5 * lam))

    def _index(self, t: float) -> int:
        table = _table_times(self.diffusion)
        n = int(np.argmin(np.abs(table - t)))
        spacing = table[1] - table[0]
        if not table[0] - 0.5 * spacing <= t <= table[-1] + 0.5 * spacing:
            raise ValueError(f"t={t:.6g} lies outside the training table (timesteps 0..{table.size - 1} at "
                             f"t = {table[0]:.6g}..{table[-1]:.6g})")
        if self.rounding == "exact" and abs(table[n] - t) > KNOT_RTOL * table[n]:
            raise ValueError(f"t={t:.9g} is not a timestep of the training table (nearest: timestep {n} at "
                             f"t={table[n]:.9g}); build the grid from timesteps with "
                             "gd.timestep_grid(sde, timesteps), or use rounding='nearest'")
        return n
