"""The in-memory dataset: interactions split into train/valid/test plus item features.

A :class:`Dataset` is immutable. A perturbation that changes item features returns a new dataset
through :meth:`Dataset.with_features`; the original is never modified.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from robustrec.errors import DataError

MODALITIES = ("image", "text")


@dataclass(frozen=True, eq=False)
class ItemFeatures:
    """Dense item feature matrices, one row per item (``None`` for an absent modality)."""

    image: torch.Tensor | None = None
    text: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for name in MODALITIES:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, torch.Tensor) or value.dim() != 2:
                raise DataError(f"{name} features must be a 2-d tensor")
            if not torch.isfinite(value).all():
                bad = int((~torch.isfinite(value)).any(dim=1).sum())
                raise DataError(f"{name} features contain NaN or inf in {bad} rows")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(name for name in MODALITIES if getattr(self, name) is not None)

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return [(name, getattr(self, name)) for name in self.modalities]

    def replace(self, **changes: torch.Tensor | None) -> ItemFeatures:
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> ItemFeatures:
        return ItemFeatures(**{name: t.to(device) for name, t in self.items()})

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in self.items():
            array = np.ascontiguousarray(tensor.detach().cpu().numpy().astype(np.float32))
            digest.update(f"{name}:{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ItemInfo:
    """Raw item content, read from ``items.jsonl``: what the caption audit needs."""

    orig_id: str
    text: str
    image: Path | None


@dataclass(frozen=True, eq=False)
class Dataset:
    """Users and items re-indexed from 0, interactions as int64 ``[n, 2]`` arrays of (user, item)."""

    name: str
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    features: ItemFeatures
    items: tuple[ItemInfo, ...] | None = None
    root: Path | None = None
    summary: dict = field(default_factory=dict)
    # Which encoders produced the features, from features.json: {"text": spec, "image": spec, ...}.
    encoders: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "valid", "test"):
            pairs = getattr(self, split)
            if pairs.ndim != 2 or pairs.shape[1] != 2:
                raise DataError(f"{split} interactions must have shape [n, 2]")
            if len(pairs) and (pairs.min(0) < 0).any():
                raise DataError(f"{split} has negative user or item ids")
            if len(pairs) and pairs[:, 0].max() >= self.n_users:
                raise DataError(f"{split} has user ids >= n_users ({self.n_users})")
            if len(pairs) and pairs[:, 1].max() >= self.n_items:
                raise DataError(f"{split} has item ids >= n_items ({self.n_items})")
        for name, tensor in self.features.items():
            if tensor.shape[0] != self.n_items:
                raise DataError(
                    f"{name} features have {tensor.shape[0]} rows but the dataset has {self.n_items} items"
                )
        if self.items is not None and len(self.items) != self.n_items:
            raise DataError(f"items.jsonl has {len(self.items)} items but the dataset has {self.n_items}")

    # ---- derived, cached views -------------------------------------------------------------
    @cached_property
    def train_matrix(self) -> sp.csr_matrix:
        """Binary user x item matrix of the training interactions."""
        return _csr(self.train, self.n_users, self.n_items)

    def split_matrix(self, split: str) -> sp.csr_matrix:
        return self.train_matrix if split == "train" else _csr(getattr(self, split), self.n_users, self.n_items)

    @cached_property
    def interactions_fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.n_users}x{self.n_items}".encode())
        for split in ("train", "valid", "test"):
            pairs = np.ascontiguousarray(getattr(self, split), dtype=np.int64)
            digest.update(split.encode())
            digest.update(pairs.tobytes())
        return digest.hexdigest()[:16]

    @cached_property
    def fingerprint(self) -> str:
        """Identifies interactions, split and features: a checkpoint refuses any other dataset."""
        return f"{self.interactions_fingerprint}-{self.features.fingerprint()}"

    # ---- views -------------------------------------------------------------------------------
    def with_features(self, features: ItemFeatures) -> Dataset:
        """The same interactions with other item features (validated, original untouched)."""
        return dataclasses.replace(self, features=features)

    def describe(self) -> str:
        feats = ", ".join(f"{n} {tuple(t.shape)}" for n, t in self.features.items()) or "no features"
        return (
            f"{self.name}: {self.n_users} users, {self.n_items} items, "
            f"{len(self.train)}/{len(self.valid)}/{len(self.test)} train/valid/test; {feats}"
        )


def _csr(pairs: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    data = np.ones(len(pairs), dtype=np.float32)
    matrix = sp.csr_matrix((data, (pairs[:, 0], pairs[:, 1])), shape=(n_rows, n_cols))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix
