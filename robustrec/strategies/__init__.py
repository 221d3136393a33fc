"""Training strategies and their registry.

``build_strategy("amr+mirror", ...)`` builds Mirror Gradient over AMR's objective: the part after
``+`` must be an update rule that accepts an ``objective``; the part before must be an objective.
"""

from __future__ import annotations

from typing import Any

from robustrec.errors import ConfigError
from robustrec.hparams import accepted, check_params, defaults, parse_params
from robustrec.registry import Registry
from robustrec.strategies.amr import AMR
from robustrec.strategies.base import Strategy
from robustrec.strategies.mirror import MirrorGradient
from robustrec.strategies.plain import Plain
from robustrec.strategies.sam import SAM, SSAMDynamic, SSAMFisher

STRATEGIES: Registry[Strategy] = Registry("strategy")
for _cls in (Plain, MirrorGradient, AMR, SAM, SSAMFisher, SSAMDynamic):
    STRATEGIES.register(_cls.name)(_cls)


def objectives() -> list[str]:
    """Strategies that only define the loss minimised (they can go before ``+``)."""
    return [n for n in STRATEGIES.names() if getattr(STRATEGIES.get(n), "is_objective", False)]


def update_rules() -> list[str]:
    """Strategies that can wrap an objective (they can go after ``+``)."""
    return [n for n in STRATEGIES.names() if "objective" in accepted(STRATEGIES.get(n))]


def _split(params: dict[str, Any], factory) -> tuple[dict[str, Any], dict[str, Any]]:
    own = set(accepted(factory))
    return {k: v for k, v in params.items() if k in own}, {k: v for k, v in params.items() if k not in own}


def with_run_seed(name: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """``params`` plus ``seed`` when a part of strategy ``name`` takes one and none was given, so runs
    with different seeds also draw different strategy randomness (e.g. SSAM's masks)."""
    if "seed" in params:
        return dict(params)
    takes_seed = any("seed" in accepted(STRATEGIES.get(part)) for part in name.split("+"))
    return {**params, "seed": seed} if takes_seed else dict(params)


def resolved_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every hyper-parameter strategy ``name`` runs with: each part's defaults, overridden by
    ``params`` (what run.json records, so a run says which a2 or rho it used without the code)."""
    resolved: dict[str, Any] = {}
    for part in name.split("+"):
        factory = STRATEGIES.get(part)
        resolved.update({k: v for k, v in defaults(factory).items() if k != "objective"})
    resolved.update(params)
    return resolved


def build_strategy(name: str, **params: Any) -> Strategy:
    """Build a strategy by name; ``a+b`` composes objective ``a`` under update rule ``b``.

    Parameters are routed to whichever part accepts them; unknown ones are an error.
    """
    parts = name.split("+")
    if len(parts) == 1:
        factory = STRATEGIES.get(name)
        check_params(factory, params, f"strategy {name!r}")
        return factory(**params)
    if len(parts) != 2:
        raise ConfigError(f"strategy {name!r}: combine at most two strategies, e.g. amr+mirror")
    inner_name, outer_name = parts
    inner_factory, outer_factory = STRATEGIES.get(inner_name), STRATEGIES.get(outer_name)
    usage = (
        f"use OBJECTIVE+RULE with an objective in {{{', '.join(objectives())}}} "
        f"and a rule in {{{', '.join(update_rules())}}}"
    )
    if "objective" not in accepted(outer_factory):
        raise ConfigError(
            f"strategy {name!r} is not defined: {outer_name!r} cannot wrap another strategy; {usage}"
        )
    if not getattr(inner_factory, "is_objective", False):
        raise ConfigError(
            f"strategy {name!r} is not defined: {inner_name!r} is an update rule, not an objective, "
            f"and two update rules cannot be combined; {usage}"
        )
    outer_params, rest = _split(params, outer_factory)
    inner_params, unknown = _split(rest, inner_factory)
    if unknown:
        raise ConfigError(f"strategy {name!r} has no parameter {sorted(unknown)[0]!r}")
    return outer_factory(objective=inner_factory(**inner_params), **outer_params)


def parse_strategy_params(name: str, pairs: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings for strategy ``name`` (each part of ``a+b`` takes its own keys)."""
    factories = [STRATEGIES.get(part) for part in name.split("+")]
    params: dict[str, Any] = {}
    for pair in pairs:
        key = pair.partition("=")[0].strip().replace("-", "_")
        owner = next((f for f in factories if key in accepted(f)), factories[-1])
        params.update(parse_params(owner, [pair], f"strategy {name!r}"))
    return params


__all__ = [
    "AMR",
    "SAM",
    "STRATEGIES",
    "MirrorGradient",
    "Plain",
    "SSAMDynamic",
    "SSAMFisher",
    "Strategy",
    "build_strategy",
    "objectives",
    "parse_strategy_params",
    "update_rules",
    "with_run_seed",
]
