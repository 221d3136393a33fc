"""GRCN (Wei et al., ACM MM 2020): a graph whose edges are re-weighted by multimodal affinity.

For each modality m, item contents ``c_i = normalize(leaky_relu(MLP_m f_i))`` and learnt user
preferences ``p_u = normalize(P_m[u])`` form the node vectors ``x = [p ; c]``. On the interaction graph
(both directions, no self loops) an attention layer gives each edge j -> i the score
``alpha_m(j, i) = softmax over i's neighbours j of x_i . x_j`` and each node the content representation
``x_i + sum_j alpha_m(j, i) x_j``. The refined graph weighs edge j -> i by

    w(j, i) = relu(max_m alpha_m(j, i) * conf[j, m])          (conf: learnt node-by-modality confidence)

and propagates the normalised ID embedding twice over it: ``id = e + W e + W W e``. The representation
is ``[id ; content_image ; content_text]`` and the score a dot product.

The maths follows MMRec's ``grcn.py`` (weight mode "confid", fusion "concat", pruning on, no activation,
normalisation on, "add" aggregation, edge dropout 0); its regulariser is
``reg_weight * (mean(e_u^2) + mean(e_i^2) + mean(P_image^2) + sum_m mean(P_m[u]^2))`` (the image
preference table counted once whole and once on the batch's users).

The routing loop. GRCN's paper refines each user's preference by ``n_layers`` routing iterations over
the items they interacted with (``p_u <- normalize(p_u + sum_i softmax_i(p_u . c_i) c_i)``). MMRec
runs those iterations on the user -> item edges (torch_geometric sends messages from ``edge_index[0]``
to ``edge_index[1]``), so the messages reach items, whose rows are then discarded: the loop leaves
every preference unchanged (the authors' release has the same routing code). ``route_to_users=False``
(default) reproduces that, skipping the discarded work, so ``n_layers`` has no effect; with
``route_to_users=True`` the iterations send item contents to users, as the paper describes.

Departures from MMRec: scores are recomputed from the current weights and features at every
``scorer()`` call (MMRec uses the representation cached by the last training forward); no ``.cuda()``;
every initial value comes from the injected generator; attention and weighted propagation are sparse
matrix products instead of torch_geometric's gather/scatter; duplicate training pairs count once;
BPR uses ``logsigmoid`` (MMRec's ``log(sigmoid(.))`` can underflow).
"""

from __future__ import annotations

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
from robustrec.models.graph import EdgeGraph, user_item_edges
from robustrec.models.losses import bpr_loss


class _Content(nn.Module):
    """One modality: user preferences, the item-feature MLP and the attention over the graph."""

    def __init__(self, n_users: int, dim_feat: int, dim_latent: int, generator: torch.Generator) -> None:
        super().__init__()
        self.preference = nn.Parameter(
            nn.init.xavier_normal_(torch.empty(n_users, dim_latent), generator=generator)
        )
        self.mlp = seeded_linear(dim_feat, dim_latent, generator, nn.init.xavier_normal_)

    def forward(
        self, features: torch.Tensor, graph: EdgeGraph, routing: EdgeGraph | None, n_routing: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The content representation of every node and the attention weight of every graph edge."""
        content = F.normalize(F.leaky_relu(self.mlp(features)), dim=1)
        preference = F.normalize(self.preference, dim=1)
        if routing is not None:
            for _ in range(n_routing):
                alpha = routing.softmax(routing.edge_dot(preference, content))
                preference = F.normalize(preference + routing.propagate(content, alpha), dim=1)
        x = torch.cat([preference, content])
        alpha = graph.softmax(graph.edge_dot(x, x))
        return x + graph.propagate(x, alpha), alpha


class GRCN(BranchedGraphModel):
    name = "grcn"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        latent_embedding: int = 64,
        n_layers: int = 3,
        reg_weight: float = 1e-3,
        route_to_users: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        latent_embedding = checks.count(self.name, "latent_embedding", latent_embedding)
        n_layers = checks.count(self.name, "n_layers", n_layers, minimum=0)  # routing iterations
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        route_to_users = checks.flag(self.name, "route_to_users", route_to_users)
        super().__init__(dataset)
        if not dataset.features.modalities:
            raise ConfigError("GRCN needs item features")
        g = default_generator(generator)
        self.reg_weight = reg_weight
        self.n_layers = n_layers
        self.register_features(dataset.features)
        n_nodes = self.n_users + self.n_items
        users, items = user_item_edges(dataset.train_matrix)
        self.graph = EdgeGraph(torch.cat([users, items]), torch.cat([items, users]), n_nodes)
        # Routing: item contents (ids 0..n_items-1) -> users.
        self.routing = (
            EdgeGraph(items - self.n_users, users, self.n_users, self.n_items) if route_to_users else None
        )

        self.id_embedding = nn.Parameter(
            nn.init.xavier_normal_(torch.empty(n_nodes, embedding_size), generator=g)
        )
        self.branches = nn.ModuleDict(
            {
                m: _Content(self.n_users, feat.shape[1], latent_embedding, g)
                for m, feat in dataset.features.items()
            }
        )
        self.confidence = nn.Parameter(
            nn.init.xavier_normal_(torch.empty(n_nodes, len(self.branches)), generator=g)
        )

    def representation(self, perturb: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Users then items: ``[id ; content per modality]``, computed from the current features."""
        contents, alphas = [], []
        for modality, branch in self.branches.items():
            feat = getattr(self, f"{modality}_feat")
            if perturb and modality in perturb:
                feat = feat + perturb[modality]
            content, alpha = branch(feat, self.graph, self.routing, self.n_layers)
            contents.append(content)
            alphas.append(alpha)
        # The confidence of an edge's source node, per modality; the strongest modality decides.
        scores = torch.stack(alphas, dim=1) * self.confidence[self.graph.src]
        weight = torch.relu(scores.max(dim=1).values)
        x0 = F.normalize(self.id_embedding, dim=1)
        x1 = self.graph.propagate(x0, weight)
        x2 = self.graph.propagate(x1, weight)
        return torch.cat([x0 + x1 + x2, *contents], dim=1)

    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        rep = self.representation(perturb)
        pos, neg = batch.pos_items + self.n_users, batch.neg_items + self.n_users
        bpr = bpr_loss(rep[batch.users], rep[pos], rep[neg])
        ids = self.id_embedding
        # MMRec: means over the [2B, d] stacks of (user, pos), (user, neg) rows.
        reg = ids[batch.users].pow(2).mean() + (ids[pos].pow(2).mean() + ids[neg].pow(2).mean()) / 2
        if "image" in self.branches:
            reg = reg + self.branches["image"].preference.pow(2).mean()
        for branch in self.branches.values():
            reg = reg + branch.preference[batch.users].pow(2).mean()
        return LossTerms(bpr, self.reg_weight * reg)
