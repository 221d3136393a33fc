"""Diagnosis records: written atomically, read back equal, and anything malformed refused in one line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from robustrec.errors import DataError
from robustrec.records import (
    DIAGNOSIS_FILE,
    DIAGNOSIS_SCHEMA,
    Diagnosis,
    Record,
    load_diagnoses,
    read_diagnoses,
    write_diagnoses,
    write_records,
)


def diagnosis(**changes) -> Diagnosis:
    base = Diagnosis(
        dataset="baby", dataset_fingerprint="fp-baby", model="freedom", strategy="mirror", strategy_label="MG",
        run="runs/freedom-mg", run_seed=1, config_hash="abc123", kind="run",
        settings={"seed": 0, "batch_size": 64, "rho": 0.05},
        measures={"loss": 0.5, "grad_norm": 0.01, "top_eigenvalue": 12.5, "hessian_trace": 40.0,
                  "hessian_trace_stderr": 2.0, "sharpness": None},
        eigenvalues=[12.5, 3.0],
        curves={"landscape_1d": {"x": [-1.0, 0.0, 1.0], "y": [0.9, 0.5, 0.8]}},
        surfaces={"landscape_2d": {"x": [-1.0, 0.0, 1.0], "y": [-1.0, 1.0], "z": [[1.0, 0.6, 1.1], [1.2, 0.7, 1.3]]}},
        seconds=1.25, provenance={"torch_version": "2.x"},
    )
    return replace(base, **changes)


def interpolation() -> Diagnosis:
    return diagnosis(kind="interpolation", other="runs/freedom-plain", measures={"loss": 0.5, "barrier": 0.1},
                     eigenvalues=[], surfaces={},
                     curves={"interpolation": {"x": [0.0, 0.5, 1.0], "y": [0.5, 0.6, 0.4]}})


def test_round_trip_through_a_file_and_a_folder(tmp_path):
    written = [diagnosis(), interpolation(), diagnosis(run_seed=2, config_hash="def456")]
    path = write_diagnoses(tmp_path / DIAGNOSIS_FILE, written)
    assert path == tmp_path / DIAGNOSIS_FILE
    assert read_diagnoses(path) == written
    assert load_diagnoses(tmp_path) == written  # a folder gives its diagnostics.jsonl
    assert load_diagnoses(tmp_path, path) == written  # the same file twice is read once
    first = json.loads(path.read_text().splitlines()[0])
    assert first["schema"] == DIAGNOSIS_SCHEMA and first["other"] is None and first["measures"]["sharpness"] is None


def test_a_parent_folder_gives_every_diagnostics_file_below_it(tmp_path):
    write_diagnoses(tmp_path / "a" / DIAGNOSIS_FILE, [diagnosis()])
    write_diagnoses(tmp_path / "b" / DIAGNOSIS_FILE, [diagnosis(config_hash="other")])
    assert [d.config_hash for d in load_diagnoses(tmp_path)] == ["abc123", "other"]


def test_tuples_are_written_as_lists_and_read_back_as_lists(tmp_path):
    write_diagnoses(tmp_path / "d.jsonl", [diagnosis(eigenvalues=(3.0, 1.0))])
    (read,) = load_diagnoses(tmp_path / "d.jsonl")
    assert read.eigenvalues == [3.0, 1.0]


@pytest.mark.parametrize("changes, message", [
    ({"measures": {"loss": float("nan")}}, "measures.loss = nan"),
    ({"surfaces": {"s": {"x": [0.0, 1.0], "y": [0.0], "z": [[1.0]]}}}, "z is not 1 rows"),
    ({"kind": "interpolation"}, "field 'other'"),
])
def test_writing_refuses_what_could_not_be_read_back(tmp_path, changes, message):
    path = tmp_path / "d.jsonl"
    with pytest.raises(DataError, match=message):
        write_diagnoses(path, [diagnosis(), diagnosis(**changes)])
    assert not path.exists()  # nothing written, not even the good first record


def mutate(row: dict, key: str, value) -> dict:
    """``row`` with ``key`` (dotted for nested fields) set to ``value``, or removed when value is ...
    (Ellipsis)."""
    *parents, last = key.split(".")
    target = row
    for part in parents:
        target = target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return row


@pytest.mark.parametrize("key, value, message", [
    ("schema", "robustrec.record/1", "not a robustrec diagnosis record"),
    ("run_seed", ..., "incomplete diagnosis (no run_seed)"),
    ("run_seed", True, "'run_seed' must be an integer"),
    ("kind", "pair", "'kind' must be one of"),
    ("other", "runs/x", "field 'other'"),
    ("measures.loss", "0.5", "holds loss = 0.5, not a finite number or null"),
    ("measures", [0.5], "'measures' must be a JSON object"),
    ("eigenvalues", [1.0, None], "'eigenvalues' must be a list of finite numbers"),
    ("curves.landscape_1d.y", [0.9, 0.5], "3 x and 2 y values"),
    ("curves.landscape_1d.x", [], "0 x and 3 y values"),
    ("curves.landscape_1d", {"x": [0.0]}, "without 'x' and 'y'"),
    ("surfaces.landscape_2d.z", [[1.0, 0.6, 1.1]], "z is not 2 rows (one per y) of 3 values"),
    ("surfaces.landscape_2d.z", [[1.0, 0.6], [1.2, 0.7]], "z is not 2 rows (one per y) of 3 values"),
    ("surfaces.landscape_2d.z", [[1.0, 0.6, "x"], [1.2, 0.7, 1.3]], "whose z holds x, not a finite number"),
    ("seconds", -1.0, "'seconds' must be a finite number >= 0"),
    ("settings", None, "'settings' must be a JSON object"),
])
def test_reading_is_strict(tmp_path, key, value, message):
    row = mutate(diagnosis().to_json(), key, value)
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_diagnoses(path)
    assert str(info.value).startswith(f"{path}:1: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_the_file_are_refused(tmp_path, token):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(diagnosis().to_json()).replace('"loss": 0.5', f'"loss": {token}') + "\n")
    with pytest.raises(DataError, match=f"{path}:1: .*(NaN|out of range)"):
        load_diagnoses(path)


def test_missing_or_empty_inputs_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_diagnoses(tmp_path / "missing")
    with pytest.raises(DataError, match=f"no diagnoses \\({DIAGNOSIS_FILE}\\) found"):
        load_diagnoses(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no diagnoses found"):
        load_diagnoses(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="bad.jsonl:1: not valid JSON"):
        load_diagnoses(tmp_path / "bad.jsonl")


def test_audit_records_are_not_diagnoses(tmp_path):
    record = Record(dataset="baby", dataset_fingerprint="fp", model="freedom", strategy="plain", strategy_label="",
                    run="r", run_seed=1, config_hash="h", suite="noise", severity=0.0, severity_name="sigma2",
                    repeat=-1, seed=None, split="test", metrics={"recall@20": 0.2})
    write_records(tmp_path / "audit.jsonl", [record])
    with pytest.raises(DataError, match="not a robustrec diagnosis record"):
        load_diagnoses(tmp_path / "audit.jsonl")
