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

Trace (:meth:`MirrorGradient.enable_trace`, ``robustrec train --mirror-trace``): for every mirror step
it records the batch loss before the step (L0), after the descent half (L1, the second pass's loss)
and after the ascent half (L2: one more pass at the final parameters, drawing the same model
randomness as the L1 pass), and how each half moved the parameters: the cosine between the
displacement theta' - theta and the gradient g(theta) (-1 for a true SGD descent), between
theta'' - theta' and g(theta') (+1 for a true SGD ascent), and the two displacements' norms, over all
trainable parameters together. The gradients are of L itself in both variants (the official one's
backward of a1 L and -a2 L is divided by that factor). :meth:`MirrorGradient.epoch_summary` gives the
epoch's means (see :func:`summarize`). Tracing does not change training: the extra pass restores the
model's generator and touches neither the gradients nor the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch

from robustrec import checks
from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.strategies.base import Strategy
from robustrec.strategies.plain import Plain
from robustrec.strategies.replay import rewinder

#: What :meth:`MirrorGradient.epoch_summary` reports besides ``steps``: each the mean over the epoch's
#: mirror steps (``ascended``: the share of steps with L2 > L1).
TRACE_KEYS = ("loss_before", "loss_after_descent", "loss_after_ascent", "descent_change", "ascent_change",
              "ascended", "cos_descent", "cos_ascent", "norm_descent", "norm_ascent")


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
        self._steps: list[dict[str, float | None]] | None = None  # the epoch's traced steps, when tracing

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
        groups = self.optimizer.param_groups
        pairs = [(p, float(group["lr"])) for group in groups for p in group["params"] if p.requires_grad]
        trace = _StepTrace([p for p, _ in pairs]) if self._steps is not None else None
        loss, grads = self._half(batch, pairs, self.alpha1, trace is not None)
        if trace is not None:
            trace.moved(grads)
        replay = rewinder(batch)  # the second pass's model randomness, drawn again for L2
        second, grads = self._half(batch, pairs, -self.alpha2, trace is not None)
        if trace is not None:
            trace.moved(grads)
            self._steps.append(trace.record(float(loss.detach()), float(second.detach()),
                                            self._loss_again(batch, replay)))
        return float(loss.detach())

    def _half(self, batch: Batch, pairs: list[tuple[torch.Tensor, float]], weight: float,
              want_grads: bool) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """One step on ``weight * L`` (a1: the descent half; -a2: the ascent half). Returns L and, when
        ``want_grads``, the gradient of L itself at the parameters before the step (else ``[]``)."""
        if self.variant == "sgd":
            loss = self.objective(batch)
            grads = torch.autograd.grad(loss, [p for p, _ in pairs], allow_unused=True)
            _move(pairs, grads, -weight)
            return loss, list(grads) if want_grads else []
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(batch)
        (weight * loss).backward()
        unscaled = [None if p.grad is None else p.grad / weight for p, _ in pairs] if want_grads else []
        self.optimizer.step()
        return loss, unscaled

    def _loss_again(self, batch: Batch, replay: Callable[[], None]) -> float:
        """L at the parameters now, drawing the randomness ``replay`` restores; the model's generator
        ends where it was. Not under ``torch.no_grad``: an objective such as AMR's differentiates
        inside. No backward runs, so the gradients and the optimizer are untouched."""
        resume = rewinder(batch)
        replay()
        loss = float(self.objective(batch).detach())
        resume()
        return loss

    def enable_trace(self) -> None:
        self._steps = []

    def epoch_summary(self) -> dict[str, Any] | None:
        if not self._steps:
            return None
        steps, self._steps = self._steps, []
        return summarize(steps)

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.inner.load_state_dict(state.get("inner", {}))

    def label(self) -> str:
        prefix = "" if isinstance(self.inner, Plain) else f"{self.inner.label()}+"
        return f"{prefix}MG"


class _StepTrace:
    """The geometry of one traced mirror step: each half's displacement against its gradient."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params = params
        self.last = _copy(params)
        self.halves: list[tuple[float | None, float]] = []

    def moved(self, grads: list[torch.Tensor | None]) -> None:
        """Called after a half-step with the gradient of L it was taken on."""
        now = _copy(self.params)
        self.halves.append(_cos_norm([a - b for a, b in zip(now, self.last)], grads))
        self.last = now

    def record(self, before: float, after_descent: float, after_ascent: float) -> dict[str, float | None]:
        (cos_descent, norm_descent), (cos_ascent, norm_ascent) = self.halves
        return {"loss_before": before, "loss_after_descent": after_descent, "loss_after_ascent": after_ascent,
                "descent_change": after_descent - before, "ascent_change": after_ascent - after_descent,
                "ascended": float(after_ascent > after_descent), "cos_descent": cos_descent,
                "cos_ascent": cos_ascent, "norm_descent": norm_descent, "norm_ascent": norm_ascent}


def summarize(steps: list[dict[str, float | None]]) -> dict[str, Any]:
    """``{"steps": n, key: mean}`` for each of :data:`TRACE_KEYS`; a mean is ``None`` where no step
    has a value (a cosine with a zero vector) or where it is not finite (JSON holds no NaN)."""
    summary: dict[str, Any] = {"steps": len(steps)}
    for key in TRACE_KEYS:
        values = [step[key] for step in steps if step[key] is not None]
        mean = sum(values) / len(values) if values else math.nan
        summary[key] = mean if math.isfinite(mean) else None
    return summary


@torch.no_grad()
def _copy(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


@torch.no_grad()
def _cos_norm(moves: list[torch.Tensor], grads: list[torch.Tensor | None]) -> tuple[float | None, float]:
    """cos(d, g) and ||d|| for the displacement ``moves`` and the gradient ``grads`` (one tensor per
    parameter; all flattened together, summed in float64); the cosine is None when d or g is zero."""
    dot, moved, grad = 0.0, 0.0, 0.0
    for d, g in zip(moves, grads):
        d = d.double()
        moved = moved + d.square().sum()
        if g is not None:
            g = g.double()
            dot, grad = dot + (d * g).sum(), grad + g.square().sum()
    norm_d, norm_g = math.sqrt(float(moved)), math.sqrt(float(grad))
    return (float(dot) / (norm_d * norm_g) if norm_d > 0 and norm_g > 0 else None), norm_d


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
