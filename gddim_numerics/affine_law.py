r"""Exact output law of an affine sampler on Gaussian data (MATH.md §8.4).

With Gaussian data the network output is affine in the state, :math:`y = W_t u + w_t`, and every
step of a :class:`~gddim_numerics.tables.StepTables` sampler is affine in (state, history, fresh
noise). So the stacked vector :math:`s_k = [u_k; h_{k-1}; \dots; h_{k-q+1}]` is Gaussian at every
step, and its mean and covariance propagate exactly:

.. math::
    h_k = (a_k + b_k W_k)u_k + b_k w_k,\qquad
    u_{k+1} = \big(A_k + B_{k0}(a_k + b_kW_k)\big)u_k + \sum_{j\ge1}B_{kj}h_{k-j} + B_{k0}b_kw_k + N_kz_k .

For a start law :math:`u_T \sim N(m_T, C_T)` the output is exactly :math:`N(\mu, \Gamma)` — no
sampling noise; compare it with the true marginal to measure a sampler's bias in distribution.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .diffusion import LinearDiffusion
from .layout import dense_operator
from .tables import StepTables


def output_law(diffusion: LinearDiffusion, tables: StepTables, event_shape: tuple,
               affine_output: Callable[[float], tuple[np.ndarray, np.ndarray]],
               mean_start: np.ndarray, cov_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` of the sampler's output for ``u_T ~ N(mean_start, cov_start)``.

    Parameters
    ----------
    affine_output : callable
        ``affine_output(t) -> (W, w)`` with the network output ``y = W u + w`` (flattened event).
    """
    event_shape = tuple(event_shape)
    d = int(np.prod(event_shape))
    q = tables.max_order

    def dense(table, k):
        return None if table is None else dense_operator(diffusion, table[k], event_shape)

    # stacked state [u, h_{k-1}, ..., h_{k-q+1}]: mean (q d,), cov (q d, q d)
    mean = np.zeros(q * d)
    cov = np.zeros((q * d, q * d))
    mean[:d] = np.ravel(mean_start)
    cov[:d, :d] = cov_start
    eye = np.eye(d)
    for k in range(tables.n_steps):
        w_mat, w_vec = affine_output(float(tables.ts[k]))
        a = dense(tables.input_state, k)
        b = dense(tables.input_output, k)
        b = eye if b is None else b
        h_gain = b @ w_mat + (0 if a is None else a)   # h_k = h_gain u + h_off
        h_off = b @ w_vec
        # map old stack -> new stack
        step = np.zeros((q * d, q * d))
        offset = np.zeros(q * d)
        step[:d, :d] = dense(tables.state, k) + dense(tables.history[:, 0], k) @ h_gain
        offset[:d] = dense(tables.history[:, 0], k) @ h_off
        for j in range(1, int(tables.orders[k])):
            step[:d, j * d:(j + 1) * d] = dense(tables.history[:, j], k)
        if q > 1:
            step[d:2 * d, :d] = h_gain           # new h_{k} slot
            offset[d:2 * d] = h_off
            for j in range(2, q):                # shift older history
                step[j * d:(j + 1) * d, (j - 1) * d:j * d] = eye
        mean = step @ mean + offset
        cov = step @ cov @ step.T
        if tables.noise is not None:
            n = dense(tables.noise, k)
            cov[:d, :d] += n @ n.T
    cov_u = cov[:d, :d]
    return mean[:d], 0.5 * (cov_u + cov_u.T)
