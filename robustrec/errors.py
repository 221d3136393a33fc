"""User-facing errors.

Anything a user can cause (a missing file, a bad option, a corrupt checkpoint) raises
:class:`RobustRecError` with a one-line message; the CLI prints it and exits with status 2.
Programming errors stay ordinary exceptions so their tracebacks are not hidden.
"""


class RobustRecError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class DataError(RobustRecError):
    """A dataset folder or raw file that cannot be read or is inconsistent."""


class ConfigError(RobustRecError):
    """An invalid option, hyper-parameter or name."""
