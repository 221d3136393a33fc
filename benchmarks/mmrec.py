"""The reference implementation (MMRec) on the same split, machine and time window as robustrec.

MMRec's recorded figures (REFERENCES.md, ``common.MMREC``) were measured on another day, and these
shared machines drift by 15% to 50% from hour to hour (README.md here), so a speed ratio means most
when both sides run in one window. This script runs an MMRec checkout that you provide
(https://github.com/enoche/MMRec; not part of robustrec) in child processes:

    python benchmarks/mmrec.py times --mmrec SRC --data DIR [--models vbpr,bm3,freedom] [--epochs 9]
        MMRec epochs, then robustrec epochs, then MMRec again (A B A): the median s/epoch of each
        (the first epoch of each run dropped) and robustrec's over the mean of MMRec's two.
    python benchmarks/mmrec.py fidelity --mmrec SRC --data DIR --models bm3 --seeds 999,1,2 [--ours FILE]
        full MMRec runs (early stopping) per seed: test metrics at the best-valid epoch, mean and std.
        With --ours (the JSON lines of ``training.py fidelity --json``), the seed-matched comparison
        and Welch's t-test.

SRC is the checkout's root (the folder that holds src/); DIR an MMRec-format folder (<name>.inter,
image_feat.npy, text_feat.npy). Settings are those of REFERENCES.md, with 2048-row batches and Adam at
1e-3 (MMRec's overall.yaml). MMRec's code is imported, never copied or edited, though it writes its
own log/ folder inside the checkout. The child process smooths over three incompatibilities of MMRec
with current libraries: numpy 2 removed ``np.float``, scipy 1.12 removed ``dok_matrix._update``, and
MMRec's raw-image helpers import torchvision and lmdb (unused with precomputed features).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, timed  # noqa: E402
from training import Trainer, load  # noqa: E402

#: robustrec name -> (MMRec name, the REFERENCES.md setting as MMRec config entries)
SETTINGS = {
    "vbpr": ("VBPR", {"reg_weight": [1e-4]}),
    "bm3": ("BM3", {"n_layers": [1], "dropout": [0.5], "reg_weight": [0.1], "cl_weight": 2.0}),
    "freedom": ("FREEDOM", {"dropout": [0.8], "reg_weight": [0.0], "knn_k": 10, "mm_image_weight": 0.1}),
}

CHILD = """
import os, sys, types
import numpy as np, scipy.sparse as sp, torch
torch.set_num_threads({threads})
if not hasattr(np, "float"):
    np.float = float
if not hasattr(sp.dok_matrix, "_update"):
    sp.dok_matrix._update = lambda self, entries: self._dict.update(entries)
sys.modules.setdefault("lmdb", types.ModuleType("lmdb"))
stub = types.ModuleType("utils.data_utils")
for name in ("ImageResize", "ImagePad", "image_to_tensor", "load_decompress_img_from_lmdb_value"):
    setattr(stub, name, None)
