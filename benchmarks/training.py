"""Training speed, memory and accuracy against the reference implementation (MMRec).

Three parts:

1. ``epoch-times``: for each model, plain and mirror (a1 1, a2 .2, beta 3) epochs interleaved in one
   process (ABAB...), median seconds per epoch and the mirror/plain ratio, plus the evaluation time
   and the peak resident memory of a child process that trains a few epochs. Ratios within one run are
   what count: the machine is shared.
2. ``fidelity``: full training runs (early stopping, seed 999 or ``--seeds``) on the MMRec-format
   split of ml100k-mm, test recall@20 and s/epoch next to MMRec's figures from REFERENCES.md; with
   several seeds, a mean +- std line per model and strategy.
3. ``vbpr-floor``: VBPR plain epochs interleaved with "floor" epochs that do only what no VBPR
   implementation can skip: sampling, the two feature-sized products (``F W^T`` and ``F^T dV``) and
   the Adam step on tensors of the real sizes. It shows how much of an epoch the rest takes.

    python benchmarks/training.py epoch-times [--data DIR] [--models vbpr,bm3,freedom] [--epochs 6]
    python benchmarks/training.py fidelity [--models vbpr,bm3,freedom] [--strategies plain,mirror] [--seeds 1,2]
    python benchmarks/training.py vbpr-floor [--data DIR] [--epochs 10]

Both take ``--threads N`` (default: torch's default, one per core), which the machine line prints.

Without --data the MMRec split is built once under $ROBUSTREC_CACHE (needs ../shared); ``--data
synthetic`` uses the embedded default dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MMREC, machine, median, mmrec_split, model_of, setting_of, timed  # noqa: E402

from robustrec.data import open_dataset  # noqa: E402
from robustrec.data.sampling import BPRSampler  # noqa: E402
from robustrec.evaluate import Evaluator  # noqa: E402
from robustrec.models import build_model  # noqa: E402
from robustrec.numerics import default_threads, reproducible, threads_default  # noqa: E402
from robustrec.optim import build_optimizer  # noqa: E402
from robustrec.runs import RunSpec, TrainConfig  # noqa: E402
from robustrec.strategies import build_strategy  # noqa: E402
from robustrec.training import train  # noqa: E402


def load(data: str | None):
    if data == "synthetic":
        return open_dataset(None)
    folder = Path(data) if data else mmrec_split()
    if folder is None:
        sys.exit("ml100k-mm is not available (no ../shared): pass --data DIR or --data synthetic")
    return open_dataset(folder)


class Trainer:
    """One model + strategy, stepping whole epochs on demand."""

    def __init__(self, dataset, model: str, strategy: str, seed: int = 999) -> None:
        """``model``: a model name or a key of ``common.SETTINGS``, whose setting it runs."""
        setting = setting_of(model)
        config = TrainConfig(**setting.train)
        self.model = build_model(model_of(model), dataset, generator=torch.Generator().manual_seed(seed), **setting.params)
        self.strategy = build_strategy(strategy)
        optimizer = build_optimizer("adam", self.model.parameters(), config.lr, 0.0, config.weight_decay)
        self.strategy.setup(self.model, optimizer)
        self.sampler = BPRSampler(dataset, 2048)
        self.gen, self.model_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
        self.epoch = 0

    def run_epoch(self, deterministic: bool = True) -> None:
        """One epoch as ``robustrec train`` runs it: torch's deterministic kernels on (unless not
        ``deterministic``, to measure what they cost)."""
        self.epoch += 1
        self.model.train()
        with reproducible() if deterministic else contextlib.nullcontext():
            self.model.pre_epoch(self.model_gen)
            for batch in self.sampler.epoch(self.gen, self.model_gen):
                self.strategy.step(batch)


def peak_memory_mb(data: str | None, model: str, strategy: str, epochs: int) -> float:
    """Peak RSS of a child process that trains ``epochs`` epochs (includes Python + torch overhead)."""
    here = str(Path(__file__).parent)
    code = (
        f"import sys, resource; sys.path.insert(0, {here!r}); from training import Trainer, load; "
        f"t = Trainer(load({data!r}), {model!r}, {strategy!r}); [t.run_epoch() for _ in range({epochs})]; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def epoch_times(args) -> None:
    dataset = load(args.data)
    print(f"machine: {machine()}")
    print(f"dataset: {dataset.describe()}\n")
    print("| model | plain s/epoch | mirror s/epoch | mirror / plain | eval s | peak RSS plain / mirror (MB) |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        trainers = {s: Trainer(dataset, model, s) for s in ("plain", "mirror")}
        times: dict[str, list[float]] = {"plain": [], "mirror": []}
        for _ in range(args.epochs + 1):  # the first epoch of each is a warm-up
            for name, trainer in trainers.items():
                seconds, _ = timed(trainer.run_epoch)
                times[name].append(seconds)
        plain, mirror = median(times["plain"][1:]), median(times["mirror"][1:])
        evaluator = Evaluator(dataset, "valid")
        evaluator.evaluate(trainers["plain"].model)
        eval_s = median([timed(evaluator.evaluate, trainers["plain"].model)[0] for _ in range(5)])
        mem = [peak_memory_mb(args.data, model, s, 2) for s in ("plain", "mirror")] if args.memory else [0, 0]
        print(f"| {model} | {plain:.3f} | {mirror:.3f} | {mirror / plain:.2f}x | {eval_s:.3f} | "
              f"{mem[0]:.0f} / {mem[1]:.0f} |", flush=True)


def fidelity(args) -> None:
    dataset = load(args.data)
    seeds = [int(x) for x in args.seeds.split(",")]
    print(f"machine: {machine()}")
    print(f"dataset: {dataset.describe()}\n")
    print("| model | strategy | seed | best epoch / run | test R@20 | MMRec R@20 | ratio | N@20 | R@5 | s/epoch | "
          "MMRec s/epoch | time ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for strategy in args.strategies.split(","):
                if model == "pop" and strategy != "plain":
                    continue
                ref = MMREC.get(model, {})
                recalls = []
                for seed in seeds:
                    setting = setting_of(model)
                    spec = RunSpec(model_of(model), strategy, model_params=setting.params,
                                   train=TrainConfig(seed=seed, epochs=args.max_epochs, **setting.train))
                    r = train(dataset, spec, Path(tmp) / f"{model}-{strategy}-{seed}", progress=False)
                    recalls.append(r.test["recall@20"])
                    ratio = r.test["recall@20"] / ref["recall@20"] if ref else float("nan")
                    ref_s = ref.get("seconds")
                    time_ratio = f"{r.train_seconds_per_epoch / ref_s:.2f}" if ref_s else "-"
                    print(f"| {model} | {strategy} | {seed} | {r.best_epoch} / {r.epochs_run} | "
                          f"{r.test['recall@20']:.4f} | {ref.get('recall@20', float('nan')):.4f} | {ratio:.3f} | "
                          f"{r.test['ndcg@20']:.4f} | {r.test['recall@5']:.4f} | {r.train_seconds_per_epoch:.3f} | "
                          f"{ref_s or '-'} | {time_ratio} |", flush=True)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps({"model": model, "strategy": strategy, "seed": seed,
                                                "max_epochs": args.max_epochs,
                                                "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                                                "test": r.test, "s_per_epoch": r.train_seconds_per_epoch}) + "\n")
                if len(recalls) > 1:
                    mean, std = statistics.mean(recalls), statistics.stdev(recalls)
                    ratio = mean / ref["recall@20"] if ref else float("nan")
                    summary.append(f"{model} {strategy}: test R@20 {mean:.4f} +- {std:.4f} over seeds "
                                   f"{args.seeds} ({ratio:.3f}x MMRec's single run)")
    for line in summary:
        print(line)


def vbpr_floor(args) -> None:
    """Full VBPR epochs against epochs of only the products, the Adam step and sampling."""
    dataset = load(args.data)
    print(f"machine: {machine()}")
    print(f"dataset: {dataset.describe()}\n")
    full, bare = Trainer(dataset, "vbpr", "plain"), Trainer(dataset, "vbpr", "plain")
    model, optimizer = bare.model, bare.strategy.optimizer
    features, weight = model.item_features, model.item_linear.weight
    sampler, gen = BPRSampler(dataset, 2048), torch.Generator().manual_seed(0)
    upstream = torch.randn(dataset.n_items, weight.shape[0], generator=gen) * 1e-3  # stands for dL/d(F W^T)
    grads = {p: torch.zeros_like(p) for p in model.parameters()}

    def floor_epoch() -> None:
        for _ in sampler.epoch(gen):
            with torch.no_grad():
                torch.addmm(model.item_linear.bias, features, weight.t())
                grads[weight] = (features.t() @ upstream).t().contiguous()
            for p in model.parameters():
                p.grad = grads[p]
            optimizer.step()

    times: dict[str, list[float]] = {"full": [], "floor": []}
    for _ in range(args.epochs + 1):  # the first epoch of each is a warm-up
        times["full"].append(timed(full.run_epoch)[0])
        times["floor"].append(timed(floor_epoch)[0])
    whole, floor = median(times["full"][1:]), median(times["floor"][1:])
    target = 0.5 * MMREC["vbpr"]["seconds"]
    print("| VBPR epoch | s/epoch (median) | share of a full epoch |")
    print("|---|---|---|")
    print(f"| full (robustrec) | {whole:.3f} | 1.00 |")
    print(f"| floor: sampling + F W^T + F^T dV + Adam | {floor:.3f} | {floor / whole:.2f} |")
    print(f"| everything else (gathers, BPR, norms, scatters) | {whole - floor:.3f} | {(whole - floor) / whole:.2f} |")
    print(f"\ntarget 0.5x MMRec = {target:.3f} s; the floor alone is {floor / target:.2f}x of it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    a = sub.add_parser("epoch-times")
    a.add_argument("--data")
    a.add_argument("--models", default="vbpr,bm3,freedom")
    a.add_argument("--epochs", type=int, default=6)
    a.add_argument("--no-memory", dest="memory", action="store_false")
    a.set_defaults(func=epoch_times)
    b = sub.add_parser("fidelity")
    b.add_argument("--data")
    b.add_argument("--models", default="pop,vbpr,bm3,freedom")
    b.add_argument("--strategies", default="plain,mirror")
    b.add_argument("--seeds", default="999", help="comma-separated seeds (default 999, MMRec's)")
    b.add_argument("--max-epochs", type=int, default=1000)
    b.add_argument("--json", help="append one JSON line per run to this file")
    b.set_defaults(func=fidelity)
    c = sub.add_parser("vbpr-floor")
    c.add_argument("--data")
    c.add_argument("--epochs", type=int, default=10)
    c.set_defaults(func=vbpr_floor)
    for p in (a, b, c):
        p.add_argument("--threads", type=int, help="torch intra-op threads (default: robustrec's, 1 or $ROBUSTREC_THREADS)")
    args = parser.parse_args()
    with threads_default(args.threads or default_threads()):  # what train() and the evaluator use
        args.func(args)


if __name__ == "__main__":
    main()
