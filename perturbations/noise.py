"""Gaussian noise in a model's learnable embedding tables (the paper's "information noise", Table 4).

The paper injects eps ~ N(0, 1e-6) into the item embedding layers of BM3 and FREEDOM. Which tensors
are targeted is the model's to say (:meth:`Recommender.embedding_tables`):

- ``items``      (default) the learnable item-ID embedding rows;
- ``embeddings`` every embedding table: users, items and learnable feature tables;
- ``parameters`` every learnable parameter.

``item_ids`` restricts the item tables to some items. With ``noise_scale="absolute"`` (the paper's) the
severity is the variance sigma^2 (recorded as ``sigma2``); with ``noise_scale="relative"`` it is a
factor s (recorded as ``scale``) and each target tensor T gets sigma = s * std(T), so models with
different weight scales are compared fairly. Noise draws are
standard normals scaled by sigma, so for one generator seed all severities share one direction.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch

from perturbations.base import PERTURBATIONS, Perturbation, PerturbedView
from robustrec.data.dataset import Dataset
from robustrec.errors import ConfigError
from robustrec.models.base import Recommender

Target = Literal["items", "embeddings", "parameters"]
TARGETS = ("items", "embeddings", "parameters")
NoiseScale = Literal["absolute", "relative"]
#: The severity's name and default for each noise scale.
SEVERITY = {"absolute": ("sigma2", 1e-6), "relative": ("scale", 0.1)}


@PERTURBATIONS.register("noise")
class EmbeddingNoise(Perturbation):
    name = "noise"
    severity_name = "sigma2"
    default_severity: ClassVar[float] = 1e-6
    summary = "Gaussian noise in learnable embedding tables (paper Table 4)"

    def __init__(
        self,
        severity: float = 1e-6,
        noise_scale: NoiseScale = "absolute",
        target: Target = "items",
        item_ids: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(severity)
        if self.severity < 0:
            raise ConfigError(f"noise severity must be >= 0 (sigma^2 or scale), got {severity}")
        if noise_scale not in SEVERITY:
            raise ConfigError(f"noise scale must be 'absolute' or 'relative', got {noise_scale!r}")
        if target not in TARGETS:
            raise ConfigError(f"noise target must be one of {', '.join(TARGETS)}, got {target!r}")
        if item_ids is not None and target != "items":
            raise ConfigError("item ids can only restrict the 'items' target")
        self.noise_scale, self.target = noise_scale, target
        self.severity_name = self.severity_name_for({"noise_scale": noise_scale})
        self.item_ids = None if item_ids is None else _item_tensor(item_ids)

    @classmethod
    def severity_name_for(cls, params: Mapping[str, Any]) -> str:
        return SEVERITY.get(params.get("noise_scale", "absolute"), SEVERITY["absolute"])[0]

    @classmethod
    def default_severity_for(cls, params: Mapping[str, Any]) -> float:
        return SEVERITY.get(params.get("noise_scale", "absolute"), SEVERITY["absolute"])[1]

    @classmethod
    def severity_names(cls) -> tuple[str, ...]:
        return tuple(name for name, _ in SEVERITY.values())

    @classmethod
    def severity_help(cls) -> str:
        (absolute, a), (relative, r) = SEVERITY["absolute"], SEVERITY["relative"]
        return (f"{absolute}, the noise variance (default {a:g}); with noise_scale=relative, {relative} s: "
                f"sigma = s * std of each table (default {r:g})")

    def targets(self, model: Recommender) -> list[tuple[str, slice | torch.Tensor, slice]]:
        """(parameter name, rows to perturb, rows whose std sets the relative scale) triples."""
        if self.target == "parameters":
            return [(name, slice(None), slice(None)) for name, p in model.named_parameters() if p.requires_grad]
        tables = model.item_tables() if self.target == "items" else model.embedding_tables()
        out: list[tuple[str, slice | torch.Tensor, slice]] = []
        for table in tables:
            whole = slice(table.offset, table.offset + table.rows)
            rows = whole if self.item_ids is None else self.item_ids + table.offset
            out.append((table.name, rows, whole))
        return out

    def check(self, model: Recommender, dataset: Dataset) -> None:
        if not self.targets(model):
            if self.target == "items" and model.embedding_tables():
                tables = ", ".join(sorted({t.name for t in model.embedding_tables()}))
                raise ConfigError(
                    f"model {model.name!r} has no items to add noise to: it has no item embedding table "
                    f"(its item representations are computed from the features); its tables are {tables}: "
                    "use --suite-param target=embeddings, or a feature suite"
                )
            raise ConfigError(f"model {model.name!r} has no {self.target} to add noise to")
        if self.item_ids is not None and len(self.item_ids):
            bad = self.item_ids[(self.item_ids < 0) | (self.item_ids >= dataset.n_items)]
            if len(bad):
                raise ConfigError(f"item id {int(bad[0])} is out of range (0..{dataset.n_items - 1})")

    def apply(self, model: Recommender, dataset: Dataset, generator: torch.Generator) -> PerturbedView:
        self.check(model, dataset)
        targets = self.targets(model)
        clone = model.weights_copy({name for name, _, _ in targets})  # untouched tensors stay shared
        params = dict(clone.named_parameters())
        sigmas: dict[str, float] = {}
        for name, rows, scale_rows in targets:
            param = params[name]
            target = param.data[rows]
            sigma = self._sigma(param.data[scale_rows])
            noise = torch.randn(target.shape, generator=generator).to(param.device, param.dtype)
            if sigma > 0:
                perturbed = target + sigma * noise
                if not bool(torch.isfinite(perturbed).all()):  # else: NaN scores, made-up metrics
                    raise ConfigError(f"noise {self.severity_name}={self.severity:g} overflows {name} "
                                      f"({param.dtype}): the perturbed weights are not finite numbers")
                param.data[rows] = perturbed
            sigmas[name] = sigma
        details: dict[str, Any] = {"noise_scale": self.noise_scale, "target": self.target, "effective_sigma": sigmas}
        if self.item_ids is not None:
            details["n_items_targeted"] = int(len(self.item_ids))
        return PerturbedView(clone, dataset, details)

    def _sigma(self, table: torch.Tensor) -> float:
        if self.noise_scale == "absolute":
            return math.sqrt(self.severity)
        return self.severity * float(table.float().std())

    def describe(self) -> dict[str, Any]:
        return {"suite": self.name, self.severity_name: self.severity, "noise_scale": self.noise_scale,
                "target": self.target}


def _item_tensor(item_ids: Sequence[int]) -> torch.Tensor:
    """Item ids as a long tensor. Each is checked first: torch raises an obscure overflow error for
    ids beyond 64 bits; ids beyond the catalogue are refused by :meth:`EmbeddingNoise.check`."""
    ids = []
    for item in item_ids:
        try:
            value = operator.index(item)
        except TypeError:
            raise ConfigError(f"item ids must be integers, got {item!r}") from None
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"item id {str(value)[:40]} is out of range")
        ids.append(value)
    return torch.as_tensor(ids, dtype=torch.long)
