"""The ``gddim-numerics validate`` command: a quick end-to-end run, its analysis helpers, bad input."""

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

import gddim_numerics as gd
from gddim_numerics import auto
from gddim_numerics.affine_law import output_law
from gddim_numerics.layout import dense_operator
from gddim_numerics.validation import analysis, measures, plots, report, study, study_problems
from gddim_numerics.validation.cli import build_parser, config_from_args, main
from gddim_numerics.validation.executor import run_tasks

TUNED = analysis.TUNED_SAMPLER


# ------------------------------------------------------------------------------------ quick run
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``validate --quick`` run serially in-process into a fresh folder (with plots and a README)."""
    root = tmp_path_factory.mktemp("quick")
    out, readme = root / "out", root / "README.md"
    status = main(["validate", "--quick", "--no-progress", "--workers", "1", "--out", str(out), "--write-readme",
                   str(readme)])
    return status, out, readme, json.loads((out / "results.json").read_text())


def _all_series(results):
    for diffusion, by_kind in results["results"].items():
        for kind, block in by_kind.items():
            for name, series in block["samplers"].items():
                yield diffusion, kind, name, series


def test_quick_run_writes_every_output(quick_run):
    """Exit status 0; JSON, Markdown tables, one PNG per diffusion and the README are written."""
    status, out, readme, results = quick_run
    assert status == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"results.json", "tables.md", "error_vs_nfe_vp.png", "error_vs_nfe_cld.png", "error_vs_nfe_bdm.png"}
    assert all((out / n).stat().st_size > 1000 for n in names if n.endswith(".png"))
    text = readme.read_text()
    assert "Dirac exactness" in text and "NFE to reach relative error" in text
    assert "Mode switches vs NFE" in text and "Tuned defaults ÷ the paper's scheme" in text
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".gddim")]  # no staging folder left


def test_quick_run_covers_every_sampler_with_finite_errors(quick_run):
    """Every sampler runs on every problem it applies to, and every error is a finite number."""
    _, _, _, results = quick_run
    seen = {name for _, _, name, _ in _all_series(results)}
    assert seen == set(study.SAMPLERS)
    for diffusion, kind, name, series in _all_series(results):
        assert series["status"] == ["ok"] * len(series["error"]), (diffusion, kind, name)
        assert all(e is not None and math.isfinite(e) for e in series["error"]), (diffusion, kind, name)
        if name != "rk45":
            assert series["nfe"] == list(study.QUICK_NFE)


def test_quick_run_dirac_exactness(quick_run):
    """gDDIM with K = R is exact on a Dirac point (<= 1e-8 for every NFE); K = L is far off on CLD."""
    _, _, _, results = quick_run
    exact = results["dirac_exactness"]
    for diffusion in ("vp", "cld", "bdm"):
        for name in ("gddim_q1", "gddim_q2", "gddim_q3", TUNED, "gddim_lam0.5", "gddim_lam1"):
            assert exact[diffusion][name] <= 1e-8, (diffusion, name)  # measured 1.1e-12
    assert exact["cld"]["gddim_L"] > 1e-2


def test_quick_run_has_gddim_tuned_everywhere(quick_run):
    """gddim_tuned runs on every problem with finite pathwise errors, is in the speed-up columns and its settings
    in the JSON are the defaults' own; its theoretical order is reported as 'varies'."""
    _, out, _, results = quick_run
    assert results["samplers"][TUNED]["theoretical_order"] == "varies"
    for diffusion, by_kind in results["results"].items():
        for kind, block in by_kind.items():
            s = block["samplers"][TUNED]
            assert s["metric"] == "pathwise" and s["nfe"] == list(study.QUICK_NFE)
            assert all(math.isfinite(e) for e in s["error"]), (diffusion, kind)
            assert TUNED in block["speedup"]["ratios"] or block["speedup"]["gddim"] is None
        sde = study.DIFFUSIONS[diffusion].make()
        settings = study.SAMPLERS[TUNED].settings
        if settings is not None:
            assert results["tuned_settings"][diffusion] == {str(n): settings(sde, n) for n in study.QUICK_NFE}
    tables = (out / "tables.md").read_text()
    width = max(map(len, study.SAMPLERS))
    assert f"| {TUNED:<{width}} | {study.SAMPLERS[TUNED].label}" in tables  # order table row, theory column
    assert tables.count(f"| {TUNED} ") >= 9 + 1 + 1 + 3 + 2  # 9 error tables, order, Dirac, 3 mode-switch, 2 target


