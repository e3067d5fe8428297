r"""Baseline samplers (``em``, ``euler``, ``heun``, ``sscs``, ``ancestral``, ``rk45``, ``dop853``).

Every reference here is computed independently of the sampler code: VP and BDM closed forms
(docs/math §5.1, §5.4) and CLD's matrices (§5.3) written out below, textbook Euler–Maruyama and Heun
steps, ``scipy.linalg.expm`` and a ``solve_ivp`` Lyapunov solve for SSCS's linear half steps, the
BDM pseudo-code's ancestral formulas per frequency with ``scipy.fft.dctn``, the exact
probability-flow solution for Gaussian data (§8.2), and a small exact propagation of a Gaussian
law through an affine sampler's tables (§8.4).
"""

import numpy as np
import pytest
import scipy.fft
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import gddim_numerics as gd
from gddim_numerics.samplers import ancestral as anc_mod, em as em_mod, heun as heun_mod, ivp as ivp_mod, sscs as sscs_mod
from gddim_numerics.plans import stochastic_tables

# ---------------------------------------------------------------- VP closed forms (docs/math §5.1)
B_MIN, B_MAX = 0.1, 20.0
DATA_MEAN, DATA_VAR = 0.5, 0.25  # 1-D Gaussian data x0 ~ N(0.5, 0.25)


def vp_beta(t):
    return B_MIN + t * (B_MAX - B_MIN)


def vp_mean(t):
    """m_t = sqrt(alpha_bar_t)."""
    return np.exp(-0.5 * (B_MIN * t + 0.5 * (B_MAX - B_MIN) * t * t))


def vp_var(t):
    """sigma_t^2 = 1 - alpha_bar_t."""
    return -np.expm1(-(B_MIN * t + 0.5 * (B_MAX - B_MIN) * t * t))


def gauss_var(t):
    """Marginal variance C_t = m_t^2 s^2 + sigma_t^2 of the Gaussian data."""
    return vp_mean(t) ** 2 * DATA_VAR + vp_var(t)


def gauss_eps(x, t):
    """Exact eps_R = sigma_t (x - m_t mu) / C_t (docs/math §8.1)."""
    return np.sqrt(vp_var(t)) * (x - vp_mean(t) * DATA_MEAN) / gauss_var(t)


def exact_flow(x, s, t):
    """Exact PF-ODE map from s to t for the Gaussian data (docs/math §8.2, commuting case)."""
    return vp_mean(t) * DATA_MEAN + np.sqrt(gauss_var(t) / gauss_var(s)) * (x - vp_mean(s) * DATA_MEAN)


# ---------------------------------------------------------------- CLD matrices (docs/math §5.3)
def cld_parts(gamma=1.0, mass_inv=4.0, beta=4.0):
    """F = beta A, GG^T = beta Q, and the drift of SSCS's A part per unit beta (docs/math §4.3)."""
    a = np.array([[0.0, mass_inv], [-1.0, -gamma * mass_inv]])
    q = np.diag([0.0, 2.0 * gamma])
    a_split = np.array([[0.0, -mass_inv], [1.0, -gamma * mass_inv]])  # dx = -M^-1 v, dv = x - Gamma M^-1 v
    return beta * a, beta * q, a_split, q


def blocks(mat, x):
    """Apply a (2, 2) matrix to the trailing [x, v] axis."""
    return x @ mat.T


def nonlinear_score(x, t):
    """An arbitrary smooth 'network' (one-step checks do not need a true score)."""
    return -np.tanh(x) * (1.0 + t) + 0.1 * np.cos(3.0 * x)


