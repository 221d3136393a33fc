"""Progress of long work: a tqdm bar on a terminal, a plain line every few seconds otherwise.

A tqdm bar redraws itself with carriage returns. On a terminal that is what a user wants; in a CI log
or a file it is not: one training of 60 epochs wrote 42 kB of bar updates into a log. So
:func:`progress` draws a bar only when its stream is a terminal, and otherwise prints one plain line
at most every :data:`INTERVAL` seconds (and one when the work ends)::

    train bm3/mirror: 12/60 epochs (20%), 31 s, loss=0.5012 recall@20=0.0761

Every piece of long work in robustrec (training, audits, encoding, captioning, the demo) reports
through this module, so ``--no-progress`` and the output format are the same everywhere.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

#: Seconds between two plain progress lines (override with $ROBUSTREC_PROGRESS_INTERVAL).
INTERVAL = 10.0
INTERVAL_ENV = "ROBUSTREC_PROGRESS_INTERVAL"


class Progress:
    """A counter of finished work that reports itself; a context manager that closes itself.

    ``update(n)`` counts ``n`` more units; ``set_postfix(...)`` sets the ``key=value`` pairs shown
    after the count. This base class reports nothing (progress turned off).
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        """Finish the report (idempotent)."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainProgress(Progress):
    """Plain lines, at most one every ``interval`` seconds, and a last one on close (unless the last
    line already showed the final count)."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int, stream: TextIO,
                 interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(total, desc, unit, initial)
        self.stream, self.interval, self.clock = stream, interval, clock
        self.start = self.last = clock()
        self.closed = False
        self.written: tuple[int, str] | None = None  # the count and postfix of the last line

    def update(self, n: int = 1) -> None:
        super().update(n)
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._write(now)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.written != (self.n, self.postfix):
                self._write(self.clock())

    def line(self, now: float) -> str:
        """``"desc: 12/60 epochs (20%), 31 s, key=value"``."""
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        label = f"{self.desc}: " if self.desc else ""
        return f"{label}{count} {self.unit}{share}, {now - self.start:.0f} s{postfix}"

    def _write(self, now: float) -> None:
        self.written = (self.n, self.postfix)
        print(self.line(now), file=self.stream, flush=True)


class BarProgress(Progress):
    """A tqdm bar (only on a terminal)."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int, stream: TextIO) -> None:
        from tqdm.auto import tqdm

        super().__init__(total, desc, unit, initial)
        self.bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, file=stream, leave=False)

    def update(self, n: int = 1) -> None:
        super().update(n)
        self.bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        super().set_postfix(**values)
        self.bar.set_postfix(values)

    def close(self) -> None:
        self.bar.close()


def progress(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True, initial: int = 0,
             stream: TextIO | None = None, interval: float | None = None) -> Progress:
    """A progress report on ``stream`` (default stderr): a bar on a terminal, plain lines otherwise,
    nothing when not ``enabled``."""
    if not enabled:
        return Progress(total, desc, unit, initial)
    stream = sys.stderr if stream is None else stream
    if _is_terminal(stream):
        return BarProgress(total, desc, unit, initial, stream)
    return PlainProgress(total, desc, unit, initial, stream, default_interval() if interval is None else interval)


def track(items: Iterable[T], total: int | None = None, **options: Any) -> Iterator[T]:
    """Yield ``items`` while counting them in a :func:`progress` report (closed at the end)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(total, **options) as report:
        for item in items:
            yield item
            report.update()


def default_interval() -> float:
    """:data:`INTERVAL`, or $ROBUSTREC_PROGRESS_INTERVAL when it is a positive finite number."""
    text = os.environ.get(INTERVAL_ENV)
    if text:
        try:
            value = float(text)
        except ValueError:
            return INTERVAL
        if 0 <= value < float("inf"):
            return value
    return INTERVAL


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
