r"""The immutable per-step tables every affine sampler is made of.

Step ``k`` goes from ``ts[k]`` to ``ts[k+1]``, evaluates the network once at ``(u_k, ts[k])``
(output ``y_k``), and updates

.. math::
    h_k = a_k u_k + b_k y_k, \qquad
    u_{k+1} = A_k u_k + \sum_{j<q_k} B_{kj} h_{k-j} + N_k z_k,

with per-mode ``(M, k, k)`` blocks (``a_k = 0`` and ``b_k = I`` when omitted, ``N_k = 0`` for
deterministic samplers). The predicted data is :math:`\hat u_0 = c_k u_k + d_k y_k`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _frozen(a):
    if a is None:
        return None
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class StepTables:
    """Float64 host tables of an affine sampler (see module docstring).

    Attributes
    ----------
    ts : (N + 1,) array
        Step boundaries (decreasing); the network is evaluated at ``ts[:-1]``.
    state : (N, M, k, k) array
        ``A_k``.
    history : (N, q, M, k, k) array
        ``B_kj``, newest history entry first.
    orders : (N,) int array
        Number ``q_k`` of history entries step ``k`` uses.
    noise : (N, M, k, k) array or None
        ``N_k`` (a factor of the step's noise covariance).
    input_state, input_output : (N, M, k, k) arrays or None
        ``a_k`` (None: zero) and ``b_k`` (None: identity).
    data_state, data_output : (N, M, k, k) arrays
        ``c_k`` (None: zero) and ``d_k`` of the predicted data.
    """

    ts: np.ndarray
    state: np.ndarray
    history: np.ndarray
    orders: np.ndarray
    noise: np.ndarray | None = None
    input_state: np.ndarray | None = None
    input_output: np.ndarray | None = None
    data_state: np.ndarray | None = None
    data_output: np.ndarray | None = None
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        for name in ("ts", "state", "history", "noise", "input_state", "input_output", "data_state", "data_output"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        orders = np.array(self.orders, dtype=int)
        orders.setflags(write=False)
        object.__setattr__(self, "orders", orders)
        n = len(self.ts) - 1
        if self.state.shape[0] != n or self.history.shape[0] != n or orders.shape != (n,):
            raise ValueError("StepTables: state, history and orders need one entry per step")
        if np.any(orders < 1) or np.any(orders > self.history.shape[1]) or np.any(orders > np.arange(1, n + 1)):
            raise ValueError("StepTables: step k can use at most min(q, k + 1) history entries")
        for name in ("state", "history", "noise", "input_state", "input_output", "data_state", "data_output"):
            arr = getattr(self, name)
            if arr is not None and not np.all(np.isfinite(arr)):
                raise ValueError(f"StepTables.{name} has non-finite entries")

    @property
    def n_steps(self) -> int:
        """Number of steps ``N`` (= network evaluations)."""
        return len(self.ts) - 1

    @property
    def max_order(self) -> int:
        """History length ``q``."""
        return self.history.shape[1]

    @property
    def stochastic(self) -> bool:
        """Whether any step draws noise."""
        return self.noise is not None


def concatenate(first: StepTables, last: StepTables) -> StepTables:
    """Join two table sets whose grids meet (``first.ts[-1] == last.ts[0]``); histories are padded."""
    if first.ts[-1] != last.ts[0]:
        raise ValueError("grids do not meet")
    q = max(first.max_order, last.max_order)

    def pad_hist(h):
        out = np.zeros((h.shape[0], q) + h.shape[2:])
        out[:, : h.shape[1]] = h
        return out

    def join(a, b, default):
        if a is None and b is None:
            return None
        a = default(first) if a is None else a
        b = default(last) if b is None else b
        return np.concatenate([a, b])

    zeros = lambda t: np.zeros_like(t.state)  # noqa: E731
    eye = lambda t: np.broadcast_to(np.eye(t.state.shape[-1]), t.state.shape)  # noqa: E731
    return StepTables(
        ts=np.concatenate([first.ts, last.ts[1:]]),
        state=np.concatenate([first.state, last.state]),
        history=np.concatenate([pad_hist(first.history), pad_hist(last.history)]),
        orders=np.concatenate([first.orders, last.orders]),
        noise=join(first.noise, last.noise, zeros),
        input_state=join(first.input_state, last.input_state, zeros),
        input_output=join(first.input_output, last.input_output, eye),
        data_state=join(first.data_state, last.data_state, zeros),
        data_output=join(first.data_output, last.data_output, eye),
        info={**first.info, **last.info},
    )
