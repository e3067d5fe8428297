"""Rerun the study behind ``gddim_numerics.defaults.TUNED`` (see that module's docstring)::

    python -m gddim_numerics.validation.tune_defaults --kind cld --out DIR  # search on the tuning set, then
                                            # re-measure the top settings at NFE 5..50 and pick per bracket
    python -m gddim_numerics.validation.tune_defaults --report              # tuned vs paper, reporting sets
                                            # (defaults' mixB and validate's own mixture problems)
    python -m gddim_numerics.validation.tune_defaults --report --kind vp --nfe 10 20

The search prints, per NFE, the paper scheme's errors on the tuning problems and the 8 best settings
(score = mean log10 of error / paper error; then the error on each tuning problem).
"""

from __future__ import annotations

import argparse

from gddim_numerics import defaults


def report_validate(kinds=("vp", "cld", "bdm"), nfes=(5, 10, 20, 50), seed: int = 0) -> dict:
    """Tuned / paper error on ``validate``'s own mixture problems (validation.study defaults; never tuned on).

    Uses the study's problems (3-component mixture, component std 0.2, seed 0), start points (64 paths)
    and DOP853 reference, and its pathwise error; "paper" is its ``gddim_q2`` (``method="gddim"``, order 2,
    power-2 grid) and ``gddim_q3`` samplers.
    """
    from gddim_numerics.validation import study

    config = study.StudyConfig(diffusions=tuple(kinds), samplers=("gddim_q2", "gddim_q3"), data=("mixture",),
                               nfe=tuple(nfes), seed=seed)
    out = {}
    for case in study.prepare_cases(config):
        bench = study.Bench(case, "mixture", config)
        for nfe in nfes:
            tuned = bench.measure(study.SAMPLERS["gddim_q2"], defaults.tuned_plan(case.diffusion, nfe)).error
            q2 = bench.measure(study.SAMPLERS["gddim_q2"], study.SAMPLERS["gddim_q2"].build(case.diffusion, nfe)).error
            q3 = bench.measure(study.SAMPLERS["gddim_q3"], study.SAMPLERS["gddim_q3"].build(case.diffusion, nfe)).error
            out[(case.name, nfe)] = (tuned, q2, q3)
            print(f"validate mixture {case.name:4s} NFE {nfe:3d}: tuned {tuned:.3e}  paper q2 {q2:.3e} q3 {q3:.3e}  "
                  f"tuned/q2 {tuned / q2:.3f}  tuned/min(q2,q3) {tuned / min(q2, q3):.3f}")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", nargs="*", default=None, choices=defaults.KINDS)
    parser.add_argument("--nfe", nargs="*", type=int, default=[5, 10, 20, 50])
    parser.add_argument("--report", action="store_true", help="report tuned/paper ratios on the reporting set")
    parser.add_argument("--out", default=None, help="directory for the search results as JSON (<kind>.json)")
    args = parser.parse_args(argv)
    kinds = tuple(args.kind) if args.kind else defaults.KINDS
    if args.report:
        defaults.report(kinds, tuple(args.nfe))
        report_validate(tuple(k for k in kinds if k in ("vp", "cld", "bdm")), tuple(args.nfe))
    else:
        for kind in kinds:
            out = None if args.out is None else f"{args.out}/{kind}.json"
            defaults.search(kind, tuple(args.nfe), out=out)
            if out is not None:
                defaults.bracket_choice(kind, out)


if __name__ == "__main__":
    main()