# ---------------------------------------------------------------- one-step updates
def test_em_one_step_is_euler_maruyama_on_the_lambda_family_cld():
    """u + dt (F u - (1+lam^2)/2 GG^T s) + lam G sqrt(|dt|) z, with G = diag(0, sqrt(2 Gamma beta))."""
    sde = gd.CLD()
    s, t, lam = 0.6, 0.45, 0.7
    dt = t - s
    f, gg, _, _ = cld_parts()
    g = np.sqrt(gg)  # diagonal
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 2))
    z = rng.standard_normal(x.shape)
    res = gd.sample(sde, nonlinear_score, x, method="em", nfe=1, grid=np.array([s, t]), lam=lam, output="score",
                    noise=lambda step, shape: z)
    score = nonlinear_score(x, s)
    expected = x + dt * (blocks(f, x) - 0.5 * (1 + lam**2) * blocks(gg, score)) + lam * np.sqrt(-dt) * blocks(g, z)
    np.testing.assert_allclose(res.x, expected, rtol=1e-13, atol=1e-13)  # measured 0.002 x tolerance
    # the noise factor N has N N^T = lam^2 |dt| G G^T (the one-step covariance)
    n = em_mod.em_tables(sde, [s, t], lam=lam).noise[0, 0]
    np.testing.assert_allclose(n @ n.T, lam**2 * abs(dt) * gg, atol=1e-14)  # measured 0
    # the same step from an eps_R network (eps_R = -R^T s) gives the same state
    r = sde.gddim_factor(s)[0]
    res_eps = gd.sample(sde, lambda x, t: -blocks(r.T, nonlinear_score(x, t)), x, method="em", nfe=1,
                        grid=np.array([s, t]), lam=lam, noise=lambda step, shape: z)
    np.testing.assert_allclose(res_eps.x, expected, rtol=1e-12, atol=1e-12)  # measured 0.0002 x tolerance


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_euler_and_em_one_step_vp(lam):
    """u + dt (F u + (1+lam^2)/2 GG^T R^{-T} eps) (+ lam sqrt(beta |dt|) z) with VP's closed forms."""
    sde = gd.VPSDE.linear()
    s, t = 0.8, 0.5
    dt = t - s
    x = np.linspace(-2.0, 2.0, 12).reshape(3, 4)
    z = np.cos(np.arange(12.0)).reshape(3, 4)

    def eps(x, t):
        return np.sin(x) + t

    method = "euler" if lam == 0 else "em"
    options = {} if lam == 0 else dict(lam=lam)
    res = gd.sample(sde, eps, x, method=method, nfe=1, grid=np.array([s, t]),
                    noise=lambda step, shape: z, **options)
    beta = vp_beta(s)
    expected = x + dt * (-0.5 * beta * x + 0.5 * (1 + lam**2) * beta * eps(x, s) / np.sqrt(vp_var(s)))
    expected = expected + lam * np.sqrt(beta * abs(dt)) * z
    np.testing.assert_allclose(res.x, expected, rtol=1e-13, atol=1e-13)  # measured 0.006 x tolerance


def heun_reference(velocity, x, s, t, final_euler=False):
    """Textbook Heun step (explicit trapezoid); Euler when ``final_euler``."""
    k1 = velocity(x, s)
    x_pred = x + (t - s) * k1
    if final_euler:
        return x_pred
    return x + 0.5 * (t - s) * (k1 + velocity(x_pred, t))


@pytest.mark.parametrize("final_euler", [False, True])
def test_heun_one_step_vp_and_cld(final_euler):
    """Heun's step against the textbook formula on the PF velocity F u - 1/2 GG^T s(u, t)."""
    s, t = 0.7, 0.4
    nfe = 1 if final_euler else 2
    x_vp = np.linspace(-1.5, 1.5, 8).reshape(2, 4)
    ref_vp = heun_reference(lambda x, t: -0.5 * vp_beta(t) * x - 0.5 * vp_beta(t) * nonlinear_score(x, t),
                            x_vp, s, t, final_euler)
    plan = heun_mod.Heun(gd.VPSDE.linear(), [s, t], output="score", final_euler=final_euler)
    res = plan.sample(nonlinear_score, x_vp)
    assert res.nfe == plan.nfe == nfe
    np.testing.assert_allclose(res.x, ref_vp, rtol=1e-13, atol=1e-13)  # measured 0.003 x tolerance

    f, gg, _, _ = cld_parts()
    x_cld = np.random.default_rng(2).standard_normal((3, 2))
    ref_cld = heun_reference(lambda x, t: blocks(f, x) - 0.5 * blocks(gg, nonlinear_score(x, t)), x_cld, s, t,
                             final_euler)
    res = heun_mod.Heun(gd.CLD(), [s, t], output="score", final_euler=final_euler).sample(nonlinear_score, x_cld)
    np.testing.assert_allclose(res.x, ref_cld, rtol=1e-13, atol=1e-13)  # measured 0.004 x tolerance


