"""Datasets: MMRec-format folders, raw-file ingest, encoders, and the synthetic default dataset.

The names below are imported on first use (PEP 562), so that light modules of this package (the
image-opening helper :mod:`robustrec.data.images`, which the captioners use) do not pull in torch.
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


def open_dataset(path: str | Path | None = None) -> Dataset:
    """Load the MMRec folder at ``path``; ``None`` gives the synthetic default dataset (built on
    first use, see :func:`robustrec.data.synthetic.default_dataset_dir`)."""
    from robustrec.data.mmrec import load_dataset

    if path is None:
        from robustrec.data.synthetic import default_dataset_dir  # heavy imports only when needed

        path = default_dataset_dir()
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
