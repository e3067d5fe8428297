"""The digits demo: forward process, Fréchet distance, network closure, weight cache and the --quick command."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import gddim_numerics as gd  # noqa: E402
from gddim_numerics.validation import digits_quality as dq  # noqa: E402
from gddim_numerics.validation import digits_runs as dr  # noqa: E402
from gddim_numerics.validation import digits_train as dt  # noqa: E402
from gddim_numerics.validation.cli import main  # noqa: E402


def test_bdm_noisy_states_match_scipy_dct():
    """BDM: u_t = IDCT(a_t d_k(t)/a_0 DCT(x0)) + sigma_t eps, with scipy's orthonormal DCT and the closed form."""
    from scipy.fft import dctn, idctn

    sde = gd.BDM((8, 8))
    rng = np.random.default_rng(0)
    t = np.array([0.01, 0.3, 0.9])
    x0, eps = rng.standard_normal((3, 8, 8)), rng.standard_normal((3, 8, 8))
    got = dt.noisy_states(sde, sde.mean_coefficient(t), sde.gddim_factor(t), x0, eps)
    a2 = np.cos((t + 0.004) / 1.008 * np.pi / 2) ** 2
    a2_0 = np.cos(0.004 / 1.008 * np.pi / 2) ** 2  # Psi(t, 0) = a_t d_k(t) / a_0; Sigma_t = (1 - a_t^2) I
    sigma_b = 10.0 * np.sin(np.pi * t / 2) ** 2
    lam = ((np.pi * np.arange(8) / 8) ** 2)[:, None] + ((np.pi * np.arange(8) / 8) ** 2)[None, :]
    for i in range(3):
        d = (1 - 1e-3) * np.exp(-lam * sigma_b[i] ** 2 / 2) + 1e-3
        want = idctn(np.sqrt(a2[i] / a2_0) * d * dctn(x0[i], norm="ortho"), norm="ortho") + np.sqrt(1 - a2[i]) * eps[i]
        np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-12)  # measured 8.0e-15


def test_cld_and_vp_noisy_states_have_the_marginal_covariance():
    """R_t eps has covariance Sigma_t (CLD: the 2x2 per pixel; VP: 1 - alpha_bar from the DDPM table)."""
    cld = gd.CLD()
    t = np.array([0.5])
    r = cld.gddim_factor(t)
    rng = np.random.default_rng(1)
    eps = rng.standard_normal((1, 64, 2))
    u = dt.noisy_states(cld, cld.mean_coefficient(t), r, np.zeros((1, 64, 2)), eps)
    np.testing.assert_allclose(u[0], eps[0] @ r[0, 0].T, atol=1e-14)
    np.testing.assert_allclose(r[0, 0] @ r[0, 0].T, cld.covariance(t)[0, 0], atol=1e-12)  # measured 1.1e-16
    vp = dt.DIFFUSIONS["vp"].make()
    ac = dt.ddpm_alphas_cumprod()
    ts = np.array([1e-3, 0.5, 1.0])  # timesteps 0, 499, 999
    x0, eps = np.ones((3, 64)), np.ones((3, 64))
    u = dt.noisy_states(vp, vp.mean_coefficient(ts), vp.gddim_factor(ts), x0, eps)
    want = np.sqrt(ac[[0, 499, 999]]) + np.sqrt(1 - ac[[0, 499, 999]])
    np.testing.assert_allclose(u[:, 0], want, rtol=1e-12)  # measured 0: the table is reproduced at its knots


def test_ddpm_table_is_diffusers_table():
    diffusers = pytest.importorskip("diffusers")
    np.testing.assert_array_equal(diffusers.DDIMScheduler().alphas_cumprod.double().numpy(), dt.ddpm_alphas_cumprod())


