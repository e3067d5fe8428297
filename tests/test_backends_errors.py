"""Bad input to the array backends: a clear ``TypeError``/``ValueError`` naming the arrays involved."""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest

import gddim_numerics as gd

torch = pytest.importorskip("torch")

VP, CLD, BDM = gd.VPSDE.linear(), gd.CLD(), gd.BDM((8, 8))


def plan(diffusion, **options) -> gd.GDDIM:
    return gd.GDDIM(diffusion, gd.time_grid(diffusion, 4), **options)


def eps_np(x, t):
    return 0.5 * x


def never_called(x, t):
    raise AssertionError("the network must not be evaluated for an input refused up front")


# ----------------------------------------------------------------------------- the state


@pytest.mark.parametrize("x", [[[1.0, 2.0]], 3.0, "abc"])
def test_unserved_array_type_is_refused(x):
    with pytest.raises(TypeError, match=r"x must be an array of a library the array API serves.*got a builtins\."):
        plan(VP).sample(never_called, x)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.complex128, np.complex64])
def test_integer_boolean_complex_states_are_refused(dtype):
    with pytest.raises(TypeError, match=rf"x must have dtype float64, float32, float16 or bfloat16; got {np.dtype(dtype)}"):
        plan(VP).sample(never_called, np.ones((2, 3), dtype=dtype))


def test_integer_torch_state_is_refused():
    with pytest.raises(TypeError, match="got torch.int64"):
        plan(VP).sample(never_called, torch.ones((2, 3), dtype=torch.int64))


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="long double is float64 here")
def test_extended_precision_is_refused_not_recast():
    with pytest.raises(TypeError, match="x must have dtype float64, float32"):
        plan(VP).sample(never_called, np.ones((2, 3), dtype=np.longdouble))


def test_state_without_batch_axis_is_refused():
    with pytest.raises(ValueError, match="leading batch axis"):
        plan(VP).sample(never_called, np.ones(()))


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("shape, axis", [((2, 3, 3), -1), ((2, 5, 4, 4), 1), ((2, 4, 3), 2)])
def test_block_axis_of_the_wrong_size(shape, axis):
    with pytest.raises(ValueError, match=rf"block axis {axis % len(shape)} has size {shape[axis]}.*2x2 blocks"):
        plan(CLD).sample(never_called, np.zeros(shape), block_axis=axis)


@pytest.mark.parametrize("axis", [0, 3, -4])
def test_block_axis_out_of_range_or_batch(axis):
    with pytest.raises(ValueError, match=rf"block_axis={axis} must name an event axis of x"):
        plan(CLD).sample(never_called, np.zeros((2, 4, 2)), block_axis=axis)


def test_block_axis_must_be_an_integer():
    with pytest.raises(TypeError, match="block_axis must be an integer"):
        plan(CLD).sample(never_called, np.zeros((2, 4, 2)), block_axis=1.0)


def test_block_state_needs_an_event_axis():
    with pytest.raises(ValueError, match=r"batch axis and a block axis of size 2"):
        plan(CLD).sample(never_called, np.zeros(2))


@pytest.mark.parametrize("shape", [(2, 8, 7), (2, 3, 8), (8, 8)])
def test_bdm_needs_its_image_axes_last(shape):
    with pytest.raises(ValueError, match=r"x must have shape \(B, \.\.\., 8, 8\)"):
        plan(BDM).sample(never_called, np.zeros(shape))


# ----------------------------------------------------------------------------- what eps_fn returns


@pytest.mark.parametrize("state, output, expected", [
    (np.zeros((2, 3)), lambda x: torch.zeros(2, 3, dtype=torch.float64), "eps_fn returned a torch.Tensor, but x is a numpy.ndarray"),
    (torch.zeros(2, 3), lambda x: np.zeros((2, 3), dtype=np.float32), "eps_fn returned a numpy.ndarray, but x is a torch.Tensor"),
    (xps.zeros((2, 3)), lambda x: np.zeros((2, 3)), "eps_fn returned a numpy.ndarray, but x is a array_api_strict"),
    (np.zeros((2, 3)), lambda x: [[0.0] * 3] * 2, "eps_fn returned a builtins.list, but x is a numpy.ndarray"),
])
def test_network_output_of_another_library(state, output, expected):
    with pytest.raises(TypeError, match=expected):
        plan(VP).sample(lambda x, t: output(x), state)


