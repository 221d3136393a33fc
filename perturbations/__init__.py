"""Perturbations applied to a trained model and its dataset at inference (robustness suites).

Suites: ``noise`` (Gaussian noise in learnable embedding tables, the paper's Table 4), ``caption``
(image captions inserted into item text and re-encoded, Table 5), ``image-noise`` and ``text-noise``
(Gaussian noise on the raw feature matrices). Each is one class registered in
:data:`PERTURBATIONS`; a new suite is one more (see :mod:`perturbations.base`).
"""

from perturbations.audit import AuditConfig, audit, audit_run, parse_suite_params
from perturbations.base import (
    PERTURBATIONS,
    CaptionSource,
    Compose,
    Perturbation,
    PerturbedView,
    SuiteContext,
)
from perturbations.caption import CaptionInsertion, insert_caption
from perturbations.features import ImageFeatureNoise, TextFeatureNoise
from perturbations.noise import EmbeddingNoise

__all__ = [
    "PERTURBATIONS",
    "AuditConfig",
    "CaptionInsertion",
    "CaptionSource",
    "Compose",
    "EmbeddingNoise",
    "ImageFeatureNoise",
    "Perturbation",
    "PerturbedView",
    "SuiteContext",
    "TextFeatureNoise",
    "audit",
    "audit_run",
    "insert_caption",
    "parse_suite_params",
]
