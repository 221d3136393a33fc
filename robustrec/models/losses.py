"""Loss terms shared by the models (each lives here once)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: -mean log sigmoid(u.p - u.n)."""
    diff = (users * pos).sum(-1) - (users * neg).sum(-1)
    return -F.logsigmoid(diff).mean()


def embedding_norm_loss(*embeddings: torch.Tensor) -> torch.Tensor:
    """MMRec's ``EmbLoss``: the sum of the (unsquared) Frobenius norms divided by the batch size."""
    total = sum(torch.linalg.vector_norm(e) for e in embeddings)
    return total / embeddings[-1].shape[0]


def l2_loss(*embeddings: torch.Tensor) -> torch.Tensor:
    """MMRec's ``L2Loss``: the sum over the tensors of half their squared Frobenius norm."""
    return sum(0.5 * e.square().sum() for e in embeddings)


def cosine_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine similarity, with no gradient into ``target`` (BYOL-style, as in BM3)."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout drawing its mask from ``generator`` (F.dropout only uses the global RNG)."""
    if p <= 0.0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1.0 - p)