def test_quick_run_mode_switches(quick_run):
    """Every pathwise series on the mixture (and only those) has a mode-switch fraction per run, in [0, 1] and a
    multiple of 1 / (number of robust start points)."""
    _, _, _, results = quick_run
    for diffusion, kind, name, series in _all_series(results):
        if kind == "mixture" and series["metric"] == "pathwise":
            points = results["results"][diffusion]["mixture"]["start_points"]
            n_paths = points["n_paths"] - points["excluded"]
            fractions = series["mode_switch"]
            assert len(fractions) == len(series["error"]), (diffusion, name)
            for f in fractions:
                assert 0.0 <= f <= 1.0 and f * n_paths == pytest.approx(round(f * n_paths), abs=1e-9)
        else:
            assert "mode_switch" not in series, (diffusion, kind, name)


def test_quick_run_tuned_vs_paper(quick_run):
    """The tuned ÷ paper rows: NFE 10 and 20 per diffusion, ratios recomputed from the error series, targets."""
    _, _, _, results = quick_run
    block = results["tuned_vs_paper"]
    assert block["paper"] == "gddim_q2" and block["targets"] == {"vp": 1 / 3, "cld": 1 / 5, "bdm": 1 / 2}
    expected = [(d, n) for d in ("vp", "cld", "bdm") for n in (10, 20)]
    assert [(r["diffusion"], r["nfe"]) for r in block["rows"]] == expected
    for r in block["rows"]:
        series = results["results"][r["diffusion"]]["mixture"]["samplers"]
        i = series["gddim_q2"]["nfe"].index(r["nfe"])
        tuned, q2, q3 = (series[n]["error"][i] for n in (TUNED, "gddim_q2", "gddim_q3"))
        assert r["ratio_gddim_q2"] == pytest.approx(tuned / q2, rel=1e-12)  # measured 0
        assert r["ratio_gddim_q3"] == pytest.approx(tuned / q3, rel=1e-12)  # measured 0
        assert r["met"] == (tuned / q2 <= block["targets"][r["diffusion"]])
        assert r[f"{TUNED}_mode_switch"] == series[TUNED]["mode_switch"][i]


def test_quick_run_on_two_dask_workers_gives_the_serial_json(quick_run, tmp_path):
    """``validate --quick --workers 2`` (a 2-process LocalCluster, tasks in another order and place) writes the serial
    run's results.json, every entry bit for bit (Monte Carlo ones included: seeds per task), the run time aside."""
    pytest.importorskip("distributed")
    assert main(["validate", "--quick", "--no-progress", "--no-plots", "--workers", "2", "--out", str(tmp_path)]) == 0
    parallel = json.loads((tmp_path / "results.json").read_text())
    serial = quick_run[3]
    assert parallel["meta"].pop("elapsed_s") > 0
    assert json.dumps(parallel, sort_keys=True) == json.dumps({**serial, "meta": {
        k: v for k, v in serial["meta"].items() if k != "elapsed_s"}}, sort_keys=True)


# ------------------------------------------------------------------------------------ snapshot
#: ``validate --quick``'s JSON as committed. Regenerate (after a deliberate change of the numbers) with
#:   gddim-numerics validate --quick --no-plots --no-progress --out /tmp/gq \
#:     && cp /tmp/gq/results.json tests/data/validate_quick.json
SNAPSHOT = Path(__file__).parent / "data" / "validate_quick.json"
#: Deterministic entries: relative tolerance, plus an absolute one for errors at round-off (below the order fit's
#: floor 1e-10, where only the magnitude is meaningful). Measured: the same run with OPENBLAS_CORETYPE=Prescott
#: differs from the snapshot by at most 6.4e-9 relative (errors above 1e-10; mode switches and excluded start points
#: identical; Monte Carlo errors by 1.2e-12 of their standard errors), so 1e-6 leaves a 150x margin.
SNAPSHOT_RTOL, SNAPSHOT_ATOL = 1e-6, 1e-10


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= SNAPSHOT_RTOL * max(abs(a), abs(b)) + SNAPSHOT_ATOL


