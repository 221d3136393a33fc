"""FREEDOM (Zhou & Shen, ACM MM 2023, "A Tale of Two Graphs: Freezing and Denoising Graph Structures
for Multimodal Recommendation"), as in MMRec.

Two graphs:

- a frozen item-item graph: a kNN graph (cosine, self included, D^-1/2 A D^-1/2 with row degrees)
  from each modality's raw features, mixed as ``mm_image_weight * image + (1 - mm_image_weight) * text``.
  The item ID embedding is propagated over it ``n_mm_layers`` times and added to the item output;
- the user-item graph, denoised during training by degree-sensitive edge pruning: before each epoch
  ``int(E * (1 - dropout))`` edges are drawn without replacement with probability proportional to
  1 / sqrt(deg(u) deg(i)) and the kept graph is re-normalised. Inference uses the full graph.
  ``n_ui_layers`` LightGCN layers run on it (mean of the layer outputs).

The loss is BPR on the graph representations plus ``reg_weight`` times BPR of the user
representation against each modality's projected learnable feature table (initialised from the raw
features). Despite its name (MMRec's) that second term is no weight penalty: it reads the features,
so it belongs to the data term, and FREEDOM's regulariser is zero (see ``LossTerms``). With MMRec's
default ``reg_weight = 0`` that term, and so the feature tables and projections, get exactly zero
gradient; it is then skipped (unless AMR perturbs the tables), which leaves every parameter update
identical (Adam moves nothing on a zero gradient; only a non-zero weight decay would differ).

``lambda_coeff`` is read but unused by MMRec's code; it is kept (documented, unused, checked to be in
[0, 1], as the mixing weight it is in LATTICE) so configurations carry over. Graph products use CSR
with a transposed backward (see ``graph.spmm``).
"""

from __future__ import annotations

import numpy as np
import torch

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.models.base import FeatureTableModel, LossTerms, default_generator
from robustrec.models.graph import (
    bipartite_adjacency,
    layer_mean,
    mixed_knn_graph,
    normalized_adjacency,
    prune_edges,
    spmm,
    symmetric_norm_values,
    to_csr,
)
from robustrec.models.losses import bpr_loss


class FREEDOM(FeatureTableModel):
    name = "freedom"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        feat_embed_dim: int = 64,
        knn_k: int = 10,
        lambda_coeff: float = 0.9,
        n_mm_layers: int = 1,
        n_ui_layers: int = 2,
        reg_weight: float = 0.0,
        mm_image_weight: float = 0.1,
        dropout: float = 0.8,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        feat_embed_dim = checks.count(self.name, "feat_embed_dim", feat_embed_dim)
        knn_k = checks.count(self.name, "knn_k", knn_k)
        lambda_coeff = checks.fraction(self.name, "lambda_coeff", lambda_coeff)
        n_mm_layers = checks.count(self.name, "n_mm_layers", n_mm_layers, minimum=0)
        n_ui_layers = checks.count(self.name, "n_ui_layers", n_ui_layers, minimum=0)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        mm_image_weight = checks.fraction(self.name, "mm_image_weight", mm_image_weight)
        dropout = checks.fraction(self.name, "dropout", dropout, below_one=True)
        super().__init__(dataset)
        g = default_generator(generator)
        self.n_mm_layers = n_mm_layers
        self.n_ui_layers = n_ui_layers
        self.reg_weight = reg_weight
        self.dropout = dropout
        self.lambda_coeff = lambda_coeff  # unused, as in MMRec

        # frozen item-item graph from the raw features (rebuilt by with_features); it is not symmetric
        mm_adj = mixed_knn_graph(dataset.features.image, dataset.features.text, knn_k, mm_image_weight)
        self.register_buffer("mm_adj", to_csr(mm_adj), persistent=False)
        self.register_buffer("mm_adj_t", to_csr(mm_adj.t()), persistent=False)
        # the full user-item graph (inference) and the edge list pruning samples from
        self.register_buffer("norm_adj", to_csr(normalized_adjacency(dataset.train_matrix)), persistent=False)
        coo = dataset.train_matrix.tocoo()
        edges = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
        self.register_buffer("edge_index", edges, persistent=False)
        self.register_buffer(
            "edge_values",
            symmetric_norm_values(edges[0], edges[1], self.n_users, self.n_items),
            persistent=False,
        )
        self.register_buffer("masked_adj", None, persistent=False)

        # MMRec's initialisation order: user, item, then per modality table + projection (default init)
        self.init_id_embeddings(embedding_size, g)
        self.init_feature_tables(dataset, g, project_to=feat_embed_dim)

    # ---- graphs -------------------------------------------------------------------------------
    def pruned_adjacency(self, generator: torch.Generator | None) -> torch.Tensor:
        """Degree-sensitive edge pruning: a re-normalised user-item graph on a sample of the edges."""
        if self.dropout <= 0.0:
            return self.norm_adj
        n_keep = int(self.edge_values.size(0) * (1.0 - self.dropout))
        keep = prune_edges(self.edge_values, n_keep, generator)
        rows, cols = self.edge_index[:, keep]
        return to_csr(bipartite_adjacency(rows, cols, self.n_users, self.n_items))

    def pre_epoch(self, generator: torch.Generator | None) -> None:
        self.masked_adj = self.pruned_adjacency(generator)

    def _propagate(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.item_embedding
        for _ in range(self.n_mm_layers):
            h = spmm(self.mm_adj, h, self.mm_adj_t)
        ego = torch.cat([self.user_embedding, self.item_embedding])
        users, items = layer_mean(adj, ego, self.n_ui_layers).split([self.n_users, self.n_items])
        return users, items + h

    # ---- protocol ---------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        """All of FREEDOM's loss is data: its ``reg_weight`` term is a BPR loss on the feature tables
        (it reads the features, so AMR perturbs it), and it has no weight regulariser."""
        no_regularizer = self.user_embedding.new_zeros(())
        if self.masked_adj is None:  # loss called without pre_epoch (e.g. a single step)
            self.pre_epoch(batch.generator)
        u_all, i_all = self._propagate(self.masked_adj)
        users = u_all.index_select(0, batch.users)
        loss = bpr_loss(users, i_all.index_select(0, batch.pos_items), i_all.index_select(0, batch.neg_items))
        if self.reg_weight == 0.0 and not perturb:
            return LossTerms(loss, no_regularizer)  # the feature term below would add exactly zero gradient
        feature_loss = loss.new_zeros(())
        for modality in reversed(self.modalities):  # MMRec adds text first
            feature_loss = feature_loss + bpr_loss(
                users,
                self.projected_features(modality, perturb, rows=batch.pos_items),
                self.projected_features(modality, perturb, rows=batch.neg_items),
            )
        return LossTerms(loss + self.reg_weight * feature_loss, no_regularizer)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._propagate(self.norm_adj)
