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
        return _adam(params, lr, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adagrad":
        if momentum:
            raise ConfigError("--momentum does not apply to adagrad")
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def _adam(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where PyTorch supports it (CPU and CUDA since torch 2.4).

    The same update as the default implementation (up to float rounding), about three times faster on
    CPU for large tables such as BM3's learnable image features (1.7M entries on ml100k).
    """
    if params and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        except RuntimeError:  # an older torch without the fused CPU kernel
            pass
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