def test_quick_run_matches_the_committed_snapshot(quick_run):
    """A fresh ``validate --quick`` gives the committed numbers: deterministic errors, fitted orders, NFE to target,
    mode switches and excluded start points to 1e-6 (relative); Monte Carlo errors within the sum of the two
    standard errors; the measured NFE of RK45 exactly."""
    _, _, _, fresh = quick_run
    saved = json.loads(SNAPSHOT.read_text())
    assert fresh["meta"]["options"] == saved["meta"]["options"]
    assert set(fresh["results"]) == set(saved["results"])
    for diffusion, by_kind in saved["results"].items():
        for kind, block in by_kind.items():
            new = fresh["results"][diffusion][kind]
            assert new.get("start_points") == block.get("start_points"), (diffusion, kind)
            assert set(new["samplers"]) == set(block["samplers"]), (diffusion, kind)
            for name, old in block["samplers"].items():
                got, where = new["samplers"][name], (diffusion, kind, name)
                assert got["nfe"] == old["nfe"] and got["status"] == old["status"], where
                assert got.get("mode_switch") == old.get("mode_switch"), where
                if old["metric"] == "moments":
                    for e, s, e0, s0 in zip(got["error"], got["stderr"], old["error"], old["stderr"]):
                        assert abs(e - e0) <= s + s0, where
                    continue
                assert all(_close(a, b) for a, b in zip(got["error"], old["error"])), where
                assert _close(got["fitted_order"]["order"], old["fitted_order"]["order"]), where
                assert got["fitted_order"]["nfe_range"] == old["fitted_order"]["nfe_range"], where
                assert got["nfe_to_target"]["bound"] == old["nfe_to_target"]["bound"], where
                assert _close(got["nfe_to_target"]["nfe"], old["nfe_to_target"]["nfe"]), where
    for diffusion, by_sampler in saved["dirac_exactness"].items():
        assert all(_close(fresh["dirac_exactness"][diffusion][n], e) for n, e in by_sampler.items()), diffusion


# ------------------------------------------------------------------------------------ analysis helpers
def test_assign_components_is_the_bayes_classifier():
    """Known answers: nearest mean for equal isotropic components; the weight and the covariance move the boundary."""
    means = np.array([[0.0, 0.0], [4.0, 0.0]])
    eye = np.stack([np.eye(2), np.eye(2)])
    x = np.array([[0.1, 3.0], [3.9, -2.0], [1.9, 0.0], [2.1, 0.0]])
    assert measures.assign_components(means, eye, np.array([0.5, 0.5]), x).tolist() == [0, 1, 0, 1]
    # weight 0.9 on component 1 moves the boundary from 2 to 2 - log(9)/4 = 1.45
    assert measures.assign_components(means, eye, np.array([0.1, 0.9]), x).tolist() == [0, 1, 1, 1]
    # a wide component 1 (variance 9) takes a point far off the axis, where the tight one's density is tiny;
    # log-density difference at (0, 3): component 0: -4.5, component 1: -log 9 - (16 + 9)/18
    wide = np.stack([np.eye(2), 9 * np.eye(2)])
    points = np.array([[0.0, 3.0], [0.0, 1.0]])
    assert measures.assign_components(means, wide, np.array([0.5, 0.5]), points).tolist() == [1, 0]


