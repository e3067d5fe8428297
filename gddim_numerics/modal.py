r"""Data statistics split into independent small Gaussian problems (:func:`modal_problems`).

A linear diffusion acts on the flattened event as :math:`V\,\mathrm{blockdiag}(B_m)\,V^\top`
(:func:`~gddim_numerics.layout.basis_matrix`). Gaussian data :math:`N(\mu, S)` whose covariance is
block diagonal in a basis the diffusion's blocks commute with split into independent problems of
size ``n``, each driven by one mode ``m`` of the diffusion:

* VP/VE (``M = 1``, ``k = 1``, isotropic): the eigenbasis of :math:`S` — ``D`` scalar problems;
* CLD and dense ``k x k`` diffusions (``M = 1``): a rotation :math:`W \otimes I_k` of the copies
  (the eigenbasis of the clean covariance traced over the block axis) — ``c`` problems of size ``k``
  when it block-diagonalises :math:`S`;
* BDM (DCT basis): :math:`S` diagonal in mode coordinates (a power spectrum) — ``D`` scalar problems.

Otherwise the problem stays dense (one problem of size ``D``; ``max_dense`` bounds ``D``), or, above
that bound, :math:`S` is replaced by its block-diagonal part in mode coordinates and the split is
marked inexact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layout import basis_matrix, dense_operator
from .statistics import DataStatistics

#: Largest event size for which a covariance that does not split is kept dense.
MAX_DENSE = 256


@dataclass(frozen=True)
class ModalProblems:
    """Independent Gaussian problems ``N(mean[p], cov[p])`` (augmented sense) of size ``n``.

    Attributes
    ----------
    mode : (P,) int array or None
        Diffusion mode of each problem (``None``: dense, one problem, tables via ``dense_operator``).
    mean : (P, n) array
    cov : (P, n, n) array
    exact : bool
        False where the covariance was cut to its block diagonal to split it.
    weights : (P,) array or None
        How many data problems each problem stands for in sums over problems (``None``: one each); a
        representative of a group of nearly equal problems (the search's :func:`group_problems`) counts for all.
    flows : dict
        Cache of exact flow matrices by ``(s, t)`` (:func:`~gddim_numerics.surrogate.flow_matrix`).
    """

    mode: np.ndarray | None
    mean: np.ndarray
    cov: np.ndarray
    exact: bool
    event_shape: tuple
    weights: np.ndarray | None = None
    flows: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        """Problem size ``n``."""
        return self.mean.shape[-1]


def _split_copies(excess: np.ndarray, k: int) -> np.ndarray | None:
    """Rotation ``W`` of the copies with ``(W ⊗ I_k)^T E (W ⊗ I_k)`` block diagonal, or ``None``."""
    d = excess.shape[0]
    c = d // k
    e4 = excess.reshape(c, k, c, k)
    w = np.linalg.eigh(np.einsum("iaja->ij", e4))[1]
    rot = np.einsum("ip,iajb,jq->paqb", w, e4, w)
    off = rot.copy()
    off[np.arange(c), :, np.arange(c), :] = 0.0
    scale = max(float(np.max(np.abs(excess))), np.finfo(float).tiny)
    return w if np.max(np.abs(off)) <= 1e-10 * scale else None


def modal_problems(statistics: DataStatistics, max_dense: int = MAX_DENSE) -> ModalProblems:
    """Split ``statistics`` into independent problems (module docstring)."""
    diff, ev, d = statistics.diffusion, statistics.event_shape, statistics.dim
    m, k = diff.n_modes, diff.block_size
    v = basis_matrix(diff, ev)
    mean_modes = v.T @ statistics.mean.ravel()
    sigma0 = diff.initial_covariance  # (M, k, k)
    if statistics.mode_variances is not None:
        variances = statistics.mode_variances.ravel()
        if k == 1:
            mode = np.tile(np.arange(m), d // m)
            return ModalProblems(mode, mean_modes[:, None], variances[:, None, None], True, ev)
        cov = np.broadcast_to(sigma0[0], (d // k, k, k)).copy()
        idx = np.arange(k)
        cov[:, idx, idx] = variances.reshape(-1, k)
        return ModalProblems(np.zeros(d // k, dtype=int), mean_modes.reshape(-1, k), cov, True, ev)
    s0_dense = dense_operator(diff, sigma0, ev)
    excess = v.T @ (statistics.dense_cov - s0_dense) @ v
    if m > 1:  # DCT basis, k = 1: split only when S is diagonal in mode coordinates
        diag = np.diagonal(excess).copy()
        off = np.max(np.abs(excess - np.diag(diag)))
        exact = off <= 1e-12 * max(float(np.max(np.abs(excess))), np.finfo(float).tiny)
        if not exact and d <= max_dense:
            return _dense(statistics)
        mode = np.tile(np.arange(m), d // m)
        variances = diag + np.tile(sigma0[:, 0, 0], d // m)
        return ModalProblems(mode, mean_modes[:, None], variances[:, None, None], bool(exact), ev)
    if k == 1:
        lam, w = np.linalg.eigh(excess)
        return ModalProblems(np.zeros(d, dtype=int), (w.T @ mean_modes)[:, None],
                             (np.maximum(lam, 0.0) + sigma0[0, 0, 0])[:, None, None], True, ev)
    w = _split_copies(excess, k)
    if w is None and d <= max_dense:
        return _dense(statistics)
    c = d // k
    exact = w is not None
    if w is None:
        w = np.eye(c)
    rot = np.einsum("ip,iajb,jq->paqb", w, excess.reshape(c, k, c, k), w)
    diag_blocks = rot[np.arange(c), :, np.arange(c), :] + sigma0[0]
    mean = w.T @ mean_modes.reshape(c, k)
    return ModalProblems(np.zeros(c, dtype=int), mean, 0.5 * (diag_blocks + np.swapaxes(diag_blocks, -1, -2)), exact, ev)


def _dense(statistics: DataStatistics) -> ModalProblems:
    return ModalProblems(None, statistics.mean.reshape(1, -1), np.asarray(statistics.dense_cov)[None], True,
                         statistics.event_shape)


def blocks(problems: ModalProblems, diffusion, table: np.ndarray) -> np.ndarray:
    """Per-problem blocks ``(..., P or 1, n, n)`` of a table ``(..., M, k, k)``."""
    if problems.mode is None:
        return dense_operator(diffusion, table, problems.event_shape)[..., None, :, :]
    if diffusion.n_modes == 1:
        return table
    return np.take(table, problems.mode, axis=-3)


def group_problems(problems: ModalProblems, diffusion, tol: float) -> ModalProblems:
    r"""Nearly equal problems of one diffusion mode merged into weighted representatives.

    Problems are taken in order of mode and excess trace; a group grows while the next problem's excess
    covariance :math:`E_i = S_i - \Sigma_{0}` is within ``tol`` of the group's first,
    :math:`\|E_i - E_1\|_F \le \mathrm{tol}\,\|E_1\|_F`, and (``n > 1``) its mean points the same way,
    :math:`\|\hat\mu_i\hat\mu_i^\top - \hat\mu_1\hat\mu_1^\top\|_F \le \mathrm{tol}`. A group of ``g`` problems
    becomes one of weight ``g`` with the average covariance :math:`\bar S` and a mean of the group's second
    moment, :math:`\bar\mu = \sqrt{\operatorname{tr}M}\,v` (``v`` the top eigenvector of
    :math:`M = \tfrac1g\sum\mu_i\mu_i^\top`). For any affine sampler the summed error terms of the group,
    :math:`\sum_i \operatorname{tr}(A E_i A^\top)` and :math:`\sum_i\|J\mu_i\|^2`, are then exactly
    :math:`g\operatorname{tr}(A\bar EA^\top)` and :math:`g\|J\bar\mu\|^2` (means exactly parallel); the only
    approximation is that every member runs with the exact network of :math:`\bar S`, an error of order ``tol``.
    """
    count = problems.cov.shape[0]
    if problems.mode is None or count < 2 or problems.weights is not None:
        return problems
    excess = problems.cov - blocks(problems, diffusion, diffusion.initial_covariance)
    norms = np.linalg.norm(excess, axis=(-2, -1))
    mean_norm = np.linalg.norm(problems.mean, axis=-1)
    unit = problems.mean / np.where(mean_norm > 0, mean_norm, 1.0)[:, None]
    order = np.lexsort((np.trace(excess, axis1=-2, axis2=-1), problems.mode))
    groups, current = [], [order[0]]
    for i in order[1:]:
        first = current[0]
        close = (problems.mode[i] == problems.mode[first]
                 and np.linalg.norm(excess[i] - excess[first]) <= tol * norms[first]
                 and (problems.size == 1
                      or np.linalg.norm(np.outer(unit[i], unit[i]) - np.outer(unit[first], unit[first])) <= tol))
        if close:
            current.append(i)
        else:
            groups.append(current)
            current = [i]
    groups.append(current)
    if len(groups) == count:
        return problems
    means, covs = [], []
    for g in groups:
        moment = np.einsum("ga,gb->ab", problems.mean[g], problems.mean[g]) / len(g)
        top = np.ones(1) if problems.size == 1 else np.linalg.eigh(moment)[1][:, -1]  # n = 1: the direction is 1
        means.append(np.sqrt(max(float(np.trace(moment)), 0.0)) * top)
        covs.append(problems.cov[g].mean(axis=0))
    return ModalProblems(np.array([problems.mode[g[0]] for g in groups]), np.array(means), np.array(covs),
                         problems.exact, problems.event_shape, np.array([float(len(g)) for g in groups]))
