"""The ``gddim-numerics bench`` command: quick run, coefficient accuracy, the peer mapping, skips, bad input.

No timing is asserted: only structure and numbers that do not depend on the machine's speed.
"""

import json
import math
import sys

import numpy as np
import pytest

import gddim_numerics as gd
from gddim_numerics import auto
from gddim_numerics.validation import bench, peers
from gddim_numerics.validation.cli import main


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    """``bench --quick`` run in-process into a fresh folder: exit status and the JSON written."""
    out = tmp_path_factory.mktemp("bench") / "out"
    status = main(["bench", "--quick", "--no-progress", "--out", str(out)])
    return status, out, json.loads((out / "bench.json").read_text())


def test_quick_bench_writes_json_with_every_section(quick_bench):
    """Exit 0; bench.json/bench.md written; machine, versions and thread counts; one block per section."""
    status, out, results = quick_bench
    assert status == 0
    assert {p.name for p in out.iterdir()} == {"bench.json", "bench.md"}
    for key in ("platform", "cpu_count", "python", "numpy", "scipy", "gddim_numerics", "thread_env"):
        assert key in results["machine"]
    assert results["config"]["quick"] is True
    assert set(results["sections"]) == set(bench.SECTIONS)
    plan = results["sections"]["plan"]
    assert plan["status"] == "ok"
    cases = {(r["diffusion"], r["nfe"], r["variant"]) for r in plan["results"]}
    assert cases == {(d, 10, v) for d in bench.QUICK_PLAN_DIFFUSIONS for v in bench.PLAN_VARIANTS}
    for r in plan["results"]:
        assert r["repeats"] >= 1 and r["plan_ms"] > 0 and r["setup_ms"] >= 0 and r["warm_us"] > 0
        assert r["cold_total_ms"] >= r["plan_ms"]
    overhead = results["sections"]["overhead"]
    assert overhead["status"] == "ok"
    assert {r["backend"] for r in overhead["results"]} >= {"numpy"}
    assert all(r["ratio"] > 0 for r in overhead["results"])
    load = overhead["load"]
    assert load["limit"] == 1 + 0.25 * load["cpu_count"] and len(load["before"]) == 3
    auto_section = results["sections"]["auto"]
    assert auto_section["status"] == "ok" and auto_section["image_size"] == 8
    assert {r["diffusion"] for r in auto_section["results"]} == {"vp", "cld", "bdm8"}
    schemes = [s.options() for s in auto.FAMILY]
    assert auto_section["repeats"] == 1  # --quick: one cold build per case
    for r in auto_section["results"]:  # the grid search scores the whole family first, then refines
        assert r["full_s"] > 0 and r["pick_s"] > 0 and r["paper_plan_s"] > 0
        assert r["runs_s"] == {"paper": [r["paper_plan_s"]], "full": [r["full_s"]], "pick": [r["pick_s"]]}
        assert r["scheme"] in schemes and r["evaluations"] >= len(auto.FAMILY)
    assert load["loaded"] == (max(load["before"][0], load["after"][0]) > load["limit"])


