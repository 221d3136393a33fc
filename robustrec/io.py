"""Small file helpers: atomic writes (temporary name + rename), strict JSON, and output checks.

Every helper here turns the user's environment and input into one-line errors that name the file:

- writing: :func:`atomic_path` and the JSON writers (which refuse NaN and infinity: JSON has no such
  numbers, and Python's ``json`` would write the non-standard tokens ``NaN`` / ``Infinity``);
- reading: :func:`loads_json` / :func:`read_json` / :func:`read_jsonl` refuse those tokens too (Python's
  ``json`` reads them by default), numbers that overflow to infinity, nesting too deep to decode, and
  undecodable bytes;
- before any work: :func:`check_output_folder` / :func:`check_output_file` refuse an ``--out`` that
  cannot be written, so a long computation never ends in a failed write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from robustrec.errors import ConfigError, DataError, first_line


# -- writing -------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    OS errors (no permission, no space, a folder in the way) become a ConfigError naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {os_error_text(exc)}") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {os_error_text(exc)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def os_error_text(exc: OSError) -> str:
    """One line for an OSError: ``"Permission denied: '/x/y'"`` (strerror and file names when known)."""
    text = exc.strerror or first_line(exc)
    names = [repr(str(f)) for f in (exc.filename, exc.filename2) if f is not None]
    return f"{text}: {' -> '.join(names)}" if names else text


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def dumps_json(obj: Any, where: str | os.PathLike, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and infinity with a DataError naming the first such value."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        bad = _non_finite_path(obj)
        if bad is None:
            raise
        raise DataError(f"{where}: refusing to write {bad[0] or 'the value'} = {bad[1]} (JSON has no NaN "
                        "or infinity; the numbers that produced it are not meaningful)") from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, dumps_json(obj, path, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    write_text(path, "".join(dumps_json(row, f"{path}:{n}", ensure_ascii=False) + "\n"
                             for n, row in enumerate(rows, start=1)))


def append_jsonl(path: str | os.PathLike, row: Any) -> None:
    line = dumps_json(row, path) + "\n"  # before opening: a refused row leaves the file untouched
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {os_error_text(exc)}") from None


def _non_finite_path(obj: Any, where: str = "") -> tuple[str, float] | None:
    """The dotted location and value of the first NaN or infinite float in ``obj``, if any."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where, obj
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in children:
        found = _non_finite_path(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


# -- reading -------------------------------------------------------------------------------------
class _NonStandardNumber(ValueError):
    pass


def _refuse_constant(token: str) -> Any:
    raise _NonStandardNumber(f"non-standard JSON number {token}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e400, which Python's json silently reads as inf
        raise _NonStandardNumber(f"number {text} is out of range")
    return value


def loads_json(text: str | bytes, where: str | os.PathLike) -> Any:
    """Parse standard JSON strictly; any problem is a DataError starting with ``where``.

    Refused besides syntax errors: ``NaN`` / ``Infinity`` / ``-Infinity`` tokens, numbers that overflow
    a float, integers too long to convert, and nesting too deep to decode (RecursionError).
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NonStandardNumber as exc:
        raise DataError(f"{where}: {exc} (NaN and infinity are not valid JSON)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise DataError(f"{where}: not valid JSON ({str(exc).splitlines()[0][:80]})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply") from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a DataError naming it when it is missing, unreadable or not text."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"cannot read {what} {path}: not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """A JSON document read strictly (see :func:`loads_json`)."""
    return loads_json(read_text(path, what), path)


def read_jsonl(path: str | os.PathLike, what: str = "file") -> list[Any]:
    """The rows of a JSON-lines file, read strictly; errors name the file and line."""
    lines = read_text(path, what).splitlines()
    return [loads_json(line, f"{path}:{n}") for n, line in enumerate(lines, start=1) if line.strip()]


# -- checking outputs before any work ------------------------------------------------------------
def check_output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse an output folder that cannot be created or written (ConfigError), creating nothing.

    Called before any work, so a long computation never ends in a failed write. An existing folder
    must be writable; a new one needs its nearest existing ancestor to be a writable folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} exists and is not a folder")
    _require_writable(path if path.is_dir() else _nearest_existing(path), path, option)
    return path


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse an output file that cannot be written (ConfigError), creating nothing."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")
    _require_writable(_nearest_existing(path.parent), path, option)
    return path


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the folder in which the first mkdir happens)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _require_writable(folder: Path, target: Path, option: str) -> None:
    """Create and remove a probe file in ``folder``: permission bits alone do not tell (root ignores
    them; a read-only or virtual file system such as /proc refuses anyway)."""
    if not folder.is_dir():
        raise ConfigError(f"{option} {target}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".robustrec-probe-")
    except OSError as exc:
        raise ConfigError(f"{option} {target}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
