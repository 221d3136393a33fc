"""The training loss of a trained model as a deterministic function of its parameters.

Flatness measures (Hessian eigenvalues, sharpness, landscapes) need one fixed function L(theta) to
differentiate and to evaluate at displaced parameters. The trainer's loss changes every step (new
shuffle, new negatives, new dropout masks); :class:`TrainingLoss` freezes all of it once:

- the training pairs are shuffled and given negatives once, from the diagnosis seed, and cut into
  batches of the run's batch size (optionally only the first ``interactions`` pairs: a subsample);
- each batch gets its own generator for the model's randomness (dropout), re-seeded identically at
  every evaluation, so the same masks are drawn at every theta;
- ``pre_epoch`` (FREEDOM's pruned graph) runs once, from the diagnosis seed;
- the model stays in training mode, and L is the unweighted mean of the batch losses, the number the
  trainer logs as an epoch's loss.

Hessian-vector products use double backward. A model whose custom autograd functions do not
differentiate their own backward correctly would silently give a wrong product, so the first product
is checked against a central difference of gradients; where the two disagree (or double backward
fails) every product is a central difference, and :attr:`TrainingLoss.hvp_method` says which.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch, BPRSampler
from robustrec.errors import ConfigError
from robustrec.models.base import Recommender

Tensors = list[torch.Tensor]

#: Largest relative gap between the double-backward and finite-difference products taken as agreement: a
#: central difference in float32 is within about 1e-4 of the exact product, while a custom autograd
#: function that does not differentiate its own backward is off by 0.6 or more (BM3, VBPR, BPR, MMGCN).
HVP_TOLERANCE = 5e-2


class TrainingLoss:
    """L(theta) for ``model``'s trainable parameters on ``dataset``'s training pairs (see the module)."""

    def __init__(
        self,
        model: Recommender,
        dataset: Dataset,
        *,
        batch_size: int = 2048,
        interactions: int | None = None,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"diagnose: batch_size must be >= 1, got {batch_size}")
        if interactions is not None and interactions < 1:
            raise ConfigError(f"diagnose: interactions must be >= 1, got {interactions}")
        self.model = model
        self.params: Tensors = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError(f"{model.name} has no trainable parameters: there is no loss surface to measure")
        device = model.device
        sampler = BPRSampler(dataset, batch_size, device)
        batches = list(sampler.epoch(torch.Generator().manual_seed(seed)))
        if interactions is not None:
            batches = _first_pairs(batches, interactions)
        self.batches = batches
        self.interactions = sum(len(b) for b in batches)
        self.seed = seed
        self._device = device
        model.train()
        model.pre_epoch(torch.Generator(device).manual_seed(seed))
        #: How Hessian-vector products are taken: None until the first one, then "double-backward"
        #: or "finite-difference".
        self.hvp_method: str | None = None

    @property
    def size(self) -> int:
        """The number of trainable parameters (the dimension of theta)."""
        return sum(p.numel() for p in self.params)

    # ---- evaluations --------------------------------------------------------------------------
    def _seeded_batches(self) -> Iterator[Batch]:
        """The batches, each with a freshly seeded generator: the same dropout masks at every call."""
        for index, batch in enumerate(self.batches):
            generator = torch.Generator(self._device).manual_seed(self.seed + 1 + index)
            yield dataclasses.replace(batch, generator=generator)

    @torch.no_grad()
    def value(self) -> float:
        """L at the current parameters."""
        total = sum(float(self.model.loss(batch)) for batch in self._seeded_batches())
        return total / len(self.batches)

    def gradient(self) -> tuple[float, Tensors]:
        """L and its gradient (one tensor per parameter) at the current parameters."""
        grads = [torch.zeros_like(p) for p in self.params]
        total = 0.0
        for batch in self._seeded_batches():
            loss = self.model.loss(batch) / len(self.batches)
            parts = torch.autograd.grad(loss, self.params, allow_unused=True)
            for g, part in zip(grads, parts):
                if part is not None:
                    g.add_(part)
            total += float(loss.detach())
        return total, grads

    def hvp(self, vector: Sequence[torch.Tensor]) -> Tensors:
        """The Hessian of L times ``vector`` (one tensor per parameter)."""
        if self.hvp_method is None:
            self.hvp_method = self._choose_hvp(vector)
        if self.hvp_method == "double-backward":
            return self._hvp_autograd(vector)
        return self._hvp_difference(vector)

    def _hvp_autograd(self, vector: Sequence[torch.Tensor]) -> Tensors:
        out = [torch.zeros_like(p) for p in self.params]
        for batch in self._seeded_batches():
            loss = self.model.loss(batch) / len(self.batches)
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            dot = sum((g * v).sum() for g, v in zip(grads, vector) if g is not None)
            if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
                continue  # this batch's gradient does not depend on theta
            parts = torch.autograd.grad(dot, self.params, allow_unused=True)
            for o, part in zip(out, parts):
                if part is not None:
                    o.add_(part)
        return out

    def _hvp_difference(self, vector: Sequence[torch.Tensor]) -> Tensors:
        """(grad L(theta + h v) - grad L(theta - h v)) / 2h, h relative to the sizes of theta and v."""
        h = _difference_step(self.params, vector)
        with self.displaced(vector, h):
            _, plus = self.gradient()
        with self.displaced(vector, -h):
            _, minus = self.gradient()
        return [(a - b) / (2 * h) for a, b in zip(plus, minus)]

    def _choose_hvp(self, vector: Sequence[torch.Tensor]) -> str:
        """Double backward where it agrees with a central difference on ``vector``, else differences."""
        try:
            exact = self._hvp_autograd(vector)
        except RuntimeError:  # e.g. a custom autograd function marked once-differentiable
            return "finite-difference"
        approx = self._hvp_difference(vector)
        gap = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(exact, approx)))
        scale = torch.sqrt(sum((b**2).sum() for b in approx))
        if not float(gap) <= HVP_TOLERANCE * max(float(scale), 1e-12):  # NaN (LGMRec) included
            return "finite-difference"
        return "double-backward"

    # ---- moving theta -------------------------------------------------------------------------
    @contextmanager
    def displaced(self, direction: Sequence[torch.Tensor], scale: float = 1.0) -> Iterator[None]:
        """Within the block the parameters are theta + scale * direction; theta is restored exactly."""
        with self.placed(self.offset(direction, scale)):
            yield

    @contextmanager
    def placed(self, values: Sequence[torch.Tensor]) -> Iterator[None]:
        """Within the block the parameters hold ``values``; the original values are restored exactly."""
        saved = [p.detach().clone() for p in self.params]
        try:
            with torch.no_grad():
                for p, v in zip(self.params, values):
                    p.copy_(v)
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def offset(self, direction: Sequence[torch.Tensor], scale: float = 1.0) -> Tensors:
        """theta + scale * direction, as new tensors."""
        return [p.detach() + scale * d for p, d in zip(self.params, direction)]


def _first_pairs(batches: list[Batch], interactions: int) -> list[Batch]:
    """The batches covering the first ``interactions`` (shuffled) training pairs."""
    kept, left = [], interactions
    for batch in batches:
        if left <= 0:
            break
        if len(batch) > left:
            batch = Batch(batch.users[:left], batch.pos_items[:left], batch.neg_items[:left], batch.generator)
        kept.append(batch)
        left -= len(batch)
    return kept


def _difference_step(params: Sequence[torch.Tensor], vector: Sequence[torch.Tensor]) -> float:
    """A central-difference step: about eps^(1/3) of theta's size along a unit of ``vector``."""
    eps = torch.finfo(params[0].dtype).eps
    theta = float(torch.sqrt(sum((p.detach() ** 2).sum() for p in params)))
    norm = float(torch.sqrt(sum((v**2).sum() for v in vector)))
    return eps ** (1 / 3) * max(theta, 1.0) / max(norm, 1e-12)


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """The inner product of two parameter-shaped lists (in float64)."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def norm(a: Sequence[torch.Tensor]) -> float:
    return dot(a, a) ** 0.5
