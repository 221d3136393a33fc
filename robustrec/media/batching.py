"""Consecutive batches of work (texts to encode, images to caption), counted in a progress report.

The encoders and the captioners both cut their inputs into batches of ``batch_size``; this is the
one place that does it, and that reports the count through :mod:`robustrec.progress`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from robustrec.errors import ConfigError
from robustrec.progress import progress as progress_report

T = TypeVar("T")


def batch_ranges(n: int, batch_size: int, *, progress: bool = False, desc: str = "",
                 unit: str = "items") -> Iterator[range]:
    """Index ranges ``0..n-1`` of ``batch_size`` (the last may be shorter). With ``progress``, the
    indices are counted in a :func:`robustrec.progress.progress` report as each batch is done (no
    report for no work: a fully cached input says nothing)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    with progress_report(n, desc=desc, unit=unit, enabled=progress and n > 0) as report:
        for start in range(0, n, batch_size):
            chunk = range(start, min(start + batch_size, n))
            yield chunk
            report.update(len(chunk))


def batched(items: Sequence[T], batch_size: int) -> Iterator[list[T]]:
    """Consecutive slices of ``items`` of length ``batch_size`` (the last may be shorter)."""
    for chunk in batch_ranges(len(items), batch_size):
        yield list(items[chunk.start : chunk.stop])


__all__ = ["batch_ranges", "batched"]
