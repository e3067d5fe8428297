r"""gDDIM plans (``gddim``, ``gddim_L``): a frozen, validated configuration whose tables are cached.

The tables (:mod:`gddim_numerics.plans`) are built on first use and kept in one bounded LRU cache
(:data:`TABLE_CACHE_SIZE` entries) keyed by the diffusion and every option they depend on, so
repeated plans on one grid share their tables and many distinct grids do not grow memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..diffusion import LinearDiffusion
from ..grids import check_grid
from ..outputs import check_factor, check_output_type
from ..plans import (_check_form, _check_order, _check_variable_on_grid, check_lam, denoise_tables,
                     deterministic_tables, dirac_gain, extrapolation_variable, stochastic_tables)
from ..result import SampleResult
from ..tables import StepTables, concatenate
from .method import Method, one_per_step

#: The order of deterministic gDDIM when none is given (stochastic gDDIM, ``lam > 0``, is order 1).
DEFAULT_ORDER = 2
#: Number of table sets the LRU cache keeps (all plans of all diffusions together).
TABLE_CACHE_SIZE = 64
_TABLES: OrderedDict = OrderedDict()


@dataclass(frozen=True, eq=False)
class GDDIM:
    r"""A gDDIM plan: deterministic (``lam = 0``, ``order`` 1–5) or stochastic (``lam > 0``, order 1).

    Parameters
    ----------
    diffusion : LinearDiffusion
    ts : array_like
        Decreasing grid (see :func:`gddim_numerics.grids.time_grid`).
    order : int, optional
        Number ``q`` (1–5) of stored values in the exponential Adams–Bashforth predictor; default
        :data:`DEFAULT_ORDER` for ``lam = 0`` and 1 for ``lam > 0``.
    lam : float
        :math:`\lambda \ge 0` of the stochastic family; 0 is the probability-flow ODE.
    factor : {"R", "L"}
        ``"R"``: gDDIM; ``"L"``: the Cholesky (``K = L``) ablation of the paper's Table 1.
    output : {"eps_R", "eps_L", "score", "data"}
        What the network ``eps_fn`` returns.
    denoise : bool
        Append the final denoising step to 0 (one more evaluation).
    lower_order_final : bool
        Use order ``<= N - k`` at step ``k`` (lower orders in the last steps).
    variable : str or callable
        Extrapolation variable of the multistep predictor and corrector
        (:func:`~gddim_numerics.plans.extrapolation_variable`).
    form : {"eps", "data"}
        What the multistep method extrapolates: the network noise :math:`\epsilon_K` (the paper's
        scheme) or the data prediction :math:`D`. ``order=1`` is the same step in both forms.
    corrector : bool
        Add the evaluation-free PEC corrector of :mod:`gddim_numerics.corrector`: each step except the
        last is redone with one more Lagrange node, reusing the evaluation made at the predicted
        state, so the evaluation count is unchanged. Needs ``lam = 0`` and at least 2 steps.

    The plan is immutable and validated once; its tables are built on first access of
    :attr:`tables`, in float64, and cached (:data:`TABLE_CACHE_SIZE`).
    """

    diffusion: LinearDiffusion
    ts: Any
    order: int | None = None
    lam: float = 0.0
    factor: str = "R"
    output: str = "eps_R"
    denoise: bool = False
    lower_order_final: bool = False
    variable: Any = "t"
    form: str = "eps"
    corrector: bool = False
    key: tuple = field(init=False, repr=False)

    def __post_init__(self):
        diffusion = self.diffusion
        if not isinstance(diffusion, LinearDiffusion):
            raise TypeError(f"diffusion must be a LinearDiffusion; got {type(diffusion).__name__}")
        lam = check_lam(self.lam)
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("ts", check_grid(diffusion, self.ts))
        set_("lam", lam)
        set_("order", _check_order((1 if lam > 0 else DEFAULT_ORDER) if self.order is None else self.order))
        check_factor(self.factor)
        set_("output", check_output_type(self.output, self.diffusion))
        for name in ("denoise", "lower_order_final", "corrector"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False; got {value!r}")
            set_(name, bool(value))
        _check_variable_on_grid(extrapolation_variable(diffusion, self.variable), self.ts)
        set_("form", _check_form(self.form))
        if self.form == "data" and self.factor != "R":
            raise ValueError("form='data' extrapolates the data prediction and uses no noise factor; pass factor='R'")
        if lam > 0 and self.form != "eps":
            raise ValueError("form='data' is a deterministic (lam = 0) scheme; stochastic gDDIM is order 1, "
                             "where both forms coincide: use form='eps'")
        if self.corrector and lam > 0:
            raise ValueError("corrector=True is defined for deterministic gDDIM (lam = 0) only")
        if self.corrector and len(self.ts) < 3:
            raise ValueError("corrector=True needs a grid of at least 2 steps (nfe >= 2): the last step is never "
                             "corrected, so a 1-step grid has nothing to correct")
        if lam > 0 and self.order != 1:
            raise ValueError("stochastic gDDIM (lam > 0) is defined for order=1 only")
        if lam > 0 and self.factor != "R":
            raise ValueError("stochastic gDDIM uses factor='R'")
        if self.denoise and self.ts[-1] <= 0:
            raise ValueError("denoise=True needs a grid that ends at t_end > 0")
        if self.ts[-1] <= 0 and (self.order > 1 or self.corrector):
            raise ValueError(f"this grid ends at t = 0, where the noise factor R_0 is singular: order={self.order} "
                             f"(corrector={self.corrector}) extrapolates through it; end the grid at t_end > 0 "
                             "(denoise=True adds a last step to 0) or use order=1 without corrector")
        set_("key", (id(diffusion), self.ts.tobytes(), self.order, lam, self.factor, self.output, self.denoise,
                     self.lower_order_final, self.variable, self.form, self.corrector))

    @property
    def tables(self) -> StepTables:
        """The plan's :class:`StepTables` (built on first access; LRU-cached across plans)."""
        entry = _TABLES.get(self.key)
        if entry is not None and entry[0] is self.diffusion:
            _TABLES.move_to_end(self.key)
            return entry[1]
        tables = self._build()
        _TABLES[self.key] = (self.diffusion, tables)  # the diffusion is kept so that its id stays unique
        while len(_TABLES) > TABLE_CACHE_SIZE:
            _TABLES.popitem(last=False)
        return tables

    def _build(self) -> StepTables:
        if self.lam > 0:
            tables = stochastic_tables(self.diffusion, self.ts, self.lam, self.output)
        else:
            tables = deterministic_tables(self.diffusion, self.ts, self.order, self.factor, self.output,
                                          self.lower_order_final, self.variable, form=self.form,
                                          corrector=self.corrector)
        if self.denoise:
            tables = concatenate(tables, denoise_tables(self.diffusion, float(self.ts[-1]), self.factor, self.output))
        return tables

    def dirac_gain(self) -> float:
        """Largest growth of a state perturbation through the deterministic recursion on Dirac data.

        Computed on request (:func:`~gddim_numerics.plans.dirac_gain`); warns above
        :data:`~gddim_numerics.plans.GAIN_WARNING`.
        """
        if self.lam > 0:
            raise ValueError("dirac_gain is defined for deterministic plans (lam = 0)")
        return dirac_gain(self.diffusion, self.tables, self.factor, self.form)

    @property
    def nfe(self) -> int:
        """Network evaluations of one sample call."""
        return len(self.ts) - 1 + int(self.denoise)

    def sample(self, eps_fn, x, **kwargs) -> SampleResult:
        """Run the plan from ``x`` (at ``ts[0]``); keywords as :func:`gddim_numerics.backends.run_tables`."""
        from ..backends.loop import run_tables  # the array side, loaded when a sample runs

        return run_tables(self.diffusion, self.tables, eps_fn, x, **kwargs)

    def __repr__(self) -> str:
        return (f"GDDIM({self.diffusion!r}, N={len(self.ts) - 1}, order={self.order}, lam={self.lam}, "
                f"factor={self.factor!r}, output={self.output!r}, denoise={self.denoise}, form={self.form!r}, "
                f"variable={self.variable!r}, corrector={self.corrector})")


def clear_table_cache() -> None:
    """Drop every cached table set."""
    _TABLES.clear()


OPTIONS = ("order", "lam", "output", "denoise", "lower_order_final", "variable", "form", "corrector")
METHOD = Method(build=GDDIM, options=OPTIONS + ("factor",), steps_for_nfe=one_per_step,
                description=f"gDDIM: exponential Adams-Bashforth in eps (order q, default {DEFAULT_ORDER}), "
                            "stochastic with lam > 0 (order 1)")
METHOD_L = Method(build=lambda d, ts, **o: GDDIM(d, ts, **o, factor="L"), options=OPTIONS,
                  steps_for_nfe=one_per_step,
                  description="the K = L (Cholesky) ablation of gDDIM (paper Table 1)")
