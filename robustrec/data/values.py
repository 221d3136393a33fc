"""Numbers read from text fields of raw and dataset files, checked in one place.

``float("nan")``, ``float("inf")`` and ``float("1e999")`` all succeed, and ``int("1" * 30)`` gives an
id no array can hold, so every number that ingest or the ``.inter`` reader takes from a file goes
through these helpers. Each problem is a one-line DataError that names the place (``file:line``).
"""

from __future__ import annotations

import math

from robustrec.errors import DataError

#: Users and items index int32 arrays (CSR graphs, embedding tables), so an id must be below 2**31.
ID_LIMIT = 2**31
#: Unix timestamps (seconds or, as in the 2023 Amazon reviews, milliseconds) must fit in int64.
TIME_LIMIT = 2**63
_SHOWN = 40  # characters of a bad value quoted in a message


def finite_number(text: str, where: str, what: str) -> float:
    """``text`` as a float; DataError unless it is a finite number (NaN, inf and 1e999 are refused)."""
    try:
        value = float(text)
    except (ValueError, TypeError):
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where}: {what} {_quote(text)} is not a finite number")
    return value


def bounded_int(text: str, where: str, what: str, limit: int = ID_LIMIT) -> int:
    """``text`` as an integer in ``[0, limit)``; DataError otherwise (a huge id never reaches numpy)."""
    stripped = str(text).strip()
    if not stripped.isascii() or not stripped.isdigit():
        raise DataError(f"{where}: {what} {_quote(text)} is not a non-negative integer")
    if len(stripped) > len(str(limit)) or int(stripped) >= limit:
        raise DataError(f"{where}: {what} {_quote(text)} is out of range (must be below {limit:,})")
    return int(stripped)


def unix_time(value: float, where: str, text: str) -> int:
    """A finite number of seconds (or milliseconds) as an int64-sized integer."""
    if not abs(value) < TIME_LIMIT:
        raise DataError(f"{where}: timestamp {_quote(text)} is out of range")
    return int(value)


def _quote(text: object) -> str:
    text = str(text)
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")
