r"""A corrector that costs no network evaluation (PEC; MATH.md §3.9), folded into the step tables.

Predictor step ``k`` (either form; ``A_k`` the state coefficient, ``B_{kj}`` the weights on
:math:`h_{k-j}`, nodes :math:`t_k, t_{k-1}, \dots`):

.. math::  \bar u_{k+1} = A_k u_k + \sum_{j<q_k} B_{kj}\,h_{k-j}.

The network is evaluated once at :math:`(\bar u_{k+1}, t_{k+1})` — needed by step ``k+1``
anyway — giving :math:`h_{k+1}`. The corrector redoes step ``k`` from the same :math:`u_k` with
weights :math:`C_{ki}` on :math:`h_{k+1-i}` whose Lagrange nodes are
:math:`t_{k+1}, t_k, \dots, t_{k+1-p_k}` (``p_k = q_k + 1`` nodes: the predictor's plus the new
one, as in UniPC):

.. math::  u_{k+1} = A_k u_k + \sum_{i<p_k} C_{ki}\,h_{k+1-i}
           = \bar u_{k+1} + \sum_{i<p_k}\Delta_{ki}\,h_{k+1-i},\qquad
           \Delta_{ki} = C_{ki} - B_{k,i-1}\ (B_{k,-1} := 0).

The evaluation made at the *predicted* state is kept (``h_{k+1}`` is not recomputed), so the next
step is :math:`\bar u_{k+2} = A_{k+1}u_{k+1} + \sum_j B_{k+1,j}h_{k+1-j}
= A_{k+1}\bar u_{k+1} + \sum_i (B_{k+1,i} + A_{k+1}\Delta_{ki})\,h_{k+1-i}`. That is a plain
:class:`~gddim_numerics.tables.StepTables` step from the predicted state, with history weights
:math:`B'_{k+1,i} = B_{k+1,i} + A_{k+1}\Delta_{ki}` and ``max(q_{k+1}, p_k) <= k + 2`` history
entries — so the array-side loop needs no change, and the sampler still evaluates the network
once per step. The last step is not corrected (there is no evaluation after it); the loop's
intermediate states (``return_trajectory``, callbacks) are the predicted ones.

The corrector's weights are exact integrals (the predictor's kernel, Lagrange basis on the
shifted nodes, same extrapolation variable), so their sums obey the same closed-form rules and
every Dirac-exact predictor stays Dirac-exact.
"""

from __future__ import annotations

import numpy as np


def corrector_orders(orders: np.ndarray) -> np.ndarray:
    """Node counts ``p_k = q_k + 1`` of the corrector of each step (``<= k + 2``)."""
    return np.asarray(orders, dtype=int) + 1


def fold_corrector(state: np.ndarray, history: np.ndarray, orders: np.ndarray,
                   corrector: np.ndarray, corrector_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold PEC corrections into predictor tables (see the module docstring).

    Parameters
    ----------
    state : (N, M, k, k)
        ``A_k``.
    history : (N, q, M, k, k)
        Predictor weights ``B_kj`` on ``h_{k-j}``.
    orders : (N,)
        ``q_k``.
    corrector : (N, p, M, k, k)
        Corrector weights ``C_ki`` on ``h_{k+1-i}`` (rows ``k = N - 1`` are ignored).
    corrector_counts : (N,)
        ``p_k``.

    Returns
    -------
    history, orders
        Tables of the equivalent one-evaluation-per-step sampler.
    """
    n = state.shape[0]
    orders = np.asarray(orders, dtype=int)
    counts = np.asarray(corrector_counts, dtype=int)
    if n < 2:
        raise ValueError("the corrector needs at least 2 steps (the last step is never corrected)")
    width = int(max(history.shape[1], counts[:-1].max(), orders[:-1].max() + 1))
    out = np.zeros((n, width) + history.shape[2:])
    out[:, : history.shape[1]] = history
    new_orders = orders.copy()
    for k in range(n - 1):
        p = max(int(counts[k]), int(orders[k]) + 1)
        delta = np.zeros((p,) + history.shape[2:])
        delta[: counts[k]] = corrector[k, : counts[k]]
        delta[1: orders[k] + 1] -= history[k, : orders[k]]
        out[k + 1, :p] += state[k + 1] @ delta
        new_orders[k + 1] = max(int(orders[k + 1]), p)
    return out, new_orders


def perturbation_gain(tables, jacobian: np.ndarray) -> float:
    r"""Largest growth, to the final state, of a state perturbation made at any step.

    Runs the linear recursion of perturbations ``e`` of the evaluated state and ``g`` of the history,
    :math:`g_k = J_k e_k`, :math:`e_{k+1} = A_k e_k + \sum_j B_{kj} g_{k-j}`, with ``jacobian`` the
    per-step :math:`J_k = \partial h_k/\partial u` of Dirac data (ε form: :math:`K_t^{-1}`; data form: 0)
    and returns :math:`\max_i \|T_{N \leftarrow i}\|_2` over modes. Rounding errors (~1e-16 relative)
    injected at a step reach the output multiplied by at most about this number, so exactness on Dirac
    data holds to ~1e-16 x gain. A stable scheme has a gain of order 1-100.
    """
    n, q = tables.n_steps, tables.max_order
    m, k = tables.state.shape[1], tables.state.shape[-1]
    dim = q * k
    x = np.broadcast_to(np.eye(dim), (m, dim, dim)).copy()  # T_{N <- i}, rows: stacked state at the end
    gain = 1.0
    for i in range(n - 1, -1, -1):
        step = np.zeros((m, dim, dim))
        hist = tables.history[i]
        # e_{i+1} = (A_i + B_i0 J_i) e_i + sum_{j>=1} B_ij g_{i-j}
        step[:, :k, :k] = tables.state[i] + hist[0] @ jacobian[i]
        for j in range(1, int(tables.orders[i])):
            step[:, :k, j * k:(j + 1) * k] = hist[j]
        if q > 1:
            step[:, k:2 * k, :k] = jacobian[i]  # new g_i
            for j in range(2, q):
                step[:, j * k:(j + 1) * k, (j - 1) * k:j * k] = np.eye(k)
        x = x @ step
        gain = max(gain, float(np.max(np.linalg.norm(x[:, :k, :k], ord=2, axis=(1, 2)))))
    return gain
