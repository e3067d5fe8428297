"""The problem-family benchmark: valid problems, an error measure checked against the exact flow, the
robust-point filter, and the ``family`` command's JSON."""

import json
import math

import numpy as np
import pytest

import gddim_numerics as gd
from gddim_numerics.layout import basis_matrix, dense_operator
from gddim_numerics.validation import family
from gddim_numerics.validation.cli import main
from gddim_numerics.validation.family_problems import FAMILY_KINDS, make_problem
from gddim_numerics.validation.family_report import render_report, summarize

SEEDS = range(1000, 1012)  # two problems of every kind


def test_generator_covers_every_kind_and_is_reproducible():
    problems = [make_problem(s) for s in SEEDS]
    assert sorted({p.kind for p in problems}) == sorted(FAMILY_KINDS)
    first = [(p.data.weights, p.data.means, p.data.covs) for p in problems]
    make_problem.cache_clear()
    for p, (w, m, c) in zip((make_problem(s) for s in SEEDS), first):
        np.testing.assert_array_equal(p.data.weights, w)
        np.testing.assert_array_equal(p.data.means, m)
        np.testing.assert_array_equal(p.data.covs, c)


@pytest.mark.parametrize("seed", SEEDS)
def test_generated_problem_is_valid(seed):
    p = make_problem(seed)
    sde, data = p.diffusion, p.data
    assert 1 <= data.n_components <= 6 and 0.05 <= p.scale <= 2.0
    assert np.all(data.weights > 0) and math.isclose(data.weights.sum(), 1.0, rel_tol=1e-12)
    sigma0 = dense_operator(sde, sde.initial_covariance, data.event_shape)
    for cov in data.covs:  # the clean covariance S - Sigma_0 is PSD and not degenerate
        clean = np.linalg.eigvalsh(cov - sigma0)
        nonzero = clean[clean > 1e-12 * clean.max()]
        assert clean.min() > -1e-12 * clean.max() and nonzero.min() > 1e-4 * p.scale**2
    if p.kind == "dense":  # constant stable drift: every eigenvalue of A in the left half plane
        assert np.linalg.eigvals(sde.A).real.max() <= -0.5 + 1e-12
        assert np.linalg.eigvalsh(sde.Q).min() > 0
    if p.kind == "linear":  # time-varying drift contractive at every t: F + F^T negative definite
        for t in np.linspace(0.0, 1.0, 7):
            f = sde.drift(t)[0]
            assert np.linalg.eigvalsh(f + f.T).max() < 0
            assert np.linalg.eigvalsh(sde.diffusion(t)[0]).min() > 0
    if p.kind == "bdm":  # full pixel covariance: far from diagonal in the DCT basis
        w = basis_matrix(sde, data.event_shape)
        modes = w.T @ (data.covs[0] - sigma0) @ w
        off = modes - np.diag(np.diag(modes))
        assert np.abs(off).max() > 0.01 * np.abs(np.diag(modes)).max()


def test_error_measure_matches_the_exact_gaussian_flow():
    # seed 1002: VP, one component -> Gaussian data; its exact flow is a closed form (eigenbasis of S)
    p = make_problem(1002)
    assert p.kind == "vp" and p.data.n_components == 1
    gauss = gd.GaussianData(p.diffusion, p.data.event_shape, p.data.means[0], p.data.covs[0])
    ref = family.compute_reference(1002, 6)
    exact = gauss.exact_flow(ref.start, p.diffusion.t_start, p.diffusion.t_end)
    # measured 8.1e-12: DOP853 at rtol 1e-10 against the closed form (100x margin)
    assert np.max(np.abs(ref.end - exact)) / np.max(np.abs(exact)) < 1e-9
    x = family.run_method(p, "paper_q3", 10, ref.start)
    independent = np.sqrt(np.sum((x - exact) ** 2) / np.sum(exact**2))
    # the measure against the reference vs against the exact flow: measured 3.1e-10 relative apart (30x margin)
    assert family.measure(ref, 1002, "paper_q3", 10) == pytest.approx(independent, rel=1e-8)
    assert 1e-3 < independent < 1.0  # a real discretization error (measured 2.5e-2), not a trivial zero


def test_robust_filter_drops_a_start_point_on_the_decision_boundary():
    # two mirror-image components at (+-1, 0): the plane x_1 = 0 is a separatrix of the flow
    sde = gd.VPSDE.linear()
    cov = 0.3**2 * np.eye(2) + dense_operator(sde, sde.initial_covariance, (2,))
    data = gd.GaussianMixture(sde, (2,), [0.5, 0.5], [[1.0, 0.0], [-1.0, 0.0]], [cov, cov])
    start = np.array([[0.0, 1.5], [2.0, 0.3], [-1.5, -0.5]])
    ref = family.reference_for(data, start, np.random.default_rng(0))
    np.testing.assert_array_equal(ref.robust, [False, True, True])
    assert ref.n_excluded == 1
    assert ref.tight_change < 1e-9  # kept points: reference vs tighter solve, measured 3.3e-11 (30x margin)


