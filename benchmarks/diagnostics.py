"""What `robustrec diagnose` costs on a real run: each measure timed on its own, and how many Lanczos
steps the top eigenvalue needs.

    python benchmarks/diagnostics.py RUN [--data DIR] [--threads 2] [--batch-sizes 2048,80000]

RUN is a finished run folder (e.g. FREEDOM trained on the MMRec split of ml100k-mm). For each batch size
of the measured loss (the run's own is what `diagnose` uses by default; one batch of every training pair is
the cheapest exact full-data loss for models whose every batch re-propagates the whole graph), the script
times: building the loss, one loss, one gradient, one Hessian-vector product (after the first, which also
checks double backward against differences), the top eigenvalue from 5, 10 and 20 Lanczos steps, a
10-sample Hutchinson trace, a 5-step sharpness, a 21-point 1-D landscape and a 21 x 21 2-D landscape.
Targets (issue 14): top eigenvalue of FREEDOM within 30 s, a 21 x 21 landscape within 2 minutes, on
the 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from robustrec.data import open_dataset  # noqa: E402
from robustrec.diagnostics import (  # noqa: E402
    TrainingLoss,
    filter_normalised_direction,
    hessian_trace,
    landscape_1d,
    landscape_2d,
    sharpness,
    top_eigenvalues,
)
from robustrec.numerics import reproducible  # noqa: E402
from robustrec.runs import open_run  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measure(run, dataset, batch_size: int, skip_surface: bool) -> Iterator[tuple[str, str, str]]:
    """One table row per step, as soon as it is measured."""
    model = run.load_model(dataset)
    objective, seconds = timed(lambda: TrainingLoss(model, dataset, batch_size=batch_size, seed=0))
    yield ("build the loss", f"{seconds:.2f}", f"{len(objective.batches)} batches, {objective.size:,} parameters")
    loss, seconds = timed(objective.value)
    yield ("loss", f"{seconds:.2f}", f"{loss:.5f}")
    _, seconds = timed(objective.gradient)
    yield ("gradient", f"{seconds:.2f}", "")
    vector = [torch.ones_like(p) for p in objective.params]
    _, seconds = timed(lambda: objective.hvp(vector))
    yield ("first Hessian-vector product (with the check)", f"{seconds:.2f}", objective.hvp_method)
    _, seconds = timed(lambda: objective.hvp(vector))
    yield ("Hessian-vector product", f"{seconds:.2f}", objective.hvp_method)
    for steps in (5, 10, 20):
        values, seconds = timed(lambda s=steps: top_eigenvalues(objective, 1, s, torch.Generator().manual_seed(0)))
        yield (f"top eigenvalue, {steps} Lanczos steps", f"{seconds:.2f}", f"{values[0]:.6g}")
    trace, seconds = timed(lambda: hessian_trace(objective, 10, torch.Generator().manual_seed(0)))
    yield ("Hessian trace, 10 samples", f"{seconds:.2f}", f"{trace.value:.6g} +- {trace.stderr:.2g}")
    value, seconds = timed(lambda: sharpness(objective, 0.05, 5))
    yield ("sharpness, rho 0.05, 5 steps", f"{seconds:.2f}", f"{value:.3g}")
    generator = torch.Generator().manual_seed(0)
    first = filter_normalised_direction(objective.params, generator)
    second = filter_normalised_direction(objective.params, generator)
    (_, ys), seconds = timed(lambda: landscape_1d(objective, first, 21))
    yield ("1-D landscape, 21 points", f"{seconds:.2f}", f"L(-1) {ys[0]:.4g}, L(0) {ys[10]:.4g}, L(1) {ys[-1]:.4g}")
    if not skip_surface:
        (_, _, z), seconds = timed(lambda: landscape_2d(objective, first, second, 21))
        yield ("2-D landscape, 21 x 21", f"{seconds:.2f}", f"max {max(map(max, z)):.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished run folder")
    parser.add_argument("--data", help="its dataset folder (default: the run's own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="", help="comma-separated (default: the run's batch size)")
    parser.add_argument("--no-surface", action="store_true", help="skip the 2-D landscape")
    args = parser.parse_args()
    run = open_run(args.run)
    dataset = open_dataset(args.data or run.dataset_path, progress=False)
    sizes = [int(v) for v in args.batch_sizes.split(",") if v] or [run.spec.train.batch_size]
    print(f"{machine()}; {args.threads} threads; run {run.path} ({run.spec.model}/{run.info.get('strategy_label')}, "
          f"seed {run.spec.train.seed})\n")
    with reproducible(args.threads):
        for size in sizes:
            print(f"batch size {size}\n\n| step | seconds | result |\n|---|---|---|")
            for row in measure(run, dataset, size, args.no_surface):
                print("| " + " | ".join(row) + " |", flush=True)
            print()


if __name__ == "__main__":
    main()