def test_auto_section_reports_the_median_of_interleaved_cold_builds(monkeypatch):
    """Without --quick each case is built AUTO_REPEATS times (paper plan, full, pick interleaved, every one on a
    fresh diffusion) and the median is reported, the fastest and slowest beside it; the targets apply to the
    median. Timed calls are replaced by a clock that returns known durations."""
    from gddim_numerics.validation import bench_auto

    durations = iter([0.01, 2.5, 0.30, 0.03, 1.5, 0.10, 0.02, 1.9, 0.15] * 3)
    calls = []

    def fake_choice(factory, nfe, optimize_grid):
        if nfe == 2:  # the untimed warm-up
            return 0.0, {}
        calls.append(("full" if optimize_grid else "pick", nfe))
        return next(durations), {"evaluations": 20, "scheme": auto.PAPER.options()}

    def fake_paper(factory, nfe):
        calls.append(("paper", nfe))
        return next(durations)

    monkeypatch.setattr(bench_auto, "timed_choice", fake_choice)
    monkeypatch.setattr(bench_auto, "timed_paper_plan", fake_paper)
    monkeypatch.setattr(bench_auto, "AUTO_NFE", (10,))
    monkeypatch.setattr(bench_auto, "problems", lambda size: {"vp": None})
    section = bench_auto.auto_cost(bench.BenchConfig(sections=("auto",)), lambda text: None)
    assert calls == [("paper", 10), ("full", 10), ("pick", 10)] * 3
    (row,) = section["results"]
    assert row["runs_s"] == {"paper": [0.01, 0.03, 0.02], "full": [2.5, 1.5, 1.9], "pick": [0.30, 0.10, 0.15]}
    assert (row["paper_plan_s"], row["full_s"], row["pick_s"]) == (0.02, 1.9, 0.15)
    assert row["meets_full"] and row["meets_pick"] and section["repeats"] == bench_auto.AUTO_REPEATS == 3
    cells = bench_auto.auto_table(section).rows[0]
    assert cells[2] == "1.90 ✓ (1.50–2.50)" and cells[3] == "0.150 ✓ (0.100–0.300)"


def test_quick_bench_coefficients_match_the_rebuild(quick_bench):
    """Every plan's coefficients agree with the higher-accuracy rebuild to <= 1e-12 (relative per step)."""
    _, _, results = quick_bench
    plan = results["sections"]["plan"]
    worst = max(r["coefficient_error"]["max"] for r in plan["results"])
    assert worst <= 1e-12  # measured 2.1e-13
    coefficient_target = next(t for t in plan["targets"] if t["target"].startswith("coefficients"))
    assert coefficient_target["meets"] is True and coefficient_target["value"] == worst


def test_quick_bench_peer_section(quick_bench):
    """With diffusers: every peer and gDDIM entry has a finite error, the mapping is exact, ratios are given."""
    _, _, results = quick_bench
    section = results["sections"]["peers"]
    if section["status"] == "skipped":
        assert "diffusers" in section["reason"]
        pytest.skip(section["reason"])
    assert section["status"] == "ok"
    assert {r["sampler"] for r in section["peers"]} == set(peers.PEER_NAMES)
    assert all(r["error"] is not None and math.isfinite(r["error"]) and r["description"] for r in section["peers"])
    assert all(r["error"] is not None and r["error"] < 1 for r in section["gddim"])
    assert all(isinstance(r["mode_switches"], int) for r in section["peers"] + section["gddim"])
    assert all(len(r["plan"]["ts"]) == r["nfe"] + 1 and "order" in r["plan"] for r in section["gddim"])
    assert section["mapping"]["ddim_vs_gddim_q1"] <= 1e-10  # measured 2.8e-16
    best = section["best_peer"][str(peers.QUICK_NFE[0])]
    assert best["error"] == min(r["error"] for r in section["peers"])
    assert {r["sampler"] for r in section["ratios"]} >= {"gddim"}


# ------------------------------------------------------------------------------------ the peer mapping
@pytest.fixture(scope="module")
def small_problem():
    """The benchmark problem with 3 start states and a loose reference (the mapping tests ignore it)."""
    pytest.importorskip("diffusers")
    import torch
    from diffusers import DDIMScheduler

    table = DDIMScheduler().alphas_cumprod.to(torch.float64).numpy()
    return peers.make_problem(table, n_states=3, rtol=1e-8)


