"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) and Sparse SAM (Mi et al., NeurIPS 2022).

SAM, per batch: g = grad L(w); e = rho * g / (||g|| + 1e-12) with the norm global over every
parameter that has a gradient; compute grad L(w + e) on the identical batch (same users, positives,
sampled negatives and model randomness); put w back exactly (the stored copy, not w + e - e); one
base-optimizer step with that gradient. The base optimizer (Adam, SGD, ...) steps once per batch.

SSAM perturbs only a subset of the parameters: e * mask, with the norm still taken over the full
gradient. The mask keeps ``round((1 - sparsity) * N)`` of the N parameter entries, chosen globally
over all parameters.

- ``ssam-f``: the entries with the largest empirical Fisher information, the sum over
  ``num_samples`` training interactions (user, positive, sampled negative; drawn with the
  strategy's generator) of the squared per-interaction gradient of the model's loss. Per-interaction
  gradients are exact: one backward pass per sampled interaction. Recomputed at the start of epochs
  1, 1 + update_freq, 1 + 2 update_freq, ...
- ``ssam-d``: a random initial mask, updated in epochs 1, 1 + update_freq, 1 + 2 update_freq, ...
  (the reference's 0-based epochs 0, update_freq, ...: the first epoch included) by the gradient of
  the epoch's first batch, as the reference code (Mi-Peng/Sparse-Sharpness-Aware-Minimization) does:
  the live entries with the smallest |grad| die, at the rate
  drop_rate * (1 + cos(pi * (epoch - 1) / epochs)) / 2 of the live entries (the full drop_rate in
  epoch 1), and as many entries that were dead before this update come back at random; an entry
  dropped in this update cannot (the reference's growth score is multiplied by 1 - old mask). That
  batch is itself perturbed with the mask it replaces (the reference updates after its first step).
  Departure: when fewer entries are dead than the rate would drop (sparsity below about
  drop_rate / (1 + drop_rate)), we drop only as many as are dead and swap them, so the mask keeps
  its ``1 - sparsity`` share. The reference drops the full number and regrows only as many as were
  dead, so its mask shrinks (from 80% to 60% of the entries at its default sparsity 0.2 and
  drop_rate 0.5) and stops meaning ``sparsity``.

Ties in either ranking are broken at random (with the strategy's generator), not by position.

Defaults, and where they depart from the SSAM code: rho 0.05; sparsity 0.5, the value of the SSAM
README's examples (the code's default is 0.2): a recommender's embedding tables are mostly rows
that a batch does not touch, and half of the entries is the setting the authors show; update_freq
5 epochs (code default; examples 1); num_samples 128 (code default 1024, examples 16 to 128): one
backward pass per sample is costly for models whose loss propagates over a whole graph; drop_rate
0.5. ``epochs`` in the death-rate schedule is the run's maximum number of epochs (the reference's
T_end), so with early stopping the rate stays near drop_rate.

SAM-family strategies are update rules (they decide how the parameters move), so Mirror Gradient
cannot wrap them; they accept an ``objective`` of their own instead (``amr+sam``: SAM applied to
AMR's loss, the adversarial feature perturbation recomputed at w + e). SSAM-F's Fisher is always
that of the model's recommendation loss.

Randomness (SSAM's masks and samples) comes from ``generator`` when given, else from a generator
seeded with ``seed``; its state is part of :meth:`state_dict`, so a resumed run is identical.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustrec import checks
from robustrec.data.sampling import Batch, BPRSampler
from robustrec.errors import ConfigError
from robustrec.strategies.base import Strategy
from robustrec.strategies.plain import Plain
from robustrec.strategies.replay import rewinder


class SAM(Strategy):
    name = "sam"
    summary = "Sharpness-Aware Minimization (Foret et al., ICLR 2021): descend from the worst point within rho"

    def __init__(self, rho: float = 0.05, objective: Strategy | None = None) -> None:
        rho = checks.positive(self.name, "rho", rho)
        inner = objective if objective is not None else Plain()
        if not inner.is_objective:
            raise ConfigError(f"{self.name} cannot wrap {inner.name!r}: both define the update rule")
        self.rho = rho
        self.inner = inner
        self.params: list[torch.nn.Parameter] = []

    def setup(self, model, optimizer) -> None:
        super().setup(model, optimizer)
        self.inner.setup(model, optimizer)
        self.params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]

    def objective(self, batch: Batch) -> torch.Tensor:
        return self.inner.objective(batch)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.inner.on_epoch_start(epoch, epochs)

    def masks(self) -> list[torch.Tensor] | None:
        """Which entries of each parameter are perturbed (``None``: all of them)."""
        return None

    def after_perturbation(self, grads: list[torch.Tensor | None]) -> None:
        """Hook: sees the first-pass gradients (at w) once the batch's perturbation is in place."""

    def step(self, batch: Batch) -> float:
        rewind = rewinder(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(batch)
        loss.backward()
        grads = [p.grad for p in self.params]
        present = [g for g in grads if g is not None]
        if not present:  # nothing to perturb: a plain step
            self.optimizer.step()
            return float(loss.detach())
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))
        scale = self.rho / (norm + 1e-12)
        masks = self.masks()
        saved = []
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(self.params, grads)):
                if g is None:
                    continue
                saved.append((p, p.detach().clone()))
                e = g * scale
                if masks is not None:
                    e = e * masks[i]
                p.add_(e)
        self.after_perturbation(grads)
        self.optimizer.zero_grad(set_to_none=True)
        rewind()
        self.objective(batch).backward()
        with torch.no_grad():
            for p, w in saved:
                p.copy_(w)
        self.optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state.get("inner", {}))

    def label(self) -> str:
        prefix = "" if isinstance(self.inner, Plain) else f"{self.inner.label()}+"
        return f"{prefix}{self.name.upper()}"


