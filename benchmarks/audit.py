"""Cost of robustness audits relative to one evaluation (no retraining happens in an audit).

    python benchmarks/audit.py [--data DIR] [--model freedom] [--repeats 10] [--epochs 5]
    python benchmarks/audit.py caption [--model mmgcn] [--prob 0.1] [--repeats 3]

``noise``: a noise audit of one severity with R repeats should cost about R + 1 evaluations (target
<= R + 2), and a sweep of S severities about S x R + 1. ``caption``: with a warm caption cache the audit
does encoder work only for the changed items (counted), plus one kNN/graph rebuild per repeat.
Without --data the MMRec split of ml100k-mm is used (built once, needs ../shared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, machine, median, mmrec_split, timed  # noqa: E402

from perturbations import AuditConfig, SuiteContext, audit_run  # noqa: E402
from robustrec.data import open_dataset  # noqa: E402
from robustrec.data.mmrec import load_dataset  # noqa: E402
from robustrec.evaluate import Evaluator  # noqa: E402
from robustrec.runs import RunSpec, TrainConfig, open_run  # noqa: E402
from robustrec.training import train  # noqa: E402


def dataset_and_run(args, tmp: Path):
    if args.data == "synthetic":
        dataset = open_dataset(None)
    else:
        folder = Path(args.data) if args.data else mmrec_split()
        if folder is None:
            sys.exit("ml100k-mm is not available: pass --data DIR or --data synthetic")
        dataset = load_dataset(folder, SHARED / "datasets" / "ml100k-mm")
    spec = RunSpec(args.model, "plain", train=TrainConfig(epochs=args.epochs, seed=1))
    train(dataset, spec, tmp / "run", progress=False)
    return dataset, open_run(tmp / "run")


def one_evaluation(dataset, run) -> float:
    model = run.load_model(dataset)
    evaluator = Evaluator(dataset, "test", run.spec.train.topk)
    evaluator.evaluate(model, per_user=True)
    return median([timed(evaluator.evaluate, model, per_user=True)[0] for _ in range(5)])


def noise(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dataset, run = dataset_and_run(args, Path(tmp))
        print(f"machine: {machine()}\ndataset: {dataset.describe()}\nmodel: {args.model}\n")
        evaluation = one_evaluation(dataset, run)
        load = median([timed(run.load_model, dataset)[0] for _ in range(3)])
        print("| audit | evaluations expected | seconds | in evaluations | target |")
        print("|---|---|---|---|---|")
        print(f"| one evaluation (test, per-user kept) | 1 | {evaluation:.4f} | 1.0 | - |")
        print(f"| loading the run (weights + graphs built from the data), once per run | - | {load:.4f} | "
              f"{load / evaluation:.1f} | - |")
        total = {}
        for severities in ((1e-6,), (1e-6, 1e-4, 1e-2)):
            config = AuditConfig("noise", severities=severities, repeats=args.repeats)
            seconds = median([timed(audit_run, run, dataset, config, Path(tmp) / "out", progress=False)[0]
                              for _ in range(3)])
            s, r = len(severities), args.repeats
            total[s] = seconds
            target = f"<= {s * r + 2}" if s == 1 else f"~ {s * r + 1}"
            print(f"| noise, S={s} x R={r} | {s * r + 1} | {seconds:.3f} | {seconds / evaluation:.1f} | {target} |")
            print(f"| the same without loading the run | {s * r + 1} | {seconds - load:.3f} | "
                  f"{(seconds - load) / evaluation:.1f} | {target} |", flush=True)
        config = AuditConfig("noise", severities=(1e-6,), repeats=args.repeats, per_user=False)
        seconds = median([timed(audit_run, run, dataset, config, Path(tmp) / "out", progress=False)[0]
                          for _ in range(3)])
        print(f"| noise, S=1 x R={args.repeats}, no per-user arrays (--no-per-user), without loading the run | "
              f"{args.repeats + 1} | {seconds - load:.3f} | {(seconds - load) / evaluation:.1f} | "
              f"<= {args.repeats + 2} |")
        marginal = (total[3] - total[1]) / (2 * args.repeats)
        print(f"\none more perturbed evaluation (from S=1 to S=3): {marginal:.4f} s = "
              f"{marginal / evaluation:.2f} evaluations")


class CountingEncoder:
    def __init__(self, inner) -> None:
        self.inner, self.texts, self.seconds = inner, 0, 0.0

    def encode(self, texts, **kwargs):
        self.texts += len(texts)
        seconds, out = timed(self.inner.encode, texts, **kwargs)
        self.seconds += seconds
        return out


def caption(args) -> None:
    from captioning import CaptionCache
    from captioning.imagenet import ImageNetCaptioner
    from perturbations.caption import caption_source
    from robustrec.data.encoders import text_encoder_for
    from robustrec.records import read_records

    class CountingCaptioner(ImageNetCaptioner):
        images = 0

        def caption_items(self, items):
            self.images += len(items)
            return super().caption_items(items)

    with tempfile.TemporaryDirectory() as tmp:
        dataset, run = dataset_and_run(args, Path(tmp))
        print(f"machine: {machine()}\ndataset: {dataset.describe()}\nmodel: {args.model}\n")
        captioner = CountingCaptioner()
        source = caption_source(captioner, CaptionCache(Path(tmp) / "captions"), dataset)
        evaluation = one_evaluation(dataset, run)
        print("| caption audit | changed items (all repeats) | texts encoded | images captioned | seconds | "
              "of which text encoding | in evaluations |")
        print("|---|---|---|---|---|---|---|")
        for label in ("cold caption cache", "warm caption cache"):
            encoder = CountingEncoder(text_encoder_for(dataset))  # a fresh in-memory encoding memo each time
            captioner.images = 0
            config = AuditConfig("caption", severities=(args.prob,), repeats=args.repeats)
            context = SuiteContext(dataset, captions_factory=lambda _: source, text_encoder=encoder)
            seconds, path = timed(audit_run, run, dataset, config, Path(tmp) / "out", context, False)
            changed = sum(r.details.get("changed_items", 0) for r in read_records(path) if not r.is_clean)
            print(f"| {label}, p={args.prob}, R={args.repeats} | {changed} | {encoder.texts} | {captioner.images} | "
                  f"{seconds:.2f} | {encoder.seconds:.2f} | {seconds / evaluation:.0f} |", flush=True)
        print(f"\none evaluation: {evaluation:.4f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", nargs="?", default="noise", choices=("noise", "caption"))
    parser.add_argument("--data")
    parser.add_argument("--model")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--prob", type=float, default=0.1)
    args = parser.parse_args()
    args.model = args.model or ("freedom" if args.part == "noise" else "mmgcn")
    args.repeats = args.repeats or (10 if args.part == "noise" else 3)
    torch.set_grad_enabled(True)
    (noise if args.part == "noise" else caption)(args)


if __name__ == "__main__":
    main()