@pytest.mark.parametrize("nfe", [10, 25])
def test_ddim_reproduces_gddim_q1_on_the_same_timesteps(small_problem, nfe):
    """DDIMScheduler (eta 0, trailing, set_alpha_to_one=False) on the exact eps = gDDIM q = 1 to ~1e-10."""
    from diffusers import DDIMScheduler

    check = peers.ddim_mapping_check(small_problem, sys.modules["diffusers"], nfe=nfe)
    assert check["ddim_vs_gddim_q1"] <= 1e-10  # measured 2.7e-16
    assert 1e-10 < check["ddim_float32_vs_gddim_q1"] < 1e-5  # float32 tables as shipped: visible, small
    sched = peers.promote_float64(DDIMScheduler(clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing"))
    sched.set_timesteps(nfe)
    assert sched.timesteps[0] == 999 and check["timesteps"] == sched.timesteps.tolist()


def test_timesteps_map_onto_the_continuous_schedule(small_problem):
    """Timestep n sits at t = (n + 1)/1000 with the scheduler's alpha_bar; sigmas map back to their times."""
    from diffusers import DDIMScheduler

    table = DDIMScheduler().alphas_cumprod.double().numpy()
    d = small_problem.diffusion
    n = np.array([0, 1, 99, 500, 998, 999])
    np.testing.assert_allclose(d.alpha_bar((n + 1) / 1000), table[n], rtol=1e-14)  # measured 4.9e-16 (relative)
    sigma = np.sqrt((1 - table[n]) / table[n])
    times = [small_problem.time_of_sigma(s) for s in sigma]
    np.testing.assert_allclose(times, (n + 1) / 1000, rtol=1e-11)  # measured 1.1e-15 (relative)


def test_surrogate_vp_matches_the_table_at_both_ends():
    """The reference's smooth VP has the table's alpha_bar at t = 1/N and t = 1."""
    table = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    smooth = peers.surrogate_vp(table)
    np.testing.assert_allclose(smooth.alpha_bar(np.array([1e-3, 1.0])), table[[0, -1]], rtol=1e-13)  # measured 8.4e-16 (relative)


# ------------------------------------------------------------------------------------ skips
def test_missing_diffusers_is_reported_as_skipped(tmp_path, monkeypatch):
    """Without diffusers the peers section is skipped with the reason; the command still succeeds."""
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    status = main(["bench", "--quick", "--sections", "peers", "--no-progress", "--out", str(tmp_path)])
    assert status == 0
    section = json.loads((tmp_path / "bench.json").read_text())["sections"]["peers"]
    assert section["status"] == "skipped"
    assert "diffusers is not installed" in section["reason"] and "gddim-numerics[peers]" in section["reason"]


def test_missing_scheduler_class_is_reported_as_skipped(monkeypatch):
    """A diffusers without one scheduler: that peer is skipped with the reason, the others run."""
    diffusers = pytest.importorskip("diffusers")
    monkeypatch.setattr(diffusers, "DEISMultistepScheduler", None)  # (a lazy module: delattr would not stick)
    out = peers.peer_accuracy(nfes=(5,), peers=("DDIM", "DEIS-3"), n_states=2, rtol=1e-8)
    assert out["status"] == "ok"
    assert "DEISMultistepScheduler" in out["skipped"]["DEIS-3"]
    assert [r["sampler"] for r in out["peers"]] == ["DDIM"]


def test_missing_backends_are_reported_with_reasons(monkeypatch):
    """Backends that are absent get a reason; a missing torch names the extra to install."""
    torch = pytest.importorskip("torch")
    reasons = bench.missing_backends(["numpy", "torch"])
    assert "numpy" not in reasons and "torch" not in reasons
    if not torch.cuda.is_available():
        assert "no CUDA device" in reasons["torch_cuda"]
    monkeypatch.setitem(sys.modules, "torch", None)
    assert "torch is not installed" in bench.missing_backends(["numpy"])["torch"]


def test_unregistered_gddim_method_is_skipped(monkeypatch):
    """A gDDIM entry whose method is not registered is reported as skipped; the other entries run."""
    pytest.importorskip("diffusers")
    monkeypatch.delitem(gd.METHODS, "gddim_auto")
    out = peers.peer_accuracy(nfes=(5,), peers=(), n_states=2, rtol=1e-8)
    assert "not registered" in out["skipped"]["gddim_auto"]
    assert {r["sampler"] for r in out["gddim"]} == {"gddim", "gddim q3"}


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, expected", [
    (["--bogus"], ["unrecognized arguments: --bogus", "--sections", "--quick", "--nfe"]),
    (["--sections", "plan,speed"], ["unknown section 'speed'", "plan, overhead, peers"]),
    (["--peers", "Euler"], ["unknown peer 'Euler'", "DPM++2M"]),
    (["--nfe", "0"], ["expected a positive integer"]),
    (["--repeats", "two"], ["expected a positive integer"]),
])
def test_bad_options_exit_2_listing_the_valid_ones(capsys, args, expected):
    """Unknown options or values: exit status 2, nothing run, the valid choices on stderr."""
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err


