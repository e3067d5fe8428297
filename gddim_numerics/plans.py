r"""Sampler plans: every table one sampler needs for one grid, built once in float64.

Deterministic gDDIM (docs/math §3.2–3.3), factor ``K`` (``"R"``: gDDIM, ``"L"``: Cholesky ablation):

.. math::
    u_{k+1} = \Psi(t_{k+1}, t_k)\,u_k + \sum_{j<q_k} C_{kj}\,\epsilon_{k-j},\qquad
    C_{kj} = \int_{t_k}^{t_{k+1}} \tfrac12\Psi(t_{k+1},\tau)G_\tau G_\tau^\top K_\tau^{-\top}\ell_{kj}(\tau)\,d\tau,

with the closed form :math:`C = R_{t_{k+1}} - \Psi(t_{k+1}, t_k)R_{t_k}` when ``K = R`` and
``q_k = 1``, warm-up ``q_k = min(q, k + 1)`` (and optionally ``q_k <= N - k`` at the end).
``form="data"`` extrapolates the data prediction instead (:mod:`gddim_numerics.data_form`,
docs/math §3.8); ``variable`` replaces ``t`` inside the Lagrange basis (docs/math §3.9);
``corrector=True`` adds the evaluation-free PEC corrector (:mod:`gddim_numerics.corrector`).
:func:`dirac_gain` (on request: ``GDDIM.dirac_gain()``) is the largest growth of a state
perturbation through a deterministic plan's recursion on Dirac data
(:func:`~gddim_numerics.corrector.perturbation_gain`; data form: O(1-10); ε form with high order and a
log-type variable on CLD/BDM: up to 1e13; ε form with the re-anchored corrector: 1-200); it warns
above :data:`GAIN_WARNING`.

Stochastic gDDIM with :math:`\lambda > 0` (docs/math §4.1, ``q = 1``):

.. math::
    u_{k+1} = \Psi u_k + (\hat\Psi - \Psi)R_{t_k}\,\epsilon_k + P^{1/2} z_k,\quad
    \partial_t\hat\Psi = \hat F\hat\Psi,\ \hat F = F + \tfrac{1+\lambda^2}{2}GG^\top\Sigma^{-1},\quad
    \tfrac{dP}{d\tau} = \hat FP + P\hat F^\top - \lambda^2GG^\top\ (\tau: s \downarrow t,\ P(s) = 0).

Optional final denoising step (docs/math §3.6) from ``t_end`` to 0: one Euler step of the
:math:`\lambda = 1` reverse drift without noise, one more evaluation.
"""

from __future__ import annotations

import warnings

import numpy as np

from .corrector import corrector_fields, corrector_orders, perturbation_gain
from .data_form import data_kernel, data_state, data_weight_sum
from .diffusion import LinearDiffusion, batched_inverse, batched_transpose
from .outputs import factor, to_data, to_noise
from .quadrature import KernelValues, exponential_weights
from .stochastic import stochastic_coefficients
from .tables import StepTables

MAX_ORDER = 5
#: Plans whose Dirac perturbation gain (:func:`~gddim_numerics.corrector.perturbation_gain`) exceeds
#: this warn: rounding errors then reach ~1e-10 relative.
GAIN_WARNING = 1e6


def _check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be an integer in 1..{MAX_ORDER}; got {order!r}")
    return int(order)


def check_lam(lam) -> float:
    """Validate the stochasticity :math:`\\lambda \\ge 0` of the reverse-time family."""
    if isinstance(lam, (bool, np.bool_)) or not isinstance(lam, (int, float, np.integer, np.floating)):
        raise TypeError(f"lam (lambda) must be a real number >= 0 (e.g. lam=0.5); got {lam!r} of type "
                        f"{type(lam).__name__}")
    lam = float(lam)
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam (lambda) must be a finite number >= 0; got {lam!r}")
    return lam


def step_orders(n_steps: int, order: int, lower_order_final: bool = False) -> np.ndarray:
    """``q_k = min(q, k + 1)`` (warm-up), and ``<= N - k`` with ``lower_order_final``."""
    k = np.arange(n_steps)
    q = np.minimum(order, k + 1)
    if lower_order_final:
        q = np.minimum(q, n_steps - k)
    return q


VARIABLES = ("t", "sqrt_t", "log_t", "log_snr")


