"""CLD's symmetric splitting sampler (SSCS): host tables here, its loop in ``backends.multistage``."""

from __future__ import annotations

import numpy as np

from ..cld import CLD
from ..diffusion import batched_inverse, batched_transpose
from ..linear_sde import ConstantCoefficientSDE
from ..outputs import check_output_type
from ..plans import psd_factor
from ..result import SampleResult
from .common import FrozenPlan, checked_grid, data_maps, eye_like, noise_maps
from .method import Method


def _stationary_split(diffusion: CLD) -> tuple[np.ndarray, np.ndarray]:
    r"""``(A_tilde, Sigma_inf)``: drift of SSCS's A part per unit of :math:`\beta`, and the stationary covariance."""
    from scipy.linalg import solve_continuous_lyapunov

    sigma_inf = solve_continuous_lyapunov(diffusion.A, -diffusion.Q)
    return -(diffusion.A + diffusion.Q @ np.linalg.inv(sigma_inf)), sigma_inf


def sscs_half_step(diffusion: CLD, s, t) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact law of SSCS's linear part ("A") from time ``s`` down to ``t < s``: ``(Phi, P)``.

    The λ = 1 reverse SDE of CLD in reverse time :math:`r` (:math:`dr = -dt`) is
    :math:`du = [-F u + GG^\top\nabla\log p]\,dr + G\,dw`. Adding and subtracting the score of the
    stationary law :math:`N(0, \Sigma_\infty)` (:math:`A\Sigma_\infty + \Sigma_\infty A^\top + Q = 0`;
    :math:`\Sigma_\infty = \operatorname{diag}(1, M)` for CLD) splits it into

    * A: :math:`du = \beta\tilde A u\,dr + \sqrt\beta\,Q^{1/2}dw`,
      :math:`\tilde A = -(A + Q\Sigma_\infty^{-1})` — for CLD
      :math:`dx = -M^{-1}v\,\beta dr`, :math:`dv = (x - \Gamma M^{-1}v)\beta dr + \sqrt{2\Gamma\beta}\,dw`;
    * S: :math:`du = \beta Q(\nabla\log p + \Sigma_\infty^{-1}u)\,dr` — for CLD
      :math:`dv = 2\Gamma\beta(s_v + M^{-1}v)\,dr` (docs/math §4.3).

    A is a constant-coefficient linear SDE in the time :math:`b = B(s) - B(t)` (:math:`B = \int\beta`),
    so its exact transition is Gaussian: :math:`u \mapsto \Phi u + N(0, P)` with
    :math:`\Phi = e^{b\tilde A}` and :math:`P = \int_0^b e^{r\tilde A}Qe^{r\tilde A^\top}dr`, the
    Van Loan block exponential (:meth:`ConstantCoefficientSDE.van_loan`) iterated over ``n``
    sub-steps with :math:`\|\tilde A\|\,b/n \le 1` (docs/math §1.3):
    :math:`P \leftarrow \Phi_h P\Phi_h^\top + Q_d(h)`. (A is the time reversal of the stationary
    forward diffusion, so also :math:`\Phi = \Sigma_\infty\Psi(s,t)^\top\Sigma_\infty^{-1}` and
    :math:`P = \Sigma_\infty - \Phi\Sigma_\infty\Phi^\top` — a cross-check, used in the tests.)

    Returns
    -------
    Phi, P : arrays of shape ``broadcast(s, t).shape + (1, k, k)``
    """
    s, t = np.broadcast_arrays(diffusion.check_times(s, "s"), diffusion.check_times(t, "t"))
    b = diffusion.beta_integral(s) - diffusion.beta_integral(t)
    if np.any(b < 0):
        raise ValueError("sscs_half_step goes down in time: need t <= s")
    a_tilde, sigma_inf = _stationary_split(diffusion)
    a_part = ConstantCoefficientSDE(a_tilde, diffusion.Q, initial_covariance=sigma_inf)  # A, in its stationary law
    n_sub = max(1, int(np.ceil(np.linalg.norm(a_tilde, 2) * float(np.max(b, initial=0.0)))))
    phi_h, q_h = a_part.van_loan(b / n_sub)
    phi, cov = eye_like(phi_h), np.zeros_like(q_h)
    for _ in range(n_sub):
        phi, cov = phi_h @ phi, phi_h @ cov @ batched_transpose(phi_h) + q_h
    return phi[..., None, :, :], 0.5 * (cov + batched_transpose(cov))[..., None, :, :]


class SSCS(FrozenPlan):
    r"""CLD's symmetric splitting sampler (Dockhorn et al. 2022; docs/math §4.3).

    Per step from ``s`` to ``t`` (mid time :math:`m = (s+t)/2`, :math:`\Delta r = s - t`), with the
    split of :func:`sscs_half_step`:

    .. math::
        v = \Phi_{s\to m}u_s + \xi_1,\quad
        v' = v + \Delta r\,G_sG_s^\top\big(\Sigma_\infty^{-1}v - R_s^{-\top}\epsilon_R(v, s)\big),\quad
        u_t = \Phi_{m\to t}v' + \xi_2,

    :math:`\xi_i \sim N(0, P_i)` exact, and one evaluation per step, at the intermediate state
    :math:`v` and the step's start time ``s`` (as both reference codes do; the S update changes
    only the velocity). The half steps split the step at the time midpoint, as both codes do.
    Noise draws ``2k`` and ``2k + 1`` serve step ``k`` (a ``noise(index, shape)`` callable sees these
    indices). A callback's ``StepInfo.x`` is :math:`v`, the state the network saw. The reference
    codes use ``denoise=True`` (docs/math §3.6).

    Raises
    ------
    ValueError
        If the diffusion is not a :class:`~gddim_numerics.cld.CLD`.
    """

    def __init__(self, diffusion: CLD, ts, output: str = "eps_R", denoise: bool = False):
        if not isinstance(diffusion, CLD):
            raise ValueError(f"sscs (symmetric splitting) is CLD's sampler and needs a gd.CLD diffusion; got "
                             f"{diffusion!r}. Use method='em' or 'gddim' for other diffusions")
        self.diffusion = diffusion
        self.output = check_output_type(output, diffusion)
        self.denoise = bool(denoise)
        self.ts = checked_grid(diffusion, ts, self.denoise)
        s, t = self.ts[:-1], self.ts[1:]
        mid = 0.5 * (s + t)
        phi1, p1 = sscs_half_step(diffusion, s, mid)
        phi2, p2 = sscs_half_step(diffusion, mid, t)
        precision = np.linalg.inv(_stationary_split(diffusion)[1])
        a, b = noise_maps(diffusion, s, output)
        kick = (s - t)[:, None, None, None] * diffusion.diffusion(s)
        gain = kick @ batched_transpose(batched_inverse(diffusion.gddim_factor(s)))
        self.tables = {
            "first_state": phi1, "first_noise": psd_factor(p1, "the SSCS half-step covariance"),
            "state": phi2 @ (eye_like(phi2) + kick @ precision - gain @ a), "output": -phi2 @ gain @ b,
            "second_noise": psd_factor(p2, "the SSCS half-step covariance"),
        }
        self.tables.update(zip(("data_state", "data_output"), data_maps(diffusion, s, output)))
        self._freeze()

    @property
    def nfe(self) -> int:
        """Network evaluations of one sample call: ``N`` (``+ 1`` with ``denoise``)."""
        return len(self.ts) - 1 + int(self.denoise)

    def sample(self, eps_fn, x, **kwargs) -> SampleResult:
        """Run from ``x`` at ``ts[0]``; keywords as :func:`~gddim_numerics.backends.run_tables`."""
        from ..backends.multistage import run_sscs  # the array side, loaded when a sample runs

        return run_sscs(self, eps_fn, x, **kwargs)

    def __repr__(self) -> str:
        return f"SSCS({self.diffusion!r}, N={len(self.ts) - 1}, output={self.output!r}, denoise={self.denoise})"


METHOD = Method(build=SSCS, options=("output", "denoise"),
                description="CLD's symmetric splitting sampler: exact linear half steps around an Euler score step")
