"""LATTICE (Zhang et al., ACM MM 2021, "Mining Latent Structures for Multimedia Recommendation"), as in
MMRec.

LATTICE adds an item-item graph to a collaborative-filtering backbone. What MMRec's ``lattice.py`` runs:

- The backbone (``cf_model``, LightGCN by default) works on the user-item graph normalised as
  D^-1 (A + I): self loops, each row divided by its degree (self loop included). This is not
  LightGCN's D^-1/2 A D^-1/2. LightGCN averages ``x, Ax, ..., A^L x`` with ``L = len(weight_size)``
  (only the length of ``weight_size`` counts). NGCF (``cf_model="ngcf"``) and plain MF are the other
  choices; NGCF's layers use ``weight_size`` and ``mess_dropout``.
- Item graphs, one per modality, are built with MMRec's ``build_sim`` -> ``build_knn_neighbourhood``
  -> ``compute_normalized_laplacian``: each item's ``knn_k`` most cosine-similar items (itself
  included). The edge keeps its cosine similarity as its weight, and the matrix is normalised as
  D^-1/2 S D^-1/2 with the row sums of S on both sides (S is not symmetric). Keeping the similarity
  is where this differs from FREEDOM's graph, whose edges weigh 1 (``graph.knn_graph``), so that
  helper does not apply here; :func:`weighted_knn_graph` is this one, and MGCN uses it too.
- The *original* graph is built once from the raw features. The *learnt* graph is built from the
  learnable feature tables after their projection to ``feat_embed_dim`` (``{m}_trs``). With two
  modalities both are mixed by ``softmax(modal_weight)`` (a learnt pair, initially 0.5 / 0.5). The
  learnt similarity matrices are mixed before normalisation, the original graphs after theirs. The
  item graph is ``(1 - lambda_coeff) * learnt + lambda_coeff * original``.
- ``h = item_graph^n_layers @ item_embedding``. Item representations are the backbone's items plus
  ``normalize(h)``; user representations are the backbone's users. Scores are dot products.
- The loss is BPR on the batch's rows plus ``reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / batch size``
  on the same rows (MMRec's first setting has ``reg_weight = 0``).

When MMRec builds the learnt graph: ``pre_epoch_processing`` sets a flag, and only the first training
batch of each epoch builds the graph, with its gradient. That batch is the only one in which the feature
tables, their projections and ``modal_weight`` get a gradient. The later batches of the epoch reuse the
graph detached, though MMRec still projects the feature tables in each of them and throws the
result away. Every evaluation (``full_sort_predict``) rebuilds the graph from the current weights. Here
:meth:`LATTICE.pre_epoch` clears the cached graph, the next loss builds it with its gradient and
caches a detached copy, and :meth:`LATTICE.inference_embeddings` always builds a new one.

Departures from MMRec's code, and why:

- Graphs are sparse (``knn_k`` entries per row and modality) where MMRec uses dense ``n x n``
  matrices, with the same values. The neighbours are found without gradient and the similarities are
  then recomputed on the edges. MMRec's gradient through ``topk`` and ``scatter`` also reaches only
  the kept entries, so the gradient is the same.
- Under AMR (a ``perturb`` given to :meth:`LATTICE.loss_terms`) the learnt graph is rebuilt from the
  perturbed tables at every call, and not cached. Otherwise every batch but an epoch's first would not
  read the features at all, and AMR would have nothing to perturb.
- The regulariser reads the item graph detached. It penalises weights, and this way it sends no
  gradient to the features (see ``LossTerms``). MMRec's, when ``reg_weight > 0``, also sends some to
  the tables, projections and modal weights in each epoch's first batch. It is divided by the batch's
  length. MMRec divides by the configured batch size (2048), which differs only on an epoch's last,
  shorter batch.
- ``knn_k`` is capped at the number of items (MMRec's ``topk`` would fail). A zero feature row has
  similarity 0 to everything (MMRec divides by its zero norm: NaN). A graph row whose weights sum
  to zero or less gets zero weights. MMRec zeroes a zero sum too, but a negative sum gives NaN there.
- Nothing is cached on disk (MMRec caches the original graphs by ``knn_k`` alone). Dropout masks
  (NGCF) come from the batch's generator.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.models.base import FeatureTableModel, LossTerms, default_generator, seeded_linear
from robustrec.models.graph import EdgeGraph, layer_mean, sparse, spmm, to_csr, user_item_edges
from robustrec.models.losses import bpr_loss, dropout

CF_MODELS = ("lightgcn", "ngcf", "mf")


# ---- graph helpers (candidates for graph.py: MGCN uses them too) ------------------------------------


def knn_edges(features: torch.Tensor, k: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each item's ``k`` most cosine-similar items (itself included) and the similarities.

    Returns ``(rows, cols, similarities)`` with ``k`` edges per row, row-major. The neighbours are
    searched without gradient (in row chunks, so memory stays O(chunk x n)). The similarities are
    differentiable in ``features`` when it requires grad: they are then recomputed on the edges
    (O(edges x d) rather than a dense n x n product).
    """
    n = features.shape[0]
    k = min(k, n)
    normed = features / torch.linalg.vector_norm(features, dim=-1, keepdim=True).clamp_min(1e-12)
    values, neighbours = [], []
    with torch.no_grad():
        fixed = normed.detach()
        for start in range(0, n, chunk):
            top = torch.topk(fixed[start : start + chunk] @ fixed.T, k, dim=-1)
            values.append(top.values)
            neighbours.append(top.indices)
    rows = torch.arange(n, device=features.device).repeat_interleave(k)
    cols = torch.cat(neighbours).flatten()
    if normed.requires_grad:
        return rows, cols, (normed.index_select(0, rows) * normed.index_select(0, cols)).sum(-1)
    return rows, cols, torch.cat(values).flatten()