def test_heun_one_step_bdm_in_frequency_space():
    """Heun on BDM: the same textbook step written per DCT frequency with ``scipy.fft.dctn``."""
    sde = gd.BDM((4, 4))
    s, t = 0.7, 0.5
    x = np.random.default_rng(3).standard_normal((2, 1, 4, 4))

    def score(x, t):
        return -x * (1.0 + t) + 0.2

    def velocity(x, t):  # per frequency: f_k y - 1/2 g_k^2 score_y
        fk = sde.drift(t)[:, 0, 0].reshape(4, 4)
        gk = sde.diffusion(t)[:, 0, 0].reshape(4, 4)
        y = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))
        sy = scipy.fft.dctn(score(x, t), type=2, norm="ortho", axes=(-2, -1))
        return scipy.fft.idctn(fk * y - 0.5 * gk * sy, type=2, norm="ortho", axes=(-2, -1))

    res = gd.sample(sde, score, x, method="heun", nfe=2, grid=np.array([s, t]), output="score")
    np.testing.assert_allclose(res.x, heun_reference(velocity, x, s, t), rtol=1e-12, atol=1e-12)  # measured 0.0005 x tolerance


# ---------------------------------------------------------------- SSCS
def lyapunov_solve(a, q, b):
    """P(b) of dP/dr = a P + P a^T + q, P(0) = 0, by DOP853 (rtol 1e-12)."""
    sol = solve_ivp(lambda r, p: (a @ p.reshape(2, 2) + p.reshape(2, 2) @ a.T + q).ravel(), (0.0, b),
                    np.zeros(4), method="DOP853", rtol=1e-12, atol=1e-15)
    return sol.y[:, -1].reshape(2, 2)


@pytest.mark.parametrize("gamma", [1.0, 0.5])
@pytest.mark.parametrize("s, t", [(1.0, 0.55), (0.4, 0.35), (2e-3, 1.5e-3)])
def test_sscs_half_step_against_expm_and_lyapunov(gamma, s, t):
    """Mean map exp(b A_split), covariance by the Lyapunov ODE, and the stationary-reversal identity."""
    sde = gd.CLD(gamma_friction=gamma)
    _, _, a_split, q = cld_parts(gamma=gamma)
    b = 4.0 * (s - t)  # beta = 4
    phi, p = sscs_mod.sscs_half_step(sde, s, t)
    np.testing.assert_allclose(phi[0], expm(b * a_split), rtol=1e-12, atol=1e-14)  # measured 0.01 x tolerance
    ref = lyapunov_solve(a_split, q, b)
    np.testing.assert_allclose(p[0], ref, rtol=1e-8, atol=1e-13 * np.abs(ref).max())  # measured 0.09 x tolerance
    # A is the time reversal of the stationary forward diffusion N(0, diag(1, M)):
    sig_inf = np.diag([1.0, 0.25])
    psi = sde.transition(s, t)[0]
    np.testing.assert_allclose(phi[0], sig_inf @ psi.T @ np.linalg.inv(sig_inf), rtol=1e-11, atol=1e-14)  # measured 0.002 x tolerance
    np.testing.assert_allclose(p[0], sig_inf - phi[0] @ sig_inf @ phi[0].T, atol=1e-13)  # measured 6e-05 x tolerance


