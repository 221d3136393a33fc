"""Exact numerics (robustrec/numerics.py): whether they hold, and what they cost.

Two parts:

1. ``identity``: each model trained for a few epochs at 1, 2 and 4 threads, ``--repeats`` times each,
   in child processes with MKL's strict reproducibility on (robustrec's default) and off
   (``MKL_CBWR=""``), with each of ``--strategies``. It prints the weight digests' distinct count per
   model, strategy and setting: 1 means the same numbers everywhere.
2. ``cost``: seconds per training epoch with and without the exact settings. Torch's deterministic
   kernels toggle in-process, so each child alternates epochs with and without them (ratios within
   one process). MKL's mode is fixed at its first call, so the strict and the default mode run in
   alternating child processes (strict, off, strict, off).

    python benchmarks/determinism.py identity [--data DIR] [--models vbpr,bm3,...] [--strategies plain,sam]
        [--epochs 2] [--repeats 2]
    python benchmarks/determinism.py cost [--data DIR] [--models ...] [--epochs 5] [--threads 1] [--rounds 2]

Without --data the MMRec split of ml100k-mm is built once under $ROBUSTREC_CACHE (needs ../shared).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = {"strict": "AUTO,STRICT", "off": ""}  # MKL_CBWR values: robustrec's default, MKL's default


def child(mode: str, argv: list[str]) -> list[dict]:
    """Run this script's child part under MKL mode ``mode``; its JSON lines."""
    env = dict(os.environ, MKL_CBWR=MODES[mode])
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env, check=True,
                         capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


# ---- in the child ----------------------------------------------------------------------------------
def child_identity(args) -> None:
    from safetensors.torch import load_file

    from robustrec import numerics
    from robustrec.runs import RunSpec, TrainConfig
    from robustrec.training import train

    sys.path.insert(0, str(HERE))
    from training import load

    dataset = load(args.data)
    for model in args.models.split(","):
        for strategy in args.strategies.split(","):
            for threads in (1, 2, 4):
                for repeat in range(args.repeats):
                    with tempfile.TemporaryDirectory() as tmp:
                        spec = RunSpec(model, strategy, train=TrainConfig(epochs=args.epochs, seed=7, threads=threads))
                        train(dataset, spec, Path(tmp) / "run", progress=False)
                        tensors = load_file(str(Path(tmp) / "run" / "model.safetensors"))
                    digest = hashlib.sha256(b"".join(tensors[k].numpy().tobytes() for k in sorted(tensors)))
                    print(json.dumps({"model": model, "strategy": strategy, "threads": threads, "repeat": repeat,
                                      "digest": digest.hexdigest()[:12], "mkl_cbwr": numerics.mkl_cbwr()}),
                          flush=True)


def child_cost(args) -> None:
    import torch

    from robustrec import numerics

    sys.path.insert(0, str(HERE))
    from common import median, timed
    from training import Trainer, load

    torch.set_num_threads(args.threads)
    dataset = load(args.data)
    for model in args.models.split(","):
        trainers = {"kernels on": Trainer(dataset, model, "plain"), "kernels off": Trainer(dataset, model, "plain")}
        times: dict[str, list[float]] = defaultdict(list)
        for _ in range(args.epochs + 1):  # the first epoch of each is a warm-up
            for name, trainer in trainers.items():
                times[name].append(timed(trainer.run_epoch, deterministic=name == "kernels on")[0])
        print(json.dumps({"model": model, "mkl_cbwr": numerics.mkl_cbwr(), "threads": args.threads,
                          **{name: median(t[1:]) for name, t in times.items()}}), flush=True)


# ---- in the parent ---------------------------------------------------------------------------------
def identity(args) -> None:
    sys.path.insert(0, str(HERE))
    from common import machine

    print(f"machine: {machine()}\n")
    print("| model | strategy | MKL mode | distinct weights at 1 / 2 / 4 threads (each over repeats) | "
          "distinct overall |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        rows = child(mode, ["child-identity", *forward(args), "--strategies", args.strategies])
        for model in args.models.split(","):
            for strategy in args.strategies.split(","):
                mine = [r for r in rows if r["model"] == model and r["strategy"] == strategy]
                per_threads = [len({r["digest"] for r in mine if r["threads"] == t}) for t in (1, 2, 4)]
                print(f"| {model} | {strategy} | {mine[0]['mkl_cbwr']} | {' / '.join(map(str, per_threads))} | "
                      f"{len({r['digest'] for r in mine})} |", flush=True)


def cost(args) -> None:
    sys.path.insert(0, str(HERE))
    from common import machine, median

    print(f"machine: {machine()}\n")
    results: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for _ in range(args.rounds):
        for mode in MODES:
            for row in child(mode, ["child-cost", *forward(args), "--threads", str(args.threads)]):
                results[(row["model"], mode)].append(row)
    print(f"{args.threads} thread(s); seconds per epoch, median over epochs, then over {args.rounds} rounds\n")
    print("| model | default (MKL off, kernels off) | deterministic kernels | + MKL strict (robustrec) | "
          "robustrec / default |")
    print("|---|---|---|---|---|")
    for model in args.models.split(","):
        off = results[(model, "off")]
        strict = results[(model, "strict")]
        base = median([r["kernels off"] for r in off])
        kernels = median([r["kernels on"] for r in off])
        both = median([r["kernels on"] for r in strict])
        print(f"| {model} | {base:.3f} | {kernels:.3f} ({kernels / base:.2f}x) | {both:.3f} | {both / base:.2f}x |",
              flush=True)


def forward(args) -> list[str]:
    out = ["--models", args.models, "--epochs", str(args.epochs)]
    if args.data:
        out += ["--data", args.data]
    if getattr(args, "repeats", None):
        out += ["--repeats", str(args.repeats)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    for name, func, epochs in (("identity", identity, 2), ("cost", cost, 5),
                               ("child-identity", child_identity, 2), ("child-cost", child_cost, 5)):
        p = sub.add_parser(name)
        p.add_argument("--data")
        p.add_argument("--models", default="vbpr,bm3,freedom,mmgcn,grcn")
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument("--repeats", type=int, default=2)
        p.add_argument("--strategies", default="plain", help="identity: strategies to train (default plain)")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--rounds", type=int, default=2)
        p.set_defaults(func=func)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
