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

A :class:`Diagnosis` is the record ``robustrec diagnose`` writes: the flatness of one run at its selected
weights (``kind == "run"``) or the loss between two runs (``kind == "interpolation"``), in a folder's
``diagnostics.jsonl`` (:data:`DIAGNOSIS_FILE`). It is read as strictly as a :class:`Record`, and joined
to audit records on (dataset fingerprint, config hash) by :mod:`reports.flatness`.

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
from robustrec.io import atomic_path, dumps_json, loads_json, read_text, write_jsonl
from robustrec.metrics import is_metric_key

SCHEMA = "robustrec.record/1"
ZIP_MAGIC = b"PK\x03\x04"  # how every .npz (a zip archive) begins
CLEAN_REPEAT = -1


@dataclass(frozen=True)
class RunIdentity:
    """Which trained run a record is about: what audits and diagnoses share, and what reports join on
    (``dataset_fingerprint``, ``config_hash``)."""

    dataset: str
    dataset_fingerprint: str
    model: str
    strategy: str
    strategy_label: str
    run: str
    run_seed: int
    config_hash: str


@dataclass(frozen=True)
class Record(RunIdentity):
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
        return cls(**_checked_fields(cls, row, where, SCHEMA, ("result record", "record"), _FIELD_CHECKS))


def _checked_fields(cls: type, row: Any, where: str, schema: str, nouns: tuple[str, str],
                    checks: dict[str, Any]) -> dict[str, Any]:
    """The fields of the dataclass ``cls`` in the JSON object ``row``, once its schema is ``schema``,
    every required field is there and each field passes its check in ``checks`` (DataError naming
    ``where`` and what is wrong otherwise; ``nouns``: what the object is, in full and short)."""
    if not isinstance(row, dict) or row.get("schema") != schema:
        raise DataError(f"{where}: not a robustrec {nouns[0]} (schema {schema})")
    missing = [k for k, f in cls.__dataclass_fields__.items() if k not in row and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise DataError(f"{where}: incomplete {nouns[1]} (no {', '.join(missing)})")
    for name, check in checks.items():
        if name in row:
            problem = check(row[name])
            if problem:
                raise DataError(f"{where}: field {name!r} {problem}")
    return {k: row[k] for k in cls.__dataclass_fields__ if k in row}


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


# -- diagnoses -----------------------------------------------------------------------------------
DIAGNOSIS_SCHEMA = "robustrec.diagnosis/1"
DIAGNOSIS_FILE = "diagnostics.jsonl"
DIAGNOSIS_KINDS = ("run", "interpolation")


@dataclass(frozen=True)
class Diagnosis(RunIdentity):
    """Flatness measures of one run (``kind="run"``), or the loss on the line from ``run`` to
    ``other`` (``kind="interpolation"``), as ``robustrec diagnose`` measured them.

    ``measures``: name -> finite number, or None where it could not be measured (``loss``,
    ``grad_norm``, ``top_eigenvalue``, ``hessian_trace``, ``hessian_trace_stderr``, ``sharpness``;
    ``barrier`` for an interpolation). ``eigenvalues``: the top Hessian eigenvalues, largest first.
    ``curves``: name -> ``{"x": [...], "y": [...]}`` (``landscape_1d``, ``interpolation``);
    ``surfaces``: name -> ``{"x": [...], "y": [...], "z": [[...]]}`` with ``z[i][j]`` the value at
    ``(x[j], y[i])`` (``landscape_2d``). ``settings``: how it was measured (seed, batch size, rho...).
    """

    kind: str
    other: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    measures: dict[str, float | None] = field(default_factory=dict)
    eigenvalues: list[float] = field(default_factory=list)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    surfaces: dict[str, dict[str, list]] = field(default_factory=dict)
    seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    schema: str = DIAGNOSIS_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: Any, where: str = "diagnosis") -> Diagnosis:
        """A diagnosis from its JSON object, every field checked (DataError naming ``where`` otherwise)."""
        fields = _checked_fields(cls, row, where, DIAGNOSIS_SCHEMA, ("diagnosis record", "diagnosis"),
                                 _DIAGNOSIS_CHECKS)
        if (fields["kind"] == "interpolation") != isinstance(fields.get("other"), str):
            raise DataError(f"{where}: field 'other' must name the other run of an interpolation, and be "
                            "null for a run's own diagnosis")
        return cls(**fields)


def _kind(value: Any) -> str | None:
    return None if value in DIAGNOSIS_KINDS else f"must be one of {', '.join(map(repr, DIAGNOSIS_KINDS))}"