def test_sscs_one_step_law():
    """One SSCS step with a linear score: mean and covariance against A(1/2) S A(1/2) composed here."""
    sde = gd.CLD()
    s, t = 0.5, 0.3
    m, dr = 0.5 * (s + t), s - t
    _, gg, a_split, q = cld_parts()
    k_mat = np.array([[1.3, 0.2], [0.4, 2.1]])

    def score(x, t):  # a linear "network": s = -K u
        return -blocks(k_mat, x)

    u = np.array([0.3, -0.8])
    # samples: [no noise, z1 = e0, z1 = e1, z2 = e0, z2 = e1]
    z = np.zeros((2, 5, 2))
    z[0, 1, 0] = z[0, 2, 1] = z[1, 3, 0] = z[1, 4, 1] = 1.0
    res = sscs_mod.SSCS(sde, [s, t], output="score").sample(score, np.tile(u, (5, 1)),
                                                      noise=lambda index, shape: z[index])
    phi1, p1 = expm(4.0 * (s - m) * a_split), lyapunov_solve(a_split, q, 4.0 * (s - m))
    phi2, p2 = expm(4.0 * (m - t) * a_split), lyapunov_solve(a_split, q, 4.0 * (m - t))
    kick = np.eye(2) + dr * gg @ (np.diag([1.0, 4.0]) - k_mat)  # v' = v + dr GG^T (Sigma_inf^-1 v + s)
    mean = phi2 @ kick @ phi1 @ u
    cov = phi2 @ kick @ p1 @ kick.T @ phi2.T + p2
    np.testing.assert_allclose(res.x[0], mean, rtol=1e-11, atol=1e-13)  # measured 0.0001 x tolerance
    jac = (res.x[1:] - res.x[0]).T  # columns: d out / d z1_j, d out / d z2_j
    np.testing.assert_allclose(jac @ jac.T, cov, rtol=1e-8, atol=1e-13)  # measured 6e-07 x tolerance


# ---------------------------------------------------------------- ancestral
def bdm_alpha_sigma(t, n=4):
    """gDDIM-code BDM per frequency (docs/math §5.4): alpha_t = a_t d_t and sigma_t^2."""
    abar = np.cos((t + 0.004) / 1.008 * np.pi / 2) ** 2
    i = np.arange(n)
    lam = ((np.pi * i / n) ** 2)[:, None] + ((np.pi * i / n) ** 2)[None, :]
    tau = 0.5 * (10.0 * np.sin(np.pi * t / 2) ** 2) ** 2
    d = (1 - 1e-3) * np.exp(-lam * tau) + 1e-3
    return np.sqrt(abar) * d, np.full((n, n), 1.0 - abar)


def bdm_ancestral_coefficients(t, s):
    """BDM pseudo-code step from t down to s: (coefficient of y_t, of eps, noise std), per frequency."""
    alpha_t, var_t = bdm_alpha_sigma(t)
    alpha_s, var_s = bdm_alpha_sigma(s)
    alpha_ts = alpha_t / alpha_s
    var_ts = var_t - alpha_ts**2 * var_s
    var_post = 1.0 / (1.0 / var_s + alpha_ts**2 / var_ts)
    c_y = alpha_ts * var_post / var_ts + var_post / (alpha_ts * var_s)
    c_eps = -var_post / (alpha_ts * var_s) * np.sqrt(var_t)
    return c_y, c_eps, np.sqrt(var_post)


