"""Helpers for the strategy tests: build (model, optimizer, strategy) and run seeded epochs.

Imported by the test modules beside it (pytest puts this folder on sys.path)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustrec.data.dataset import Dataset
from robustrec.data.sampling import BPRSampler
from robustrec.hparams import accepted
from robustrec.models import Recommender, build_model
from robustrec.optim import build_optimizer
from robustrec.strategies import STRATEGIES, Strategy, build_strategy, objectives, update_rules

#: Options that make every code path run within two short epochs (applied where a strategy accepts them).
FAST_PATHS = {"beta": 1, "update_freq": 1, "num_samples": 4}


def strategy_names() -> list[str]:
    """Every registered strategy and every objective+rule composition (``plain+rule`` is ``rule``)."""
    return STRATEGIES.names() + [f"{o}+{r}" for o in objectives() if o != "plain" for r in update_rules()]


def fast_params(name: str, **params) -> dict:
    """FAST_PATHS restricted to what strategy ``name`` (any part of it) accepts, plus ``params``."""
    known = {k for part in name.split("+") for k in accepted(STRATEGIES.get(part))}
    return {**{k: v for k, v in FAST_PATHS.items() if k in known}, **params}


@dataclass
class Setup:
    model: Recommender
    optimizer: torch.optim.Optimizer
    strategy: Strategy

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def make(
    dataset: Dataset,
    strategy: str,
    model: str = "vbpr",
    optimizer: str = "adam",
    lr: float = 0.05,
    momentum: float = 0.0,
    model_params: dict | None = None,
    **params,
) -> Setup:
    net = build_model(model, dataset, generator=torch.Generator().manual_seed(0), **(model_params or {}))
    opt = build_optimizer(optimizer, net.parameters(), lr=lr, momentum=momentum)
    strat = build_strategy(strategy, **params)
    strat.setup(net, opt)
    return Setup(net, opt, strat)


def run_epochs(
    setup: Setup,
    dataset: Dataset,
    epochs: range | list[int],
    total: int,
    batch_size: int = 64,
    gens: tuple[torch.Generator, torch.Generator] | None = None,
) -> list[float]:
    """Run the given epochs as the trainer does; returns the batch losses."""
    sample_gen, model_gen = gens or (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    sampler = BPRSampler(dataset, batch_size)
    losses = []
    for epoch in epochs:
        setup.model.train()
        setup.model.pre_epoch(model_gen)
        setup.strategy.on_epoch_start(epoch, total)
        for batch in sampler.epoch(sample_gen, model_gen):
            losses.append(setup.strategy.step(batch))
    return losses


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], **tol) for k in a)
