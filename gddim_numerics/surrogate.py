r"""Surrogate error of a sampler plan: its exact error on Gaussian data, without sampling.

On Gaussian data :math:`N(\mu, S)` (a :class:`~gddim_numerics.statistics.DataStatistics`) the exact
network output is affine in the state, so every :class:`~gddim_numerics.tables.StepTables` sampler
maps its start state affinely, :math:`u_{out} = P u_T + p` (+ noise for :math:`\lambda > 0`), and
so does the exact probability flow, :math:`u^\ast = m_{end} + \Phi(u_T - m_T)` (docs/math §8.2). For
:math:`u_T \sim N(m_T, C_T)`, the exact marginal at the grid's first time:

.. math::
    \mathbb E\|u_{out} - u^\ast\|^2 = \operatorname{tr}\big((P-\Phi)C_T(P-\Phi)^\top\big)
        + \|P m_T + p - m_{end}\|^2,\qquad
    \mathbb E\|u^\ast\|^2 = \operatorname{tr}(\Phi C_T\Phi^\top) + \|m_{end}\|^2 .

:func:`surrogate_error` returns the relative root-mean-square pathwise error
:math:`\sqrt{\mathbb E\|u_{out}-u^\ast\|^2 / \mathbb E\|u^\ast\|^2}` (``measure="pathwise"``) or the
relative 2-Wasserstein distance of the output law :math:`N(\bar u, \Gamma)` to the exact marginal
:math:`N(m_{end}, C_{end})` (``measure="law"``, the default for stochastic plans):

.. math:: W_2^2 = \|\bar u - m_{end}\|^2 + \operatorname{tr}\big(\Gamma + C_{end}
          - 2(C_{end}^{1/2}\Gamma C_{end}^{1/2})^{1/2}\big).

The work is split into the independent problems of :func:`~gddim_numerics.modal.modal_problems`
(per mode, per eigen-direction, per ``k x k`` block; dense only when unavoidable) and the affine maps
are propagated through the tables per problem: :math:`O(P\,n^2(n+1)\,q\,N)` for ``P`` problems of
size ``n``. :math:`\Phi` is :math:`\sqrt{C_{end}/C_T}` for ``n = 1`` and the transition matrix of
:math:`\dot Q = (F + \tfrac12GG^\top C_t^{-1})Q` otherwise (DOP853, rtol 1e-11).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .diffusion import batched_inverse, batched_transpose
from .modal import ModalProblems, blocks, modal_problems
from .outputs import factor
from .statistics import DataStatistics
from .tables import StepTables

MEASURES = ("pathwise", "law")


def _apply(b, x, n):
    """Blocks ``b (..., n, n)`` times linear quantities ``x (P, n, 2n)``."""
    return b * x if n == 1 else b @ x


def _marginals(diffusion, problems: ModalProblems, t):
    r"""Mean ``(T, P, n)``, covariance ``(T, P, n, n)`` and :math:`\Psi(t,0)` blocks of the data's marginals."""
    psi0 = blocks(problems, diffusion, diffusion.mean_coefficient(t))
    sig = blocks(problems, diffusion, diffusion.covariance(t))
    excess = problems.cov - blocks(problems, diffusion, diffusion.initial_covariance)
    cov = psi0 @ excess @ batched_transpose(psi0) + sig
    mean = (psi0 @ problems.mean[..., None])[..., 0]
    return mean, 0.5 * (cov + batched_transpose(cov)), psi0


def exact_output(diffusion, problems: ModalProblems, t, output: str):
    r"""``(W, O)`` with the exact network output ``y = W u + O mu`` at times ``t`` (``(T, P, n, n)`` each).

    :math:`W = K_t^\top C_t^{-1}` (ε), :math:`-C_t^{-1}` (score), :math:`\Psi(0,t)(I - \Sigma_tC_t^{-1})`
    (data); :math:`O = -W\Psi(t,0)`, plus :math:`I` for the data prediction.
    """
    _, cov, psi0 = _marginals(diffusion, problems, t)
    c_inv = batched_inverse(cov)
    if output in ("eps_R", "eps_L"):
        gain = batched_transpose(blocks(problems, diffusion, factor(diffusion, t, output[-1]))) @ c_inv
    elif output == "score":
        gain = -c_inv
    elif output == "data":
        sig = blocks(problems, diffusion, diffusion.covariance(t))
        eye = np.eye(problems.size)
        gain = batched_inverse(psi0) @ (eye - sig @ c_inv)
        return gain, eye - gain @ psi0
    else:
        raise ValueError(f"surrogate_error supports network outputs eps_R, eps_L, score and data; got {output!r}")
    return gain, -gain @ psi0