def test_ancestral_tables_are_bdm_pseudo_code_and_stochastic_gddim_lambda_1():
    """Per frequency, the tables equal BDM's formulas and stochastic gDDIM with lam = 1."""
    sde = gd.BDM((4, 4))
    ts = np.array([0.9, 0.6, 0.3, 0.05])
    tab = anc_mod.ancestral_tables(sde, ts)
    for k in range(3):
        c_y, c_eps, std = bdm_ancestral_coefficients(ts[k], ts[k + 1])
        np.testing.assert_allclose(tab.state[k, :, 0, 0], c_y.ravel(), rtol=1e-11)  # measured 1.7e-15 (relative)
        np.testing.assert_allclose(tab.history[k, 0, :, 0, 0], c_eps.ravel(), rtol=1e-10, atol=1e-14)  # measured 2e-05 x tolerance
        np.testing.assert_allclose(tab.noise[k, :, 0, 0], std.ravel(), rtol=1e-11)  # measured 4.5e-15 (relative)
    sto = stochastic_tables(sde, ts, lam=1.0)
    np.testing.assert_allclose(tab.state, sto.state, rtol=1e-11)  # measured 2.1e-16 (relative)
    np.testing.assert_allclose(tab.history, sto.history, rtol=1e-10, atol=1e-14)  # measured 2e-06 x tolerance
    np.testing.assert_allclose(tab.noise, sto.noise, rtol=1e-10)  # measured 1.7e-16 (relative)


def test_ancestral_one_step_bdm_in_frequency_space():
    """One ancestral step on images: y_s = c_y y_t + c_eps eps_y + std z_y per DCT frequency."""
    sde = gd.BDM((4, 4))
    s, t = 0.8, 0.55
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 4))
    z = rng.standard_normal(x.shape)

    def eps(x, t):
        return 0.5 * x + 0.1 * t

    res = gd.sample(sde, eps, x, method="ancestral", nfe=1, grid=np.array([s, t]),
                    noise=lambda step, shape: z)
    c_y, c_eps, std = bdm_ancestral_coefficients(s, t)
    dct = lambda a: scipy.fft.dctn(a, type=2, norm="ortho", axes=(-2, -1))  # noqa: E731
    y = c_y * dct(x) + c_eps * dct(eps(x, s)) + std * dct(z)
    np.testing.assert_allclose(res.x, scipy.fft.idctn(y, type=2, norm="ortho", axes=(-2, -1)), rtol=1e-11, atol=1e-12)  # measured 0.001 x tolerance


def test_ancestral_refuses_block_diffusions():
    """CLD has k = 2 blocks: ancestral sampling is not defined there; the error names the alternatives."""
    with pytest.raises(ValueError, match="k = 1"):
        gd.sample(gd.CLD(), nonlinear_score, np.zeros((1, 2)), method="ancestral", nfe=4)


# ---------------------------------------------------------------- exact evaluation counts
COUNT_CASES = [
    ("em", "vp", 6, {}),
    ("em", "cld", 6, dict(denoise=True)),
    ("euler", "bdm", 4, {}),
    ("heun", "vp", 6, {}),
    ("heun", "vp", 5, dict(final_euler=True)),
    ("heun", "cld", 7, dict(denoise=True)),
    ("sscs", "cld", 5, dict(denoise=True)),
    ("ancestral", "bdm", 5, {}),
    ("ancestral", "vp", 5, dict(denoise=True)),
]
DIFFUSIONS = {"vp": (gd.VPSDE.linear, (2, 3)), "cld": (gd.CLD, (2, 3, 2)), "bdm": (lambda: gd.BDM((4, 4)), (2, 4, 4))}


@pytest.mark.parametrize("method, name, nfe, options", COUNT_CASES)
def test_exact_evaluation_count(method, name, nfe, options):
    """The network is called exactly nfe times, and the result says so."""
    make, shape = DIFFUSIONS[name]
    calls = []

    def eps(x, t):
        calls.append(t)
        return 0.1 * x

    res = gd.sample(make(), eps, np.ones(shape), method=method, nfe=nfe, rng=0, **options)
    assert len(calls) == res.nfe == nfe
    assert res.success and np.all(np.isfinite(res.x))
    if options.get("denoise"):
        assert res.ts[-1] == 0.0 and calls[-1] == res.ts[-2]


