"""``robustrec train``: train one model with one strategy (or one run per seed)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from robustrec.cli.common import (
    add_data_argument,
    add_device_argument,
    add_json_argument,
    int_list,
    metrics_table,
    open_data,
    print_json,
)
from robustrec.errors import ConfigError
from robustrec.hparams import defaults, parse_params
from robustrec.models import MODELS
from robustrec.optim import OPTIMIZERS
from robustrec.runs import RunSpec, TrainConfig
from robustrec.strategies import STRATEGIES, build_strategy, parse_strategy_params

#: Strategy options with a flag of their own: flag destination -> (parameter name, type, help, the
#: strategy whose default the help shows: read from the registry, so it cannot drift).
STRATEGY_FLAGS: dict[str, tuple[str, type, str, str]] = {
    "alpha1": ("alpha1", float, "mirror: descent scale a1", "mirror"),
    "alpha2": ("alpha2", float, "mirror: ascent scale a2 < a1", "mirror"),
    "beta": ("beta", int, "mirror: mirror every beta-th step", "mirror"),
    "mirror_variant": ("variant", str, "mirror: official (loss scaling through the optimizer) or sgd", "mirror"),
    "eps": ("eps", float, "amr: perturbation size, relative to the features' max |value|", "amr"),
    "amr_lambda": ("amr_lambda", float, "amr: weight of the adversarial loss", "amr"),
    "rho": ("rho", float, "sam, ssam-f, ssam-d: neighbourhood radius", "sam"),
    "sparsity": ("sparsity", float, "ssam-f, ssam-d: share of parameters not perturbed, in [0, 1)", "ssam-f"),
    "num_samples": ("num_samples", int, "ssam-f: interactions in the Fisher estimate", "ssam-f"),
    "update_freq": ("update_freq", int, "ssam-f, ssam-d: update the mask every N epochs", "ssam-f"),
    "drop_rate": ("drop_rate", float, "ssam-d: initial death rate of the mask update", "ssam-d"),
    "strategy_seed": ("seed", int, "ssam-f, ssam-d: seed of the mask sampling", "ssam-f"),
}


def strategy_flag_help(dest: str) -> str:
    name, _, text, strategy = STRATEGY_FLAGS[dest]
    return f"{text} (default: {defaults(STRATEGIES.get(strategy))[name]})"


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
    for dest, (_, typ, _, _) in STRATEGY_FLAGS.items():
        p.add_argument(f"--{dest.replace('_', '-')}", dest=dest, type=typ, help=strategy_flag_help(dest))
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="model hyper-parameter, repeatable (robustrec list models: each one and its default)")
    p.add_argument("--strategy-param", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy hyper-parameter, repeatable (robustrec list strategies: each one and its default)")
    # The defaults are TrainConfig's, so the CLI and the Python API train the same run.
    p.add_argument("--optimizer", default=DEFAULTS.optimizer, choices=OPTIMIZERS, help="optimizer")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="learning rate")
    p.add_argument("--momentum", type=float, default=DEFAULTS.momentum, help="sgd / rmsprop momentum")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help="L2 weight decay")
    p.add_argument("--lr-decay", type=float, default=DEFAULTS.lr_decay,
                   help="learning-rate decay: epoch e trains at lr * DECAY ** ((e - 1) / --lr-decay-epochs) "
                        "(MMRec's learning_rate_scheduler; LATTICE and MGCN use 0.96 and 50)")
    p.add_argument("--lr-decay-epochs", type=int, default=DEFAULTS.lr_decay_epochs,
                   help="epochs over which the learning rate shrinks by the factor --lr-decay")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="maximum epochs")
    p.add_argument("--patience", type=int, default=DEFAULTS.patience,
                   help="evaluations without improvement tolerated before stopping")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="interactions per batch")
    p.add_argument("--eval-every", type=int, default=DEFAULTS.eval_every, help="validate every N epochs")
    p.add_argument("--topk", type=int_list, default=DEFAULTS.topk, help="comma-separated cut-offs")
    p.add_argument("--valid-metric", default=DEFAULTS.valid_metric, help="model-selection metric on validation")
    p.add_argument("--mirror-trace", action="store_true",
                   help="mirror: record each mirror step's losses before, after the descent and after the ascent "
                        "half, and the cosines of its moves with the gradients, per epoch in RUN/log.jsonl "
                        "(plot: reports.plot_trace); training is unchanged")
    p.add_argument("--seed", type=int, help=f"training seed (default: {DEFAULTS.seed}; not with --seeds)")
    p.add_argument("--seeds", type=int_list, help="train one run per seed into OUT/seed-<S>")
    add_device_argument(p)
    p.add_argument("--out", required=True, help="run folder (or parent folder with --seeds)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    add_json_argument(p)
    p.set_defaults(func=run)


DEFAULTS = TrainConfig()


def strategy_params(args: argparse.Namespace) -> dict[str, Any]:
    """Strategy hyper-parameters from --strategy-param pairs and the dedicated flags, validated."""
    params = parse_strategy_params(args.strategy, args.strategy_param)
    for dest, (name, _, _, _) in STRATEGY_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            params[name] = value
    build_strategy(args.strategy, **params)  # fail on bad values before any data is loaded
    return params


def run(args: argparse.Namespace) -> int:
    from robustrec.devices import resolve_device
    from robustrec.numerics import default_threads
    from robustrec.training import check_run_folder, train

    if args.seed is not None and args.seeds:
        raise ConfigError("--seed and --seeds cannot be combined: --seeds trains one run per seed")
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
            lr_decay=args.lr_decay,
            lr_decay_epochs=args.lr_decay_epochs,
            seed=DEFAULTS.seed if args.seed is None else args.seed,
            device=args.device,
            topk=tuple(args.topk),
            valid_metric=args.valid_metric.lower(),
            eval_every=args.eval_every,
            mirror_trace=args.mirror_trace,
        ),
    )
    if args.mirror_trace and "mirror" not in args.strategy.split("+"):
        raise ConfigError(f"--mirror-trace records Mirror Gradient steps, and strategy {args.strategy!r} takes "
                          "none: use --strategy mirror (or OBJECTIVE+mirror, e.g. amr+mirror)")
    resolve_device(args.device)
    seeds = args.seeds or (None,)
    if args.seeds and len(set(args.seeds)) != len(args.seeds):
        raise ConfigError("--seeds lists a seed twice")
    dataset = open_data(args.data, not args.no_progress)
    planned = []
    for seed in seeds:  # every run folder is checked before the first epoch of the first seed
        run_spec = spec if seed is None else dataclasses.replace(spec, train=dataclasses.replace(spec.train, seed=seed))
        out = Path(args.out) if seed is None else Path(args.out) / f"seed-{seed}"
        check_run_folder(out, run_spec.with_threads(default_threads()), dataset, args.overwrite)
        planned.append((run_spec, out))
    results = []
    for run_spec, out in planned:
        result = train(dataset, run_spec, out, progress=not args.no_progress, overwrite=args.overwrite)
        results.append(result)
        if not args.json:  # as each run ends: a long --seeds call shows its results as it goes
            print_result(result)
    if args.json:
        print_json({"runs": [result_document(result) for result in results]})
    return 0


def print_result(result) -> None:
    """A first line that says where and how the run went, then its metrics as a small table."""
    ending = ", stopped early" if result.stopped_early else ""
    print(f"{result.path}: best epoch {result.best_epoch} of {result.epochs_run}{ending}, "
          f"{result.train_seconds_per_epoch:.3f} s/epoch")
    print(metrics_table({"valid": result.valid, "test": result.test}))


def result_document(result) -> dict[str, Any]:
    """A :class:`~robustrec.training.TrainResult` as JSON (what RUN/metrics.json holds, and the run)."""
    document = dataclasses.asdict(result)
    document["path"] = str(result.path)
    return document