def _optional_string(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else "must be a string or null"


def _seconds(value: Any) -> str | None:
    return None if _is_number(value) and value >= 0 else "must be a finite number >= 0"


def _numbers(value: Any) -> str | None:
    """None for a list of finite numbers, else what is wrong (used inside the checks below)."""
    if not isinstance(value, list):
        return "is not a list of numbers"
    bad = [v for v in value if not _is_number(v)]
    return f"holds {str(bad[0])[:40]}, not a finite number" if bad else None


def _measures(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a JSON object of measures"
    for key, number in value.items():
        if number is not None and not _is_number(number):
            return f"holds {key} = {str(number)[:40]}, not a finite number or null"
    return None


def _eigenvalues(value: Any) -> str | None:
    return None if _numbers(value) is None else "must be a list of finite numbers"


def _curves(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a JSON object of curves"
    for name, curve in value.items():
        if not isinstance(curve, dict) or "x" not in curve or "y" not in curve:
            return f"holds {name!r} without 'x' and 'y'"
        for axis in ("x", "y"):
            problem = _numbers(curve[axis])
            if problem:
                return f"holds {name!r} whose {axis} {problem}"
        if not curve["x"] or len(curve["x"]) != len(curve["y"]):
            return f"holds {name!r} with {len(curve['x'])} x and {len(curve['y'])} y values (need as many, >= 1)"
    return None


def _surfaces(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a JSON object of surfaces"
    for name, surface in value.items():
        if not isinstance(surface, dict) or not all(k in surface for k in ("x", "y", "z")):
            return f"holds {name!r} without 'x', 'y' and 'z'"
        for axis in ("x", "y"):
            problem = _numbers(surface[axis])
            if problem or not surface[axis]:
                return f"holds {name!r} whose {axis} {problem or 'is empty'}"
        z, nx, ny = surface["z"], len(surface["x"]), len(surface["y"])
        if not isinstance(z, list) or len(z) != ny or any(not isinstance(r, list) or len(r) != nx for r in z):
            return f"holds {name!r} whose z is not {ny} rows (one per y) of {nx} values (one per x)"
        problem = next((p for r in z if (p := _numbers(r))), None)
        if problem:
            return f"holds {name!r} whose z {problem}"
    return None


_DIAGNOSIS_CHECKS = {
    **{name: _string for name in ("dataset", "dataset_fingerprint", "model", "strategy", "strategy_label", "run",
                                  "config_hash", "schema")},
    "run_seed": _integer,
    "kind": _kind,
    "other": _optional_string,
    "settings": _object,
    "measures": _measures,
    "eigenvalues": _eigenvalues,
    "curves": _curves,
    "surfaces": _surfaces,
    "seconds": _seconds,
    "provenance": _object,
}


def write_diagnoses(path: str | Path, diagnoses: list[Diagnosis]) -> Path:
    """Write ``diagnoses`` to the JSON-lines file ``path`` atomically, each checked as :meth:`Diagnosis.from_json`
    would read it back (a NaN or a misshapen surface is a DataError and nothing is written)."""
    path = Path(path)
    rows = []
    for n, diagnosis in enumerate(diagnoses, start=1):
        where = f"{path}:{n}"
        row = loads_json(dumps_json(diagnosis.to_json(), where), where)  # tuples become lists, as when read
        Diagnosis.from_json(row, where)
        rows.append(row)
    write_jsonl(path, rows)
    return path


def read_diagnoses(path: str | Path) -> list[Diagnosis]:
    """The diagnoses of one JSON-lines file, each validated."""
    path = Path(path)
    return [Diagnosis.from_json(loads_json(line, f"{path}:{n}"), f"{path}:{n}")
            for n, line in enumerate(read_text(path, "diagnoses").splitlines(), start=1) if line.strip()]


def load_diagnoses(*paths: str | Path) -> list[Diagnosis]:
    """Every diagnosis in the given files or folders, in order. A folder gives its
    :data:`DIAGNOSIS_FILE`, else every one in its subfolders; a file is read as JSON lines.
    DataError when a path is missing, holds no diagnosis, or anything in it is malformed."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                found = [p / DIAGNOSIS_FILE] if (p / DIAGNOSIS_FILE).is_file() else sorted(
                    f for f in p.rglob(DIAGNOSIS_FILE) if f.is_file())
            except OSError as exc:
                raise DataError(f"cannot search {p} for diagnoses: {exc.strerror or exc}") from None
            if not found:
                raise DataError(f"{p}: no diagnoses ({DIAGNOSIS_FILE}) found; write them with robustrec diagnose")
        elif p.is_file():
            found = [p]
        else:
            raise DataError(f"{p}: no such file or folder")
        files += [f for f in found if f.resolve() not in {g.resolve() for g in files}]
    diagnoses = [d for f in files for d in read_diagnoses(f)]
    if not diagnoses:
        raise DataError(f"no diagnoses found in {', '.join(map(str, paths)) or 'no path'}")
    return diagnoses
