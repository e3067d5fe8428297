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
