"""Plain training: one optimizer step on the model's loss per batch (the baseline)."""

from __future__ import annotations

from robustrec.strategies.base import Strategy


class Plain(Strategy):
    name = "plain"
    is_objective = True
