"""``robustrec demo``: the whole pipeline in one command (a thin shell over :mod:`robustrec.demo`)."""

from __future__ import annotations

import argparse
import dataclasses

from robustrec import demo
from robustrec.cli.common import add_data_argument, add_device_argument, float_list, int_list
from robustrec.errors import ConfigError
from robustrec.metrics import DEFAULT_METRIC

DEFAULTS = demo.DemoConfig()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train, audit and report end to end (the README's main job)",
        description=demo.__doc__.split("\n\n")[1].replace("\n", " "),
    )
    add_data_argument(p)
    p.add_argument("--out", required=True, help="output folder: runs/, results/, report.md, plots")
    p.add_argument("--seeds", type=int_list, default=DEFAULTS.seeds, help="training seeds")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="maximum epochs per run")
    p.add_argument("--patience", type=int, default=DEFAULTS.patience, help="early-stopping patience")
    p.add_argument("--sigma2", type=float_list, default=DEFAULTS.sigma2, help="noise audit: variances sigma^2")
    p.add_argument("--scale", type=float_list, default=DEFAULTS.scales,
                   help="relative noise audit: scales s (sigma = s * std of each table)")
    p.add_argument("--prob", type=float_list, default=DEFAULTS.probs, help="caption audit: insertion probabilities")
    p.add_argument("--captioner", default=DEFAULTS.captioner, help="imagenet (offline) or blip2")
    p.add_argument("--metric", default=DEFAULT_METRIC, help="metric for the report and plots")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise ConfigError("--epochs must be >= 1")
    config = dataclasses.replace(
        DEFAULTS, seeds=tuple(args.seeds), epochs=args.epochs, patience=args.patience, sigma2=tuple(args.sigma2),
        scales=tuple(args.scale), probs=tuple(args.prob), captioner=args.captioner, metric=args.metric.lower(),
        device=args.device,
    )
    report = demo.run_demo(args.data, args.out, config, progress=not args.no_progress)
    print(f"report: {report}")
    return 0
