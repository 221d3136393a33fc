"""``robustrec report``: tables and plots of relative drops from audit records, with flatness beside them."""

from __future__ import annotations

import argparse
import sys

from reports.drops import load_results
from reports.flatness import build_flatness, plot_flatness, render_with_flatness
from reports.plots import plot_drops, plot_format
from reports.tables import FORMATS, render
from robustrec.errors import ConfigError
from robustrec.io import check_output_file, write_text
from robustrec.metrics import DEFAULT_METRIC
from robustrec.records import load_diagnoses

DESCRIPTION = f"""\
Aggregate audit records (clean evaluation + perturbed repeats, one or more seeds) into relative drops
Decr. = (clean - perturbed) / clean, mean ± std over seeds, with significance tests of each strategy
against its baseline (plain) over seeds and, where per-user values exist, over users: a paired t-test
and a Wilcoxon signed-rank test, Holm-corrected within each table; a verdict needs both.
All records must come from one dataset. The metric is {DEFAULT_METRIC} (MMRec's validation metric)
unless --metric says otherwise.
With --flatness DIAG (records of `robustrec diagnose`), each audited run's flatness (gradient norm,
Hessian eigenvalue and trace, sharpness) is set beside its drops, joined on dataset fingerprint and
config hash, with Spearman's rank correlation per model between each measure and Decr."""

EPILOG = f"""\
examples:
  robustrec report results/noise                               markdown tables of {DEFAULT_METRIC} on stdout
  robustrec report results/noise --metric recall@5             the paper's metric (Tables 4 and 5)
  robustrec report results/noise --metric recall@20 --metric ndcg@20 --format latex --out tables.tex
                                          (table floats with captions and labels; needs \\usepackage{{booktabs}})
  robustrec report results/noise --format json --out baseline.json   (a saved report for check --baseline)
  robustrec report results/noise --plot drops.png --out report.md
  robustrec report results/noise --flatness diag --plot-flatness flatness.png
                                          (flatness tables after the drops; csv gives the flatness rows alone)"""


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
    parser.add_argument("--flatness", nargs="+", action="extend", metavar="DIAG",
                        help="diagnosis folders or diagnostics.jsonl files (robustrec diagnose): add the flatness "
                             "of each audited run and its Spearman correlation with the drops")
    parser.add_argument("--plot-flatness", metavar="FILE",
                        help="with --flatness, also draw each measure against the drops to FILE (.png, .svg or .pdf)")
    parser.add_argument("--no-significance", dest="significance", action="store_false",
                        help="leave out the significance tests (default: included)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.plot_flatness is not None and not args.flatness:
        raise ConfigError("--plot-flatness needs --flatness DIAG (the diagnoses to plot)")
    for plot in (args.plot, args.plot_flatness):  # before any work: nothing is computed only to fail at the write
        if plot is not None:
            plot_format(plot)
    for option, path in (("--out", args.out), ("--plot", args.plot), ("--plot-flatness", args.plot_flatness)):
        if path is not None:
            check_output_file(path, option)
    diagnoses = load_diagnoses(*args.flatness) if args.flatness else None
    results = load_results(*args.paths)
    metric = (args.metrics or [DEFAULT_METRIC])[0]
    if diagnoses is None:
        text = render(results, args.format, args.metrics, significance=args.significance)
    else:
        text = render_with_flatness(results, diagnoses, args.format, args.metrics, significance=args.significance)
    if args.plot:
        plot_drops(results, args.plot, metric)
    if args.plot_flatness:
        plot_flatness(build_flatness(results, diagnoses, metric), args.plot_flatness)
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0
