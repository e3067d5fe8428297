"""Small exact-score helpers for sampler tests, written directly from docs/math §8 (dense D x D).

They use only the diffusion's Psi, Sigma and R (validated separately against ODE solves) and
``layout.dense_operator``; nothing here calls the sampler code under test.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

import gddim_numerics as gd
from gddim_numerics.layout import dense_operator


class Gaussian:
    """Data ``u0 ~ N(mu, S)`` for ``diffusion`` on one event of shape ``event_shape``.

    ``S=None`` is the Dirac case ``S = Sigma_0``. Marginal: ``m_t = Psi(t,0) mu``,
    ``C_t = Psi (S - Sigma_0) Psi^T + Sigma_t``.
    """

    def __init__(self, diffusion, event_shape, mu, S=None):
        self.sde, self.ev = diffusion, tuple(event_shape)
        self.d = int(np.prod(self.ev))
        self.mu = np.asarray(mu, dtype=float).reshape(self.d)
        self.excess = np.zeros((self.d, self.d)) if S is None else np.asarray(S) - self.op(diffusion.initial_covariance)

    def op(self, blocks):
        return dense_operator(self.sde, blocks, self.ev)

    def psi0(self, t):
        return self.op(self.sde.mean_coefficient(np.asarray(t)))

    def mean(self, t):
        return self.psi0(t) @ self.mu

    def cov(self, t):
        p = self.psi0(t)
        return p @ self.excess @ p.T + self.op(self.sde.covariance(np.asarray(t)))

    def factor(self, t, which="R"):
        blocks = self.sde.gddim_factor(np.asarray(t)) if which == "R" else self.sde.cholesky(np.asarray(t))
        return self.op(blocks)

    def eps_affine(self, t, which="R"):
        """``eps_K(u, t) = K^T C^{-1} (u - m)`` as ``(W, w)``."""
        w = self.factor(t, which).T @ np.linalg.inv(self.cov(t))
        return w, -w @ self.mean(t)

    def eps_fn(self, which="R"):
        def eps(x, t):
            w, off = self.eps_affine(t, which)
            flat = np.reshape(x, (x.shape[0], self.d))
            return np.reshape(flat @ w.T + off, x.shape)
        return eps

    def drift_pf(self, t):
        """PF ODE ``du/dt = J u + c`` (exact score of the Gaussian marginal)."""
        f = self.op(self.sde.drift(np.asarray(t)))
        gg = self.op(self.sde.diffusion(np.asarray(t)))
        ci = np.linalg.inv(self.cov(t))
        return f + 0.5 * gg @ ci, -0.5 * gg @ ci @ self.mean(t)

    def flow_ode(self, x, s, t, rtol=1e-12, atol=1e-13):
        """Reference PF-ODE solution from ``(x, s)`` to ``t`` by DOP853 (independent of R)."""
        flat = np.reshape(x, (x.shape[0], self.d))

        def rhs(tau, y):
            j, c = self.drift_pf(tau)
            return (y.reshape(-1, self.d) @ j.T + c).ravel()

        sol = solve_ivp(rhs, (s, t), flat.ravel(), method="DOP853", rtol=rtol, atol=atol)
        assert sol.success
        return sol.y[:, -1].reshape(x.shape)


def relative_error(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def random_dense(seed: int, k: int = 3):
    """A random stable ``beta(t) A`` diffusion with full-rank Q and a small PD Sigma_0."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((k, k))
    m *= 1.5 / np.linalg.norm(m, 2)
    a = m - (np.max(np.linalg.eigvals(m).real) + 0.5 + rng.uniform()) * np.eye(k)
    g = rng.standard_normal((k, k))
    return gd.ConstantCoefficientSDE(a, g @ g.T + 0.1 * np.eye(k), beta=lambda t: 1.0 + t,
                                     beta_integral=lambda t: t + 0.5 * t * t, initial_covariance=1e-3 * np.eye(k))


def lagrange(nodes, j, x):
    """Lagrange basis polynomial ``j`` on ``nodes``, written out."""
    out = 1.0
    for i, p in enumerate(nodes):
        if i != j:
            out = out * (x - p) / (nodes[j] - p)
    return out


# Gaussian data with S != Sigma_0 for convergence-order tests: (diffusion factory, event shape, mu, S)
GAUSSIAN_CASES = {
    "vp": (gd.VPSDE.linear, (2,), np.array([0.5, -0.3]), 0.25 * np.eye(2)),
    "cld": (gd.CLD, (1, 2), np.array([0.5, 0.0]), np.diag([0.25, 0.01 + 1e-6])),
}


def gaussian_case(name: str, t_end: float = 0.1):
    """``(sde, data, x, ref)``: 4 start points and the DOP853 PF-ODE reference from ``t_start`` to ``t_end``."""
    make, ev, mu, cov = GAUSSIAN_CASES[name]
    sde = make()
    data = Gaussian(sde, ev, mu, cov)
    x = np.random.default_rng(0).standard_normal((4,) + ev)
    return sde, data, x, data.flow_ode(x, sde.t_start, t_end)
