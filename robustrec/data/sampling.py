"""Training batches for pairwise (BPR) learning: (user, positive item, sampled negative item).

Negatives follow MMRec: one uniform draw per positive from the items that occur in training,
redrawn while it is one of the user's training items. Everything is vectorised and all randomness
comes from the :class:`torch.Generator` passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from robustrec.data.dataset import Dataset
from robustrec.errors import DataError


@dataclass(frozen=True)
class Batch:
    """One prepared training batch. ``generator`` feeds the model's own randomness (dropout)."""

    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor
    generator: torch.Generator | None = None

    def __len__(self) -> int:
        return len(self.users)


class BPRSampler:
    """Shuffles the training interactions each epoch and pairs each with a sampled negative."""

    def __init__(self, dataset: Dataset, batch_size: int = 2048, device: str | torch.device = "cpu") -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.n_items = dataset.n_items
        self.pairs = torch.from_numpy(np.ascontiguousarray(dataset.train, dtype=np.int64))
        self.candidates = torch.unique(self.pairs[:, 1])
        keys = torch.unique(self.pairs[:, 0] * self.n_items + self.pairs[:, 1])
        self._train_keys = keys  # sorted
        if int(torch.bincount(keys // self.n_items).max()) >= len(self.candidates):
            raise DataError("a user has interacted with every training item: no negative can be sampled")

    def __len__(self) -> int:
        return (len(self.pairs) + self.batch_size - 1) // self.batch_size

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        pos = torch.searchsorted(self._train_keys, keys).clamp(max=len(self._train_keys) - 1)
        return self._train_keys[pos] == keys

    def sample_negatives(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        negatives = self.candidates[torch.randint(len(self.candidates), users.shape, generator=generator)]
        redo = self.is_positive(users, negatives)
        while redo.any():
            idx = redo.nonzero().squeeze(1)
            draw = torch.randint(len(self.candidates), idx.shape, generator=generator)
            negatives[idx] = self.candidates[draw]
            redo = torch.zeros_like(redo)
            redo[idx] = self.is_positive(users[idx], negatives[idx])
        return negatives

    def epoch(self, generator: torch.Generator, model_generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Yield the batches of one epoch. Draws every random number before the first batch."""
        order = torch.randperm(len(self.pairs), generator=generator)
        pairs = self.pairs[order]
        negatives = self.sample_negatives(pairs[:, 0], generator)
        data = torch.stack([pairs[:, 0], pairs[:, 1], negatives]).to(self.device)
        for start in range(0, len(pairs), self.batch_size):
            chunk = data[:, start : start + self.batch_size]
            yield Batch(chunk[0], chunk[1], chunk[2], model_generator)
