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
  g(theta'), with each parameter's lr read from its own parameter group; the optimizer state is
  untouched. It needs plain SGD (no momentum, weight decay, nesterov, dampening or maximize), and
  setup() refuses any other optimizer: beside Adam's steps, whose size is about lr whatever the
  gradient's, its lr * g half-steps are tiny (measured on VBPR: about 1/2000 of a normal step), and
  with momentum or weight decay the normal steps follow another rule than the mirror steps.
  Theorem 4.2 covers plain SGD only.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from robustrec import checks
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
        alpha1 = checks.positive(self.name, "alpha1", alpha1)
        alpha2 = checks.positive(self.name, "alpha2", alpha2)
        if not alpha1 > alpha2:
            raise ConfigError(f"mirror: alpha1 > alpha2 > 0 is required, got {alpha1=}, {alpha2=}")
        beta = checks.count(self.name, "beta", beta)
        if variant not in ("official", "sgd"):
            raise ConfigError(f"mirror variant must be 'official' or 'sgd', got {variant!r}")
        inner = objective if objective is not None else Plain()
        if not inner.is_objective:
            raise ConfigError(f"mirror cannot wrap {inner.name!r}: both define the update rule")
        self.alpha1, self.alpha2, self.beta, self.variant = alpha1, alpha2, beta, variant
        self.inner = inner
        self.t = 0

    def setup(self, model, optimizer) -> None:
        if self.variant == "sgd":
            _require_plain_sgd(optimizer)
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
        groups = self.optimizer.param_groups
        pairs = [(p, float(group["lr"])) for group in groups for p in group["params"] if p.requires_grad]
        params = [p for p, _ in pairs]
        loss = self.objective(batch)
        _move(pairs, torch.autograd.grad(loss, params, allow_unused=True), -self.alpha1)
        second = self.objective(batch)
        _move(pairs, torch.autograd.grad(second, params, allow_unused=True), self.alpha2)
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.inner.load_state_dict(state.get("inner", {}))

    def label(self) -> str:
        prefix = "" if isinstance(self.inner, Plain) else f"{self.inner.label()}+"
        return f"{prefix}MG"


@torch.no_grad()
def _move(pairs: list[tuple[torch.Tensor, float]], grads, scale: float) -> None:
    """p += scale * lr * g for each (parameter, the lr of its group) in ``pairs``."""
    for (p, lr), g in zip(pairs, grads):
        if g is not None:
            p.add_(g, alpha=scale * lr)


def _require_plain_sgd(optimizer: torch.optim.Optimizer) -> None:
    """ConfigError unless every parameter group of ``optimizer`` takes plain SGD steps (p -= lr g)."""
    found = type(optimizer).__name__
    if isinstance(optimizer, torch.optim.SGD):
        options = ("momentum", "weight_decay", "dampening", "nesterov", "maximize")
        groups = optimizer.param_groups
        extras = sorted({f"{key}={group[key]}" for group in groups for key in options if group.get(key)})
        if not extras:
            return
        found += f" with {', '.join(extras)}"
    raise ConfigError(
        f"mirror variant 'sgd' applies the paper's plain-SGD formulas, but the optimizer is {found}: "
        "use the official variant (--mirror-variant official), or --optimizer sgd without --momentum "
        "or --weight-decay"
    )
