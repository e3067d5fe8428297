"""The GPU check of the array backends, in one command for a person with a CUDA device.

``python -m gddim_numerics.validation.gpu_check`` (from the repository, installed editable):

1. runs the backend agreement tests on CuPy and PyTorch CUDA
   (``pytest -m gpu tests/test_backends.py``);
2. checks that the PyTorch loop never synchronises with the host: whole sample calls (VP, CLD
   channel-split, BDM; deterministic order 2 and stochastic with one seed and per-sample seeds)
   run under ``torch.cuda.set_sync_debug_mode("error")`` with ``check_finite=False``, and with the
   finite check on, the number of synchronisations (``"warn"`` mode) is the same for 4 and 12 steps
   (the one look at the stacked sums after the loop);
3. runs the step-overhead benchmark (:mod:`.bench_overhead`) on every available backend.

Everything is printed; the exit status is 0 when the tests pass and no per-step synchronisation is
found (benchmark ratios above target are reported, not failed), and 0 with a message when the
machine has no GPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings
from pathlib import Path

import gddim_numerics as gd

from .bench_overhead import HEADER, available_backends, bench_overhead, format_machine, format_result, machine_info

TEST_FILE = Path(__file__).resolve().parent.parent / "tests" / "test_backends.py"


def _eps(x, t: float):
    import array_api_compat

    xp = array_api_compat.array_namespace(x)
    return 0.3 * xp.tanh(x) + 0.1 * x


def run_gpu_tests() -> bool:
    """``pytest -m gpu`` on the backend test file; prints its output, returns whether it passed."""
    print(f"== 1. backend agreement tests on the GPU ({TEST_FILE})", flush=True)
    if not TEST_FILE.exists():
        print("   the test file is not there: run this from a checkout installed with `pip install -e .`")
        return False
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs", str(TEST_FILE)],
                          capture_output=True, text=True)
    print(done.stdout[-20000:], done.stderr[-5000:], sep="\n", flush=True)
    return done.returncode == 0


def _sync_cases(torch, device: str):
    """``(label, plan, state, sample options)`` of the synchronisation check, each label for 4 and 12 steps."""
    vp, cld, bdm = gd.VPSDE.linear(), gd.CLD(), gd.BDM((32, 32))
    x_img = torch.randn(8, 3, 32, 32, device=device)
    x_cld = torch.randn(8, 6, 32, 32, device=device)
    for name, diffusion, x, options in (("vp", vp, x_img, {}), ("cld split", cld, x_cld, {"block_axis": 1}),
                                        ("bdm", bdm, x_img, {})):
        for n_steps in (4, 12):
            ts = gd.time_grid(diffusion, n_steps)
            yield f"{name} order 2", gd.GDDIM(diffusion, ts, order=2), x, dict(options)
            yield f"{name} lam 0.5, one seed", gd.GDDIM(diffusion, ts, lam=0.5), x, dict(options, rng=1)
            yield (f"{name} lam 0.5, per-sample seeds", gd.GDDIM(diffusion, ts, lam=0.5), x,
                   dict(options, rng=list(range(x.shape[0]))))


def check_no_sync(device: str = "cuda") -> bool:
    """Run the synchronisation checks (see the module docstring); prints one line per case."""
    import torch

    print("== 2. host synchronisation of the torch CUDA loop", flush=True)
    ok = True
    counts: dict[str, dict[int, int]] = {}
    for label, plan, x, options in _sync_cases(torch, device):
        plan.tables  # noqa: B018 - build the host tables outside the checked region
        torch.cuda.synchronize()
        try:
            torch.cuda.set_sync_debug_mode("error")
            plan.sample(_eps, x, check_finite=False, **options)
            verdict = "no synchronisation"
        except RuntimeError as exc:
            ok, verdict = False, f"SYNCHRONISED: {exc}".splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                plan.sample(_eps, x, **options)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        n_sync = sum("synchroniz" in str(w.message) for w in caught)
        counts.setdefault(label, {})[plan.nfe] = n_sync
        print(f"   {label + f', {plan.nfe} steps':<48} check_finite=False: {verdict}; "
              f"check_finite=True: {n_sync} synchronisation(s)")
    for key, by_steps in counts.items():
        if len(set(by_steps.values())) != 1:
            ok = False
            print(f"   {key}: the synchronisations grow with the number of steps: {by_steps}")
    print("   passed" if ok else "   FAILED", flush=True)
    return ok


def run_benchmark(backends: list[str]) -> None:
    """The step-overhead benchmark on ``backends``, printed as it runs."""
    print("== 3. step-overhead benchmark", flush=True)
    print(HEADER, "-" * len(HEADER), sep="\n", flush=True)
    report = bench_overhead(backends, progress=lambda r: print(format_result(r), flush=True))
    print(f"({report['seconds']:.0f} s; step ms = sampler time per step with a zero-cost network, fused ms = "
          "the hand-written step, both medians)", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m gddim_numerics.validation.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=None,
                        help="comma-separated backends of the benchmark (default: every available one)")
    parser.add_argument("--skip-benchmark", action="store_true", help="run the tests and the sync check only")
    args = parser.parse_args(argv)

    print(format_machine(machine_info()), flush=True)
    backends = available_backends()
    gpu = [b for b in backends if b in ("torch_cuda", "cupy")]
    if not gpu:
        print("\nNo CUDA device is available to PyTorch or CuPy: nothing to check on a GPU here. "
              "(CPU backends are covered by `pytest tests/test_backends.py`.)")
        return 0
    print(f"GPU backends: {', '.join(gpu)}\n", flush=True)
    ok = run_gpu_tests()
    if "torch_cuda" in gpu:
        ok = check_no_sync() and ok
    else:
        print("== 2. skipped: PyTorch has no CUDA device here")
    if not args.skip_benchmark:
        run_benchmark(args.backends.split(",") if args.backends else backends)
    print("\nGPU check " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
