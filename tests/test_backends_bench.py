"""The step-overhead benchmark compares like with like (no timing is asserted here)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from gddim_numerics.validation import bench_overhead as bench
from test_backends import from_split, reference_operators, to_split


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("case", ["vp", "cld", "cld_trailing", "bdm"])
def test_hand_written_step_is_the_samplers_step(backend, case):
    """The reference expression is the plan's last step on the same arrays, as the loop forms it."""
    if backend == "torch":
        pytest.importorskip("torch")
    be = bench._Backend(backend)
    plan, shape, options = bench._case(case, (2, 3, 8, 8), 6)
    rng = np.random.default_rng(3)
    x, y, y_old = (rng.standard_normal(shape) for _ in range(3))
    got = bench._reference_step(case, be, plan.tables, "float64", *(be.asarray(a, "float64") for a in (x, y, y_old)))()
    if case == "bdm":
        x_in, got = got
        np.testing.assert_allclose(np.asarray(x_in), scipy.fft.idctn(x, axes=(-2, -1), norm="ortho"), atol=1e-12)  # measured 3e-06 x tolerance
        y = scipy.fft.dctn(y, axes=(-2, -1), norm="ortho")  # the loop combines the output's DCT
    # independent NumPy float64 step: einsum blocks (trailing layout) / per-frequency products
    _, _, apply = reference_operators(plan.diffusion)
    split = options.get("block_axis", -1) != -1
    k_blocks = plan.diffusion.block_size
    arrays = [from_split(a, k_blocks) if split else a for a in (x, y, y_old)]
    k, tables = plan.tables.n_steps - 1, plan.tables
    assert tables.orders[k] == 2
    blocks = (tables.state[k], tables.history[k, 0], tables.history[k, 1])
    want = sum(apply(b, a) for b, a in zip(blocks, arrays))
    want = to_split(want) if split else want
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)  # measured 0.0003 x tolerance


def test_bench_case_reports_what_it_measured():
    result = bench.bench_case("numpy", "vp", (1, 1, 4, 4), n_steps=3, repeats=2, warmup=1)
    assert result["shape"] == [1, 1, 4, 4] and result["n_steps"] == 3 and result["repeats"] == 2
    assert result["sampler_ms"] > 0 and result["reference_ms"] > 0
    assert result["ratio"] == pytest.approx(result["sampler_ms"] / result["reference_ms"])
    assert result["meets_target"] == (result["ratio"] <= bench.TARGETS["vp"])
    report = {"machine": bench.machine_info(), "results": [result], "seconds": 0.1}
    table = bench.format_report(report)
    assert "numpy" in table and "vp" in table and f"{result['ratio']:.2f}" in table
