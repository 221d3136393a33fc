"""Datasets: MMRec-format folders, raw-file ingest, encoders, and the synthetic default dataset.

The names below are imported on first use (PEP 562), so that importing one light module of this
package (:mod:`robustrec.data.values`, the re-exports in :mod:`robustrec.data.images`) does not pull
in torch. Helpers shared with the captioners live in :mod:`robustrec.media`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robustrec.data.dataset import Dataset, ItemFeatures, ItemInfo
    from robustrec.data.mmrec import load_dataset, write_dataset
    from robustrec.data.sampling import Batch, BPRSampler

_EXPORTS = {
    "robustrec.data.dataset": ("Dataset", "ItemFeatures", "ItemInfo"),
    "robustrec.data.mmrec": ("load_dataset", "write_dataset"),
    "robustrec.data.sampling": ("Batch", "BPRSampler"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def open_dataset(path: str | Path | None = None, progress: bool = True) -> Dataset:
    """Load the MMRec folder at ``path``; ``None`` gives the synthetic default dataset (built on
    first use, in about a minute, see :func:`robustrec.data.synthetic.default_dataset_dir`).
    ``progress`` reports that build on stderr, as the CLI does unless given ``--no-progress``."""
    from robustrec.data.mmrec import load_dataset

    if path is None:
        from robustrec.data import synthetic  # heavy imports only when needed

        path = synthetic.default_dataset_dir(progress=progress)
    return load_dataset(path)


__all__ = [
    "BPRSampler",
    "Batch",
    "Dataset",
    "ItemFeatures",
    "ItemInfo",
    "load_dataset",
    "open_dataset",
    "write_dataset",
]