def flow_matrix(diffusion, problems: ModalProblems, s: float, t: float) -> np.ndarray:
    r"""Exact probability-flow matrix :math:`\Phi(t, s)` of every problem, ``(P, n, n)``."""
    key = (id(diffusion), s, t)
    if key not in problems.flows:
        problems.flows[key] = _flow_matrix(diffusion, problems, s, t)
    return problems.flows[key]


def prefetch_flows(diffusion, problems: ModalProblems, scales, s: float, t: float) -> None:
    """Compute the flow matrices of the component problems (:func:`component_problems`) of every
    ``scales`` member in one ODE solve, cached where :func:`flow_matrix` looks (their blocks share the
    diffusion's coefficients, so one solve costs about as much as one member's)."""
    if problems.size == 1:  # scalar flows are closed forms: nothing to solve
        return
    sets = member_problems(problems, diffusion, scales)
    key = (id(diffusion), s, t)
    todo = list({id(p): p for p in sets if key not in p.flows}.values())
    if len(todo) < 2:  # nothing to share
        return
    joined = stack_problems(todo)
    phi = _flow_matrix(diffusion, joined, s, t)
    count = problems.cov.shape[0]
    for i, p in enumerate(todo):
        p.flows[key] = phi[i * count:(i + 1) * count]


def _flow_matrix(diffusion, problems: ModalProblems, s: float, t: float) -> np.ndarray:
    n = problems.size
    if s == t:
        return np.broadcast_to(np.eye(n), problems.cov.shape).copy()
    _, cov, _ = _marginals(diffusion, problems, np.array([s, t]))
    if n == 1:
        return np.sqrt(cov[1] / cov[0])
    from scipy.integrate import solve_ivp  # only for k > 1 blocks (keeps the package import light)

    p = problems.cov.shape[0]

    def rhs(tau, y):
        tt = np.array([tau])
        f = blocks(problems, diffusion, diffusion.drift(tt))[0]
        gg = blocks(problems, diffusion, diffusion.diffusion(tt))[0]
        c = _marginals(diffusion, problems, tt)[1][0]
        a = f + 0.5 * gg @ batched_inverse(c)
        return (a @ y.reshape(p, n, n)).ravel()

    y0 = np.broadcast_to(np.eye(n), (p, n, n)).ravel()
    sol = solve_ivp(rhs, (s, t), y0, method="DOP853", rtol=1e-11, atol=1e-13)
    if not sol.success:
        raise RuntimeError(f"exact-flow ODE solve failed: {sol.message}")
    return sol.y[:, -1].reshape(p, n, n)


def propagate(diffusion, problems: ModalProblems, tables: StepTables):
    """Linear map ``X (P, n, 2n)`` of the plan's output on (start state, data mean), ``[T | K]``, and the
    covariance ``(P, n, n)`` its noise adds (zero for deterministic plans)."""
    n = problems.size
    p = problems.cov.shape[0]
    gain, offset = exact_output(diffusion, problems, tables.ts[:-1], tables.info.get("output", "eps_R"))

    def network(k, u):
        y = gain[k] @ u
        y[..., n:] += offset[k]
        return y

    u = np.zeros((p, n, 2 * n))
    u[:, :, :n] = np.eye(n)
    return run_tables(diffusion, problems, tables, u, network, gain)