def test_frechet_distance_closed_form():
    """Commuting covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    a, b = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    got = dq.frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert got == pytest.approx(want, rel=1e-10)  # measured 0 (eigvalsh of a diagonalizable product)


def test_start_points_have_the_prior_covariance():
    """BDM: draws in pixel space with per-mode prior variances (exact: the DCT is orthonormal)."""
    sde = gd.BDM((8, 8))
    x = dr.start_points(sde, (8, 8), 4, seed=3)
    z = np.random.default_rng(3).standard_normal((4, 8, 8))
    from scipy.fft import dctn

    modes = np.stack([dctn(xi, norm="ortho") for xi in x]).reshape(4, 64)
    want = z.reshape(4, 64) * np.sqrt(sde.prior_covariance()[:, 0, 0])
    np.testing.assert_allclose(modes, want, atol=1e-12)  # measured 5.1e-15


def test_eps_closure_keeps_the_array_type():
    net = dt.build_net(dt.TrainConfig("cld", hidden=8, depth=1)).to(torch.float64).eval()
    f = dt.eps_closure(net)
    x = np.random.default_rng(4).standard_normal((3, 64, 2))
    out = f(x, 0.25)
    assert isinstance(out, np.ndarray) and out.shape == x.shape and out.dtype == np.float64
    direct = net(torch.from_numpy(x), torch.full((3,), 0.25, dtype=torch.float64)).detach().numpy()
    np.testing.assert_array_equal(out, direct)
    assert torch.equal(f(torch.from_numpy(x), 0.25), torch.from_numpy(direct))


def test_cld_gaussian_skip_is_the_exact_gaussian_posterior_plus_scaled_residual(tmp_path):
    """D = E[x0 | u_t] for Gaussian pixels (conditioning the joint (x0, u_t) law) + sqrt(Var[x0 | u_t]) * F."""
    images = dt.load_split()[0][:64]
    config = dt.TrainConfig("cld", hidden=8, depth=1, steps=2, batch=8)
    net = dt.load_or_train(config, images, tmp_path)["net"]  # float64; buffers from the training images
    pixels = images.reshape(64, 64)
    np.testing.assert_allclose(net.pixel_mean.numpy(), pixels.mean(axis=0), atol=1e-6)  # float32 training copy
    var = float(net.pixel_var)
    assert var == pytest.approx(pixels.var(axis=0).mean(), rel=1e-6)
    with torch.no_grad():  # F = 1 everywhere: D_x = E[x0 | u] + c_t
        net.net.out[1].weight.zero_()
        net.net.out[1].bias.fill_(1.0)
    cld = gd.CLD()
    u = np.random.default_rng(5).standard_normal((3, 64, 2)) * 0.3
    for t in (1e-3, 0.05, 0.7):
        with torch.no_grad():
            got = net(torch.from_numpy(u), torch.full((3,), t, dtype=torch.float64)).numpy()
        psi = cld.mean_coefficient(np.array([t]))[0, 0][:, 0]
        sig = cld.covariance(np.array([t]))[0, 0]
        cov_u = var * np.outer(psi, psi) + sig  # law of u given nothing, per pixel
        gain = var * np.linalg.solve(cov_u, psi)  # Cov(x0, u) Cov(u)^-1
        mean = net.pixel_mean.numpy()
        want = mean + np.einsum("j,bpj->bp", gain, u - psi * mean[:, None])
        post_var = var - gain @ psi * var
        np.testing.assert_allclose(got[..., 0], want + np.sqrt(post_var), rtol=1e-9, atol=1e-12)
        assert np.all(got[..., 1] == 0.0)


def test_cache_is_reused_and_nothing_is_cached_from_a_failed_run(tmp_path, monkeypatch):
    images = dt.load_split()[0][:64]
    config = dt.TrainConfig("vp", hidden=8, depth=1, steps=3, batch=8)
    first = dt.load_or_train(config, images, tmp_path)
    assert not first["cached"]
    again = dt.load_or_train(config, images, tmp_path)
    assert again["cached"] and again["path"] == first["path"]
    x = torch.zeros((2, 64), dtype=torch.float64)
    t = torch.full((2,), 0.5, dtype=torch.float64)
    assert torch.equal(first["net"](x, t), again["net"](x, t))

    def broken(config, images):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(dt, "train", broken)
    other = dt.TrainConfig("vp", hidden=8, depth=1, steps=4, batch=8)
    assert other.key() != config.key()
    with pytest.raises(RuntimeError, match="interrupted"):
        dt.load_or_train(other, images, tmp_path)
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == [f"vp-{config.key()}.pt"]


def test_quick_command(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["demo", "digits", "--quick", "--out", str(out), "--cache", str(cache), "--no-plots"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["failed"] == []
    assert (out / "DIGITS.md").read_text().startswith("# Trained networks")
    assert len(list((cache / "digits").glob("*.pt"))) == 3
    vp = results["diffusions"]["vp"]["rows"]
    assert {r["sampler"] for r in vp} >= {"gddim_q2", "gddim_auto", "gddim_lsnr", "em", "DDIM"}
    assert all(r["nfe"] in (5, 10, 20) or r["kind"] == "rk45" for r in vp)
    assert {(r["sampler"], r["nfe"]) for r in vp if r["nfe"] == 20} == {("gddim_auto", 20), ("gddim_lsnr", 20)}
    assert "gddim_lsnr" not in {r["sampler"] for r in results["diffusions"]["cld"]["rows"]}
    assert {t["diffusion"] for t in results["targets"]} == {"vp", "cld", "bdm"}


def _results(rows: dict) -> dict:
    """A results dict with library rows ``{(diffusion, sampler, nfe): (error, fd)}`` and one diffusers row."""
    out = {"config": {"fd_nfe": 200}, "diffusions": {}}
    for (name, sampler, nfe), (error, fd) in rows.items():
        out["diffusions"].setdefault(name, {"rows": []})["rows"].append(
            {"sampler": sampler, "kind": "library", "nfe": nfe, "error": error, "fd": fd})
    for nfe in (10, 20):
        out["diffusions"]["vp"]["rows"].append({"sampler": "UniPC-2", "kind": "diffusers", "nfe": nfe, "error": 0.1,
                                                "fd": 1.0})
    return out


def test_targets_take_the_best_library_method_per_nfe():
    """The best of gddim_auto / gddim_lsnr per NFE, named; FD compares that method at NFE 10 and 200."""
    from gddim_numerics.validation import digits_report as rep

    results = _results({("vp", "gddim_auto", 10): (0.04, 30.0), ("vp", "gddim_lsnr", 10): (0.02, 11.0),
                        ("vp", "gddim_auto", 20): (0.01, 5.0), ("vp", "gddim_lsnr", 20): (0.03, 5.0),
                        ("vp", "gddim_auto", 200): (1e-5, 10.0), ("vp", "gddim_lsnr", 200): (1e-5, 10.5),
                        ("cld", "gddim_auto", 10): (0.05, 8.0), ("cld", "gddim_q2", 10): (0.2, 9.0),
                        ("cld", "gddim_auto", 200): (1e-4, 7.5)})
    got = {(t["diffusion"], t["nfe"], t["what"].split()[0]): t for t in rep.targets(results) if "FD" not in t["what"]}
    assert got[("vp", 10, "gddim_lsnr")]["value"] == pytest.approx(0.2) and got[("vp", 10, "gddim_lsnr")]["met"]
    assert got[("vp", 20, "gddim_auto")]["value"] == pytest.approx(0.1)
    fd = next(t for t in rep.targets(results) if t["diffusion"] == "vp" and "FD" in t["what"])
    assert fd["what"].startswith("gddim_lsnr") and fd["value"] == pytest.approx(11.0 / 10.5 - 1) and fd["met"]
    assert got[("cld", 10, "gddim_q2")]["value"] == pytest.approx(4.0) and got[("cld", 10, "gddim_q2")]["met"]
    assert got[("cld", 20, "gddim_q2")]["met"] is None  # no rows at NFE 20: not judged


def test_bad_output_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "digits", "--quick", "--out", str(blocker)]) == 2
    assert "demo digits" in capsys.readouterr().err


def test_diffusers_ddim_sees_the_same_network_and_times():
    """DDIM (eta 0, trailing) on the network through peers' mapping = gDDIM q=1 on the same timesteps."""
    diffusers = pytest.importorskip("diffusers")
    from gddim_numerics.validation import peers

    torch.manual_seed(0)
    net = dt.build_net(dt.TrainConfig("vp", hidden=16, depth=1)).to(torch.float64).eval()
    eps_fn = dt.eps_closure(net)
    diffusion = dt.DIFFUSIONS["vp"].make()
    x = dr.start_points(diffusion, (64,), 4, seed=5)
    problem = dr._NetworkProblem(diffusion, type("P", (), {"eps_R": staticmethod(eps_fn)}), x, x, 0.0, {})
    sched = peers.promote_float64(diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False,
                                                          timestep_spacing="trailing"))
    got, why = peers.run_scheduler(problem, sched, 5)
    assert why is None
    ts = np.concatenate([(sched.timesteps.numpy() + 1) / 1000, [diffusion.t_end]])
    want = gd.GDDIM(diffusion, ts, order=1).sample(eps_fn, x).x
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)  # measured 3.4e-13 (float64 throughout)


