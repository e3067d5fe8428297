"""Rerun the study behind ``gddim_numerics.defaults.TUNED`` (see that module's docstring).

    python -m gddim_numerics.validation.tune_defaults --kind cld            # search on the tuning set
    python -m gddim_numerics.validation.tune_defaults --report              # tuned vs paper, reporting set
    python -m gddim_numerics.validation.tune_defaults --report --kind vp --nfe 10 20

The search prints, per NFE, the paper scheme's errors on the tuning problems and the 8 best settings
(score = mean log10 of error / paper error; then the error on each tuning problem).
"""

from __future__ import annotations

import argparse

from gddim_numerics import defaults


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
    else:
        for kind in kinds:
            out = None if args.out is None else f"{args.out}/{kind}.json"
            defaults.search(kind, tuple(args.nfe), out=out)


if __name__ == "__main__":
    main()