def test_relative_error_uses_only_robust_rows_and_flags_non_finite():
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    x = ref + np.array([[0.1, 0.0], [0.0, 0.0], [100.0, 0.0]])
    rows = np.array([True, True, False])
    assert family.relative_error(x, ref, rows) == pytest.approx(0.1 / math.sqrt(5.0), rel=1e-14)
    x[0, 0] = np.nan
    assert family.relative_error(x, ref, rows) == math.inf
    assert math.isnan(family.relative_error(x, ref, np.zeros(3, dtype=bool)))


def test_unknown_or_unavailable_methods_are_refused():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        family.check_methods(["nope"])
    assert family.check_methods(["gddim"])[0] == "paper_q3"
    if not family.auto_available():
        with pytest.raises(ValueError, match="DataStatistics"):
            family.check_methods(["auto_scaled3"])


def test_quick_cli_run_writes_consistent_json(tmp_path, capsys):
    status = main(["family", "--quick", "--first-seed", "1002", "--problems", "2", "--points", "4",
                   "--methods", "paper_q3", "gddim", "--nfe", "5", "20", "--out", str(tmp_path), "--no-progress",
                   "--workers", "1", "--write-readme", str(tmp_path / "FAMILY.md")])
    assert status == 0
    readme = (tmp_path / "FAMILY.md").read_text()
    assert "Regenerated by `gddim-numerics family --quick" in readme
    assert readme.endswith((tmp_path / "family.md").read_text())
    saved = json.loads((tmp_path / "family.json").read_text())
    cfg = saved["config"]
    assert cfg["methods"] == ["paper_q3", "gddim"] and cfg["nfe"] == [5, 20] and cfg["points"] == 4
    assert [p["seed"] for p in saved["problems"]] == [1002, 1003]
    for p in saved["problems"]:
        assert p["kind"] == make_problem(p["seed"]).kind and 0 <= p["excluded"] <= 4
        paper = p["errors"]["paper_q3"]
        assert all(0 < e < 1 for e in paper) and paper[1] < paper[0]  # converging with NFE
    summary = saved["summary"]
    assert summary == json.loads(json.dumps(summarize(saved)))  # the stored summary is that of the stored errors
    ratios = [p["errors"]["gddim"][1] / p["errors"]["paper_q3"][1] for p in saved["problems"]]
    stats = summary["overall"]["gddim"][1]
    assert stats["median"] == pytest.approx(float(np.median(ratios)), rel=1e-12)
    assert stats["worst"] == pytest.approx(max(ratios), rel=1e-12) and stats["losses"] == sum(r > 1 for r in ratios)
    assert "gddim" in (tmp_path / "family.md").read_text()
    assert main(["family", "--methods", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_summary_counts_failures_as_losses_and_checks_the_targets():
    errors = {  # per problem: paper_q3, auto, auto_scaled3 at NFE 10 and 50
        "paper_q3": [[1.0, 1.0], [2.0, 1.0], [4.0, 1.0]],
        "auto": [[0.2, 0.05], [0.5, 0.08], [1.0, 0.2]],
        "auto_scaled3": [[0.4, 0.1], [None, 0.08], ["inf", 0.1]],
    }
    results = {"config": {"paper": "paper_q3", "methods": list(errors), "nfe": [10, 50], "kinds": ["vp", "ve"],
                          "first_seed": 1000, "problems": 3},
               "problems": [{"kind": k, "points": 4, "excluded": e, "reference_tight_change": 1e-11,
                             "errors": {m: errors[m][i] for m in errors}}
                            for i, (k, e) in enumerate([("vp", 0), ("ve", 1), ("vp", 0)])],
               "failures": []}
    s = summarize(results)
    auto10, auto50 = s["overall"]["auto"]
    assert auto10 == {"n": 3, "median": 0.25, "worst": 0.25, "losses": 0, "failed": 0}
    assert auto50["median"] == pytest.approx(0.08) and auto50["worst"] == pytest.approx(0.2)
    assert s["targets"]["auto"] == {"10": True, "50": True}
    scaled10 = s["overall"]["auto_scaled3"][0]
    assert scaled10 == {"n": 3, "median": 0.4, "worst": math.inf, "losses": 2, "failed": 2}
    assert s["targets"]["auto_scaled3"] == {"10": False, "50": True}
    assert s["growth"]["auto_scaled3"][1]["median"] == pytest.approx(1.0)  # 2.0, 1.0, 0.5
    assert s["by_kind"]["auto"]["ve"][0]["median"] == 0.25
    assert s["exclusions"] == {"points": 12, "excluded": 1, "problems_with_exclusions": 1,
                               "max_reference_tight_change": 1e-11}
    assert "Error growth from inexact statistics" in render_report(results, s)


def test_grid_gain_is_the_pick_error_over_the_optimised_error_per_kind():
    errors = {"paper_q3": [[1.0], [1.0], [1.0]], "auto": [[0.1], [0.5], [0.2]], "auto_pick": [[0.4], [0.25], ["inf"]]}
    results = {"config": {"paper": "paper_q3", "methods": list(errors), "nfe": [10], "kinds": ["vp", "ve"],
                          "first_seed": 1000, "problems": 3},
               "problems": [{"kind": k, "points": 4, "excluded": 0, "reference_tight_change": 1e-11,
                             "errors": {m: errors[m][i] for m in errors}} for i, k in enumerate(["vp", "vp", "ve"])],
               "failures": []}
    s = summarize(results)
    # gains 0.4/0.1 = 4 and 0.25/0.5 = 0.5; the third problem (pick non-finite) has none
    assert s["grid_gain"]["all"][0] == {"n": 2, "median": pytest.approx(2.25), "smallest": 0.5, "below_one": 1}
    assert s["grid_gain"]["vp"][0]["n"] == 2 and s["grid_gain"]["ve"][0]["n"] == 0
    assert "auto_pick" not in s["growth"]
    assert "Grid optimisation vs the best family pick" in render_report(results, s)


def test_auto_variants_pass_their_statistics_to_gddim_auto(monkeypatch):
    seen = []

    class FakeStatistics:  # stands in for gd.DataStatistics: records what each variant builds
        def __init__(self, what):
            self.what = what

        @classmethod
        def from_problem(cls, data):
            return cls(("problem", data.n_components))

        @classmethod
        def from_samples(cls, diffusion, samples):
            return cls(("samples", len(samples)))

        def scaled(self, factor):
            return FakeStatistics(self.what + ("scaled", factor))

        def diagonal(self):
            return FakeStatistics(self.what + ("diagonal",))

    def build(diffusion, ts, statistics=None, optimize_grid=True):
        seen.append((None if statistics is None else statistics.what, optimize_grid))
        return gd.GDDIM(diffusion, ts)

    monkeypatch.setattr(gd, "DataStatistics", FakeStatistics, raising=False)
    monkeypatch.setitem(gd.METHODS, "gddim_auto", gd.Method(build=build, options=("statistics", "optimize_grid"),
                                                                 description="fake"))
    assert family.default_methods()[-6:] == tuple(family.AUTO_VARIANTS)
    p = make_problem(1002)
    x = p.data.sample_prior(2, rng=0)
    for name in family.AUTO_VARIANTS:
        family.run_method(p, name, 5, x)
    k = p.data.n_components
    assert seen == [(("problem", k), True), (("problem", k, "scaled", 3.0), True), (("problem", k, "diagonal"), True),
                    (("samples", 100), True), (None, True), (("problem", k), False)]


def test_clean_samples_have_the_clean_moments():
    # CLD: the velocity channel of clean data is exactly 0 (Sigma_0's velocity variance not added)
    p = next(make_problem(s) for s in SEEDS if make_problem(s).kind == "cld")
    x = family.clean_samples(p.data, 4000, np.random.default_rng(1)).reshape(4000, -1)
    assert np.all(x[:, 1::2] == 0.0)
    sigma0 = dense_operator(p.diffusion, p.diffusion.initial_covariance, p.data.event_shape)
    w, mu = p.data.weights, p.data.means.reshape(p.data.n_components, -1)
    mean = w @ mu
    cov = np.einsum("k,kij->ij", w, p.data.covs - sigma0) + np.einsum("k,ki,kj->ij", w, mu - mean, mu - mean)
    scale = np.sqrt(np.max(np.diag(cov)))
    # Monte Carlo, 4000 samples, fixed seed: measured 1.2 (mean) and 1.6 (covariance) units of scale^j/sqrt(n)
    assert np.max(np.abs(x.mean(axis=0) - mean)) < 12 * scale / np.sqrt(4000)
    assert np.max(np.abs(np.cov(x, rowvar=False) - cov)) < 16 * scale**2 / np.sqrt(4000)
