r"""Exponential-integrator weights by composite Gauss–Legendre quadrature.

For a step from ``s = ts[k]`` to ``t = ts[k+1]`` with history nodes
``ts[k], ts[k-1], ..., ts[k-q+1]`` (newest first; a corrector, ``lead=1``, starts one node later at
``ts[k+1]``) the weights are

.. math::  W_{kj} = \int_s^t \mathcal K(t, \tau)\,\ell_{kj}(\varphi(\tau))\,d\tau,
           \qquad \ell_{kj}(\varphi) = \prod_{i \ne j}\frac{\varphi - \varphi(t_{k-i})}{\varphi(t_{k-j}) - \varphi(t_{k-i})},

for a matrix kernel :math:`\mathcal K` (e.g. :math:`\tfrac12\Psi(t,\tau)G_\tau G_\tau^\top R_\tau^{-\top}`)
and an extrapolation variable :math:`\varphi` (``t`` by default). The integral is oriented
(:math:`d\tau < 0` when ``t < s``). Each step is split into panels whose break points are
geometric towards the smaller endpoint (ratio <= ``max_ratio``, at least ``min_panels``) with
``n_nodes`` Gauss–Legendre nodes per panel, which integrates the :math:`\tau^{-1/2}`-type layers
at small ``t`` to ~1e-14 relative. The diffusion's ``breakpoints`` (times where a coefficient is
not smooth, e.g. the knots of a tabulated schedule's spline) that fall inside a step are panel
edges too: each panel then holds a smooth integrand and the rule converges geometrically again,
instead of algebraically across a jump in a derivative.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from functools import lru_cache

import numpy as np
from numpy.polynomial.legendre import leggauss


@lru_cache(maxsize=8)
def gauss_legendre(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on ``[-1, 1]`` (``numpy.polynomial.legendre.leggauss``, computed once per size)."""
    x, w = leggauss(n_nodes)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def check_breakpoints(breakpoints) -> np.ndarray:
    """``breakpoints`` as a strictly increasing, finite float64 1-D array (empty for ``None``)."""
    if breakpoints is None:
        return np.empty(0)
    bp = np.asarray(breakpoints, dtype=np.float64)
    if bp.ndim != 1 or not np.all(np.isfinite(bp)) or np.any(np.diff(bp) <= 0):
        raise ValueError("breakpoints must be a 1-D array of finite, strictly increasing times")
    return bp


def interior_breakpoints(lo: np.ndarray, hi: np.ndarray, breakpoints: np.ndarray) -> np.ndarray:
    """Count of the sorted ``breakpoints`` strictly inside each interval ``(lo[i], hi[i])`` (binary search)."""
    return np.searchsorted(breakpoints, hi, side="left") - np.searchsorted(breakpoints, lo, side="right")


def panel_nodes(a: np.ndarray, b: np.ndarray, n_nodes: int = 20, max_ratio: float = 1.5,
                min_panels: int = 2, refine: int = 1, breakpoints=None) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and oriented weights for :math:`\\int_a^b` on each of the intervals ``(a[i], b[i])``.

    Returns arrays of shape ``(n, refine * (P + K) * n_nodes)``: one common count ``P`` of panels
    geometric from the smaller endpoint (ratio <= ``max_ratio``, at least ``min_panels``), split
    further at the sorted ``breakpoints`` strictly inside each interval (``K``: the most any
    interval holds; an interval with fewer gets zero-width panels, whose weights are zero), and
    each panel cut into ``refine`` geometric pieces. Only the breakpoints inside an interval are
    looked at (a binary search per interval), so a long table of them costs little.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    if np.any(lo <= 0):
        raise ValueError("quadrature intervals must lie in t > 0")
    n_panels = int(max(min_panels, np.max(np.ceil(np.log(hi / lo) / np.log(max_ratio)))))
    frac = np.linspace(0.0, 1.0, n_panels + 1)
    # geometric break points from lo to hi, then the breakpoints inside
    edges = lo[:, None] * (hi / lo)[:, None] ** frac[None, :]
    bp = check_breakpoints(breakpoints)
    count = interior_breakpoints(lo, hi, bp)
    if count.max(initial=0) > 0:
        slot = np.arange(count.max())
        idx = np.minimum(np.searchsorted(bp, lo, side="right")[:, None] + slot, bp.size - 1)
        knots = np.where(slot < count[:, None], bp[idx], hi[:, None])  # padding: zero-width panels at hi
        edges = np.sort(np.concatenate([edges, knots], axis=1), axis=1)
    if refine > 1:  # every panel split into `refine` geometric pieces (without breakpoints: geometric from lo to hi)
        left, ratio = edges[:, :-1, None], (edges[:, 1:] / edges[:, :-1])[..., None]
        inner = (left * ratio ** (np.arange(refine) / refine)).reshape(len(a), -1)
        edges = np.concatenate([inner, edges[:, -1:]], axis=1)
    x, w = gauss_legendre(n_nodes)
    left, right = edges[:, :-1], edges[:, 1:]
    half = 0.5 * (right - left)
    nodes = (0.5 * (right + left))[..., None] + half[..., None] * x
    weights = half[..., None] * w
    sign = np.where(b >= a, 1.0, -1.0)[:, None]
    return nodes.reshape(len(a), -1), sign * weights.reshape(len(a), -1)


