r"""Exact-score problems: Gaussian, Dirac and Gaussian-mixture data under any linear diffusion.

Data and marginals (MATH.md §8.1, §8.3)
---------------------------------------
The data law is given *in the augmented sense*: the state at ``t = 0`` is
:math:`u_0 \sim \sum_k \pi_k N(\mu_k, S_k)` with :math:`S_k \succeq \Sigma_0`, i.e. a clean data
point :math:`\bar u_0 \sim \sum_k \pi_k N(\mu_k, S_k - \Sigma_0)` seen through the diffusion's
kernel :math:`N(\Psi(t,0)\bar u_0, \Sigma_t)`. ``S_k = Σ_0`` is a Dirac point (for CLD: a position
with the kernel's initial velocity law). Every component stays Gaussian:

.. math::
    p_t = \sum_k \pi_k N(m^k_t, C^k_t),\qquad m^k_t = \Psi(t,0)\mu_k,\qquad
    C^k_t = \Psi(t,0)(S_k - \Sigma_0)\Psi(t,0)^\top + \Sigma_t .

Exact network outputs (MATH.md §6)
----------------------------------
With responsibilities :math:`w_k(u) = \operatorname{softmax}_k\big(\log\pi_k + \log N(u; m^k_t, C^k_t)\big)`
(log-sum-exp), the score is :math:`s(u,t) = -\sum_k w_k(u)\,(C^k_t)^{-1}(u - m^k_t)` and

* :math:`\epsilon_R = -R_t^\top s`, :math:`\epsilon_L = -L_t^\top s` (``R_t`` the gDDIM factor,
  ``L_t`` the diffusion's per-mode Cholesky factor);
* the data prediction (Tweedie) :math:`D(u,t) = \Psi(0,t)(u + \Sigma_t s) = E[\bar u_0 \mid u_t = u]`.

These take states ``(..., *event_shape)`` of any array-API namespace (NumPy, PyTorch, CuPy,
array-api-strict, ...) and a scalar time, and return an array of the same shape, namespace,
device and dtype. The float64 tables are computed once per time and moved to the state's
namespace once per (time, namespace, device, dtype). Events are flattened in C order as in
:mod:`gddim_numerics.layout`, so every operator is a dense ``D x D`` matrix.

Reference flows (MATH.md §8.2)
------------------------------
:meth:`GaussianData.exact_flow` is the exact probability-flow solution for Gaussian data;
``reference_flow`` integrates the probability-flow ODE
:math:`\dot u = F_t u - \tfrac12 G_tG_t^\top \nabla\log p_t(u)` with DOP853 for any problem.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import cached_property, lru_cache

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from array_api_compat import numpy as np_xp
from scipy.integrate import solve_ivp

from ._checks import positive, symmetric_positive_definite
from .diffusion import LinearDiffusion, batched_inverse
from .layout import basis_matrix, dense_operator, event_size, validate_event_shape
from .outputs import factor

_TABLE_CACHE_SIZE = 1024
_FLOW_CACHE_SIZE = 32


class _GaussianComponents:
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
        :math:`C^k_t = \Psi(t,0)(S_k - \Sigma_0)\Psi(t,0)^\top + \Sigma_t` (MATH.md §8.1).

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
        return tuple(xp.asarray(a, dtype=dtype, device=dev) for a in self._host_tables(name, t))

    # ------------------------------------------------------------------ exact outputs
    def _evaluate(self, x, t, name: str | None, kernel):
        """Run ``kernel(xp, rows, density_tables, name_tables)`` on ``x`` flattened to ``(B, D)`` rows."""
        xp = array_namespace(x)
        if not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(f"x must have a real floating dtype; got {x.dtype}")
        _check_state_shape(tuple(x.shape), self.event_shape, "x")
        t = self._check_time(t)
        dev = array_device(x)
        density = self._array_tables("density", t, xp, dev, x.dtype)
        extra = () if name is None else self._array_tables(name, t, xp, dev, x.dtype)
        return kernel(xp, xp.reshape(x, (-1, self.dim)), density, extra)

    def _state_output(self, x, t, name: str | None, kernel):
        out = self._evaluate(x, t, name, kernel)
        return array_namespace(x).reshape(out, tuple(x.shape))

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
        return self._state_output(x, t, None, _score_output)

    score_fn = score  # the adapters' name for "the network returns the score"

    def eps_R(self, x, t: float):
        r"""Exact gDDIM network output :math:`\epsilon_R = -R_t^\top\nabla\log p_t(x)`.

        For Dirac data it is :math:`R_t^{-1}(x - m_t)`, constant along probability-flow
        trajectories (MATH.md §2.4). Conventions as :meth:`score`.
        """
        return self._state_output(x, t, "R", _noise_output)

    def eps_L(self, x, t: float):
        r"""Exact Cholesky-parameterized output :math:`\epsilon_L = -L_t^\top\nabla\log p_t(x) = O_t\epsilon_R`.

        ``L_t`` is the diffusion's per-mode lower Cholesky factor, :math:`O_t = L_t^{-1}R_t`.
        Conventions as :meth:`score`.
        """
        return self._state_output(x, t, "L", _noise_output)

    def data_prediction(self, x, t: float):
        r"""Exact data prediction :math:`D(x,t) = \Psi(0,t)(x + \Sigma_t\nabla\log p_t(x))`.

        By Tweedie's formula this is the posterior mean :math:`E[\bar u_0 \mid u_t = x]` of the
        clean data point (MATH.md §6); for CLD its velocity part is the posterior mean of the
        clean velocity (0 for the usual means). Conventions as :meth:`score`.
        """
        return self._state_output(x, t, "data", _data_output)

    def log_prob(self, x, t: float):
        r"""Log density :math:`\log p_t(x)` (log-sum-exp over components), shape ``x``'s batch axes.

        Same namespace, device and dtype as ``x``.
        """
        logp = self._evaluate(x, t, None, lambda xp, u, density, _: _mixture_score(xp, u, *density)[1])
        batch = tuple(x.shape)[: len(x.shape) - len(self.event_shape)]
        return array_namespace(x).reshape(logp, batch)

    # ------------------------------------------------------------------ reference flow
    def _pf_rows(self, u: np.ndarray, t: float) -> np.ndarray:
        r"""Rows of :math:`F_tu - \tfrac12G_tG_t^\top\nabla\log p_t(u)` (float64, tables not cached)."""
        f = self._dense(self.diffusion.drift(t))
        gg = self._dense(self.diffusion.diffusion(t))
        score, _ = _mixture_score(np_xp, u, *self._density_tables(t))
        return u @ f.T - 0.5 * score @ gg

    def reference_flow(self, x_s, s: float, t: float, rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
        r"""Solve the probability-flow ODE from ``(s, x_s)`` to time ``t`` with DOP853.

        :math:`\dot u = F_tu - \tfrac12G_tG_t^\top\nabla\log p_t(u)` with the exact score; all
        samples are integrated as one ODE system of ``B·D`` unknowns. Results are cached in
        memory by ``(s, t, rtol, atol, x_s)``.

        Parameters
        ----------
        x_s : (B, *event_shape) array_like
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
            out[pick] = means[i] + z[pick] @ _psd_root(cov).T
        return out.reshape((int(n),) + self.event_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.diffusion!r}, event_shape={self.event_shape}, K={self.n_components})"


