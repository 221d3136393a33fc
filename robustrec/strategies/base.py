"""The training-strategy protocol.

A strategy owns the optimizer calls for one step on one prepared batch (negatives already sampled).
The trainer only calls :meth:`Strategy.setup`, :meth:`Strategy.on_epoch_start` and
:meth:`Strategy.step` (and, for ``--mirror-trace``, :meth:`Strategy.enable_trace` and
:meth:`Strategy.epoch_summary`); it never asks which strategy it holds.

Strategies that change *what* is minimised (plain, AMR) implement :meth:`Strategy.objective`; those
that change *how* the parameters move (Mirror Gradient, SAM) implement :meth:`Strategy.step` and may
take another strategy's objective (``amr+mirror``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from robustrec.data.sampling import Batch
from robustrec.models.base import Recommender


class Strategy:
    name: ClassVar[str] = ""
    #: Whether this strategy only defines an objective, so update rules such as mirror can wrap it.
    is_objective: ClassVar[bool] = False

    model: Recommender
    optimizer: torch.optim.Optimizer

    def setup(self, model: Recommender, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer

    def objective(self, batch: Batch) -> torch.Tensor:
        """The loss minimised on ``batch`` (the model's own loss by default)."""
        return self.model.loss(batch)

    def step(self, batch: Batch) -> float:
        """One plain update on ``batch``; returns the batch loss before the update."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(batch)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (epochs counted from 1)."""

    def enable_trace(self) -> None:
        """Record what each step does from now on (Mirror Gradient's mirror steps; nothing by default)."""

    def epoch_summary(self) -> dict[str, Any] | None:
        """The traced steps of the epoch just finished, aggregated, then forgotten; ``None`` when
        nothing was recorded (no trace, or no mirror step in the epoch)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers and lists only (saved with the run's resume state)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def label(self) -> str:
        return self.name
