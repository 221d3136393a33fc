"""Mirror Gradient (Zhong et al., WWW 2024, Algorithm 1).

At steps t = beta, 2 beta, ... (t counted over the whole run, from 1) the parameters take a descent
half-step on alpha1 * L and then an ascent half-step on alpha2 * L recomputed at the new parameters
on the same batch (same users, positives and sampled negatives); every other step is plain.
By Theorem 4.2 this minimises (a1 - a2) L + a1 a2 lr ||grad L||^2, i.e. it favours flat minima.

Variants:

- ``official`` (default): both half-steps go through the configured optimizer by loss scaling, as the
  authors' code does (``backward(a1 * L); step; backward(-a2 * L'); step``), so Adam's moments and
  step count see both half-steps. Departure from the authors' code: their counter is the batch index
  within an epoch (so batch 0 of every epoch mirrors); we count over the whole run, as the paper does.
- ``sgd``: the paper's formulas literally, theta' = theta - a1 lr g(theta); theta = theta' + a2 lr
  g(theta'), with lr read from the optimizer's first parameter group; the optimizer state is untouched.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.strategies.base import Strategy
from robustrec.strategies.plain import Plain


class MirrorGradient(Strategy):
    name = "mirror"

    def __init__(
        self,
        alpha1: float = 1.0,
        alpha2: float = 0.2,
        beta: int = 3,
        variant: Literal["official", "sgd"] = "official",
        objective: Strategy | None = None,
    ) -> None:
        if not alpha1 > alpha2 > 0:
            raise ConfigError(f"mirror gradient needs alpha1 > alpha2 > 0, got alpha1={alpha1}, alpha2={alpha2}")
        if int(beta) != beta or beta < 1:
            raise ConfigError(f"mirror gradient needs an integer beta >= 1, got {beta}")
        if variant not in ("official", "sgd"):
            raise ConfigError(f"mirror variant must be 'official' or 'sgd', got {variant!r}")
        inner = objective if objective is not None else Plain()
        if not inner.is_objective:
            raise ConfigError(f"mirror cannot wrap {inner.name!r}: both define the update rule")
        self.alpha1, self.alpha2, self.beta, self.variant = float(alpha1), float(alpha2), int(beta), variant
        self.inner = inner
        self.t = 0

    def setup(self, model, optimizer) -> None:
        super().setup(model, optimizer)
        self.inner.setup(model, optimizer)

    def objective(self, batch: Batch) -> torch.Tensor:
        return self.inner.objective(batch)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.inner.on_epoch_start(epoch, epochs)

    def step(self, batch: Batch) -> float:
        self.t += 1
        if self.t % self.beta:
            return super().step(batch)
        if self.variant == "official":
            return self._official(batch)
        return self._sgd(batch)

    def _official(self, batch: Batch) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(batch)
        (self.alpha1 * loss).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        (-self.alpha2 * self.objective(batch)).backward()
        self.optimizer.step()
        return float(loss.detach())

    def _sgd(self, batch: Batch) -> float:
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.requires_grad]
        lr = float(self.optimizer.param_groups[0]["lr"])
        loss = self.objective(batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.add_(g, alpha=-self.alpha1 * lr)
        grads = torch.autograd.grad(self.objective(batch), params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.add_(g, alpha=self.alpha2 * lr)
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.inner.load_state_dict(state.get("inner", {}))

    def label(self) -> str:
        prefix = "" if isinstance(self.inner, Plain) else f"{self.inner.label()}+"
        return f"{prefix}MG"
