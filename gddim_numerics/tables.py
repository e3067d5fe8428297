r"""The immutable per-step tables every affine sampler is made of.

Step ``k`` goes from ``ts[k]`` to ``ts[k+1]``, evaluates the network once at ``(u_k, ts[k])``
(output ``y_k``), and updates

.. math::
    h_k = a_k u_k + b_k y_k, \qquad
    u_{k+1} = A_k u_k + \sum_{j<q_k} B_{kj} h_{k-j} + N_k z_k,

with per-mode ``(M, k, k)`` blocks (``a_k = 0`` and ``b_k = I`` when omitted, ``N_k = 0`` for
deterministic samplers). The predicted data is :math:`\hat u_0 = c_k u_k + d_k y_k`.

Optional correction (the evaluation-free PEC corrector, :mod:`gddim_numerics.corrector`): a step
``k`` with ``p_k = correction_orders[k] > 0`` first corrects the state it was evaluated at,

.. math::
    \delta_k = \sum_{i<p_k} \Gamma_{ki} h_{k-i},\qquad u_k \leftarrow u_k + \delta_k,\qquad
    h_k \leftarrow h_k + \rho_k \delta_k ,

and then steps from the corrected state as above (``Γ``: ``correction``; ``ρ``: ``reanchor``, zero
when omitted). The history entries ``h_{k-i}``, ``i >= 1``, are the stored (re-anchored) ones, and
the evaluation made at the uncorrected state is kept: the sampler still evaluates once per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


_TABLES = ("state", "history", "noise", "input_state", "input_output", "data_state", "data_output", "correction",
           "reanchor")


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
    correction : (N, p, M, k, k) array or None
        ``Γ_ki``, the weights of the correction ``δ_k`` on ``h_{k-i}`` (newest first).
    correction_orders : (N,) int array or None
        Number ``p_k <= min(p, k + 1)`` of history entries ``δ_k`` uses (0: step ``k`` corrects
        nothing). Required with ``correction``.
    reanchor : (N, M, k, k) array or None
        ``ρ_k``, the sensitivity of the history quantity to the state used to move ``h_k`` to the
        corrected state (None: zero; needs ``correction``).
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
    correction: np.ndarray | None = None
    correction_orders: np.ndarray | None = None
    reanchor: np.ndarray | None = None
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        for name in ("ts",) + _TABLES:
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        orders = np.array(self.orders, dtype=int)
        orders.setflags(write=False)
        object.__setattr__(self, "orders", orders)
        n = len(self.ts) - 1
        if self.state.shape[0] != n or self.history.shape[0] != n or orders.shape != (n,):
            raise ValueError("StepTables: state, history and orders need one entry per step")
        if np.any(orders < 1) or np.any(orders > self.history.shape[1]) or np.any(orders > np.arange(1, n + 1)):
            raise ValueError("StepTables: step k can use at most min(q, k + 1) history entries")
        block = self.state.shape[1:]
        if self.reanchor is not None and self.reanchor.shape != self.state.shape:
            raise ValueError(f"StepTables.reanchor must have the shape {self.state.shape} of state; "
                             f"got {self.reanchor.shape}")
        if (self.correction is None) != (self.correction_orders is None):
            raise ValueError("StepTables: correction and correction_orders go together")
        if self.reanchor is not None and self.correction is None:
            raise ValueError("StepTables: reanchor needs correction (it moves h_k by reanchor @ delta_k)")
        if self.correction is not None:
            counts = np.array(self.correction_orders, dtype=int)
            counts.setflags(write=False)
            object.__setattr__(self, "correction_orders", counts)
            if self.correction.shape[0] != n or self.correction.shape[2:] != block or counts.shape != (n,):
                raise ValueError(f"StepTables.correction must have shape (N, p) + {block} and correction_orders "
                                 f"shape (N,) with N = {n}; got {self.correction.shape} and {counts.shape}")
            if np.any(counts < 0) or np.any(counts > self.correction.shape[1]) or np.any(counts > np.arange(1, n + 1)):
                raise ValueError("StepTables: the correction of step k can use at most min(p, k + 1) history entries")
        for name in _TABLES[1:]:
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
    def memory(self) -> int:
        """Number of history entries a step may need: ``max(q, p)`` (``p``: widest correction)."""
        if self.correction is None:
            return self.max_order
        return max(self.max_order, int(self.correction_orders.max(initial=0)))

    @property
    def corrects(self) -> bool:
        """Whether any step corrects its state (``correction_orders > 0`` somewhere)."""
        return self.correction is not None and bool(np.any(self.correction_orders > 0))

    @property
    def stochastic(self) -> bool:
        """Whether any step draws noise."""
        return self.noise is not None


def concatenate(first: StepTables, last: StepTables) -> StepTables:
    """Join two table sets whose grids meet (``first.ts[-1] == last.ts[0]``); histories are padded.

    History indices run on across the join (step ``k`` of ``last`` is step ``first.n_steps + k``);
    a side without corrections gets zero correction rows.
    """
    if first.ts[-1] != last.ts[0]:
        raise ValueError("grids do not meet")
    q = max(first.max_order, last.max_order)

    def pad(h, width):
        out = np.zeros((h.shape[0], width) + h.shape[2:])
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
    correction = counts = None
    if first.correction is not None or last.correction is not None:
        p = max(t.correction.shape[1] for t in (first, last) if t.correction is not None)
        correction = np.concatenate([pad(t.correction, p) if t.correction is not None
                                     else np.zeros((t.n_steps, p) + t.state.shape[1:]) for t in (first, last)])
        counts = np.concatenate([t.correction_orders if t.correction is not None
                                 else np.zeros(t.n_steps, dtype=int) for t in (first, last)])
    return StepTables(
        ts=np.concatenate([first.ts, last.ts[1:]]),
        state=np.concatenate([first.state, last.state]),
        history=np.concatenate([pad(first.history, q), pad(last.history, q)]),
        orders=np.concatenate([first.orders, last.orders]),
        noise=join(first.noise, last.noise, zeros),
        input_state=join(first.input_state, last.input_state, zeros),
        input_output=join(first.input_output, last.input_output, eye),
        data_state=join(first.data_state, last.data_state, zeros),
        data_output=join(first.data_output, last.data_output, eye),
        correction=correction,
        correction_orders=counts,
        reanchor=join(first.reanchor, last.reanchor, zeros),
        info={**first.info, **last.info},
    )


def step_map(tables: StepTables, k, width: int, h_gain, block=None):
    r"""Step ``k`` as a linear map on the stacked vector :math:`[u_k; h_{k-1}; \dots; h_{k-width+1}]`.

    With the newest history value :math:`h_k = G u_k + o` (``h_gain`` = ``G``), step ``k`` (its
    correction, if any, then the update; noise aside) maps the stack to
    :math:`[u_{k+1}; h_k; \dots; h_{k-width+2}]` = ``S @ stack + (c_u; c_h; 0) @ o``.

    Parameters
    ----------
    k : int or 1-D int array
        The step, or several steps at once (then every result gains a leading axis of ``len(k)`` and
        ``h_gain`` holds one ``G`` per step).
    width : int
        Stack length, at least :attr:`StepTables.memory`.
    h_gain : array
        ``G`` in the coordinates ``block`` gives.
    block : callable, optional
        ``block(table_entry) -> matrix``: a ``(M, k, k)`` table entry in the caller's coordinates
        (default: the per-mode blocks themselves; e.g. a dense ``(D, D)`` operator).

    Returns
    -------
    S, (c_u, c_h)
        ``S`` of shape ``(..., width n, width n)`` (``n`` the size of one slot) and the coefficients
        of the offset ``o`` in :math:`u_{k+1}` and in the stored :math:`h_k`.
    """
    block = (lambda a: a) if block is None else block
    k = np.asarray(k)
    probe = block(tables.state[k])
    n = probe.shape[-1]
    eye = np.broadcast_to(np.eye(n), probe.shape)

    def sel(i):
        out = np.zeros(probe.shape[:-1] + (width * n,))
        out[..., i * n:(i + 1) * n] = eye
        return out

    def used(table, i, counts):
        """Entry ``i`` of a per-step list of blocks, zero for the steps that use fewer than ``i + 1`` entries
        (one step: the loops below only ask for the entries it uses)."""
        entry = block(table[k, i])
        return entry if k.ndim == 0 else entry * (i < counts).reshape(k.shape + (1,) * (entry.ndim - k.ndim))

    u = sel(0)
    h = h_gain @ u
    c_h = eye
    u_c, c_uc = u, np.zeros(probe.shape)
    counts = np.zeros(k.shape, dtype=int) if tables.correction is None else tables.correction_orders[k]
    if np.any(counts):
        gam0 = used(tables.correction, 0, counts)
        delta = gam0 @ h
        for i in range(1, int(np.max(counts))):
            delta = delta + used(tables.correction, i, counts) @ sel(i)
        u_c, c_uc = u + delta, gam0
        if tables.reanchor is not None:
            rho = block(tables.reanchor[k])
            h = h + rho @ delta
            c_h = c_h + rho @ gam0
    orders = tables.orders[k]
    a, b0 = probe, block(tables.history[k, 0])
    u_next = a @ u_c + b0 @ h
    for j in range(1, int(np.max(orders))):
        u_next = u_next + used(tables.history, j, orders) @ sel(j)
    rows = [u_next] + ([h] + [sel(i) for i in range(1, width - 1)] if width > 1 else [])
    return np.concatenate(rows, axis=-2), (a @ c_uc + b0 @ c_h, c_h)


def reference_step(tables: StepTables, k: int, u: np.ndarray, y: np.ndarray, past=(), z=None):
    r"""Step ``k`` of ``tables`` in plain NumPy: the oracle the array loop is tested against.

    ``u`` (state at ``ts[k]``), ``y`` (network output there), ``z`` (noise) and the entries of ``past``
    (:math:`h_{k-1}, h_{k-2}, \dots`, newest first, as returned before) are mode coordinates of shape
    ``(..., M, k)``. Returns :math:`(u_{k+1}, h_k)`, ``h_k`` as later steps use it (re-anchored).
    """
    def act(table, v):
        return np.einsum("mij,...mj->...mi", table, v)

    h = y if tables.input_output is None else act(tables.input_output[k], y)
    h = h if tables.input_state is None else h + act(tables.input_state[k], u)
    hist = [h, *past]
    count = 0 if tables.correction is None else int(tables.correction_orders[k])
    if count:
        delta = sum(act(tables.correction[k, i], hist[i]) for i in range(count))
        u = u + delta
        hist[0] = h = h if tables.reanchor is None else h + act(tables.reanchor[k], delta)
    u_next = act(tables.state[k], u) + sum(act(tables.history[k, j], hist[j]) for j in range(int(tables.orders[k])))
    return (u_next if tables.noise is None else u_next + act(tables.noise[k], z)), h
