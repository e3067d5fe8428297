r"""The machinery of the exact-score problems: a Gaussian mixture :math:`\sum_k\pi_kN(\mu_k,S_k)` in the augmented sense.

:class:`GaussianComponents` holds the marginals, the per-time host tables of the exact networks
(LRU-cached; their array kernels are in ``gddim_numerics.backends.exact``), sampling, and the
probability-flow reference solve; :mod:`gddim_numerics.problems` defines the public problems on it.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import numpy as np

from ._checks import positive, symmetric_positive_definite
from .diffusion import LinearDiffusion, batched_inverse
from .layout import dense_operator, event_size, validate_event_shape
from .outputs import factor
from .plans import psd_factor

_TABLE_CACHE_SIZE = 1024
_FLOW_CACHE_SIZE = 32


class GaussianComponents:
    r"""Machinery shared by the exact-score problems, the mixture :math:`\sum_k\pi_kN(\mu_k,S_k)`.

    Subclasses validate their own parameters and set ``weights`` ``(K,)``, ``_means`` ``(K, D)``
    and ``covs`` ``(K, D, D)``.
    """

    weights: np.ndarray
    _means: np.ndarray
    covs: np.ndarray

    def __init__(self, diffusion: LinearDiffusion, event_shape):
        if not isinstance(diffusion, LinearDiffusion):
            raise TypeError(f"diffusion must be a LinearDiffusion; got {type(diffusion).__name__}")
        self.diffusion = diffusion
        self.event_shape = validate_event_shape(diffusion, event_shape)
        self.dim = event_size(self.event_shape)
        self._sigma0 = dense_operator(diffusion, diffusion.initial_covariance, self.event_shape)
        self._host_tables = lru_cache(maxsize=_TABLE_CACHE_SIZE)(self._build_tables)
        self._array_tables = lru_cache(maxsize=_TABLE_CACHE_SIZE)(self._convert_tables)
        self._flows: OrderedDict = OrderedDict()

    # ------------------------------------------------------------------ input checks
    def _check_cov(self, cov, name: str) -> np.ndarray:
        r"""Dense ``(D, D)`` :math:`S \succeq \Sigma_0` from ``None``, ``(D, D)`` or per-mode ``(M, k, k)``."""
        if cov is None:
            return self._sigma0.copy()
        a = np.asarray(cov, dtype=np.float64)
        m, k, d = self.diffusion.n_modes, self.diffusion.block_size, self.dim
        if a.shape == (m, k, k):
            a = dense_operator(self.diffusion, a, self.event_shape)
        elif a.shape != (d, d):
            raise ValueError(
                f"{name} must have shape (D, D) = {(d, d)} or per-mode (M, k, k) = {(m, k, k)}; got {a.shape}"
            )
        symmetric_positive_definite(a, name, allow_semidefinite=True)
        gap = np.linalg.eigvalsh(a - self._sigma0).min()
        if gap < -1e-12 * max(1.0, float(np.max(np.abs(a)))):
            raise ValueError(
                f"{name} must satisfy S >= Sigma_0 (the diffusion's initial covariance): S is the law at "
                f"t = 0 in the augmented sense, Sigma_0 + the clean data's covariance; the smallest "
                f"eigenvalue of S - Sigma_0 is {gap:.3g}"
            )
        return a

    def _check_time(self, t, name: str = "t") -> float:
        if len(getattr(t, "shape", ())) != 0:
            raise TypeError(f"{name} must be a scalar time; got an array of shape {tuple(t.shape)}")
        try:
            value = float(t)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a real scalar time; got {t!r}") from None
        return float(self.diffusion.check_times(value, name))

    def _check_shape(self, shape: tuple, name: str) -> None:
        _check_state_shape(shape, self.event_shape, name)

    def _host_states(self, x, name: str) -> np.ndarray:
        """``x`` as a float64 ``(B, D)`` NumPy array, after checking its event shape."""
        a = np.asarray(x, dtype=np.float64)
        _check_state_shape(a.shape, self.event_shape, name)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite")
        return a.reshape(-1, self.dim)

    # ------------------------------------------------------------------ marginals
    @property
    def n_components(self) -> int:
        """Number ``K`` of mixture components."""
        return len(self.weights)

    @property
    def means(self) -> np.ndarray:
        r"""Component means :math:`\mu_k`, shape ``(K, *event_shape)``."""
        return self._means.reshape((-1,) + self.event_shape)

    def component_marginals(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        r"""Means and covariances of the components of :math:`p_t`.

        :math:`m^k_t = \Psi(t,0)\mu_k`,
        :math:`C^k_t = \Psi(t,0)(S_k - \Sigma_0)\Psi(t,0)^\top + \Sigma_t` (docs/math §8.1).

        Returns
        -------
        means : (K, D) ndarray
            Means of the flattened (C order) event.
        covs : (K, D, D) ndarray
            Covariances of the flattened event.
        """
        t = self._check_time(t)
        psi = self._dense(self.diffusion.mean_coefficient(t))
        sigma = self._dense(self.diffusion.covariance(t))
        cov = psi @ (self.covs - self._sigma0) @ psi.T + sigma
        return self._means @ psi.T, 0.5 * (cov + np.swapaxes(cov, -1, -2))

    def _dense(self, mats) -> np.ndarray:
        return dense_operator(self.diffusion, mats, self.event_shape)

    # ------------------------------------------------------------------ tables
    def _build_tables(self, name: str, t: float) -> tuple[np.ndarray, ...]:
        """float64 tables of ``name`` (see ``_TABLE_BUILDERS``) at time ``t``, cached per ``(name, t)``."""
        return _TABLE_BUILDERS[name](self, t)

    def _density_tables(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""``(m_t^k, (L^k)^{-1}, log π_k - log det L^k - (D/2) log 2π)`` with :math:`L^kL^{k\top} = C^k_t`."""
        means, covs = self.component_marginals(t)
        chol_inv = np.empty_like(covs)
        log_norm = np.log(self.weights) - 0.5 * self.dim * np.log(2.0 * np.pi)
        for i, c in enumerate(covs):
            try:
                chol = np.linalg.cholesky(c)
            except np.linalg.LinAlgError:
                raise ValueError(
                    f"the marginal covariance of component {i} is singular at t={t:g} "
                    "(Dirac data at t = 0?); use a later time t"
                ) from None
            chol_inv[i] = np.linalg.solve(chol, np.eye(self.dim))  # scipy's trtrs is slow on tiny blocks
            log_norm[i] -= np.sum(np.log(np.diag(chol)))
        return means, chol_inv, log_norm

    def _convert_tables(self, name: str, t: float, xp, dev, dtype) -> tuple:
        from .backends.exact import convert_tables  # the array side, loaded when a network runs

        return convert_tables(self._host_tables(name, t), xp, dev, dtype)

    # ------------------------------------------------------------------ exact outputs
    def _state_output(self, x, t, name: str | None, kernel: str):
        """The exact network ``kernel`` (:data:`gddim_numerics.backends.exact.KERNELS`) at ``(x, t)``."""
        from .backends.exact import state_output

        return state_output(self, x, t, name, kernel)

    def score(self, x, t: float):
        r"""Exact score :math:`\nabla\log p_t(x) = -\sum_k w_k(x)(C^k_t)^{-1}(x - m^k_t)`.

        Parameters
        ----------
        x : array, shape ``(..., *event_shape)``
            States in any array-API namespace, real floating dtype.
        t : float
            Time in the diffusion's range (where every :math:`C^k_t` is nonsingular).

        Returns
        -------
        array
            Same shape, namespace, device and dtype as ``x``.
        """
        return self._state_output(x, t, None, "score")

    score_fn = score  # the adapters' name for "the network returns the score"

    def eps_R(self, x, t: float):
        r"""Exact gDDIM network output :math:`\epsilon_R = -R_t^\top\nabla\log p_t(x)`.

        For Dirac data it is :math:`R_t^{-1}(x - m_t)`, constant along probability-flow
        trajectories (docs/math §2.4). Conventions as :meth:`score`.
        """
        return self._state_output(x, t, "R", "noise")

    def eps_L(self, x, t: float):
        r"""Exact Cholesky-parameterized output :math:`\epsilon_L = -L_t^\top\nabla\log p_t(x) = O_t\epsilon_R`.

        ``L_t`` is the diffusion's per-mode lower Cholesky factor, :math:`O_t = L_t^{-1}R_t`.
        Conventions as :meth:`score`.
        """
        return self._state_output(x, t, "L", "noise")

    def data_prediction(self, x, t: float):
        r"""Exact data prediction :math:`D(x,t) = \Psi(0,t)(x + \Sigma_t\nabla\log p_t(x))`.

        By Tweedie's formula this is the posterior mean :math:`E[\bar u_0 \mid u_t = x]` of the
        clean data point (docs/math §6); for CLD its velocity part is the posterior mean of the
        clean velocity (0 for the usual means). Conventions as :meth:`score`.
        """
        return self._state_output(x, t, "data", "data")

    def log_prob(self, x, t: float):
        r"""Log density :math:`\log p_t(x)` (log-sum-exp over components), shape ``x``'s batch axes.

        Same namespace, device and dtype as ``x``.
        """
        from .backends.exact import log_density

        return log_density(self, x, t)

    # ------------------------------------------------------------------ reference flow
    def _pf_rows(self, u: np.ndarray, t: float) -> np.ndarray:
        r"""Rows of :math:`F_tu - \tfrac12G_tG_t^\top\nabla\log p_t(u)` (float64, tables not cached)."""
        f = self._dense(self.diffusion.drift(t))
        gg = self._dense(self.diffusion.diffusion(t))
        from .backends.exact import mixture_score

        score, _ = mixture_score(np, u, *self._density_tables(t))
        return u @ f.T - 0.5 * score @ gg

    def reference_flow(self, x_s, s: float, t: float, rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
        r"""Solve the probability-flow ODE from ``(s, x_s)`` to time ``t`` with DOP853.

        :math:`\dot u = F_tu - \tfrac12G_tG_t^\top\nabla\log p_t(u)` with the exact score; all
        samples are integrated as one ODE system of ``B·D`` unknowns. Results are cached in
        memory by ``(s, t, rtol, atol, x_s)``.

        Parameters
        ----------
        x_s : array_like, shape ``(B, *event_shape)``
            States at time ``s`` (NumPy, or anything ``numpy.asarray`` accepts).
        s, t : float
            Start and end times (either order) in the diffusion's range.
        rtol, atol : float
            DOP853 tolerances.

        Returns
        -------
        numpy.ndarray
            float64 states at time ``t``, shape of ``x_s``.
        """
        u = self._host_states(x_s, "x_s")
        s, t = self._check_time(s, "s"), self._check_time(t, "t")
        rtol, atol = positive(rtol, "rtol"), positive(atol, "atol")
        key = (s, t, rtol, atol, u.shape, u.tobytes())
        if key not in self._flows:
            self._flows[key] = self._solve_pf(u, s, t, rtol, atol)
            if len(self._flows) > _FLOW_CACHE_SIZE:
                self._flows.popitem(last=False)
        self._flows.move_to_end(key)
        return self._flows[key].reshape(np.shape(x_s)).copy()

    def _solve_pf(self, u: np.ndarray, s: float, t: float, rtol: float, atol: float) -> np.ndarray:
        if s == t:
            return u.copy()
        shape = u.shape
        from scipy.integrate import solve_ivp
        sol = solve_ivp(lambda tau, y: self._pf_rows(y.reshape(shape), tau).ravel(), (s, t), u.ravel(),
                        method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"probability-flow reference solve failed: {sol.message}")
        return sol.y[:, -1].reshape(shape)

    # ------------------------------------------------------------------ sampling
    def sample_data(self, n: int, rng=None) -> np.ndarray:
        r"""``n`` samples of the law at ``t = 0``, :math:`\sum_k\pi_kN(\mu_k, S_k)`; shape ``(n, *event_shape)``.

        ``rng`` is a ``numpy.random.Generator`` or a seed for ``numpy.random.default_rng``.
        """
        return self._sample(self._means, self.covs, n, rng)

    def sample_marginal(self, t: float, n: int, rng=None) -> np.ndarray:
        r"""``n`` samples of the exact marginal :math:`p_t`; shape ``(n, *event_shape)``, NumPy float64."""
        means, covs = self.component_marginals(t)
        return self._sample(means, covs, n, rng)

    def sample_prior(self, n: int, rng=None) -> np.ndarray:
        r"""``n`` samples of the exact :math:`p_{t_\mathrm{start}}` at the diffusion's ``t_start``.

        This is the problem's exact law, not the diffusion's standard prior, so a sampler started
        from it is judged on its discretization error alone.
        """
        return self.sample_marginal(self.diffusion.t_start, n, rng)

    def _sample(self, means: np.ndarray, covs: np.ndarray, n: int, rng) -> np.ndarray:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int; got {n!r}")
        rng = np.random.default_rng(rng)
        comp = rng.choice(self.n_components, size=int(n), p=self.weights)
        z = rng.standard_normal((int(n), self.dim))
        out = np.empty_like(z)
        for i, cov in enumerate(covs):
            pick = comp == i
            out[pick] = means[i] + z[pick] @ psd_factor(cov, "the component covariance").T
        return out.reshape((int(n),) + self.event_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.diffusion!r}, event_shape={self.event_shape}, K={self.n_components})"


# ---------------------------------------------------------------------- table builders
def _factor_tables(which: str):
    def build(problem: GaussianComponents, t: float) -> tuple[np.ndarray]:
        return (problem._dense(factor(problem.diffusion, t, which)),)

    return build


def _data_tables(problem: GaussianComponents, t: float) -> tuple[np.ndarray, np.ndarray]:
    r"""``(Σ_t, Ψ(t,0)^{-T})``: rows map as ``D = (u + s Σ_t) Ψ(t,0)^{-T}``."""
    psi_inv = problem._dense(batched_inverse(problem.diffusion.mean_coefficient(t)))
    return problem._dense(problem.diffusion.covariance(t)), psi_inv.T


_TABLE_BUILDERS = {
    "density": GaussianComponents._density_tables,
    "R": _factor_tables("R"),
    "L": _factor_tables("L"),
    "data": _data_tables,
}


# ---------------------------------------------------------------------- helpers
def _check_state_shape(shape: tuple, event_shape: tuple, name: str) -> None:
    n = len(event_shape)
    if len(shape) < n or tuple(shape[len(shape) - n:]) != event_shape:
        raise ValueError(
            f"{name} must have shape (..., *event_shape) with event_shape {event_shape}; got {tuple(shape)}"
        )
