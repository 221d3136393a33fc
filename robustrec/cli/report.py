"""``robustrec report``: tables (and optionally a plot) of relative drops from audit records."""

from __future__ import annotations

import argparse
import sys

from reports.drops import load_results
from reports.plots import plot_drops, plot_format
from reports.tables import FORMATS, render
from robustrec.io import check_output_file, write_text
from robustrec.metrics import DEFAULT_METRIC

DESCRIPTION = f"""\
Aggregate audit records (clean evaluation + perturbed repeats, one or more seeds) into relative drops
Decr. = (clean - perturbed) / clean, mean ± std over seeds, with significance tests of each strategy
against its baseline (plain) over seeds and, where per-user values exist, over users: a paired t-test
and a Wilcoxon signed-rank test, Holm-corrected within each table; a verdict needs both.
All records must come from one dataset. The metric is {DEFAULT_METRIC} (MMRec's validation metric)
unless --metric says otherwise."""

EPILOG = f"""\
examples:
  robustrec report results/noise                               markdown tables of {DEFAULT_METRIC} on stdout
  robustrec report results/noise --metric recall@5             the paper's metric (Tables 4 and 5)
  robustrec report results/noise --metric recall@20 --metric ndcg@20 --format latex --out tables.tex
                                          (table floats with captions and labels; needs \\usepackage{{booktabs}})
  robustrec report results/noise --format json --out baseline.json   (a saved report for check --baseline)
  robustrec report results/noise --plot drops.png --out report.md"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report", help="tables and plots of robustness drops from audit records", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="DIR", help="audit result folders or *.jsonl record files")
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="output format (default: markdown)")
    parser.add_argument("--metric", action="append", dest="metrics", metavar="METRIC",
                        help=f"metric to report, e.g. recall@5; repeatable (default: {DEFAULT_METRIC} for "
                             "markdown and latex, every metric for csv and json)")
    parser.add_argument("--plot", metavar="FILE",
                        help="also draw the drops of the first metric to FILE (.png, .svg or .pdf)")
    parser.add_argument("--out", metavar="FILE", help="write the report to FILE (default: stdout)")
    parser.add_argument("--no-significance", dest="significance", action="store_false",
                        help="leave out the significance tests (default: included)")
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
