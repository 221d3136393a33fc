"""VBPR (He & McAuley, AAAI 2016), as in MMRec: score = [p_u ; theta_u] . [q_i ; W f_i].

MMRec's variant concatenates the text and image features into one f_i and projects it with a single
linear layer; the user embedding has twice the embedding size to match.
"""

from __future__ import annotations

import torch
from torch import nn

from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.models.base import EmbeddingTable, Recommender, default_generator
from robustrec.models.losses import bpr_loss, embedding_norm_loss


class VBPR(Recommender):
    name = "vbpr"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        reg_weight: float = 1e-4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(dataset)
        if not dataset.features.modalities:
            raise ConfigError("VBPR needs item features")
        g = default_generator(generator)
        self.reg_weight = reg_weight
        self.register_features(dataset.features)
        width = sum(t.shape[1] for _, t in dataset.features.items())
        self.user_embedding = nn.Parameter(torch.empty(self.n_users, 2 * embedding_size))
        self.item_embedding = nn.Parameter(torch.empty(self.n_items, embedding_size))
        self.item_linear = nn.Linear(width, embedding_size)
        nn.init.xavier_uniform_(self.user_embedding, generator=g)
        nn.init.xavier_uniform_(self.item_embedding, generator=g)
        nn.init.xavier_normal_(self.item_linear.weight, generator=g)
        nn.init.zeros_(self.item_linear.bias)

    def _item_representation(self, perturb: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        parts = []
        for modality in ("text", "image"):  # MMRec's order: cat(t_feat, v_feat)
            feat = getattr(self, f"{modality}_feat")
            if feat is None:
                continue
            if perturb and modality in perturb:
                feat = feat + perturb[modality]
            parts.append(feat)
        visual = self.item_linear(torch.cat(parts, dim=-1))
        return torch.cat([self.item_embedding, visual], dim=-1)

    def loss(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        items = self._item_representation(perturb)
        users = self.user_embedding[batch.users]
        pos, neg = items[batch.pos_items], items[batch.neg_items]
        return bpr_loss(users, pos, neg) + self.reg_weight * embedding_norm_loss(users, pos, neg)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding, self._item_representation()

    def embedding_tables(self) -> list[EmbeddingTable]:
        return [
            EmbeddingTable("user_embedding", "user", 0, self.n_users),
            EmbeddingTable("item_embedding", "item", 0, self.n_items),
        ]

    def adversarial_inputs(self) -> dict[str, torch.Tensor]:
        return {m: getattr(self, f"{m}_feat") for m in self.features.modalities}
