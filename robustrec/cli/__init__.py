"""The ``robustrec`` command: a thin shell over the public API.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which sets
``func`` on its parser) and is wired here. What the user or their machine causes prints one line on
stderr and exits with status 2: user errors (:class:`RobustRecError`), and OS errors (a file that
cannot be read or written), MemoryError (an input too large) and RecursionError (an input nested
too deeply) that slipped past the checks at the edges. Every other exception is a programming error
and keeps its traceback. A closed stdout (``robustrec report ... | head -1``) ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys

import torch

from robustrec import __version__
from robustrec.errors import ConfigError, RobustRecError
from robustrec.io import os_error_text

COMMANDS = ("ingest", "train", "evaluate", "audit", "report", "check", "demo")


#: Exit status when stdout was closed early (128 + SIGPIPE, as a process killed by the signal).
EXIT_BROKEN_PIPE = 141
THREADS_ENV = "ROBUSTREC_THREADS"
MAX_THREADS = 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustrec",
        description="Train multimodal recommenders with robust strategies and audit their robustness.",
    )
    parser.add_argument("--version", action="version", version=f"robustrec {__version__}")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch CPU threads (default 1, or ${THREADS_ENV}): the models' operations are small, and "
        "with more threads than free cores torch slows down many-fold (benchmarks/README.md). Recorded with "
        "each run: a run is resumed only with the thread count it started with",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"robustrec.cli.{name}")
        module.add_parser(sub)
    return parser


def thread_count(option: int | None) -> int:
    """--threads, else $ROBUSTREC_THREADS, else 1; ConfigError unless it is an integer in range.

    Read here rather than as the parser's default, so a bad environment value is a one-line error
    instead of a crash while the parser is built (which would also break ``--help``).
    """
    if option is not None:
        value, source = option, "--threads"
    else:
        text = os.environ.get(THREADS_ENV, "1")
        source = f"${THREADS_ENV}"
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{source} must be an integer, got {text[:40]!r}") from None
    if not 1 <= value <= MAX_THREADS:
        raise ConfigError(f"{source} must be between 1 and {MAX_THREADS}, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        torch.set_num_threads(thread_count(args.threads))
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, where it is caught, not at interpreter exit
        return code
    except RobustRecError as exc:
        return _error(args.command, str(exc))
    except BrokenPipeError:
        return _stdout_closed()
    except OSError as exc:  # a file the checks at the edges did not cover
        return _error(args.command, os_error_text(exc))
    except MemoryError:
        return _error(args.command, "out of memory (is an input or option far larger than intended?)")
    except RecursionError:
        return _error(args.command, "an input is nested too deeply to process")
    except KeyboardInterrupt:
        print(f"robustrec {args.command}: interrupted", file=sys.stderr)
        return 130


def _error(command: str, message: str) -> int:
    """Print one line (the message's first) on stderr; return the bad-input exit status."""
    first = (message.strip().splitlines() or ["unknown error"])[0]
    print(f"robustrec {command}: error: {first}", file=sys.stderr)
    return 2


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head -1``): stop quietly.

    Python's recipe: point the stdout file descriptor at /dev/null, so the flush at interpreter exit
    does not fail again and print "Exception ignored ... BrokenPipeError".
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # stdout has no file descriptor (captured in-process): nothing is flushed at exit
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
