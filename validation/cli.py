"""The ``gddim-numerics`` command line.

Subcommands
-----------
``validate``
    The validation study (:mod:`.study`): samplers × diffusions × NFE on exact-score problems;
    prints the tables and writes ``results.json``, ``tables.md`` and log-log PNG plots to ``--out``.

A subcommand is a function ``add_<name>(subparsers)`` that adds its parser and sets ``func`` (the
function ``func(args) -> exit status``); :func:`build_parser` calls each. Bad input exits with
status 2 and a message on stderr, before any work is done and without writing anything; Ctrl-C
exits with status 130 and writes nothing. ``--workers N`` / ``--scheduler ADDRESS`` choose where
the study's tasks run (:mod:`.executor`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import gddim_numerics
import gddim_numerics.backends

from . import files, report
from .bench import add_parser as add_bench
from .digits import add_parser as add_demo
from .executor import TaskOutcome, add_execution_arguments, execution_from_args
from .family import add_parser as add_family
from .study import (DATA_KINDS, DEFAULT_NFE, DIFFUSIONS, SAMPLERS, StudyConfig, method_variants, prepare_cases,
                    resolve_samplers, run_study, study_tasks)

PROG = "gddim-numerics"
USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
PACKAGE_DIRS = tuple(Path(f).parent for f in (gddim_numerics.__file__, gddim_numerics.backends.__file__, __file__))


def _names(text: str) -> list[str]:
    """Comma-separated names (``--samplers gddim_q1,em`` as well as ``--samplers gddim_q1 em``)."""
    return [part for part in text.split(",") if part]


def _flatten(groups: Sequence[Sequence[str]] | None) -> tuple[str, ...] | None:
    return None if groups is None else tuple(name for group in groups for name in group)


def add_validate(subparsers) -> None:
    """Add the ``validate`` subcommand."""
    p = subparsers.add_parser(
        "validate", help="convergence / exactness study of every sampler on exact-score problems",
        description="Run samplers x diffusions x NFE on exact-score problems (Gaussian, Gaussian mixture, Dirac "
                    "data), print error-vs-NFE tables, mode switches on the mixture, fitted convergence orders, Dirac "
                    "exactness, the problem-aware gddim_auto's error ÷ the paper scheme's, and NFE to reach a target error, "
                    "and write the same as JSON plus log-log PNG plots.")
    p.add_argument("--diffusions", nargs="+", type=_names, metavar="NAME",
                   help=f"diffusions to study (default: all of {', '.join(DIFFUSIONS)})")
    variants = "; ".join(f"{m} = {', '.join(v)}" for m, v in method_variants().items() if v != (m,))
    p.add_argument("--samplers", nargs="+", type=_names, metavar="NAME",
                   help=f"samplers (default: all of {', '.join(SAMPLERS)}); a method name of gddim_numerics.METHODS "
                        f"selects all its variants ({variants})")
    p.add_argument("--data", nargs="+", type=_names, metavar="KIND",
                   help=f"exact-score problems (default: all of {', '.join(DATA_KINDS)})")
    p.add_argument("--nfe", nargs="+", type=int, metavar="N",
                   help="network evaluations per sample for the grid-based samplers "
                        f"(default: {' '.join(map(str, DEFAULT_NFE))})")
    p.add_argument("--seed", type=int, metavar="N", help="seed of problem parameters, start points and noise (default 0)")
    p.add_argument("--target", type=float, metavar="REL_ERR", help="relative error of the 'NFE to reach' table (default 1e-3)")
    p.add_argument("--data-std", type=float, metavar="STD", help="scale of the data covariances (default 0.2)")
    p.add_argument("--grid-power", type=float, metavar="P",
                   help="grids uniform in t^(1/P) (default 2, the papers' 'quadratic' grid; gddim_auto chooses its own)")
    p.add_argument("--quick", action="store_true",
                   help="every code path in about 30 s on 2 cores (NFE 5 10 20, fewer samples); try this first")
    p.add_argument("--out", default="gddim-validation", metavar="DIR",
                   help="output folder for results.json, tables.md and the PNG plots (default ./gddim-validation)")
    p.add_argument("--write-readme", metavar="PATH",
                   help="also write the report as a README (e.g. validation/README.md)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    add_execution_arguments(p)
    p.set_defaults(func=run_validate)


# Each subcommand adds itself here; e.g. a ``bench`` command: add_bench(subparsers) -> func=run_bench.
SUBCOMMANDS: tuple[Callable, ...] = (add_validate, add_bench, add_family, add_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``gddim-numerics`` parser with one sub-parser per subcommand."""
    parser = argparse.ArgumentParser(prog=PROG, description="gDDIM numerics: validation studies of samplers "
                                                           "for linear diffusions.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {gddim_numerics.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    """The :class:`StudyConfig` of ``validate``'s options (``--quick`` first, explicit options win)."""
    config = StudyConfig.quick_config() if args.quick else StudyConfig()
    explicit = {
        "diffusions": _flatten(args.diffusions), "data": _flatten(args.data),
        "samplers": None if args.samplers is None else resolve_samplers(_flatten(args.samplers)),
        "nfe": None if args.nfe is None else tuple(sorted(set(args.nfe))),
        "seed": args.seed, "target": args.target, "data_std": args.data_std, "grid_power": args.grid_power,
    }
    config = replace(config, **{k: v for k, v in explicit.items() if v is not None})
    config.check()
    return config


def run_validate(args: argparse.Namespace) -> int:
    """The ``validate`` subcommand: check every input, run the study, print and write the report."""
    try:
        config = config_from_args(args)
        out = files.check_writable_folder(args.out, forbidden=PACKAGE_DIRS)
        readme = None if args.write_readme is None else files.check_writable_file(args.write_readme)
        prepare_cases(config)  # bad problem parameters fail here, before any work
        execution = execution_from_args(args)
    except (ValueError, ImportError) as err:
        return _usage_error(args.command, str(err))
    plots = not args.no_plots and _have("matplotlib", "plots", "--no-plots", "plot")
    try:
        results = run_study(config, None if args.no_progress else _section_progress(config), **execution)
    except ConnectionError as err:
        return _usage_error(args.command, str(err))
    markdown = report.render_report(results)
    print(markdown)
    names = files.write_outputs(results, out, markdown, plots)
    print(f"wrote {', '.join(names)} to {out}")
    if readme is not None:
        files.write_text_atomic(readme, report.readme_text(results, _command_line(args)))
        print(f"wrote {readme}")
    if results["failures"]:
        print(f"{PROG} validate: {len(results['failures'])} task(s) failed (listed at the end of the report)",
              file=sys.stderr)
        return 1
    return 0


def _usage_error(command: str, message: str) -> int:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def _have(module: str, what: str, flag: str, extra: str) -> bool:
    """Whether an optional dependency imports; if not, say on stderr what is skipped and how to get it."""
    try:
        __import__(module)
    except ImportError:
        print(f"{PROG}: {module} is not installed, so no {what} ({flag} silences this); "
              f"pip install 'gddim-numerics[{extra}]'", file=sys.stderr)
        return False
    return True


def _section_progress(config: StudyConfig) -> Callable[[int, int, TaskOutcome], None]:
    """A ``progress`` callback that prints one line on stderr per finished section (diffusion × data):
    its time, the elapsed time and the sections left."""
    sections: dict[tuple, int] = {}
    for task in study_tasks(config):
        sections[task.key[:2]] = sections.get(task.key[:2], 0) + 1
    clock = {"start": time.perf_counter(), "section": time.perf_counter()}
    left = dict(sections)

    def progress(done: int, total: int, outcome: TaskOutcome) -> None:
        section = outcome.key[:2]
        left[section] -= 1
        if left[section]:
            return
        now = time.perf_counter()
        finished = sum(1 for n in left.values() if n == 0)
        failed = "" if outcome.ok else " (a task failed)"
        print(f"validate: {'/'.join(section)} done in {now - clock['section']:.0f} s{failed}; section {finished} of "
              f"{len(sections)}, {now - clock['start']:.0f} s elapsed", file=sys.stderr, flush=True)
        clock["section"] = now

    return progress


def _command_line(args: argparse.Namespace) -> str:
    """The command line of this run (it regenerates the README)."""
    return shlex.join([PROG, *args.argv])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gddim-numerics``; returns the exit status (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help / --version (0) or an argparse usage error (2)
        return int(done.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # the Dask cluster is closed by then, and the output is written only at the end
        print(f"{PROG} {args.command}: interrupted; nothing written", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
