r"""Exact output law of an affine sampler on Gaussian data (docs/math §8.4).

With Gaussian data the network output is affine in the state, :math:`y = W_t u + w_t`, and every
step of a :class:`~gddim_numerics.tables.StepTables` sampler is affine in (state, history, fresh
noise). So the stacked vector :math:`s_k = [u_k; h_{k-1}; \dots; h_{k-q+1}]` is Gaussian at every
step, and its mean and covariance propagate exactly:

.. math::
    h_k = (a_k + b_k W_k)u_k + b_k w_k,\qquad
    u_{k+1} = \big(A_k + B_{k0}(a_k + b_kW_k)\big)u_k + \sum_{j\ge1}B_{kj}h_{k-j} + B_{k0}b_kw_k + N_kz_k .

A step that corrects its state (``StepTables.correction``) first adds
:math:`\delta_k = \Gamma_{k0}h_k + \sum_{i\ge1}\Gamma_{ki}h_{k-i}` to :math:`u_k` and :math:`\rho_k\delta_k` to
:math:`h_k` — still affine (:func:`~gddim_numerics.tables.step_map`); the stack then holds
``max(q, p)`` history slots.

For a start law :math:`u_T \sim N(m_T, C_T)` the output is exactly :math:`N(\mu, \Gamma)` — no
sampling noise; compare it with the true marginal to measure a sampler's bias in distribution.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .diffusion import LinearDiffusion
from .layout import dense_operator, event_size
from .tables import StepTables, step_map


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
    d = event_size(event_shape)
    q = tables.memory

    def block(table):
        return dense_operator(diffusion, table, event_shape)

    # stacked state [u, h_{k-1}, ..., h_{k-q+1}] (q: history entries a step or a correction uses)
    mean = np.zeros(q * d)
    cov = np.zeros((q * d, q * d))
    mean[:d] = np.ravel(mean_start)
    cov[:d, :d] = cov_start
    eye = np.eye(d)
    for k in range(tables.n_steps):
        w_mat, w_vec = affine_output(float(tables.ts[k]))
        a = None if tables.input_state is None else block(tables.input_state[k])
        b = eye if tables.input_output is None else block(tables.input_output[k])
        h_gain = b @ w_mat + (0 if a is None else a)   # h_k = h_gain u + h_off
        h_off = b @ w_vec
        step, (c_u, c_h) = step_map(tables, k, q, h_gain, block)
        offset = np.zeros(q * d)
        offset[:d] = c_u @ h_off
        if q > 1:
            offset[d:2 * d] = c_h @ h_off
        mean = step @ mean + offset
        cov = step @ cov @ step.T
        if tables.noise is not None:
            n = block(tables.noise[k])
            cov[:d, :d] += n @ n.T
    cov_u = cov[:d, :d]
    return mean[:d], 0.5 * (cov_u + cov_u.T)