def run_tables(diffusion, problems: ModalProblems, tables: StepTables, u: np.ndarray, network, gain=None):
    """Run the recursion of ``tables`` per problem from ``u (P, n, B)`` with the network ``network(k, u)``
    (the output at ``tables.ts[k]``, same shape as ``u``); returns the end state and the covariance
    ``(P, n, n)`` the noise adds (needs the output's linear ``gain`` per step; zero for deterministic plans)."""
    n = problems.size

    def blk(name):
        tab = getattr(tables, name)
        return None if tab is None else blocks(problems, diffusion, tab)

    state, hist, a_in, b_in = blk("state"), blk("history"), blk("input_state"), blk("input_output")
    corr, rho, noise = blk("correction"), blk("reanchor"), blk("noise")
    if tables.stochastic and (tables.memory > 1 or tables.corrects):
        raise ValueError("surrogate_error: stochastic plans with history or corrections are not supported")
    if noise is not None and gain is None:
        raise ValueError("run_tables: stochastic tables need the output's linear gain")
    noise_cov = np.zeros((problems.cov.shape[0], n, n))
    history = []
    for k in range(tables.n_steps):
        y = network(k, u)
        h = y if b_in is None else _apply(b_in[k], y, n)
        if a_in is not None:
            h = h + _apply(a_in[k], u, n)
        count = 0 if corr is None else int(tables.correction_orders[k])
        if count:
            delta = _apply(corr[k, 0], h, n)
            for i in range(1, count):
                delta = delta + _apply(corr[k, i], history[i - 1], n)
            u = u + delta
            if rho is not None:
                h = h + _apply(rho[k], delta, n)
        nxt = _apply(state[k], u, n) + _apply(hist[k, 0], h, n)
        for j in range(1, int(tables.orders[k])):
            nxt = nxt + _apply(hist[k, j], history[j - 1], n)
        if noise is not None:
            dh = gain[k] if b_in is None else b_in[k] @ gain[k]
            lin = state[k] + hist[k, 0] @ (dh if a_in is None else dh + a_in[k])
            noise_cov = lin @ noise_cov @ batched_transpose(lin) + noise[k] @ batched_transpose(noise[k])
        history = [h] + history[: tables.memory - 1]
        u = nxt
    return u, noise_cov


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    lam, v = np.linalg.eigh(0.5 * (a + batched_transpose(a)))
    return (v * np.sqrt(np.maximum(lam, 0.0))[..., None, :]) @ batched_transpose(v)


def component_problems(problems: ModalProblems, diffusion, c: float) -> ModalProblems:
    """The problems with clean covariance ``c (S - Sigma_0)`` (cached on ``problems``)."""
    key = ("components", id(diffusion), float(c))
    if key not in problems.flows:
        s0 = blocks(problems, diffusion, diffusion.initial_covariance)
        problems.flows[key] = replace(problems, cov=s0 + c * (problems.cov - s0), flows={})
    return problems.flows[key]


def member_problems(problems: ModalProblems, diffusion, scales) -> list[ModalProblems]:
    """The problems of every ``component_scale`` of ``scales``: ``problems`` itself for 1, else
    :func:`component_problems`."""
    return [problems if float(c) == 1.0 else component_problems(problems, diffusion, c) for c in scales]


def surrogate_error(plan, statistics: DataStatistics, measure: str | None = None,
                    problems: ModalProblems | None = None, component_scale: float = 1.0) -> float:
    r"""Relative error of ``plan`` (a ``GDDIM`` plan or its ``StepTables``) on Gaussian data (module docstring).

    Parameters
    ----------
    plan : GDDIM or StepTables
        Any affine sampler; its grid fixes ``t_start = ts[0]`` and ``t_end = ts[-1]``.
    statistics : DataStatistics
        Mean and covariance of the data (for the plan's diffusion).
    measure : {"pathwise", "law"}, optional
        Default: ``"law"`` for stochastic plans, else ``"pathwise"``.
    problems : ModalProblems, optional
        The split of ``statistics`` (:func:`~gddim_numerics.modal.modal_problems`), to reuse it.
    component_scale : float in (0, 1]
        ``c < 1``: the error averaged over components :math:`N(\mu', \Sigma_0 + c(S - \Sigma_0))`,
        :math:`\mu' \sim N(\mu, (1 - c)(S - \Sigma_0))`, each run with its own exact network — a mixture
        of sharp, well-separated components with the data's overall moments. With the mean error
        :math:`J\mu'` (exactly linear in :math:`\mu'`) the average adds :math:`\operatorname{tr}(J C_\mu J^\top)`
        to the error and :math:`\operatorname{tr}(\Psi C_\mu\Psi^\top)` to the norm. Pathwise only.
    """
    if not isinstance(statistics, DataStatistics):
        raise TypeError(f"statistics must be a DataStatistics; got {type(statistics).__name__}")
    tables = plan if isinstance(plan, StepTables) else getattr(plan, "tables", None)
    if not isinstance(tables, StepTables):
        raise TypeError(f"plan must be a GDDIM plan or StepTables; got {type(plan).__name__}")
    diffusion = statistics.diffusion
    if not isinstance(plan, StepTables) and plan.diffusion is not diffusion:
        raise ValueError("statistics were made for another diffusion than the plan's")
    measure = ("law" if tables.stochastic else "pathwise") if measure is None else measure
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}; got {measure!r}")
    if measure == "pathwise" and tables.stochastic:
        raise ValueError("measure='pathwise' compares with the deterministic flow; use measure='law' for lam > 0")
    c = float(component_scale)
    if not 0 < c <= 1:
        raise ValueError(f"component_scale must lie in (0, 1]; got {component_scale!r}")
    if c < 1 and measure != "pathwise":
        raise ValueError("component_scale < 1 is defined for measure='pathwise' only")
    problems = modal_problems(statistics) if problems is None else problems
    if c < 1:
        problems = component_problems(problems, diffusion, c)
    x, noise_cov = propagate(diffusion, problems, tables)
    return _relative_error(diffusion, problems, tables, x, noise_cov, measure, c)


