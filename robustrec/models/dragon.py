"""DRAGON (Zhou et al., ECAI 2023, "Enhancing Dyadic Relations with Homogeneous Graphs for Multimodal
Recommendation"), as MMRec's ``dragon.py`` actually runs.

Three graphs:

- the user-item graph (heterogeneous), one GCN per modality m on it. Its input is
  ``x_m = normalize([P_m ; MLP_1(leaky_relu(MLP(f_m)))])``: learnt user preferences P_m stacked on the
  item features f_m mapped to ``embedding_size`` columns by a two-layer MLP (hidden width
  4 * ``embedding_size``). With A the symmetric normalised adjacency D^-1/2 A D^-1/2 (users <-> items,
  no self loops) the branch outputs ``x_m + A x_m + A^2 x_m`` (MMRec's ``h + x + h_1``);
- a frozen item-item graph S: kNN graphs of the raw features (cosine, self included, D^-1/2 A D^-1/2),
  mixed as ``mm_image_weight * image + (1 - mm_image_weight) * text``, as in FREEDOM;
- a user-user graph G from co-occurrence (:mod:`robustrec.models.user_graph`): each user's ``k``
  neighbours who share the most training items with them, weighted by the softmax of the shared counts.

With both modalities the item representation is ``i = [v_i ; t_i]`` (MMRec's construction "cat") and the
user one ``u = [w_u,0 v_u ; w_u,1 t_u]``, with w_u a learnt per-user pair of modality weights
(``weight_u``, initialised as the softmax of Xavier-normal draws); with one modality both are that
modality's output. Then

    item_i = i + (S^n_mm_layers i)_i          user_u = u + sum_j G[u, j] u_j

and the score is ``user_u . item_i``. The loss is BPR in base 2 (MMRec's
``-mean(log2(sigmoid(pos - neg)))``, i.e. the natural-log BPR divided by ln 2) plus the regulariser
``reg_weight * (sum_m mean(P_m[batch users]^2) + mean(weight_u^2))``.

Up to the item-item graph and the "cat" construction this is DualGNN (same authors, the same GCN code
in MMRec): its GCN inputs and user-item graph (:mod:`robustrec.models.dualgnn`) are reused here.

The user-user graph is re-sampled before every epoch, as MMRec's ``pre_epoch_processing`` calls its
``topk_sample``: a user with fewer than ``k`` neighbours gets the list padded with random repeats of its
own neighbours (:func:`~robustrec.models.user_graph.sample_neighbours`, drawing from the epoch's
generator), and the softmax runs over the padded list, so a repeated neighbour weighs more. A user
with no neighbour gets nothing from the user graph. Nothing else in DRAGON is random after
initialisation.

Reading MMRec's code, note that much of it never runs (MMRec 2023-10):

- the item-dropout graphs (``drop_rate`` 0.1, ``edge_index_dropv`` / ``dropt``) are built from random
  draws but the GCN's ``forward`` ignores its ``edge_index_drop`` argument: every branch propagates on
  the full graph. They are not built here;
- ``embedding_size`` sizes only ``result_embed``, which ``forward`` overwrites; the real width is the
  hard-coded ``dim_latent = 64``, which is MMRec's default ``embedding_size``. Here ``embedding_size``
  is that width;
- ``feat_embed_dim`` sizes ``image_trs`` / ``text_trs``, and ``image_embedding`` / ``text_embedding`` are
  learnable copies of the features; the forward uses none of them (the GCNs read the raw features, the
  learnable copies only seed the kNN graph). So these tables never receive a gradient. They are not
  built here; ``feat_embed_dim`` is accepted (and checked) so that MMRec's configurations carry over,
  and has no effect, as in MMRec;
- ``n_layers`` (DRAGON.yaml: 2) is never read: the GCN always applies its convolution twice, and
  ``num_layer = 1`` is passed but unused. Here ``n_layers`` is the number of user-item hops, default 2,
  which is what MMRec runs;
- ``weight_i``, ``MLP_v``, ``MLP_t`` and ``MLP_user`` are created but unused with construction "cat" (the
  only one MMRec runs; its "weighted_sum" branch adds the text output into the image one in place).
  They are not built here;
- with ``n_mm_layers = 0`` the item-item step adds the item representation to itself (S^0 = I), as
  MMRec's loop does.

Departures from MMRec, on purpose:

- Scores are recomputed from the current weights and features at every ``scorer()`` call. MMRec scores
  with ``result_embed``, cached by the last training batch, which used that epoch's sampled user graph.
  Inference here uses a deterministic user graph instead
  (:func:`~robustrec.models.user_graph.expected_neighbours`): each user's (at most ``k``) neighbours,
  each counted once (softmax of their counts, or their plain mean). For a user with at least ``k``
  neighbours it is exactly the training graph; for one with fewer it is the padded graph without the
  random repeats. So scores depend on weights and features only, and copies and checkpoints
  reproduce them.
- The user-user graph is built in memory from the training interactions (or read, without unpickling,
  from the dataset folder's ``user_graph_dict.npy``); MMRec reads that file, made by a separate script.
  The kNN graph is rebuilt from the features the model is given; MMRec caches it on disk as
  ``mm_adj_{knn_k}.pt``, keyed by ``knn_k`` alone, so another ``mm_image_weight`` or other features
  silently reuse the old graph.
- Message passing is a sparse matrix product (CSR with a transposed backward, ``graph.spmm``) instead
  of torch_geometric's gather/scatter; both modalities' GCNs run as one product on their stacked
  columns (they share the graph), and duplicate training pairs count once. The user-user aggregation is
  a sparse product too (MMRec gathers a ``[n_users, k, d]`` tensor).
- ``aggr_mode`` takes "add" (MMRec's default, the normalisation above) or "mean" (torch_geometric's mean
  over neighbours, which MMRec would run without normalisation); MMRec also accepts "max", refused here.
- Every initial value comes from the injected generator and the per-epoch padding from the epoch's;
  BPR uses ``logsigmoid`` (MMRec's ``log2(sigmoid(.))`` is the same maths but can underflow to -inf).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.models.base import (
    FEATURE_ORDER,
    EmbeddingTable,
    LossTerms,
    Recommender,
    default_generator,
    perturbed,
)
from robustrec.models.dualgnn import AGGR_MODES, ModalityInput
from robustrec.models.graph import mixed_knn_graph, spmm, to_csr, user_item_graph
from robustrec.models.losses import bpr_loss
from robustrec.models.user_graph import (
    USER_AGGR_MODES,
    aggregation_matrices,
    expected_neighbours,
    sample_neighbours,
    user_graph,
)


class DRAGON(Recommender):
    name = "dragon"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        feat_embed_dim: int = 64,
        n_mm_layers: int = 1,
        n_layers: int = 2,
        knn_k: int = 10,
        mm_image_weight: float = 0.1,
        aggr_mode: Literal["add", "mean"] = "add",
        reg_weight: float = 0.1,
        k: int = 40,
        user_aggr_mode: Literal["softmax", "mean"] = "softmax",
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        checks.count(self.name, "feat_embed_dim", feat_embed_dim)  # unused, as in MMRec
        n_mm_layers = checks.count(self.name, "n_mm_layers", n_mm_layers, minimum=0)
        n_layers = checks.count(self.name, "n_layers", n_layers, minimum=0)
        knn_k = checks.count(self.name, "knn_k", knn_k)
        mm_image_weight = checks.fraction(self.name, "mm_image_weight", mm_image_weight)
        _choice("aggr_mode", aggr_mode, AGGR_MODES)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        k = checks.count(self.name, "k", k)
        _choice("user_aggr_mode", user_aggr_mode, USER_AGGR_MODES)
        super().__init__(dataset)
        if not dataset.features.modalities:
            raise ConfigError("DRAGON needs image or text features")
        g = default_generator(generator)
        self.modalities = tuple(m for m in FEATURE_ORDER if getattr(dataset.features, m) is not None)
        self.width = embedding_size
        self.n_mm_layers = n_mm_layers
        self.n_layers = n_layers
        self.reg_weight = reg_weight
        self.k = k
        self.user_aggr_mode = user_aggr_mode
        self.register_features(dataset.features)

        # graphs, rebuilt from the dataset (with_features rebuilds the kNN graph from the new features)
        ui_adj, ui_adj_t = user_item_graph(dataset.train_matrix, aggr_mode)
        self.register_buffer("ui_adj", ui_adj, persistent=False)
        self.register_buffer("ui_adj_t", ui_adj_t, persistent=False)
        mm_adj = mixed_knn_graph(dataset.features.image, dataset.features.text, knn_k, mm_image_weight)
        self.register_buffer("mm_adj", to_csr(mm_adj), persistent=False)
        self.register_buffer("mm_adj_t", to_csr(mm_adj.t()), persistent=False)
        self.user_graph = user_graph(dataset)  # co-occurrence neighbours (MMRec: user_graph_dict.npy)
        self.derived["user_graph"] = self.user_graph.source
        user_adj, user_adj_t = aggregation_matrices(*expected_neighbours(self.user_graph, k, user_aggr_mode))
        self.register_buffer("user_adj", user_adj, persistent=False)
        self.register_buffer("user_adj_t", user_adj_t, persistent=False)
        # the training graph, re-sampled by pre_epoch
        self.register_buffer("epoch_user_adj", None, persistent=False)
        self.register_buffer("epoch_user_adj_t", None, persistent=False)

        # MMRec's order of draws: weight_u, then the image GCN, then the text GCN
        self.weight_u = nn.Parameter(
            torch.softmax(nn.init.xavier_normal_(torch.empty(self.n_users, 2), generator=g), dim=1)
        )
        self.branches = nn.ModuleDict(
            {m: ModalityInput(self.n_users, getattr(dataset.features, m).shape[1], embedding_size, g)
             for m in self.modalities}
        )

    # ---- graphs -------------------------------------------------------------------------------
    def pre_epoch(self, generator: torch.Generator | None) -> None:
        """MMRec's ``topk_sample``: the epoch's user graph, padding short neighbour lists at random."""
        sample = sample_neighbours(self.user_graph, self.k, self.user_aggr_mode, generator)
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
        if len(self.modalities) == 2:  # construction "cat": each user weighs its two modalities
            users = users * self.weight_u.repeat_interleave(self.width, dim=1)
        h = items
        for _ in range(self.n_mm_layers):
            h = spmm(self.mm_adj, h, self.mm_adj_t)
        return users + spmm(user_adj, users, user_adj_t), items + h

    # ---- protocol -----------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        if self.epoch_user_adj is None:  # loss called without pre_epoch (e.g. a single step)
            self.pre_epoch(batch.generator)
        users, items = self._propagate(self.epoch_user_adj, self.epoch_user_adj_t, perturb)
        # MMRec's BPR is in base 2: -mean(log2(sigmoid(.))) = natural-log BPR / ln 2
        data = bpr_loss(
            users.index_select(0, batch.users),
            items.index_select(0, batch.pos_items),
            items.index_select(0, batch.neg_items),
        ) / math.log(2.0)
        penalty = self.weight_u.pow(2).mean()
        for branch in self.branches.values():
            penalty = penalty + branch.preference.index_select(0, batch.users).pow(2).mean()
        return LossTerms(data, self.reg_weight * penalty)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._propagate(self.user_adj, self.user_adj_t)

    def embedding_tables(self) -> list[EmbeddingTable]:
        """The user preference tables (DRAGON has no ID embeddings: items are made from their features).
        ``weight_u`` is left out: it weighs modalities, it embeds nothing."""
        return [EmbeddingTable(f"branches.{m}.preference", "user", 0, self.n_users) for m in self.modalities]

    def adversarial_inputs(self) -> dict[str, torch.Tensor]:
        """The raw feature buffers, which the item MLPs read."""
        return {m: getattr(self, f"{m}_feat") for m in self.modalities}


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        options = " or ".join(repr(c) for c in choices)
        raise ConfigError(f"dragon: {name} must be {options}, got {value!r}")