def symmetric_normalized(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Edge values of D^-1/2 S D^-1/2, D the row sums of S (MMRec's ``compute_normalized_laplacian``).

    Repeated (row, col) pairs count as their sum. A row summing to zero or less gets zero weights.
    Differentiable in ``values``."""
    degree = values.new_zeros(n).index_add(0, rows, values)
    inv_sqrt = torch.where(degree > 0, degree.clamp_min(1e-30).pow(-0.5), 0.0)
    return values * inv_sqrt[rows] * inv_sqrt[cols]


def weighted_knn_graph(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The kNN graph LATTICE and MGCN build from item features: ``(index [2, E], values [E])`` of
    D^-1/2 S D^-1/2, where S keeps each item's ``k`` largest cosine similarities (self included)."""
    rows, cols, similarity = knn_edges(features, k)
    return torch.stack([rows, cols]), symmetric_normalized(rows, cols, similarity, features.shape[0])


def summed_edge_graph(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int
) -> tuple[EdgeGraph, torch.Tensor]:
    """The ``n x n`` matrix with ``values`` at ``(rows, cols)`` (repeats summed) as an EdgeGraph and
    its per-edge values: ``graph.propagate(x, values)`` is the matrix times ``x``, differentiable in
    both."""
    unique, inverse = torch.unique(rows * n + cols, return_inverse=True)  # sorted as EdgeGraph's edges
    graph = EdgeGraph(src=unique % n, dst=torch.div(unique, n, rounding_mode="floor"), n_dst=n)
    return graph, values.new_zeros(unique.shape[0]).index_add(0, inverse, values)


def self_loop_mean_adjacency(train_matrix: sp.csr_matrix) -> torch.Tensor:
    """D^-1 (A + I) of the (users + items) interaction graph: the mean over a node and its neighbours
    (LATTICE's ``norm_adj``). Not symmetric."""
    n_users, n_items = train_matrix.shape
    n = n_users + n_items
    users, items = user_item_edges(train_matrix)
    nodes = torch.arange(n)
    rows = torch.cat([users, items, nodes])
    cols = torch.cat([items, users, nodes])
    degree = torch.bincount(rows, minlength=n).to(torch.float32)
    return sparse(torch.stack([rows, cols]), 1.0 / degree[rows], (n, n))


# ---- the model ------------------------------------------------------------------------------------


class LATTICE(FeatureTableModel):
    name = "lattice"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        feat_embed_dim: int = 64,
        weight_size: tuple[int, ...] = (64, 64),
        lambda_coeff: float = 0.9,
        reg_weight: float = 0.0,
        cf_model: Literal["lightgcn", "ngcf", "mf"] = "lightgcn",
        mess_dropout: tuple[float, ...] = (0.1, 0.1),
        n_layers: int = 1,
        knn_k: int = 10,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        feat_embed_dim = checks.count(self.name, "feat_embed_dim", feat_embed_dim)
        weight_size = _sequence(self.name, "weight_size", weight_size, checks.count)
        lambda_coeff = checks.fraction(self.name, "lambda_coeff", lambda_coeff)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        mess_dropout = _sequence(
            self.name, "mess_dropout", mess_dropout, functools.partial(checks.fraction, below_one=True)
        )
        n_layers = checks.count(self.name, "n_layers", n_layers, minimum=0)
        knn_k = checks.count(self.name, "knn_k", knn_k)
        checks.choice(self.name, "cf_model", cf_model, CF_MODELS)
        if cf_model == "ngcf":
            _check_ngcf(weight_size, mess_dropout, embedding_size)
        super().__init__(dataset)
        if not dataset.features.modalities:
            raise ConfigError("LATTICE needs image or text features")
        g = default_generator(generator)
        self.cf_model = cf_model
        self.n_ui_layers = len(weight_size)
        self.mess_dropout = mess_dropout
        self.lambda_coeff = lambda_coeff
        self.reg_weight = reg_weight
        self.n_layers = n_layers
        self.knn_k = knn_k
        #: the learnt item graph of the running epoch, detached (MMRec's ``item_adj``); see pre_epoch
        self._epoch_graph: tuple[EdgeGraph, torch.Tensor] | None = None

        adj = self_loop_mean_adjacency(dataset.train_matrix)
        self.register_buffer("norm_adj", to_csr(adj), persistent=False)
        self.register_buffer("norm_adj_t", to_csr(adj.t()), persistent=False)

        # MMRec's initialisation order: user, item, NGCF's layers, then per modality table + projection
        self.init_id_embeddings(embedding_size, g)
        if cf_model == "ngcf":
            self.gc_linears = nn.ModuleList()
            self.bi_linears = nn.ModuleList()
            for width in weight_size:  # all equal to embedding_size (checked above)
                self.gc_linears.append(seeded_linear(embedding_size, width, g))
                self.bi_linears.append(seeded_linear(embedding_size, width, g))
        self.init_feature_tables(dataset, g, project_to=feat_embed_dim)
        self.modal_weight = nn.Parameter(torch.tensor([0.5, 0.5]))

        # the original (frozen) kNN graphs of the raw features; rebuilt by with_features
        for modality in self.modalities:
            index, values = weighted_knn_graph(getattr(dataset.features, modality).float(), knn_k)
            self.register_buffer(f"{modality}_original_index", index, persistent=False)
            self.register_buffer(f"{modality}_original_values", values, persistent=False)

    # ---- the item graph ------------------------------------------------------------------------
    def modal_weights(self) -> torch.Tensor:
        """One weight per present modality: ``softmax(modal_weight)`` with two, ``[1]`` with one."""
        if len(self.modalities) == 1:
            return self.modal_weight.new_ones(1)
        return torch.softmax(self.modal_weight, dim=0)

    def item_graph(self, perturb: dict[str, torch.Tensor] | None = None) -> tuple[EdgeGraph, torch.Tensor]:
        """``(1 - lambda) * learnt + lambda * original`` from the current weights: the graph and its
        per-edge values, differentiable in the feature tables, projections and modal weights."""
        weights = self.modal_weights()
        # learnt: the modalities' kNN similarities are mixed, then normalised together
        edges = [knn_edges(self.projected_features(m, perturb), self.knn_k) for m in self.modalities]
        rows = torch.cat([r for r, _, _ in edges])
        cols = torch.cat([c for _, c, _ in edges])
        mixed = torch.cat([w * s for w, (_, _, s) in zip(weights, edges)])
        parts = [(rows, cols, (1.0 - self.lambda_coeff) * symmetric_normalized(rows, cols, mixed, self.n_items))]
        # original: each modality's graph was normalised on its own; they are mixed here
        for w, modality in zip(weights, self.modalities):
            index = getattr(self, f"{modality}_original_index")
            values = getattr(self, f"{modality}_original_values")
            parts.append((index[0], index[1], self.lambda_coeff * w * values))
        rows, cols, values = (torch.cat(column) for column in zip(*parts))
        return summed_edge_graph(rows, cols, values, self.n_items)

    def _training_graph(self, perturb: dict[str, torch.Tensor] | None) -> tuple[EdgeGraph, torch.Tensor]:
        """MMRec's schedule: built with its gradient by the epoch's first loss, then reused detached.
        A perturbation (AMR) always gets a graph of the perturbed tables, which is not kept."""
        if perturb:
            return self.item_graph(perturb)
        if self._epoch_graph is None:
            graph, values = self.item_graph()
            self._epoch_graph = (graph, values.detach())
            return graph, values
        return self._epoch_graph

    def pre_epoch(self, generator: torch.Generator | None) -> None:
        """The next loss rebuilds the learnt item graph (MMRec's ``build_item_graph = True``)."""
        self._epoch_graph = None

    # ---- representations -------------------------------------------------------------------------
    def _item_side(self, graph: EdgeGraph, values: torch.Tensor) -> torch.Tensor:
        """``normalize(item_graph^n_layers @ item_embedding)``, added to every item representation."""
        h = self.item_embedding
        for _ in range(self.n_layers):
            h = graph.propagate(h, values)
        return F.normalize(h, p=2, dim=1)

    def _collaborative(self, generator: torch.Generator | None, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's user and item representations (dropout only in NGCF's training passes)."""
        if self.cf_model == "mf":
            return self.user_embedding, self.item_embedding
        ego = torch.cat([self.user_embedding, self.item_embedding])
        if self.cf_model == "lightgcn":
            out = layer_mean(self.norm_adj, ego, self.n_ui_layers, self.norm_adj_t)
        else:
            out = self._ngcf(ego, generator, training)
        return out.split([self.n_users, self.n_items])

    def _ngcf(self, ego: torch.Tensor, generator: torch.Generator | None, training: bool) -> torch.Tensor:
        """NGCF layers: leaky_relu(W1 A e) + leaky_relu(W2 (e * A e)), dropout, then the mean of the
        input and every layer's L2-normalised output."""
        outputs = [ego]
        for gc, bi, p in zip(self.gc_linears, self.bi_linears, self.mess_dropout):
            side = spmm(self.norm_adj, ego, self.norm_adj_t)
            ego = F.leaky_relu(gc(side)) + F.leaky_relu(bi(ego * side))
            if training:
                ego = dropout(ego, p, generator)
            outputs.append(F.normalize(ego, p=2, dim=1))
        return torch.stack(outputs).mean(0)

    # ---- protocol -------------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        graph, values = self._training_graph(perturb)
        users, items = self._collaborative(batch.generator, training=True)
        u = users.index_select(0, batch.users)

        def rows(side: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return (items.index_select(0, batch.pos_items) + side.index_select(0, batch.pos_items),
                    items.index_select(0, batch.neg_items) + side.index_select(0, batch.neg_items))

        side = self._item_side(graph, values)
        pos, neg = rows(side)
        data = bpr_loss(u, pos, neg)
        if self.reg_weight == 0.0:
            return LossTerms(data, data.new_zeros(()))
        if values.requires_grad:  # the regulariser reads the graph detached: no gradient to the features
            pos, neg = rows(self._item_side(graph, values.detach()))
        squares = u.square().sum() + pos.square().sum() + neg.square().sum()
        return LossTerms(data, self.reg_weight * squares / 2 / len(batch))

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self._collaborative(None, training=False)
        return users, items + self._item_side(*self.item_graph())


def _sequence(owner: str, name: str, values: Sequence, check) -> tuple:
    """A list of hyper-parameter values, each checked by ``check(owner, name, value)``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"{owner}: {name} must be a list of numbers, got {values!r}")
    return tuple(check(owner, f"each {name} value", v) for v in values)


def _check_ngcf(weight_size: tuple[int, ...], mess_dropout: tuple[float, ...], embedding_size: int) -> None:
    """MMRec's NGCF averages the layers' outputs, so every layer keeps ``embedding_size`` columns, and it
    reads one dropout rate per layer."""
    if any(width != embedding_size for width in weight_size):
        raise ConfigError(
            f"lattice: with cf_model ngcf every weight_size value must equal embedding_size "
            f"({embedding_size}), got {list(weight_size)}"
        )
    if len(mess_dropout) < len(weight_size):
        raise ConfigError(
            f"lattice: cf_model ngcf needs one mess_dropout value per layer ({len(weight_size)}), "
            f"got {list(mess_dropout)}"
        )
