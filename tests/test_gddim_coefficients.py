"""Multistep coefficients against an independent adaptive quadrature (scipy quad_vec) and the sum rule.

C_kj = int_{t_k}^{t_{k+1}} 1/2 Psi(t_{k+1}, tau) G G^T R^{-T}(tau) l_kj(tau) d tau (docs/math §3.3);
sum_j C_kj = R_{t_{k+1}} - Psi(t_{k+1}, t_k) R_{t_k}.
"""

import numpy as np
import pytest
from scipy.integrate import quad_vec

import gddim_numerics as gd

DIFFUSIONS = {
    "vp": lambda: gd.VPSDE.linear(),
    "cld": lambda: gd.CLD(),
    "bdm": lambda: gd.BDM((4, 4)),
    "ve": lambda: gd.VESDE(),
}


def integrand(sde, t_to, nodes, j):
    def f(tau):
        ta = np.array([tau])
        r_inv_t = np.swapaxes(np.linalg.inv(sde.gddim_factor(ta)), -1, -2)
        kern = 0.5 * sde.transition(np.array([t_to]), ta) @ sde.diffusion(ta) @ r_inv_t
        ell = np.prod([(tau - nodes[i]) / (nodes[j] - nodes[i]) for i in range(len(nodes)) if i != j])
        return (kern[0] * ell).ravel()
    return f


@pytest.mark.parametrize("name", sorted(DIFFUSIONS))
@pytest.mark.parametrize("order", [2, 4])
def test_coefficients_match_quad_vec(name, order):
    """Every weight of a q-step plan agrees with quad_vec (epsrel 1e-14) to 1e-12 relative."""
    sde = DIFFUSIONS[name]()
    ts = gd.time_grid(sde, 12, "power", power=2.0)
    tables = gd.GDDIM(sde, ts, order=order).tables
    for k in (1, 3, 11):
        q = int(tables.orders[k])
        nodes = ts[k - np.arange(q)]
        for j in range(q):
            ref, _ = quad_vec(integrand(sde, ts[k + 1], nodes, j), ts[k], ts[k + 1], epsabs=0, epsrel=1e-14, limit=4000)
            got = tables.history[k, j].ravel()
            assert np.max(np.abs(got - ref)) <= 1e-12 * np.max(np.abs(ref)), (k, j)  # measured 1.4e-14


@pytest.mark.parametrize("name", sorted(DIFFUSIONS))
def test_weights_sum_to_closed_form(name):
    """sum_j C_kj = R_t - Psi(t, s) R_s for every step of a 4-step plan."""
    sde = DIFFUSIONS[name]()
    ts = gd.time_grid(sde, 20, "log_snr" if name != "bdm" else "power")
    tables = gd.GDDIM(sde, ts, order=4).tables
    r = sde.gddim_factor(ts)
    closed = r[1:] - sde.transition(ts[1:], ts[:-1]) @ r[:-1]
    total = tables.history.sum(axis=1)
    scale = np.max(np.abs(closed), axis=(1, 2, 3), keepdims=True)
    assert np.max(np.abs(total - closed) / scale) <= 1e-12  # measured 3.5e-16


def test_state_coefficient_is_transition_matrix():
    """A_k = Psi(t_{k+1}, t_k), checked against scipy.linalg.expm for CLD."""
    from scipy.linalg import expm

    sde = gd.CLD()
    ts = gd.time_grid(sde, 7)
    tables = gd.GDDIM(sde, ts, order=2).tables
    for k in range(7):
        ref = expm(4.0 * (ts[k + 1] - ts[k]) * sde.A)
        assert np.max(np.abs(tables.state[k, 0] - ref)) <= 1e-12 * np.max(np.abs(ref))  # measured 1.9e-14


def test_warm_up_and_lower_order_final_orders():
    """q_k = min(q, k + 1), and min(q, k + 1, N - k) with lower_order_final."""
    sde = gd.VPSDE.linear()
    ts = gd.time_grid(sde, 6)
    assert gd.GDDIM(sde, ts, order=3).tables.orders.tolist() == [1, 2, 3, 3, 3, 3]
    assert gd.GDDIM(sde, ts, order=3, lower_order_final=True).tables.orders.tolist() == [1, 2, 3, 3, 2, 1]


def test_plan_tables_are_cached_and_immutable():
    """A second plan with equal options reuses the tables; the tables cannot be written."""
    sde = gd.CLD()
    ts = gd.time_grid(sde, 5)
    first = gd.GDDIM(sde, ts, order=2).tables
    assert gd.GDDIM(sde, np.array(ts), order=2).tables is first
    assert gd.GDDIM(sde, ts, order=3).tables is not first
    with pytest.raises(ValueError):
        first.history[0, 0, 0, 0, 0] = 1.0


@pytest.mark.parametrize("name", ["vp", "cld", "bdm", "vp_discrete"])
def test_shared_kernel_values_give_the_same_tables_and_save_evaluations(name):
    """Tables built with a shared :class:`KernelValues` store equal those built alone, bit for bit, for every
    scheme of the auto family on three grids (one sharing steps with another; the discrete VP splits panels at its
    knots); the corrector's weights on the predictor's steps evaluate no kernel row the predictor did not; the
    store keeps to its byte bound; a bad bound is refused."""
    from gddim_numerics.auto import FAMILY
    from gddim_numerics.plans import deterministic_tables
    from gddim_numerics.quadrature import KernelValues, exponential_weights

    table = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    sde = gd.VPSDE.discrete(alphas_cumprod=table) if name == "vp_discrete" else DIFFUSIONS[name]()
    store = KernelValues()
    grids = [gd.time_grid(sde, 8, "power", power=2), gd.time_grid(sde, 8, "power", power=3)]
    grids.append(np.concatenate([grids[0][:4], grids[1][4:]]))
    for ts in grids:
        for scheme in FAMILY:
            alone = deterministic_tables(sde, ts, **scheme.options())
            shared = deterministic_tables(sde, ts, **scheme.options(), kernel_values=store)
            for field in ("state", "history", "correction", "reanchor"):
                a, b = getattr(alone, field), getattr(shared, field)
                assert (a is None and b is None) or np.array_equal(a, b), (scheme, field)

    rows_evaluated = []
    kernel = gd.plans.eps_kernel(sde)

    def counting(t, tau):
        rows_evaluated.append(len(tau))
        return kernel(t, tau)

    small = KernelValues(max_bytes=10**9)
    ts = grids[0]
    exponential_weights(counting, ts, np.minimum(np.arange(1, 9), 3), kernel_values=(small, "eps"),
                        breakpoints=sde.breakpoints)
    first = sum(rows_evaluated)
    # the corrector's weights (newest node one step later) on the same steps: the same node rows
    exponential_weights(counting, ts, np.minimum(np.arange(1, 9), 3), kernel_values=(small, "eps"), lead=1,
                        breakpoints=sde.breakpoints)
    assert first > 100 and sum(rows_evaluated) == first + 1  # only the one-node call that reads the value shape
    tight = KernelValues(max_bytes=small.bytes // 3)
    exponential_weights(counting, ts, np.minimum(np.arange(1, 9), 3), kernel_values=(tight, "eps"),
                        breakpoints=sde.breakpoints)
    assert 0 < tight.bytes <= tight.max_bytes
    for bad in (-1, 1.5, True, "64"):
        with pytest.raises(ValueError, match="max_bytes must be an integer"):
            KernelValues(max_bytes=bad)
