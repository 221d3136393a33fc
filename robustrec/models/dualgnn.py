"""DualGNN (Wang et al., IEEE TMM 2021, "DualGNN: Dual Graph Neural Network for Multimedia
Recommendation"), as MMRec's ``dualgnn.py`` actually runs.

Two graphs:

- the user-item graph, one GCN per modality m on it. Its input is
  ``x_m = normalize([P_m ; MLP_1(leaky_relu(MLP(f_m)))])``: learnt user preferences P_m stacked on the
  raw item features f_m mapped to ``embedding_size`` columns by a two-layer MLP (hidden width
  4 * ``embedding_size``), rows L2-normalised. With A the symmetric normalised adjacency
  D^-1/2 A D^-1/2 (users <-> items, no self loops) the branch outputs ``o_m = x_m + A x_m + A^2 x_m``
  (MMRec's ``h + x + h_1``);
- the user-user co-occurrence graph G (:mod:`robustrec.models.user_graph`): each user's ``k`` users
  sharing the most training items, weighted by the softmax of the shared counts.

The item representation is ``i = o_image + o_text``. The user one is a learnt per-user mix of the
modalities, ``u = w_u,0 (o_image + o_text) + w_u,1 o_text`` (see the in-place addition below), with
``w_u`` = ``weight_u`` initialised as the softmax of Xavier-normal draws and trained freely after
that; with one modality both are that modality's output. Then ``user_u = u + sum_j G[u, j] u_j`` and
the score is ``user_u . item_i``. The loss is BPR in base 2 (MMRec's
``-mean(log2(sigmoid(pos - neg)))``, the natural-log BPR divided by ln 2) plus the regulariser
``reg_weight * (sum_m mean(P_m[batch users]^2) + mean(weight_u^2))``.

The user graph is re-sampled before every epoch (MMRec's ``pre_epoch_processing`` calls
``topk_sample``): a user with fewer than ``k`` neighbours gets the list padded with random repeats of
its own neighbours (:func:`~robustrec.models.user_graph.sample_neighbours`, from the epoch's
generator), and the softmax runs over the padded list, so a repeated neighbour weighs more. A user
without neighbours gets nothing from G. Nothing else in DualGNN is random after initialisation.

Reading MMRec's code (2023-10), note that:

- ``representation += self.t_rep`` adds the text output INTO the image output in place
  (``representation`` is ``self.v_rep``), and the "weighted sum" of the users then reads the modified
  ``v_rep``: ``w_u,0 (o_image + o_text) + w_u,1 o_text``, not ``w_u,0 o_image + w_u,1 o_text`` as the
  paper writes. This follows the code;
- ``n_layers`` (DualGNN.yaml: 2) is never read, ``num_layer = 1`` is passed to the GCN but unused, and
  the GCN always applies its convolution twice. Here ``n_layers`` is the number of user-item hops,
  default 2, which is what MMRec runs;
- ``embedding_size`` sizes only ``result_embed``, which ``forward`` overwrites; the real width is the
  hard-coded ``dim_latent = 64``, which is MMRec's default ``embedding_size``. Here ``embedding_size``
  is that width;
- the item-dropout graphs (``drop_rate`` 0.1, ``edge_index_dropv`` / ``dropt``) are built from random
  draws, but the GCN's ``forward`` ignores its ``edge_index_drop`` argument. They are not built here;
- ``weight_i`` is created and regularised (``reg_weight * mean(weight_i^2)``) but never read by the
  scores, and ``MLP_v``, ``MLP_t``, ``MLP_user`` and ``result_embed`` take no part in training. They are
  not built here, so our loss lacks MMRec's ``weight_i`` term, which moves nothing but ``weight_i``;
  with one modality ``weight_u`` is not built either (MMRec regularises it there, unused);
- ``k = 40`` and ``user_aggr_mode = 'softmax'`` are hard-coded; they are hyper-parameters here
  (``user_aggr_mode`` "mean" weighs each of the ``k`` slots ``1/k``, as MMRec's other branch).

Departures from MMRec, on purpose:

- Scores are recomputed from the current weights and features at every ``scorer()`` call. MMRec scores
  with ``result_embed``, cached by the last training batch, which used that epoch's sampled user graph.
  Inference here uses a deterministic user graph
  (:func:`~robustrec.models.user_graph.expected_neighbours`): each user's (at most ``k``) neighbours,
  each counted once (softmax of their counts, or their plain mean). For a user with at least ``k``
  neighbours that is exactly the training graph; for one with fewer it is the padded graph without
  the random repeats (their expected share). So scores depend on weights and features only, and
  copies and checkpoints reproduce them.
- The user graph is built in memory from the training interactions, or read without unpickling from
  the dataset folder's ``user_graph_dict.npy`` when it has one (MMRec reads that file, made by a
  separate script, with ``np.load(allow_pickle=True)``). ``self.derived["user_graph"]`` says which.
- Message passing is a sparse matrix product (CSR with a transposed backward, ``graph.spmm``) instead
  of torch_geometric's gather/scatter; both modalities' GCNs run as one product on their stacked
  columns (they share the graph), and duplicate training pairs count once. The user-user aggregation
  is a sparse product too (MMRec gathers an ``[n_users, k, d]`` tensor).
- ``aggr_mode`` takes "add" (MMRec's default, the normalisation above) or "mean" (torch_geometric's
  mean over neighbours, which MMRec runs without normalisation); MMRec would also accept "max".
- Every initial value comes from the injected generator and the per-epoch padding from the epoch's;
  BPR uses ``logsigmoid`` (MMRec's ``log2(sigmoid(.))`` is the same maths but can underflow to -inf).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.models.base import (
    EmbeddingTable,
    LossTerms,
    Recommender,
    default_generator,
    perturbed,
    seeded_linear,
)
from robustrec.models.graph import spmm, user_item_graph
from robustrec.models.losses import bpr_loss
from robustrec.models.user_graph import (
    USER_AGGR_MODES,
    aggregation_matrices,
    expected_neighbours,
    sample_neighbours,
    user_graph,
)

#: How the user-item GCN aggregates a node's neighbours.
AGGR_MODES = ("add", "mean")


class ModalityInput(nn.Module):
    """The input of one modality's GCN (MMRec's ``GCN`` with ``dim_latent``): the user preference
    table stacked on the item features mapped by a two-layer MLP, rows L2-normalised."""

    def __init__(self, n_users: int, dim_feat: int, width: int, generator: torch.Generator) -> None:
        super().__init__()
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, width), generator=generator))
        self.mlp = seeded_linear(dim_feat, 4 * width, generator)
        self.mlp_1 = seeded_linear(4 * width, width, generator)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        items = self.mlp_1(F.leaky_relu(self.mlp(features)))
        return F.normalize(torch.cat([self.preference, items]), dim=1)


class DualGNN(Recommender):
    name = "dualgnn"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        n_layers: int = 2,
        aggr_mode: str = "add",
        reg_weight: float = 0.1,
        k: int = 40,
        user_aggr_mode: str = "softmax",
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        n_layers = checks.count(self.name, "n_layers", n_layers, minimum=0)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        k = checks.count(self.name, "k", k)
        checks.choice(self.name, "aggr_mode", aggr_mode, AGGR_MODES)
        checks.choice(self.name, "user_aggr_mode", user_aggr_mode, USER_AGGR_MODES)
        super().__init__(dataset)
        if not dataset.features.modalities:
            raise ConfigError("DualGNN needs image or text features")
        g = default_generator(generator)
        self.embedding_size = embedding_size
        self.n_layers = n_layers
        self.reg_weight = reg_weight
        self.k = k
        self.user_aggr_mode = user_aggr_mode
        self.modalities = dataset.features.modalities  # image first, as MMRec
        self.register_features(dataset.features)

        # graphs, rebuilt from the dataset (non-persistent: checkpoints hold weights only)
        ui_adj, ui_adj_t = user_item_graph(dataset.train_matrix, aggr_mode)
        self.register_buffer("ui_adj", ui_adj, persistent=False)
        self.register_buffer("ui_adj_t", ui_adj_t, persistent=False)
        self.users_graph = user_graph(dataset)
        self.derived["user_graph"] = self.users_graph.source
        user_adj, user_adj_t = aggregation_matrices(*expected_neighbours(self.users_graph, k, user_aggr_mode))
        self.register_buffer("user_adj", user_adj, persistent=False)  # inference
        self.register_buffer("user_adj_t", user_adj_t, persistent=False)
        self.register_buffer("epoch_user_adj", None, persistent=False)  # training: sampled by pre_epoch
        self.register_buffer("epoch_user_adj_t", None, persistent=False)

        # MMRec's order of draws: weight_u, then the image GCN, then the text GCN
        if len(self.modalities) == 2:
            self.weight_u = nn.Parameter(
                torch.softmax(nn.init.xavier_normal_(torch.empty(self.n_users, 2, 1), generator=g), dim=1)
            )
        self.branches = nn.ModuleDict(
            {m: ModalityInput(self.n_users, feat.shape[1], embedding_size, g) for m, feat in dataset.features.items()}
        )

    # ---- graphs -------------------------------------------------------------------------------
    def pre_epoch(self, generator: torch.Generator | None) -> None:
        """MMRec's ``topk_sample``: the epoch's user graph, padding short neighbour lists at random."""
        sample = sample_neighbours(self.users_graph, self.k, self.user_aggr_mode, generator)
        adj, adj_t = aggregation_matrices(*sample)
        self.epoch_user_adj, self.epoch_user_adj_t = adj.to(self.device), adj_t.to(self.device)

    # ---- representations ----------------------------------------------------------------------
    def _propagate(
        self, user_adj: torch.Tensor, user_adj_t: torch.Tensor, perturb: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item representations (their dot products are the scores) on the given user graph."""
        # Both modalities' GCNs share the graph: one product on their stacked columns (image first).
        x = torch.cat(
            [self.branches[m](perturbed(getattr(self, f"{m}_feat"), perturb, m)) for m in self.modalities], dim=1
        )
        total, h = x, x
        for _ in range(self.n_layers):
            h = spmm(self.ui_adj, h, self.ui_adj_t)
            total = total + h
        users, items = total.split([self.n_users, self.n_items])
        if len(self.modalities) == 2:
            image_users, text_users = users.split(self.embedding_size, dim=1)
            image_items, text_items = items.split(self.embedding_size, dim=1)
            items = image_items + text_items
            # MMRec adds the text output into the image output in place before the users' weighted
            # sum reads it: its "image" term is image + text.
            weights = self.weight_u.squeeze(2)
            users = (image_users + text_users) * weights[:, :1] + text_users * weights[:, 1:]
        users = users + spmm(user_adj, users, user_adj_t)
        return users, items

    # ---- protocol ---------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        if self.epoch_user_adj is None:  # loss called without pre_epoch (e.g. a single step)
            self.pre_epoch(batch.generator)
        users, items = self._propagate(self.epoch_user_adj, self.epoch_user_adj_t, perturb)
        u = users.index_select(0, batch.users)
        # MMRec's BPR is in base 2: -mean(log2(sigmoid(pos - neg)))
        data = bpr_loss(u, items.index_select(0, batch.pos_items), items.index_select(0, batch.neg_items))
        data = data / math.log(2.0)
        penalty = sum(self.branches[m].preference.index_select(0, batch.users).pow(2).mean() for m in self.modalities)
        if len(self.modalities) == 2:
            penalty = penalty + self.weight_u.pow(2).mean()
        return LossTerms(data, self.reg_weight * penalty)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._propagate(self.user_adj, self.user_adj_t)

    def embedding_tables(self) -> list[EmbeddingTable]:
        """The user preference tables (DualGNN has no ID embeddings: items come from their features)."""
        return [EmbeddingTable(f"branches.{m}.preference", "user", 0, self.n_users) for m in self.modalities]

    def adversarial_inputs(self) -> dict[str, torch.Tensor]:
        """The raw item features, which the GCNs read."""
        return {m: getattr(self, f"{m}_feat") for m in self.modalities}
