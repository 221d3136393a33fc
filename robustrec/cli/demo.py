"""``robustrec demo``: the whole pipeline in one command (a thin shell over :mod:`robustrec.demo`).

The flags change the shipped ``demo`` recipe: a flag not given keeps the recipe's value (shown in the
help), so that ``--quick`` shrinks what the other flags leave alone.
"""

from __future__ import annotations

import argparse

from robustrec import demo
from robustrec.cli.common import add_data_argument, add_device_argument, float_list, int_list
from robustrec.errors import ConfigError
from robustrec.metrics import DEFAULT_METRIC


def _listed(values) -> str:
    return ",".join(map(str, values))


def add_parser(sub: argparse._SubParsersAction) -> None:
    recipe = demo.recipe_defaults()
    p = sub.add_parser(
        "demo",
        help="train, audit and report end to end (the README's main job)",
        description=demo.__doc__.split("\n\n")[1].replace("\n", " "),
    )
    add_data_argument(p)
    p.add_argument("--out", required=True,
                   help="output folder: a study folder (runs/, audits/, report.md, plots/) and one plot per audit")
    p.add_argument("--seeds", type=int_list, help=f"training seeds (recipe: {_listed(recipe.seeds)})")
    p.add_argument("--epochs", type=int, help=f"maximum epochs per run (recipe: {recipe.epochs})")
    p.add_argument("--patience", type=int, help=f"early-stopping patience (recipe: {recipe.patience})")
    p.add_argument("--sigma2", type=float_list, help=f"noise audit: variances sigma^2 (recipe: {_listed(recipe.sigma2)})")
    p.add_argument("--scale", type=float_list,
                   help=f"relative noise audit: scales s, sigma = s * std of each table (recipe: {_listed(recipe.scales)})")
    p.add_argument("--prob", type=float_list,
                   help=f"caption audit: insertion probabilities (recipe: {_listed(recipe.probs)})")
    p.add_argument("--captioner", help=f"imagenet (offline) or blip2 (recipe: {recipe.captioner})")
    p.add_argument("--metric", default=DEFAULT_METRIC, help="metric for the report and plots")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run in seconds: 2 epochs, one seed, one repeat at two severities per audit")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustrec.numerics import default_threads

    if args.epochs is not None and args.epochs < 1:
        raise ConfigError("--epochs must be >= 1")
    config = demo.DemoConfig(
        seeds=args.seeds, epochs=args.epochs, patience=args.patience, sigma2=args.sigma2, scales=args.scale,
        probs=args.prob, captioner=args.captioner, metric=args.metric.lower(), device=args.device,
        threads=default_threads(),  # --threads, else $ROBUSTREC_THREADS, else 1: [study].threads
        quick=args.quick,
    )
    report = demo.run_demo(args.data, args.out, config, progress=not args.no_progress)
    print(f"report: {report}")
    return 0