@pytest.mark.parametrize("method, denoise", [("rk45", False), ("dop853", True)])
def test_adaptive_counts_and_budget(method, denoise):
    """rk45/dop853: the measured count equals scipy's nfev (+1 denoise); a small budget stops the solve."""
    sde = gd.VPSDE.linear()
    calls = []

    def eps(x, t):
        calls.append(t)
        return gauss_eps(x, t)

    x = np.linspace(-2.0, 2.0, 6).reshape(2, 3)
    res = gd.sample(sde, eps, x, method=method, nfe=100_000, rtol=1e-6, atol=1e-8, denoise=denoise)
    assert res.success and len(calls) == res.nfe == res.info["nfev"] + int(denoise)
    calls.clear()
    res = gd.sample(sde, eps, x, method=method, nfe=30, rtol=1e-10, atol=1e-10)
    assert not res.success and res.status == -1 and "budget" in res.message
    assert len(calls) == res.nfe <= 30 and res.ts[-1] > sde.t_end


# ---------------------------------------------------------------- convergence on Gaussian data
def output_law(tables):
    """Exact mean and variance of an affine sampler's output on the 1-D VP Gaussian problem.

    Written here from the StepTables definition: h_k = eps_R(u_k, t_k) = W_k u_k + w_k (exact,
    affine), u_{k+1} = A_k u_k + B_k h_k + N_k z_k, started from the exact marginal at ts[0].
    """
    assert tables.input_state is None and tables.input_output is None and tables.max_order == 1
    ts = tables.ts
    mean, var = vp_mean(ts[0]) * DATA_MEAN, gauss_var(ts[0])
    for k in range(tables.n_steps):
        w_lin = np.sqrt(vp_var(ts[k])) / gauss_var(ts[k])
        w_off = -w_lin * vp_mean(ts[k]) * DATA_MEAN
        a, b = tables.state[k, 0, 0, 0], tables.history[k, 0, 0, 0, 0]
        n = 0.0 if tables.noise is None else tables.noise[k, 0, 0, 0]
        mean = (a + b * w_lin) * mean + b * w_off
        var = (a + b * w_lin) ** 2 * var + n**2
    return mean, var


def law_error(tables):
    """W2 distance of the output law to the true marginal N(m_t mu, C_t) at the grid's end."""
    mean, var = output_law(tables)
    t = tables.ts[-1]
    return np.hypot(mean - vp_mean(t) * DATA_MEAN, np.sqrt(var) - np.sqrt(gauss_var(t)))


def fitted_order(nfes, errors):
    return -np.polyfit(np.log(nfes), np.log(errors), 1)[0]


@pytest.mark.parametrize("build", [lambda sde, ts: em_mod.em(sde, ts, lam=1.0), lambda sde, ts: em_mod.em(sde, ts, lam=0.5),
                                   anc_mod.ancestral], ids=["em", "em-lam0.5", "ancestral"])
def test_em_and_ancestral_converge_in_distribution(build):
    """Exact output laws on Gaussian data: the W2 error falls at first order in the NFE."""
    sde = gd.VPSDE.linear()
    nfes = np.array([40, 80, 160, 320])
    errors = np.array([law_error(build(sde, gd.time_grid(sde, int(n), "power")).tables) for n in nfes])
    assert np.all(np.diff(errors) < 0)
    assert 0.85 < fitted_order(nfes, errors) < 1.15, errors  # measured 1.02


def test_em_with_lambda_zero_is_euler():
    """lam = 0 is the probability-flow Euler sampler (no noise table)."""
    sde = gd.VPSDE.linear()
    ts = gd.time_grid(sde, 10)
    a, b = em_mod.em(sde, ts, lam=0.0).tables, em_mod.euler(sde, ts).tables
    assert a.noise is None and b.noise is None
    np.testing.assert_array_equal(a.state, b.state)
    np.testing.assert_array_equal(a.history, b.history)


