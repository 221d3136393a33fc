"""The reference implementation (MMRec) on the same split, machine and time window as robustrec.

MMRec's recorded figures (REFERENCES.md, ``common.MMREC``) were measured on another day, and these
shared machines drift by 15% to 50% from hour to hour (README.md here), so a speed ratio means most
when both sides run in one window. This script runs an MMRec checkout that you provide
(https://github.com/enoche/MMRec; not part of robustrec) in child processes:

    python benchmarks/mmrec.py times --mmrec SRC --data DIR [--models vbpr,bm3,freedom] [--epochs 9]
        MMRec epochs, then robustrec epochs, then MMRec again (A B A): the median s/epoch of each
        (the first epoch of each run dropped) and robustrec's over the mean of MMRec's two.
    python benchmarks/mmrec.py fidelity --mmrec SRC --data DIR --models bm3 --seeds 999,1,2 [--json FILE]
        full MMRec runs (early stopping) per seed: test metrics at the best-valid epoch, one JSON line
        per run with --json.
    python benchmarks/mmrec.py table --mmrec-json FILE --ours-json FILE
        the fidelity table: test recall@20 mean +- std of MMRec's runs and robustrec's (the JSON lines
        of ``training.py fidelity --json``), the ratio and Welch's t-test.

SRC is the checkout's root (the folder that holds src/); DIR an MMRec-format folder (<name>.inter,
image_feat.npy, text_feat.npy). Each model runs in one setting (``common.SETTINGS``: REFERENCES.md's
for the first five models, MMRec's first configured setting for the others), with MMRec's trainer
defaults otherwise (2048-row batches, Adam at 1e-3, overall.yaml). DualGNN and DRAGON get a
user_graph_dict.npy written as MMRec's preprocessing script writes it. MMRec's code is imported, never copied or edited, though it writes its
own log/ folder inside the checkout. The child process smooths over the incompatibilities of MMRec
with current libraries: numpy 2 removed ``np.float``, scipy 1.12 removed ``dok_matrix._update``, and
MMRec's raw-image helpers import torchvision and lmdb (unused with precomputed features); its
LayerGCN imports ``models.common.*``, which is ``common.*``; LATTICE calls ``.cuda()`` unconditionally
(a no-op here); DualGNN and DRAGON assign a plain tensor to a name that is a parameter on the CPU
(allowed here); SLMRec and MGCN import torch_scatter (PyG's ``scatter`` stands in). MMRec needs
pandas, pyyaml, scikit-learn (SLMRec) and torch_geometric (MMGCN, GRCN, DualGNN, DRAGON) installed;
robustrec needs none of them.
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
from common import SETTINGS, machine, median, timed  # noqa: E402
from training import Trainer, load  # noqa: E402

#: MMRec's models that read a user-user graph file from the dataset folder.
NEEDS_USER_GRAPH = {"dualgnn", "dragon"}

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
torch.Tensor.cuda = lambda self, *args, **kwargs: self  # LATTICE (and others) call .cuda() unconditionally
_setattr = torch.nn.Module.__setattr__
def _setattr_plain_tensor(self, name, value):
    # DualGNN and DRAGON create result_embed as nn.Parameter(...).to(device), a plain tensor on a GPU
    # but the Parameter itself on the CPU, and later assign a plain tensor to it, which torch refuses.
    params = self.__dict__.get("_parameters")
    if params is not None and name in params and isinstance(value, torch.Tensor) \
            and not isinstance(value, torch.nn.Parameter):
        del params[name]
    _setattr(self, name, value)
torch.nn.Module.__setattr__ = _setattr_plain_tensor
scatter_module = types.ModuleType("torch_scatter")  # SLMRec imports torch_scatter; PyG's scatter is the same
def _scatter(src, index, dim=-1, out=None, dim_size=None, reduce="sum"):
    from torch_geometric.utils import scatter
    return scatter(src, index, dim=dim, dim_size=dim_size, reduce=reduce)
scatter_module.scatter = _scatter
scatter_module.scatter_add = lambda src, index, dim=-1, out=None, dim_size=None: _scatter(src, index, dim, out, dim_size)
sys.modules.setdefault("torch_scatter", scatter_module)
sys.path.insert(0, {src!r})
os.chdir({src!r})
import common, common.abstract_recommender, common.loss  # LayerGCN imports them as models.common.*
sys.modules["models.common"] = common
sys.modules["models.common.abstract_recommender"] = common.abstract_recommender
sys.modules["models.common.loss"] = common.loss
from utils.quick_start import quick_start
quick_start(model={model!r}, dataset={dataset!r}, config_dict={config!r}, save_model=False)
"""