def test_mode_switch_fraction_known_answer():
    """Component labels of end points vs the reference's: the fraction that differ; shapes must agree."""
    assert measures.mode_switch_fraction([0, 1, 2, 0], [0, 1, 1, 2]) == 0.5
    assert measures.mode_switch_fraction(np.zeros(8, int), np.zeros(8, int)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        measures.mode_switch_fraction([0, 1], [0, 1, 2])


def test_final_components_on_a_mixture():
    """On a CLD mixture (full state: positions and velocities) each component's marginal mean at t_end is assigned
    to that component, so swapping end points gives a known mode-switch fraction."""
    sde = gd.CLD()
    problem = study_problems.make_problems("cld", sde, ("mixture",), seed=0, data_std=0.2)["mixture"]
    means, _ = problem.component_marginals(sde.t_end)
    ev = problem.event_shape
    x = means[[0, 1, 2, 0]].reshape((4,) + ev)
    ref = means[[0, 1, 1, 2]].reshape((4,) + ev)
    assert measures.final_components(problem, x, sde.t_end).tolist() == [0, 1, 2, 0]
    frac = measures.mode_switch_fraction(measures.final_components(problem, x, sde.t_end),
                                      measures.final_components(problem, ref, sde.t_end))
    assert frac == 0.5


def test_gddim_auto_spec_builds_the_auto_plan():
    """The study's gddim_auto sampler is auto_plan on its own grid and costs exactly the NFE asked."""
    spec = study.SAMPLERS["gddim_auto"]
    assert "gddim_auto" in study.StudyConfig().samplers and spec.order == "varies" and not spec.stochastic
    for sde in (gd.VPSDE.linear(),):
        for nfe in (5, 10):
            plan = spec.build(sde, nfe, grid_power=7.0)  # grid_power does not apply: the auto grid is used
            ref = auto.auto_plan(sde, nfe)
            assert plan.nfe == nfe
            np.testing.assert_array_equal(plan.ts, ref.ts)
            assert (plan.order, plan.form, plan.variable, plan.corrector) == (ref.order, ref.form, ref.variable,
                                                                                ref.corrector)


def test_tuned_vs_paper_and_speedups_on_synthetic_series():
    """Ratios, targets and verdicts from hand-made series; speed-ups relative to the paper's best and to tuned."""
    def series(errors, reach):
        return {"nfe": [10, 20], "error": errors, "mode_switch": [0.0, 0.0], "nfe_to_target": reach}

    mix = {"gddim_q2": series([1e-2, 1e-3], {"nfe": 40.0, "bound": "="}),
           "gddim_q3": series([5e-3, 4e-4], {"nfe": 20.0, "bound": "="}),
           TUNED: series([1e-3, 5e-4], {"nfe": 10.0, "bound": "="})}
    rows = analysis.tuned_vs_paper({"cld": {"mixture": {"samplers": mix}}, "vp": {"gaussian": {"samplers": mix}}})
    assert [(r["nfe"], r["ratio_gddim_q2"], r["met"]) for r in rows] == [(10, pytest.approx(0.1), True),
                                                                         (20, pytest.approx(0.5), False)]
    assert rows[0]["ratio_gddim_q3"] == pytest.approx(0.2) and rows[0]["target"] == 1 / 5
    speed = analysis.speedups(mix)
    assert speed["gddim"] == "gddim_q3"
    assert speed["ratios"][TUNED] == {"low": 0.5, "high": 0.5, "extrapolated": None}
    assert speed["tuned_ratios"]["gddim_q2"] == {"low": 4.0, "high": 4.0, "extrapolated": None}


def test_fit_order_recovers_known_slope():
    """A power law error = C NFE^-p is fitted exactly over its asymptotic range; a pre-asymptotic point, round-off
    and noise are left out; a bend inside the top three NFE gives no order; a plateau gives order 0."""
    nfe = np.array([5, 10, 20, 50, 100, 200])
    error = 3.0 * nfe**-2.5
    error[0] *= 10  # pre-asymptotic: local slope 5.8 between NFE 5 and 10
    fit = analysis.fit_order(nfe, error)
    assert fit["order"] == pytest.approx(2.5, abs=1e-12)  # measured 8.9e-16
    assert fit["nfe_range"] == [10, 200] and fit["n_points"] == 5
    assert fit["log_constant"] == pytest.approx(math.log(3.0), abs=1e-12)  # measured 6.7e-16
    floored = np.where(nfe >= 100, 1e-14, error)  # round-off floor at large NFE
    assert analysis.fit_order(nfe, floored)["nfe_range"] == [10, 50]
    noisy = analysis.fit_order(nfe, error, stderr=[None] * 4 + [error[4], error[5]])  # last two within 3 SE
    assert noisy["order"] == pytest.approx(2.5, abs=1e-12) and noisy["nfe_range"] == [10, 50]  # measured 1.3e-15
    assert analysis.fit_order([5, 10], [1e-3, 1e-4])["order"] is None  # two points cannot show a range
    assert analysis.fit_order([5, 10, 20], [1.0, 0.5, 0.05])["order"] is None  # local slopes 1 and 3.3
    stalled = analysis.fit_order(nfe, [0.04, 0.01, 0.0025, 0.0025, 0.0025, 0.0025])
    assert stalled["order"] == pytest.approx(0.0, abs=1e-12) and stalled["nfe_range"] == [20, 200]  # measured 4e-16


def test_nfe_to_target_interpolates_in_log_log():
    """For error = NFE^-2 the target 1e-3 is met at NFE = sqrt(1000); bounds where it is not bracketed."""
    nfe = [5, 10, 20, 50, 100]
    error = [n**-2.0 for n in nfe]
    reach = analysis.nfe_to_target(nfe, error, 1e-3)
    assert reach == {"nfe": pytest.approx(1000**0.5, rel=1e-12), "bound": "="}  # measured 1.1e-16
    assert analysis.nfe_to_target(nfe, error, 1e-1) == {"nfe": 5.0, "bound": "<="}
    assert analysis.nfe_to_target(nfe, error, 1e-6) == {"nfe": 100.0, "bound": ">"}
    fit = analysis.fit_order(nfe, error)
    assert analysis.extrapolate_nfe(fit, 1e-6, 200) == pytest.approx(1000.0, rel=1e-9)  # measured 2.2e-16
    assert analysis.extrapolate_nfe(fit, 1e-7, 100) is None  # sqrt(1e7) = 3162 > 10 x 100
    runs = [measures.Measurement(n, e) for n, e in zip(nfe, error)]
    beyond = analysis.series_dict("pathwise", runs, 1e-7, None)["nfe_to_target"]
    assert beyond == {"nfe": 100.0, "bound": ">", "extrapolated": None, "extrapolation_limit": 1000.0}
    assert report.fmt_nfe(beyond) == "> 100 (fit: > 1000)"
    within = analysis.series_dict("pathwise", runs, 1e-5, None)["nfe_to_target"]
    assert within["extrapolated"] == pytest.approx(1e5**0.5, rel=1e-9)  # measured 0
    assert "extrapolation_limit" not in within


def test_nfe_to_target_with_monte_carlo_errors():
    """A Monte Carlo error e ± s is below the target only if e + 2s is, above only if e - 2s is."""
    nfe = [10, 20, 40]
    assert analysis.nfe_to_target(nfe, [1e-1, 4e-2, 2e-2], 3e-2, stderr=[1e-3] * 3)["bound"] == "="
    assert analysis.nfe_to_target(nfe, [1e-1, 4e-2, 2e-2], 3e-2, stderr=[1e-3, 1e-2, 1e-2])["bound"] == "unresolved"
    assert analysis.nfe_to_target(nfe, [1e-1, 8e-2, 6e-2], 3e-2, stderr=[1e-3] * 3) == {"nfe": 40.0, "bound": ">"}


def test_speedup_bounds():
    """The NFE ratio is exact when both are interpolated, a one-sided bound otherwise, plus extrapolations."""
    exact = analysis.speedup({"nfe": 100.0, "bound": "="}, {"nfe": 10.0, "bound": "="})
    assert exact == {"low": 10.0, "high": 10.0, "extrapolated": None}
    not_reached = analysis.speedup({"nfe": 200.0, "bound": ">", "extrapolated": 900.0}, {"nfe": 10.0, "bound": "="})
    assert not_reached == {"low": 20.0, "high": None, "extrapolated": 90.0}
    early = analysis.speedup({"nfe": 50.0, "bound": "="}, {"nfe": 5.0, "bound": "<="})
    assert early == {"low": 10.0, "high": None, "extrapolated": None}
    unknown = analysis.speedup({"nfe": None, "bound": "unresolved"}, {"nfe": 5.0, "bound": "="})
    assert unknown == {"low": None, "high": None, "extrapolated": None}


def test_gaussian_distance_is_w2_for_commuting_covariances():
    """With diagonal covariances the distance is the closed-form W2, relative to the reference's RMS norm."""
    m1, m2 = np.array([1.0, -2.0]), np.array([1.5, -1.0])
    c1, c2 = np.diag([0.25, 4.0]), np.diag([1.0, 0.09])
    w2 = np.sqrt(np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(np.diag(c1)) - np.sqrt(np.diag(c2))) ** 2))
    expected = w2 / np.sqrt(np.sum(m2**2) + 1.09)
    assert measures.gaussian_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-14)  # measured 0
    assert measures.gaussian_distance(m2, c2, m2, c2) == 0.0


