"""Model adapters (gd.wrap_model) and the "v" output type.

Time inputs are checked against hand-written conversions from the schedules' closed forms; output
types by sampling the same exact network given as ε, x₀, v or score (converted by hand) and
comparing with the ε run (the conversions are exact in float64, so the runs agree to rounding).
"""

import math

import numpy as np
import pytest

import gddim_numerics as gd
from gddim_numerics.outputs import to_data, to_noise

torch = pytest.importorskip("torch")

B0, B1 = 0.1, 20.0  # linear-beta VP


def abar_linear(t):
    """Hand-written closed form of the linear-beta VP: alpha_bar = exp(-b0 t - (b1 - b0) t^2 / 2)."""
    return math.exp(-B0 * t - 0.5 * (B1 - B0) * t * t)


class Recorder:
    """A model returning zeros and recording the time input it got."""

    def __init__(self):
        self.seen = []

    def __call__(self, x, tm):
        self.seen.append(tm)
        return x * 0.0


# ------------------------------------------------------------------------------------------- time
@pytest.mark.parametrize("t", [0.003, 0.25, 0.9])
def test_time_conventions_against_hand_written(t):
    x = np.zeros((3, 2))
    sde = gd.VPSDE.linear(B0, B1)
    ab = abar_linear(t)
    hand = {"t": t, "scaled": 999.0 * t, "sigma": math.sqrt((1 - ab) / ab), "log_snr": math.log(ab / (1 - ab))}
    for kind, expected in hand.items():
        rec = Recorder()
        gd.wrap_model(rec, sde, time=kind, scale=999.0)(x, t)
        tm = rec.seen[0]
        assert isinstance(tm, np.ndarray) and tm.shape == (3,) and tm.dtype == np.float64
        np.testing.assert_allclose(tm, expected, rtol=1e-13)  # measured <= 2e-16 relative
    ve = gd.VESDE(0.01, 50.0)
    rec = Recorder()
    gd.wrap_model(rec, ve, time="sigma", t_format="scalar")(x, t)
    assert isinstance(rec.seen[0], float)
    np.testing.assert_allclose(rec.seen[0], math.sqrt(0.01**2 * ((50.0 / 0.01) ** (2 * t) - 1)), rtol=1e-13)
    rec = Recorder()
    gd.wrap_model(rec, ve, time=ve.sigma, t_format="scalar")(x, t)  # score-SDE VE models
    np.testing.assert_allclose(rec.seen[0], 0.01 * (50.0 / 0.01) ** t, rtol=1e-13)


def test_index_time_nearest_and_exact_knots():
    sde = gd.VPSDE.discrete()  # knot n at t = (n + 1)/1000
    x = torch.zeros(2, 3)
    rec = Recorder()
    f = gd.wrap_model(rec, sde, time="index")
    for t, n in [(1.0, 999), (0.0004 + 0.001, 0), (0.5004, 499), (0.5006, 500), (0.1, 99)]:
        f(x, t)
        assert rec.seen[-1].dtype == torch.int64 and rec.seen[-1].tolist() == [n, n]
    exact = gd.wrap_model(rec, sde, time="index", rounding="exact")
    ts = gd.timestep_grid(sde, [999, 749, 499, 249, 0])
    for t, n in zip(ts, [999, 749, 499, 249, 0]):
        exact(x, t)
        assert rec.seen[-1].tolist() == [n, n]
    with pytest.raises(ValueError, match="not a timestep of the training table.*nearest: timestep 500"):
        exact(x, 0.5006)
    with pytest.raises(ValueError, match="outside the training table"):
        f(x, 1.01)
    with pytest.raises(ValueError, match="discrete training table"):
        gd.wrap_model(rec, gd.VPSDE.linear(), time="index")


def test_time_batch_follows_model_input_library_device_dtype():
    rec = Recorder()
    f = gd.wrap_model(rec, gd.VPSDE.linear(), time="scaled", scale=1000.0, dtype=None)
    f(torch.zeros(4, 2, dtype=torch.float32), 0.5)
    tm = rec.seen[0]
    assert isinstance(tm, torch.Tensor) and tm.dtype == torch.float32 and tm.shape == (4,)
    assert torch.all(tm == 500.0)


