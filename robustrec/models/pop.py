"""Popularity: every user gets the items ranked by their number of training interactions.

The sanity floor for every other model. It has no parameters and is never trained.
"""

from __future__ import annotations

import numpy as np
import torch

from robustrec.data.dataset import Dataset
from robustrec.models.base import Recommender


class Popularity(Recommender):
    name = "pop"
    trainable = False

    def __init__(self, dataset: Dataset, *, generator: torch.Generator | None = None) -> None:
        super().__init__(dataset)
        counts = np.bincount(dataset.train[:, 1], minlength=dataset.n_items).astype(np.float32)
        self.register_buffer("counts", torch.from_numpy(counts), persistent=False)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.counts.new_ones(self.n_users, 1), self.counts.unsqueeze(1)
