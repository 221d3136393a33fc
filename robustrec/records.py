"""Result records: the data that audits write and reports read.

One :class:`Record` per (dataset, model, strategy, run/seed, suite, severity, repeat). The clean
evaluation of a run is a record with ``repeat == -1`` and ``severity == 0``. Records are JSON lines;
per-user metric values (for paired tests over users) live in an ``.npz`` beside them, referenced by
``per_user = {"file": <path relative to the .jsonl>, "key": <prefix>, "columns": [<metric>, ...]}``,
with arrays ``<prefix>/users`` and ``<prefix>/values`` (one row per column). Files written before
``columns`` existed hold one array ``<prefix>/<metric>`` per metric; both layouts are read.

Reports depend on this module only, never on models.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustrec.errors import DataError
from robustrec.io import atomic_path, write_jsonl

SCHEMA = "robustrec.record/1"
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
    def from_json(cls, row: dict[str, Any], where: str = "record") -> Record:
        if not isinstance(row, dict) or row.get("schema") != SCHEMA:
            raise DataError(f"{where}: not a robustrec result record (schema {SCHEMA})")
        try:
            record = cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})
        except TypeError as exc:
            raise DataError(f"{where}: incomplete record ({exc})") from None
        bad = [k for k, v in record.metrics.items() if not isinstance(v, (int, float)) or math.isnan(v)]
        if bad:
            raise DataError(f"{where}: metric {bad[0]} is not a number")
        return record


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
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{lineno}: not valid JSON") from None
        records.append(Record.from_json(row, f"{path}:{lineno}"))
    return records


def load_records(*paths: str | Path) -> list[tuple[Path, Record]]:
    """Every record in the given files or folders (folders are searched for ``*.jsonl``)."""
    found: list[tuple[Path, Record]] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(p.rglob("*.jsonl"))
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


def read_per_user(source: Path, record: Record) -> dict[str, np.ndarray]:
    """The per-user arrays of ``record`` (read from the ``.npz`` beside ``source``)."""
    if not record.per_user:
        raise DataError(f"record of {record.run} ({record.suite}) has no per-user values")
    npz_path = source.parent / record.per_user["file"]
    prefix = record.per_user["key"] + "/"
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            if "columns" not in record.per_user:  # the first layout: one array per metric
                return {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}
            values = data[prefix + "values"]
            return {"users": data[prefix + "users"], **dict(zip(record.per_user["columns"], values, strict=True))}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read per-user values {npz_path}: {exc}") from None
