"""Metric names (torch-free, so reports and the CI gate can validate them without loading torch)."""

from __future__ import annotations

from robustrec.errors import ConfigError

METRICS = ("recall", "precision", "map", "ndcg", "hit")
DEFAULT_TOPK = (5, 10, 20)


def metric_key(name: str, k: int) -> str:
    return f"{name}@{k}"


def parse_metric(key: str) -> tuple[str, int]:
    """``"recall@20" -> ("recall", 20)``; a clear error for anything else."""
    name, _, k = key.lower().partition("@")
    if name not in METRICS or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"unknown metric {key!r}; use one of {', '.join(METRICS)} followed by @k, e.g. recall@20")
    return name, int(k)
