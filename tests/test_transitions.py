r"""Transition matrices :math:`\Psi(t, s)` and covariances :math:`\Sigma_t` against independent computations.

References written here: DOP853 solves of :math:`\dot\Psi = F\Psi` and of the Lyapunov ODE
:math:`\dot\Sigma = F\Sigma + \Sigma F^\top + GG^\top`, ``scipy.linalg.expm``, a sub-stepped Van
Loan block exponential, and the closed form of a rotating-frame (non-commuting) system.

The reference solves run at rtol 1e-13, not 1e-12: DOP853's *global* error can exceed its rtol by
two orders (measured 1.7e-10 against mpmath for a random stable A integrated backwards at rtol
1e-12, 3e-10 on the stiff relaxation of BDM's highest frequency), which would hide or fake errors
at the 1e-10 level these tests assert.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import gddim_numerics as gd

BUILTINS = {
    "vp-linear": gd.VPSDE.linear(),
    "vp-cosine": gd.VPSDE.cosine(),
    "vp-discrete": gd.VPSDE.discrete(betas=np.linspace(1e-3, 0.2, 100)),
    "ve": gd.VESDE(),
    "cld": gd.CLD(),
    "cld-underdamped": gd.CLD(gamma_friction=0.5),
    "bdm-gddim": gd.BDM((8, 8)),
    "bdm-bdm": gd.BDM((8, 8), schedule="bdm"),
}

# Sigma at the lower end of each time range, from the textbook definitions (not from the code):
# 1 - abar_1 = beta_1 for a DDPM table; 1 - abar_0 for BDM's two schedules.
LOWER_SIGMA = {
    "vp-linear": np.zeros((1, 1, 1)),
    "vp-cosine": np.zeros((1, 1, 1)),
    "vp-discrete": np.full((1, 1, 1), 1e-3),
    "ve": np.zeros((1, 1, 1)),
    "cld": np.diag([1e-6, 0.04 * 0.25 + 1e-6])[None],
    "cld-underdamped": np.diag([1e-6, 0.04 * 0.25 + 1e-6])[None],
    "bdm-gddim": np.full((64, 1, 1), np.sin(0.004 / 1.008 * np.pi / 2) ** 2),
    "bdm-bdm": np.full((64, 1, 1), 1.0 / (1.0 + np.exp(10.0))),
}

BDM_MODES = [0, 1, 9, 28, 63]  # DC, lowest, a middle and the highest frequency of the 8x8 DCT


def rel_err(a, b):
    """Largest relative Frobenius error ``|a - b| / |b|`` over all (time, mode) blocks."""
    a, b = np.broadcast_arrays(a, b)
    return float(np.max(np.linalg.norm(a - b, axis=(-2, -1)) / np.linalg.norm(b, axis=(-2, -1))))


def ode_values(rhs, t0, y0, ts, atol, breaks=()):
    """Solution of ``y' = rhs(t, y)``, ``y(t0) = y0`` at every time of ``ts`` (either side of ``t0``), DOP853.

    Every solve ends at a requested time or at a time of ``breaks`` (where the right-hand side may have a kink)
    and restarts there: DOP853's dense-output interpolant between its own steps is less accurate than its steps
    (measured 6e-10 on a random stable 2x2 A that took 4 steps over [0, 1], against 3e-16 at the step ends).
    """
    ts, breaks = np.asarray(ts, dtype=np.float64), np.asarray(breaks, dtype=np.float64)
    out = np.empty((ts.size, y0.size))
    out[ts == t0] = y0.ravel()
    for side, end in ((ts > t0, np.max(ts)), (ts < t0, np.min(ts))):
        if not np.any(side):
            continue
        inner = breaks[(breaks - t0) * (end - breaks) > 0]
        stops = np.unique(np.concatenate([inner, ts[side]]))
        nodes = np.concatenate([[t0], stops if end > t0 else stops[::-1]])
        y = y0.ravel()
        for a, b in zip(nodes[:-1], nodes[1:]):
            sol = solve_ivp(rhs, (a, b), y, method="DOP853", rtol=1e-13, atol=atol)
            assert sol.success
            y = sol.y[:, -1]
            out[ts == b] = y
    return out.reshape(ts.shape + y0.shape)


def ode_atol(sde):
    """Scalar modes keep their sign, so their reference solve is relative down to variances of 1e-14."""
    return 1e-24 if sde.block_size == 1 else 1e-14


def kinks(sde):
    """Times where F has a kink: the knots of a discrete schedule's piecewise-cubic log-SNR."""
    schedule = getattr(sde, "schedule", None)
    return schedule.table_times if isinstance(schedule, gd.DiscreteSchedule) else ()


