"""Shared helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustrec.media.cache import cache_root

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ROBUSTREC_SHARED", REPO.parent / "shared"))
CACHE = cache_root()

#: MMRec (the authors' fork) on the same split and machine kind, from REFERENCES.md.
MMREC = {
    "pop": {"recall@20": 0.1635, "ndcg@20": 0.1386, "recall@5": 0.0726, "seconds": None},
    "vbpr": {"recall@20": 0.3007, "ndcg@20": 0.2372, "recall@5": 0.1135, "seconds": 0.44},
    "bm3": {"recall@20": 0.2483, "ndcg@20": 0.1878, "recall@5": 0.0895, "seconds": 1.10},
    "freedom": {"recall@20": 0.3552, "ndcg@20": 0.2898, "recall@5": 0.1496, "seconds": 1.06},
    "mmgcn": {"recall@20": 0.3213, "ndcg@20": 0.2629, "recall@5": 0.1273, "seconds": 4.8},
    "grcn": {"recall@20": 0.3596, "ndcg@20": 0.2928, "recall@5": 0.1486, "seconds": 6.9},
}


@dataclass(frozen=True)
class Setting:
    """One model's setting on both sides: MMRec's model name and config entries, and the same setting
    as robustrec's model hyper-parameters and trainer settings (TrainConfig fields)."""

    mmrec: str
    mmrec_config: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    #: robustrec's model name when the setting's key is not one (a second setting of a model)
    model: str | None = None


#: The setting each model is compared in. The five first models use the settings of REFERENCES.md; the
#: others the first value of every list in MMRec's model config (src/configs/model/<NAME>.yaml), which
#: is the first run of MMRec's own grid. Learning rates, weight decay and MMRec's
#: ``learning_rate_scheduler`` are trainer settings on robustrec's side.
SETTINGS = {
    "vbpr": Setting("VBPR", {"reg_weight": [1e-4]}, {"reg_weight": 1e-4}),
    "bm3": Setting("BM3", {"n_layers": [1], "dropout": [0.5], "reg_weight": [0.1], "cl_weight": 2.0},
                   {"n_layers": 1, "dropout": 0.5, "reg_weight": 0.1, "cl_weight": 2.0}),
    "freedom": Setting("FREEDOM", {"dropout": [0.8], "reg_weight": [0.0], "knn_k": 10, "mm_image_weight": 0.1},
                       {"dropout": 0.8, "reg_weight": 0.0, "knn_k": 10, "mm_image_weight": 0.1}),
    "mmgcn": Setting("MMGCN", {"reg_weight": [1e-5], "learning_rate": [1e-3]}, {"reg_weight": 1e-5}, {"lr": 1e-3}),
    "grcn": Setting("GRCN", {"reg_weight": [1e-3], "learning_rate": [1e-3]}, {"reg_weight": 1e-3}, {"lr": 1e-3}),
    "bpr": Setting("BPR", {"reg_weight": [2.0]}, {"reg_weight": 2.0}),
    "lightgcn": Setting("LightGCN", {"n_layers": [1], "reg_weight": [1e-2]}, {"n_layers": 1, "reg_weight": 1e-2}),
    "layergcn": Setting("LayerGCN", {"n_layers": [4], "reg_weight": [1e-2], "dropout": [0.0]},
                        {"n_layers": 4, "reg_weight": 1e-2, "dropout": 0.0}),
    "selfcf": Setting("SELFCFED_LGN", {"n_layers": [1], "dropout": [0.1], "reg_weight": [0.1]},
                      {"n_layers": 1, "dropout": 0.1, "reg_weight": 0.1}),
    "dualgnn": Setting("DualGNN", {"aggr_mode": ["add"], "learning_rate": [0.1], "reg_weight": [0.1]},
                       {"aggr_mode": "add", "reg_weight": 0.1}, {"lr": 0.1}),
    "slmrec": Setting("SLMRec", {"learning_rate": [1e-4], "ssl_temp": [0.1], "ssl_alpha": [0.01], "reg": [1e-4]},
                      {"ssl_temp": 0.1, "ssl_alpha": 0.01, "reg": 1e-4}, {"lr": 1e-4, "weight_decay": 1e-4}),
    "dragon": Setting("DRAGON", {"aggr_mode": ["add"], "reg_weight": [0.1], "learning_rate": [0.1]},
                      {"aggr_mode": "add", "reg_weight": 0.1}, {"lr": 0.1}),
    "lattice": Setting("LATTICE", {"reg_weight": [0.0], "learning_rate": [1e-4]}, {"reg_weight": 0.0},
                       {"lr": 1e-4, "lr_decay": 0.96, "lr_decay_epochs": 50}),
    "mgcn": Setting("MGCN", {"cl_loss": [0.001]}, {"cl_loss": 0.001, "reg_weight": 1e-4},
                    {"lr": 1e-3, "lr_decay": 0.96, "lr_decay_epochs": 50}),
    "lgmrec": Setting("LGMRec", {}),
    # MMRec's first BPR setting (reg_weight 2.0) learns nothing on either side (test R@20 about .01, below
    # the popularity model's .16); this is the BPR setting of its grid that REFERENCES.md uses for VBPR.
    "bpr@reg1e-4": Setting("BPR", {"reg_weight": [1e-4]}, {"reg_weight": 1e-4}, model="bpr"),
}


def setting_of(key: str) -> Setting:
    """The setting of a SETTINGS key; a model without one (the popularity model) runs its defaults."""
    return SETTINGS.get(key, Setting(key, {}))


def model_of(key: str) -> str:
    """robustrec's model name of a SETTINGS key."""
    return setting_of(key).model or key


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), load {load:.2f}")


def mmrec_split(folder: Path | None = None) -> Path | None:
    """The MMRec-format split of ml100k-mm (built once with the shared tool), or None if unavailable."""
    folder = folder or CACHE / "ml100k-mmrec"
    if (folder / "image_feat.npy").is_file():
        return folder
    tool = SHARED / "tools" / "ml100k_to_mmrec.py"
    if not tool.is_file():
        return None
    print(f"building the MMRec split with {tool} -> {folder}", flush=True)
    subprocess.run([sys.executable, str(tool), str(folder)], check=True)
    return folder


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def median(values) -> float:
    return statistics.median(values)
