"""MMGCN (Wei et al., ACM MM 2019): one graph convolution network per modality over the user-item graph.

Each modality m has its own branch. Its input is ``x = normalize([P_m ; W_m f])``: learnt user
preferences P_m stacked on the item features f (projected by an MLP to ``*_latent`` dimensions, or used
as they are when that is ``None``). Each of the ``n_layers`` layers then computes, with A the mean over a
node's neighbours in the interaction graph (users and items both ways, no self loops) and e the shared
user+item ID embedding,

    h     = leaky_relu(A x W)                         (graph convolution, no bias)
    x_hat = leaky_relu(Linear(x)) + e                 (the node's own view, plus its ID embedding)
    x     = leaky_relu(Linear_g([h ; x_hat]))         (the "concat" combination)

and the representation is the mean of the branches' outputs; the score is a dot product.

The maths follows MMRec's ``mmgcn.py`` as it actually runs. Reading it, note that:

- its ``concate = 'False'`` is a non-empty string, hence true: the concatenation combination runs, and so
  it does here;
- its GCN always applies three layers: ``n_layers`` from ``MMGCN.yaml`` (2) is never read. Our default
  ``n_layers=3`` is what MMRec runs; ``n_layers`` really sets the depth here;
- the image branch projects to 256 dimensions (``image_latent``), the text branch does not
  (``text_latent=None``);
- the regulariser is ``reg_weight * (mean(e_u^2) + mean(e_i^2) + mean(P_image^2))`` on the raw ID
  rows of the batch and the whole image preference table (text preferences are not regularised).

Departures from MMRec, on purpose:

- MMRec creates the ID embedding and both preference tables as plain tensors, never registered as
  parameters: its optimiser never updates them (they keep their random initial values) and checkpoints
  lack them. Here they are ``nn.Parameter``s and train, so our numbers differ from MMRec's.
- Scores are recomputed from the model's current weights and features at every ``scorer()`` call; MMRec
  scores with the representation cached by the last training forward, so swapping in other features
  changed nothing until the next training step.
- Every initial value comes from the injected generator; message passing is a sparse matrix product
  (CSR) instead of torch_geometric's gather/scatter, and duplicate training pairs count once. The
  convolution multiplies by W on the smaller side of the bipartite graph and users and items are kept
  apart, so rows without a gradient cost no backward pass (same maths, fewer operations).
- BPR uses ``logsigmoid`` (MMRec's ``log(sigmoid(.))`` is the same maths but can underflow to -inf).
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
    BranchedGraphModel,
    LossTerms,
    default_generator,
    seeded_linear,
)
from robustrec.models.graph import sparse, spmm, to_csr, user_item_edges
from robustrec.models.losses import bpr_loss


class _Bipartite(nn.Module):
    """Mean aggregation over the user-item graph, both ways, as two rectangular CSR matrices.

    ``mean_conv(users, items, W)`` is ``A x W`` for ``x = [users ; items]``, A the mean over a node's
    neighbours (users <-> items, no self loops), returned as its user and item rows. As A only links
    users to items, ``(A x W)_users = A_ui items W`` and ``(A x W)_items = A_iu users W``; each is
    computed as "aggregate then multiply" or "multiply then aggregate", whichever multiplies fewer rows
    by W, so W meets ``2 min(n_users, n_items)`` rows instead of ``n_users + n_items``.
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> None:
        """``users`` and ``items`` (ids from 0) are the distinct interactions."""
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        user_degree = torch.bincount(users, minlength=n_users).float()
        item_degree = torch.bincount(items, minlength=n_items).float()
        ui = sparse(torch.stack([users, items]), 1.0 / user_degree[users], (n_users, n_items))
        iu = sparse(torch.stack([items, users]), 1.0 / item_degree[items], (n_items, n_users))
        for name, matrix in (("ui", ui), ("iu", iu)):
            self.register_buffer(name, to_csr(matrix), persistent=False)
            self.register_buffer(f"{name}_t", to_csr(matrix.t()), persistent=False)

    def mean_conv(
        self, users: torch.Tensor, items: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n_users <= self.n_items:
            return spmm(self.ui, items, self.ui_t) @ weight, spmm(self.iu, users @ weight, self.iu_t)
        return spmm(self.ui, items @ weight, self.ui_t), spmm(self.iu, users, self.iu_t) @ weight


class _Layer(nn.Module):
    """One MMGCN layer: graph convolution, the node's own projection plus its ID, and their combination."""

    def __init__(self, width: int, dim_id: int, generator: torch.Generator, first: bool) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(width)  # torch_geometric's inits.uniform(in_channels, weight)
        self.conv = nn.Parameter(torch.empty(width, width).uniform_(-bound, bound, generator=generator))
        self.linear = seeded_linear(width, dim_id, generator, nn.init.xavier_normal_)
        # MMRec initialises only the first combination layer with xavier_normal; the others keep
        # nn.Linear's default.
        self.combine = seeded_linear(
            width + dim_id, dim_id, generator, nn.init.xavier_normal_ if first else None
        )

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, ids: torch.Tensor, graph: _Bipartite
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Users and items are kept apart so that rows without a gradient (the text branch's item
        # features in the first layer) cost no backward pass.
        h_users, h_items = graph.mean_conv(users, items, self.conv)
        n_users = users.shape[0]
        return (
            self._update(h_users, users, ids[:n_users]),
            self._update(h_items, items, ids[n_users:]),
        )

    def _update(self, h: torch.Tensor, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x_hat = F.leaky_relu(self.linear(x)) + ids
        return F.leaky_relu(self.combine(torch.cat([F.leaky_relu(h), x_hat], dim=1)))


class _Branch(nn.Module):
    """The graph network of one modality."""

    def __init__(
        self,
        n_users: int,
        dim_feat: int,
        dim_id: int,
        n_layers: int,
        latent: int | None,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        width = latent if latent else dim_feat
        self.preference = nn.Parameter(
            nn.init.xavier_normal_(torch.empty(n_users, width), generator=generator)
        )
        self.mlp = seeded_linear(dim_feat, latent, generator) if latent else None
        self.layers = nn.ModuleList(
            _Layer(width if i == 0 else dim_id, dim_id, generator, first=i == 0) for i in range(n_layers)
        )

    def forward(self, features: torch.Tensor, ids: torch.Tensor, graph: _Bipartite) -> torch.Tensor:
        """Users then items. (MMRec normalises the stacked rows; row-wise it is the same.)"""
        users = F.normalize(self.preference, dim=1)
        items = F.normalize(self.mlp(features) if self.mlp is not None else features, dim=1)
        for layer in self.layers:
            users, items = layer(users, items, ids, graph)
        return torch.cat([users, items])


class MMGCN(BranchedGraphModel):
    name = "mmgcn"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        n_layers: int = 3,
        reg_weight: float = 1e-5,
        image_latent: int | None = 256,
        text_latent: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        n_layers = checks.count(self.name, "n_layers", n_layers)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        image_latent = checks.optional_count(self.name, "image_latent", image_latent)
        text_latent = checks.optional_count(self.name, "text_latent", text_latent)
        super().__init__(dataset)
        if not dataset.features.modalities:
            raise ConfigError("MMGCN needs item features")
        g = default_generator(generator)
        self.reg_weight = reg_weight
        self.register_features(dataset.features)
        n_nodes = self.n_users + self.n_items
        users, items = user_item_edges(dataset.train_matrix)
        # Messages flow both ways along every interaction (MMRec adds the reversed edges); no self loops.
        self.graph = _Bipartite(users, items - self.n_users, self.n_users, self.n_items)

        self.id_embedding = nn.Parameter(
            nn.init.xavier_normal_(torch.empty(n_nodes, embedding_size), generator=g)
        )
        latent = {"image": image_latent, "text": text_latent}
        self.branches = nn.ModuleDict(
            {
                m: _Branch(self.n_users, feat.shape[1], embedding_size, n_layers, latent[m], g)
                for m, feat in dataset.features.items()
            }
        )

    def representation(self, perturb: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Users then items: the mean of the branches' outputs, computed from the current features."""
        total = None
        for modality, branch in self.branches.items():
            feat = getattr(self, f"{modality}_feat")
            if perturb and modality in perturb:
                feat = feat + perturb[modality]
            out = branch(feat, self.id_embedding, self.graph)
            total = out if total is None else total + out
        return total / len(self.branches)

    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        rep = self.representation(perturb)
        pos, neg = batch.pos_items + self.n_users, batch.neg_items + self.n_users
        bpr = bpr_loss(rep[batch.users], rep[pos], rep[neg])
        ids = self.id_embedding
        # MMRec: mean over the [2B, d] stacks of (user, pos), (user, neg) rows.
        reg = ids[batch.users].pow(2).mean() + (ids[pos].pow(2).mean() + ids[neg].pow(2).mean()) / 2
        if "image" in self.branches:
            reg = reg + self.branches["image"].preference.pow(2).mean()
        return LossTerms(bpr, self.reg_weight * reg)
