r"""A corrector that costs no network evaluation (PEC; docs/math §3.9), built into the step tables.

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

The evaluation made at the *predicted* state is kept (``h_{k+1}`` is not recomputed), so the
sampler still evaluates the network once per step. The last step is not corrected (there is no
evaluation after it); the loop's intermediate states (``return_trajectory``, callbacks) are the
predicted ones, where the network was evaluated.

**Data form: folded.** The next step is :math:`\bar u_{k+2} = A_{k+1}u_{k+1} + \sum_j B_{k+1,j}h_{k+1-j}
= A_{k+1}\bar u_{k+1} + \sum_i (B_{k+1,i} + A_{k+1}\Delta_{ki})\,h_{k+1-i}`: a plain
:class:`~gddim_numerics.tables.StepTables` step from the predicted state with history weights
:math:`B'_{k+1,i} = B_{k+1,i} + A_{k+1}\Delta_{ki}` and ``max(q_{k+1}, p_k) <= k + 2`` entries
(:func:`fold_corrector`). On Dirac data :math:`h = D \equiv \mu` does not depend on the state, so
the stored :math:`h_{k+1}` is also the value at the corrected state; perturbation gain 1–15.

**ε form: re-anchored** (:func:`correction_tables`). Folding is unstable here: the predictor's
:math:`\Psi u` and :math:`C\epsilon` cancel only when ε was evaluated at the state being
propagated, and after a correction it was not (Dirac perturbation gain ~5e8 on CLD at NFE 10,
errors up to 1e3 on Gaussian data). On Dirac data :math:`\epsilon_K(u) = K_t^{-1}(u - \Psi(t,0)\mu)`
exactly, so the stored value is moved to the corrected state with that slope
:math:`\rho_{k+1} = K_{t_{k+1}}^{-1}`, and the corrector is solved for it (the newest ε taken at the
corrected state, linearised):

.. math::  u_{k+1} = \bar u_{k+1} + \delta,\qquad
           \delta = \Delta_{k0}\big(h_{k+1} + \rho_{k+1}\delta\big) + \sum_{i\ge1}\Delta_{ki}h_{k+1-i}
           \;\Rightarrow\; \delta = (I - \Delta_{k0}\rho_{k+1})^{-1}\sum_i \Delta_{ki}h_{k+1-i},
           \qquad h_{k+1} \leftarrow h_{k+1} + \rho_{k+1}\delta .

The tables carry :math:`\Gamma_{k+1,i} = (I - \Delta_{k0}\rho_{k+1})^{-1}\Delta_{ki}` as
``correction`` and :math:`\rho` as ``reanchor``; the loop runs them per step. On Dirac data the
corrected state and every stored ε are then those of the exact flow up to rounding, and the
perturbation gain is 1–200 (worst of 1500 settings — q <= 5, every variable, power / log /
log-SNR grids, NFE 2–20, VP/CLD/BDM/dense — 1.6e4, with error 9e-12). Re-anchoring without the
solve (:math:`\Gamma = \Delta`) is stable from NFE ~10 on but keeps gains up to 1e6 at NFE 2–3 on
BDM: an error in :math:`\bar u_{k+1}` reaches :math:`u_{k+1}` multiplied by
:math:`I + \Delta_{k0}K^{-1}`, large when :math:`\Psi` is; the solve turns that factor into
:math:`(I - \Delta_{k0}K^{-1})^{-1}`. Measured: :math:`\Delta_{k0}K^{-1} < 0` on VP, BDM and the dense
test diffusion (the factor is <= 1); on CLD the smallest singular value of
:math:`I - \Delta_{k0}K^{-1}` was 0.099 over NFE 2–50, q <= 5, t / log t / log-SNR variables, power
and log grids (a singular system raises). For non-Dirac data the linearisation changes a step by
:math:`O(\|\delta\|)` times the difference between the true slope of ε and :math:`K^{-1}`, so the
corrector keeps its order.

The corrector's weights are exact integrals (the predictor's kernel, Lagrange basis on the
shifted nodes, same extrapolation variable), so their sums obey the same closed-form rules,
:math:`\sum_i\Delta_{ki} = 0`, and every Dirac-exact predictor stays Dirac-exact.
"""

from __future__ import annotations

import numpy as np

from .tables import step_map


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
    orders = np.asarray(orders, dtype=int)
    fields = correction_tables(history, orders, corrector, corrector_counts)
    delta, rows = fields["correction"], fields["correction_orders"]
    width = max(history.shape[1], delta.shape[1])
    out = np.zeros((state.shape[0], width) + history.shape[2:])
    out[:, : history.shape[1]] = history
    out[1:, : delta.shape[1]] += state[1:, None] @ delta[1:]
    return out, np.maximum(orders, rows)


