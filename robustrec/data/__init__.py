"""Datasets: MMRec-format folders, raw-file ingest, encoders, and the synthetic default dataset."""

from __future__ import annotations

from pathlib import Path

from robustrec.data.dataset import Dataset, ItemFeatures, ItemInfo
from robustrec.data.mmrec import load_dataset, write_dataset
from robustrec.data.sampling import Batch, BPRSampler


def open_dataset(path: str | Path | None = None) -> Dataset:
    """Load the MMRec folder at ``path``; ``None`` gives the synthetic default dataset (built on
    first use, see :func:`robustrec.data.synthetic.default_dataset_dir`)."""
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