# ---------------------------------------------------------------- deterministic solvers vs the exact flow
@pytest.mark.parametrize("method, rtol, tol", [("rk45", 1e-10, 1e-8), ("dop853", 1e-12, 1e-10)])
def test_adaptive_solvers_match_the_exact_flow(method, rtol, tol):
    """At tight tolerances RK45/DOP853 reproduce the closed-form PF solution for Gaussian data."""
    sde = gd.VPSDE.linear()
    x = np.linspace(-3.0, 3.0, 8).reshape(2, 4)
    res = gd.sample(sde, gauss_eps, x, method=method, nfe=100_000, rtol=rtol, atol=rtol)
    assert res.success and res.ts[0] == sde.t_start and res.ts[-1] == sde.t_end
    np.testing.assert_allclose(res.x, exact_flow(x, sde.t_start, sde.t_end), rtol=tol, atol=tol)  # measured 0.02 x tolerance


@pytest.mark.parametrize("method, order", [("euler", 1.0), ("heun", 2.0)])
def test_euler_and_heun_orders_on_the_exact_flow(method, order):
    """Global error vs the exact flow: slopes 1 (Euler) and 2 (Heun) on a uniform grid."""
    sde = gd.VPSDE.linear()
    x = np.array([[-1.0, 0.3, 2.0]])
    exact = exact_flow(x, 1.0, sde.t_end)
    nfes = np.array([40, 80, 160])
    errors = [np.abs(gd.sample(sde, gauss_eps, x, method=method, nfe=int(n), grid="uniform").x - exact).max()
              for n in nfes]
    assert abs(fitted_order(nfes, errors) - order) < 0.25, errors  # measured 7.3e-02


# ---------------------------------------------------------------- other array libraries
def test_heun_sscs_and_rk45_on_other_array_libraries():
    """array-api-strict and PyTorch states give the NumPy results, in their own array type."""
    xps = pytest.importorskip("array_api_strict")
    torch = pytest.importorskip("torch")
    sde, vp = gd.CLD(), gd.VPSDE.linear()
    rng = np.random.default_rng(5)
    x, z = rng.standard_normal((3, 2)), rng.standard_normal((4, 3, 2))

    def eps_np(x, t):
        return 0.3 * x

    def eps_xp(x, t):
        return 0.3 * x

    ref = heun_mod.Heun(sde, [0.8, 0.5, 0.2]).sample(eps_np, x).x
    out = heun_mod.Heun(sde, [0.8, 0.5, 0.2]).sample(eps_xp, xps.asarray(x))
    np.testing.assert_allclose(np.from_dlpack(out.x), ref, rtol=1e-13)  # measured 0

    ref = sscs_mod.SSCS(sde, [0.8, 0.5, 0.2]).sample(eps_np, x, noise=lambda i, shape: z[i]).x
    out = sscs_mod.SSCS(sde, [0.8, 0.5, 0.2]).sample(eps_xp, torch.from_numpy(x),
                                               noise=lambda i, shape: torch.from_numpy(z[i]))
    assert isinstance(out.x, torch.Tensor)
    np.testing.assert_allclose(out.x.numpy(), ref, rtol=1e-13)  # measured 2.5e-15 (relative)

    xv = np.linspace(-1.0, 1.0, 4).reshape(1, 4)
    ref = gd.sample(vp, gauss_eps, xv, method="rk45", nfe=10_000)
    out = gd.sample(vp, lambda x, t: torch.from_numpy(gauss_eps(x.numpy(), t)), torch.from_numpy(xv),
                    method="rk45", nfe=10_000)
    assert isinstance(out.x, torch.Tensor) and out.nfe == ref.nfe
    np.testing.assert_allclose(out.x.numpy(), ref.x, rtol=1e-13)  # measured 0


# ---------------------------------------------------------------- bad input
def test_unknown_method_lists_the_baselines():
    with pytest.raises(ValueError, match="unknown method") as err:
        gd.sample(gd.VPSDE.linear(), gauss_eps, np.zeros((1, 2)), method="rk4")
    for name in ("em", "euler", "heun", "sscs", "ancestral", "rk45", "dop853", "gddim"):
        assert name in str(err.value)