def ensemble_errors(tables: StepTables, statistics: DataStatistics, scales, problems: ModalProblems | None = None,
                    ) -> np.ndarray:
    r"""Pathwise :func:`surrogate_error` of the deterministic ``tables`` at every ``component_scale`` of ``scales``.

    The members' problems (:func:`component_problems`) are stacked and the tables run once over all of them;
    each member's error is then formed from its own rows, exactly as :func:`surrogate_error` forms it.
    """
    if not isinstance(tables, StepTables):
        raise TypeError(f"tables must be StepTables (a plan's .tables); got {type(tables).__name__}")
    if not isinstance(statistics, DataStatistics):
        raise TypeError(f"statistics must be a DataStatistics; got {type(statistics).__name__}")
    if tables.stochastic:
        raise ValueError("ensemble_errors compares with the deterministic flow; pass a lam = 0 plan")
    scales = [float(c) for c in np.atleast_1d(np.asarray(scales, dtype=np.float64))]
    if not scales or not all(0 < c <= 1 for c in scales):
        raise ValueError(f"scales must be component scales in (0, 1]; got {scales!r}")
    diffusion = statistics.diffusion
    problems = modal_problems(statistics) if problems is None else problems
    sets = member_problems(problems, diffusion, scales)
    joined = stack_problems(sets)
    x, _ = propagate(diffusion, joined, tables)
    rows = np.cumsum([0] + [p.cov.shape[0] for p in sets])
    return np.array([_relative_error(diffusion, p, tables, x[a:b], None, "pathwise", c)
                     for p, c, a, b in zip(sets, scales, rows[:-1], rows[1:])])


def stack_problems(sets) -> ModalProblems:
    """One :class:`ModalProblems` holding the problems of every member of ``sets`` (same size and layout), in order."""
    first = sets[0]
    if len(sets) == 1:
        return first
    mode = None if first.mode is None else np.concatenate([p.mode for p in sets])
    weights = None if first.weights is None else np.concatenate([p.weights for p in sets])
    return replace(first, mode=mode, mean=np.concatenate([p.mean for p in sets]),
                   cov=np.concatenate([p.cov for p in sets]), weights=weights, flows={})


def _relative_error(diffusion, problems: ModalProblems, tables: StepTables, x, noise_cov, measure: str,
                    c: float) -> float:
    """The relative error of :func:`surrogate_error` from the propagated map ``x`` of ``problems`` (component
    problems of scale ``c``)."""
    n = problems.size
    s, t = float(tables.ts[0]), float(tables.ts[-1])
    mean, cov, psi0 = _marginals(diffusion, problems, np.array([s, t]))
    gain = x[..., :n]
    jac = gain @ psi0[0] + x[..., n:] - psi0[1]  # mean error = jac @ mu
    mean_err = (jac @ problems.mean[..., None])[..., 0]
    phi = flow_matrix(diffusion, problems, s, t)

    weights = problems.weights  # problems standing for several data problems count that many times

    def total(per_problem):
        return np.sum(per_problem) if weights is None else np.sum(weights * per_problem)

    def quad(a, c_mat):
        return total(np.trace(a @ c_mat @ batched_transpose(a), axis1=-2, axis2=-1))

    def squares(v):
        return np.sum(v ** 2) if weights is None else total(np.sum(v ** 2, axis=-1))

    norm2 = quad(phi, cov[0]) + squares(mean[1])
    if measure == "pathwise":
        err2 = quad(gain - phi, cov[0]) + squares(mean_err)
        if c < 1:
            spread = (1 - c) / c * (problems.cov - blocks(problems, diffusion, diffusion.initial_covariance))
            err2 += quad(jac, spread)
            norm2 += quad(psi0[1], spread)
    else:
        out_cov = gain @ cov[0] @ batched_transpose(gain) + noise_cov
        root = _psd_sqrt(cov[1])
        cross = _psd_sqrt(root @ out_cov @ root)
        err2 = squares(mean_err) + total(np.trace(out_cov + cov[1] - 2 * cross, axis1=-2, axis2=-1))
    return float(np.sqrt(max(err2, 0.0) / norm2))
