r"""Switching probe: a nonlinear test problem derived from the data statistics (the guard of ``gddim_auto``).

The surrogate errors of :mod:`~gddim_numerics.surrogate` are exact on Gaussian data, where every
network output is affine in the state. On multi-modal data the exact network switches between
components as a trajectory commits to one: the data prediction :math:`\hat x_0(u, t)` then moves
like a smoothed step in time, which polynomial extrapolation of :math:`\hat x_0` can follow much
worse than the ε-prediction. No Gaussian shows this switching.

The probe is the data's law with its top principal direction split in two. Take the modal problem
(:func:`~gddim_numerics.modal.modal_problems`) with the largest excess covariance
:math:`E = S_p - \Sigma_{0,p}` and its top eigenpair :math:`(\lambda, v)`; for a weight ``w`` and a
component scale ``c`` in ``(0, 1)`` the probe is the two-component mixture

.. math::
    w\,N(\mu_p + a_1 v, \Sigma_{0,p} + E_c) + (1 - w)\,N(\mu_p - a_2 v, \Sigma_{0,p} + E_c),\qquad
    E_c = E - (1 - c)\lambda vv^\top,

with :math:`a_1 = \sqrt{(1-c)\lambda(1-w)/w}`, :math:`a_2 = \sqrt{(1-c)\lambda w/(1-w)}`: its mean is
:math:`\mu_p` and its covariance :math:`S_p` (the data's moments), and its components are sharp along
:math:`v` (variance :math:`c\lambda`). Both components share one covariance, so at time ``t`` with
:math:`m_j(t) = \Psi(t,0)\mu_j` and :math:`C_t = \Psi E_c \Psi^\top + \Sigma_t` the exact score is

.. math:: \nabla\log p_t(u) = -C_t^{-1}\big(u - \textstyle\sum_j r_j(u) m_j(t)\big),\qquad
          r_j \propto w_j N(u; m_j(t), C_t),

and every network output follows from it: :math:`\epsilon_K = -K_t^\top\nabla\log p_t`, the data
prediction :math:`\Psi(t,0)^{-1}(u + \Sigma_t\nabla\log p_t)` (Tweedie).

:class:`ProbeSet` draws :data:`PROBE_POINTS` start points from :math:`p_{t_{start}}` (a fixed
seed, antithetic pairs) and carries them to :math:`t_{end}` along the exact probability flow
:math:`\dot u = F_t u - \tfrac12 G_tG_t^\top\nabla\log p_t(u)`: for a scalar problem by the quantile
map :math:`F_{t_{end}}^{-1}\circ F_{t_{start}}` (the mixture CDFs are closed forms), otherwise by
DOP853 (rtol ``1e-10``, atol ``1e-12``);
:meth:`ProbeSet.errors` runs any deterministic :class:`~gddim_numerics.tables.StepTables` plan on the probe
with this exact network (the table recursion of :func:`~gddim_numerics.surrogate.run_tables`) and
returns the relative RMS error of the end points.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .modal import ModalProblems, blocks
from .outputs import factor
from .surrogate import run_tables
from .tables import StepTables

#: Start points of a probe (antithetic pairs).
PROBE_POINTS = 64
#: Tolerances of the probes' reference flow.
PROBE_TOL = (1e-10, 1e-12)


@dataclass(frozen=True)
class Probe:
    r"""One switching probe (module docstring) of the probed problem of a :class:`ProbeSet`.

    Attributes
    ----------
    excess : (n, n) array
        Component covariance :math:`E_c` above :math:`\Sigma_{0,p}`.
    means : (2, n) array
        Component means :math:`\mu_j`.
    weights : (2,) array
    start, end : (n, B) arrays
        Start points and their exact end points.
    """

    excess: np.ndarray
    means: np.ndarray
    weights: np.ndarray
    start: np.ndarray
    end: np.ndarray | None = None


def _stack(probes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Component means ``(S, 2, n)``, excess covariances ``(S, n, n)`` and log weights ``(S, 2)`` of ``probes``."""
    return (np.stack([pr.means for pr in probes]), np.stack([pr.excess for pr in probes]),
            np.log(np.stack([pr.weights for pr in probes])))


