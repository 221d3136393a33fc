"""SelfCF (Zhou et al., ACM TORS 2023, "SelfCF: A Simple Framework for Self-supervised Collaborative
Filtering"), as MMRec's ``SELFCFED_LGN`` (SelfCF_ed, "embedding dropout", on a LightGCN encoder).

A general (ID-only) model: it reads no item features. User and item embeddings go through
``n_layers`` LightGCN layers (the mean of the layer outputs) on the symmetrically normalised user-item
graph. In training the graph is randomly thinned first, at every batch (MMRec's
``LightGCN_Encoder.sparse_dropout``): a rate ``r ~ U[0, 1)`` is drawn, each stored entry of the
(users + items) square matrix is kept with probability ``1 - r`` independently (so an edge may be
kept in one direction and dropped in the other) and kept entries are scaled by ``1 / (1 - r)``.

For the batch's (user u, positive item i) pairs, with ``P`` a linear predictor and the targets
``u' = dropout(u)``, ``i' = dropout(i)`` (rate ``dropout``, no gradient: SelfCF has no target
encoder, the "augmentation" is this dropout of the online output), the loss is

    - mean cos(P(u), i') / 2 - mean cos(P(i), u') / 2  +  reg_weight * (||u||^2 + ||i||^2) / 2

where the last term (MMRec's ``L2Loss`` on the batch's propagated rows, summed, not averaged) is the
regulariser (:class:`~robustrec.models.base.LossTerms`) and the rest the data term. Negatives are not
used (MMRec sets ``use_neg_sampling: False``; the batch's ``neg_items`` are ignored). On the full
graph the score is ``P(u) . i + u . P(i)``, a dot product of ``[P(u) ; u]`` and ``[i ; P(i)]``.

Departures from MMRec, none of which changes the maths:

- randomness comes from the batch's generator, drawn in this order: the rate, the graph mask (one
  number per stored entry, in row-major order), then the user targets' dropout mask, then the
  items'. MMRec draws the rate from numpy's global RNG and the rest from torch's;
- a dropped entry is set to zero rather than removed, so the thinned graph keeps the full graph's CSR
  structure and its transpose (for the backward pass) is a permutation of its values;
- the targets' dropout is not rescaled by ``1 / (1 - dropout)``: they only enter through cosines, which
  do not see a row's scale. The cosine loss has a hand-written backward pass (:class:`NegativeCosine`,
  ``F.cosine_similarity``'s values, norms floored at 1e-8);
- the graph dropout is per batch, as MMRec's encoder redraws it at every forward pass (so it lives in
  ``loss_terms``, not ``pre_epoch``); the rate's range (``drop_ratio = 1.0``) is MMRec's constant;
- scores are recomputed from the current weights at every ``scorer()`` call.

On ml100k-mm (seed 999, lr 1e-3) MMRec's first setting (``reg_weight = 0.1``) trains erratically, in
MMRec as here: the summed L2 term shrinks the embeddings towards zero within a few epochs, and
validation recall@20 jumps between 0.01 and 0.15 from epoch to epoch (test recall@20 at the best
epoch: MMRec .123, here .144, both below the popularity model's .164). ``reg_weight = 0.01``, chosen
on validation among 0.1, 0.01 and 0.001, reaches .182.
"""

from __future__ import annotations

import warnings

import torch

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.models.base import (
    EmbeddingTable,
    LossTerms,
    Recommender,
    default_generator,
    seeded_linear,
    xavier_table,
)
from robustrec.models.graph import layer_mean, normalized_adjacency, to_csr

#: F.cosine_similarity's floor on a row norm.
EPS = 1e-8


