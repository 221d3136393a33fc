"""``robustrec list``: what can be named on the command line, with each entry's options and defaults.

Everything comes from the registries (models, strategies, suites, captioners) and from
:mod:`robustrec.metrics`, read by :func:`robustrec.hparams.describe`, so a newly registered model
or suite is listed with its hyper-parameters without touching this file. (The module is not named
``list``: as the attribute ``robustrec.cli.list`` it would hide the built-in there.)
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from robustrec.cli.common import add_json_argument, print_json
from robustrec.hparams import describe
from robustrec.metrics import DEFAULT_METRIC, DEFAULT_TOPK, METRICS

KINDS = ("models", "strategies", "suites", "captioners", "metrics")

#: One line per metric (robustrec/evaluate.py has the formulas); a test checks every metric has one.
METRIC_SUMMARIES = {
    "recall": "share of the user's held-out items found in the top k",
    "precision": "share of the top k that are held-out items",
    "map": "mean average precision of the top k",
    "ndcg": "discounted gain of the hits in the top k, relative to the best possible",
    "hit": "1 when any held-out item is in the top k",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="models, strategies, suites, captioners and metrics, with their options",
        description="List what robustrec knows, from its registries: each model's and strategy's "
        "hyper-parameters (--param / --strategy-param KEY=VALUE), each suite's severity and options, each "
        "captioner's options, and the metrics with their default.",
    )
    p.add_argument("kind", nargs="?", choices=KINDS, metavar="KIND",
                   help=f"one of: {', '.join(KINDS)} (default: all of them)")
    add_json_argument(p)
    p.set_defaults(func=run)


def entry(name: str, factory: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A registered name: its one-line summary and its options (``describe``)."""
    return {"name": name, "summary": summary_of(factory), "params": describe(factory, skip)}


def summary_of(factory: Callable[..., Any]) -> str:
    """The factory's ``summary`` attribute, else the first sentence of its own docstring or of its
    module's (a docstring inherited from a base class says nothing about this entry)."""
    text = getattr(factory, "summary", "") or vars(factory).get("__doc__") or sys.modules[factory.__module__].__doc__
    first = " ".join((text or "").split("\n\n")[0].split()).replace("``", "")
    return re.split(r"(?<=[a-z)])\. ", first)[0].rstrip(".")


def models() -> list[dict[str, Any]]:
    from robustrec.models import MODELS

    return [entry(name, MODELS.get(name)) for name in MODELS.names()]


def strategies() -> list[dict[str, Any]]:
    # ``objective`` is how "amr+mirror" composes two strategies, not an option given by value.
    from robustrec.strategies import STRATEGIES

    return [entry(name, STRATEGIES.get(name), skip=("objective",)) for name in STRATEGIES.names()]


def suites() -> list[dict[str, Any]]:
    from perturbations.base import PERTURBATIONS

    out = []
    for name in PERTURBATIONS.names():
        suite = PERTURBATIONS.get(name)  # every Perturbation declares its severity (perturbations/base.py)
        out.append({**entry(name, suite, skip=("severity",)), "severity_name": list(suite.severity_names()),
                    "default_severity": suite.default_severity, "severity_help": suite.severity_help()})
    return out


def captioners() -> list[dict[str, Any]]:
    from captioning.base import CAPTIONERS

    return [entry(name, CAPTIONERS.get(name)) for name in CAPTIONERS.names()]


def metrics() -> list[dict[str, Any]]:
    return [{"name": name, "summary": METRIC_SUMMARIES[name], "params": {}} for name in METRICS]


LISTERS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "models": models, "strategies": strategies, "suites": suites, "captioners": captioners, "metrics": metrics,
}


def option_text(params: dict[str, dict[str, Any]]) -> str:
    """``knn_k=10 (int), path (str|Path, required)``."""
    parts = []
    for name, info in params.items():
        if "default" in info:
            parts.append(f"{name}={_shown(info['default'])} ({info['type']})")
        else:
            parts.append(f"{name} ({info['type']}, required)")
    return ", ".join(parts) or "no options"


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def render(kind: str, entries: list[dict[str, Any]]) -> str:
    """An entry per block: its name and summary on one line, its options indented below."""
    width = max(len(e["name"]) for e in entries)
    lines = []
    for e in entries:
        lines.append(f"{e['name'].ljust(width)}  {e['summary']}".rstrip())
        details = []
        if kind == "suites":
            details.append(f"severity: {e['severity_help']}")
        if kind != "metrics":
            details.append(f"options: {option_text(e['params'])}")
        for detail in details:
            lines += textwrap.wrap(detail, 100, initial_indent="    ", subsequent_indent="      ")
    if kind == "metrics":
        lines.append(f"written as NAME@K, e.g. {DEFAULT_METRIC} (the default metric of every command); "
                     f"default cut-offs: {','.join(map(str, DEFAULT_TOPK))}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(KINDS)
    listed = {kind: LISTERS[kind]() for kind in kinds}
    if args.json:
        document: dict[str, Any] = dict(listed)
        if "metrics" in listed:
            document["default_metric"], document["default_topk"] = DEFAULT_METRIC, list(DEFAULT_TOPK)
        print_json(document)
        return 0
    blocks = [render(kind, entries) if args.kind else f"{kind}:\n{render(kind, entries)}"
              for kind, entries in listed.items()]
    print("\n\n".join(blocks))
    return 0