@pytest.mark.parametrize("method, nfe, options, match", [
    ("heun", 1, {}, ">= 2"),
    ("heun", 5, {}, "final_euler"),
    ("heun", 6, dict(denoise=True), "final_euler"),
    ("rk45", 7, {}, ">= 8"),
    ("dop853", 13, {}, ">= 14"),
    ("em", 0, {}, ">= 1"),
    ("em", 1, dict(denoise=True), "no step"),
])
def test_nfe_below_a_methods_minimum(method, nfe, options, match):
    with pytest.raises(ValueError, match=match):
        gd.sample(gd.VPSDE.linear(), gauss_eps, np.zeros((1, 2)), method=method, nfe=nfe, **options)


@pytest.mark.parametrize("sde", [gd.VPSDE.linear(), gd.BDM((4, 4))], ids=["vp", "bdm"])
def test_sscs_needs_cld(sde):
    with pytest.raises(ValueError, match="CLD"):
        gd.sample(sde, gauss_eps, np.zeros((1, 4, 4)), method="sscs", nfe=4)


@pytest.mark.parametrize("make, match", [
    (lambda vp: em_mod.em(vp, [1.0, 0.5], lam=-0.5), "lam"),
    (lambda vp: em_mod.em(vp, [1.0, 0.5], output="x0"), "eps_R"),
    (lambda vp: heun_mod.Heun(vp, [1.0, 0.5, 0.0]), "final_euler"),
    (lambda vp: anc_mod.ancestral(vp, [1.0, 0.5, 0.0], denoise=True), "t_end > 0"),
    (lambda vp: ivp_mod.ProbabilityFlowIVP(vp, "RK4"), "solver"),
    (lambda vp: ivp_mod.ProbabilityFlowIVP(vp, rtol=0.0), "rtol"),
    (lambda vp: ivp_mod.ProbabilityFlowIVP(vp, atol=np.nan), "atol"),
    (lambda vp: ivp_mod.ProbabilityFlowIVP(vp, t_start=0.1, t_end=0.5), "decreasing"),
])
def test_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make(gd.VPSDE.linear())


def test_nonfinite_network_outputs_are_reported():
    """NaN from the network: FloatingPointError naming the evaluation and time, or success=False."""
    sde = gd.VPSDE.linear()

    def eps(x, t):
        return x * np.nan if t < 0.9 else x

    with pytest.raises(FloatingPointError, match="evaluation 1"):
        gd.sample(sde, eps, np.ones((1, 2)), method="heun", nfe=4, grid="uniform")
    res = gd.sample(sde, eps, np.ones((1, 2)), method="heun", nfe=4, grid="uniform",
                    on_nonfinite="return")
    assert not res.success and "NaN" in res.message
    with pytest.raises(FloatingPointError, match="NaN"):
        gd.sample(sde, eps, np.ones((1, 2)), method="rk45", nfe=1000)


def test_callbacks_and_trajectories_of_the_loop_samplers():
    """Heun/SSCS report each step (with the data prediction) and the denoising step after them."""
    sde = gd.CLD()
    x = np.random.default_rng(6).standard_normal((2, 2))

    def data(x, t):  # a 'data' network: the callback's x0_pred is its output
        return 0.5 * x

    for plan in (heun_mod.Heun(sde, [0.9, 0.5, 0.2], output="data", denoise=True),
                 sscs_mod.SSCS(sde, [0.9, 0.5, 0.2], output="data", denoise=True)):
        infos = []
        res = plan.sample(data, x, rng=0, callback=infos.append, return_trajectory=True)
        assert [i.step for i in infos] == [0, 1, 2] and infos[-1].nfe == res.nfe == plan.nfe
        assert [i.t for i in infos] == [0.9, 0.5, 0.2] and infos[-1].t_next == 0.0
        for info in infos:
            np.testing.assert_allclose(info.x0_pred, info.eps, rtol=1e-12)  # measured 0
        assert len(res.trajectory) == len(res.ts) == 4
        np.testing.assert_array_equal(res.trajectory[-1], res.x)