class SelfCF(Recommender):
    name = "selfcf"
    reads_features_at_inference = False

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        n_layers: int = 1,
        dropout: float = 0.1,
        reg_weight: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        n_layers = checks.count(self.name, "n_layers", n_layers, minimum=0)
        dropout = checks.fraction(self.name, "dropout", dropout, below_one=True)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        super().__init__(dataset)
        g = default_generator(generator)
        self.n_layers = n_layers
        self.dropout = dropout
        self.reg_weight = reg_weight

        # the full normalised graph (inference), and where each stored entry sits in its transpose
        norm_adj = to_csr(normalized_adjacency(dataset.train_matrix))
        self.register_buffer("norm_adj", norm_adj, persistent=False)
        self.register_buffer("transpose_order", transpose_order(norm_adj), persistent=False)

        # MMRec's initialisation order: the encoder's user and item tables, then the predictor
        self.user_embedding = xavier_table(self.n_users, embedding_size, g)
        self.item_embedding = xavier_table(self.n_items, embedding_size, g)
        self.predictor = seeded_linear(embedding_size, embedding_size, g)

    # ---- graphs -------------------------------------------------------------------------------
    def dropped_adjacency(self, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """MMRec's per-batch graph dropout: the thinned graph and its transpose (both CSR)."""
        values = self.norm_adj.values()
        rate = torch.rand((), generator=generator, device=values.device)
        # keep each entry where its uniform draw is >= rate (MMRec's floor(1 - rate + u)), in place
        dropped = torch.rand(values.shape, generator=generator, device=values.device).ge_(rate)
        dropped.mul_(values).mul_(1.0 / (1.0 - rate))
        return self._with_values(dropped), self._with_values(dropped.index_select(0, self.transpose_order))

    def _with_values(self, values: torch.Tensor) -> torch.Tensor:
        """The full graph's CSR structure carrying other ``values`` (an entry of 0 is a dropped edge)."""
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.norm_adj.crow_indices(), self.norm_adj.col_indices(), values,
                                           self.norm_adj.shape, check_invariants=False)

    def _propagate(self, adj: torch.Tensor, adj_t: torch.Tensor | None = None) -> torch.Tensor:
        """LightGCN: the mean of the layer outputs, users' rows first, then items'."""
        return layer_mean(adj, torch.cat([self.user_embedding, self.item_embedding]), self.n_layers, adj_t)

    # ---- protocol ---------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        """``perturb`` is ignored: SelfCF reads no item features."""
        nodes = torch.cat([batch.users, batch.pos_items + self.n_users])
        rows = self._propagate(*self.dropped_adjacency(batch.generator)).index_select(0, nodes)
        size = len(batch)
        with torch.no_grad():  # the targets, swapped: row r of the batch meets its partner's target
            target = torch.empty_like(rows)
            target[size:].uniform_(generator=batch.generator)  # the users' dropout mask is drawn first
            target[:size].uniform_(generator=batch.generator)
            target.ge_(self.dropout).mul_(torch.cat([rows[size:], rows[:size]]))
        # MMRec's loss_ui + loss_iu = -mean cos(P(u), i') / 2 - mean cos(P(i), u') / 2, a mean over 2B rows.
        # F.dropout's 1 / (1 - dropout) scaling is left out of the targets: a cosine does not see it.
        data = NegativeCosine.apply(self.predictor(rows), target)
        regularizer = self.reg_weight * 0.5 * (rows * rows).sum()  # MMRec's L2Loss: half the sum of squares
        return LossTerms(data, regularizer)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self._propagate(self.norm_adj).split([self.n_users, self.n_items])
        return torch.cat([self.predictor(users), users], 1), torch.cat([items, self.predictor(items)], 1)

    def embedding_tables(self) -> list[EmbeddingTable]:
        return [
            EmbeddingTable("user_embedding", "user", 0, self.n_users),
            EmbeddingTable("item_embedding", "item", 0, self.n_items),
        ]


def transpose_order(adj: torch.Tensor) -> torch.Tensor:
    """For a CSR matrix with a symmetric pattern: ``order[k]`` is the stored entry at the transposed
    position of entry ``k``, so ``values[order]`` are the values of the transpose, in the same layout."""
    crow, col = adj.crow_indices().long(), adj.col_indices().long()
    n = adj.shape[0]
    row = torch.repeat_interleave(torch.arange(n, device=col.device), crow.diff())
    keys = row * n + col  # sorted: CSR is row-major with sorted columns
    return torch.searchsorted(keys, col * n + row)


class NegativeCosine(torch.autograd.Function):
    """``-mean_r cos(x_r, t_r)`` with no gradient into ``t``: ``-F.cosine_similarity(x, t).mean()``
    (norms floored at ``EPS``), its backward written out. Why by hand: autograd's backward of the
    norms, quotient and mean takes about four times as long, a tenth of SelfCF's training step.

    d cos_r / d x_r = (t_r / |t_r| - cos_r x_r / |x_r|) / |x_r|, the second term only where
    ``|x_r| > EPS`` (below, the floored norm is a constant; torch's gradient differs for rows with
    0 < |x_r| < EPS, which propagated embeddings do not have).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_norm = torch.linalg.vector_norm(x, dim=-1).clamp_min(EPS)
        t_norm = torch.linalg.vector_norm(t, dim=-1).clamp_min(EPS)
        cos = torch.linalg.vecdot(x, t) / (x_norm * t_norm)
        ctx.save_for_backward(x, t, x_norm, t_norm, cos)
        return -cos.mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, t, x_norm, t_norm, cos = ctx.saved_tensors
        radial = torch.where(x_norm > EPS, cos / x_norm, 0.0)  # (t / |t| - cos x / |x|) / |x|
        g_x = torch.addcmul(t / t_norm.unsqueeze(1), x, radial.unsqueeze(1), value=-1.0)
        return g_x.mul_((-grad / (len(x) * x_norm)).unsqueeze(1)), None
