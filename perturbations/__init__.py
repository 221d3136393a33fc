"""Perturbations applied to a trained model and its dataset at inference (robustness suites).

Suites: ``noise`` (Gaussian noise in learnable embedding tables, the paper's Table 4), ``caption``
(image captions inserted into item text and re-encoded, Table 5), ``image-noise`` and ``text-noise``
(Gaussian noise on the raw feature matrices).
"""

from perturbations.audit import SUITES, AuditConfig, audit, audit_run
from perturbations.base import PERTURBATIONS, Compose, Perturbation, PerturbedView
from perturbations.caption import CaptionInsertion, insert_caption
from perturbations.features import ImageFeatureNoise, TextFeatureNoise
from perturbations.noise import EmbeddingNoise

__all__ = [
    "PERTURBATIONS",
    "SUITES",
    "AuditConfig",
    "CaptionInsertion",
    "Compose",
    "EmbeddingNoise",
    "ImageFeatureNoise",
    "Perturbation",
    "PerturbedView",
    "TextFeatureNoise",
    "audit",
    "audit_run",
    "insert_caption",
]