class _SparseSAM(SAM):
    """SAM whose perturbation is restricted to a global mask over the parameter entries."""

    def __init__(
        self,
        rho: float = 0.05,
        sparsity: float = 0.5,
        update_freq: int = 5,
        seed: int = 0,
        generator: torch.Generator | None = None,
        objective: Strategy | None = None,
    ) -> None:
        super().__init__(rho=rho, objective=objective)
        self.sparsity = checks.fraction(self.name, "sparsity", sparsity, below_one=True)
        self.update_freq = checks.count(self.name, "update_freq", update_freq)  # epochs
        seed = checks.count(self.name, "seed", seed, minimum=0, maximum=2**63 - 1)  # as a run's seed
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.mask_list: list[torch.Tensor] = []

    # ---- global masks over the flattened parameters -------------------------------------------
    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def n_keep(self) -> int:
        return round((1.0 - self.sparsity) * self.numel)

    def _unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for p in self.params:
            out.append(flat[start : start + p.numel()].view_as(p).to(p.device))
            start += p.numel()
        return out

    def _flat(self, tensors: list[torch.Tensor | None]) -> torch.Tensor:
        parts = [
            (t if t is not None else torch.zeros_like(p)).detach().reshape(-1).float().cpu()
            for p, t in zip(self.params, tensors)
        ]
        return torch.cat(parts) if parts else torch.zeros(0)

    def _top(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """Indices of the k largest scores, ties broken at random with the generator."""
        order = torch.randperm(len(scores), generator=self.generator)
        ranked = torch.sort(scores[order], descending=True, stable=True).indices
        return order[ranked[:k]]

    def masks(self) -> list[torch.Tensor] | None:
        return self.mask_list

    def _set_mask_from_flat(self, flat_mask: torch.Tensor) -> None:
        self.mask_list = [m.to(dtype=p.dtype) for m, p in zip(self._unflatten(flat_mask), self.params)]

    def _full_mask(self) -> None:
        self.mask_list = [
            torch.ones_like(p, memory_format=torch.contiguous_format).detach() for p in self.params
        ]

    def _due(self, epoch: int) -> bool:
        return (epoch - 1) % self.update_freq == 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "inner": self.inner.state_dict(),
            "masks": [m.detach().bool().cpu() for m in self.mask_list],
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        masks = list(state["masks"])
        if len(masks) != len(self.params) or any(m.shape != p.shape for m, p in zip(masks, self.params)):
            raise ConfigError(f"{self.name}: the saved masks do not match the model's parameters")
        self.mask_list = [m.to(device=p.device, dtype=p.dtype) for m, p in zip(masks, self.params)]
        self.generator.set_state(state["generator"])


class SSAMFisher(_SparseSAM):
    name = "ssam-f"
    summary = "Sparse SAM with a Fisher-information mask (Mi et al., NeurIPS 2022)"

    def __init__(
        self,
        rho: float = 0.05,
        sparsity: float = 0.5,
        num_samples: int = 128,
        update_freq: int = 5,
        seed: int = 0,
        generator: torch.Generator | None = None,
        objective: Strategy | None = None,
    ) -> None:
        super().__init__(rho, sparsity, update_freq, seed, generator, objective)
        self.num_samples = checks.count(self.name, "num_samples", num_samples)
        self._sampler: BPRSampler | None = None

    def setup(self, model, optimizer) -> None:
        super().setup(model, optimizer)
        self._sampler = None
        self._full_mask()  # until the first epoch computes the Fisher mask

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        super().on_epoch_start(epoch, epochs)
        if self._due(epoch):
            self.update_mask()

    def fisher(self) -> list[torch.Tensor]:
        """Empirical Fisher diagonal: sum of squared per-interaction gradients of the model's loss."""
        model = self.model
        if self._sampler is None:
            self._sampler = BPRSampler(model.dataset, batch_size=1, device="cpu")
        pairs = self._sampler.pairs
        n = len(pairs)
        if self.num_samples <= n:
            index = torch.randperm(n, generator=self.generator)[: self.num_samples]
        else:
            index = torch.randint(n, (self.num_samples,), generator=self.generator)
        users, positives = pairs[index, 0], pairs[index, 1]
        negatives = self._sampler.sample_negatives(users, self.generator)
        device = model.device
        model_gen = torch.Generator(device).manual_seed(
            int(torch.randint(2**62, (1,), generator=self.generator))
        )
        users, positives, negatives = users.to(device), positives.to(device), negatives.to(device)
        fisher = [torch.zeros_like(p) for p in self.params]
        for i in range(len(users)):
            sample = Batch(users[i : i + 1], positives[i : i + 1], negatives[i : i + 1], model_gen)
            grads = torch.autograd.grad(model.loss(sample), self.params, allow_unused=True)
            with torch.no_grad():
                for f, g in zip(fisher, grads):
                    if g is not None:
                        f.add_(g.square())
        return fisher

    def update_mask(self) -> None:
        if self.sparsity == 0:
            self._full_mask()
            return
        scores = self._flat(self.fisher())
        flat = torch.zeros(len(scores), dtype=torch.bool)
        flat[self._top(scores, self.n_keep)] = True
        self._set_mask_from_flat(flat)


class SSAMDynamic(_SparseSAM):
    name = "ssam-d"
    summary = "Sparse SAM with a dynamic sparse mask, dropped and regrown (Mi et al., NeurIPS 2022)"

    def __init__(
        self,
        rho: float = 0.05,
        sparsity: float = 0.5,
        drop_rate: float = 0.5,
        update_freq: int = 5,
        seed: int = 0,
        generator: torch.Generator | None = None,
        objective: Strategy | None = None,
    ) -> None:
        super().__init__(rho, sparsity, update_freq, seed, generator, objective)
        self.drop_rate = checks.fraction(self.name, "drop_rate", drop_rate)
        self.pending_epoch = 0  # epoch whose first batch updates the mask (0: none)
        self.epochs = 1

    def setup(self, model, optimizer) -> None:
        super().setup(model, optimizer)
        flat = torch.zeros(self.numel, dtype=torch.bool)
        flat[torch.randperm(self.numel, generator=self.generator)[: self.n_keep]] = True
        self._set_mask_from_flat(flat)
        self.pending_epoch = 0

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        super().on_epoch_start(epoch, epochs)
        self.epochs = max(int(epochs), 1)
        if self._due(epoch):
            self.pending_epoch = epoch

    def death_rate(self, epoch: int) -> float:
        """The reference's cosine schedule from T_start = 0 to T_end = epochs, over its 0-based epochs."""
        return self.drop_rate * (1 + math.cos(math.pi * (epoch - 1) / self.epochs)) / 2

    def after_perturbation(self, grads: list[torch.Tensor | None]) -> None:
        if self.pending_epoch:
            self.update_mask(grads, self.death_rate(self.pending_epoch))
            self.pending_epoch = 0

    def update_mask(self, grads: list[torch.Tensor | None], rate: float) -> None:
        """Drop the ``rate`` share of live entries with the smallest |grad|; regrow as many of the
        entries that were dead before this update, at random (never one dropped just now).

        At most as many entries are dropped as were dead, so the mask keeps its size (see the module
        docstring: the reference's mask shrinks instead)."""
        live = self._flat(self.mask_list) > 0
        dead_before = (~live).nonzero().squeeze(1)
        n_drop = min(int(rate * int(live.sum())), len(dead_before))
        if n_drop == 0:
            return
        scores = self._flat(grads).abs()
        scores[~live] = math.inf
        dropped = self._top(-scores, n_drop)  # the smallest |grad| among the live entries
        grown = dead_before[torch.randperm(len(dead_before), generator=self.generator)[:n_drop]]
        live[dropped] = False
        live[grown] = True
        self._set_mask_from_flat(live)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pending_epoch": self.pending_epoch, "epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pending_epoch = int(state["pending_epoch"])
        self.epochs = int(state["epochs"])
