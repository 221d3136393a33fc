"""``robustrec study``: run a whole study from a spec file, report it, list the shipped recipes.

A thin shell over :mod:`robustrec.studies`::

    robustrec study run SPEC --out DIR [--data DIR] [--quick] [--executor local|ray] [--workers N]
    robustrec study report DIR [--format markdown|latex|csv|json] [--out FILE]
    robustrec study list

SPEC is a TOML file or the name of a shipped recipe (``robustrec study list``).
"""

from __future__ import annotations

import argparse
import sys

from robustrec.cli.common import format_table
from robustrec.errors import ConfigError
from robustrec.io import check_output_file, write_text

FORMATS = ("markdown", "latex", "csv", "json")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from robustrec.cli import _finish_command_parser

    p = sub.add_parser(
        "study",
        help="run a whole study from a spec file (train, select on validation, audit, report)",
        description="A study: models x strategies x hyper-parameter grids x seeds, selected on validation, "
        "audited under perturbation suites, reported in one folder. Rerunning a spec reuses everything "
        "finished and resumes what was interrupted.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    run = actions.add_parser("run", help="run (or finish, or extend) a study",
                             description="Validate SPEC, train every run (reusing finished ones), select each "
                             "grid on validation, audit the selected runs and write DIR/report.md.")
    run.add_argument("spec", metavar="SPEC", help="a study spec (TOML file) or a recipe name (robustrec study list)")
    run.add_argument("--out", required=True, metavar="DIR", help="the study folder (a rerun reuses it)")
    run.add_argument("--data", metavar="DIR", help="dataset folder, instead of the spec's [study].data")
    run.add_argument("--quick", action="store_true",
                     help="a few epochs, one seed, two grid values, one repeat: checks a spec in seconds")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local: this machine (a pool of --workers processes); ray: Ray tasks "
                          "(pip install -e '.[ray]')")
    run.add_argument("--workers", type=int, default=1,
                     help="jobs at a time; each uses the spec's [study].threads torch threads")
    run.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (default: start a local one)")
    run.set_defaults(func=run_command)

    report = actions.add_parser("report", help="render a study's report from its folder")
    report.add_argument("folder", metavar="DIR", help="a study folder (robustrec study run --out DIR)")
    report.add_argument("--format", choices=FORMATS, default="markdown", help="output format")
    report.add_argument("--metric", help="the metric of the tables (default: the study's select metric)")
    report.add_argument("--out", metavar="FILE", help="write the report here instead of stdout")
    report.set_defaults(func=report_command)

    listing = actions.add_parser("list", help="the recipes shipped with robustrec, one line each")
    listing.set_defaults(func=list_command)
    for parser in (run, report, listing):  # --threads and --no-progress after the action too
        _finish_command_parser(parser)


def run_command(args: argparse.Namespace) -> int:
    from robustrec.studies import build_executor, load_spec, run_study

    if args.threads is not None:
        raise ConfigError("--threads does not apply to a study: set [study].threads in the spec (it is part of "
                          "every run's identity); --workers sets how many jobs run at once")
    spec = load_spec(args.spec, data=args.data, quick=args.quick)
    gpus = 1 if spec.device.startswith("cuda") else 0  # a task trained on cuda holds one GPU
    executor = build_executor(args.executor, args.workers, args.ray_address, threads=spec.threads,
                              gpus_per_task=gpus)
    try:
        folder = run_study(spec, args.out, executor=executor, progress=not args.no_progress)
    finally:
        close = getattr(executor, "close", None)
        if close is not None:
            close()
    print(folder / "report.md")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from robustrec.studies.report import study_report

    if args.out:
        check_output_file(args.out)
    text = study_report(args.folder, fmt=args.format, metric=args.metric)
    if args.out:
        write_text(args.out, text if text.endswith("\n") else text + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def list_command(args: argparse.Namespace) -> int:
    from robustrec.studies.recipes import recipe_names, recipe_summary

    names = recipe_names()
    print(format_table(["recipe", "what it runs"], [[name, recipe_summary(name)] for name in names]))
    return 0
