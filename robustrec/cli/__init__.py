"""The ``robustrec`` command: a thin shell over the public API.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which sets
``func`` on its parser) and is wired here. What the user or their machine causes prints one line on
stderr and exits with status 2: user errors (:class:`RobustRecError`), and OS errors (a file that
cannot be read or written), MemoryError (an input too large) and RecursionError (an input nested
too deeply) that slipped past the checks at the edges. Every other exception is a programming error
and keeps its traceback. A closed stdout (``robustrec report ... | head -1``) ends quietly.

Startup is kept light: ``robustrec --help``, ``report``, ``check`` and ``compare`` answer without
importing torch (about 1.5 s by itself). Only the chosen command's module is imported; the others
appear in ``robustrec --help`` through :data:`SUMMARIES`, and torch is imported only for the
commands in :data:`TORCH_COMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
from collections.abc import Iterable, Sequence

from robustrec import __version__
from robustrec.errors import RobustRecError
from robustrec.io import os_error_text
from robustrec.numerics import MAX_THREADS, THREADS_ENV, check_threads, default_threads, threads_default

#: Every command, in the order ``robustrec --help`` lists them, with its one-line help (each
#: module's ``add_parser`` gives the same text; a test keeps them equal).
SUMMARIES = {
    "ingest": "build a dataset folder from raw CSV or Amazon files",
    "train": "train a model with a training strategy",
    "evaluate": "evaluate a saved run",
    "compare": "metrics of finished runs side by side",
    "audit": "evaluate trained runs under a perturbation suite",
    "diagnose": "flatness of trained runs: Hessian, sharpness, loss landscapes",
    "report": "tables and plots of robustness drops from audit records",
    "check": "CI gate: fail when robustness drops exceed budgets",
    "list": "models, strategies, suites, captioners and metrics, with their options",
    "demo": "train, audit and report end to end (the README's main job)",
    "study": "run a whole study from a spec file (train, select on validation, audit, report)",
}
COMMANDS = tuple(SUMMARIES)
#: The module of a command, where it is not the command's name: a submodule named ``list`` would
#: become the attribute ``robustrec.cli.list`` and hide the built-in ``list`` in this module.
MODULES = {"list": "listing"}
#: Commands that run models: torch is imported (and its thread count set) only for these.
TORCH_COMMANDS = frozenset({"ingest", "train", "evaluate", "audit", "diagnose", "demo", "list"})

#: Exit status when stdout was closed early (128 + SIGPIPE, as a process killed by the signal).
EXIT_BROKEN_PIPE = 141

THREADS_HELP = (f"torch CPU threads (default: 1, or ${THREADS_ENV}); more threads than free cores slow torch "
                "down many-fold. A run is resumed only with the thread count it started with")
NO_PROGRESS_HELP = "no progress report on stderr (a bar on a terminal, plain lines every 10 s otherwise)"


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option whose help does not already mention its default.

    Options without a meaningful default (None, a switch that is off, an empty list) say nothing.
    A list default such as ``(5, 10, 20)`` is shown as it is typed: ``5,10,20``.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower() or default is None or default is False
                or default is argparse.SUPPRESS or default in ([], ())):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` for commands whose description and epilog are laid out by hand."""


def build_parser(full: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`; those in ``full`` (default: all) with their
    options, the others only as a name and a line of help (so their modules are not imported)."""
    return _build(full)[0]


def command_parser(name: str) -> argparse.ArgumentParser:
    """The complete parser of one command (``robustrec NAME``)."""
    return _build([name])[1][name]


def _build(full: Iterable[str] | None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The main parser and the parsers of its commands, by name."""
    full = set(COMMANDS if full is None else full)
    parser = argparse.ArgumentParser(
        prog="robustrec", formatter_class=HelpFormatter,
        description="Train multimodal recommenders with robust strategies and audit their robustness.",
        epilog="The options --threads and --no-progress (--quiet) can be given before or after the command.",
    )
    parser.add_argument("--version", action="version", version=f"robustrec {__version__}")
    _add_global_options(parser, argparse.ArgumentParser.add_argument, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if name in full:
            importlib.import_module(f"robustrec.cli.{MODULES.get(name, name)}").add_parser(sub)
            _finish_command_parser(sub.choices[name])
        else:
            sub.add_parser(name, help=SUMMARIES[name])
    return parser, sub.choices


def _add_global_options(parser: argparse.ArgumentParser, add, top: bool) -> None:
    """--threads and --no-progress (--quiet), on the main parser (``top``) and on every command.

    argparse copies a command's defaults over what the main parser read, so on a command they
    default to SUPPRESS: ``robustrec --no-progress train`` keeps the main parser's value.
    """
    unset = {} if top else {"default": argparse.SUPPRESS}
    add(parser, "--threads", type=int, metavar="N", help=THREADS_HELP, **({"default": None} if top else unset))
    add(parser, "--no-progress", "--quiet", dest="no_progress", action="store_true", help=NO_PROGRESS_HELP,
        **unset)


def _finish_command_parser(parser: argparse.ArgumentParser) -> None:
    """Install the help formatter and the global options on a command's parser.

    A command module that still defines one of the global options itself keeps it; its default
    is turned into SUPPRESS for the reason given in :func:`_add_global_options`.
    """
    raw = issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)
    parser.formatter_class = RawDescriptionHelpFormatter if raw else HelpFormatter
    # argparse has no public list of a parser's options; _actions is the one it keeps.
    own = {option: action for action in parser._actions for option in action.option_strings}

    def add(target, *flags, **kwargs):
        taken = [flag for flag in flags if flag in own]
        for flag in taken:
            own[flag].default = argparse.SUPPRESS
        free = [flag for flag in flags if flag not in own]
        if free:
            target.add_argument(*free, **kwargs)

    _add_global_options(parser, add, top=False)


def thread_count(option: int | None) -> int:
    """--threads, else $ROBUSTREC_THREADS, else 1; ConfigError unless it is an integer in range.

    Read here rather than as the parser's default, so a bad environment value is a one-line error
    instead of a crash while the parser is built (which would also break ``--help``).
    """
    return default_threads() if option is None else check_threads(option, "--threads")


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (its first word that is not an option), without parsing it."""
    skip_value = False
    for word in argv:
        if skip_value:
            skip_value = False
        elif word == "--threads":
            skip_value = True
        elif not word.startswith("-"):
            return word
    return None


@contextlib.contextmanager
def _threads_for(command: str, threads: int):
    """Run ``command`` with ``threads`` torch threads: the default of every training, evaluation and
    encoder it runs (robustrec.numerics). Commands that run no model do not import torch."""
    if command not in TORCH_COMMANDS:
        yield
        return
    with threads_default(threads):
        yield


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = chosen_command(argv)
    parser = build_parser([chosen] if chosen in COMMANDS else [])
    args = parser.parse_args(argv)
    try:
        with _threads_for(args.command, thread_count(args.threads)):
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


__all__ = ["COMMANDS", "MAX_THREADS", "SUMMARIES", "THREADS_ENV", "build_parser", "command_parser", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
