"""Recommender models and their registry."""

from __future__ import annotations

from typing import Any

import torch

from robustrec.data.dataset import Dataset
from robustrec.errors import ConfigError
from robustrec.hparams import check_params
from robustrec.models.base import EmbeddingTable, Recommender, Scorer
from robustrec.models.bm3 import BM3
from robustrec.models.bpr import BPR
from robustrec.models.dragon import DRAGON
from robustrec.models.dualgnn import DualGNN
from robustrec.models.freedom import FREEDOM
from robustrec.models.grcn import GRCN
from robustrec.models.lattice import LATTICE
from robustrec.models.layergcn import LayerGCN
from robustrec.models.lgmrec import LGMRec
from robustrec.models.lightgcn import LightGCN
from robustrec.models.mgcn import MGCN
from robustrec.models.mmgcn import MMGCN
from robustrec.models.pop import Popularity
from robustrec.models.selfcf import SelfCF
from robustrec.models.slmrec import SLMRec
from robustrec.models.vbpr import VBPR
from robustrec.registry import Registry

MODELS: Registry[Recommender] = Registry("model")
for _cls in (Popularity, VBPR, BM3, FREEDOM, MMGCN, GRCN, BPR, LightGCN, LayerGCN, SelfCF, LGMRec, LATTICE, DRAGON, MGCN, DualGNN, SLMRec):
    MODELS.register(_cls.name)(_cls)


def build_model(
    name: str, dataset: Dataset, generator: torch.Generator | None = None, **params: Any
) -> Recommender:
    """Build a registered model on ``dataset`` with explicit hyper-parameters."""
    factory = MODELS.get(name)
    check_params(factory, params, f"model {name!r}")
    try:
        return factory(dataset, generator=generator, **params)
    except MemoryError:
        raise ConfigError(f"model {name!r}: not enough memory for these hyper-parameters {params}") from None
    except RuntimeError as exc:  # torch's CPU allocator reports a failed allocation as a RuntimeError
        if "allocate" not in str(exc):
            raise
        raise ConfigError(f"model {name!r}: not enough memory for these hyper-parameters {params}") from None


__all__ = ["MODELS", "EmbeddingTable", "Recommender", "Scorer", "build_model"]
