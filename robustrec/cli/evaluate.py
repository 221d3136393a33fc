"""``robustrec evaluate``: evaluate a saved run's best checkpoint again."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robustrec.cli.common import (
    add_device_argument,
    add_json_argument,
    add_runs_argument,
    metrics_table,
    open_data,
    print_json,
    runs_given,
)
from robustrec.io import check_output_file, write_json
from robustrec.runs import EVALUATION_FILE, METRICS_FILE, open_run


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a saved run",
        description="Load a run's best checkpoint, evaluate it on valid and test, print the metrics and "
        "write them to RUN/evaluation.json. A run that has not finished training is evaluated at its best "
        "checkpoint so far, with a warning.",
    )
    add_runs_argument(p, "run folder written by `robustrec train`", many=False)
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: the one the run was trained on)")
    add_device_argument(p)
    add_json_argument(p)
    p.set_defaults(func=run)


def evaluate_run(run_path: str | Path, data: str | None = None, device: str = "cpu") -> dict[str, dict[str, float]]:
    from robustrec.devices import resolve_device
    from robustrec.evaluate import Evaluator

    run = open_run(run_path)
    dataset = open_data(data or run.dataset_path)
    dev = resolve_device(device)
    model = run.load_model(dataset, dev)
    topk = run.spec.train.topk
    return {split: Evaluator(dataset, split, topk, dev).evaluate(model).metrics for split in ("valid", "test")}


def run(args: argparse.Namespace) -> int:
    (run_path,) = runs_given(args, "evaluate", many=False)
    opened = open_run(run_path)
    run_path = opened.path
    out = check_output_file(run_path / EVALUATION_FILE, "output file")  # before any work
    if not opened.finished:
        print(f"robustrec evaluate: warning: run {run_path} has not finished training (no {METRICS_FILE}); "
              "evaluating its best checkpoint so far", file=sys.stderr)
    results = evaluate_run(run_path, args.data, args.device)
    write_json(out, results)
    if args.json:
        print_json({"run": str(run_path), "finished": opened.finished, **results})
    else:
        print(f"{run_path}: {opened.spec.model}/{opened.spec.strategy}, seed {opened.spec.train.seed}"
              f"{'' if opened.finished else ' (training not finished)'}")
        print(metrics_table(results))
    return 0
