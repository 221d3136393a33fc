"""Optimizer factory: the base optimizer every strategy steps (the paper's Table 6 choices)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from robustrec.errors import ConfigError

OPTIMIZERS = ("adam", "sgd", "rmsprop", "adagrad")


def build_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float = 1e-3,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    if lr <= 0:
        raise ConfigError(f"learning rate must be positive, got {lr}")
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        if momentum:
            raise ConfigError("--momentum does not apply to adam")
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adagrad":
        if momentum:
            raise ConfigError("--momentum does not apply to adagrad")
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
