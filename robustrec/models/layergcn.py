"""LayerGCN (Zhou et al., ICDE 2023, "Layer-refined Graph Convolutional Networks for Recommendation"),
as in MMRec's ``layergcn.py``.

User and item ID embeddings ``E`` (Xavier-uniform, users drawn first) are propagated over the
normalised user-item graph ``A = D^-1/2 A D^-1/2``, and each layer is *refined*: every node's row is
scaled by its cosine similarity with its own ego embedding before the next layer propagates it,

    x_0 = E,    x_l = cos(A x_{l-1}, E) * A x_{l-1}    (row by row),    output = x_1 + ... + x_L

(a sum of the ``n_layers`` refined layers; the ego layer itself is not part of it, unlike LightGCN's
mean). The score is the dot product of a user's and an item's output rows. The loss of a batch is

    sum over the batch of -log sigmoid(u.p - u.n)  +  reg_weight * 1/2 (|U_b|^2 + |P_b|^2 + |N_b|^2)

a SUM of the BPR terms, not a mean (MMRec's own ``bpr_loss`` here), and MMRec's ``L2Loss``: half the
squared norms of the batch's rows of the ID tables before propagation. The second term is the
regulariser of :class:`~robustrec.models.base.LossTerms`.

Edge pruning (``dropout`` > 0): before each epoch ``int(E * (1 - dropout))`` of the E training edges
are kept and the kept graph is re-normalised; inference uses the full graph. MMRec ALTERNATES two
samplers: the first epoch draws without replacement with probability proportional to the edge's
normalised weight ``1 / sqrt(deg(u) deg(i))`` (degree-sensitive, as FREEDOM), the next one uniformly
(``random.sample``), and so on. So does this model; which one comes next is the persistent buffer
``pruned_graphs`` (the number of pruned graphs drawn so far), so a resumed run goes on with the right
sampler. With MMRec's first setting, ``dropout = 0``, the full graph is used throughout.

Departures from MMRec's code, none of which changes the maths: both samplers draw from the injected
generator (MMRec's uniform one uses Python's global ``random``); if a graph would keep no edge at all
(tiny data, high dropout) it is empty rather than an error; graph products are CSR (``graph.spmm``);
initial values come from the injected generator.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.models.base import GeneralRecommender, LossTerms, default_generator
from robustrec.models.graph import (
    bipartite_adjacency,
    normalized_adjacency,
    prune_edges,
    spmm,
    symmetric_norm_values,
    to_csr,
)
from robustrec.models.losses import bpr_loss, l2_loss


class LayerGCN(GeneralRecommender):
    name = "layergcn"

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        n_layers: int = 4,
        reg_weight: float = 1e-2,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        n_layers = checks.count(self.name, "n_layers", n_layers)  # the output is a sum of layers: >= 1
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        dropout = checks.fraction(self.name, "dropout", dropout, below_one=True)
        super().__init__(dataset)
        self.n_layers = n_layers
        self.reg_weight = reg_weight
        self.dropout = dropout

        # the full graph (inference, and training without pruning) and the edge list pruning samples from
        self.register_buffer("norm_adj", to_csr(normalized_adjacency(dataset.train_matrix)), persistent=False)
        coo = dataset.train_matrix.tocoo()
        edges = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
        self.register_buffer("edge_index", edges, persistent=False)
        values = symmetric_norm_values(edges[0], edges[1], self.n_users, self.n_items)
        self.register_buffer("edge_values", values, persistent=False)
        self.register_buffer("masked_adj", None, persistent=False)
        # training state, not a weight: even -> the next pruning is degree-sensitive, odd -> uniform
        self.register_buffer("pruned_graphs", torch.zeros((), dtype=torch.long))

        self.init_id_embeddings(embedding_size, default_generator(generator))

    # ---- graphs -------------------------------------------------------------------------------
    def pre_epoch(self, generator: torch.Generator | None) -> None:
        """This epoch's training graph: the full one without dropout, else a re-normalised sample of
        the edges, drawn by MMRec's two samplers in turn (degree-sensitive first)."""
        if self.dropout <= 0.0:
            self.masked_adj = self.norm_adj
            return
        n_keep = int(self.edge_values.size(0) * (1.0 - self.dropout))
        degree_sensitive = int(self.pruned_graphs) % 2 == 0
        keep = prune_edges(self.edge_values, n_keep, generator, degree_sensitive)
        rows, cols = self.edge_index[:, keep]
        self.masked_adj = to_csr(bipartite_adjacency(rows, cols, self.n_users, self.n_items))
        self.pruned_graphs = self.pruned_graphs + 1  # re-assigned, not in place (weights_copy shares buffers)

    def _propagate(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sum of the refined layers (module docstring); ``adj`` is symmetric, its own transpose."""
        ego = torch.cat([self.user_embedding, self.item_embedding])
        x, total = ego, None
        for _ in range(self.n_layers):
            x = spmm(adj, x)
            x = F.cosine_similarity(x, ego, dim=-1).unsqueeze(1) * x
            total = x if total is None else total + x
        return total.split([self.n_users, self.n_items])

    # ---- protocol ---------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        if self.masked_adj is None:  # loss called without pre_epoch (e.g. a single step)
            self.pre_epoch(batch.generator)
        users, items = self._propagate(self.masked_adj)
        mean = bpr_loss(
            users.index_select(0, batch.users),
            items.index_select(0, batch.pos_items),
            items.index_select(0, batch.neg_items),
        )
        # MMRec sums the BPR terms over the batch (its LayerGCN only; the other models average)
        return LossTerms(mean * len(batch), self.reg_weight * l2_loss(*self.ego_rows(batch)))

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._propagate(self.norm_adj)
