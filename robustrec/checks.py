"""Checks of numeric hyper-parameters, shared by every model and training strategy constructor.

Each check returns the value converted (``int`` for counts, ``float`` for the rest) or raises a
one-line :class:`~robustrec.errors.ConfigError` naming the owner and the parameter, for example
``vbpr: embedding_size must be an integer >= 1, got -1``. Constructors call them before building
anything, so a bad value never reaches torch (where it would end in a traceback).

NaN and infinity are refused everywhere. Ad-hoc checks miss them: ``not rho > 0`` catches NaN but
lets inf through, and ``int(nan)`` raises ValueError rather than a ConfigError. Booleans are not
numbers here (``True`` is an ``int`` in Python), and neither are strings: the CLI converts
``key=value`` strings by annotation before a constructor sees them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from robustrec.errors import ConfigError


def count(owner: str, name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer >= ``minimum`` (and <= ``maximum``): a size, a number of layers, samples or epochs,
    a seed (3.0 counts as 3)."""
    requirement = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    number = _finite(owner, name, value, requirement)
    if number != int(number) or number < minimum or (maximum is not None and number > maximum):
        raise _error(owner, name, value, requirement)
    return int(number)


def optional_count(owner: str, name: str, value: Any, minimum: int = 1) -> int | None:
    """:func:`count`, or ``None`` where ``None`` has a meaning of its own (e.g. "no projection")."""
    return None if value is None else count(owner, name, value, minimum)


def non_negative(owner: str, name: str, value: Any) -> float:
    """A finite number >= 0: a loss weight, a regularisation coefficient, a perturbation size."""
    return _within(owner, name, value, "a finite number >= 0", low=0.0)


def positive(owner: str, name: str, value: Any) -> float:
    """A finite number > 0 (e.g. SAM's radius: 0 would divide by a zero-length perturbation)."""
    return _within(owner, name, value, "a finite number > 0", low=0.0, low_open=True)


def fraction(owner: str, name: str, value: Any, *, below_one: bool = False) -> float:
    """A share or probability in [0, 1], or in [0, 1) with ``below_one`` (dropout: 1 keeps nothing)."""
    interval = "[0, 1)" if below_one else "[0, 1]"
    return _within(owner, name, value, f"a number in {interval}", low=0.0, high=1.0, high_open=below_one)


def flag(owner: str, name: str, value: Any) -> bool:
    """A boolean (``bool("false")`` is True, so a string is refused rather than converted)."""
    if not isinstance(value, bool):
        raise _error(owner, name, value, "true or false")
    return value


def choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices`` (a string option such as an aggregation mode)."""
    if value not in choices:
        raise _error(owner, name, value, f"one of {', '.join(choices)}")
    return value


def _within(
    owner: str,
    name: str,
    value: Any,
    requirement: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    number = _finite(owner, name, value, requirement)
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if below or above:
        raise _error(owner, name, value, requirement)
    return float(number)


def _finite(owner: str, name: str, value: Any, requirement: str) -> float | int:
    """``value`` itself when it is a finite real number (not a bool); else the ConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _error(owner, name, value, requirement)
    # (ints are finite; math.isfinite would overflow on a huge one)
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):
        raise _error(owner, name, value, requirement)
    return value


def _error(owner: str, name: str, value: Any, requirement: str) -> ConfigError:
    return ConfigError(f"{owner}: {name} must be {requirement}, got {value!r}")
