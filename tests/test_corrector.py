"""The evaluation-free PEC corrector (MATH.md §3.9), folded into the step tables.

Independent references: an explicit predict-evaluate-correct loop written here, with its predictor
and corrector weights integrated by ``scipy.integrate.quad_vec`` from the kernels of MATH.md
§3.3/§3.8; the exact Dirac flow; a DOP853 solve of the Gaussian probability-flow ODE.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad_vec

import gddim_numerics as gd
from gaussian_helpers import Gaussian, relative_error
from test_data_form import VARIABLES, dirac_case, dirac_tolerance, variable_of


def lagrange(nodes, j, x):
    out = 1.0
    for i, p in enumerate(nodes):
        if i != j:
            out = out * (x - p) / (nodes[j] - p)
    return out


def kernel(sde, form, t, tau):
    """Integrand of the weights (per-mode blocks), written from MATH.md §3.3 / §3.8."""
    tau_a = np.asarray(tau)
    r_tau = sde.gddim_factor(tau_a)
    if form == "eps":
        return 0.5 * sde.transition(t, tau_a) @ sde.diffusion(tau_a) @ np.swapaxes(np.linalg.inv(r_tau), -1, -2)
    return -0.5 * sde.gddim_factor(t) @ np.linalg.inv(r_tau) @ sde.diffusion(tau_a) @ \
        np.linalg.inv(sde.covariance(tau_a)) @ sde.mean_coefficient(tau_a)


def weights(sde, form, ts, k, nodes_idx, phi):
    """quad_vec weights of step k (ts[k] -> ts[k+1]) on the Lagrange nodes ts[nodes_idx]."""
    nodes = phi(ts[nodes_idx])
    s, t = ts[k], ts[k + 1]

    def f(tau):
        kern = kernel(sde, form, t, tau)
        return np.stack([kern * lagrange(nodes, j, phi(np.array(tau))) for j in range(len(nodes))])

    return -quad_vec(f, t, s, epsabs=0, epsrel=1e-13)[0]  # oriented integral from s down to t


def explicit_pec(data, sde, ts, order, form, phi, x):
    """Predict, evaluate once at the predicted state, correct from the previous corrected state; no last correction."""
    op = data.op
    n = len(ts) - 1
    flat = x.reshape(x.shape[0], -1).T  # (D, B)

    def h_of(u, t):
        w, off = data.eps_affine(t)
        eps = w @ u + off[:, None]
        if form == "eps":
            return eps
        return op(np.linalg.inv(sde.mean_coefficient(t))) @ (u - data.factor(t) @ eps)

    def state(k):
        if form == "eps":
            return op(sde.transition(ts[k + 1], ts[k]))
        return op(sde.gddim_factor(ts[k + 1]) @ np.linalg.inv(sde.gddim_factor(ts[k])))

    base, evaluated, hist = flat, flat, []  # corrected state at t_k; state where the network is evaluated
    for k in range(n):
        hist.insert(0, h_of(evaluated, ts[k]))
        if k >= 1:  # correct step k-1 (from the corrected state at t_{k-1}) with nodes t_k, t_{k-1}, ...
            count = min(order, k) + 1
            w = weights(sde, form, ts, k - 1, k - np.arange(count), phi)
            base = state(k - 1) @ prev_base + sum(op(w[i]) @ hist[i] for i in range(count))
        count = min(order, k + 1)
        w = weights(sde, form, ts, k, k - np.arange(count), phi)
        prev_base = base
        evaluated = state(k) @ base + sum(op(w[j]) @ hist[j] for j in range(count))
    return evaluated.T.reshape(x.shape)


@pytest.mark.parametrize("name,form,order,variable", [
    ("vp", "data", 2, "t"), ("vp", "eps", 2, "log_t"), ("vp", "data", 3, "sqrt_t"),
    ("cld", "data", 2, "t"), ("cld", "data", 1, "log_t"), ("vp", "eps", 1, "t"),
])
def test_folded_tables_equal_explicit_pec(name, form, order, variable):
    """The folded one-evaluation-per-step tables reproduce an explicit PEC loop (quad_vec weights) to 1e-10."""
    make, ev = {"vp": (gd.VPSDE.linear, (2,)), "cld": (gd.CLD, (1, 2))}[name]
    sde = make()
    mu = np.array([0.5, -0.3]) if name == "vp" else np.array([0.5, 0.0])
    cov = 0.25 * np.eye(2) if name == "vp" else np.diag([0.25, 0.01 + 1e-6])
    data = Gaussian(sde, ev, mu, cov)
    ts = gd.time_grid(sde, 5, "power", power=2, t_end=0.05)
    x = np.random.default_rng(3).standard_normal((3,) + ev)
    phi = {"t": lambda t: np.asarray(t), "log_t": np.log, "sqrt_t": np.sqrt}[variable]
    calls = []

    def eps(xx, t):
        calls.append(t)
        return data.eps_fn()(xx, t)

    res = gd.GDDIM(sde, ts, order=order, form=form, variable=variable, corrector=True).sample(eps, x)
    assert res.nfe == len(calls) == 5
    ref = explicit_pec(data, sde, ts, order, form, phi, x)
    assert relative_error(res.x, ref) <= 1e-10
    plain = gd.GDDIM(sde, ts, order=order, form=form, variable=variable).sample(data.eps_fn(), x)
    assert relative_error(plain.x, ref) > 1e-6  # the corrector does change the result


def test_first_row_unchanged_and_last_step_not_corrected():
    """Only rows k >= 1 change (they carry the correction of step k - 1); a 2-step plan's output is the
    predictor of step 1 from the corrected state, with nothing after it."""
    sde = gd.VPSDE.linear()
    ts = gd.time_grid(sde, 2, "power", power=3)
    plain = gd.GDDIM(sde, ts, order=2, form="data").tables
    corr = gd.GDDIM(sde, ts, order=2, form="data", corrector=True).tables
    np.testing.assert_array_equal(corr.history[0, :1], plain.history[0, :1])
    np.testing.assert_array_equal(corr.state, plain.state)
    assert not np.allclose(corr.history[1, :2], plain.history[1, :2])
    assert list(corr.orders) == [1, 2]


@settings(deadline=None, max_examples=12)
@given(name=st.sampled_from(["vp", "cld", "bdm", "dense"]), order=st.integers(1, 5),
       nfe=st.sampled_from([2, 3, 5, 10, 20]), variable=st.sampled_from(VARIABLES),
       kind=st.sampled_from(["power", "log", "log_snr"]), seed=st.integers(0, 3))
def test_data_form_corrector_is_exact_on_dirac_data(name, order, nfe, variable, kind, seed):
    """Data form + corrector, any q <= 5 and variable: exact on Dirac data to 1e-9."""
    sde, data, ts, x, exact = dirac_case(name, nfe, kind, seed)
    plan = gd.GDDIM(sde, ts, order=order, form="data", variable=variable_of(variable), corrector=True)
    res = plan.sample(data.fast_eps, x)
    assert plan.tables.info["dirac_gain"] <= 100
    assert relative_error(res.x, exact) <= dirac_tolerance(plan.tables)


@settings(deadline=None, max_examples=10)
@given(name=st.sampled_from(["vp", "dense"]), order=st.integers(1, 5), nfe=st.sampled_from([2, 3, 5]),
       variable=st.sampled_from(VARIABLES), seed=st.integers(0, 3))
def test_eps_form_corrector_is_exact_on_dirac_data_where_stable(name, order, nfe, variable, seed):
    """ε form + corrector on VP and the dense diffusion (NFE <= 5): exact on Dirac data to 1e-9.

    Elsewhere the ε-form PEC recursion amplifies rounding (next test; MATH.md §3.9)."""
    sde, data, ts, x, exact = dirac_case(name, nfe, "power", seed)
    plan = gd.GDDIM(sde, ts, order=order, form="eps", variable=variable_of(variable), corrector=True)
    assert relative_error(plan.sample(data.fast_eps, x).x, exact) <= dirac_tolerance(plan.tables)


@pytest.mark.parametrize("name,nfe", [("cld", 3), ("cld", 10), ("bdm", 3), ("bdm", 10)])
def test_eps_form_corrector_error_is_rounding_times_gain(name, nfe):
    """CLD/BDM: the ε-form PEC loses exactness only through rounding amplified by the recursion's gain
    (error <= 1e-12 x gain), which the plan reports; the data form's gain stays <= 100 there."""
    sde, data, ts, x, exact = dirac_case(name, nfe, "power", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plan = gd.GDDIM(sde, ts, order=3, form="eps", corrector=True)
        gain = plan.tables.info["dirac_gain"]
    err = relative_error(plan.sample(data.fast_eps, x).x, exact)
    assert gain > 1e3 and err <= 1e-12 * gain, (gain, err)
    assert gd.GDDIM(sde, ts, order=3, form="data", corrector=True).tables.info["dirac_gain"] <= 100


def test_unstable_eps_corrector_warns():
    """The ε-form PEC on CLD at NFE 10 amplifies rounding ~1e8-fold: the plan says so."""
    sde = gd.CLD()
    with pytest.warns(RuntimeWarning, match="form='data'"):
        gd.GDDIM(sde, gd.time_grid(sde, 10), order=3, form="eps", corrector=True).tables


CONV = {
    "vp": (gd.VPSDE.linear, (2,), np.array([0.5, -0.3]), 0.25 * np.eye(2)),
    "cld": (gd.CLD, (1, 2), np.array([0.5, 0.0]), np.diag([0.25, 0.01 + 1e-6])),
}


@pytest.mark.parametrize("name,form,order", [("vp", "data", 1), ("vp", "eps", 1), ("cld", "data", 1),
                                             ("cld", "data", 2)])
def test_corrector_raises_the_order_by_one(name, form, order):
    """Gaussian data on [1, 0.1]: with the corrector the fitted slope is within 0.25 of q + 1 (N = 16..64 on CLD,
    16..128 on VP)."""
    make, ev, mu, cov = CONV[name]
    sde = make()
    data = Gaussian(sde, ev, mu, cov)
    x = np.random.default_rng(0).standard_normal((4,) + ev)
    ts0 = gd.time_grid(sde, 8, "power", t_end=0.1)
    ref = data.flow_ode(x, ts0[0], ts0[-1])
    ns = [16, 32, 64] if name == "cld" else [16, 32, 64, 128]
    errors = [relative_error(gd.GDDIM(sde, gd.time_grid(sde, n, "power", t_end=0.1), order=order, form=form,
                                      corrector=True).sample(data.eps_fn(), x).x, ref) for n in ns]
    slope = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert abs(slope - (order + 1)) <= 0.25, (errors, slope)


def test_bad_corrector_input():
    """A corrector where it is undefined is refused, naming the argument."""
    sde = gd.VPSDE.linear()
    with pytest.raises(ValueError, match="corrector"):
        gd.GDDIM(sde, [1.0, 0.1], corrector=True, form="data")
    with pytest.raises(ValueError, match="corrector"):
        gd.sample(sde, lambda x, t: np.zeros_like(x), np.ones((2, 3)), method="gddim", nfe=1, corrector=True)
    with pytest.raises(ValueError, match="corrector"):
        gd.GDDIM(sde, [1.0, 0.5, 0.1], lam=0.5, corrector=True)
    with pytest.raises(ValueError, match="corrector"):
        gd.GDDIM(sde, [1.0, 0.5, 0.1], corrector="yes")
