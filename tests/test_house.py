"""The house rules that are properties of the code: import direction, import weight, bounded caches,
and the array loop checked step by step against the plain-NumPy :func:`~gddim_numerics.tables.reference_step`."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import gddim_numerics as gd
from gddim_numerics.samplers import gddim as gddim_module
from gddim_numerics.tables import reference_step

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The host modules the array side may import: data types only.
HOST_TYPES = {"gddim_numerics.bases", "gddim_numerics.diffusion", "gddim_numerics.model_time", "gddim_numerics.result",
              "gddim_numerics.tables"}
#: Array-side modules that implement a third-party interface on top of both layers (diffusers'
#: ``SchedulerMixin`` builds a plan by method name, then steps tensors): they may use the host's public API.
INTEGRATIONS = {"scheduler.py"}


def _module_imports(path: pathlib.Path, package: str) -> list[str]:
    """Modules imported at module level (not inside functions) by the file ``path`` of ``package``, made absolute."""
    names = []
    for node in ast.parse(path.read_text()).body:
        nodes = [node] + ([n for n in ast.walk(node)] if isinstance(node, (ast.If, ast.Try)) else [])
        for n in nodes:
            if isinstance(n, ast.Import):
                names += [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - n.level + 1] + ([base] if base else []))
                names.append(base)
    return names


def test_host_never_imports_backends_and_backends_import_only_host_types():
    host = sorted((ROOT / "gddim_numerics").rglob("*.py"))
    assert len(host) > 20
    for path in host:
        package = ".".join(("gddim_numerics",) + path.relative_to(ROOT / "gddim_numerics").parts[:-1])
        bad = [m for m in _module_imports(path, package) if "backends" in m]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad} at module level"
    for path in sorted(p for p in (ROOT / "backends").glob("*.py") if p.name not in INTEGRATIONS):
        host_imports = {m for m in _module_imports(path, "gddim_numerics.backends")
                        if m.startswith("gddim_numerics") and not m.startswith("gddim_numerics.backends")}
        assert host_imports <= HOST_TYPES, f"backends/{path.name} imports {sorted(host_imports - HOST_TYPES)}"


def test_import_loads_no_backend_and_no_heavy_scipy():
    code = ("import sys, gddim_numerics; print(sorted(m for m in sys.modules if 'backends' in m and "
            "m.startswith('gddim_numerics') or m.split('.')[:2] in (['scipy', 'optimize'], ['scipy', 'integrate'], "
            "['scipy', 'linalg'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_table_cache_is_bounded_over_many_distinct_grids():
    """2,000 samples, each on its own grid, on one diffusion: the cache keeps TABLE_CACHE_SIZE entries."""
    sde = gd.VPSDE.linear()
    gddim_module.clear_table_cache()
    x = np.ones((1, 2))
    for i in range(2000):
        res = gd.sample(sde, lambda u, t: 0.0 * u, x, nfe=2, order=1, grid=np.array([1.0, 0.5 + i * 1e-4, 1e-3]))
        assert res.nfe == 2
    assert len(gddim_module._TABLES) == gddim_module.TABLE_CACHE_SIZE
    assert "_plan_cache" not in vars(sde)
    ts = gd.time_grid(sde, 5)
    assert gd.GDDIM(sde, ts, order=2).tables is gd.GDDIM(sde, ts.copy(), order=2).tables  # shared on one grid


def test_plans_are_frozen():
    plan = gd.GDDIM(gd.VPSDE.linear(), gd.time_grid(gd.VPSDE.linear(), 4))
    assert plan.order == gddim_module.DEFAULT_ORDER == 2
    with pytest.raises(AttributeError):
        plan.order = 9
    cld = gd.CLD()
    for name in ("heun", "sscs", "rk45", "em"):
        other = gd.plan(cld, name, nfe=20)
        with pytest.raises(AttributeError):
            other.diffusion = gd.VPSDE.linear()
        if isinstance(getattr(other, "tables", None), dict):
            raise AssertionError(f"{name}: the plan's tables are a mutable dict")


def _reference_run(tables, to_modes, from_modes, eps, x, noise):
    u, past = to_modes(x), []
    for k in range(tables.n_steps):
        y = to_modes(eps(from_modes(u), float(tables.ts[k])))
        u, h = reference_step(tables, k, u, y, past, None if tables.noise is None else to_modes(noise(k, x.shape)))
        past = [h] + past
    return from_modes(u)


@pytest.mark.parametrize("case", ["cld_q3_corrector", "cld_data_q4_corrector", "vp_stochastic", "bdm_q2_denoise"])
def test_loop_matches_the_reference_step(case):
    rng = np.random.default_rng(1)
    if case.startswith("cld"):
        sde, event = gd.CLD(), (3, 2)
        plan_opts = dict(order=3, corrector=True) if case == "cld_q3_corrector" else dict(order=4, form="data",
                                                                                          corrector=True)
        to_modes, from_modes = (lambda v: v[..., None, :]), (lambda m: m[..., 0, :])
    elif case == "vp_stochastic":
        sde, event, plan_opts = gd.VPSDE.linear(), (4,), dict(order=1, lam=0.7)
        to_modes, from_modes = (lambda v: v[..., None, None]), (lambda m: m[..., 0, 0])
    else:
        sde, event, plan_opts = gd.BDM((3, 4)), (3, 4), dict(order=2, denoise=True)
        from gddim_numerics.layout import basis_matrix

        v = basis_matrix(sde, event)
        to_modes = lambda a: (a.reshape(a.shape[0], -1) @ v)[..., None]  # noqa: E731
        from_modes = lambda m: (m[..., 0] @ v.T).reshape((m.shape[0],) + event)  # noqa: E731
    data = gd.GaussianData(sde, event, mean=rng.standard_normal(event), cov=None)
    x = data.sample_prior(2, rng=rng)
    plan = gd.GDDIM(sde, gd.time_grid(sde, 6), **plan_opts)
    z = rng.standard_normal((plan.nfe, 2) + event)
    noise = lambda k, shape: z[k]  # noqa: E731
    got = plan.sample(data.eps_R, x, noise=noise).x
    ref = _reference_run(plan.tables, to_modes, from_modes, data.eps_R, x, noise)
    # measured max difference 8.4e-15 relative (CLD data q4 PEC; the loop folds tables on the host: rounding only)
    assert np.abs(got - ref).max() <= 1e-10 * max(1.0, np.abs(ref).max())


def test_a_method_supplies_its_grid_and_accepts_the_callers():
    sde = gd.VPSDE.linear()
    own = gd.plan(sde, "gddim_auto", nfe=6)
    np.testing.assert_array_equal(own.ts, gd.auto_plan(sde, 6).ts)
    user = gd.time_grid(sde, 6, "uniform")
    np.testing.assert_array_equal(gd.plan(sde, "gddim_auto", nfe=6, grid=user).ts, user)
    heun = gd.plan(sde, "heun", nfe=10, grid="uniform")
    assert heun.nfe == 10
    np.testing.assert_array_equal(heun.ts, gd.time_grid(sde, 5, "uniform"))
    np.testing.assert_array_equal(gd.plan(sde, "gddim", nfe=8, power=3).ts, gd.time_grid(sde, 8, "power", power=3))
    with pytest.raises(ValueError, match="needs 10"):
        gd.plan(sde, "gddim", nfe=10, grid=gd.time_grid(sde, 9))
