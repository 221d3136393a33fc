"""A recommender whose training loss is a known quadratic in its one 2-D parameter, for checking
the diagnostics against analytic values: L(theta) = 1/2 x^T A x + b^T x with x = theta flattened."""

from __future__ import annotations

import torch

from robustrec.models.base import LossTerms, Recommender


def spd_matrix(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    """Q diag(eigenvalues) Q^T for a random orthogonal Q (float64)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


class Quadratic(Recommender):
    name = "quadratic"

    def __init__(self, dataset, hessian: torch.Tensor, linear: torch.Tensor, rows: int = 3, start=None) -> None:
        super().__init__(dataset)
        self.register_buffer("hessian", hessian)
        self.register_buffer("linear", linear)
        value = start if start is not None else torch.ones(rows, hessian.shape[0] // rows, dtype=torch.float64)
        self.theta = torch.nn.Parameter(value.clone())

    def loss_terms(self, batch, perturb=None) -> LossTerms:
        x = self.theta.reshape(-1)
        loss = 0.5 * x @ self.hessian @ x + self.linear @ x
        return LossTerms(loss, loss.new_zeros(()))

    def inference_embeddings(self):
        return self.theta, self.theta
