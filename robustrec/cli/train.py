"""``robustrec train``: train one model with one strategy (or one run per seed)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from robustrec.cli.common import add_data_argument, add_device_argument, int_list, open_data, print_metrics
from robustrec.errors import ConfigError
from robustrec.evaluate import DEFAULT_TOPK
from robustrec.hparams import parse_params
from robustrec.models import MODELS
from robustrec.optim import OPTIMIZERS
from robustrec.runs import RunSpec, TrainConfig
from robustrec.strategies import STRATEGIES, build_strategy, parse_strategy_params

#: Strategy options with a flag of their own: flag destination -> (parameter name, type, help).
STRATEGY_FLAGS: dict[str, tuple[str, type, str]] = {
    "alpha1": ("alpha1", float, "mirror: descent scale a1 (default 1.0)"),
    "alpha2": ("alpha2", float, "mirror: ascent scale a2 < a1 (default 0.2)"),
    "beta": ("beta", int, "mirror: mirror every beta-th step (default 3)"),
    "mirror_variant": ("variant", str, "mirror: official (loss scaling through the optimizer) or sgd"),
    "eps": ("eps", float, "amr: perturbation size, relative to the features' max |value| (default 0.1)"),
    "amr_lambda": ("amr_lambda", float, "amr: weight of the adversarial loss (default 1.0)"),
    "rho": ("rho", float, "sam, ssam-f, ssam-d: neighbourhood radius (default 0.05)"),
    "sparsity": ("sparsity", float, "ssam-f, ssam-d: share of parameters not perturbed, in [0, 1) (default 0.5)"),
    "num_samples": ("num_samples", int, "ssam-f: interactions in the Fisher estimate (default 128)"),
    "update_freq": ("update_freq", int, "ssam-f, ssam-d: update the mask every N epochs (default 5)"),
    "drop_rate": ("drop_rate", float, "ssam-d: initial death rate of the mask update (default 0.5)"),
    "strategy_seed": ("seed", int, "ssam-f, ssam-d: seed of the mask sampling (default 0)"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model with a training strategy",
        description="Train a model; writes RUN/metrics.json, RUN/log.jsonl and the checkpoint. "
        "An interrupted run is resumed from its last finished epoch.",
    )
    add_data_argument(p)
    p.add_argument("--model", required=True, help=f"one of: {', '.join(MODELS.names())}")
    p.add_argument(
        "--strategy",
        default="plain",
        help=f"one of: {', '.join(STRATEGIES.names())}; combine an objective with mirror as e.g. amr+mirror",
    )
    for dest, (_, typ, text) in STRATEGY_FLAGS.items():
        p.add_argument(f"--{dest.replace('_', '-')}", dest=dest, type=typ, help=text)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="model hyper-parameter")
    p.add_argument(
        "--strategy-param", action="append", default=[], metavar="KEY=VALUE", help="strategy hyper-parameter"
    )
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.0, help="sgd / rmsprop momentum")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=1000, help="maximum epochs (default 1000)")
    p.add_argument("--patience", type=int, default=20, help="evaluations without improvement before stopping")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs")
    p.add_argument("--topk", type=int_list, default=DEFAULT_TOPK, help="comma-separated cut-offs (default 5,10,20)")
    p.add_argument("--valid-metric", default="recall@20", help="model-selection metric on validation")
    p.add_argument("--seed", type=int, default=999)
    p.add_argument("--seeds", type=int_list, help="train one run per seed into OUT/seed-<S>")
    add_device_argument(p)
    p.add_argument("--out", required=True, help="run folder (or parent folder with --seeds)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def strategy_params(args: argparse.Namespace) -> dict[str, Any]:
    """Strategy hyper-parameters from --strategy-param pairs and the dedicated flags, validated."""
    params = parse_strategy_params(args.strategy, args.strategy_param)
    for dest, (name, _, _) in STRATEGY_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            params[name] = value
    build_strategy(args.strategy, **params)  # fail on bad values before any data is loaded
    return params


def run(args: argparse.Namespace) -> int:
    import torch

    from robustrec.devices import resolve_device
    from robustrec.training import check_run_folder, train

    model_params = parse_params(MODELS.get(args.model), args.param, f"model {args.model!r}")
    spec = RunSpec(
        model=args.model,
        strategy=args.strategy,
        model_params=model_params,
        strategy_params=strategy_params(args),
        train=TrainConfig(
            epochs=args.epochs,
            patience=args.patience,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            seed=args.seed,
            device=args.device,
            topk=tuple(args.topk),
            valid_metric=args.valid_metric.lower(),
            eval_every=args.eval_every,
        ),
    )
    resolve_device(args.device)
    seeds = args.seeds or (None,)
    if args.seeds and len(set(args.seeds)) != len(args.seeds):
        raise ConfigError("--seeds lists a seed twice")
    dataset = open_data(args.data)
    planned = []
    for seed in seeds:  # every run folder is checked before the first epoch of the first seed
        run_spec = spec if seed is None else dataclasses.replace(spec, train=dataclasses.replace(spec.train, seed=seed))
        out = Path(args.out) if seed is None else Path(args.out) / f"seed-{seed}"
        check_run_folder(out, run_spec.with_threads(torch.get_num_threads()), dataset, args.overwrite)
        planned.append((run_spec, out))
    for run_spec, out in planned:
        result = train(dataset, run_spec, out, progress=not args.no_progress, overwrite=args.overwrite)
        print(f"{out}: best epoch {result.best_epoch} of {result.epochs_run}, "
              f"{result.train_seconds_per_epoch:.3f} s/epoch")
        print_metrics("test:", result.test)
    return 0
