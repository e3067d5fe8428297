"""The result object of every sampler (field names follow ``scipy.integrate.solve_ivp``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SampleResult:
    """Outcome of a sample call.

    Attributes
    ----------
    x : array
        Final state, in the caller's array type, device, dtype and layout.
    ts : ndarray
        The times the sampler visited (``ts[0]`` start, ``ts[-1]`` end).
    nfe : int
        Exact number of network evaluations.
    trajectory : list of arrays or None
        States at every time of ``ts`` when requested.
    success : bool
        False when the sampler stopped early (e.g. a non-finite network output with
        ``on_nonfinite="return"``).
    message : str
        Human-readable termination reason.
    status : int
        0 on success, -1 on failure.
    info : dict
        Solver details (e.g. the tolerances and step count of the adaptive methods).
    """

    x: Any
    ts: np.ndarray
    nfe: int
    trajectory: list | None = None
    success: bool = True
    message: str = "The sampler reached the end of the grid."
    status: int = 0
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StepInfo:
    """What a per-step callback sees: step index, times, state, predicted data, network output.

    ``x`` is the state at ``t`` (before the step), ``x0_pred`` the predicted data
    :math:`\\hat u_0 = \\mathbb E[u_0 \\mid u_t]`, ``eps`` the raw network output, ``nfe`` the
    evaluations so far.
    """

    step: int
    t: float
    t_next: float
    x: Any
    x0_pred: Any
    eps: Any
    nfe: int
