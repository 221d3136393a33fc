"""LightGCN (He et al., SIGIR 2020, "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation"), as in MMRec's ``lightgcn.py``.

User and item ID embeddings (Xavier-uniform, users drawn first) are propagated ``n_layers`` times over
the normalised user-item graph ``D^-1/2 A D^-1/2`` (no self loops, degrees + 1e-7), and the
representation is the mean of the layers ``E, A E, ..., A^n E`` (``graph.layer_mean``); the score is
the dot product of a user's and an item's representation. The loss of a batch is

    -mean log sigmoid(u.p - u.n)  +  reg_weight * (||U_b|| + ||P_b|| + ||N_b||) / B

with u, p, n the propagated rows and U_b, P_b, N_b the batch's rows of the ID tables before
propagation (MMRec's ``EmbLoss``, ``losses.embedding_norm_loss``: unsquared norms over the batch size).
The second term is the regulariser of :class:`~robustrec.models.base.LossTerms`.

Departures from MMRec's code, none of which changes the maths: BPR uses ``logsigmoid`` rather than
``log(1e-10 + sigmoid)`` (see :mod:`robustrec.models.bpr`); graph products are CSR (``graph.spmm``;
the graph is symmetric, so it is its own transpose in the backward pass), where MMRec's COO product
transposes the graph at every backward pass; initial values come from the injected generator.
"""

from __future__ import annotations

import torch

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.models.base import GeneralRecommender, LossTerms, default_generator
from robustrec.models.graph import layer_mean, normalized_adjacency, to_csr
from robustrec.models.losses import bpr_loss, embedding_norm_loss


class LightGCN(GeneralRecommender):
    name = "lightgcn"

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        n_layers: int = 1,
        reg_weight: float = 1e-2,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        n_layers = checks.count(self.name, "n_layers", n_layers, minimum=0)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        super().__init__(dataset)
        self.n_layers = n_layers
        self.reg_weight = reg_weight
        self.register_buffer("norm_adj", to_csr(normalized_adjacency(dataset.train_matrix)), persistent=False)
        self.init_id_embeddings(embedding_size, default_generator(generator))

    def _propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        ego = torch.cat([self.user_embedding, self.item_embedding])
        return layer_mean(self.norm_adj, ego, self.n_layers).split([self.n_users, self.n_items])

    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        users, items = self._propagate()
        data = bpr_loss(
            users.index_select(0, batch.users),
            items.index_select(0, batch.pos_items),
            items.index_select(0, batch.neg_items),
        )
        return LossTerms(data, self.reg_weight * embedding_norm_loss(*self.ego_rows(batch)))

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._propagate()