# ------------------------------------------------------------------------------------ outputs
@pytest.mark.parametrize("sde", [gd.VPSDE.linear(), gd.VESDE(0.02, 20.0)], ids=["vp", "ve"])
def test_v_output_coefficients_against_hand_written(sde):
    t = np.array([0.01, 0.4, 0.95])
    if isinstance(sde, gd.VPSDE):
        m = np.sqrt([abar_linear(s) for s in t])
        r = np.sqrt(1 - m**2)
    else:
        m, r = np.ones(3), np.sqrt(0.02**2 * ((20.0 / 0.02) ** (2 * t) - 1))
    n = np.sqrt(m**2 + r**2)
    # eps = (r u + m n v)/n^2 and x0 = (m u - r n v)/n^2, from u = m x0 + r eps and v = (m eps - r x0)/n
    a, b = to_noise(sde, t, "v")
    c, d = to_data(sde, t, "v")
    for got, want in [(a, r / n**2), (b, m / n), (c, m / n**2), (d, -r / n)]:
        np.testing.assert_allclose(got[:, 0, 0, 0], want, rtol=1e-12)  # measured 3e-16
    with pytest.raises(ValueError, match="'v' is defined for diffusions with scalar modes"):
        gd.GDDIM(gd.CLD(), gd.time_grid(gd.CLD(), 4), output="v")


def _hand_outputs(sde, eps_fn):
    """The exact network as x0, v and score predictions, converted by hand (VP: u = a x0 + s eps)."""
    def coef(t):
        ab = abar_linear(t)
        return math.sqrt(ab), math.sqrt(1 - ab)

    def x0(x, t):
        a, s = coef(t)
        return (x - s * eps_fn(x, t)) / a

    def v(x, t):
        a, s = coef(t)
        return a * eps_fn(x, t) - s * x0(x, t)

    def score(x, t):
        return -eps_fn(x, t) / coef(t)[1]

    return {"x0": x0, "v": v, "score": score}


@pytest.mark.parametrize("prediction", ["x0", "v", "score"])
@pytest.mark.parametrize("order,form", [(1, "eps"), (3, "eps"), (2, "data")])
def test_prediction_types_sample_like_eps(prediction, order, form):
    sde = gd.VPSDE.linear(B0, B1)
    data = gd.GaussianData(sde, (4,), mean=[0.5, -1.0, 0.2, 1.5], cov=np.diag([0.3, 0.1, 0.5, 0.2]))
    x = data.sample_prior(5, rng=np.random.default_rng(0))
    ts = gd.time_grid(sde, 8, "power", power=2)
    ref = gd.GDDIM(sde, ts, order=order, form=form).sample(data.eps_R, x).x
    model = _hand_outputs(sde, data.eps_R)[prediction]
    f = gd.wrap_model(model, sde, prediction=prediction, t_format="scalar")
    assert f.output == {"x0": "data", "v": "v", "score": "score"}[prediction]
    got = gd.GDDIM(sde, ts, order=order, form=form, output=f.output).sample(f, x).x
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13 * np.abs(ref).max())  # measured <= 9e-16


def test_v_prediction_on_bdm_and_ve_matches_eps():
    for sde, shape in [(gd.BDM((4, 4)), (1, 4, 4)), (gd.VESDE(0.02, 20.0), (3,))]:
        point = np.linspace(-1, 1, int(np.prod(shape))).reshape(shape)
        data = gd.DiracData(sde, shape, point=point)
        x = data.sample_prior(3, rng=np.random.default_rng(1))
        ts = gd.time_grid(sde, 6, "power", power=2)
        ref = gd.GDDIM(sde, ts, order=2).sample(data.eps_R, x).x
        got_eps = gd.GDDIM(sde, ts, order=2, output="v").sample(
            lambda u, t: _v_from_eps(sde, point, u, t), x).x
        np.testing.assert_allclose(got_eps, ref, atol=1e-12 * np.abs(ref).max())  # measured 1.2e-14 (BDM)


def _v_from_eps(sde, point, u, t):
    """v = (m eps - r x0)/n per mode, with x0 the Dirac point (exact) and eps = (u - m x0)/r."""
    if isinstance(sde, gd.VESDE):
        r = math.sqrt(0.02**2 * ((20.0 / 0.02) ** (2 * t) - 1))
        x0 = np.broadcast_to(point, u.shape)
        eps = (u - x0) / r
        return (eps - r * x0) / math.sqrt(1 + r * r)
    # BDM: per DCT frequency (scipy's orthonormal DCT-II), mean m and noise std r of the kernel
    from scipy.fft import dctn, idctn

    m = sde.mean_coefficient(t)[:, 0, 0].reshape(sde.image_shape)
    r = np.sqrt(sde.covariance(t)[:, 0, 0]).reshape(m.shape)
    x0 = dctn(np.broadcast_to(point, u.shape), axes=(-2, -1), norm="ortho")
    eps = (dctn(u, axes=(-2, -1), norm="ortho") - m * x0) / r
    return idctn((m * eps - r * x0) / np.sqrt(m * m + r * r), axes=(-2, -1), norm="ortho")


