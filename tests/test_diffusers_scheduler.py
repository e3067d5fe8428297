"""GDDIMScheduler: diffusers pipelines run with it; order 1 is DDIM (eta = 0); every step equals the
library's own sampler loop on the same integer timesteps."""

import numpy as np
import pytest

import gddim_numerics as gd

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# Multistep weights on the discrete table's PCHIP log-SNR (a kink at every knot) converge to ~1e-9
# relative and warn; that is far below the float32 rounding these tests compare at.
pytestmark = pytest.mark.filterwarnings("ignore:exponential weights converged only:RuntimeWarning")


def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                                 layers_per_block=1, norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()


def test_pipelines_run_with_the_scheduler(tmp_path):
    unet = tiny_unet()
    sched = gd.GDDIMScheduler(method_options={"order": 2})
    out = diffusers.DDPMPipeline(unet=unet, scheduler=sched)(
        batch_size=2, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (2, 8, 8, 1) and np.all(np.isfinite(out))
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler())  # converts any scheduler to DDIM
    pipe.scheduler = gd.GDDIMScheduler.from_config(pipe.scheduler.config, method_options={"order": 3})
    out = pipe(batch_size=1, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 8, 8, 1) and np.all(np.isfinite(out))
    # a saved config loads back with its options
    sched.save_config(tmp_path)
    again = gd.GDDIMScheduler.from_pretrained(tmp_path)
    assert again.config.method_options == {"order": 2} and again.config.method == "gddim"


@pytest.mark.parametrize("set_alpha_to_one,steps,prediction", [(True, 3, "epsilon"), (False, 3, "v_prediction"),
                                                                 (True, 10, "epsilon"), (True, 2, "sample")])
def test_order_one_is_ddim(set_alpha_to_one, steps, prediction):
    unet = tiny_unet()
    ddim = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=set_alpha_to_one, prediction_type=prediction)
    ours, alone = (gd.GDDIMScheduler(set_alpha_to_one=set_alpha_to_one, prediction_type=prediction,
                                     method_options={"order": 1}) for _ in range(2))
    for sched in (ddim, ours, alone):
        sched.set_timesteps(steps)
    assert torch.equal(ddim.timesteps, ours.timesteps)
    a = b = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for t in ddim.timesteps:
            y = unet(a, t).sample
            ra, rb = ddim.step(y, t, a), ours.step(y, t, a)  # one step from the same state and output
            exact = ddim.step(y.double(), t, a.double())  # DDIM's formulas in float64
            for got, want, ref in [(rb.prev_sample, ra.prev_sample, exact.prev_sample),
                                   (rb.pred_original_sample, ra.pred_original_sample, exact.pred_original_sample)]:
                assert (got - want).abs().max() <= 1e-6 * want.abs().max()  # measured <= 1.6e-7 (float32)
                assert (got - ref).abs().max() <= 1e-6 * ref.abs().max()  # measured <= 1.0e-7: float32 rounding
            a, b = ra.prev_sample, alone.step(unet(b, t).sample, t, b).prev_sample
    # whole trajectories, each scheduler on its own (measured <= 4.6e-7: the network amplifies the rounding)
    assert (a - b).abs().max() <= 1e-6 * a.abs().max()


def test_steps_equal_the_library_loop():
    """Any table sampler: the scheduler's steps equal run_tables on timestep_grid (float64)."""
    unet = tiny_unet().double()
    steps = 4
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cases = [("gddim", {"order": 3}, "epsilon"), ("gddim", {"order": 2, "form": "data", "corrector": True}, "epsilon"),
             ("gddim", {"order": 2}, "v_prediction"), ("gddim", {"order": 1}, "sample"), ("gddim_L", {"order": 2}, "epsilon")]
    for method, options, prediction in cases:
        sched = gd.GDDIMScheduler(set_alpha_to_one=False, steps_offset=1, prediction_type=prediction, method=method,
                                  method_options=options)
        sched.set_timesteps(steps)
        assert sched.timesteps.tolist() == [751, 501, 251, 1]
        if prediction == "sample":  # the same list given explicitly
            sched.set_timesteps(timesteps=[751, 501, 251, 1])
        u = x
        with torch.no_grad():
            for t in sched.timesteps:
                u = sched.step(unet(u, t).sample, t, u).prev_sample
        eps_fn = gd.wrap_model(unet, sched.diffusion, time="index", rounding="exact", prediction=prediction)
        grid = gd.timestep_grid(sched.diffusion, [751, 501, 251, 1, 0])
        ref = gd.METHODS[method].build(sched.diffusion, grid, output=eps_fn.output, **options).sample(eps_fn, x).x
        assert (u - ref).abs().max() <= 1e-12 * ref.abs().max(), (method, options, prediction)  # measured <= 1.5e-15


def test_stochastic_plan_add_noise_and_bad_input():
    sched = gd.GDDIMScheduler(method_options={"order": 1, "lam": 1.0})
    sched.set_timesteps(2)
    x = torch.zeros(1, 1, 2, 2)
    g = torch.Generator().manual_seed(0)
    y = sched.step(torch.zeros_like(x), sched.timesteps[0], x, generator=g).prev_sample
    assert y.abs().max() > 0  # noise was added
    # add_noise: sqrt(abar_n) x0 + sqrt(1 - abar_n) eps with diffusers' float32 table
    acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32), 0).double()
    x0, eps, n = torch.ones(2, 3, dtype=torch.float64), torch.full((2, 3), 2.0, dtype=torch.float64), torch.tensor([0, 999])
    want = acp[n, None].sqrt() * x0 + (1 - acp[n, None]).sqrt() * eps
    torch.testing.assert_close(sched.add_noise(x0, eps, n), want, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="eta=0.5: GDDIMScheduler's noise is the plan's lam"):
        sched.step(torch.zeros_like(x), sched.timesteps[0], x, eta=0.5)
    with pytest.raises(ValueError, match="got timestep 3 but the schedule expects"):
        sched.step(torch.zeros_like(x), 3, x)
    with pytest.raises(ValueError, match=r"model output at step 0 \(timestep 500\) has shape"):
        sched.step(torch.zeros(1, 1, 2, 3), 500, x)
    with pytest.raises(ValueError, match="method must be a sampler of gd.METHODS that takes a grid"):
        gd.GDDIMScheduler(method="rk45")
    with pytest.raises(ValueError, match="unknown prediction type 'noise'"):
        gd.GDDIMScheduler(prediction_type="noise")
    with pytest.raises(ValueError, match="timesteps must be strictly decreasing integers in 0..999"):
        sched.set_timesteps(timesteps=[10, 500])
    with pytest.raises(ValueError, match="call set_timesteps"):
        gd.GDDIMScheduler().step(x, 999, x)