def psi_by_ode(sde, s, ts, modes=slice(None)):
    r""":math:`\Psi(t, s)` of the selected modes for every ``t`` in ``ts`` from :math:`\dot\Psi = F\Psi`, :math:`\Psi(s, s) = I`."""
    k = sde.block_size
    m = len(np.arange(sde.n_modes)[modes])

    def rhs(t, y):
        return (sde.drift(t)[modes] @ y.reshape(m, k, k)).ravel()

    return ode_values(rhs, s, np.broadcast_to(np.eye(k), (m, k, k)), ts, ode_atol(sde), kinks(sde))


def sigma_by_lyapunov(sde, t0, sigma0, ts, modes=slice(None)):
    r""":math:`\Sigma_t` of the selected modes from the Lyapunov ODE started at :math:`\Sigma_{t_0} = \Sigma^{(0)}`."""
    k = sde.block_size
    sigma0 = np.asarray(sigma0, dtype=np.float64)[modes]
    m = sigma0.shape[0]

    def rhs(t, y):
        s = y.reshape(m, k, k)
        f = sde.drift(t)[modes]
        return (f @ s + s @ np.swapaxes(f, -1, -2) + sde.diffusion(t)[modes]).ravel()

    return ode_values(rhs, t0, sigma0, ts, ode_atol(sde), kinks(sde))


def van_loan_covariance(A, Q, sigma0, r, n_sub):
    r""":math:`\Sigma(r)` of :math:`d\Sigma/dr = A\Sigma + \Sigma A^\top + Q` by ``n_sub`` Van Loan steps."""
    k = A.shape[0]
    block = np.block([[-A, Q], [np.zeros((k, k)), A.T]])
    e = expm(r / n_sub * block)
    phi = e[k:, k:].T
    qd = phi @ e[:k, k:]
    sig = np.asarray(sigma0, dtype=np.float64)
    for _ in range(n_sub):
        sig = phi @ sig @ phi.T + qd
    return sig


def whole_range(sde, n=41):
    """``n`` times spread over the time range, plus a geometric cluster near ``t = 0`` when it is included."""
    lo, hi = sde.time_range
    ts = np.linspace(lo, hi, n)
    if lo == 0.0:
        ts = np.concatenate([ts, np.geomspace(1e-6, 1e-1, 11)])
    return np.unique(ts)


def modes_under_test(name):
    """All modes, except for BDM where a few representative frequencies stand for all."""
    return BDM_MODES if name.startswith("bdm") else slice(None)


# ------------------------------------------------------------------------------- built-ins
@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_transition_matches_ode_over_whole_range(name):
    r""":math:`\Psi(t, s)` equals the DOP853 solution of :math:`\dot\Psi = F\Psi` for ``s`` at both ends and the middle."""
    sde = BUILTINS[name]
    ts = whole_range(sde)
    lo, hi = sde.time_range
    modes = modes_under_test(name)
    for s in (lo, 0.5 * (lo + hi), hi):
        assert rel_err(sde.transition(ts, s)[:, modes], psi_by_ode(sde, s, ts, modes)) <= 1e-10  # measured 6.1e-12


@pytest.mark.parametrize("name", sorted(n for n in BUILTINS if BUILTINS[n].time_range[0] == 0.0))
def test_mean_coefficient_is_transition_from_time_zero(name):
    r"""The mean map is :math:`\Psi(t, 0)`, the ODE solution started at ``t = 0``."""
    sde = BUILTINS[name]
    ts = whole_range(sde)
    modes = modes_under_test(name)
    assert rel_err(sde.mean_coefficient(ts)[:, modes], psi_by_ode(sde, 0.0, ts, modes)) <= 1e-10  # measured 6.1e-12


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_covariance_matches_lyapunov_ode(name):
    r""":math:`\Sigma_t` equals the Lyapunov ODE solution from the textbook :math:`\Sigma` at the range's lower end."""
    sde = BUILTINS[name]
    lo = sde.time_range[0]
    ts = whole_range(sde)
    ts = ts[ts > lo]
    modes = modes_under_test(name)
    ref = sigma_by_lyapunov(sde, lo, LOWER_SIGMA[name], ts, modes)
    assert rel_err(sde.covariance(ts)[:, modes], ref) <= 1e-10  # measured 8.7e-12


