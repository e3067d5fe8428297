r"""Network output types and their exact conversions (docs/math §6).

A network returns one of

``"eps_R"``
    :math:`\epsilon_R`, the noise of the gDDIM factor: :math:`u = \Psi(t,0)u_0 + R_t\epsilon_R`;
``"eps_L"``
    :math:`\epsilon_L = L_t^{-1}R_t\epsilon_R` (Cholesky factor);
``"score"``
    :math:`s = \nabla\log p_t = -R_t^{-\top}\epsilon_R`;
``"data"``
    :math:`D = \mathbb E[u_0\mid u_t] = \Psi(0,t)(u + \Sigma_t s)` (the full state; for CLD
    the velocity entry too);
``"v"``
    the velocity :math:`v = (m_t\epsilon_R - r_t D)/\sqrt{m_t^2 + r_t^2}` of a diffusion with
    scalar modes (``k = 1``: VP, VE, BDM), :math:`m_t = \Psi(t,0)`, :math:`r_t = R_t`, per mode.

``"v"`` is the derivative of :math:`u/\sqrt{m^2+r^2} = \cos\phi\,u_0 + \sin\phi\,\epsilon` in the angle
:math:`\phi = \arctan(r/m)`. For VP (:math:`m^2 + r^2 = \bar\alpha_t + 1 - \bar\alpha_t = 1`) it is the
usual v-prediction :math:`v = \alpha_t\epsilon - \sigma_t x_0` (Salimans & Ho 2022); for VE
(:math:`m = 1`, :math:`r = \sigma`) it is minus the target of EDM's network :math:`F` with
:math:`\sigma_{data} = 1`. With :math:`n^2 = m^2 + r^2`,

.. math::  \epsilon_R = \frac{r}{n^2}u + \frac{m}{n}v,\qquad D = \frac{m}{n^2}u - \frac{r}{n}v .

Diffusions with ``k > 1`` blocks (CLD, dense matrices) have no such angle: ``"v"`` is refused there.

Every conversion into a sampler's quantity :math:`\epsilon_K` (``K`` = ``"R"`` or ``"L"``) is affine,
:math:`\epsilon_K = a_t u + b_t y`, and so is the data prediction :math:`D = c_t u + d_t y`; this
module returns those per-mode ``(M, k, k)`` coefficients (``None`` for a zero ``a``/``c``).
"""

from __future__ import annotations

import numpy as np

from .diffusion import LinearDiffusion, batched_inverse, batched_transpose

OUTPUT_TYPES = ("eps_R", "eps_L", "score", "data", "v")
FACTORS = ("R", "L")


def check_output_type(output: str, diffusion: LinearDiffusion | None = None) -> str:
    """Validate a network output type name (and, given ``diffusion``, that it is defined there)."""
    if output not in OUTPUT_TYPES:
        raise ValueError(f"output must be one of {OUTPUT_TYPES}; got {output!r}")
    if output == "v" and diffusion is not None:
        _angle_defined(diffusion)
    return output


def check_factor(which: str) -> str:
    """Validate a noise-factor name."""
    if which not in FACTORS:
        raise ValueError(f"factor must be one of {FACTORS}; got {which!r}")
    return which


def factor(diffusion: LinearDiffusion, t, which: str) -> np.ndarray:
    """The square root ``K_t`` named ``which`` (``"R"``: gDDIM factor, ``"L"``: Cholesky)."""
    if check_factor(which) == "R":
        return diffusion.gddim_factor(t)
    return diffusion.cholesky(t)


def to_noise(diffusion: LinearDiffusion, t, output: str, which: str = "R"):
    r"""Coefficients ``(a, b)`` with :math:`\epsilon_K = a u + b y` for output type ``output``.

    ``a`` is ``None`` when zero; ``b`` is ``None`` when the identity.
    """
    check_output_type(output)
    if output == "v":
        m, r, n2 = _angle(diffusion, t)
        return r / n2, m / np.sqrt(n2)  # eps_R; k = 1 so eps_L = eps_R
    if output == "eps_" + check_factor(which):
        return None, None
    if output == "score":
        return None, -batched_transpose(factor(diffusion, t, which))
    k_inv = batched_inverse(factor(diffusion, t, which))
    if output in ("eps_R", "eps_L"):
        return None, k_inv @ factor(diffusion, t, output[-1])
    # data: eps_K = K^{-1} (u - Psi(t, 0) D)
    return k_inv, -k_inv @ diffusion.mean_coefficient(t)


def to_data(diffusion: LinearDiffusion, t, output: str):
    r"""Coefficients ``(c, d)`` with :math:`D = c u + d y` (``c`` ``None`` when zero)."""
    check_output_type(output)
    if output == "data":
        shape = np.shape(t) + diffusion.shape + (diffusion.block_size,)
        return None, np.broadcast_to(np.eye(diffusion.block_size), shape).copy()
    if output == "v":
        m, r, n2 = _angle(diffusion, t)
        return m / n2, -r / np.sqrt(n2)
    psi_inv = batched_inverse(diffusion.mean_coefficient(t))
    if output == "score":
        return psi_inv, psi_inv @ diffusion.covariance(t)
    k = factor(diffusion, t, output[-1])
    return psi_inv, -psi_inv @ k


def _angle(diffusion: LinearDiffusion, t):
    r"""Per-mode :math:`(m_t, r_t, m_t^2 + r_t^2)` of a ``k = 1`` diffusion, for the ``"v"`` output."""
    _angle_defined(diffusion)
    m, r = diffusion.mean_coefficient(t), diffusion.gddim_factor(t)
    return m, r, m * m + r * r


def _angle_defined(diffusion: LinearDiffusion) -> None:
    if diffusion.block_size != 1:
        raise ValueError(f"output='v' is defined for diffusions with scalar modes (k = 1: VP, VE, BDM); "
                         f"{diffusion!r} has k = {diffusion.block_size} blocks. Have the network predict "
                         "'eps_R', 'eps_L', 'score' or 'data' instead")