def test_log_snr_flow_matches_the_exact_score_flow_in_t():
    """The VP flow solved in the log-SNR = the mixture's own DOP853 flow in t (reference_flow, rtol 1e-12)."""
    from gddim_numerics.validation.digits_reference import log_snr_flow

    rng = np.random.default_rng(3)
    for diffusion in (gd.VPSDE.linear(), gd.VPSDE.cosine()):
        data = gd.GaussianMixture(diffusion, (3,), [0.3, 0.7], rng.uniform(-1, 1, (2, 3)),
                                  np.stack([0.2 * np.eye(3), 0.05 * np.eye(3)]))
        x = data.sample_prior(6, rng=rng)
        want = data.reference_flow(x, diffusion.t_start, diffusion.t_end, rtol=1e-12, atol=1e-14)
        got = log_snr_flow(diffusion, data.eps_R, x, "eps_R", rtol=1e-11, atol=1e-13)
        assert dr.relative_error(got["x"], want) < 1e-10  # measured 1.9e-12 (linear), 2.5e-12 (cosine)
    with pytest.raises(ValueError, match="VP"):
        log_snr_flow(gd.CLD(), data.eps_R, x, "eps_R", rtol=1e-8, atol=1e-10)


def test_a_diverging_flow_has_no_reference_and_no_solver_error(tmp_path, monkeypatch):
    """A flow whose end states blow up (as the CLD networks' did) gives x_ref None, cached as such."""
    calls = []

    def blown_up(name, diffusion, eps_fn, x, rtol):
        calls.append(len(x))
        return x * 1e6, 7

    monkeypatch.setattr(dr, "_flow", blown_up)
    net = {"net": dt.build_net(dt.TrainConfig("cld", hidden=8, depth=1)).double(), "path": str(tmp_path / "cld-x.pt")}
    ref = dr.reference_task(net, "cld", 40, 0, 1e-8, True)
    assert ref["x_ref"] is None and ref["rms"] > dr.DIVERGED_RMS and calls == [dr.N_CHECK]  # the probe only
    again = dr.reference_task(net, "cld", 40, 0, 1e-8, True)
    assert again["cached"] and again["x_ref"] is None and again["rms"] == ref["rms"] and calls == [dr.N_CHECK]
    clf = type("C", (), {"frechet": staticmethod(lambda images: 1.0)})()
    assert dr._outcome("cld", ref["x_start"], ref, clf, 10, False)["error"] is None