class ProbeSet:
    """Switching probes of one modal problem on ``[t_start, t_end]``, one per ``(weight, scale)`` of ``specs``.

    The problem is ``problems``'s number ``problem``, by default the one with the largest excess trace.
    The diffusion's blocks at a time are computed once for all probes and all plans (:meth:`at`; ``shared``: a
    dict of the diffusion's tables by time that several sets of one diffusion share); the reference end points of
    all probes come from one DOP853 solve.
    """

    def __init__(self, diffusion, problems: ModalProblems, t_start: float, t_end: float, specs,
                 problem: int | None = None, shared: dict | None = None):
        s0 = blocks(problems, diffusion, diffusion.initial_covariance)
        excess = problems.cov - s0
        p = int(np.argmax(np.trace(excess, axis1=-2, axis2=-1))) if problem is None else int(problem)
        mode = None if problems.mode is None else problems.mode[[p]]
        self.problem = replace(problems, mode=mode, mean=problems.mean[[p]], cov=problems.cov[[p]], flows={})
        self.diffusion, self.t_start, self.t_end = diffusion, float(t_start), float(t_end)
        self._cache: dict = {}
        self._shared = {} if shared is None else shared
        lam, vecs = np.linalg.eigh(excess[p])
        lam, v = max(float(lam[-1]), 0.0), vecs[:, -1]
        rng = np.random.default_rng(0)
        half = PROBE_POINTS // 2
        _, _, psi_s, sig_s = self.at(self.t_start, "drift", "diffusion", "psi", "sigma")
        self.probes = []
        for weight, c in specs:
            if not 0 < weight < 1 or not 0 < c < 1:
                raise ValueError(f"probe weight and component scale must lie in (0, 1); got {weight!r}, {c!r}")
            spread = (1 - c) * lam
            means = self.problem.mean[0] + np.outer([np.sqrt(spread * (1 - weight) / weight),
                                                     -np.sqrt(spread * weight / (1 - weight))], v)
            e_c = excess[p] - spread * np.outer(v, v)
            e_c = 0.5 * (e_c + e_c.T)
            z = rng.standard_normal((half, self.problem.size))
            z = np.concatenate([z, -z])
            comp = (np.arange(PROBE_POINTS) % half >= round(weight * half)).astype(int)  # antithetic pairs share one
            cov = psi_s @ e_c @ psi_s.T + sig_s
            start = (means[comp] @ psi_s.T + z @ np.linalg.cholesky(cov).T).T
            self.probes.append(Probe(e_c, means, np.array([weight, 1 - weight]), start))
        self._stack = _stack(self.probes)  # every plan's run asks for all probes at every step
        self.probes = [replace(pr, end=end) for pr, end in zip(self.probes, self._reference())]

    def at(self, t: float, *names: str):
        r"""Blocks of the probed problem at time ``t``: ``drift``, ``diffusion`` (:math:`GG^\top`), ``psi``
        (:math:`\Psi(t,0)`), ``sigma`` (:math:`\Sigma_t`), ``eps_R`` / ``eps_L`` (the factor :math:`K_t`); cached."""
        out = []
        for name in names:
            key = (float(t), name)
            if key not in self._cache:
                if key not in self._shared:
                    tt = np.array([float(t)])
                    self._shared[key] = {"drift": self.diffusion.drift, "diffusion": self.diffusion.diffusion,
                                         "psi": self.diffusion.mean_coefficient, "sigma": self.diffusion.covariance,
                                         "eps_R": lambda x: factor(self.diffusion, x, "R"),
                                         "eps_L": lambda x: factor(self.diffusion, x, "L")}[name](tt)
                self._cache[key] = blocks(self.problem, self.diffusion, self._shared[key])[0, 0]
            out.append(self._cache[key])
        return out

    def forget_times(self) -> None:
        """Drop the diffusion's blocks kept by time (:meth:`at`): a later plan's grid has other times, and they
        are recomputed, the same, where needed."""
        self._cache.clear()
        self._shared.clear()

    def score(self, probe: Probe, t: float, u: np.ndarray) -> np.ndarray:
        """Exact score of ``probe``'s marginal at time ``t`` for states ``u (n, B)``."""
        return self._scores(_stack([probe]), t, u[None])[0]

    def _scores(self, stack, t: float, u: np.ndarray) -> np.ndarray:
        """Exact scores at time ``t`` of the probes of ``stack`` (:func:`_stack`), states ``u (S, n, B)`` (row ``s``:
        probe ``s``)."""
        psi, sig = self.at(t, "psi", "sigma")
        means, excess, log_w = stack
        m = means @ psi.T  # (S, 2, n)
        c_inv = np.linalg.inv(psi @ excess @ psi.T + sig)
        diff = u[:, None, :, :] - m[:, :, :, None]  # (S, 2, n, B)
        logits = log_w[:, :, None] - 0.5 * np.sum(diff * (c_inv[:, None] @ diff), axis=2)  # (S, 2, B)
        r = np.exp(logits - logits.max(axis=1, keepdims=True))
        r /= r.sum(axis=1, keepdims=True)
        return -c_inv @ (u - np.einsum("sjn,sjb->snb", m, r))

    def output(self, probe: Probe, t: float, u: np.ndarray, output: str) -> np.ndarray:
        """The exact network output of type ``output`` on ``probe`` (module docstring)."""
        return self._outputs(_stack([probe]), t, u[None], output)[0]

    def _outputs(self, stack, t: float, u: np.ndarray, output: str) -> np.ndarray:
        """:meth:`output` of every probe of ``stack`` (:func:`_stack`) for states ``u (S, n, B)``."""
        score = self._scores(stack, t, u)
        if output == "score":
            return score
        if output in ("eps_R", "eps_L"):
            (k_t,) = self.at(t, output)
            return -k_t.T @ score
        if output == "data":
            psi, sig = self.at(t, "psi", "sigma")
            return np.linalg.solve(psi, u + sig @ score)
        raise ValueError(f"probe errors support network outputs eps_R, eps_L, score and data; got {output!r}")

    def _reference(self) -> list[np.ndarray]:
        if self.problem.size == 1:
            return [self._quantile_map(pr) for pr in self.probes]
        from scipy.integrate import solve_ivp  # keeps the package import light

        shape = (len(self.probes),) + self.probes[0].start.shape

        def rhs(tau, y):
            f, gg = self.at(tau, "drift", "diffusion")
            u = y.reshape(shape)
            return (f @ u - 0.5 * gg @ self._scores(self._stack, tau, u)).ravel()

        y0 = np.stack([pr.start for pr in self.probes]).ravel()
        sol = solve_ivp(rhs, (self.t_start, self.t_end), y0, method="DOP853", rtol=PROBE_TOL[0], atol=PROBE_TOL[1])
        for cache in (self._cache, self._shared):  # the solver's own times are not needed again
            for key in [k for k in cache if k[1] in ("drift", "diffusion")]:
                del cache[key]
        if not sol.success:
            raise RuntimeError(f"probe reference solve failed: {sol.message}")
        return list(sol.y[:, -1].reshape(shape))

    def _cdf(self, probe: Probe, t: float, u: np.ndarray) -> np.ndarray:
        """The probe's marginal CDF at time ``t`` (scalar problem) at the points ``u``."""
        from scipy.special import ndtr  # keeps the package import light

        psi, sig = self.at(t, "psi", "sigma")
        sd = np.sqrt(psi[0, 0] ** 2 * probe.excess[0, 0] + sig[0, 0])
        return probe.weights @ ndtr((u[None, :] - psi[0, 0] * probe.means) / sd)

    def _quantile_map(self, probe: Probe) -> np.ndarray:
        r"""Scalar problem: the flow maps quantiles to quantiles, :math:`u_{end} = F_{end}^{-1}(F_{start}(u))`
        (a 1-D flow keeps the mass on either side of a trajectory); bisection to the float resolution."""
        q = self._cdf(probe, self.t_start, probe.start[0])
        psi, sig = self.at(self.t_end, "psi", "sigma")
        m = psi[0, 0] * probe.means[:, 0]
        width = 40.0 * np.sqrt(psi[0, 0] ** 2 * probe.excess[0, 0] + sig[0, 0])
        lo, hi = np.full_like(q, m.min() - width), np.full_like(q, m.max() + width)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if np.all((mid == lo) | (mid == hi)):
                break
            below = self._cdf(probe, self.t_end, mid) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return 0.5 * (lo + hi)[None]

    def errors(self, tables: StepTables) -> np.ndarray:
        """Relative RMS end-point errors of the deterministic plan ``tables`` on every probe."""
        if tables.stochastic:
            raise ValueError("probe errors compare with the deterministic flow; pass a lam = 0 plan")
        ts = tables.ts
        if not (np.isclose(ts[0], self.t_start) and np.isclose(ts[-1], self.t_end)):
            raise ValueError(f"the plan's grid runs from {ts[0]} to {ts[-1]}; the probes from {self.t_start} "
                             f"to {self.t_end}")
        output = tables.info.get("output", "eps_R")
        n, count = self.problem.size, len(self.probes)
        start = np.stack([pr.start for pr in self.probes])  # (S, n, B): all probes run in one recursion
        points = start.shape[-1]

        def network(k, u):
            states = u[0].reshape(n, count, points).transpose(1, 0, 2)
            out = self._outputs(self._stack, float(ts[k]), states, output)
            return out.transpose(1, 0, 2).reshape(1, n, count * points)

        out, _ = run_tables(self.diffusion, self.problem, tables,
                            start.transpose(1, 0, 2).reshape(1, n, count * points), network)
        ends = out[0].reshape(n, count, points).transpose(1, 0, 2)
        errs = []
        for probe, end in zip(self.probes, ends):
            scale = max(float(np.linalg.norm(probe.end)), np.finfo(float).tiny)
            errs.append(float(np.linalg.norm(end - probe.end)) / scale if np.all(np.isfinite(end)) else np.inf)
        return np.array(errs)
