"""Per-epoch training time of each training strategy relative to plain (VBPR on the MMRec split).

All strategies train side by side in one process, one epoch each per round, in an order that rotates
every round, so that the load of a shared machine hits them alike; what counts are the ratios to plain
within a round: the median over rounds of (epoch time / plain's epoch time in the same round). Work
done at the start of some epochs only (SSAM-F's Fisher mask, every ``update_freq`` = 5 epochs) is timed
apart and averaged over all rounds (use a multiple of 5 rounds), then added to that ratio. The first
round is a warm-up.

    python benchmarks/strategies.py [--data DIR] [--model vbpr] [--rounds 10]
        [--strategies plain,mirror,amr,amr+mirror,sam,ssam-f,ssam-d] [--threads 1] [--raw]

Expected from the number of passes per batch: SAM family about 2x (two forward/backward passes, one
optimizer step), Mirror about 1 + 1/beta = 1.33x, AMR about 2x (the clean pass, a backward pass to the
features, the adversarial pass).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from robustrec.data.mmrec import load_dataset  # noqa: E402
from robustrec.data.sampling import BPRSampler  # noqa: E402
from robustrec.models import build_model  # noqa: E402
from robustrec.numerics import default_threads, reproducible, threads_default  # noqa: E402
from robustrec.optim import build_optimizer  # noqa: E402
from robustrec.strategies import build_strategy  # noqa: E402

DEFAULT_DATA = Path("/work/data/ml100k-mmrec")
DEFAULT_STRATEGIES = "plain,mirror,amr,amr+mirror,sam,ssam-f,ssam-d"
EXPECTED = {"plain": "1", "mirror": "1.33", "amr": "~2", "amr+mirror": "~2.67", "sam": "~2"}


class Run:
    """One model trained with one strategy, an epoch at a time (as the trainer does it)."""

    def __init__(self, dataset, model: str, strategy: str, max_epochs: int, seed: int = 999) -> None:
        self.model = build_model(model, dataset, generator=torch.Generator().manual_seed(seed))
        self.strategy = build_strategy(strategy)
        self.strategy.setup(self.model, build_optimizer("adam", self.model.parameters()))
        self.sampler = BPRSampler(dataset, 2048)
        self.gen, self.model_gen = (
            torch.Generator().manual_seed(seed),
            torch.Generator().manual_seed(seed + 1),
        )
        self.max_epochs = max_epochs
        self.epoch = 0

    def epoch_seconds(self) -> tuple[float, float]:
        """Seconds spent in the epoch's steps, and in the work done before them."""
        start = time.perf_counter()
        self.epoch += 1
        self.model.train()
        self.model.pre_epoch(self.model_gen)
        self.strategy.on_epoch_start(self.epoch, self.max_epochs)
        steps = time.perf_counter()
        with reproducible():  # as ``robustrec train`` runs it
            for batch in self.sampler.epoch(self.gen, self.model_gen):
                self.strategy.step(batch)
        return time.perf_counter() - steps, steps - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="vbpr")
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: robustrec's, 1 or $ROBUSTREC_THREADS)")
    parser.add_argument("--raw", action="store_true", help="also print every epoch time")
    args = parser.parse_args()
    if not (args.data / "image_feat.npy").is_file() and not (args.data / "text_feat.npy").is_file():
        print(f"skipped: no MMRec dataset folder at {args.data} (pass --data DIR)")
        return
    with threads_default(args.threads or default_threads()):  # what reproducible() and the evaluator use
        measure(args)


def measure(args: argparse.Namespace) -> None:
    names = args.strategies.split(",")
    if names[0] != "plain":
        names = ["plain"] + [n for n in names if n != "plain"]
    dataset = load_dataset(args.data)
    runs = {name: Run(dataset, args.model, name, max_epochs=1000) for name in names}
    steps: dict[str, list[float]] = {name: [] for name in names}
    starts: dict[str, list[float]] = {name: [] for name in names}
    load_before = os.getloadavg()
    for round_ in range(args.rounds + 1):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            step_s, start_s = runs[name].epoch_seconds()
            if round_ > 0:
                steps[name].append(step_s)
                starts[name].append(start_s)
        print(f"round {round_}/{args.rounds} done", file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    plain = steps["plain"]
    plain_median = statistics.median(plain)
    print(f"machine: {machine()}")
    print(
        f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )
    print(
        f"{args.model} on {dataset.name}: {len(runs['plain'].sampler)} batches of 2048 per epoch, "
        f"{args.rounds} timed rounds after a warm-up, order rotated each round\n"
    )
    print(
        "| strategy | median s/epoch | x plain (median of per-round ratios) | + periodic work (x plain) | expected |"
    )
    print("|---|---|---|---|---|")
    for name in names:
        ratio = statistics.median(t / p for t, p in zip(steps[name], plain))
        periodic = statistics.mean(starts[name]) / plain_median
        print(
            f"| {name} | {statistics.median(steps[name]):.3f} | {ratio:.2f} | "
            f"{f'{ratio + periodic:.2f}' if periodic >= 0.005 else '-'} | "
            f"{EXPECTED.get(name, '~2' if 'sam' in name else '-')} |"
        )
    if args.raw:
        print()
        for name in names:
            print(
                f"{name}: steps {[round(t, 3) for t in steps[name]]}, before {[round(t, 3) for t in starts[name]]}"
            )


if __name__ == "__main__":
    main()
