r"""Coefficients of the stochastic gDDIM step, for any :math:`\lambda \ge 0`, without a stiff ODE solve.

One stochastic step from ``s`` down to ``t < s`` (``q = 1``) needs :math:`\hat\Psi(t,s)`, the
transition of :math:`\hat F = F + \tfrac{1+\lambda^2}{2}GG^\top\Sigma^{-1}`, and the noise covariance
:math:`P` of :math:`\tfrac{dP}{d\tau} = \hat FP + P\hat F^\top - \lambda^2GG^\top`, :math:`P(s) = 0`.

**Whitened form.** With the gDDIM factor :math:`R` (:math:`\dot R = (F + \tfrac12GG^\top\Sigma^{-1})R`,
:math:`RR^\top = \Sigma`) put :math:`W = R_t^{-1}\hat\Psi(t,s)R_s`. Then

.. math::
    \frac{dW}{dt} = a\,M_t W,\qquad M_t = R_t^{-1}G_tG_t^\top R_t^{-\top}\ (\text{symmetric PSD}),
    \qquad a = \tfrac{\lambda^2}{2},\qquad W(s) = I,

so that :math:`\hat\Psi = R_tWR_s^{-1}`, and :math:`\tilde P = R_t^{-1}PR_t^{-\top} = I - WW^\top`
(it solves :math:`\dot{\tilde P} = a(M\tilde P + \tilde PM) - 2aM`, :math:`\tilde P(s) = 0`), i.e.
:math:`P = \Sigma_t - \hat\Psi\Sigma_s\hat\Psi^\top`. Going down in time :math:`W` contracts (its
generator is :math:`-aM \preceq 0`), for every :math:`\lambda`. The deterministic transition is the same
equation with :math:`a = -\tfrac12` (:math:`\lambda^2 = -1`): :math:`\Psi = R_tW_{-1}R_s^{-1}`.

**Discretisation.** Each step is cut into sub-steps (geometric in ``t``, and short enough that
:math:`|a|\,|h|\operatorname{tr}M \le` :data:`STIFFNESS`); on each sub-step :math:`W` advances by
:math:`e^{\Omega}` with the sixth-order Magnus exponent :math:`\Omega` of three Gauss nodes
(Blanes, Casas & Ros 2000). We carry :math:`E = W - I` and :math:`\tilde P`, never :math:`W` alone,
and compose sub-steps ``x`` then ``y`` by

.. math::
    E = E_y + E_x + E_yE_x,\qquad \tilde P = \tilde P_y + (I + E_y)\tilde P_x(I + E_y)^\top,
    \qquad \tilde P_y = -(E_y + E_y^\top + E_yE_y^\top),

with :math:`E_y = \Omega\varphi_1(\Omega)` by its Taylor series (:math:`\|\Omega\| \le 1`): no
difference of nearly equal quantities, so small steps and small :math:`\lambda` keep their digits,
and :math:`\tilde P` is a sum of PSD terms. Finally
:math:`\hat\Psi - \Psi = R_t(E_\lambda - E_{-1})R_s^{-1}` and :math:`P = R_t\tilde PR_t^\top`.

Commuting (``k = 1``) modes use the closed form instead: with
:math:`\rho^2 = \Sigma_t\mu_s^2/(\Sigma_s\mu_t^2)`, :math:`\hat\Psi/\Psi = \rho^{1+\lambda^2}` and
:math:`P = \Sigma_t(1 - \rho^{2\lambda^2})`.
"""

from __future__ import annotations

import numpy as np

from ._checks import as_times
from .diffusion import LinearDiffusion, ScalarModesDiffusion, batched_inverse, batched_transpose

#: Largest :math:`|a|\,|h|\max\operatorname{tr}M` of one sub-step (bounds :math:`\|\Omega\|` and the
#: Magnus truncation error in the stiff regime).
STIFFNESS = 0.05
#: Largest relative change :math:`\|M(\tau_3) - M(\tau_1)\|_F / \|M(\tau_2)\|_F` across one sub-step's nodes.
VARIATION = 0.01
#: Ratio ``hi / lo`` of the first, geometric cut of each step (refined by the two criteria above).
SUBSTEP_RATIO = 1.05
#: Refuse a plan that would need more sub-steps than this (each costs ~0.35 KB of peak memory and ~5 us of CPU).
MAX_SUBSTEPS = 500_000
_CHUNK = 65_536
_GAUSS = 0.5 + np.sqrt(15.0) / 10.0 * np.array([-1.0, 0.0, 1.0])