def extrapolation_variable(diffusion: LinearDiffusion, variable):
    r"""The variable :math:`\varphi(t)` in which history values are extrapolated (docs/math §3.9).

    ``"t"`` (the paper's choice), ``"sqrt_t"``, ``"log_t"``, ``"log_snr"`` (the diffusion's
    noise-level measure) or a callable ``phi(t_array) -> array``; it must be strictly monotone on
    the grid. The weights stay exact integrals in :math:`\tau`.
    """
    if callable(variable):
        return variable
    if variable == "t":
        return None
    if variable == "sqrt_t":
        return np.sqrt
    if variable == "log_t":
        return np.log
    if variable == "log_snr":
        return diffusion.log_snr
    raise ValueError(f"variable must be one of {VARIABLES} or a callable phi(t); got {variable!r}")


def _check_variable_on_grid(phi, ts) -> None:
    if phi is None:
        return
    vals = np.asarray(phi(np.asarray(ts, dtype=np.float64)), dtype=np.float64)
    if vals.shape != np.shape(ts) or not np.all(np.isfinite(vals)):
        raise ValueError("variable(t) must return one finite value per grid time")
    d = np.diff(vals)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise ValueError("variable must be strictly monotone on the grid (its values repeat or turn back)")


def eps_kernel(diffusion: LinearDiffusion, which: str = "R"):
    r"""Integrand :math:`\tfrac12\Psi(t,\tau)G_\tau G_\tau^\top K_\tau^{-\top}` of the ε-form weights."""

    def kernel(t, tau):
        k_inv_t = batched_transpose(batched_inverse(factor(diffusion, tau, which)))
        return 0.5 * diffusion.transition(t, tau) @ diffusion.diffusion(tau) @ k_inv_t

    return kernel


def io_tables(diffusion, times, output: str, which: str) -> dict:
    """The ``input_*`` and ``data_*`` fields of :class:`StepTables` for network output ``output``.

    ``input``: :math:`\\epsilon_K = a u + b y` (``which`` names ``K``); ``data``: :math:`\\hat u_0 = c u + d y`.
    """
    a, b = to_noise(diffusion, times, output, which)
    c, d = to_data(diffusion, times, output)
    return dict(input_state=a, input_output=b, data_state=c, data_output=d)


FORMS = ("eps", "data")


def _check_form(form) -> str:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS} ('eps': extrapolate the network noise, docs/math §3.3; "
                         f"'data': extrapolate the data prediction, docs/math §3.8); got {form!r}")
    return form


def step_kernel(diffusion: LinearDiffusion, form: str = "eps", factor_name: str = "R"):
    """Integrand of the multistep weights of ``form`` (ε form: :func:`eps_kernel`; data form: :func:`~gddim_numerics.data_form.data_kernel`)."""
    return eps_kernel(diffusion, factor_name) if form == "eps" else data_kernel(diffusion)


def step_state(diffusion: LinearDiffusion, s, t, form: str = "eps") -> np.ndarray:
    r"""State coefficient of the steps ``s -> t``: :math:`\Psi(t,s)` (ε form) or :math:`R_tR_s^{-1}` (data form)."""
    return diffusion.transition(t, s) if form == "eps" else data_state(diffusion, s, t)


def step_weight_sum(diffusion: LinearDiffusion, s, t, form: str = "eps", factor_name: str = "R"):
    r"""Closed-form sum of a step's weights, or ``None`` where there is none (ε form with ``K = L``).

    ε form, ``K = R``: :math:`R_t - \Psi(t,s)R_s`; data form: :math:`\Psi(t,0) - R_tR_s^{-1}\Psi(s,0)`.
    """
    if form == "data":
        return data_weight_sum(diffusion, s, t)
    if factor_name == "R":
        return diffusion.gddim_factor(t) - diffusion.transition(t, s) @ diffusion.gddim_factor(s)
    return None