@pytest.mark.parametrize("method, options", [("gddim", {"order": 1, "lam": 0.5}), ("em", {"lam": 1.0})])
def test_linear_response_law_matches_output_law(method, options):
    """The probe behind the `law` measure equals the StepTables propagation of ``affine_law.output_law``."""
    sde = gd.CLD()
    ev = (2, 2)
    data = gd.GaussianData(sde, ev, [[0.3, 0.0], [-0.2, 0.0]],
                           dense_operator(sde, sde.initial_covariance, ev) + np.diag([0.04, 0, 0.01, 0]))
    plan = gd.METHODS[method].build(sde, gd.time_grid(sde, 6, "power"), **options)
    mean_start, cov_start = data.marginal(sde.t_start)

    def affine_eps(t):  # exact eps_R = R^T C^{-1} (u - m), written from docs/math §8.1
        m, c = data.marginal(t)
        w = dense_operator(sde, sde.gddim_factor(t), ev).T @ np.linalg.inv(c)
        return w, -w @ m

    expected = output_law(sde, plan.tables, ev, affine_eps, mean_start, cov_start)
    got = measures.affine_output_law(plan, data.eps_R, ev, mean_start, cov_start)
    np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=1e-12)  # measured 2.4e-16
    np.testing.assert_allclose(got[1], expected[1], rtol=0, atol=1e-12)  # measured 1.0e-13


