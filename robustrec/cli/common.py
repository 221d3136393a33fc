"""Helpers shared by the CLI commands (torch-free: the light commands import this module too)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustrec.devices import parse_device
from robustrec.errors import ConfigError
from robustrec.io import dumps_json
from robustrec.metrics import METRICS, parse_metric

if TYPE_CHECKING:
    from robustrec.data.dataset import Dataset


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="MMRec-format dataset folder (default: the built-in synthetic shop, generated on first use)",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu (default) or cuda[:N]")


def device_name(text: str) -> str:
    """A device name robustrec can use (whether the device exists is checked when it is used)."""
    try:
        parse_device(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_runs_argument(parser: argparse.ArgumentParser, help: str, many: bool = True) -> None:
    """Run folders, given the same way in every command: as positional arguments.

    ``--run RUN`` (how evaluate and audit took them before) is still accepted, with a note; see
    :func:`runs_given`.
    """
    parser.add_argument("runs", nargs="*", metavar="RUN", help=help)
    parser.add_argument("--run", dest="run_option", action="extend", nargs="+", default=[], help=argparse.SUPPRESS)


def runs_given(args: argparse.Namespace, command: str, many: bool = True) -> list[str]:
    """The run folders of :func:`add_runs_argument`: positional ones, then any given with --run."""
    if args.run_option:
        print(f"robustrec {command}: note: --run is no longer needed; give run folders as arguments "
              f"(robustrec {command} RUN{' ...' if many else ''})", file=sys.stderr)
    runs = [*args.runs, *args.run_option]
    if not runs:
        raise ConfigError(f"give {'at least one run folder' if many else 'a run folder'} (robustrec {command} RUN)")
    if not many and len(runs) > 1:
        raise ConfigError(f"give one run folder, got {len(runs)}")
    return runs


def open_data(path: str | Path | None, progress: bool = True) -> Dataset:
    """The dataset at ``path``; the embedded one when None (built on first use, with progress)."""
    from robustrec.data import open_dataset

    return open_dataset(path, progress=progress)


#: Integers given on the command line become torch int64 values (item ids, seeds): beyond this
#: range torch raises OverflowError deep inside, so the options refuse them up front.
INT64 = (-(2**63), 2**63 - 1)


def int_list(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> ``(1, 2, 3)``; each value must fit in 64 bits."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {_short(text)}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    for value in values:
        if not INT64[0] <= value <= INT64[1]:
            raise argparse.ArgumentTypeError(f"{_short(str(value))} is out of range (integers here fit in 64 bits)")
    return values


def float_list(text: str) -> tuple[float, ...]:
    """``"1e-6,1e-4"`` -> ``(1e-06, 0.0001)``; NaN and infinity are refused (see :func:`finite_float`)."""
    values = tuple(finite_float(v) for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def finite_float(text: str) -> float:
    """A finite number. ``float`` accepts "nan" and "inf", which no option means: an infinite
    severity or tolerance turns every result into a made-up number or every check into a pass."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {_short(text)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {_short(text)}")
    return value


def _short(text: str, limit: int = 40) -> str:
    """``repr`` of user text, cut so that a huge argument still gives a one-line message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (for machines) instead of the table")


def print_json(document: Any) -> None:
    """``document`` as indented JSON on stdout (NaN and infinity refused, as in every file written)."""
    print(dumps_json(document, "<stdout>", indent=2))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned plain-text table: columns two spaces apart, numbers right-aligned, ``None`` as "-"."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_is_number(row[i]) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric))
        return "  ".join(padded).rstrip()

    return "\n".join([line(list(map(str, headers))), *(line(row) for row in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def metrics_table(splits: Mapping[str, Mapping[str, float]]) -> str:
    """Metrics of several splits as one table: a row per (split, k), a column per metric.

    ``{"valid": {"recall@20": ..}, "test": {..}}`` -> ::

        split   k  recall  precision     map    ndcg     hit
        valid  20  0.0812     0.0204  0.0311  0.0455  0.3125
    """
    names = [m for m in METRICS if any(parse_metric(key)[0] == m for values in splits.values() for key in values)]
    rows = []
    for split, values in splits.items():
        for k in sorted({parse_metric(key)[1] for key in values}):
            rows.append([split, k, *(values.get(f"{m}@{k}") for m in names)])
    return format_table(["split", "k", *names], rows)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
