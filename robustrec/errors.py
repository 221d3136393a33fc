"""User-facing errors.

Anything a user can cause (a missing file, a bad option, a corrupt checkpoint) raises
:class:`RobustRecError` with a one-line message; the CLI prints it and exits with status 2.
Programming errors stay ordinary exceptions so their tracebacks are not hidden.
"""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of ``exc``'s message, cut at ``limit`` characters (its type name when the
    message is empty): how an error from a library is quoted inside a one-line message."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if limit is None else text[:limit]


class RobustRecError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class DataError(RobustRecError):
    """A dataset folder or raw file that cannot be read or is inconsistent."""


class ConfigError(RobustRecError):
    """An invalid option, hyper-parameter or name."""
