"""Helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robustrec.data.dataset import Dataset
from robustrec.errors import ConfigError


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="MMRec-format dataset folder (default: the built-in synthetic shop, generated on first use)",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")


def open_data(path: str | Path | None) -> Dataset:
    from robustrec.data import open_dataset

    return open_dataset(path)


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    print(title)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=None))


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