def test_robust_points_known_answer():
    """A start point is robust only if every check gives its reference component."""
    ref = np.array([0, 1, 2, 1])
    assert measures.robust_points(ref, [np.array([0, 1, 2, 2]), np.array([0, 0, 2, 2])]).tolist() == [
        True, False, True, False]
    assert measures.robust_points(ref, []).all()


def test_bench_excludes_a_start_point_on_the_separatrix():
    """Two mirror-image components with equal weights: the flow keeps the mirror plane x_1 = 0, so a start point on
    it ends on the decision boundary and is not robust; points well inside a half-plane are."""
    sde = gd.VPSDE.linear()
    ev = (2,)
    covs = np.stack([dense_operator(sde, sde.initial_covariance, ev) + 0.04 * np.eye(2)] * 2)
    problem = gd.GaussianMixture(sde, ev, [0.5, 0.5], np.array([[1.0, 0.3], [-1.0, 0.3]]), covs)
    config = study.StudyConfig(n_paths=2)
    bench = study_problems.Bench(study_problems.Case("vp", sde, {"mixture": problem}), "mixture", config)
    paths = np.array([[0.0, 0.5], [1.5, -0.2], [-1.2, 0.4]])
    ends = problem.reference_flow(paths, sde.t_start, sde.t_end)
    assert abs(ends[0, 0]) < 1e-9  # the mirror plane is invariant
    components = measures.final_components(problem, ends, sde.t_end)
    assert components[1:].tolist() == [0, 1]
    assert bench.robust_mask(paths, components).tolist() == [False, True, True]


