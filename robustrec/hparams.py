"""Typed keyword hyper-parameters: validate names and convert ``key=value`` strings by annotation."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

from robustrec.errors import ConfigError

_SKIP = {"self", "dataset", "generator"}


def accepted(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword hyper-parameters a constructor accepts, by name."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    return {
        name: p
        for name, p in inspect.signature(target).parameters.items()
        if name not in _SKIP and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    return {n: p.default for n, p in accepted(factory).items() if p.default is not inspect.Parameter.empty}


def _annotation(factory: Callable[..., Any], name: str) -> Any:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target).get(name, str)
    except Exception:  # pragma: no cover - unresolved forward references
        return str


def type_name(annotation: Any) -> str:
    """A short readable name of a parameter's annotation: ``int``, ``float|None``, ``append|prepend``
    (a Literal's choices), ``int,...`` (a comma-separated list)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "|".join(map(str, args))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return "|".join("None" if a is type(None) else type_name(a) for a in args)
    if origin in (tuple, list) and args:
        return f"{type_name(args[0])},..."
    return getattr(annotation, "__name__", str(annotation))


def describe(factory: Callable[..., Any], skip: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Each keyword hyper-parameter of ``factory`` (but ``skip``): ``{"type": ..., "default": ...}``,
    without "default" when the parameter is required. Defaults are JSON values (a tuple becomes a list;
    another object its ``repr``), so ``robustrec list --json`` can print them."""
    out: dict[str, dict[str, Any]] = {}
    for name, parameter in accepted(factory).items():
        if name in skip:
            continue
        entry: dict[str, Any] = {"type": type_name(_annotation(factory, name))}
        if parameter.default is not inspect.Parameter.empty:
            entry["default"] = _json_value(parameter.default)
        out[name] = entry
    return out


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    return repr(value)


def numeric_params(factory: Callable[..., Any]) -> list[tuple[str, type]]:
    """``(name, int or float)`` for each numeric keyword hyper-parameter (``int | None`` included)."""
    out = []
    for name in accepted(factory):
        hint = _annotation(factory, name)
        kinds = [a for a in typing.get_args(hint) or (hint,) if a in (int, float)]
        if kinds:
            out.append((name, kinds[0]))
    return out


def convert(value: str, annotation: Any, name: str) -> Any:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        if value.lower() == "none":
            return None
        return convert(value, args[0], name)
    if origin in (tuple, list) and args:
        return tuple(convert(v, args[0], name) for v in value.split(",") if v)
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{name} must be one of {', '.join(map(str, typing.get_args(annotation)))}")
        return value
    try:
        if annotation is bool:
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
            raise ValueError
        if annotation in (int, float, str):
            return annotation(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a valid {annotation.__name__}") from None
    return value


def parse_params(factory: Callable[..., Any], pairs: Iterable[str], kind: str) -> dict[str, Any]:
    """Parse ``["knn_k=10", "dropout=0.8"]`` into typed keyword arguments for ``factory``."""
    known = accepted(factory)
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--param expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in known:
            raise ConfigError(f"{kind} has no parameter {key!r}; known: {', '.join(sorted(known)) or 'none'}")
        params[key] = convert(value.strip(), _annotation(factory, key), key)
    return params


def check_params(factory: Callable[..., Any], params: dict[str, Any], kind: str) -> None:
    known = accepted(factory)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"{kind} has no parameter {unknown[0]!r}; known: {', '.join(sorted(known)) or 'none'}")