def multistep_weights(diffusion: LinearDiffusion, ts, counts, form: str = "eps", factor_name: str = "R",
                      phi=None, lead: int = 0, n_nodes: int = 20, max_ratio: float = 1.5,
                      exact_sum: bool = True, kernel_values: KernelValues | None = None) -> np.ndarray:
    """Weights ``(N, max(counts), M, k, k)`` of every step of ``ts`` with ``counts[k]`` Lagrange nodes.

    The nodes of step ``k`` are ``ts[k + lead], ts[k + lead - 1], ...`` (``lead=1``: corrector).
    One-node steps use the closed-form sum (:func:`step_weight_sum`) where it exists; every other
    weight is an exact integral by :func:`~gddim_numerics.quadrature.exponential_weights`
    (~1e-14 relative to the step's largest weight), with panels split at the diffusion's
    ``breakpoints``.

    ``exact_sum``: where the closed-form sum exists, the newest-node weight is shifted by the
    quadrature's residual (a ~1e-14 relative change) so that the weights sum to the closed form to
    rounding. Predictor and corrector weights then have the *same* sum, so a corrected step stays
    exact on Dirac data even where the next step's state coefficient is large (BDM's high
    frequencies, ε form from ``t_start``: ``|Psi| ~ 5e4`` times ``~1e3``), instead of amplifying a
    1e-14 quadrature residual to 1e-7.

    ``kernel_values``: a :class:`~gddim_numerics.quadrature.KernelValues` store shared with other builds on
    ``diffusion`` (the weights are the same bit for bit; only kernel evaluations are saved).
    """
    ts = np.asarray(ts, dtype=np.float64)
    counts = np.asarray(counts, dtype=int)
    s, t = ts[:-1], ts[1:]
    closed = step_weight_sum(diffusion, s, t, form, factor_name)
    single = counts == 1 if closed is not None else np.zeros(len(counts), dtype=bool)
    hist = np.zeros((len(s), int(counts.max())) + diffusion.shape + (diffusion.block_size,))
    if np.any(~single):
        sub = np.where(single, 1, counts)
        weights = exponential_weights(step_kernel(diffusion, form, factor_name), ts, sub, variable=phi,
                                      n_nodes=n_nodes, max_ratio=max_ratio, lead=lead,
                                      breakpoints=diffusion.breakpoints,
                                      kernel_values=None if kernel_values is None else
                                      (kernel_values, (id(diffusion), form, factor_name)))
        hist[~single, : weights.shape[1]] = weights[~single]
    if np.any(single):
        hist[single, 0] = closed[single]
    if exact_sum and closed is not None:
        hist[:, 0] += closed - hist.sum(axis=1)
    return hist


def deterministic_tables(diffusion: LinearDiffusion, ts, order: int = 1, factor_name: str = "R",
                         output: str = "eps_R", lower_order_final: bool = False,
                         variable="t", n_nodes: int = 20, max_ratio: float = 1.5,
                         form: str = "eps", corrector: bool = False,
                         kernel_values: KernelValues | None = None) -> StepTables:
    r"""Tables of deterministic (multistep) gDDIM on the grid ``ts``.

    ``form="eps"`` extrapolates :math:`\epsilon_K` (docs/math §3.3; history ``h = ε_K``),
    ``form="data"`` the data prediction (docs/math §3.8; history ``h = D``, ``K`` plays no role);
    ``corrector=True`` folds the evaluation-free PEC corrector of :mod:`gddim_numerics.corrector`
    into the tables. ``kernel_values``: see :func:`multistep_weights`.
    """
    ts = np.asarray(ts, dtype=np.float64)
    form = _check_form(form)
    if form == "data" and factor_name != "R":
        raise ValueError("form='data' does not use a noise factor; pass factor='R'")
    phi = extrapolation_variable(diffusion, variable)
    _check_variable_on_grid(phi, ts)
    s, t = ts[:-1], ts[1:]
    orders = step_orders(len(s), order, lower_order_final)
    state = step_state(diffusion, s, t, form)
    hist = multistep_weights(diffusion, ts, orders, form, factor_name, phi, 0, n_nodes, max_ratio,
                             kernel_values=kernel_values)
    extra = {}
    if corrector:
        if len(s) < 2:
            raise ValueError("corrector=True needs at least 2 steps (nfe >= 2): the last step is never corrected")
        counts = corrector_orders(orders)
        corr = multistep_weights(diffusion, ts, counts, form, factor_name, phi, 1, n_nodes, max_ratio,
                                 kernel_values=kernel_values)
        jac = batched_inverse(factor(diffusion, s, factor_name)) if form == "eps" else None
        hist, orders, extra = corrector_fields(state, hist, orders, corr, counts, jac)
    io = io_tables(diffusion, s, output, factor_name)
    if form == "data":  # the history is the data prediction itself
        io.update(input_state=io["data_state"], input_output=io["data_output"])
    tables = StepTables(ts=ts, state=state, history=hist, orders=orders, **io, **extra,
                        info=dict(method="gddim", order=order, factor=factor_name, output=output, form=form,
                                  corrector=bool(corrector),
                                  variable=variable if isinstance(variable, str) else "custom"))
    return tables