def test_output_path_that_is_a_file_exits_2(tmp_path, capsys):
    """--out naming an existing file: exit 2 before any work."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["bench", "--quick", "--no-progress", "--out", str(blocker)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_relative_table_error_is_per_step():
    """The coefficient error is relative to each step's largest entry, worst step reported."""
    ref = np.array([[1.0, 1e-6], [1e-3, 1e-3]])
    table = ref + np.array([[1e-12, 0.0], [0.0, 1e-12]])
    assert math.isclose(bench.relative_table_error(table, ref), 1e-9, rel_tol=1e-6)


def test_rebuild_reference_agrees_with_quad_vec_and_catches_a_wrong_table():
    """The bench's rebuild matches an independent quad_vec weight (1e-12), and a perturbed table is flagged."""
    from scipy.integrate import quad_vec

    from test_gddim_coefficients import integrand

    sde = gd.CLD()
    ts = gd.time_grid(sde, 10)
    reference = bench.rebuild_tables(gd.CLD, ts, {"order": 3})
    k, nodes = 5, ts[5 - np.arange(3)]
    for j in range(3):
        exact, _ = quad_vec(integrand(sde, ts[k + 1], nodes, j), ts[k], ts[k + 1], epsabs=0, epsrel=1e-14, limit=4000)
        assert np.max(np.abs(reference["history"][k, j].ravel() - exact)) <= 1e-12 * np.max(np.abs(exact))  # measured 1.6e-15
    tables = gd.GDDIM(sde, ts, order=3).tables
    assert bench.coefficient_errors(tables, reference)["max"] <= 1e-12  # measured 9.9e-15
    wrong = dict(reference, history=reference["history"] * (1 + 1e-9))
    assert bench.coefficient_errors(tables, wrong)["max"] >= 5e-10


@pytest.mark.parametrize("loaded, verdict, advice", [
    (True, "above target (machine loaded)", "may be load noise"),
    (False, "ABOVE TARGET (machine idle)", "on an idle machine: a real overhead"),
])
def test_overhead_verdict_names_the_load(loaded, verdict, advice):
    """A ratio above target is labelled by whether the machine was loaded, and the note gives the load averages."""
    rows = [{"backend": "numpy", "case": c, "shape": [1, 3, 16, 16], "sampler_ms": 1.0, "reference_ms": 0.5,
             "ratio": r, "target": 1.5, "meets_target": r <= 1.5} for c, r in (("vp", 1.2), ("bdm", 2.0))]
    load = {"before": [3.5, 3.0, 2.0] if loaded else [0.9, 0.8, 0.5], "after": [1.0, 1.0, 1.0], "cpu_count": 2,
            "limit": 1.5, "loaded": loaded}
    table = bench.overhead_table({"results": rows, "load": load})
    assert [r[-1] for r in table.rows] == ["ok", verdict]
    note = table.notes[-1]
    assert "before 3.5, 3.0, 2.0" in note if loaded else "before 0.9, 0.8, 0.5" in note
    assert "1 ratio(s) above target" in note and advice in note
