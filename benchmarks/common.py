"""Shared helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