def dirac_gain(diffusion: LinearDiffusion, tables: StepTables, factor_name: str = "R", form: str = "eps") -> float:
    """The Dirac perturbation gain of deterministic ``tables`` (:func:`~gddim_numerics.corrector.perturbation_gain`).

    The history quantity's slope in the state is :math:`K^{-1}` in the ε form and 0 in the data form.
    Warns (``RuntimeWarning``) above :data:`GAIN_WARNING`.
    """
    s = tables.ts[:-1][: len(tables.orders)]
    jac = batched_inverse(factor(diffusion, s, factor_name)) if form == "eps" else np.zeros_like(tables.state)
    gain = perturbation_gain(tables, jac)
    if gain > GAIN_WARNING:
        warnings.warn(
            f"this gDDIM plan (form={form!r}, order={tables.info.get('order')}, variable={tables.info.get('variable')!r}, "
            f"corrector={tables.info.get('corrector')}) amplifies a state perturbation by up to {gain:.1e} through its "
            f"{'ε' if form == 'eps' else 'data'} history, so rounding errors (and network errors) grow to "
            f"~{1e-16 * gain:.0e} relative even on exact Dirac data; form='data' (with or without "
            "corrector), a lower order or variable='t' keep the recursion stable",
            RuntimeWarning, stacklevel=3)
    return gain


def psd_factor(p: np.ndarray, name: str = "P") -> np.ndarray:
    """Symmetric square root of PSD blocks; rounding-level negative eigenvalues count as zero."""
    if p.shape[-1] == 1:
        if np.any(p < -1e-13 * np.maximum(1.0, np.abs(p).max())):
            raise ValueError(f"{name} is not positive semi-definite")
        return np.sqrt(np.maximum(p, 0.0))
    w, v = np.linalg.eigh(p)
    scale = np.maximum(1.0, np.abs(w).max())
    if np.any(w < -1e-12 * scale):
        raise ValueError(f"{name} is not positive semi-definite (eigenvalue {w.min():.3g})")
    return (v * np.sqrt(np.maximum(w, 0.0))[..., None, :]) @ batched_transpose(v)


def stochastic_tables(diffusion: LinearDiffusion, ts, lam: float, output: str = "eps_R") -> StepTables:
    """Tables of stochastic gDDIM (``q = 1``, ``lam > 0``) on the grid ``ts``."""
    ts = np.asarray(ts, dtype=np.float64)
    s, t = ts[:-1], ts[1:]
    psi = diffusion.transition(t, s)
    r_s = diffusion.gddim_factor(s)
    excess, p = stochastic_coefficients(diffusion, s, t, lam)
    hist = (excess @ r_s)[:, None]
    return StepTables(ts=ts, state=psi, history=hist, orders=np.ones(len(s), dtype=int),
                      noise=psd_factor(p, "the step noise covariance P"),
                      info=dict(method="gddim", order=1, lam=lam, factor="R", output=output),
                      **io_tables(diffusion, s, output, "R"))


def denoise_tables(diffusion: LinearDiffusion, t_end: float, factor_name: str, output: str) -> StepTables:
    r"""One Euler step of the :math:`\lambda=1` reverse drift from ``t_end`` to 0 (docs/math §3.6).

    :math:`u_0 = (I - t F)u + t\,GG^\top s`, :math:`s = -K^{-\top}\epsilon_K`.
    """
    t = np.array([t_end])
    eye = np.eye(diffusion.block_size)
    state = eye - t_end * diffusion.drift(t)
    k_inv_t = batched_transpose(batched_inverse(factor(diffusion, t, factor_name)))
    hist = (-t_end * diffusion.diffusion(t) @ k_inv_t)[:, None]
    return StepTables(ts=np.array([t_end, 0.0]), state=state, history=hist, orders=np.ones(1, dtype=int),
                      **io_tables(diffusion, t, output, factor_name))


def __getattr__(name: str):
    """``gddim_numerics.plans.GDDIM``: the plan class, which lives in :mod:`gddim_numerics.samplers.gddim`."""
    if name == "GDDIM":
        from .samplers.gddim import GDDIM

        return GDDIM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