def correction_tables(history: np.ndarray, orders: np.ndarray, corrector: np.ndarray, corrector_counts: np.ndarray,
                      reanchor: np.ndarray | None = None) -> dict:
    r"""The ``correction`` / ``correction_orders`` / ``reanchor`` fields of PEC tables (module docstring).

    Row ``k >= 1`` holds, on :math:`h_{k-i}`, ``i < max(p_{k-1}, q_{k-1} + 1)``, the differences
    :math:`\Delta_{k-1,i} = C_{k-1,i} - B_{k-1,i-1}` (``B_{k-1,-1} := 0``) — with ``reanchor``, solved for
    the re-anchored newest value: :math:`\Gamma_{ki} = (I - \Delta_{k-1,0}\rho_k)^{-1}\Delta_{k-1,i}`;
    row 0 corrects nothing.

    Parameters
    ----------
    history : (N, q, M, k, k)
        Predictor weights ``B_kj`` on ``h_{k-j}``.
    orders : (N,)
        ``q_k``.
    corrector : (N, p, M, k, k)
        Corrector weights ``C_ki`` on ``h_{k+1-i}`` (row ``N - 1`` is ignored).
    corrector_counts : (N,)
        ``p_k``.
    reanchor : (N, M, k, k) or None
        :math:`\rho_k = \partial h/\partial u` at ``t_k`` on Dirac data (ε form: :math:`K_{t_k}^{-1}`),
        or None (zero: data form).

    Returns
    -------
    dict
        Keyword arguments of :class:`~gddim_numerics.tables.StepTables`.
    """
    n = history.shape[0]
    orders = np.asarray(orders, dtype=int)
    counts = np.asarray(corrector_counts, dtype=int)
    if n < 2:
        raise ValueError("the corrector needs at least 2 steps (the last step is never corrected)")
    width = int(max(counts[:-1].max(), orders[:-1].max() + 1))
    gamma = np.zeros((n, width) + history.shape[2:])
    rows = np.zeros(n, dtype=int)
    for k in range(1, n):
        p = max(int(counts[k - 1]), int(orders[k - 1]) + 1)
        gamma[k, : counts[k - 1]] = corrector[k - 1, : counts[k - 1]]
        gamma[k, 1: orders[k - 1] + 1] -= history[k - 1, : orders[k - 1]]
        rows[k] = p
    if reanchor is not None:
        # solve the corrector for the re-anchored newest value: delta = Gamma_0 (h_k + rho delta) + ...
        system = np.eye(gamma.shape[-1]) - gamma[:, 0] @ reanchor
        smallest = np.linalg.svd(system, compute_uv=False).min(axis=(1, 2))
        if np.any(smallest < 1e-8):
            k = int(np.argmin(smallest))
            raise ValueError(f"corrector=True: the re-anchored correction of step {k} is singular "
                             f"(I - Delta_0 K^-1 has a singular value {smallest[k]:.1e}); use form='data'")
        gamma = np.linalg.solve(system[:, None], gamma)
    return dict(correction=gamma, correction_orders=rows, reanchor=reanchor)


def corrector_fields(state: np.ndarray, history: np.ndarray, orders: np.ndarray, corrector: np.ndarray,
                     corrector_counts: np.ndarray, reanchor: np.ndarray | None):
    """``(history, orders, fields)`` of a PEC plan: the predictor tables and the extra
    :class:`~gddim_numerics.tables.StepTables` keywords (see the module docstring).

    ``reanchor=None`` (data form): the correction is folded into the next predictor row (same result as
    running it through correction fields without re-anchoring, to rounding, and no extra work per step);
    otherwise (ε form, ``reanchor`` = :math:`K_{t_k}^{-1}`): :func:`correction_tables`.
    """
    if reanchor is None:
        history, orders = fold_corrector(state, history, orders, corrector, corrector_counts)
        return history, orders, {}
    return history, orders, correction_tables(history, orders, corrector, corrector_counts, reanchor)


def perturbation_gain(tables, jacobian: np.ndarray) -> float:
    r"""Largest growth, to the final state, of a state perturbation made at any step.

    Runs the linear recursion of perturbations ``e`` of the evaluated state and ``g`` of the (stored)
    history, :math:`g_k = J_k e_k`, then the step's correction (if any:
    :math:`d_k = \sum_i \Gamma_{ki} g_{k-i}`, :math:`e_k \leftarrow e_k + d_k`,
    :math:`g_k \leftarrow g_k + \rho_k d_k`) and :math:`e_{k+1} = A_k e_k + \sum_j B_{kj} g_{k-j}`,
    with ``jacobian`` the per-step :math:`J_k = \partial h_k/\partial u` of Dirac data (ε form:
    :math:`K_t^{-1}`; data form: 0), and returns :math:`\max_i \|T_{N \leftarrow i}\|_2` over modes.
    Rounding errors (~1e-16 relative) injected at a step reach the output multiplied by at most about
    this number, so exactness on Dirac data holds to ~1e-16 x gain. A stable scheme has a gain of
    order 1-100.
    """
    n, width = tables.n_steps, tables.memory
    m, k = tables.state.shape[1], tables.state.shape[-1]
    dim = width * k
    x = np.broadcast_to(np.eye(dim), (m, dim, dim)).copy()  # T_{N <- i}, rows: stacked state at the end
    gain = 1.0
    steps, _ = step_map(tables, np.arange(n), width, jacobian[:n])  # every step's map at once
    for i in range(n - 1, -1, -1):
        x = x @ steps[i]
        block = x[:, :k, :k]
        norms = np.abs(block[:, 0, 0]) if k == 1 else np.linalg.norm(block, ord=2, axis=(1, 2))  # k = 1: no SVD
        gain = max(gain, float(np.max(norms)))
    return gain