def stochastic_coefficients(diffusion: LinearDiffusion, s, t, lam: float):
    r"""``(Psi_hat(t, s) - Psi(t, s), P)`` of the stochastic steps from ``s`` down to ``t``.

    Parameters
    ----------
    diffusion : LinearDiffusion
    s, t : float or (N,) array_like
        Start and end times of each step, ``t < s``.
    lam : float
        :math:`\lambda \ge 0`.

    Returns
    -------
    excess, p : ndarray, shape ``s.shape + (M, k, k)``
        :math:`\hat\Psi(t,s) - \Psi(t,s)` and the (symmetric PSD) step covariance :math:`P`.

    Raises
    ------
    ValueError
        If ``lam`` is so large on a matrix diffusion that the sub-steps exceed :data:`MAX_SUBSTEPS`.
    """
    lam2 = float(lam) ** 2
    s, t = np.broadcast_arrays(as_times(s, "s"), as_times(t, "t"))
    if isinstance(diffusion, ScalarModesDiffusion):
        psi = diffusion.transition(t, s)
        log_rho2 = np.log(diffusion.covariance(t)) - np.log(diffusion.covariance(s)) - 2.0 * np.log(psi)
        excess = psi * np.expm1(0.5 * (1 + lam2) * log_rho2)
        p = -diffusion.covariance(t) * np.expm1(lam2 * log_rho2)
        return excess, p
    shape, s, t = s.shape, s.ravel(), t.ravel()
    e, p_white = _whitened_flow(diffusion, s, t, 0.5 * lam2, lam)
    r_t, r_s = diffusion.gddim_factor(t), diffusion.gddim_factor(s)
    r_s_inv = batched_inverse(r_s)
    deterministic = (r_t - diffusion.transition(t, s) @ r_s) @ r_s_inv  # R_t R_s^{-1} - Psi
    excess = deterministic + r_t @ e @ r_s_inv
    p = r_t @ p_white @ batched_transpose(r_t)
    p = 0.5 * (p + batched_transpose(p))
    tail = excess.shape[1:]
    return excess.reshape(shape + tail), p.reshape(shape + tail)


def _whitening_generator(diffusion: LinearDiffusion, tau: np.ndarray) -> np.ndarray:
    r""":math:`M_\tau = R^{-1}GG^\top R^{-\top}` for ``tau`` of shape ``(S, n)``, shape ``(S, n, M, k, k)``.

    Evaluated in chunks of sub-steps: :math:`R_\tau`'s own evaluation needs ~0.5 KB per time.
    """
    out = np.empty(tau.shape + diffusion.shape + (diffusion.block_size,))
    for start in range(0, len(tau), _CHUNK):
        part = tau[start:start + _CHUNK]
        r_inv = batched_inverse(diffusion.gddim_factor(part))
        out[start:start + _CHUNK] = r_inv @ diffusion.diffusion(part) @ batched_transpose(r_inv)
    return out


def _split(hi: np.ndarray, lo: np.ndarray, pieces: np.ndarray, geometric: np.ndarray):
    """Cut each interval ``hi[i] -> lo[i]`` into ``pieces[i]`` parts (equal in ``log t`` where ``geometric``)."""
    owner = np.repeat(np.arange(len(hi)), pieces)
    first = np.cumsum(pieces) - pieces
    j = np.arange(owner.size) - first[owner]
    x0, x1 = j / pieces[owner], (j + 1) / pieces[owner]
    ratio = np.where(geometric, lo / np.where(geometric, hi, 1.0), 1.0)[owner]
    span = (lo - hi)[owner]
    geo = geometric[owner]
    new_hi = np.where(geo, hi[owner] * ratio**x0, hi[owner] + span * x0)
    new_lo = np.where(geo, hi[owner] * ratio**x1, hi[owner] + span * x1)
    last = j == pieces[owner] - 1
    new_lo[last] = lo[owner][last]
    return new_hi, new_lo, owner


def _substeps(diffusion, s, t, a: float, lam):
    r"""Sub-steps ``(hi, lo, step)`` of all steps, ordered from each ``s`` down to its ``t``, and ``M`` at their nodes.

    First :data:`SUBSTEP_RATIO`-geometric pieces (uniform ones where ``t = 0``); each piece is then cut
    into as many parts as its stiffness :math:`a\,|h|\max\operatorname{tr}M` and the change of
    :math:`M` across it need to stay below :data:`STIFFNESS` and :data:`VARIATION`, and so on until
    every part meets both.
    """
    geometric = t > 0
    with np.errstate(divide="ignore"):
        pieces = np.where(geometric, np.ceil(np.log(s / np.where(geometric, t, 1.0)) / np.log(SUBSTEP_RATIO)), 64)
    hi, lo, step = _split(s, t, np.maximum(pieces, 1).astype(np.int64), geometric)
    refine = None
    for _ in range(12):
        if refine is not None:
            hi, lo, owner = _split(hi, lo, refine, geometric[step])
            step = step[owner]
        nodes = hi[:, None] + (lo - hi)[:, None] * _GAUSS
        m = _whitening_generator(diffusion, nodes)  # (S, 3, M, k, k)
        stiff = a * (hi - lo) * np.trace(m, axis1=-2, axis2=-1).max(axis=(1, 2))
        norm = np.sqrt(np.sum(m**2, axis=(-2, -1)))  # (S, 3, M)
        change = (np.sqrt(np.sum((m[:, 2] - m[:, 0]) ** 2, axis=(-2, -1))) / np.maximum(norm[:, 1], 1e-300)).max(axis=-1)
        size = np.maximum(stiff / STIFFNESS, change / VARIATION)
        if np.all(size <= 1.0):
            return hi, lo, step, m
        refine = np.where(size > 1.0, np.ceil(1.1 * size), 1.0)
        if refine.sum() > MAX_SUBSTEPS:
            raise ValueError(
                f"lam={lam:g} makes the stochastic step too stiff for this diffusion and grid: it needs "
                f"~{refine.sum():.2g} sub-steps (limit {MAX_SUBSTEPS:.0e}); use a smaller lam"
                " (on the default CLD, lam <= ~30 fits)")
        refine = refine.astype(np.int64)
    raise ValueError(f"lam={lam:g}: the stochastic step's sub-steps did not resolve the diffusion's "
                     "noise rate (it varies too fast near the grid's ends)")