def lagrange_basis(phi_tau: np.ndarray, phi_nodes: np.ndarray) -> np.ndarray:
    """Lagrange basis polynomials on ``phi_nodes (n, q)`` evaluated at ``phi_tau (n, m)`` -> ``(n, q, m)``."""
    n, q = phi_nodes.shape
    out = np.ones((n, q) + phi_tau.shape[1:])
    for j in range(q):
        for i in range(q):
            if i != j:
                out[:, j] *= (phi_tau - phi_nodes[:, i, None]) / (phi_nodes[:, j] - phi_nodes[:, i])[:, None]
    return out


class KernelValues:
    """Kernel values at quadrature nodes kept for reuse: a bounded store shared by many table builds.

    A step's nodes depend only on its end points, the panel rule and the refinement, not on the order,
    the extrapolation variable or predictor/corrector, so builds on one grid (every scheme of a family,
    a predictor and its corrector) and on grids that share steps integrate the same kernel values. Rows
    are keyed by the kernel's ``tag``, the step's end time and the exact node times, so a value is reused
    only where it would be recomputed bit for bit. The least recently used rows go first beyond
    ``max_bytes``.
    """

    def __init__(self, max_bytes: int = 64 * 2**20):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an integer >= 0; got {max_bytes!r}")
        self.max_bytes, self.bytes = int(max_bytes), 0
        self._rows: OrderedDict = OrderedDict()

    def rows(self, kernel: Callable, tag: Hashable, t_end: np.ndarray, tau: np.ndarray,
             value_shape: tuple) -> np.ndarray:
        """``kernel(t_end[i], tau[i, j])`` for every step row ``i`` and node ``j``, ``tau.shape + value_shape``;
        only the rows not kept are evaluated (in one call)."""
        keys = [(tag, float(t), row.tobytes()) for t, row in zip(t_end, tau)]
        missing = [i for i, key in enumerate(keys) if key not in self._rows]
        if missing:
            new_tau = tau[missing]
            t_to = np.broadcast_to(t_end[missing][:, None], new_tau.shape)
            values = kernel(t_to.ravel(), new_tau.ravel()).reshape(new_tau.shape + value_shape)
            for i, row in zip(missing, values):
                self._rows[keys[i]] = row.copy()  # its own memory, so that evicting it frees it
                self.bytes += row.nbytes
        out = np.stack([self._rows[key] for key in keys])
        for key in keys:
            self._rows.move_to_end(key)
        while self.bytes > self.max_bytes and self._rows:
            self.bytes -= self._rows.popitem(last=False)[1].nbytes
        return out