@pytest.mark.parametrize("name", sorted(n for n in BUILTINS if BUILTINS[n].time_range[0] == 0.0))
def test_initial_covariance_is_textbook_value(name):
    r""":math:`\Sigma_0` is 0 for VP/VE, :math:`\operatorname{diag}(\varepsilon, \gamma M + \varepsilon)` for CLD and :math:`1 - \bar\alpha_0` for BDM."""
    np.testing.assert_allclose(BUILTINS[name].initial_covariance, LOWER_SIGMA[name], rtol=1e-12, atol=0)  # measured 0


# ------------------------------------------------------------------------------- CLD closed forms
def cld_variants():
    """Critically damped CLDs: the default, another (Gamma, M^-1) pair with a linear beta, and a non-default Sigma_0."""
    return [
        gd.CLD(),
        gd.CLD(mass_inv=1.0, gamma_friction=2.0, beta0=2.0, beta1=3.0),
        gd.CLD(initial_covariance=np.diag([0.1, 0.3])),
    ]


def cld_matrices(cld):
    """``(A, Q)`` of CLD written from the definition: A = [[0, M^-1], [-1, -Gamma M^-1]], Q = diag(0, 2 Gamma)."""
    m_inv, gam = cld.mass_inv, cld.gamma_friction
    return np.array([[0.0, m_inv], [-1.0, -gam * m_inv]]), np.diag([0.0, 2.0 * gam])


def cld_beta_integral(cld, t):
    """B(t) = beta0 t + beta1 t^2 / 2."""
    return cld.beta0 * t + 0.5 * cld.beta1 * t * t


@pytest.mark.parametrize("cld", cld_variants(), ids=["default", "gamma2-beta-linear", "sigma0"])
def test_cld_closed_form_transition_matches_expm(cld):
    r"""CLD's closed-form :math:`\Psi(t,s)` equals :math:`\exp((B(t) - B(s))A)`."""
    A, _ = cld_matrices(cld)
    ts = np.linspace(0.0, 1.0, 21)
    for s in (0.0, 0.3, 1.0):
        ref = np.stack([expm((cld_beta_integral(cld, t) - cld_beta_integral(cld, s)) * A) for t in ts])[:, None]
        assert rel_err(cld.transition(ts, s), ref) <= 1e-12  # measured 2.3e-14


@pytest.mark.parametrize("cld", cld_variants(), ids=["default", "gamma2-beta-linear", "sigma0"])
def test_cld_closed_form_covariance_matches_van_loan(cld):
    r"""CLD's closed-form :math:`\Sigma_t` equals the sub-stepped Van Loan exponential (64 steps)."""
    A, Q = cld_matrices(cld)
    sigma0 = np.diag(np.diag(cld.initial_covariance[0]))
    ts = np.concatenate([np.geomspace(1e-5, 1e-1, 9), np.linspace(0.2, 1.0, 9)])
    ref = np.stack([van_loan_covariance(A, Q, sigma0, cld_beta_integral(cld, t), 64) for t in ts])[:, None]
    assert rel_err(cld.covariance(ts), ref) <= 1e-12  # measured 1.1e-14


@pytest.mark.parametrize("cld", cld_variants(), ids=["default", "gamma2-beta-linear", "sigma0"])
def test_cld_closed_forms_match_constant_coefficient_class(cld):
    r"""CLD's closed forms agree with the generic expm / Van Loan path of ``ConstantCoefficientSDE``."""
    A, Q = cld_matrices(cld)
    generic = gd.ConstantCoefficientSDE(
        A, Q, beta=lambda t: cld.beta0 + cld.beta1 * t, beta_integral=lambda t: cld_beta_integral(cld, t),
        initial_covariance=cld.initial_covariance[0],
    )
    ts = np.concatenate([np.geomspace(1e-5, 1e-1, 9), np.linspace(0.2, 1.0, 9)])
    assert rel_err(cld.transition(ts, 0.4), generic.transition(ts, 0.4)) <= 1e-12  # measured 6e-15
    assert rel_err(cld.covariance(ts), generic.covariance(ts)) <= 1e-12  # measured 3.7e-15


