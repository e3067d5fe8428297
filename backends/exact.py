"""The exact networks of :mod:`gddim_numerics.problems` (score, ε, data prediction, log density) on the caller's arrays.

A problem keeps its float64 tables on the host (per time, LRU-cached); here they are moved to the
state's namespace, device and dtype, and the Gaussian-mixture score is evaluated with array-API calls.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as array_device


def convert_tables(tables: tuple, xp: Any, dev: Any, dtype: Any) -> tuple:
    """Host tables as arrays of ``xp`` on ``dev`` in ``dtype``."""
    return tuple(xp.asarray(a, dtype=dtype, device=dev) for a in tables)


def _evaluate(problem: Any, x: Any, t: Any, name: str | None, kernel) -> Any:
    """Run ``kernel(xp, rows, density_tables, name_tables)`` on ``x`` flattened to ``(B, D)`` rows."""
    xp = array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must have a real floating dtype; got {x.dtype}")
    problem._check_shape(tuple(x.shape), "x")
    t = problem._check_time(t)
    dev = array_device(x)
    density = problem._array_tables("density", t, xp, dev, x.dtype)
    extra = () if name is None else problem._array_tables(name, t, xp, dev, x.dtype)
    return kernel(xp, xp.reshape(x, (-1, problem.dim)), density, extra)


def state_output(problem: Any, x: Any, t: Any, name: str | None, kernel: str) -> Any:
    """The exact network ``KERNELS[kernel]`` at states ``x``, in ``x``'s shape, namespace, device and dtype."""
    out = _evaluate(problem, x, t, name, KERNELS[kernel])
    return array_namespace(x).reshape(out, tuple(x.shape))


def log_density(problem: Any, x: Any, t: Any) -> Any:
    """:math:`\\log p_t(x)` over ``x``'s batch axes."""
    logp = _evaluate(problem, x, t, None, lambda xp, u, density, _: mixture_score(xp, u, *density)[1])
    batch = tuple(x.shape)[: len(x.shape) - len(problem.event_shape)]
    return array_namespace(x).reshape(logp, batch)


def mixture_score(xp, u, means, chol_inv, log_norm):
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
    return mixture_score(xp, u, *density)[0]


def _noise_output(xp, u, density, factor):
    r""":math:`\epsilon_K = -K^\top s`, as rows ``-s K``."""
    return -xp.matmul(mixture_score(xp, u, *density)[0], factor[0])


def _data_output(xp, u, density, tables):
    r""":math:`D = \Psi(0,t)(u + \Sigma_t s)`, as rows ``(u + s Σ_t) Ψ(t,0)^{-T}``."""
    sigma, psi_inv_t = tables
    score = mixture_score(xp, u, *density)[0]
    return xp.matmul(u + xp.matmul(score, sigma), psi_inv_t)


#: The exact outputs by name: ``kernel(xp, rows, density_tables, extra_tables)``.
KERNELS = {"score": _score_output, "noise": _noise_output, "data": _data_output}