def test_network_output_on_another_device():
    other = xps.Device("device1")
    with pytest.raises(ValueError, match=r"eps_fn returned an array on device .*device1.*but x is on .*CPU_DEVICE"):
        plan(VP).sample(lambda x, t: xps.asarray(x, device=other), xps.zeros((2, 3)))


def test_torch_network_output_on_another_device():
    with pytest.raises(ValueError, match="eps_fn returned an array on device meta, but x is on cpu"):
        plan(VP).sample(lambda x, t: torch.empty(x.shape, device="meta"), torch.zeros(2, 3))


def test_network_output_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"eps_fn returned shape \(2, 4\) at step 0 .* expected the state's shape \(2, 3\)"):
        plan(VP).sample(lambda x, t: np.zeros((2, 4)), np.zeros((2, 3)))


@pytest.mark.parametrize("dtype", [np.int64, np.complex128])
def test_network_output_of_a_non_real_dtype(dtype):
    with pytest.raises(TypeError, match=f"eps_fn returned an array of dtype {np.dtype(dtype)}; expected a real floating"):
        plan(VP).sample(lambda x, t: np.zeros(x.shape, dtype=dtype), np.zeros((2, 3)))


def test_network_must_be_callable():
    with pytest.raises(TypeError, match="eps_fn must be a callable"):
        plan(VP).sample(np.zeros((2, 3)), np.zeros((2, 3)))


def test_network_output_of_another_float_dtype_is_cast():
    """Documented: a float32 output for a float64 state is used in float64 (no error, the values kept)."""
    res = plan(VP).sample(lambda x, t: np.asarray(0.5 * x, dtype=np.float32), np.ones((2, 3)))
    ref = plan(VP).sample(eps_np, np.ones((2, 3)))
    assert res.x.dtype == np.float64
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)  # measured 1.5e-08 (relative)


# ----------------------------------------------------------------------------- randomness


def test_stochastic_plan_needs_randomness():
    with pytest.raises(ValueError, match="needs a source of randomness: pass rng="):
        plan(VP, lam=0.5).sample(never_called, np.zeros((2, 3)))


def test_per_sample_seeds_must_match_the_batch():
    with pytest.raises(ValueError, match="rng has 3 per-sample seeds but x has batch size 2"):
        plan(VP, lam=0.5).sample(never_called, np.zeros((2, 3)), rng=[1, 2, 3])


@pytest.mark.parametrize("seeds, error", [([1, -2], ValueError), ([1, 2.5], TypeError), ([True, 1], ValueError)])
def test_per_sample_seeds_must_be_non_negative_ints(seeds, error):
    with pytest.raises(error, match=r"rng\[i\] must be a"):
        plan(VP, lam=0.5).sample(never_called, np.zeros((2, 3)), rng=seeds)


def test_generator_of_another_library_is_refused():
    with pytest.raises(TypeError, match="rng must be an int seed.*numpy.random.Generator.*got torch._C.Generator"):
        plan(VP, lam=0.5).sample(never_called, np.zeros((2, 3)), rng=torch.Generator())
    with pytest.raises(TypeError, match=r"rng must be .*a torch.Generator on the state's device; got numpy.random"):
        plan(VP, lam=0.5).sample(never_called, torch.zeros(2, 3), rng=np.random.default_rng(0))


def test_noise_of_another_library_or_shape():
    with pytest.raises(TypeError, match="noise returned a numpy.ndarray, but x is a torch.Tensor"):
        plan(VP, lam=0.5).sample(lambda x, t: 0.5 * x, torch.zeros(2, 3), noise=lambda k, shape: np.zeros(shape))
    with pytest.raises(ValueError, match=r"noise returned shape \(3,\) at step 0; expected the state's shape \(2, 3\)"):
        plan(VP, lam=0.5).sample(eps_np, np.zeros((2, 3)), noise=lambda k, shape: np.zeros(3))
    with pytest.raises(TypeError, match="noise must be a callable"):
        plan(VP, lam=0.5).sample(eps_np, np.zeros((2, 3)), noise=np.zeros((2, 3)))


# ----------------------------------------------------------------------------- options


def test_on_nonfinite_must_be_known():
    with pytest.raises(ValueError, match="on_nonfinite must be 'raise' or 'return'; got 'warn'"):
        plan(VP).sample(never_called, np.zeros((2, 3)), on_nonfinite="warn")