class GaussianMixture(_GaussianComponents):
    r"""Gaussian-mixture data :math:`u_0 \sim \sum_k\pi_kN(\mu_k, S_k)` (MATH.md §8.3).

    Parameters
    ----------
    diffusion : LinearDiffusion
        The forward diffusion.
    event_shape : tuple of int
        Shape of one sample, fitting the diffusion's layout
        (:func:`~gddim_numerics.layout.validate_event_shape`).
    weights : (K,) array_like
        Positive weights :math:`\pi_k` summing to 1.
    means : (K, *event_shape) array_like
        Component means :math:`\mu_k` (full states; for CLD the velocity entries are usually 0).
    covs : None or (K, D, D) or (K, M, k, k) array_like, optional
        :math:`S_k \succeq \Sigma_0` in the augmented sense (:math:`S_k - \Sigma_0` is the clean
        data's covariance), dense or as per-mode blocks. ``None``: every :math:`S_k = \Sigma_0`,
        a Dirac mixture.

    Notes
    -----
    The flow has no closed form; :meth:`reference_flow` integrates it.
    """

    def __init__(self, diffusion: LinearDiffusion, event_shape, weights, means, covs=None):
        super().__init__(diffusion, event_shape)
        self.weights = _check_weights(weights)
        n = len(self.weights)
        self._means = _check_finite(means, (n,) + self.event_shape, "means").reshape(n, self.dim)
        if covs is None:
            covs = [None] * n
        elif np.ndim(covs) == 0 or len(covs) != n:
            raise ValueError(f"covs must hold one covariance per component (K = {n}); got {np.shape(covs)}")
        self.covs = np.stack([self._check_cov(c, f"covs[{i}]") for i, c in enumerate(covs)])

    def marginal(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        r"""Component means ``(K, D)`` and covariances ``(K, D, D)`` of :math:`p_t` (:meth:`component_marginals`)."""
        return self.component_marginals(t)


class GaussianData(_GaussianComponents):
    r"""Gaussian data :math:`u_0 \sim N(\mu, S)` under any linear diffusion (MATH.md §8.1–8.2).

    Parameters
    ----------
    diffusion : LinearDiffusion
        The forward diffusion.
    event_shape : tuple of int
        Shape of one sample, fitting the diffusion's layout.
    mean : array_like, shape ``event_shape``
        :math:`\mu` (a full state; for CLD the velocity entries are usually 0).
    cov : None or (D, D) or (M, k, k) array_like, optional
        :math:`S \succeq \Sigma_0` at ``t = 0`` (augmented sense), dense or as per-mode blocks;
        ``None`` means :math:`S = \Sigma_0` (Dirac data).

    Notes
    -----
    :math:`p_t = N(m_t, C_t)` with :math:`m_t = \Psi(t,0)\mu` and
    :math:`C_t = \Psi(t,0)(S-\Sigma_0)\Psi(t,0)^\top + \Sigma_t`; the exact network output
    :math:`\epsilon_K(u,t) = K_t^\top C_t^{-1}(u - m_t)` is affine in ``u``.
    """

    def __init__(self, diffusion: LinearDiffusion, event_shape, mean, cov=None):
        super().__init__(diffusion, event_shape)
        self.weights = np.ones(1)
        self._means = _check_finite(mean, self.event_shape, "mean").reshape(1, self.dim)
        self.covs = self._check_cov(cov, "cov")[None]
        self._flow_matrices = lru_cache(maxsize=_TABLE_CACHE_SIZE)(self._flow_matrix)

    @property
    def mean(self) -> np.ndarray:
        r""":math:`\mu`, shape ``event_shape``."""
        return self.means[0]

    @property
    def cov(self) -> np.ndarray:
        r""":math:`S`, shape ``(D, D)``."""
        return self.covs[0]

    def marginal(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        r"""Mean :math:`m_t` ``(D,)`` and covariance :math:`C_t` ``(D, D)`` of :math:`p_t`."""
        means, covs = self.component_marginals(t)
        return means[0], covs[0]

    def exact_flow(self, x_s, s: float, t: float) -> np.ndarray:
        r"""Exact probability-flow solution :math:`u(t) = m_t + Q_tQ_s^{-1}(u(s) - m_s)` (MATH.md §8.2).

        ``Q`` solves :math:`\dot Q = (F_t + \tfrac12G_tG_t^\top C_t^{-1})Q`. The flow matrix
        :math:`\Phi(t,s) = Q_tQ_s^{-1}` is

        * in closed form :math:`W\operatorname{diag}(\sqrt{c_t/c_s})\,W^\top`,
          :math:`c_\tau = \operatorname{diag}(W^\top C_\tau W)`, when one orthonormal ``W``
          diagonalizes every :math:`F_\tau, G_\tau G_\tau^\top, C_\tau` (then
          :math:`Q_\tau = C_\tau^{1/2}`): ``k = 1`` diffusions with one mode (``W`` = eigenvectors
          of ``S``), or with ``S`` diagonal in the mode basis (BDM: ``W`` = the DCT basis);
        * otherwise the transition matrix of that linear ODE from ``s`` to ``t`` in ``D``
          dimensions (DOP853, rtol 1e-12, atol 1e-14), cached per ``(s, t)``.

        Parameters
        ----------
        x_s : (B, *event_shape) array_like
            States at time ``s``.
        s, t : float
            Start and end times (either order), with :math:`C_s, C_t` nonsingular.

        Returns
        -------
        numpy.ndarray
            float64 states at time ``t``, shape of ``x_s``.
        """
        u = self._host_states(x_s, "x_s")
        s, t = self._check_time(s, "s"), self._check_time(t, "t")
        phi = self._flow_matrices(s, t)
        m_s, m_t = (self._means[0] @ self._dense(self.diffusion.mean_coefficient(tau)).T for tau in (s, t))
        return (m_t + (u - m_s) @ phi.T).reshape(np.shape(x_s))

    @cached_property
    def _flow_basis(self) -> np.ndarray | None:
        """Orthonormal ``W`` diagonalizing every ``C_t`` when the structure gives one, else ``None``."""
        if self.diffusion.block_size != 1:
            return None
        if self.diffusion.n_modes == 1:
            return np.linalg.eigh(self.cov)[1]
        w = basis_matrix(self.diffusion, self.event_shape)
        s_modes = w.T @ self.cov @ w
        off = s_modes - np.diag(np.diag(s_modes))
        return w if np.max(np.abs(off)) <= 1e-12 * max(1.0, float(np.max(np.abs(s_modes)))) else None

    def _flow_matrix(self, s: float, t: float) -> np.ndarray:
        if s == t:
            return np.eye(self.dim)
        if self._flow_basis is not None:
            return self._closed_form_flow(self._flow_basis, s, t)
        return self._ode_flow(s, t)

    def _closed_form_flow(self, w: np.ndarray, s: float, t: float) -> np.ndarray:
        c_s, c_t = (np.einsum("ij,ik,kj->j", w, self.marginal(tau)[1], w) for tau in (s, t))
        if np.any(c_s <= 0) or np.any(c_t <= 0):
            raise ValueError(f"C is singular at s={s:g} or t={t:g}; the flow needs nonsingular marginals")
        return (w * np.sqrt(c_t / c_s)) @ w.T

    def _ode_flow(self, s: float, t: float) -> np.ndarray:
        d = self.dim

        def rhs(tau, y):
            f = self._dense(self.diffusion.drift(tau))
            gg = self._dense(self.diffusion.diffusion(tau))
            a = f + 0.5 * np.linalg.solve(self.marginal(tau)[1], gg).T  # F + GG C^{-1} / 2
            return (a @ y.reshape(d, d)).ravel()

        sol = solve_ivp(rhs, (s, t), np.eye(d).ravel(), method="DOP853", rtol=1e-12, atol=1e-14)
        if not sol.success:
            raise RuntimeError(f"exact-flow ODE solve failed: {sol.message}")
        return sol.y[:, -1].reshape(d, d)


class DiracData(GaussianData):
    r"""A single data point: :class:`GaussianData` with :math:`S = \Sigma_0` (MATH.md §1.4, §8.1).

    The exact :math:`\epsilon_R` is constant along probability-flow trajectories and one-step
    gDDIM is exact for any step size (MATH.md §2.4, §3.2).

    Parameters
    ----------
    diffusion : LinearDiffusion
        The forward diffusion.
    event_shape : tuple of int
        Shape of one sample, fitting the diffusion's layout.
    point : array_like, shape ``event_shape``
        The data point :math:`\mu` (for CLD the velocity entries are usually 0).
    """

    def __init__(self, diffusion: LinearDiffusion, event_shape, point):
        super().__init__(diffusion, event_shape, point, cov=None)


# ---------------------------------------------------------------------- table builders
def _factor_tables(which: str):
    def build(problem: _GaussianComponents, t: float) -> tuple[np.ndarray]:
        return (problem._dense(factor(problem.diffusion, t, which)),)

    return build


def _data_tables(problem: _GaussianComponents, t: float) -> tuple[np.ndarray, np.ndarray]:
    r"""``(Σ_t, Ψ(t,0)^{-T})``: rows map as ``D = (u + s Σ_t) Ψ(t,0)^{-T}``."""
    psi_inv = problem._dense(batched_inverse(problem.diffusion.mean_coefficient(t)))
    return problem._dense(problem.diffusion.covariance(t)), psi_inv.T


_TABLE_BUILDERS = {
    "density": _GaussianComponents._density_tables,
    "R": _factor_tables("R"),
    "L": _factor_tables("L"),
    "data": _data_tables,
}


# ---------------------------------------------------------------------- array-API kernels
def _mixture_score(xp, u, means, chol_inv, log_norm):
    r"""Score rows ``(B, D)`` and :math:`\log p_t` ``(B,)`` of a Gaussian mixture at rows ``u``.

    With :math:`z_k = (u - m_k)L_k^{-\top}` (rows), :math:`\log\pi_kN_k = \mathrm{log\_norm}_k - |z_k|^2/2`;
    the responsibilities are a max-shifted softmax and :math:`s = -\sum_k w_k z_kL_k^{-1}`
    (:math:`= -\sum_k w_k C_k^{-1}(u - m_k)` as columns).
    """
    diff = xp.expand_dims(u, axis=0) - xp.expand_dims(means, axis=1)  # (K, B, D)
    z = xp.matmul(diff, xp.matrix_transpose(chol_inv))
    logits = xp.expand_dims(log_norm, axis=1) - 0.5 * xp.sum(z * z, axis=-1)  # (K, B)
    top = xp.max(logits, axis=0, keepdims=True)
    w = xp.exp(logits - top)
    total = xp.sum(w, axis=0, keepdims=True)
    score = -xp.sum(xp.expand_dims(w / total, axis=-1) * xp.matmul(z, chol_inv), axis=0)
    return score, top[0, :] + xp.log(total[0, :])


def _score_output(xp, u, density, _):
    return _mixture_score(xp, u, *density)[0]


def _noise_output(xp, u, density, factor):
    r""":math:`\epsilon_K = -K^\top s`, as rows ``-s K``."""
    return -xp.matmul(_mixture_score(xp, u, *density)[0], factor[0])


def _data_output(xp, u, density, tables):
    r""":math:`D = \Psi(0,t)(u + \Sigma_t s)`, as rows ``(u + s Σ_t) Ψ(t,0)^{-T}``."""
    sigma, psi_inv_t = tables
    score = _mixture_score(xp, u, *density)[0]
    return xp.matmul(u + xp.matmul(score, sigma), psi_inv_t)


# ---------------------------------------------------------------------- validation helpers
def _check_state_shape(shape: tuple, event_shape: tuple, name: str) -> None:
    n = len(event_shape)
    if len(shape) < n or tuple(shape[len(shape) - n:]) != event_shape:
        raise ValueError(
            f"{name} must have shape (..., *event_shape) with event_shape {event_shape}; got {tuple(shape)}"
        )


def _check_weights(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array; got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"weights must be finite and positive; got {w!r}")
    if abs(w.sum() - 1.0) > 1e-10:
        raise ValueError(f"weights must sum to 1; they sum to {w.sum():.17g} (divide them by their sum)")
    return w


def _check_finite(values, shape: tuple, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def _psd_root(cov: np.ndarray) -> np.ndarray:
    """The symmetric root ``A = A^T``, ``A A^T = cov``, of a PSD matrix (eigenvalues rounded below 0 are taken
    as 0). Unlike ``V sqrt(Λ)`` it is unique when eigenvalues repeat, so samples do not depend on the LAPACK
    kernel's choice of eigenvectors."""
    lam, vec = np.linalg.eigh(cov)
    return (vec * np.sqrt(np.maximum(lam, 0.0))) @ vec.T