sys.modules["utils.data_utils"] = stub
sys.path.insert(0, {src!r})
os.chdir({src!r})
from utils.quick_start import quick_start
quick_start(model={model!r}, dataset={dataset!r}, config_dict={config!r}, save_model=False)
"""

EPOCH_TIME = re.compile(r"epoch \d+ training \[time: ([\d.]+)s")
METRIC = re.compile(r"([a-z]+@\d+): ([\d.]+)")


def run_mmrec(src: Path, data: Path, model: str, seed: int, epochs: int, threads: int) -> str:
    """One MMRec run in a child process; returns its log (stdout and stderr)."""
    name, setting = SETTINGS[model]
    inter = sorted(data.glob("*.inter"))
    if len(inter) != 1:
        sys.exit(f"{data}: expected exactly one .inter file, found {len(inter)}")
    dataset = inter[0].stem
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / dataset).symlink_to(data.resolve(), target_is_directory=True)
        config = {
            "gpu_id": 0, "use_gpu": False, "seed": [seed], "epochs": epochs, "data_path": tmp + "/",
            "USER_ID_FIELD": "userID", "ITEM_ID_FIELD": "itemID", "TIME_FIELD": "timestamp",
            "inter_file_name": inter[0].name, "vision_feature_file": "image_feat.npy",
            "text_feature_file": "text_feat.npy", "field_separator": "\t", "filter_out_cod_start_users": True,
            **setting,
        }
        code = CHILD.format(threads=threads, src=str((src / "src").resolve()), model=name, dataset=dataset,
                            config=config)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    log = out.stdout + out.stderr
    if out.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-5:])
        sys.exit(f"MMRec {name} failed (exit {out.returncode}):\n{tail}")
    return log


def best_test(log: str) -> tuple[int, dict[str, float]]:
    """The best-valid epoch and MMRec's test metrics there, from the run's closing summary."""
    epoch = re.findall(r"best eval result in epoch (\d+)", log)
    summary = log.rsplit("BEST", 1)[-1]
    test = summary[summary.index("Test:"):].splitlines()[0]
    return (int(epoch[-1]) if epoch else -1), {k: float(v) for k, v in METRIC.findall(test)}


def mmrec_epoch_seconds(src: Path, data: Path, model: str, epochs: int, threads: int) -> float:
    """Median training seconds per epoch of a short MMRec run (seed 999), its first epoch dropped."""
    log = run_mmrec(src, data, model, 999, epochs, threads)
    return median([float(t) for t in EPOCH_TIME.findall(log)][1:])


def times(args) -> None:
    src, data = Path(args.mmrec), Path(args.data)
    dataset = load(args.data)
    print(f"machine: {machine()}")
    print(f"dataset: {dataset.describe()}\n")
    print("| model | MMRec s/epoch (before / after) | robustrec s/epoch | robustrec / MMRec |")
    print("|---|---|---|---|")
    for model in args.models.split(","):
        before = mmrec_epoch_seconds(src, data, model, args.epochs, args.threads)
        trainer = Trainer(dataset, model, "plain")
        ours = median([timed(trainer.run_epoch)[0] for _ in range(args.epochs)][1:])
        after = mmrec_epoch_seconds(src, data, model, args.epochs, args.threads)
        reference = (before + after) / 2
        print(f"| {model} | {before:.3f} / {after:.3f} | {ours:.3f} | {ours / reference:.2f}x |", flush=True)


def fidelity(args) -> None:
    src, data = Path(args.mmrec), Path(args.data)
    seeds = [int(s) for s in args.seeds.split(",")]
    ours: dict[tuple[str, int], float] = {}
    if args.ours:
        for line in Path(args.ours).read_text().splitlines():
            row = json.loads(line)
            if row["strategy"] == "plain":
                ours[row["model"], row["seed"]] = row["test"]["recall@20"]
    print(f"machine: {machine()}\n")
    print("| model | seed | MMRec best epoch | MMRec test R@20 | N@20 | R@5 | robustrec test R@20 |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        theirs = []
        for seed in seeds:
            epoch, test = best_test(run_mmrec(src, data, model, seed, 1000, args.threads))
            theirs.append(test["recall@20"])
            mine = ours.get((model, seed))
            print(f"| {model} | {seed} | {epoch} | {test['recall@20']:.4f} | {test['ndcg@20']:.4f} | "
                  f"{test['recall@5']:.4f} | {'-' if mine is None else f'{mine:.4f}'} |", flush=True)
        line = f"{model}: MMRec test R@20 {statistics.mean(theirs):.4f} +- {statistics.stdev(theirs):.4f}"
        mine = [ours[model, s] for s in seeds if (model, s) in ours]
        if len(mine) == len(seeds):
            welch = stats.ttest_ind(mine, theirs, equal_var=False)
            line += (f"; robustrec {statistics.mean(mine):.4f} +- {statistics.stdev(mine):.4f} "
                     f"({statistics.mean(mine) / statistics.mean(theirs):.3f}x; Welch t = {welch.statistic:.2f}, "
                     f"p = {welch.pvalue:.2f})")
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    a = sub.add_parser("times")
    a.add_argument("--epochs", type=int, default=9)
    a.set_defaults(func=times)
    b = sub.add_parser("fidelity")
    b.add_argument("--seeds", default="999")
    b.add_argument("--ours", help="JSON lines written by training.py fidelity --json")
    b.set_defaults(func=fidelity)
    for p in (a, b):
        p.add_argument("--mmrec", required=True, help="root of an MMRec checkout (holds src/)")
        p.add_argument("--data", required=True, help="an MMRec-format dataset folder")
        p.add_argument("--models", default="vbpr,bm3,freedom", help=f"from {', '.join(SETTINGS)}")
        p.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if unknown := set(args.models.split(",")) - set(SETTINGS):
        sys.exit(f"unknown models {sorted(unknown)}; this script runs {', '.join(SETTINGS)}")
    import torch

    torch.set_num_threads(args.threads)
    args.func(args)


if __name__ == "__main__":
    main()
