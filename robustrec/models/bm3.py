"""BM3 (Zhou et al., WWW 2023, "Bootstrap Latent Representations for Multi-modal Recommendation"),
as in MMRec.

User and item-ID embeddings go through LightGCN layers on the normalised user-item graph (the item
ID embedding is added back to the propagated item representation). Learnable image and text tables,
initialised from the raw item features, are projected to the embedding size. A shared linear
predictor maps each "online" representation; the "target" is the same representation with dropout
and no gradient (BYOL without a momentum encoder). The loss is

    (1 - cos(pred(u), drop(i))) + (1 - cos(pred(i), drop(u)))
    + cl_weight * sum over modalities m of [(1 - cos(pred(f_m), drop(i))) + (1 - cos(pred(f_m), drop(f_m)))]
    + reg_weight * (||U|| + ||I||) / n_items

over the batch's (user, positive item) pairs; negatives are not used. The last line is the
regulariser (:class:`~robustrec.models.base.LossTerms`), the rest the data term. Scores are
pred(u) . pred(i) on the full graph, so they do not depend on the raw features at inference.

Departures from MMRec's code, none of which changes the maths (checked against MMRec's full-table
formulation in the tests): dropout masks come from the injected generator; projections, predictor,
dropout and row normalisation run once per distinct user or item of the batch (MMRec projects every
item, then indexes; its table-wide masks likewise give repeated rows one mask), and a mean over the
batch's items becomes a count-weighted sum over its distinct items; graph products use CSR with a
transposed backward (see ``graph.spmm``). The cosine's norms are clamped at 1e-8 as in
``F.cosine_similarity``.
"""

from __future__ import annotations

import torch
from torch import nn

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.models.base import FeatureTableModel, LossTerms, default_generator, seeded_linear
from robustrec.models.graph import layer_mean, normalized_adjacency, to_csr
from robustrec.models.losses import dropout, embedding_norm_loss


class BM3(FeatureTableModel):
    name = "bm3"
    reads_features_at_inference = False

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        n_layers: int = 1,
        dropout: float = 0.5,
        reg_weight: float = 0.1,
        cl_weight: float = 2.0,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        n_layers = checks.count(self.name, "n_layers", n_layers, minimum=0)
        dropout = checks.fraction(self.name, "dropout", dropout, below_one=True)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        cl_weight = checks.non_negative(self.name, "cl_weight", cl_weight)
        super().__init__(dataset)
        if not dataset.features.modalities:
            raise ConfigError("BM3 needs image or text features")
        g = default_generator(generator)
        self.n_layers = n_layers
        self.dropout = dropout
        self.reg_weight = reg_weight
        self.cl_weight = cl_weight

        # the normalised adjacency is symmetric, so it is its own transpose in spmm's backward
        self.register_buffer("norm_adj", to_csr(normalized_adjacency(dataset.train_matrix)), persistent=False)

        # MMRec's initialisation order: user, item, predictor, then per modality table + projection
        self.init_id_embeddings(embedding_size, g)
        self.predictor = seeded_linear(embedding_size, embedding_size, g, nn.init.xavier_normal_)
        self.init_feature_tables(dataset, g, project_to=embedding_size, weight_init=nn.init.xavier_normal_)

    # ---- representations --------------------------------------------------------------------
    def _propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN over the user-item graph; the item ID embedding is added to the item output."""
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = layer_mean(self.norm_adj, ego, self.n_layers).split([self.n_users, self.n_items])
        return users, items + self.item_embedding

    # ---- protocol ---------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        u_all, i_all = self._propagate()
        users, user_index = torch.unique(batch.users, return_inverse=True)
        items, item_index, item_count = torch.unique(batch.pos_items, return_inverse=True, return_counts=True)

        # every representation is computed once per distinct user / item of the batch
        rows = [u_all.index_select(0, users), i_all.index_select(0, items)]
        for modality in self.modalities:
            rows.append(self.projected_features(modality, perturb, rows=items))
        sizes = [len(r) for r in rows]
        stacked = torch.cat(rows)
        online = _unit(self.predictor(stacked)).split(sizes)
        with torch.no_grad():  # the target: dropout (one mask per distinct row), no gradient
            target = _unit(dropout(stacked, self.dropout, batch.generator)).split(sizes)

        u_online, i_online, *f_online = online
        u_target, i_target, *f_target = target
        # 1 - cos over the (user, item) pairs of the batch
        loss = 2.0 - (
            (u_online.index_select(0, user_index) * i_target.index_select(0, item_index)).sum(-1).mean()
            + (i_online.index_select(0, item_index) * u_target.index_select(0, user_index)).sum(-1).mean()
        )
        # 1 - cos over the batch's items: a mean over the batch weights each distinct item by its count
        weight = item_count.to(stacked.dtype) / len(batch)
        contrast = stacked.new_zeros(())
        for feat_online, feat_target in zip(f_online, f_target):
            to_item = (feat_online * i_target).sum(-1)
            to_self = (feat_online * feat_target).sum(-1)
            contrast = contrast + 2.0 - (weight * (to_item + to_self)).sum()
        # the regulariser: norms of the whole propagated tables (MMRec's), not only the batch's rows
        regularizer = self.reg_weight * embedding_norm_loss(u_all, i_all)
        return LossTerms(loss + self.cl_weight * contrast, regularizer)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self._propagate()
        return self.predictor(users), self.predictor(items)


def _unit(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rows scaled to unit length, as ``F.cosine_similarity`` scales them (norms clamped at ``eps``)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)
