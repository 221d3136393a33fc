"""``robustrec check``: the CI regression gate over audit records (exit 0 ok, 1 regression, 2 bad input)."""

from __future__ import annotations

import argparse

from reports.check import MIRROR_NOT_WORSE, REQUIREMENTS, check, parse_max_drop, parse_min_clean
from robustrec.cli.common import finite_float
from robustrec.errors import ConfigError
from robustrec.io import check_output_file
from robustrec.metrics import DEFAULT_METRIC

DESCRIPTION = """\
Fail (exit status 1) when audit results exceed their robustness budgets; exit 2 on bad input
(missing or unreadable results or baseline, unknown metric, malformed budget), 0 when all is within
budget. Drops are relative: Decr. = (clean - perturbed) / clean, mean over seeds, of one metric
(--metric, default recall@20)."""

EPILOG = """\
budgets:
  --max-drop 0.05 | 5%                 every drop at most 5%
  --max-drop 1e-6=0.02,1e-4=0.1        per severity (severities without a budget are skipped)
  --max-drop 10%,1e-6=2%               a default and per-severity overrides
  --min-clean recall@20=0.3            clean metric at least 0.3 (repeatable)
  --baseline saved.json --tolerance T  drop may exceed the saved report's drop by at most T (a fraction:
                                       0.01 = 1 percentage point), clean may fall below the saved clean
                                       value by at most T (metric units)
  --require mirror-not-worse           every mirror strategy drops at most as much as the strategy it
                                       adds MG to (plain for mirror, amr for amr+mirror) + tolerance

JUnit (--junit): one test case per check, each with its measured value, budget and baseline in its
output and properties, and a time; a severity the results have but the budget or the baseline report
lacks is a skipped case with the reason.

examples:
  robustrec check results --max-drop 5% --junit check.xml
  robustrec check results --max-drop 5% --metric recall@5               (the paper's metric)
  robustrec check results --baseline main-report.json --tolerance 0.01 --require mirror-not-worse"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check", help="CI gate: fail when robustness drops exceed budgets", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="DIR", help="audit result folders or *.jsonl record files")
    parser.add_argument("--max-drop", action="append", default=[], metavar="BUDGET",
                        help="largest allowed relative drop: 0.05, 5%%, or SEVERITY=BUDGET,... (repeatable)")
    parser.add_argument("--min-clean", action="append", default=[], metavar="METRIC=X",
                        help="smallest allowed clean value of METRIC (repeatable)")
    parser.add_argument("--baseline", metavar="FILE", help="saved JSON report (robustrec report --format json)")
    parser.add_argument("--tolerance", type=_tolerance, default=0.0, metavar="T",
                        help="absolute slack for --baseline and --require")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help="metric whose drops are checked")
    parser.add_argument("--require", action="append", default=[], choices=REQUIREMENTS,
                        help="an extra rule to enforce (repeatable)")
    parser.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (one test case per check)")
    parser.set_defaults(func=run)
    return parser


def _tolerance(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def run(args: argparse.Namespace) -> int:
    if args.tolerance and args.baseline is None and MIRROR_NOT_WORSE not in args.require:
        raise ConfigError("--tolerance applies to --baseline and --require mirror-not-worse; give one of them")
    if args.junit is not None:
        check_output_file(args.junit, "--junit")
    max_drop, per_severity = parse_max_drop(args.max_drop) if args.max_drop else (None, {})
    result = check(
        args.paths, max_drop=max_drop, max_drop_per_severity=per_severity,
        min_clean=parse_min_clean(args.min_clean), baseline=args.baseline, tolerance=args.tolerance,
        metric=args.metric, require_mirror_not_worse=MIRROR_NOT_WORSE in args.require, junit=args.junit,
    )
    for violation in result.violations:
        print(f"FAIL [{violation.rule}] {violation.message}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"robustrec check: {result.summary()}")
    return 0 if result.ok else 1
