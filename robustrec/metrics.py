"""Metric names (torch-free, so reports and the CI gate can validate them without loading torch)."""

from __future__ import annotations

import re

from robustrec.errors import ConfigError

#: Every metric here is a mean over users of a per-user value in [0, 1].
METRICS = ("recall", "precision", "map", "ndcg", "hit")
DEFAULT_TOPK = (5, 10, 20)
#: The one default metric of every command (model selection, reports, plots, the CI gate): MMRec's
#: validation metric. The paper's tables report recall@5 as well; it is one ``--metric`` away.
DEFAULT_METRIC = "recall@20"


def metric_key(name: str, k: int) -> str:
    return f"{name}@{k}"


#: The largest cut-off accepted: far beyond any catalogue, and short enough to convert safely.
MAX_K = 10**9


def parse_metric(key: str) -> tuple[str, int]:
    """``"recall@20" -> ("recall", 20)``; a clear error for anything else.

    ``k`` must be ASCII digits: ``str.isdigit`` also accepts characters such as "²" that ``int``
    cannot convert, and very long digit strings exceed what ``int`` converts.
    """
    name, _, k = str(key).lower().partition("@")
    if name not in METRICS or re.fullmatch(r"[0-9]{1,10}", k) is None or not 1 <= int(k) <= MAX_K:
        raise ConfigError(f"unknown metric {key!r}; use one of {', '.join(METRICS)} followed by @k, e.g. recall@20")
    return name, int(k)


def is_metric_key(key: str) -> bool:
    """Whether ``key`` names one of :data:`METRICS` at some k (such values lie in [0, 1])."""
    try:
        parse_metric(key)
    except ConfigError:
        return False
    return True