def exponential_weights(
    kernel: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ts: np.ndarray,
    orders: np.ndarray,
    variable: Callable[[np.ndarray], np.ndarray] | None = None,
    n_nodes: int = 20,
    max_ratio: float = 1.5,
    chunk_values: int = 4_000_000,
    tol: float = 1e-13,
    max_refine: int = 64,
    lead: int = 0,
    breakpoints=None,
    kernel_values: tuple[KernelValues, Hashable] | None = None,
) -> np.ndarray:
    """Weights ``W (N, q_max, M, k, k)`` for every step of the grid ``ts``.

    Parameters
    ----------
    kernel : callable
        ``kernel(t, tau)`` with equal-shape 1-D arrays returns ``(n, M, k, k)``.
    ts : (N + 1,) array
        Decreasing grid; step ``k`` goes from ``ts[k]`` to ``ts[k + 1]``.
    orders : (N,) int array
        Number of Lagrange nodes ``q_k <= k + 1 + lead`` used by step ``k``; slots ``j >= q_k`` are zero.
    variable : callable, optional
        Extrapolation variable :math:`\\varphi` (strictly monotone); identity by default.
    tol : float
        Each step's panels are doubled until two successive refinements agree to ``tol`` relative
        to the step's largest weight (at most ``max_refine`` times the initial panel count).
    lead : int
        The nodes of step ``k`` are ``ts[k + lead], ts[k + lead - 1], ...`` (newest first): ``0`` for
        a predictor (nodes from the step's start back), ``1`` for a corrector whose newest node is the
        step's end ``ts[k + 1]`` (docs/math §3.9).
    breakpoints : 1-D array, optional
        Sorted times where the kernel is not smooth (``LinearDiffusion.breakpoints``); those inside
        a step are extra panel edges, so each step converges to ``tol`` (a PCHIP-interpolated
        schedule's second derivative jumps at its knots: without them ~1e-9 after 64x refinement).
    kernel_values : (KernelValues, tag), optional
        A store of kernel values and the tag that names ``kernel`` in it: node rows kept there are
        reused, new ones are added (the weights are the same bit for bit).
    """
    phi = (lambda t: t) if variable is None else variable
    ts = np.asarray(ts, dtype=np.float64)
    orders = np.asarray(orders, dtype=int)
    n_steps, q_max = len(orders), int(orders.max())
    if lead not in (0, 1):
        raise ValueError(f"lead must be 0 (predictor) or 1 (corrector); got {lead!r}")
    if n_steps != len(ts) - 1 or np.any(orders < 1) or np.any(orders > np.arange(1, n_steps + 1) + lead):
        raise ValueError("orders: step k can use between 1 and k + 1 + lead grid nodes")
    value_shape = kernel(ts[1:2], ts[0:1]).shape[1:]  # (M, k, k)
    out = np.zeros((n_steps, q_max) + value_shape)
    lo = np.minimum(ts[:-1], ts[1:])
    ratio = np.maximum(ts[:-1], ts[1:]) / np.where(lo > 0, lo, np.nan)
    base_panels = np.where(lo > 0, np.ceil(np.log(ratio) / np.log(max_ratio)), 0)
    bp = check_breakpoints(breakpoints)
    # binary bucket of the count of breakpoints inside: 0, 1, 2-3, 4-7, ...
    inside = np.frexp(interior_breakpoints(lo, np.maximum(ts[:-1], ts[1:]), bp))[1]
    # steps of one order, one panel count and one bucket of breakpoints inside are integrated
    # together (no step gets more than twice the panels it needs, and there are few groups)
    groups = sorted({(int(q), int(p), int(c)) for q, p, c in zip(orders, base_panels, inside)})
    for q, p, c in groups:
        steps = np.flatnonzero((orders == q) & (base_panels == p) & (inside == c))
        coarse = _weights(kernel, phi, ts, steps, q, n_nodes, max_ratio, 1, chunk_values, lead, bp, value_shape,
                          kernel_values)
        refine = 2
        while steps.size:
            fine = _weights(kernel, phi, ts, steps, q, n_nodes, max_ratio, refine, chunk_values, lead, bp,
                            value_shape, kernel_values)
            axes = tuple(range(1, fine.ndim))
            scale = np.max(np.abs(fine), axis=axes)
            err = np.max(np.abs(fine - coarse), axis=axes)
            done = err <= tol * np.maximum(scale, np.finfo(float).tiny)
            if refine >= max_refine:
                if np.any(err > 1e-12 * np.maximum(scale, np.finfo(float).tiny)):
                    warnings.warn(f"exponential weights converged only to {np.max(err / scale):.2e} relative "
                                  f"after {refine}x panel refinement", RuntimeWarning, stacklevel=2)
                done[:] = True
            out[steps[done], :q] = fine[done]
            steps, coarse, refine = steps[~done], fine[~done], 2 * refine
    return out


def _weights(kernel, phi, ts, steps, q, n_nodes, max_ratio, refine, chunk_values, lead, breakpoints, value_shape,
             kernel_values=None):
    """Quadrature of every step in ``steps`` (all of order ``q``) at one panel refinement; the kernel's values
    have shape ``value_shape`` ``(M, k, k)``, a tuple (``kernel_values``: see :func:`exponential_weights`)."""
    tau, w = panel_nodes(ts[steps], ts[steps + 1], n_nodes=n_nodes, max_ratio=max_ratio, refine=refine,
                         breakpoints=breakpoints)
    out = np.empty((len(steps), q) + value_shape)
    per_step = tau.shape[1] * int(np.prod(value_shape))
    chunk = max(1, chunk_values // max(per_step, 1))
    hist_idx = steps[:, None] + lead - np.arange(q)[None, :]  # newest first
    for c0 in range(0, len(steps), chunk):
        sl = slice(c0, c0 + chunk)
        st, tt, ww = steps[sl], tau[sl], w[sl]
        if kernel_values is None:
            t_to = np.broadcast_to(ts[st + 1][:, None], tt.shape)
            kern = kernel(t_to.ravel(), tt.ravel()).reshape(tt.shape + value_shape)
        else:
            store, tag = kernel_values
            kern = store.rows(kernel, tag, ts[st + 1], tt, value_shape)
        ell = lagrange_basis(phi(tt), phi(ts[hist_idx[sl]]))  # (n, q, m)
        flat = kern.reshape(kern.shape[:2] + (-1,))  # (n, m, M k k): sum over the nodes m as one product
        out[sl] = ((ell * ww[:, None, :]) @ flat).reshape((len(st), q) + value_shape)
    return out
