"""MGCN (Yu et al., ACM MM 2023, "Multi-View Graph Convolutional Network for Multimedia Recommendation"),
as in MMRec.

Three views of each user and item, computed on every forward pass from the current weights:

- user-item view (``content``): LightGCN over D^-1/2 A D^-1/2 (no self loops), the mean of
  ``x, Ax, ..., A^n_ui_layers x`` with ``x = [user_embedding ; item_embedding]``;
- one item-item view per modality m (image and text, both required): the behaviour-guided purifier
  ``item_embedding * sigmoid(gate_m(trs_m(table_m)))``, where ``table_m`` is the learnable feature
  table and ``trs_m`` its projection. It is propagated ``n_layers`` times over the modality's frozen
  kNN graph of the raw features. MMRec's ``build_knn_normalized_graph(..., norm_type='sym')`` keeps
  the cosine similarities as edge weights and normalises by the row sums: the same graph as
  LATTICE's (:func:`robustrec.models.lattice.weighted_knn_graph`), not FREEDOM's 0/1 one. Users get
  ``R @ items``, with R the user-item block of the normalised adjacency above;
- the behaviour-aware fuser: attention ``softmax([q(image), q(text)])`` with
  ``q = Linear(1, no bias) o tanh o Linear`` gives the common part ``common``. The specific parts are
  ``(view_m - common) * sigmoid(prefer_m(content))``, and ``side = (specific_image + specific_text +
  common) / 3``.

Representations are ``content + side``, and scores are dot products. The loss is

    BPR(u, p, n) + reg_weight * (|u|^2 + |p|^2 + |n|^2) / 2 / batch size
    + cl_loss * [InfoNCE(side[p], content[p]) + InfoNCE(side[u], content[u])]

InfoNCE has temperature 0.2 and uses the other rows of the batch as negatives (repeats included). The
regulariser is the second term, everything else is data (see ``LossTerms``). ``lambda_coeff`` is in
MGCN.yaml but MMRec's code never reads it. It is kept (unused, checked to be in [0, 1]) so configurations
carry over, as FREEDOM keeps it. So is MMRec's unused ``tau = 0.5``, which is not a parameter here.

Departures from MMRec's code, none of which changes the loss or the scores (checked against a
literal full-table restatement in the tests):

- The fuser, the BPR rows and both InfoNCE terms run once per distinct user and item of the batch.
  MMRec fuses all users and items and takes a ``batch x batch`` InfoNCE. A mean over the batch's
  rows then becomes a count-weighted sum over its distinct rows, and so do the InfoNCE negatives
  (``logsumexp`` of ``logit + log count``). Written as a log-sum-exp, InfoNCE's
  ``-log(exp(pos) / sum exp)`` cannot overflow.
- The regulariser reads the item-item views through a copy of the feature projections that passes
  its gradient to the projection's weights but not to the feature tables (:func:`split_projection`).
  The copy goes through the views and the fuser beside the data term's (``[copies, rows, d]``,
  one sparse product for both). The regulariser penalises weights, so its gradient stops at the
  features, and AMR's perturbation follows the data term. MMRec's regulariser also sends a little gradient (times ``reg_weight``) into
  the tables. Every other parameter gets exactly MMRec's gradient. The regulariser is divided by the
  batch's length, where MMRec divides by the configured batch size (2048). That differs only on an
  epoch's last, shorter batch.
- Graphs are CSR matrices built from the given features, never cached on disk (MMRec caches them by
  ``knn_k`` alone). ``knn_k`` is capped at the number of items, and a zero feature row has similarity 0
  (MMRec: NaN). The user-item graph is ``graph.normalized_adjacency``, which adds 1e-7 to each degree
  (a relative change below 1e-7 of the weights; MMRec adds nothing).
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
from robustrec.models.base import FeatureTableModel, LossTerms, default_generator, seeded_linear
from robustrec.models.graph import layer_mean, normalized_adjacency, sparse, spmm, to_csr
from robustrec.models.lattice import weighted_knn_graph
from robustrec.models.losses import bpr_loss

#: MMRec's InfoNCE temperature (hard-coded in its ``calculate_loss``).
CL_TEMPERATURE = 0.2


class MGCN(FeatureTableModel):
    name = "mgcn"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        n_ui_layers: int = 2,
        n_layers: int = 1,
        lambda_coeff: float = 0.9,
        reg_weight: float = 1e-4,
        knn_k: int = 10,
        cl_loss: float = 0.001,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        n_ui_layers = checks.count(self.name, "n_ui_layers", n_ui_layers, minimum=0)
        n_layers = checks.count(self.name, "n_layers", n_layers, minimum=0)
        lambda_coeff = checks.fraction(self.name, "lambda_coeff", lambda_coeff)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        knn_k = checks.count(self.name, "knn_k", knn_k)
        cl_loss = checks.non_negative(self.name, "cl_loss", cl_loss)
        super().__init__(dataset)
        if dataset.features.image is None or dataset.features.text is None:
            raise ConfigError("MGCN needs both image and text features (MMRec's MGCN reads both)")
        g = default_generator(generator)
        self.n_ui_layers = n_ui_layers
        self.n_layers = n_layers
        self.lambda_coeff = lambda_coeff  # unused, as in MMRec
        self.reg_weight = reg_weight
        self.cl_loss = cl_loss

        # the user-item graph (symmetric: its own transpose) and its user x item block R
        adj = normalized_adjacency(dataset.train_matrix)
        self.register_buffer("norm_adj", to_csr(adj), persistent=False)
        block = _user_item_block(adj, self.n_users, self.n_items)
        self.register_buffer("R", to_csr(block), persistent=False)
        self.register_buffer("R_t", to_csr(block.t()), persistent=False)
        # the frozen kNN graphs of the raw features (not symmetric); rebuilt by with_features
        for modality, feat in dataset.features.items():
            index, values = weighted_knn_graph(feat.float(), knn_k)
            graph = sparse(index, values, (self.n_items, self.n_items))
            self.register_buffer(f"{modality}_original_adj", to_csr(graph), persistent=False)
            self.register_buffer(f"{modality}_original_adj_t", to_csr(graph.t()), persistent=False)

        # MMRec's initialisation order: user, item, the projections, query, then the four gates
        self.init_id_embeddings(embedding_size, g)
        self.init_feature_tables(dataset, g, project_to=embedding_size)
        d = embedding_size
        self.query_common = nn.Sequential(seeded_linear(d, d, g), nn.Tanh(), _linear_without_bias(d, 1, g))
        self.gate_v = nn.Sequential(seeded_linear(d, d, g), nn.Sigmoid())
        self.gate_t = nn.Sequential(seeded_linear(d, d, g), nn.Sigmoid())
        self.gate_image_prefer = nn.Sequential(seeded_linear(d, d, g), nn.Sigmoid())
        self.gate_text_prefer = nn.Sequential(seeded_linear(d, d, g), nn.Sigmoid())

    # ---- views ---------------------------------------------------------------------------------
    def content_view(self) -> torch.Tensor:
        """The user-item view: LightGCN on the interaction graph, users then items."""
        ego = torch.cat([self.user_embedding, self.item_embedding])
        return layer_mean(self.norm_adj, ego, self.n_ui_layers)

    def modality_view(self, modality: str, projected: torch.Tensor) -> torch.Tensor:
        """The item-item view of one modality, users then items, from its projected features.

        ``projected`` is ``[copies, n_items, d]``: the loss passes the projection twice (the second copy
        for the regulariser, see :func:`split_projection`), side by side through one sparse product.
        Returns ``[copies, n_users + n_items, d]``."""
        gate = self.gate_v if modality == "image" else self.gate_t
        items = self.item_embedding * gate(projected)
        copies, n_items, d = items.shape
        items = items.transpose(0, 1).reshape(n_items, copies * d)
        adj, adj_t = getattr(self, f"{modality}_original_adj"), getattr(self, f"{modality}_original_adj_t")
        for _ in range(self.n_layers):
            items = spmm(adj, items, adj_t)
        nodes = torch.cat([spmm(self.R, items, self.R_t), items])
        return nodes.view(-1, copies, d).transpose(0, 1)

    def fuse(self, image: torch.Tensor, text: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """The behaviour-aware fuser: ``side`` from rows of the views (any leading dimensions)."""
        attention = torch.softmax(self.query_common(torch.stack([image, text])), dim=0)  # over the modalities
        common = attention[0] * image + attention[1] * text
        specific_image = self.gate_image_prefer(content) * (image - common)
        specific_text = self.gate_text_prefer(content) * (text - common)
        return (specific_image + specific_text + common) / 3

    # ---- protocol -------------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        users, user_index, user_count = torch.unique(batch.users, return_inverse=True, return_counts=True)
        items, item_index = torch.unique(torch.cat([batch.pos_items, batch.neg_items]), return_inverse=True)
        pos_index, neg_index = item_index.split(len(batch))
        nodes = torch.cat([users, items + self.n_users])  # the distinct rows the loss reads
        n_users = users.shape[0]

        # copy 0 feeds the data term; with a regulariser, copy 1 (same values) feeds it
        with_reg = self.reg_weight > 0.0
        content = self.content_view().index_select(0, nodes)
        image, text = (
            self.modality_view(m, self._projections(m, perturb, with_reg)).index_select(1, nodes)
            for m in self.modalities
        )
        side = self.fuse(image, text, content)
        final = content + side

        def bpr_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return rows[:n_users][user_index], rows[n_users:][pos_index], rows[n_users:][neg_index]

        data = bpr_loss(*bpr_rows(final[0]))
        if self.cl_loss > 0.0:
            positives, pos_count = torch.unique(batch.pos_items, return_counts=True)
            pos_rows = n_users + torch.searchsorted(items, positives)
            contrast = info_nce(side[0, pos_rows], content[pos_rows], pos_count, CL_TEMPERATURE) + info_nce(
                side[0, :n_users], content[:n_users], user_count, CL_TEMPERATURE
            )
            data = data + self.cl_loss * contrast
        if not with_reg:
            return LossTerms(data, data.new_zeros(()))
        squares = sum(rows.square().sum() for rows in bpr_rows(final[1]))
        return LossTerms(data, self.reg_weight * squares / 2 / len(batch))

    def _projections(self, modality: str, perturb: dict[str, torch.Tensor] | None, with_reg: bool) -> torch.Tensor:
        """The projected table ``[1, n_items, d]``, or ``[2, n_items, d]`` with the regulariser's copy,
        whose gradient stops at the table."""
        if not with_reg:
            return self.projected_features(modality, perturb).unsqueeze(0)
        return torch.stack(split_projection(self.feature_table(modality, perturb), getattr(self, f"{modality}_trs")))

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        content = self.content_view()
        image, text = (self.modality_view(m, self.projected_features(m).unsqueeze(0))[0] for m in self.modalities)
        final = content + self.fuse(image, text, content)
        return final[: self.n_users], final[self.n_users :]


def info_nce(view1: torch.Tensor, view2: torch.Tensor, counts: torch.Tensor, temperature: float) -> torch.Tensor:
    """MMRec's InfoNCE over a batch given by its distinct rows and their counts.

    For the batch's rows i (with repeats), ``-log(exp(s_ii / t) / sum_j exp(s_ij / t))`` with s the
    cosine similarity and j over all the batch's rows, averaged over i. Here row a stands for
    ``counts[a]`` equal rows, so the sum over j weighs each distinct row by its count (``+ log count``
    inside the log-sum-exp), and so does the mean. The log-sum-exp is a cross entropy (one fused,
    stable kernel), which subtracts ``logit_ii + log count_i``: the last part is added back.
    """
    weights = counts.to(view1.dtype)
    log_weights = weights.log()
    logits = torch.addmm(log_weights, F.normalize(view1, dim=1) / temperature, F.normalize(view2, dim=1).T)
    per_row = F.cross_entropy(logits, torch.arange(len(weights), device=logits.device), reduction="none")
    return ((weights * per_row).sum() + (weights * log_weights).sum()) / weights.sum()


def split_projection(table: torch.Tensor, layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer(table)`` twice, computed once: the gradient of the first output reaches ``table`` and
    the layer, the gradient of the second only the layer's weight and bias (a regulariser's path)."""
    return _SplitProjection.apply(table, layer.weight, layer.bias)


class _SplitProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        ctx.save_for_backward(table, weight)
        ctx.set_materialize_grads(False)  # an output without a gradient comes back as None
        out = F.linear(table, weight, bias)
        return out, out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, grad_weights_only: torch.Tensor | None):
        table, weight = ctx.saved_tensors
        grad_table = grad @ weight if grad is not None and ctx.needs_input_grad[0] else None
        present = [g for g in (grad, grad_weights_only) if g is not None]
        total = present[0] if len(present) == 1 else present[0] + present[1]
        return grad_table, total.T @ table, total.sum(0)


def _linear_without_bias(in_features: int, out_features: int, generator: torch.Generator) -> nn.Linear:
    """``nn.Linear(..., bias=False)`` with PyTorch's default weight initialisation, drawn from ``generator``."""
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features, bias=False)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    return layer


def _user_item_block(adj: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """The ``n_users x n_items`` block of a (users + items) square sparse matrix (MMRec's ``R``)."""
    adj = adj.coalesce()
    rows, cols = adj.indices()
    keep = (rows < n_users) & (cols >= n_users)
    index = torch.stack([rows[keep], cols[keep] - n_users])
    return sparse(index, adj.values()[keep], (n_users, n_items))
