"""``robustrec report``: tables (and optionally a plot) of relative drops from audit records."""

from __future__ import annotations

import argparse
import sys

from reports.drops import load_results
from reports.plots import plot_drops, plot_format
from reports.tables import DEFAULT_METRIC, FORMATS, render
from robustrec.io import check_output_file, write_text

DESCRIPTION = """\
Aggregate audit records (clean evaluation + perturbed repeats, one or more seeds) into relative drops
Decr. = (clean - perturbed) / clean, mean ± std over seeds, with significance tests of each strategy
against its baseline (plain) over seeds and, where per-user values exist, over users.
All records must come from one dataset."""

EPILOG = """\
examples:
  robustrec report runs/audit                                  markdown table of recall@5 on stdout
  robustrec report runs/audit --metric recall@5 --metric ndcg@5 --format latex --out table.tex
  robustrec report runs/audit --format json --out baseline.json   (a saved report for check --baseline)
  robustrec report runs/audit --plot drops.png --out report.md"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report", help="tables and plots of robustness drops from audit records", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="DIR", help="audit result folders or *.jsonl record files")
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="output format (default: markdown)")
    parser.add_argument("--metric", action="append", dest="metrics", metavar="METRIC",
                        help=f"metric to report, e.g. recall@5; repeatable (default: {DEFAULT_METRIC} for "
                             "markdown/latex, every metric for csv/json)")
    parser.add_argument("--plot", metavar="FILE", help="also draw the drops of the first metric to FILE (.png or .svg)")
    parser.add_argument("--out", metavar="FILE", help="write the report to FILE (default: stdout)")
    parser.add_argument("--no-significance", dest="significance", action="store_false",
                        help="leave out the significance tests")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.plot is not None:  # before any work: a report is never computed only to fail at the write
        plot_format(args.plot)
    for option, path in (("--out", args.out), ("--plot", args.plot)):
        if path is not None:
            check_output_file(path, option)
    results = load_results(*args.paths)
    text = render(results, args.format, args.metrics, significance=args.significance)
    if args.plot:
        plot_drops(results, args.plot, (args.metrics or [DEFAULT_METRIC])[0])
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0