# ------------------------------------------------------------------------------- random stable A
MATRIX = st.integers(1, 4).flatmap(
    lambda k: arrays(np.float64, (k, k), elements=st.floats(-1.0, 1.0, allow_subnormal=False))
)


def stabilize(b, margin):
    """Shift ``b`` so that the largest real part of its eigenvalues is ``-margin``."""
    return b - (np.max(np.linalg.eigvals(b).real) + margin) * np.eye(b.shape[0])


@st.composite
def stable_constant_coefficient_sdes(draw):
    """``ConstantCoefficientSDE`` with random stable A, random PSD Q, PD Sigma_0, constant or linear beta."""
    b = draw(MATRIX)
    k = b.shape[0]
    square = arrays(np.float64, (k, k), elements=st.floats(-1.0, 1.0, allow_subnormal=False))
    c, d = draw(square), draw(square)
    A = stabilize(b, draw(st.floats(0.05, 1.0)))
    beta0, beta1 = draw(st.floats(0.2, 1.5)), draw(st.floats(-0.1, 1.0))
    integral = (lambda t: beta0 * t + 0.5 * beta1 * t * t) if draw(st.booleans()) else None
    return gd.ConstantCoefficientSDE(
        A, c @ c.T, beta=lambda t: beta0 + beta1 * np.asarray(t), beta_integral=integral,
        initial_covariance=d @ d.T + 0.1 * np.eye(k),
    )


@given(stable_constant_coefficient_sdes())
def test_random_stable_transition_matches_ode(sde):
    r"""For random stable A and :math:`\beta(t)`, :math:`\Psi(t,s)` by expm equals the ODE solution (forwards and backwards)."""
    ts = np.linspace(0.0, 1.0, 11)
    for s in (0.0, 1.0):
        assert rel_err(sde.transition(ts, s), psi_by_ode(sde, s, ts)) <= 1e-10  # measured 6.8e-14 over 300 examples


@given(stable_constant_coefficient_sdes())
def test_random_stable_covariance_matches_lyapunov_ode(sde):
    r"""For random stable A, PSD Q and PD :math:`\Sigma_0`, Van Loan's :math:`\Sigma_t` equals the Lyapunov ODE."""
    ts = np.linspace(0.0, 1.0, 11)
    ref = sigma_by_lyapunov(sde, 0.0, sde.initial_covariance, ts)
    assert rel_err(sde.covariance(ts), ref) <= 1e-10  # measured 6.2e-13


def test_eigenbasis_covariance_handles_opposite_eigenvalues():
    r"""Eigenvalues :math:`\pm 0.5` give :math:`\lambda_i + \lambda_j = 0` (:math:`\varphi_1(0) = 1`): still the Lyapunov ODE."""
    v = np.array([[1.0, 0.4], [0.2, 1.0]])
    A = v @ np.diag([0.5, -0.5]) @ np.linalg.inv(v)
    sde = gd.ConstantCoefficientSDE(A, np.array([[1.0, 0.3], [0.3, 0.5]]), beta=0.7, initial_covariance=np.eye(2))
    assert sde._eigen is not None  # the closed-form path is the one under test
    ts = np.linspace(0.0, 1.0, 11)
    assert rel_err(sde.covariance(ts), sigma_by_lyapunov(sde, 0.0, sde.initial_covariance, ts)) <= 1e-10  # measured 5.3e-14


@given(stable_constant_coefficient_sdes())
def test_eigenbasis_and_van_loan_covariances_agree(sde):
    """The closed form in A's eigenbasis and the sub-stepped Van Loan block exponential give the same Sigma."""
    ts = np.linspace(0.0, 1.0, 11)
    fast = sde.covariance(ts)
    sde.__dict__["_eigen"] = None  # the cached eigendecomposition withheld: the Van Loan path
    assert rel_err(fast, sde.covariance(ts)) <= 1e-10  # measured 1.7e-12 (worst of 200 examples)


