r"""Host coefficients the baseline samplers share, and the plan made of :class:`StepTables`.

Time runs down (a step goes from ``s = ts[k]`` to ``t = ts[k+1] < s``, :math:`\Delta t = t - s < 0`).
Networks may return any output type of :mod:`gddim_numerics.outputs`; it is converted exactly
(affinely) to :math:`\epsilon_R = a_s u + b_s y`, so the score is :math:`\nabla\log p_s = -R_s^{-\top}\epsilon_R`.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from types import MappingProxyType

import numpy as np

from ..diffusion import LinearDiffusion, batched_inverse, batched_transpose
from ..grids import check_grid
from ..outputs import to_data, to_noise
from ..plans import denoise_tables
from ..result import SampleResult
from ..tables import StepTables, concatenate


def check_diffusion(diffusion) -> LinearDiffusion:
    if not isinstance(diffusion, LinearDiffusion):
        raise TypeError(f"diffusion must be a LinearDiffusion; got {type(diffusion).__name__}")
    return diffusion


def eye_like(blocks: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.eye(blocks.shape[-1]), blocks.shape)


def noise_maps(diffusion: LinearDiffusion, times: np.ndarray, output: str) -> tuple[np.ndarray, np.ndarray]:
    r"""Dense ``(a, b)`` with :math:`\epsilon_R = a u + b y` (zeros / identity where ``to_noise`` omits them)."""
    a, b = to_noise(diffusion, times, output, "R")
    shape = times.shape + diffusion.shape + (diffusion.block_size,)
    a = np.zeros(shape) if a is None else a
    b = np.broadcast_to(np.eye(diffusion.block_size), shape) if b is None else b
    return a, b


def data_maps(diffusion: LinearDiffusion, times: np.ndarray, output: str) -> tuple[np.ndarray, np.ndarray]:
    r"""Dense ``(c, d)`` with the predicted data :math:`\hat u_0 = c u + d y`."""
    c, d = to_data(diffusion, times, output)
    return (np.zeros_like(d) if c is None else c), d


def score_gain(diffusion: LinearDiffusion, times: np.ndarray) -> np.ndarray:
    r""":math:`G_tG_t^\top R_t^{-\top}`: maps :math:`\epsilon_R` to :math:`-G_tG_t^\top\nabla\log p_t`."""
    return diffusion.diffusion(times) @ batched_transpose(batched_inverse(diffusion.gddim_factor(times)))


def probability_flow_coefficients(diffusion: LinearDiffusion, times, output: str = "eps_R"):
    r"""Per-mode ``(V_u, V_y)`` of the probability-flow velocity at ``times``.

    The PF ODE (docs/math §2.1, λ = 0) in the network's output ``y`` (docs/math §6):

    .. math::
        \dot u = F_t u - \tfrac12 G_tG_t^\top\nabla\log p_t(u) = F_t u + \tfrac12 G_tG_t^\top R_t^{-\top}\epsilon_R
               = V_u(t)\,u + V_y(t)\,y,\quad
        V_u = F + \tfrac12GG^\top R^{-\top}a_t,\ V_y = \tfrac12GG^\top R^{-\top}b_t .

    Returns two float64 arrays of shape ``times.shape + (M, k, k)``.
    """
    times = np.asarray(times, dtype=np.float64)
    a, b = noise_maps(diffusion, times, output)
    half_gain = 0.5 * score_gain(diffusion, times)
    return diffusion.drift(times) + half_gain @ a, half_gain @ b


def checked_grid(diffusion: LinearDiffusion, ts, denoise: bool) -> np.ndarray:
    """``ts`` checked by :func:`check_grid`, ending above 0 when a denoising step follows."""
    ts = check_grid(check_diffusion(diffusion), ts)
    if denoise and ts[-1] <= 0:
        raise ValueError("denoise=True needs a grid that ends at t_end > 0 (the denoising step goes from t_end to 0)")
    return ts


class FrozenPlan:
    """Base of the plans whose loop lives in ``backends`` (Heun, SSCS, ``solve_ivp``): immutable once built.

    ``__init__`` validates and sets every attribute (``diffusion``, ``output``, ``denoise``, ...), then
    calls :meth:`_freeze`; the table dict becomes a read-only mapping of read-only arrays.
    """

    _frozen = False

    def denoise_step(self, t_end: float) -> StepTables:
        """Tables of the final denoising step from ``t_end`` (run after the loop when ``denoise``)."""
        return denoise_tables(self.diffusion, t_end, "R", self.output)

    def _freeze(self) -> None:
        tables = getattr(self, "tables", None)
        if tables is not None:
            for table in tables.values():
                table.setflags(write=False)
            self.tables = MappingProxyType(dict(tables))
        self._frozen = True

    def __setattr__(self, name: str, value) -> None:
        if self._frozen:
            raise FrozenInstanceError(f"cannot assign to {name!r}: plans are immutable; build a new plan")
        object.__setattr__(self, name, value)


@dataclass(frozen=True)
class TablePlan:
    """A plan made of :class:`StepTables` (``em``, ``euler``, ``ancestral``), run by the table loop.

    Build it with :func:`~gddim_numerics.samplers.em.em`, :func:`~gddim_numerics.samplers.em.euler`
    or :func:`~gddim_numerics.samplers.ancestral.ancestral`.
    """

    diffusion: LinearDiffusion
    tables: StepTables

    @property
    def nfe(self) -> int:
        """Network evaluations of one sample call."""
        return self.tables.n_steps

    def sample(self, eps_fn, x, **kwargs) -> SampleResult:
        """Run from ``x`` at ``tables.ts[0]``; keywords as :func:`gddim_numerics.backends.run_tables`."""
        from ..backends.loop import run_tables  # the array side, loaded when a sample runs

        return run_tables(self.diffusion, self.tables, eps_fn, x, **kwargs)

    def __repr__(self) -> str:
        return f"TablePlan({self.diffusion!r}, N={self.tables.n_steps}, {self.tables.info})"


def table_plan(diffusion: LinearDiffusion, tables: StepTables, output: str, denoise: bool) -> TablePlan:
    """A :class:`TablePlan` of ``tables``, followed by the denoising step when ``denoise``."""
    if denoise:
        tables = concatenate(tables, denoise_tables(diffusion, float(tables.ts[-1]), "R", output))
    return TablePlan(diffusion, tables)
