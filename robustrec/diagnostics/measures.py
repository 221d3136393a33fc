"""Curvature and sharpness of a :class:`~robustrec.diagnostics.objective.TrainingLoss` at its theta.

- :func:`top_eigenvalues`: Lanczos on Hessian-vector products with full reorthogonalisation; the
  largest Ritz values of ``steps`` iterations (the extreme eigenvalues converge first).
- :func:`hessian_trace`: Hutchinson's estimator E[v^T H v] over Rademacher vectors v, with its
  standard error.
- :func:`sharpness`: SAM's sharpness, max over ||eps|| <= rho of L(theta + eps) - L(theta) (Foret et
  al., ICLR 2021), by a few normalised-gradient ascent steps on the sphere of radius rho (the first one
  is SAM's own eps = rho g / ||g||); the largest increase seen.

Random vectors come from the ``generator`` given, on the CPU, so the numbers do not depend on the device's
random number generator. Vectors are float64 here and cast to the parameters' dtype for each product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from robustrec.diagnostics.objective import Tensors, TrainingLoss, norm


@dataclass(frozen=True)
class Trace:
    """Hutchinson's estimate of the Hessian trace: the mean of ``samples`` draws and its standard error."""

    value: float
    stderr: float
    samples: int


def flatten(tensors: Tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in tensors])


def unflatten(vector: torch.Tensor, like: Tensors) -> Tensors:
    out, start = [], 0
    for p in like:
        out.append(vector[start : start + p.numel()].view(p.shape).to(p.device, p.dtype))
        start += p.numel()
    return out


def _product(objective: TrainingLoss, vector: torch.Tensor) -> torch.Tensor:
    return flatten(objective.hvp(unflatten(vector, objective.params)))


def top_eigenvalues(objective: TrainingLoss, k: int = 1, steps: int = 20,
                    generator: torch.Generator | None = None) -> list[float]:
    """The ``k`` largest Hessian eigenvalues (descending), from ``steps`` Lanczos iterations."""
    n = objective.size
    steps = max(1, min(steps, n))
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    basis = torch.zeros(steps, n, dtype=torch.float64)
    q = torch.randn(n, generator=generator, dtype=torch.float64)
    q /= q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        basis[j] = q
        w = _product(objective, q)
        alpha = float(w @ q)
        alphas.append(alpha)
        w -= alpha * q
        if j:
            w -= betas[-1] * basis[j - 1]
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(w.norm())
        if j == steps - 1 or beta <= 1e-10 * max(1.0, abs(alpha)):
            break  # done, or an invariant subspace was found: its Ritz values are exact
        betas.append(beta)
        q = w / beta
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if len(alphas) > 1:
        off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(tridiagonal).flip(0)
    return [float(v) for v in ritz[: min(k, len(ritz))]]


def hessian_trace(objective: TrainingLoss, samples: int = 20, generator: torch.Generator | None = None) -> Trace:
    """Hutchinson's trace estimate over ``samples`` Rademacher vectors (standard error 0 for one sample)."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    draws = []
    for _ in range(max(1, samples)):
        v = torch.randint(0, 2, (objective.size,), generator=generator).to(torch.float64) * 2 - 1
        draws.append(float(v @ _product(objective, v)))
    values = torch.tensor(draws, dtype=torch.float64)
    stderr = float(values.std() / math.sqrt(len(draws))) if len(draws) > 1 else 0.0
    return Trace(float(values.mean()), stderr, len(draws))


def sharpness(objective: TrainingLoss, rho: float = 0.05, steps: int = 5) -> float:
    """max L(theta + eps) - L(theta) over the eps visited by ``steps`` ascent steps on ||eps|| = rho."""
    base, grad = objective.gradient()
    eps = [torch.zeros_like(p) for p in objective.params]
    best = base
    for step in range(steps):
        if step:
            with objective.displaced(eps):
                loss, grad = objective.gradient()
            best = max(best, loss)
        size = norm(grad)
        if size == 0.0:
            break
        eps = [e + (rho / size) * g for e, g in zip(eps, grad)]
        eps = [e * (rho / norm(eps)) for e in eps]
    with objective.displaced(eps):
        best = max(best, objective.value())
    return best - base
