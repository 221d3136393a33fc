"""The perturbation protocol.

A perturbation is applied to a trained model and its dataset at inference. ``apply`` returns a
:class:`PerturbedView` (a model and dataset to evaluate, plus details worth recording); it never
mutates its inputs, takes all randomness from the generator it is given, and severity 0 is the
identity. Perturbations compose with :class:`Compose`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from robustrec.data.dataset import Dataset
from robustrec.errors import ConfigError
from robustrec.models.base import Recommender
from robustrec.registry import Registry


@dataclass(frozen=True)
class PerturbedView:
    model: Recommender
    dataset: Dataset
    details: dict[str, Any] = field(default_factory=dict)


class Perturbation:
    name: ClassVar[str] = ""
    #: What the severity measures, e.g. "sigma2", "scale" or "prob" (recorded with the results).
    severity_name: ClassVar[str] = "severity"

    def __init__(self, severity: float) -> None:
        # NaN and infinity are refused: an infinite noise variance, say, yields NaN scores and so
        # made-up metrics, and records that JSON cannot hold
        if isinstance(severity, bool) or not isinstance(severity, (int, float)) or not math.isfinite(severity):
            raise ConfigError(f"{self.name}: severity must be a finite number, got {severity!r}")
        self.severity = float(severity)

    def check(self, model: Recommender, dataset: Dataset) -> None:
        """Raise ConfigError when this perturbation cannot apply to ``model`` (before any work)."""

    def apply(self, model: Recommender, dataset: Dataset, generator: torch.Generator) -> PerturbedView:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The settings recorded with every result."""
        return {"suite": self.name, self.severity_name: self.severity}


class Compose(Perturbation):
    """Apply perturbations in order; each sees the previous one's view."""

    name = "compose"

    def __init__(self, parts: list[Perturbation]) -> None:
        if not parts:
            raise ConfigError("compose needs at least one perturbation")
        super().__init__(max(p.severity for p in parts))
        self.parts = parts

    def check(self, model: Recommender, dataset: Dataset) -> None:
        for part in self.parts:
            part.check(model, dataset)

    def apply(self, model: Recommender, dataset: Dataset, generator: torch.Generator) -> PerturbedView:
        details: dict[str, Any] = {}
        for part in self.parts:
            view = part.apply(model, dataset, generator)
            model, dataset = view.model, view.dataset
            details[part.name] = view.details
        return PerturbedView(model, dataset, details)

    def describe(self) -> dict[str, Any]:
        return {"suite": "+".join(p.name for p in self.parts), "parts": [p.describe() for p in self.parts]}


PERTURBATIONS: Registry[Perturbation] = Registry("suite")
