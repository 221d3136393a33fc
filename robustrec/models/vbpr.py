"""VBPR (He & McAuley, AAAI 2016), as in MMRec: score = [p_u ; theta_u] . [q_i ; W f_i].

MMRec's variant concatenates the text and image features into one f_i and projects it with a single
linear layer; the user embedding has twice the embedding size to match.
"""

from __future__ import annotations

import torch
from torch import nn

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.models.base import EmbeddingTable, LossTerms, Recommender, default_generator

#: MMRec's order of the modalities in f_i: cat(t_feat, v_feat).
MODALITIES = ("text", "image")


class VBPR(Recommender):
    name = "vbpr"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        reg_weight: float = 1e-4,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        super().__init__(dataset)
        if not dataset.features.modalities:
            raise ConfigError("VBPR needs item features")
        g = default_generator(generator)
        self.reg_weight = reg_weight
        self.register_features(dataset.features)
        present = [t for m in MODALITIES if (t := getattr(dataset.features, m)) is not None]
        self.register_buffer("item_features", torch.cat(present, dim=1), persistent=False)
        width = self.item_features.shape[1]
        self.user_embedding = nn.Parameter(torch.empty(self.n_users, 2 * embedding_size))
        self.item_embedding = nn.Parameter(torch.empty(self.n_items, embedding_size))
        self.item_linear = nn.utils.skip_init(nn.Linear, width, embedding_size)  # initialised below
        nn.init.xavier_uniform_(self.user_embedding, generator=g)
        nn.init.xavier_uniform_(self.item_embedding, generator=g)
        nn.init.xavier_normal_(self.item_linear.weight, generator=g)
        nn.init.zeros_(self.item_linear.bias)

    def _features(self, perturb: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``f_i`` for every item: the text and image features side by side (MMRec's order)."""
        if not perturb:
            return self.item_features
        parts = [getattr(self, f"{m}_feat") + perturb[m] if m in perturb else getattr(self, f"{m}_feat")
                 for m in MODALITIES if getattr(self, f"{m}_feat") is not None]
        return torch.cat(parts, dim=1)

    def _item_representation(self) -> torch.Tensor:
        """``[q_i ; W f_i]`` for every item."""
        return torch.cat([self.item_embedding, self.item_linear(self.item_features)], dim=-1)

    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        bpr, reg = VBPRLoss.apply(
            self.user_embedding, self.item_embedding, self.item_linear.weight, self.item_linear.bias,
            self._features(perturb), batch.users, batch.pos_items, batch.neg_items, self.reg_weight,
        )
        return LossTerms(bpr, reg)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding, self._item_representation()

    def embedding_tables(self) -> list[EmbeddingTable]:
        return [
            EmbeddingTable("user_embedding", "user", 0, self.n_users),
            EmbeddingTable("item_embedding", "item", 0, self.n_items),
        ]

    def adversarial_inputs(self) -> dict[str, torch.Tensor]:
        return {m: getattr(self, f"{m}_feat") for m in self.features.modalities}


class VBPRLoss(torch.autograd.Function):
    """VBPR's training loss with its gradients written out by hand, as its two terms:

        L_bpr = -mean_b log sigmoid(x_b),   L_reg = reg_weight * (||U_b|| + ||P_b|| + ||N_b||) / B,
        x_b = U_b . (P_b - N_b),   item representations R = [Q ; F W^T + b],

    the same values as ``bpr_loss`` and ``reg_weight * embedding_norm_loss`` on the batch's rows (a
    test checks the values and every gradient against autograd on those functions). The regulariser
    is a separate output so that AMR can count it once (its backward then receives a zero gradient
    for the term nobody used). Why by hand: an epoch is
    bound by the two feature-sized products (``F W^T`` forward, ``F^T dV`` backward), and autograd's
    generic backward of the small ops around them cost more than the products themselves; written out,
    an epoch takes about 0.65x the time (benchmarks/README.md). The gradient with respect to the
    features is computed only when they require it (AMR's perturbation), and it is that of the BPR
    term alone: the regulariser penalises the weights (its rows hold ``W f_i + b``, so it reads the
    features, but the features are data), so its gradient stops at them. AMR's perturbation then
    follows the gradient of the BPR loss, as in the paper.

    A row that occurs c times in the batch enters a norm c times, so ``||P_b||^2 = sum_i c_i ||R_i||^2``
    and the norm's gradient is ``c_i R_i / ||P_b||`` on row i: both are computed on the tables, not on
    batch-sized copies of the rows.
    """

    @staticmethod
    def forward(ctx, user_emb, item_emb, weight, bias, features, users, pos, neg, reg_weight):
        items = torch.cat([item_emb, torch.addmm(bias, features, weight.t())], dim=1)
        u, p, n = user_emb.index_select(0, users), items.index_select(0, pos), items.index_select(0, neg)
        diff = p - n
        x = torch.linalg.vecdot(u, diff)
        sq_users = torch.linalg.vector_norm(user_emb, dim=1).square()
        sq_items = torch.linalg.vector_norm(items, dim=1).square()
        norms = torch.stack([sq_users.index_select(0, users).sum(), sq_items.index_select(0, pos).sum(),
                             sq_items.index_select(0, neg).sum()]).sqrt()
        size = len(users)
        ctx.save_for_backward(features, weight, users, pos, neg, user_emb, items, u, diff, x, norms)
        ctx.reg_weight, ctx.size = reg_weight, size
        return torch.nn.functional.softplus(-x).mean(), reg_weight * norms.sum() / size

    @staticmethod
    def backward(ctx, grad_bpr, grad_reg):
        features, weight, users, pos, neg, user_emb, items, u, diff, x, norms = ctx.saved_tensors
        size, dtype = ctx.size, u.dtype
        g_x = (torch.sigmoid(-x) * (-grad_bpr / size)).unsqueeze(1)  # d/dx of softplus(-x) = -sigmoid(-x)
        # d||t||/dt = t / ||t||, and 0 where t = 0 (as autograd's norm backward)
        reg = torch.where(norms > 0, grad_reg * ctx.reg_weight / (size * norms), 0.0)
        count_pos = torch.bincount(pos, minlength=len(items)).to(dtype)
        count_neg = torch.bincount(neg, minlength=len(items)).to(dtype)
        count_users = torch.bincount(users, minlength=len(user_emb)).to(dtype)
        g_items = items * (count_pos * reg[1] + count_neg * reg[2]).unsqueeze(1)
        # (-g_x) * u rather than alpha=-1: index_add_ with an alpha is about 3x slower on CPU
        g_items.index_add_(0, pos, g_x * u).index_add_(0, neg, g_x.neg() * u)
        g_user_emb = (user_emb * (count_users * reg[0]).unsqueeze(1)).index_add_(0, users, g_x * diff)
        width = weight.shape[0]  # q_i and W f_i are both embedding_size wide
        g_visual = g_items[:, width:]
        g_features = None
        if ctx.needs_input_grad[4]:
            g_features = _bpr_feature_grad(g_x, u[:, width:], pos, neg, len(items), weight)
        g_weight = (features.t() @ g_visual).t()
        return (g_user_emb, g_items[:, :width], g_weight, g_visual.sum(0), g_features,
                None, None, None, None)


def _bpr_feature_grad(
    g_x: torch.Tensor, u_visual: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, n_items: int,
    weight: torch.Tensor,
) -> torch.Tensor:
    """d L_bpr / d F: the BPR gradient on the items' visual rows (``W f_i + b``), through ``W``."""
    g_visual = u_visual.new_zeros(n_items, weight.shape[0])
    g_visual.index_add_(0, pos, g_x * u_visual).index_add_(0, neg, g_x.neg() * u_visual)
    return g_visual @ weight
