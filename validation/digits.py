"""``gddim-numerics demo digits``: trained score networks on scikit-learn's digits, every sampler on them.

Trains (or loads from the cache) a VP, a CLD and a BDM score network on the bundled 8×8 digits
(:mod:`.digits_train`), a small classifier for the Fréchet distance (:mod:`.digits_quality`), then
runs every sampler at NFE 5, 10, 20, 50 from the same start points against the network's own
DOP853 solution (:mod:`.digits_runs`, as executor tasks), and writes ``results.json``,
``DIGITS.md``, ``digits_errors.png`` and ``digits_samples_<diffusion>.png`` to ``--out``
(:mod:`.digits_report`). ``--write-readme`` also writes the report to a README path
(``validation/DIGITS.md``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import files
from .digits_report import collect, plot_errors, plot_samples, render
from .digits_runs import DigitsConfig, tasks
from .digits_train import DEFAULT_CACHE, DIFFUSIONS, load_split
from .executor import add_execution_arguments, execution_from_args, run_tasks

PROG = "gddim-numerics demo digits"


def add_parser(subparsers) -> None:
    """Add ``demo`` with its ``digits`` subcommand."""
    demo = subparsers.add_parser("demo", help="demonstrations on trained networks",
                                 description="Demonstrations of the samplers on trained networks.")
    sub = demo.add_subparsers(dest="demo", required=True, metavar="DEMO")
    p = sub.add_parser(
        "digits", help="score networks trained on scikit-learn's digits: solver error and sample quality per sampler",
        description="Train small VP / CLD / BDM score networks on scikit-learn's 8x8 digits (cached), then measure "
                    "every sampler's solver error against the network's own DOP853 probability-flow solution and a "
                    "Frechet distance of its samples, at NFE 5 10 20 50; writes results.json, DIGITS.md and PNGs.")
    p.add_argument("--quick", action="store_true", help="tiny networks and few runs (a smoke test, well under a minute)")
    p.add_argument("--out", default="gddim-digits", metavar="DIR",
                   help="output folder for results.json, DIGITS.md and the PNGs (default ./gddim-digits)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), metavar="DIR",
                   help=f"folder of the trained weights (default {DEFAULT_CACHE}); reused when the training "
                        "configuration matches")
    p.add_argument("--diffusions", nargs="+", choices=tuple(DIFFUSIONS), metavar="NAME",
                   help=f"diffusions to run (default: all of {', '.join(DIFFUSIONS)})")
    p.add_argument("--write-readme", metavar="PATH", help="also write the report to PATH (e.g. validation/DIGITS.md)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (no matplotlib needed)")
    add_execution_arguments(p)
    p.set_defaults(func=run_digits)


def _missing_dependency() -> str | None:
    for module, extra in (("torch", "torch"), ("sklearn", "digits")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed; pip install 'gddim-numerics[{extra}]'"
    return None


def run_digits(args: argparse.Namespace) -> int:
    """Check the input, run every task, print and write the report."""
    from .cli import PACKAGE_DIRS, _usage_error

    missing = _missing_dependency()
    try:
        if missing:
            raise ValueError(missing)
        out = files.check_writable_folder(args.out, forbidden=PACKAGE_DIRS)
        readme = None if args.write_readme is None else files.check_writable_file(args.write_readme)
        cache = files.check_writable_folder(args.cache, forbidden=PACKAGE_DIRS)
        execution = execution_from_args(args)
    except (ValueError, ImportError) as err:
        return _usage_error("demo digits", str(err))
    config = DigitsConfig.quick() if args.quick else DigitsConfig()
    if args.diffusions:
        config = replace(config, diffusions=tuple(dict.fromkeys(args.diffusions)))
    results, markdown = run_and_render(config, Path(out), Path(cache), _command(args), not args.no_plots, **execution)
    print(markdown)
    if readme is not None:
        files.write_text_atomic(readme, markdown)
        print(f"wrote {readme}")
    return 0


def run_and_render(config: DigitsConfig, out: Path, cache: Path, command: str, plots: bool, *,
                   workers: int | None = None, scheduler: str | None = None) -> tuple[dict, str]:
    """Run the demo, write its outputs to ``out``; ``(results, markdown)``. ``workers``/``scheduler``: where the
    tasks run (:func:`~.executor.run_tasks`).

    BLAS and torch run on one thread: the matrices are tiny, and extra threads only add contention.
    """
    import torch
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()

    def progress(done: int, total: int, outcome) -> None:
        state = "ok" if outcome.ok else "FAILED"
        print(f"[{done}/{total}] {outcome.key} {state} {outcome.seconds:.1f} s", file=sys.stderr, flush=True)

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            outcomes = run_tasks(tasks(config, cache), workers=workers, scheduler=scheduler, progress=progress)
            classifier = next(o for o in outcomes if o.key == ("classifier",))
            train_images, _, held_images, _ = load_split()
            real_fd = classifier.value.frechet(train_images[:config.n_samples]) if classifier.ok else None
            results, images = collect(outcomes, config, real_fd)
    finally:
        torch.set_num_threads(torch_threads)
    results["seconds"] = time.perf_counter() - started
    results["cold_nets"] = sum(1 for o in outcomes if o.key[0] == "net" and o.ok and not o.value["cached"])
    results["command"] = command
    markdown = render(results, command)
    files.write_text_atomic(out / "results.json", json.dumps(results, indent=1, default=str) + "\n")
    files.write_text_atomic(out / "DIGITS.md", markdown)
    if plots:
        plot_errors(results, out)
        plot_samples(results, images, held_images[:16], out)
    return results, markdown


def _command(args: argparse.Namespace) -> str:
    return shlex.join(["gddim-numerics", *getattr(args, "argv", ["demo", "digits"])])
