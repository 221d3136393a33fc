"""``robustrec compare``: the metrics of several runs side by side.

It reads what training wrote (``run.json`` and ``metrics.json``: the test metrics at the
best-validation epoch), never the models, so it does not import torch and answers at once. The
metrics of ``robustrec evaluate`` (``evaluation.json``) are not used: they re-measure the same
checkpoint and differ only when evaluated on another dataset. A run whose training has not finished
has no metrics yet: it is listed as unfinished, with empty cells, so a sweep can be followed while it
runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from robustrec.cli.common import add_json_argument, add_runs_argument, format_table, print_json, runs_given
from robustrec.errors import ConfigError
from robustrec.metrics import DEFAULT_METRIC, METRICS, metric_key, parse_metric
from robustrec.runs import Run, RunResults, open_run


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="metrics of finished runs side by side",
        description="Print model, strategy, seed, best epoch, the validation value and the test metrics of each "
        "run (from RUN/metrics.json, written when training ends). Unfinished runs are listed with empty cells.",
    )
    add_runs_argument(p, "run folders written by `robustrec train` (e.g. runs/freedom-*/seed-*)")
    p.add_argument("--metric", action="append", dest="metrics", metavar="METRIC",
                   help=f"a metric to show, e.g. ndcg@10; repeatable (default: every metric at the cut-off of "
                        f"{DEFAULT_METRIC}, {DEFAULT_METRIC} first)")
    add_json_argument(p)
    p.set_defaults(func=run)


def default_metrics() -> list[str]:
    """:data:`DEFAULT_METRIC`, then the other metrics at its cut-off."""
    _, k = parse_metric(DEFAULT_METRIC)
    return [DEFAULT_METRIC, *(metric_key(m, k) for m in METRICS if metric_key(m, k) != DEFAULT_METRIC)]


def chosen_metrics(options: list[str] | None, results: list[RunResults | None]) -> list[str]:
    """The metrics to show: ``--metric`` values (each measured by at least one run) or the default."""
    if not options:
        return default_metrics()
    chosen = []
    for option in options:
        name, k = parse_metric(option)
        key = metric_key(name, k)
        if not any(r is not None and key in r.test for r in results):
            measured = sorted({parse_metric(m)[1] for r in results if r is not None for m in r.test})
            raise ConfigError(f"no run measures {key} (their cut-offs: {', '.join(map(str, measured)) or 'none'})")
        if key not in chosen:
            chosen.append(key)
    return chosen


def row(run: Run, results: RunResults | None, metrics: list[str]) -> list[Any]:
    spec = run.spec
    if results is None:
        return [str(run.path), spec.model, spec.strategy, spec.train.seed, None, "unfinished", None,
                *(None for _ in metrics)]
    epochs = f"{results.epochs_run}{' (early stop)' if results.stopped_early else ''}"
    return [str(run.path), spec.model, spec.strategy, spec.train.seed, results.best_epoch, epochs,
            results.valid.get(metrics[0]), *(results.test.get(m) for m in metrics)]


def document(run: Run, results: RunResults | None) -> dict[str, Any]:
    spec = run.spec
    out: dict[str, Any] = {"run": str(run.path), "model": spec.model, "strategy": spec.strategy,
                           "seed": spec.train.seed, "finished": results is not None}
    if results is not None:
        out.update(best_epoch=results.best_epoch, epochs_run=results.epochs_run,
                   stopped_early=results.stopped_early, valid=results.valid, test=results.test)
    return out


def run(args: argparse.Namespace) -> int:
    runs = [open_run(path) for path in runs_given(args, "compare")]
    results = [r.results() for r in runs]
    metrics = chosen_metrics(args.metrics, results)
    if args.json:
        print_json({"metrics": metrics, "runs": [document(r, res) for r, res in zip(runs, results)]})
        return 0
    headers = ["run", "model", "strategy", "seed", "best epoch", "epochs", f"valid {metrics[0]}",
               *(f"test {m}" for m in metrics)]
    print(format_table(headers, [row(r, res, metrics) for r, res in zip(runs, results)]))
    return 0
