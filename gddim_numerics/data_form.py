r"""Data-prediction multistep gDDIM for any linear diffusion (docs/math §3.8).

With :math:`\hat F^{(0)}_t = F_t + \tfrac12 G_tG_t^\top\Sigma_t^{-1}` (transition matrix
:math:`R_tR_s^{-1}`) and the data prediction :math:`D(u,t) = \Psi(0,t)(u - R_t\epsilon_R(u,t))`,
the probability-flow ODE reads
:math:`\dot u = \hat F^{(0)}_t u - \tfrac12 G_tG_t^\top\Sigma_t^{-1}\Psi(t,0)D(u,t)`, and
extrapolating :math:`D` by a Lagrange polynomial in a variable :math:`\varphi` through the stored
values gives the step from ``s = ts[k]`` to ``t = ts[k+1]``

.. math::
    u_{k+1} = R_tR_s^{-1}u_k + \sum_{j<q_k} E_{kj} D_{k-j},\qquad
    E_{kj} = -\int_s^t R_tR_\tau^{-1}\,\tfrac12 G_\tau G_\tau^\top\Sigma_\tau^{-1}\Psi(\tau,0)\,
             \ell_{kj}(\varphi(\tau))\,d\tau .

Sum rule (closed form, used for one-node steps):
:math:`\sum_j E_{kj} = \Psi(t,0) - R_tR_s^{-1}\Psi(s,0)`, since
:math:`\tfrac{d}{d\tau}[R_tR_\tau^{-1}\Psi(\tau,0)] = -R_tR_\tau^{-1}\tfrac12GG^\top\Sigma^{-1}\Psi(\tau,0)`.
A one-node step is the ε-form gDDIM step of docs/math §3.2 written in other variables; on Dirac
data :math:`D \equiv \mu`, so every order, variable and corrector is exact.

In :class:`~gddim_numerics.tables.StepTables` terms the history is :math:`h = D = c\,u + d\,y`
with :math:`(c, d)` from :func:`gddim_numerics.outputs.to_data`, so every network output type
(``eps_R``, ``eps_L``, ``score``, ``data``) works unchanged.
"""

from __future__ import annotations

import numpy as np

from .diffusion import LinearDiffusion, batched_inverse


def data_kernel(diffusion: LinearDiffusion):
    r"""Integrand :math:`-R_tR_\tau^{-1}\tfrac12G_\tau G_\tau^\top\Sigma_\tau^{-1}\Psi(\tau,0)` of the data-form weights."""

    def kernel(t, tau):
        t = np.asarray(t, dtype=np.float64)
        uniq, back = np.unique(t, return_inverse=True)  # one end time per step: factor it once
        r_t = diffusion.gddim_factor(uniq)[back.reshape(t.shape)]
        r_tau_inv = batched_inverse(diffusion.gddim_factor(tau))
        return -0.5 * (r_t @ r_tau_inv) @ diffusion.diffusion(tau) @ diffusion.covariance_inv(tau) \
            @ diffusion.mean_coefficient(tau)

    return kernel


def data_state(diffusion: LinearDiffusion, s, t) -> np.ndarray:
    r"""State coefficient :math:`R_tR_s^{-1}` of data-form steps ``s -> t`` (arrays of times)."""
    return diffusion.gddim_factor(t) @ batched_inverse(diffusion.gddim_factor(s))


def data_weight_sum(diffusion: LinearDiffusion, s, t) -> np.ndarray:
    r"""Closed-form :math:`\sum_j E_j = \Psi(t,0) - R_tR_s^{-1}\Psi(s,0)` (docs/math §3.8)."""
    return diffusion.mean_coefficient(t) - data_state(diffusion, s, t) @ diffusion.mean_coefficient(s)