# ------------------------------------------------------------------------------- time-varying, non-commuting F
@st.composite
def rotating_frame_systems(draw):
    r"""``(A0, W, Q, Sigma0)``: :math:`F_t = e^{tW}A_0e^{-tW}`, :math:`GG^\top_t = e^{tW}Qe^{-tW}`, W skew, :math:`[A_0, W] \ne 0`."""
    k = draw(st.integers(2, 3))
    square = arrays(np.float64, (k, k), elements=st.floats(-1.0, 1.0, allow_subnormal=False))
    a0 = stabilize(draw(square), draw(st.floats(0.05, 1.0)))
    if k == 2:
        w = np.array([[0.0, -1.0], [1.0, 0.0]])
    else:
        axis = draw(arrays(np.float64, 3, elements=st.floats(-1.0, 1.0, allow_subnormal=False)))
        assume(np.linalg.norm(axis) > 0.1)
        x, y, z = axis / np.linalg.norm(axis)
        w = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    w = draw(st.floats(0.5, 3.0)) * w
    assume(np.linalg.norm(a0 @ w - w @ a0) > 0.1)
    c, d = draw(square), draw(square)
    return a0, w, c @ c.T, d @ d.T + 0.1 * np.eye(k)


def rotation(w, t):
    r""":math:`e^{tW}` for non-zero skew ``W`` of size 2 or 3 by Rodrigues' formula, :math:`\theta = \|W\|_F/\sqrt2`."""
    theta = np.linalg.norm(w) / np.sqrt(2.0)
    return np.eye(w.shape[0]) + np.sin(theta * t) / theta * w + (1.0 - np.cos(theta * t)) / theta**2 * (w @ w)


def rotating_frame_sde(a0, w, q, sigma0):
    """The rotating-frame system as a ``LinearSDE`` of callables."""
    def f(t):
        rot = rotation(w, t)
        return rot @ a0 @ rot.T

    def ggt(t):
        rot = rotation(w, t)
        return rot @ q @ rot.T

    return gd.LinearSDE(f, ggt, initial_covariance=sigma0)


FEW = settings(max_examples=max(3, settings().max_examples // 4))  # each example is a fresh LinearSDE solve


@FEW
@given(rotating_frame_systems())
def test_time_varying_transition_matches_rotating_frame_closed_form(system):
    r""":math:`\Psi(t,s) = e^{tW}e^{(t-s)(A_0 - W)}e^{-sW}` for the non-commuting :math:`F_t = e^{tW}A_0e^{-tW}`."""
    a0, w, _, _ = system
    sde = rotating_frame_sde(*system)
    ts = np.linspace(0.0, 1.0, 11)
    for s in (0.0, 0.4, 1.0):
        ref = np.stack([expm(t * w) @ expm((t - s) * (a0 - w)) @ expm(-s * w) for t in ts])[:, None]
        assert rel_err(sde.transition(ts, s), ref) <= 1e-10  # measured 1.6e-12


@FEW
@given(rotating_frame_systems())
def test_time_varying_transition_matches_ode_from_each_start(system):
    r""":math:`\Psi(t,s)` of a ``LinearSDE`` equals a fresh ODE solve started at ``s`` (not at 0)."""
    sde = rotating_frame_sde(*system)
    ts = np.linspace(0.0, 1.0, 11)
    for s in (0.4, 1.0):
        assert rel_err(sde.transition(ts, s), psi_by_ode(sde, s, ts)) <= 1e-10  # measured 2.8e-12


@FEW
@given(rotating_frame_systems())
def test_time_varying_covariance_matches_rotating_frame_van_loan(system):
    r""":math:`\Sigma_t = e^{tW}\tilde\Sigma_te^{-tW}` with :math:`\tilde\Sigma` the Van Loan covariance of :math:`(A_0 - W, Q)`."""
    a0, w, q, sigma0 = system
    sde = rotating_frame_sde(*system)
    ts = np.linspace(0.05, 1.0, 11)
    ref = np.stack([expm(t * w) @ van_loan_covariance(a0 - w, q, sigma0, t, 16) @ expm(-t * w) for t in ts])[:, None]
    assert rel_err(sde.covariance(ts), ref) <= 1e-10  # measured 1.2e-12