def test_sampler_names_follow_the_registered_methods():
    """A method name of gd.METHODS selects all its study variants; a registered method outside the study and an
    unknown name are refused with the valid names."""
    args = build_args(["--samplers", "gddim", "euler"])
    assert config_from_args(args).samplers == ("gddim_q1", "gddim_q2", "gddim_q3", "gddim_lam0.5", "gddim_lam1",
                                               "euler")
    assert all(study.SAMPLERS[s].method in gd.METHODS for s in study.SAMPLERS)
    with pytest.raises(ValueError, match="'dop853' is registered but not part of the study"):
        study.resolve_samplers(["dop853"])
    with pytest.raises(ValueError, match="gddim \\(gddim_q1, gddim_q2"):
        study.resolve_samplers(["gdim"])


def build_args(argv):
    return build_parser().parse_args(["validate", *argv])


def test_study_tasks_share_the_reference_and_do_not_depend_on_order():
    """One reference task per problem, needed by every sampler task; running the sampler tasks in reverse order
    gives the same numbers (every random stream is seeded from the task's names)."""
    config = study.StudyConfig(diffusions=("vp",), samplers=("gddim_q2", "gddim_lam1"), data=("mixture", "gaussian"),
                               nfe=(5, 10), n_paths=6, n_mc=200)
    tasks = study.study_tasks(config)
    assert [t.key for t in tasks] == [("vp", k, n) for k in ("mixture", "gaussian")
                                      for n in ("reference", "gddim_q2", "gddim_lam1")]
    assert all(t.needs == (t.key[:2] + ("reference",),) for t in tasks if t.key[2] != "reference")
    forward = {o.key: pickle.loads(pickle.dumps(o.value))  # values travel to workers
               for o in run_tasks(tasks, workers=1)}
    backward = {o.key: o.value for o in run_tasks([tasks[3], tasks[5], tasks[4], tasks[0], tasks[2], tasks[1]],
                                                  workers=1)}
    for key, value in forward.items():
        if key[2] != "reference":
            assert value == backward[key], key
    assert forward[("vp", "mixture", "gddim_lam1")][0].stderr > 0


def test_overlapping_series_are_detected():
    """Series equal within 2 % at every NFE, or both at round-off, overlap the first one drawn; others do not."""
    def series(errors):
        return {"nfe": [5, 10], "error": errors}

    found = plots._overlaps({"a": series([1e-1, 1e-2]), "b": series([1.01e-1, 0.99e-2]), "c": series([1e-1, 2e-2]),
                              "d": series([1e-13, 1e-15]), "e": series([3e-15, 1e-12])})
    assert found == {"b": "a", "e": "d"}


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, expected", [
    (["--samplers", "gddim_q1,euler2"], ["unknown sampler 'euler2'", "gddim_q1", "ancestral", "sscs"]),
    (["--samplers", "dop853"], ["'dop853' is registered but not part of the study"]),
    (["--diffusions", "vp", "ve"], ["unknown diffusion 've'", "vp, cld, bdm"]),
    (["--data", "uniform"], ["unknown data kind 'uniform'", "gaussian, mixture, dirac"]),
    (["--samplers", "heun", "--nfe", "1", "10"], ["'heun' needs NFE >= 2"]),
    (["--nfe", "0", "10"], ["nfe must be positive integers"]),
    (["--data-std", "nan"], ["data_std must be a finite number"]),
    (["--target", "inf"], ["target must be a finite number"]),
    (["--samplers", "sscs", "--diffusions", "vp"], ["none of the samplers"]),
    (["--nfe", "ten"], ["invalid int value"]),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, expected):
    """Bad names, NFE or parameters: status 2, the reason (and the valid names) on stderr, no files."""
    out = tmp_path / "out"
    assert main(["validate", "--no-progress", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_folder_exits_2(tmp_path, capsys):
    """An output folder below a file, or inside the package, is refused before any work."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["validate", "--no-progress", "--out", str(blocker / "out")]) == 2
    assert "is a file" in capsys.readouterr().err
    package = study.__file__.rsplit("/", 1)[0]
    assert main(["validate", "--no-progress", "--out", package + "/results"]) == 2
    assert "inside the package" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]
