"""The sampler loop gives the same answer on every array library, in every layout and dtype.

Every backend (``xp`` fixture: NumPy, array-api-strict, PyTorch CPU; CuPy and PyTorch CUDA with
``-m gpu`` on a GPU machine) runs the same plans from the same inputs, with a network written with
array-API operations and, for stochastic plans, the same noise supplied through ``noise=``. The
results are compared with a float64 NumPy reference written here directly from the
:class:`~gddim_numerics.tables.StepTables` formulas: ``einsum`` for ``k x k`` blocks on a trailing
axis, :func:`scipy.fft.dctn` for the DCT basis (independent of the library's DCT matrices).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import array_api_compat
import array_api_compat.numpy
import array_api_compat.torch
import array_api_strict
import numpy as np
import pytest
import scipy.fft

import gddim_numerics as gd
from gddim_numerics.backends import device_of

torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------------- backends


def _torch_cuda() -> bool:
    return torch.cuda.is_available()


def _cupy_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, no device
        return False


@dataclass(frozen=True)
class Backend:
    """An array library and device the tests run on."""

    name: str
    xp: Any
    device: Any

    def asarray(self, a: np.ndarray, dtype: str) -> Any:
        """A native array of this backend holding the values of ``a`` in ``dtype``."""
        return self.xp.asarray(np.array(a), dtype=getattr(self.xp, dtype), device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        """The values of a native array of this backend, as float64 NumPy."""
        if self.name.startswith("torch"):
            return a.detach().cpu().to(torch.float64).numpy()
        if self.name == "cupy":
            return a.get().astype(np.float64)
        return np.asarray(a).astype(np.float64)


def _make_backend(name: str) -> Backend:
    if name == "numpy":
        return Backend(name, array_api_compat.numpy, "cpu")
    if name == "array_api_strict":
        return Backend(name, array_api_strict, array_api_strict.Device("CPU_DEVICE"))
    if name == "torch":
        return Backend(name, array_api_compat.torch, torch.device("cpu"))
    if name == "torch_cuda":
        return Backend(name, array_api_compat.torch, torch.device("cuda"))
    import cupy

    return Backend(name, array_api_compat.cupy, cupy.cuda.Device(0))


_gpu = pytest.mark.gpu
BACKENDS = [
    "numpy",
    "array_api_strict",
    "torch",
    pytest.param("cupy", marks=[_gpu, pytest.mark.skipif(not _cupy_gpu(), reason="needs CuPy and a CUDA device")]),
    pytest.param("torch_cuda", marks=[_gpu, pytest.mark.skipif(not _torch_cuda(), reason="needs a CUDA device")]),
]


@pytest.fixture(params=BACKENDS)
def xp(request) -> Backend:
    """Each array backend in turn (GPU ones marked ``gpu`` and skipped without a device)."""
    return _make_backend(request.param)


# ----------------------------------------------------------------------------- problems


def smooth_eps(x: Any, t: float) -> Any:
    """A fixed smooth nonlinear 'network', written with array-API operations only."""
    xp = array_api_compat.array_namespace(x)
    return 0.3 * xp.tanh(x) + (0.1 + 0.05 * t) * x


def _dense_sde(k: int) -> gd.ConstantCoefficientSDE:
    m = np.random.default_rng(7).standard_normal((k, k)) / np.sqrt(k)
    a = -(m @ m.T) - 0.5 * np.eye(k) + 0.3 * (m - m.T)
    return gd.ConstantCoefficientSDE(a, np.eye(k), beta=2.0, initial_covariance=0.01 * np.eye(k))


VP, CLD, BDM, DENSE = gd.VPSDE.linear(), gd.CLD(), gd.BDM((8, 8)), _dense_sde(16)

# name: (diffusion, reference shape (blocks on a trailing axis), channel-split block axis or None)
CASES = {
    "vp": (VP, (3, 2, 4, 4), None),
    "cld": (CLD, (3, 2, 4, 4, 2), None),
    "cld_split": (CLD, (3, 2, 4, 4, 2), 1),
    "bdm": (BDM, (3, 2, 8, 8), None),
    "dense16": (DENSE, (3, 16), None),
    "dense16_split": (DENSE, (3, 2, 3, 16), 1),
}
MODES = {
    "order1": dict(order=1),
    "order2": dict(order=2),
    "order3": dict(order=3),
    "data_denoise": dict(order=2, output="data", denoise=True),
    "lam0.5": dict(lam=0.5),
}


def to_split(a: np.ndarray) -> np.ndarray:
    """``(B, C, ..., k)`` (blocks on a trailing axis) to the channel-split ``(B, k*C, ...)`` layout."""
    moved = np.moveaxis(a, -1, 1)
    return moved.reshape((moved.shape[0], -1) + moved.shape[3:])


def from_split(a: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`to_split`."""
    b = a.reshape((a.shape[0], k, a.shape[1] // k) + a.shape[2:])
    return np.moveaxis(b, 1, -1)


def reference_operators(diffusion: gd.LinearDiffusion):
    """``(fwd, inv, apply)`` of a NumPy reference: DCT by scipy.fft for BDM, einsum for k x k blocks."""
    if isinstance(diffusion.basis, gd.DCTBasis):
        image_shape = diffusion.basis.shape

        def fwd(v):
            return scipy.fft.dctn(v, axes=(-2, -1), norm="ortho")

        def inv(v):
            return scipy.fft.idctn(v, axes=(-2, -1), norm="ortho")

        def apply(block, v):
            return block[:, 0, 0].reshape(image_shape) * v
    else:
        def fwd(v):
            return v

        inv = fwd

        def apply(block, v):
            return np.einsum("ij,...j->...i", block[0], v) if block.shape[-1] > 1 else block[0, 0, 0] * v
    return fwd, inv, apply


def reference(diffusion: gd.LinearDiffusion, tables, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Float64 NumPy run of ``tables`` from ``x`` (trailing block layout), straight from the formulas."""
    fwd, inv, apply = reference_operators(diffusion)
    u, hist = fwd(x), []
    for k in range(tables.n_steps):
        y = fwd(smooth_eps(inv(u), float(tables.ts[k])))
        h = y
        if tables.input_output is not None:
            h = apply(tables.input_output[k], y)
        if tables.input_state is not None:
            h = h + apply(tables.input_state[k], u)
        hist.insert(0, h)
        u_next = apply(tables.state[k], u)
        for j in range(tables.orders[k]):
            u_next = u_next + apply(tables.history[k, j], hist[j])
        if tables.noise is not None:
            u_next = u_next + apply(tables.noise[k], fwd(noise[k]))
        u = u_next
    return inv(u)


@cache
def problem(case: str, mode: str):
    """``(plan, x, noise, reference result)``; inputs are float32-representable float64 arrays."""
    diffusion, shape, _ = CASES[case]
    plan = gd.GDDIM(diffusion, gd.time_grid(diffusion, 8), **MODES[mode])
    rng = np.random.default_rng(zlib.crc32(f"{case}/{mode}".encode()))
    x = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
    noise = rng.standard_normal((plan.nfe,) + shape).astype(np.float32).astype(np.float64)
    return plan, x, noise, reference(diffusion, plan.tables, x, noise)


def run(backend: Backend, case: str, mode: str, dtype: str, **options):
    """Sample ``problem(case, mode)`` on ``backend`` in ``dtype``; returns (input, result as NumPy)."""
    plan, x, noise, _ = problem(case, mode)
    split_axis = CASES[case][2]
    k = plan.diffusion.block_size
    if split_axis is not None:
        x, noise = to_split(x), np.stack([to_split(z) for z in noise])
        options["block_axis"] = split_axis
    xb = backend.asarray(x, dtype)
    res = plan.sample(smooth_eps, xb, noise=lambda step, shape: backend.asarray(noise[step], dtype), **options)
    out = backend.to_numpy(res.x)
    return xb, res, from_split(out, k) if split_axis is not None else out


def rel_error(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


# ----------------------------------------------------------------------------- agreement

AGREEMENT = [(c, m) for c in CASES for m in MODES if not (c.startswith("dense") and m == "lam0.5")]


# measured 3.1e-14 (float64), 2.5e-6 (float32)
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 3e-5)])
@pytest.mark.parametrize("case, mode", AGREEMENT)
def test_backend_matches_float64_reference(xp, case, mode, dtype, tol):
    xb, res, out = run(xp, case, mode, dtype)
    assert type(res.x) is type(xb)
    assert res.x.dtype == xb.dtype
    assert device_of(res.x) == device_of(xb)
    assert tuple(res.x.shape) == tuple(xb.shape)
    assert res.nfe == problem(case, mode)[0].nfe
    assert rel_error(out, problem(case, mode)[3]) <= tol


def test_reference_layouts_are_inverse():
    a = np.arange(2 * 3 * 4 * 2).reshape(2, 3, 4, 2)
    split = to_split(a)
    assert split.shape == (2, 6, 4)
    np.testing.assert_array_equal(split[:, 3:], a[..., 1])
    np.testing.assert_array_equal(from_split(split, 2), a)


# ----------------------------------------------------------------------------- callback, trajectory


def test_callback_and_trajectory_keep_the_callers_arrays(xp):
    plan, x, _, ref = problem("bdm", "data_denoise")
    xb = xp.asarray(x, "float64")
    seen = []
    res = plan.sample(smooth_eps, xb, callback=seen.append, return_trajectory=True)
    assert [s.step for s in seen] == list(range(plan.nfe))
    assert len(res.trajectory) == plan.nfe + 1
    for item in [res.trajectory[-1], seen[-1].x, seen[-1].x0_pred, seen[-1].eps]:
        assert type(item) is type(xb) and item.dtype == xb.dtype and device_of(item) == device_of(xb)
    np.testing.assert_allclose(xp.to_numpy(res.trajectory[-1]), ref, rtol=0, atol=1e-12 * np.abs(ref).max())  # measured 5.9e-15
    # the state a step starts from is the trajectory entry before it (step 0: through the DCT and back)
    for s in seen:
        np.testing.assert_allclose(xp.to_numpy(s.x), xp.to_numpy(res.trajectory[s.step]), rtol=1e-13, atol=1e-13)  # measured 0.06 x tolerance
    # output="data": the network output is the data prediction
    np.testing.assert_allclose(xp.to_numpy(seen[3].x0_pred), xp.to_numpy(seen[3].eps), rtol=1e-12, atol=1e-12)  # measured 0.002 x tolerance


def test_arrays_handed_out_are_not_overwritten_later(xp):
    """States the network saw stay as they were (buffers are recycled only when private)."""
    plan, x, _, _ = problem("vp", "order2")
    inputs, copies = [], []

    def recording_eps(x_in, t):
        inputs.append(x_in)
        copies.append(xp.to_numpy(x_in))
        return smooth_eps(x_in, t)

    plan.sample(recording_eps, xp.asarray(x, "float32"))
    for a, c in zip(inputs, copies):
        np.testing.assert_array_equal(xp.to_numpy(a), c)


# ----------------------------------------------------------------------------- dtypes


def _half_dtypes(backend: Backend) -> list[str]:
    return ["float16", "bfloat16"] if backend.name.startswith("torch") else ["float16"]


@pytest.mark.parametrize("case, mode", [("vp", "order2"), ("bdm", "data_denoise")])
def test_half_precision_is_computed_in_float32(xp, case, mode):
    """A float16/bfloat16 run equals the float32 run whose network sees half-precision inputs."""
    if xp.name == "array_api_strict":
        pytest.skip("array-api-strict has no float16")
    plan, x, _, _ = problem(case, mode)
    for half in _half_dtypes(xp):
        half_dtype = getattr(xp.xp, half) if hasattr(xp.xp, half) else getattr(torch, half)
        x_half = xp.xp.asarray(xp.asarray(x, "float32"), dtype=half_dtype)
        res = plan.sample(smooth_eps, x_half)
        assert res.x.dtype == half_dtype and type(res.x) is type(x_half)

        def eps_seen_in_half(x32, t, half_dtype=half_dtype):
            y = smooth_eps(xp.xp.astype(x32, half_dtype), t)
            assert y.dtype == half_dtype
            return xp.xp.astype(y, xp.xp.float32)

        emulated = plan.sample(eps_seen_in_half, xp.xp.astype(x_half, xp.xp.float32))
        np.testing.assert_array_equal(xp.to_numpy(res.x), xp.to_numpy(xp.xp.astype(emulated.x, half_dtype)))
        full = xp.to_numpy(plan.sample(smooth_eps, xp.asarray(x, "float32")).x)
        # ~10 units of half roundoff (2^-8 bfloat16, 2^-11 float16): measured 4.2e-3, 8.5e-4
        assert rel_error(xp.to_numpy(res.x), full) < (6e-2 if half == "bfloat16" else 1e-2)


@pytest.mark.parametrize("case", ["cld_split", "bdm"])
def test_float32_state_is_computed_in_float32(case):
    """A float32 state is not upcast: its error is float32 rounding, not float64's."""
    _, _, out = run(_make_backend("torch"), case, "order3", "float32")
    assert 1e-9 < rel_error(out, problem(case, "order3")[3]) <= 1e-5  # measured 7.3e-7


# ----------------------------------------------------------------------------- random numbers


def test_per_sample_seeds_do_not_depend_on_the_batch(xp):
    plan, x, _, _ = problem("vp", "lam0.5")
    x4 = np.repeat(x[:1], 4, axis=0)
    seeds = [11, 12, 13, 11]
    batch = xp.to_numpy(plan.sample(smooth_eps, xp.asarray(x4, "float32"), rng=seeds).x)
    for i, seed in enumerate(seeds):
        alone = xp.to_numpy(plan.sample(smooth_eps, xp.asarray(x4[i:i + 1], "float32"), rng=[seed]).x)
        np.testing.assert_array_equal(batch[i:i + 1], alone)
    np.testing.assert_array_equal(batch[0], batch[3])  # same seed, same start: same sample
    assert not np.allclose(batch[0], batch[1])


def test_per_sample_seeds_with_scalar_events(xp):
    """States of shape (B,) (one number per sample) draw per-sample noise too."""
    plan = problem("vp", "lam0.5")[0]
    x = np.full(4, 0.5)
    batch = xp.to_numpy(plan.sample(smooth_eps, xp.asarray(x, "float64"), rng=[7, 8, 9, 7]).x)
    alone = xp.to_numpy(plan.sample(smooth_eps, xp.asarray(x[:1], "float64"), rng=[8]).x)
    np.testing.assert_array_equal(batch[1:2], alone)
    assert batch[0] == batch[3] and batch[0] != batch[1]


def test_seed_reproduces_and_distinguishes(xp):
    plan, x, _, _ = problem("cld_split", "lam0.5")
    xb = xp.asarray(to_split(x), "float64")
    a, b, c = (xp.to_numpy(plan.sample(smooth_eps, xb, rng=s, block_axis=1).x) for s in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_noise_has_unit_variance_in_the_states_dtype(xp):
    """The generator's draws are standard normal, of the working dtype, on the state's device."""
    from gddim_numerics.backends import noise_source

    for dtype in ("float32", "float64"):
        xb = xp.asarray(np.zeros((2, 64, 64)), dtype)
        for rng in (3, [3, 4]):
            z = noise_source(xp.xp, xb, xb.dtype, rng=rng)(0)
            assert type(z) is type(xb) and z.dtype == xb.dtype and device_of(z) == device_of(xb)
            zn = xp.to_numpy(z)
            assert abs(zn.mean()) < 0.05 and abs(zn.std() - 1.0) < 0.05
            assert not np.allclose(zn[0], zn[1])


def test_library_generators_are_accepted():
    plan, x, _, _ = problem("vp", "lam0.5")
    a = plan.sample(smooth_eps, x, rng=np.random.default_rng(1)).x
    np.testing.assert_array_equal(a, plan.sample(smooth_eps, x, rng=1).x)
    xt = torch.from_numpy(x)
    b = plan.sample(smooth_eps, xt, rng=torch.Generator().manual_seed(1)).x
    torch.testing.assert_close(b, plan.sample(smooth_eps, xt, rng=1).x, rtol=0, atol=0)


# ----------------------------------------------------------------------------- non-finite outputs


@pytest.mark.parametrize("on_nonfinite", ["raise", "return"])
def test_nonfinite_output_is_reported_with_its_step(xp, on_nonfinite):
    plan, x, _, _ = problem("vp", "order2")

    def eps(x_in, t):
        y = smooth_eps(x_in, t)
        return y * float("nan") if t == float(plan.ts[5]) else y

    xb = xp.asarray(x, "float32")
    if on_nonfinite == "raise":
        with pytest.raises(FloatingPointError, match=r"step 5 \(t="):
            plan.sample(eps, xb)
    else:
        res = plan.sample(eps, xb, on_nonfinite="return")
        assert not res.success and res.status == -1 and "step 5" in res.message
    assert plan.sample(smooth_eps, xb).success


# ----------------------------------------------------------------------------- host synchronisation


_SYNCING = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "__array__")


def _count_host_reads(monkeypatch, fn) -> int:
    """How often ``fn`` reads a torch tensor's values on the host (the calls that synchronise on CUDA)."""
    count = [0]
    for name in _SYNCING:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            count[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    fn()
    monkeypatch.undo()
    return count[0]


@pytest.mark.parametrize("case, mode", [("vp", "order3"), ("cld_split", "lam0.5"), ("bdm", "data_denoise"),
                                        ("dense16", "order2")])
def test_torch_loop_reads_nothing_back_per_step(monkeypatch, case, mode):
    """Host reads of tensor values do not grow with the number of steps (none inside the loop)."""
    diffusion, shape, split = CASES[case]
    x = torch.randn(to_split(np.zeros(shape)).shape if split else shape, dtype=torch.float32)
    options = {"block_axis": split} if split else {}
    counts = []
    for n in (3, 9):
        plan = gd.GDDIM(diffusion, gd.time_grid(diffusion, n), **MODES[mode])
        counts.append(_count_host_reads(monkeypatch, lambda: plan.sample(smooth_eps, x, rng=0, **options)))
    assert counts[0] == counts[1] <= 2
