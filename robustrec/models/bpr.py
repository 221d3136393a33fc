"""BPR-MF (Rendle et al., UAI 2009, "BPR: Bayesian Personalized Ranking from Implicit Feedback"), as
in MMRec's ``bpr.py``: matrix factorisation trained with the pairwise BPR loss.

The score is ``p_u . q_i`` of a user and an item ID embedding (64 columns, Xavier-normal, users drawn
first). The loss of a batch of (user, positive, negative) triples is

    -mean log sigmoid(u.p - u.n)  +  reg_weight * (||U_b|| + ||P_b|| + ||N_b||) / B

where U_b, P_b, N_b are the batch's rows of the tables (a row appears as often as it occurs in the
batch), ||.|| is the unsquared Frobenius norm and B the batch size: MMRec's ``EmbLoss``
(``losses.embedding_norm_loss``), which is also the regulariser of :class:`~robustrec.models.base.LossTerms`.
MMRec's first setting, ``reg_weight = 2.0``, does not learn: the norms are not squared, so the
penalty's gradient on a row, ``reg_weight * row / (||U_b|| B)``, keeps its size as the tables shrink
while the BPR gradient shrinks with them; at 2.0 the embeddings collapse and the loss stays at log 2.
MMRec's own run does the same (ml100k, seed 999: test recall@20 .011, popularity's is .1635). The
next value of MMRec's grid learns: ``--param reg_weight=1.0`` (ml100k, seed 999: test recall@20 .356,
and the best validation recall of 1.0, 0.1 and 0.01).

Departures from MMRec's code, none of which changes the maths:

- MMRec's ``BPRLoss`` is ``-log(1e-10 + sigmoid(.))``; here ``-log sigmoid(.)``, as ``losses.bpr_loss``.
  The two differ only where sigmoid(.) is near 1e-10, i.e. a score gap below about -23, where MMRec's
  gradient vanishes and ours does not;
- the loss and its gradients are written out by hand (:class:`BPRMFLoss`) for speed;
- its ``forward`` applies ``F.dropout(..., 0.0)`` to both tables, the identity; it is left out;
- the initial values come from the injected generator.
"""

from __future__ import annotations

import torch
from torch import nn

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.models.base import GeneralRecommender, LossTerms, default_generator


class BPR(GeneralRecommender):
    name = "bpr"

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        reg_weight: float = 2.0,
        generator: torch.Generator | None = None,
    ) -> None:
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        super().__init__(dataset)
        self.reg_weight = reg_weight
        # MMRec: self.apply(xavier_normal_initialization) on the two nn.Embedding tables, users first
        self.init_id_embeddings(embedding_size, default_generator(generator), nn.init.xavier_normal_)

    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        data, regularizer = BPRMFLoss.apply(
            self.user_embedding, self.item_embedding, batch.users, batch.pos_items, batch.neg_items,
            self.reg_weight,
        )
        return LossTerms(data, regularizer)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding, self.item_embedding


class BPRMFLoss(torch.autograd.Function):
    """BPR-MF's two loss terms from the two tables and the batch's indices, with the gradients written
    out by hand:

        L_bpr = -mean_b log sigmoid(u_b . (p_b - n_b)),   L_reg = reg_weight * (||U_b|| + ||P_b|| + ||N_b||) / B,

    the values of ``losses.bpr_loss`` and ``reg_weight * losses.embedding_norm_loss`` on the batch's
    rows (a test checks values and gradients against autograd on MMRec's own formulas). Why by hand:
    the step is a few passes over batch-sized matrices, and autograd's generic backward (a zero table
    per gathered copy, separate passes for each product and norm) took about 1.5x as long; fused, each
    table receives one ``index_add`` of its rows' total gradient. An epoch went from 0.52x to 0.20x of
    MMRec's (``benchmarks/mmrec.py times``, one thread, ml100k). The two terms are separate outputs,
    as :class:`~robustrec.models.base.LossTerms` keeps them (an unused one's gradient arrives as zero).
    """

    @staticmethod
    def forward(ctx, user_table, item_table, users, pos, neg, reg_weight):
        u = user_table.index_select(0, users)
        p, n = item_table.index_select(0, pos), item_table.index_select(0, neg)
        diff = p - n
        x = torch.linalg.vecdot(u, diff)
        norms = torch.stack([torch.linalg.vector_norm(t) for t in (u, p, n)])
        ctx.save_for_backward(u, p, n, diff, x, norms, users, pos, neg)
        ctx.reg_weight, ctx.n_users, ctx.n_items = reg_weight, len(user_table), len(item_table)
        size = len(users)
        # softplus(-x) = -log sigmoid(x)
        return torch.nn.functional.softplus(-x).mean(), reg_weight * norms.sum() / size

    @staticmethod
    def backward(ctx, grad_bpr, grad_reg):
        u, p, n, diff, x, norms, users, pos, neg = ctx.saved_tensors
        size = len(users)
        g_x = (torch.sigmoid(-x) * (-grad_bpr / size)).unsqueeze(1)  # d softplus(-x) / dx = -sigmoid(-x)
        # d||t||/dt = t / ||t||, and 0 where t = 0 (as autograd's norm backward)
        g_norm = torch.where(norms > 0, grad_reg * ctx.reg_weight / (size * norms), 0.0)
        g_user_rows = torch.addcmul(g_norm[0] * u, g_x, diff)
        g_xu = g_x * u
        g_users = u.new_zeros(ctx.n_users, u.shape[1]).index_add_(0, users, g_user_rows)
        g_items = u.new_zeros(ctx.n_items, u.shape[1])
        g_items.index_add_(0, pos, torch.addcmul(g_xu, g_norm[1], p))
        g_items.index_add_(0, neg, torch.addcmul(g_xu.neg(), g_norm[2], n))
        return g_users, g_items, None, None, None, None