EPOCH_TIME = re.compile(r"epoch \d+ training \[time: ([\d.]+)s")
METRIC = re.compile(r"([a-z]+@\d+): ([\d.]+)")


def run_mmrec(src: Path, data: Path, model: str, seed: int, epochs: int, threads: int) -> str:
    """One MMRec run in a child process; returns its log (stdout and stderr)."""
    name, setting = SETTINGS[model].mmrec, SETTINGS[model].mmrec_config
    inter = sorted(data.glob("*.inter"))
    if len(inter) != 1:
        sys.exit(f"{data}: expected exactly one .inter file, found {len(inter)}")
    dataset = inter[0].stem
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / dataset
        folder.mkdir()
        for path in data.iterdir():  # MMRec writes its graph caches into the dataset folder: keep ours clean
            (folder / path.name).symlink_to(path.resolve())
        if model in NEEDS_USER_GRAPH:
            write_user_graph_dict(inter[0], folder / "user_graph_dict.npy")
        config = {
            "gpu_id": 0, "use_gpu": False, "seed": [seed], "epochs": epochs, "data_path": tmp + "/",
            "USER_ID_FIELD": "userID", "ITEM_ID_FIELD": "itemID", "TIME_FIELD": "timestamp",
            "inter_file_name": inter[0].name, "vision_feature_file": "image_feat.npy",
            "text_feature_file": "text_feat.npy", "user_graph_dict_file": "user_graph_dict.npy",
            "field_separator": "\t", "filter_out_cod_start_users": True,
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


def write_user_graph_dict(inter: Path, out: Path) -> None:
    """MMRec's user_graph_dict.npy for its DualGNN and DRAGON, as its preprocessing script
    (preprocessing/dualgnn-gen-u-u-matrix.py) builds it: for each user, the other users who share a
    training item, by the number of shared items (torch.topk order, at most 200), as
    ``{user: [neighbours, counts]}``. Written with pickle because that is MMRec's format; robustrec
    itself never reads it with pickle (robustrec.models.user_graph)."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    rows = np.genfromtxt(inter, delimiter="\t", names=True, dtype=None, encoding="utf-8")
    train = rows[rows["x_label"] == 0]
    n_users = len(np.unique(rows["userID"]))
    n_items = int(rows["itemID"].max()) + 1
    matrix = sp.csr_matrix((np.ones(len(train)), (train["userID"], train["itemID"])), shape=(n_users, n_items))
    matrix.data[:] = 1.0
    shared = torch.from_numpy((matrix @ matrix.T).toarray()).float()
    shared.fill_diagonal_(0.0)
    graph = {}
    for user in range(n_users):
        top = torch.topk(shared[user], min(int((shared[user] > 0).sum()), 200))
        graph[user] = [top.indices.numpy().tolist(), top.values.numpy().tolist()]
    np.save(out, graph, allow_pickle=True)


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
        try:
            before = mmrec_epoch_seconds(src, data, model, args.epochs, args.threads)
            trainer = Trainer(dataset, model, "plain")
            ours = median([timed(trainer.run_epoch)[0] for _ in range(args.epochs)][1:])
            after = mmrec_epoch_seconds(src, data, model, args.epochs, args.threads)
        except SystemExit as exc:  # one model's MMRec failing does not end the table
            print(f"| {model} | failed: {str(exc).splitlines()[-1]} | | |", flush=True)
            continue
        reference = (before + after) / 2
        print(f"| {model} | {before:.3f} / {after:.3f} | {ours:.3f} | {ours / reference:.2f}x |", flush=True)


def fidelity(args) -> None:
    """Full MMRec runs per model and seed; one JSON line each (``--json``), a failure reported and skipped."""
    src, data = Path(args.mmrec), Path(args.data)
    print(f"machine: {machine()}\n")
    print("| model | seed | MMRec best epoch / run | test R@20 | N@20 | R@5 | s/epoch (mean) |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            try:
                log = run_mmrec(src, data, model, seed, args.max_epochs, args.threads)
            except SystemExit as exc:
                print(f"| {model} | {seed} | failed: {str(exc).splitlines()[-1]} |", flush=True)
                break
            epoch, test = best_test(log)
            seconds = [float(t) for t in EPOCH_TIME.findall(log)]
            row = {"model": model, "seed": seed, "max_epochs": args.max_epochs, "best_epoch": epoch,
                   "epochs_run": len(seconds), "test": test,
                   "s_per_epoch": statistics.mean(seconds) if seconds else None}
            print(f"| {model} | {seed} | {epoch} / {len(seconds)} | {test['recall@20']:.4f} | "
                  f"{test['ndcg@20']:.4f} | {test['recall@5']:.4f} | {row['s_per_epoch']:.2f} |", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


def read_runs(path: str, strategy: str = "plain") -> dict[tuple[str, int], list[dict]]:
    """JSON lines of runs (``fidelity --json`` here or in training.py) by (model, epoch cap); other
    strategies dropped. Runs capped below MMRec's 1000 epochs are compared only with runs of the same cap."""
    runs: dict[tuple[str, int], list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        if row.get("strategy", "plain") == strategy:
            runs.setdefault((row["model"], row.get("max_epochs", 1000)), []).append(row)
    return runs


def table(args) -> None:
    """The fidelity table: test recall@20 mean +- std on both sides, the ratio and Welch's t-test."""
    theirs, ours = read_runs(args.mmrec_json), read_runs(args.ours_json)
    print("| model | MMRec test R@20 (seeds) | robustrec test R@20 (seeds) | ratio | Welch p | verdict |")
    print("|---|---|---|---|---|---|")
    for model, cap in sorted(set(theirs) & set(ours), key=lambda key: (list(SETTINGS).index(key[0]), -key[1])):
        a = [r["test"]["recall@20"] for r in theirs[model, cap]]
        b = [r["test"]["recall@20"] for r in ours[model, cap]]
        label = model if cap >= 1000 else f"{model} (first {cap} epochs)"
        ratio = statistics.mean(b) / statistics.mean(a)
        p = stats.ttest_ind(b, a, equal_var=False).pvalue if min(len(a), len(b)) > 1 else float("nan")
        ok = ratio >= 0.97 or p >= 0.05
        print(f"| {label} | {_mean_std(a)} ({len(a)}) | {_mean_std(b)} ({len(b)}) | {ratio:.3f}x | "
              f"{p:.2f} | {'meets the goal' if ok else 'below'} |")


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    a = sub.add_parser("times")
    a.add_argument("--epochs", type=int, default=9)
    a.set_defaults(func=times)
    b = sub.add_parser("fidelity")
    b.add_argument("--seeds", default="999")
    b.add_argument("--max-epochs", type=int, default=1000)
    b.add_argument("--json", help="append one JSON line per run to this file")
    b.set_defaults(func=fidelity)
    for p in (a, b):
        p.add_argument("--mmrec", required=True, help="root of an MMRec checkout (holds src/)")
        p.add_argument("--data", required=True, help="an MMRec-format dataset folder")
        p.add_argument("--models", default="vbpr,bm3,freedom", help=f"from {', '.join(SETTINGS)}")
        p.add_argument("--threads", type=int, default=2)
    c = sub.add_parser("table")
    c.add_argument("--mmrec-json", required=True, help="JSON lines of mmrec.py fidelity --json")
    c.add_argument("--ours-json", required=True, help="JSON lines of training.py fidelity --json")
    c.set_defaults(func=table, models="")
    args = parser.parse_args()
    if unknown := {m for m in args.models.split(",") if m} - set(SETTINGS):
        sys.exit(f"unknown models {sorted(unknown)}; this script runs {', '.join(SETTINGS)}")
    import torch

    torch.set_num_threads(getattr(args, "threads", 1))
    args.func(args)


if __name__ == "__main__":
    main()
