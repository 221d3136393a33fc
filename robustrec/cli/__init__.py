"""The ``robustrec`` command: a thin shell over the public API.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which sets
``func`` on its parser) and is wired here. User errors (:class:`RobustRecError`) print one line on
stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import torch

from robustrec import __version__
from robustrec.errors import RobustRecError

COMMANDS = ("ingest", "train", "evaluate", "audit", "report", "check", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustrec",
        description="Train multimodal recommenders with robust strategies and audit their robustness.",
    )
    parser.add_argument("--version", action="version", version=f"robustrec {__version__}")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("ROBUSTREC_THREADS", "1")),
        help="torch CPU threads (default 1, or $ROBUSTREC_THREADS): the models' operations are small, and "
        "with more threads than free cores torch slows down many-fold (benchmarks/README.md)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"robustrec.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        print("robustrec: error: --threads must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except RobustRecError as exc:
        print(f"robustrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robustrec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
