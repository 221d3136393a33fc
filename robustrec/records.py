"""Result records: the data that audits write and reports read.

One :class:`Record` per (dataset, model, strategy, run/seed, suite, severity, repeat). The clean
evaluation of a run is a record with ``repeat == -1`` and ``severity == 0``. Records are JSON lines;
per-user metric values (for paired tests over users) live in an ``.npz`` beside them, referenced by
``per_user = {"file": <path relative to the .jsonl>, "key": <prefix>, "columns": [<metric>, ...]}``,
with arrays ``<prefix>/users`` and ``<prefix>/values`` (one row per column). Files written before
``columns`` existed hold one array ``<prefix>/<metric>`` per metric; both layouts are read.

Records are read strictly, since they may come from anywhere (a CI artifact, a colleague): standard
JSON only (no ``NaN`` / ``Infinity``), every field of its type, metrics and severities finite
numbers, and the per-user file inside the records file's folder. Anything else is a DataError.

Reports depend on this module only, never on models.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustrec.errors import DataError
from robustrec.io import atomic_path, loads_json, read_text, write_jsonl
from robustrec.metrics import is_metric_key

SCHEMA = "robustrec.record/1"
ZIP_MAGIC = b"PK\x03\x04"  # how every .npz (a zip archive) begins
CLEAN_REPEAT = -1


@dataclass(frozen=True)
class Record:
    dataset: str
    dataset_fingerprint: str
    model: str
    strategy: str
    strategy_label: str
    run: str
    run_seed: int
    config_hash: str
    suite: str
    severity: float
    severity_name: str
    repeat: int
    seed: int | None
    split: str
    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    per_user: dict[str, str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    @property
    def is_clean(self) -> bool:
        return self.repeat == CLEAN_REPEAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: Any, where: str = "record") -> Record:
        """A record from its JSON object, every field checked (DataError naming ``where`` otherwise)."""
        if not isinstance(row, dict) or row.get("schema") != SCHEMA:
            raise DataError(f"{where}: not a robustrec result record (schema {SCHEMA})")
        missing = [k for k, f in cls.__dataclass_fields__.items() if k not in row and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise DataError(f"{where}: incomplete record (no {', '.join(missing)})")
        for name, check in _FIELD_CHECKS.items():
            if name in row:
                problem = check(row[name])
                if problem:
                    raise DataError(f"{where}: field {name!r} {problem}")
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


# -- field validation: each check returns None when the value is fine, else what is wrong with it --
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (not bool): NaN and infinity are never valid in a record."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _integer(value: Any) -> str | None:
    return None if _is_int(value) else "must be an integer"


def _repeat(value: Any) -> str | None:
    return None if _is_int(value) and value >= CLEAN_REPEAT else f"must be an integer >= {CLEAN_REPEAT}"


def _optional_integer(value: Any) -> str | None:
    return None if value is None or _is_int(value) else "must be an integer or null"


def _severity(value: Any) -> str | None:
    return None if _is_number(value) else "must be a finite number"


def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a JSON object"


def _metrics(value: Any) -> str | None:
    if not isinstance(value, dict) or not value:
        return "must be a non-empty JSON object of metric values"
    for key, number in value.items():
        if not _is_number(number):
            return f"holds {key} = {number!r}, not a finite number"
        if is_metric_key(key) and not 0 <= number <= 1:  # a mean of per-user values in [0, 1]
            return f"holds {key} = {number!r}, outside [0, 1]"
    return None


def _per_user_ref(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("file"), str) or not isinstance(value.get("key"), str):
        return "must be null or an object with string 'file' and 'key'"
    columns = value.get("columns", [])
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        return "has 'columns' that is not a list of strings"
    return None


_FIELD_CHECKS = {
    **{name: _string for name in ("dataset", "dataset_fingerprint", "model", "strategy", "strategy_label", "run",
                                  "config_hash", "suite", "severity_name", "split", "schema")},
    "run_seed": _integer,
    "severity": _severity,
    "repeat": _repeat,
    "seed": _optional_integer,
    "metrics": _metrics,
    "details": _object,
    "per_user": _per_user_ref,
    "provenance": _object,
}


def write_records(path: str | Path, records: list[Record], per_user: dict[int, dict[str, np.ndarray]] | None = None) -> Path:
    """Write records (and optionally their per-user arrays, by record index) atomically."""
    path = Path(path)
    rows = [r.to_json() for r in records]
    if per_user:
        npz = path.with_suffix(".per_user.npz")
        arrays, columns = {}, {}
        for i, data in per_user.items():
            columns[i] = [name for name in data if name != "users"]
            arrays[f"r{i}/users"] = data["users"]
            arrays[f"r{i}/values"] = np.stack([data[name] for name in columns[i]])
        with atomic_path(npz) as tmp:
            with open(tmp, "wb") as f:
                # two uncompressed arrays per record: zlib, and one array per metric, each cost more
                # than a whole evaluation of a small dataset
                np.savez(f, **arrays)
        for i in per_user:
            rows[i]["per_user"] = {"file": npz.name, "key": f"r{i}", "columns": columns[i]}
    write_jsonl(path, rows)
    return path


def read_records(path: str | Path) -> list[Record]:
    """The records of one ``.jsonl`` file, each validated, with their per-user references checked."""
    path = Path(path)
    records = []
    for lineno, line in enumerate(read_text(path, "result records").splitlines(), start=1):
        if not line.strip():
            continue
        record = Record.from_json(loads_json(line, f"{path}:{lineno}"), f"{path}:{lineno}")
        if record.per_user:
            per_user_path(path, record, f"{path}:{lineno}")
        records.append(record)
    return records


def load_records(*paths: str | Path) -> list[tuple[Path, Record]]:
    """Every record in the given files or folders (folders are searched for ``*.jsonl``)."""
    found: list[tuple[Path, Record]] = []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                files = sorted(f for f in p.rglob("*.jsonl") if f.is_file())
            except OSError as exc:
                raise DataError(f"cannot search {p} for result records: {exc.strerror or exc}") from None
            if not files:
                raise DataError(f"{p}: no result records (*.jsonl) found")
        elif p.is_file():
            files = [p]
        else:
            raise DataError(f"{p}: no such file or folder")
        for f in files:
            found.extend((f, r) for r in read_records(f))
    if not found:
        raise DataError("no result records found")
    return found


def per_user_path(source: Path, record: Record, where: str | None = None) -> Path:
    """The ``.npz`` a record's per-user values live in, which must lie in the records file's folder.

    A record names the file relative to its ``.jsonl``; a record file from elsewhere could otherwise
    point anywhere (``../../etc/passwd``, an absolute path), so the resolved path is confined.
    """
    assert record.per_user is not None
    folder = source.parent.resolve()
    target = (folder / record.per_user["file"]).resolve()
    if not target.is_relative_to(folder) or target == folder:
        raise DataError(f"{where or source}: per-user file {record.per_user['file']!r} is outside the records' "
                        f"folder {source.parent}")
    return target


def read_per_user(source: Path, record: Record) -> dict[str, np.ndarray]:
    """The per-user arrays of ``record`` (read from the ``.npz`` beside ``source``), checked:
    integer user ids, one finite number per user and column."""
    if not record.per_user:
        raise DataError(f"record of {record.run} ({record.suite}) has no per-user values")
    npz_path = per_user_path(source, record)
    prefix = record.per_user["key"] + "/"
    try:
        with open(npz_path, "rb") as f:
            magic = f.read(4)
        if magic != ZIP_MAGIC:  # np.load would read a lone .npy array, or try (and refuse) a pickle
            raise DataError(f"cannot read per-user values {npz_path}: not an .npz archive")
        with np.load(npz_path, allow_pickle=False) as data:
            if "columns" not in record.per_user:  # the first layout: one array per metric
                arrays = {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}
            else:
                values = data[prefix + "values"]
                if values.ndim != 2 or len(values) != len(record.per_user["columns"]):
                    raise ValueError(f"{len(record.per_user['columns'])} columns but values of shape {values.shape}")
                arrays = {"users": data[prefix + "users"], **dict(zip(record.per_user["columns"], values))}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read per-user values {npz_path}: {exc}") from None
    _check_per_user(arrays, npz_path)
    return arrays


def _check_per_user(arrays: dict[str, np.ndarray], npz_path: Path) -> None:
    users = arrays.get("users")
    if users is None or users.ndim != 1 or not np.issubdtype(users.dtype, np.integer):
        raise DataError(f"per-user values {npz_path}: no one-dimensional integer 'users' array")
    for name, values in arrays.items():
        if name == "users":
            continue
        if values.shape != users.shape or not np.issubdtype(values.dtype, np.number):
            raise DataError(f"per-user values {npz_path}: {name} is not one number per user")
        if not np.isfinite(values).all():
            raise DataError(f"per-user values {npz_path}: {name} holds NaN or infinity")
