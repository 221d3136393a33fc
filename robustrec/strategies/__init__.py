"""Training strategies and their registry.

``build_strategy("amr+mirror", ...)`` builds Mirror Gradient over AMR's objective: the part after
``+`` must be an update rule that accepts an ``objective``; the part before must be an objective.
"""

from __future__ import annotations

from typing import Any

from robustrec.errors import ConfigError
from robustrec.hparams import accepted, check_params
from robustrec.registry import Registry
from robustrec.strategies.base import Strategy
from robustrec.strategies.mirror import MirrorGradient
from robustrec.strategies.plain import Plain

STRATEGIES: Registry[Strategy] = Registry("strategy")
for _cls in (Plain, MirrorGradient):
    STRATEGIES.register(_cls.name)(_cls)


def _split(params: dict[str, Any], factory) -> tuple[dict[str, Any], dict[str, Any]]:
    own = set(accepted(factory))
    return {k: v for k, v in params.items() if k in own}, {k: v for k, v in params.items() if k not in own}


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
    if "objective" not in accepted(outer_factory):
        raise ConfigError(f"strategy {name!r} is not defined: {outer_name!r} cannot wrap another strategy")
    if not getattr(inner_factory, "is_objective", False):
        raise ConfigError(f"strategy {name!r} is not defined: {inner_name!r} is an update rule, not an objective")
    outer_params, rest = _split(params, outer_factory)
    inner_params, unknown = _split(rest, inner_factory)
    if unknown:
        raise ConfigError(f"strategy {name!r} has no parameter {sorted(unknown)[0]!r}")
    return outer_factory(objective=inner_factory(**inner_params), **outer_params)


__all__ = ["STRATEGIES", "Strategy", "build_strategy", "MirrorGradient", "Plain"]