def test_eps_is_ambiguous_on_cld():
    with pytest.raises(ValueError, match="ambiguous.*'eps_R'.*'eps_L'"):
        gd.wrap_model(lambda x, t: x, gd.CLD(), prediction="eps")
    with pytest.raises(ValueError, match="unknown prediction type 'noise'"):
        gd.wrap_model(lambda x, t: x, gd.VPSDE.linear(), prediction="noise")
    assert gd.wrap_model(lambda x, t: x, gd.CLD(), prediction="eps_L").output == "eps_L"


# ------------------------------------------------------------------------------------------ torch
class TinyNet(torch.nn.Module):
    """A float32 network with dropout and batch norm (train mode changes its output)."""

    def __init__(self, width=6):
        super().__init__()
        self.lin = torch.nn.Linear(width, width)
        self.drop = torch.nn.Dropout(0.5)
        self.seen = []

    def forward(self, x, t):
        self.seen.append((x.dtype, torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu"), self.training))
        return self.drop(self.lin(x)) * t[:, None]


def test_train_mode_module_is_evaluated_in_eval_mode_and_left_as_it_was():
    torch.manual_seed(0)
    net = TinyNet()
    net.train()
    net.lin.eval()  # a mixed state must come back exactly
    sde = gd.VPSDE.linear()
    f = gd.wrap_model(net, sde)
    x = torch.randn(3, 6, dtype=torch.float64)
    y1, y2 = f(x, 0.5), f(x, 0.5)
    assert torch.equal(y1, y2)  # no dropout: eval mode
    with torch.no_grad():
        want = (net.lin(x.float()) * 0.5).double()
    torch.testing.assert_close(y1, want, rtol=0, atol=0)
    assert net.training and not net.lin.training and net.drop.training
    assert net.seen[0] == (torch.float32, True, False, False)  # float32 input, inference mode, eval
    assert y1.dtype == torch.float64  # moved back to the state's dtype
    res = gd.GDDIM(sde, gd.time_grid(sde, 4), order=2).sample(f, x)
    assert res.x.dtype == torch.float64 and torch.isfinite(res.x).all() and net.training


def test_autocast_and_no_placement():
    net = TinyNet()
    f = gd.wrap_model(net, gd.VPSDE.linear(), autocast=torch.bfloat16)
    y = f(torch.randn(2, 6), 0.3)
    assert net.seen[-1][2] and y.dtype == torch.float32
    bare = gd.wrap_model(net, gd.VPSDE.linear(), dtype=None, inference=False)
    with pytest.raises(RuntimeError):  # float64 input into a float32 Linear: torch's own error
        bare(torch.randn(2, 6, dtype=torch.float64), 0.3)


def test_cld_channel_split_layout():
    sde = gd.CLD()
    seen = []

    def model(x, t):  # wants (B, 2C, H, W): x channels then v channels; returns -v in the x slots
        seen.append(tuple(x.shape))
        c = x.shape[1] // 2
        return torch.cat([-x[:, c:], x[:, :c]], dim=1)

    f = gd.wrap_model(model, sde, prediction="eps_L", layout="channel_split")
    u = torch.randn(2, 3, 4, 5, 2, dtype=torch.float64)  # (B, C, H, W, [x, v])
    y = f(u, 0.5)
    assert seen == [(2, 6, 4, 5)]
    torch.testing.assert_close(y[..., 0], -u[..., 1], rtol=0, atol=0)
    torch.testing.assert_close(y[..., 1], u[..., 0], rtol=0, atol=0)
    # the same model sampled on channel-split states directly (block_axis=1) gives the same result
    ts = gd.time_grid(sde, 5)
    plan = gd.GDDIM(sde, ts, order=2, output="eps_L")
    a = plan.sample(f, u).x
    b = plan.sample(model, torch.cat([u[..., 0], u[..., 1]], dim=1), block_axis=1).x
    torch.testing.assert_close(torch.cat([a[..., 0], a[..., 1]], dim=1), b, rtol=1e-13, atol=1e-13)


def test_bdm_channels_last_layout():
    sde = gd.BDM((4, 4))
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def model(x, t):  # channels-last (B, H, W, C), mixes nothing across pixels
        assert x.shape[-1] == 3
        return x * w

    f = gd.wrap_model(model, sde, layout="channels_last")
    u = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(f(u, 0.5), u * w[:, None, None], rtol=0, atol=0)


# -------------------------------------------------------------------------------------- bad input
def test_bad_model_outputs_name_the_call_and_time():
    sde = gd.VPSDE.discrete()
    x = torch.zeros(2, 3)
    ts = gd.time_grid(sde, 4)
    cases = [
        (lambda x, t: x[:, :2], ValueError, r"the model at call 0 \(t=1, model time 999\) returned shape \(2, 2\)"),
        (lambda x, t: x.long(), TypeError, "returned an array of dtype torch.int64"),
        (lambda x, t: x.detach().numpy(), TypeError, "returned a numpy.ndarray"),
        (lambda x, t: torch.zeros(x.shape, device="meta"), ValueError, "returned an array on device meta"),
    ]
    for model, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            gd.GDDIM(sde, ts).sample(gd.wrap_model(model, sde, time="index"), x)

    def nan_late(x, t):
        return x * 0.0 + (float("nan") if t[0] < 500 else 0.0)

    with pytest.raises(FloatingPointError, match=r"at call 2 \(t=0.\d+, model time \d+\) returned NaN"):
        gd.GDDIM(sde, ts).sample(gd.wrap_model(nan_late, sde, time="index", check_finite=True), x)
    with pytest.raises(FloatingPointError, match=r"NaN or Inf at step 2 \(t="):  # the loop's own check
        gd.GDDIM(sde, ts).sample(gd.wrap_model(nan_late, sde, time="index"), x)
    with pytest.raises(ValueError, match="eps_fn returns output 'v' but the plan was built for output='eps_R'"):
        gd.GDDIM(sde, ts).sample(gd.wrap_model(nan_late, sde, prediction="v"), x)
    with pytest.raises(ValueError, match="time must be one of"):
        gd.wrap_model(nan_late, sde, time="seconds")
    with pytest.raises(ValueError, match="layout='channel_split' is for diffusions with k > 1"):
        gd.wrap_model(nan_late, sde, layout="channel_split")
    with pytest.raises(TypeError, match="model must be a callable"):
        gd.wrap_model("unet", sde)


# ------------------------------------------------------------------------------------------- JAX
def test_jax_model_runs_the_sampler_on_jax_arrays():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jax.config.update("jax_enable_x64", True)
    sde = gd.VPSDE.linear(B0, B1)
    data = gd.GaussianData(sde, (4,), mean=[0.5, -1.0, 0.2, 1.5], cov=np.diag([0.3, 0.1, 0.5, 0.2]))
    x = data.sample_prior(3, rng=np.random.default_rng(2))
    mu, var = jnp.asarray([0.5, -1.0, 0.2, 1.5]), jnp.asarray([0.3, 0.1, 0.5, 0.2])

    @jax.jit
    def model(u, tm):  # exact posterior mean E[x0 | x_t] of the diagonal Gaussian, by hand, time as (B,) t*999
        t = (tm / 999.0)[:, None]
        ab = jnp.exp(-B0 * t - 0.5 * (B1 - B0) * t * t)
        a = jnp.sqrt(ab)
        return mu + a * var / (ab * var + 1.0 - ab) * (u - a * mu)

    f = gd.wrap_model(model, sde, time="scaled", scale=999.0, prediction="x0")
    ts = gd.time_grid(sde, 6, "power", power=2)
    plan = gd.GDDIM(sde, ts, order=2, output="data")
    got = plan.sample(f, jnp.asarray(x))
    ref = gd.GDDIM(sde, ts, order=2).sample(data.eps_R, x).x
    assert type(got.x).__module__.startswith("jax")
    np.testing.assert_allclose(np.asarray(got.x), ref, atol=1e-12 * np.abs(ref).max())
    noisy = gd.GDDIM(sde, ts, order=1, lam=1.0, output="data").sample(f, jnp.asarray(x), rng=np.random.default_rng(3))
    assert np.all(np.isfinite(np.asarray(noisy.x)))
    # CLD, channel-split model, on jax and on numpy: the same numbers (the loop is out of place on jax)
    cld = gd.CLD()
    u = np.random.default_rng(4).standard_normal((2, 3, 4, 2))
    plan = gd.GDDIM(cld, gd.time_grid(cld, 5), order=2, output="eps_L")
    runs = [plan.sample(gd.wrap_model(lambda v, t: 0.3 * v[:, ::-1] * t[:, None, None], cld, prediction="eps_L",
                                      layout="channel_split"), lib.asarray(u)).x for lib in (jnp, np)]
    np.testing.assert_allclose(np.asarray(runs[0]), runs[1], rtol=1e-14, atol=1e-14)  # measured 0


def test_import_loads_no_adapter_scheduler_or_framework():
    import subprocess
    import sys

    code = ("import sys, gddim_numerics as gd; "
            "print(sorted(m for m in ('torch', 'diffusers', 'jax', 'gddim_numerics.backends.adapters', "
            "'gddim_numerics.backends.scheduler') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