def _commutator(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x @ y - y @ x


def _magnus6(m: np.ndarray, h: np.ndarray, a: float) -> np.ndarray:
    r"""Sixth-order Magnus exponent of :math:`W' = aMW` over sub-steps of (signed) length ``h``.

    ``m``: :math:`M` at the three Gauss nodes, ``(S, 3, M, k, k)``; returns ``(S, M, k, k)``:
    :math:`\Omega = \alpha_1 + \tfrac1{12}\alpha_3 + \tfrac1{240}[-20\alpha_1 - \alpha_3 + C_1, \alpha_2 + C_2]`,
    :math:`C_1 = [\alpha_1, \alpha_2]`, :math:`C_2 = -\tfrac1{60}[\alpha_1, 2\alpha_3 + C_1]`, with
    :math:`\alpha_1 = B_2`, :math:`\alpha_2 = \tfrac{\sqrt{15}}3(B_3 - B_1)`,
    :math:`\alpha_3 = \tfrac{10}3(B_3 - 2B_2 + B_1)` and :math:`B_i = a\,h\,M(\tau_i)`.
    """
    b1, b2, b3 = ((a * h)[:, None, None, None] * m[:, i] for i in range(3))
    alpha1 = b2
    alpha2 = (np.sqrt(15.0) / 3.0) * (b3 - b1)
    alpha3 = (10.0 / 3.0) * (b3 - 2.0 * b2 + b1)
    c1 = _commutator(alpha1, alpha2)
    c2 = -_commutator(alpha1, 2.0 * alpha3 + c1) / 60.0
    return alpha1 + alpha3 / 12.0 + _commutator(-20.0 * alpha1 - alpha3 + c1, alpha2 + c2) / 240.0


def _expm_minus_identity(omega: np.ndarray) -> np.ndarray:
    r""":math:`e^\Omega - I = \Omega\varphi_1(\Omega)` by Horner's rule on the Taylor series (``||Omega|| <= 1``).

    Terms up to :math:`\Omega^n/n!` with :math:`\|\Omega\|^{n+1}/(n+1)! \le 10^{-18}`.
    """
    norm = float(np.max(np.abs(omega).sum(axis=-1), initial=0.0))  # infinity norm
    n, term = 1, norm
    while term > 1e-18 and n < 30:
        n += 1
        term *= norm / n
    eye = np.eye(omega.shape[-1])
    acc = eye + omega / n
    for j in range(n - 1, 1, -1):
        acc = eye + (omega @ acc) / j
    return omega @ acc


def _whitened_flow(diffusion, s, t, a: float, lam):
    r"""``E = W - I`` and :math:`\tilde P = I - WW^\top` of every step, shape ``(N, M, k, k)``."""
    hi, lo, step, m = _substeps(diffusion, s, t, a, lam)
    counts = np.bincount(step, minlength=len(s))
    h = lo - hi  # negative: from s down to t
    e = np.empty(m.shape[:1] + m.shape[2:])  # (S, M, k, k), in chunks to bound the temporaries' memory
    for start in range(0, len(h), _CHUNK):
        part = slice(start, start + _CHUNK)
        e[part] = _expm_minus_identity(_magnus6(m[part], h[part], a))
    p = -(e + batched_transpose(e) + e @ batched_transpose(e))
    # pad each step's sub-steps to a power of two (identity: E = 0, P = 0), widest steps first, then
    # combine neighbours pairwise; in this order the steps still being combined form a prefix
    width = 2 ** np.ceil(np.log2(counts)).astype(np.int64)
    order = np.argsort(-width, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    index = np.concatenate([np.concatenate([starts[j] + np.arange(counts[j]), np.full(width[j] - counts[j], -1)])
                            for j in order])
    e = np.concatenate([e, np.zeros_like(e[:1])])[index]
    p = np.concatenate([p, np.zeros_like(p[:1])])[index]
    widths = width[order]
    eye = np.eye(e.shape[-1])
    while widths[0] > 1:
        n_active = int(widths[widths > 1].sum())
        ex, ey = e[:n_active:2], e[1:n_active:2]
        px, py = p[:n_active:2], p[1:n_active:2]
        wy = ey + eye
        e = np.concatenate([ey + ex + ey @ ex, e[n_active:]])
        p = np.concatenate([py + wy @ px @ batched_transpose(wy), p[n_active:]])
        widths = np.where(widths > 1, widths // 2, widths)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return e[inverse], p[inverse]
