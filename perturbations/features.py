"""Gaussian noise on the raw item feature matrices (``image-noise``, ``text-noise``).

Each feature column j gets eps ~ N(0, (s * std_j)^2), with s the severity and std_j that column's
standard deviation over items, so the noise is relative to each feature's scale. The model is handed
the noisy features through :meth:`Recommender.with_features`, which rebuilds every structure derived
from features (kNN graphs). Only models whose scores read features at inference are affected, so
applying this to another model is an error rather than a silent no-op.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from perturbations.base import PERTURBATIONS, Perturbation, PerturbedView
from robustrec.data.dataset import Dataset
from robustrec.errors import ConfigError
from robustrec.models.base import Recommender


def check_reads_features(model: Recommender, suite: str) -> None:
    if not model.reads_features_at_inference:
        raise ConfigError(
            f"suite {suite!r} changes item features, but model {model.name!r} does not read features at "
            "inference (its scores cannot change); use the noise suite for it"
        )


class FeatureNoise(Perturbation):
    severity_name = "scale"
    default_severity: ClassVar[float] = 0.1
    modality = ""

    def __init__(self, severity: float = 0.1) -> None:
        super().__init__(severity)
        if self.severity < 0:
            raise ConfigError(f"{self.name}: the noise scale must be >= 0, got {severity}")

    def check(self, model: Recommender, dataset: Dataset) -> None:
        check_reads_features(model, self.name)
        if getattr(dataset.features, self.modality) is None:
            raise ConfigError(f"dataset {dataset.name!r} has no {self.modality} features")

    def apply(self, model: Recommender, dataset: Dataset, generator: torch.Generator) -> PerturbedView:
        self.check(model, dataset)
        clean = getattr(dataset.features, self.modality)
        noise = torch.randn(clean.shape, generator=generator)
        if self.severity == 0:
            return PerturbedView(model, dataset, {"modality": self.modality, "changed_items": 0})
        std = clean.std(dim=0, keepdim=True)
        noisy = clean + self.severity * std * noise
        features = dataset.features.replace(**{self.modality: noisy})
        details: dict[str, Any] = {"modality": self.modality, "changed_items": dataset.n_items}
        view_dataset = dataset.with_features(features)
        return PerturbedView(model.with_features(features), view_dataset, details)


@PERTURBATIONS.register("image-noise")
class ImageFeatureNoise(FeatureNoise):
    name = "image-noise"
    modality = "image"
    summary = "Gaussian noise on the raw image feature matrix, scale s times each column's std"


@PERTURBATIONS.register("text-noise")
class TextFeatureNoise(FeatureNoise):
    name = "text-noise"
    modality = "text"
    summary = "Gaussian noise on the raw text feature matrix, scale s times each column's std"
