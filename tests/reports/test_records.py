"""Result records on disk: per-user arrays round-trip in the current and the first layout; hostile
record files (wrong types, NaN, deep nesting, per-user paths outside the folder) are DataErrors."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest

from robustrec.errors import DataError
from robustrec.records import Record, read_per_user, read_records, write_records
from tests.reports.conftest import make_audit, user_arrays


def test_per_user_arrays_round_trip(tmp_path):
    records = make_audit(perturbed={1e-4: [0.1, 0.2]})
    users = np.array([4, 0, 2])
    written = {i: user_arrays(users, np.array([0.1, 0.5, 1.0]) * (i + 1)) for i in (0, 2)}
    path = write_records(tmp_path / "a.jsonl", records, written)
    back = read_records(path)
    assert back[1].per_user is None
    for i, arrays in written.items():
        got = read_per_user(path, back[i])
        assert got.keys() == arrays.keys()
        for name, values in arrays.items():
            np.testing.assert_array_equal(got[name], values)


def test_the_first_layout_is_still_read(tmp_path):
    """One array per metric, ``<key>/<metric>``, and no ``columns`` in the record."""
    record = make_audit(perturbed={})[0]
    arrays = user_arrays(np.array([1, 2]), np.array([0.25, 0.75]))
    np.savez(tmp_path / "old.per_user.npz", **{f"r0/{k}": v for k, v in arrays.items()})
    row = record.to_json() | {"per_user": {"file": "old.per_user.npz", "key": "r0"}}
    (tmp_path / "old.jsonl").write_text(json.dumps(row) + "\n")
    got = read_per_user(tmp_path / "old.jsonl", read_records(tmp_path / "old.jsonl")[0])
    for name, values in arrays.items():
        np.testing.assert_array_equal(got[name], values)


def test_columns_that_do_not_match_the_arrays_are_a_data_error(tmp_path):
    record = make_audit(perturbed={})[0]
    path = write_records(tmp_path / "a.jsonl", [record], {0: user_arrays(np.array([1]), np.array([0.5]))})
    broken = replace(read_records(path)[0], per_user={"file": "a.per_user.npz", "key": "r0", "columns": ["x"]})
    with pytest.raises(DataError, match="cannot read per-user values"):
        read_per_user(path, broken)


# -- hostile record files: every problem is a DataError naming the file and line ---------------------
def _write_lines(tmp_path, rows_or_text):
    path = tmp_path / "r.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows_or_text))
    return path


@pytest.mark.parametrize(
    "change, match",
    [
        ({"metrics": "x"}, "field 'metrics' must be a non-empty JSON object"),
        ({"metrics": {}}, "field 'metrics' must be a non-empty JSON object"),
        ({"metrics": {"recall@20": "0.5"}}, "recall@20 = '0.5', not a finite number"),
        ({"metrics": {"recall@20": True}}, "not a finite number"),
        ({"severity": "high"}, "field 'severity' must be a finite number"),
        ({"repeat": [1]}, "field 'repeat' must be an integer >= -1"),
        ({"repeat": -2}, "field 'repeat' must be an integer >= -1"),
        ({"run_seed": 1.5}, "field 'run_seed' must be an integer"),
        ({"seed": "7"}, "field 'seed' must be an integer or null"),
        ({"model": 5}, "field 'model' must be a string"),
        ({"details": [1]}, "field 'details' must be a JSON object"),
        ({"provenance": None}, "field 'provenance' must be a JSON object"),
        ({"per_user": {"file": 3, "key": "r0"}}, "field 'per_user' must be null or an object"),
        ({"per_user": {"file": "a.npz", "key": "r0", "columns": "recall@20"}}, "'columns' that is not a list"),
    ],
)
def test_badly_typed_fields_are_data_errors(tmp_path, change, match):
    row = make_audit(perturbed={1e-4: [0.1]})[1].to_json() | change
    path = _write_lines(tmp_path, [row])
    with pytest.raises(DataError, match=match) as exc:
        read_records(path)
    assert str(exc.value).startswith(f"{path}:1: ")


@pytest.mark.parametrize(
    "token, field",
    [("NaN", "recall@20"), ("Infinity", "recall@20"), ("-Infinity", "recall@20"), ("1e999", "recall@20"),
     ("NaN", "severity"), ("Infinity", "seed"), ("NaN", "run_seed")],
)
def test_non_standard_numbers_are_refused(tmp_path, token, field):
    """Python's json reads NaN / Infinity (and 1e999 as inf) by default; a record holds neither."""
    text = json.dumps(make_audit(perturbed={1e-4: [0.1]})[1].to_json())
    text = text.replace(f'"{field}": ', f'"{field}": {token}, "was": ', 1)
    path = _write_lines(tmp_path, [text])
    with pytest.raises(DataError, match=rf"{path}:1: .*(non-standard JSON number|out of range)"):
        read_records(path)


@pytest.mark.parametrize("text, match", [("[" * 50_000 + "]" * 50_000, "JSON nested too deeply"),
                                         ('{"run_seed": ' + "9" * 5000 + "}", "not valid JSON")])
def test_deep_nesting_and_huge_integers_are_data_errors(tmp_path, text, match):
    path = _write_lines(tmp_path, [make_audit(perturbed={})[0].to_json(), text])
    with pytest.raises(DataError, match=rf"{path}:2: {match}"):
        read_records(path)


def test_a_missing_field_is_named(tmp_path):
    row = make_audit(perturbed={})[0].to_json()
    del row["metrics"], row["split"]
    with pytest.raises(DataError, match="incomplete record \\(no split, metrics\\)"):
        read_records(_write_lines(tmp_path, [row]))


@pytest.mark.parametrize("target", ["../../../etc/passwd", "/etc/passwd", "..", "sub/../../x.npz"])
def test_per_user_files_are_confined_to_the_records_folder(tmp_path, target):
    record = make_audit(perturbed={})[0]
    path = write_records(tmp_path / "a.jsonl", [record], {0: user_arrays(np.array([1]), np.array([0.5]))})
    row = json.loads(path.read_text()) | {"per_user": {"file": target, "key": "r0", "columns": ["recall@20"]}}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=f"per-user file '{re.escape(target)}' is outside the records' folder"):
        read_records(path)
    with pytest.raises(DataError, match="outside the records' folder"):  # the API, given such a record
        read_per_user(path, Record.from_json(row))


def test_per_user_files_in_a_subfolder_are_read(tmp_path):
    record = make_audit(perturbed={})[0]
    (tmp_path / "sub").mkdir()
    arrays = user_arrays(np.array([1, 2]), np.array([0.25, 0.75]))
    write_records(tmp_path / "sub" / "a.jsonl", [record], {0: arrays})
    row = json.loads((tmp_path / "sub" / "a.jsonl").read_text())
    row["per_user"]["file"] = "sub/a.per_user.npz"
    (tmp_path / "a.jsonl").write_text(json.dumps(row) + "\n")
    got = read_per_user(tmp_path / "a.jsonl", read_records(tmp_path / "a.jsonl")[0])
    np.testing.assert_array_equal(got["recall@20"], arrays["recall@20"])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_per_user_values_must_be_finite(tmp_path, bad):
    record = make_audit(perturbed={})[0]
    path = write_records(tmp_path / "a.jsonl", [record], {0: user_arrays(np.array([1, 2]), np.array([0.5, bad]))})
    with pytest.raises(DataError, match="recall@20 holds NaN or infinity"):
        read_per_user(path, read_records(path)[0])


def test_a_per_user_file_that_is_not_an_npz_is_a_data_error(tmp_path):
    record = make_audit(perturbed={})[0]
    path = write_records(tmp_path / "a.jsonl", [record], {0: user_arrays(np.array([1]), np.array([0.5]))})
    (tmp_path / "a.per_user.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read per-user values"):
        read_per_user(path, read_records(path)[0])


def test_records_with_nan_metrics_are_never_written(tmp_path):
    records = make_audit(perturbed={1e-4: [math.nan]})
    with pytest.raises(DataError, match=r"a\.jsonl:2: refusing to write metrics\.recall@5 = nan"):
        write_records(tmp_path / "a.jsonl", records)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [1.5, -0.1, 1e154])
def test_metric_values_outside_0_1_are_data_errors(tmp_path, value):
    """Every metric is a mean of per-user values in [0, 1]; 1e154 made the report's std overflow."""
    row = make_audit(perturbed={1e-4: [0.1]})[1].to_json()
    row["metrics"]["recall@5"] = value
    with pytest.raises(DataError, match=re.escape(f"recall@5 = {value!r}, outside [0, 1]")):
        read_records(_write_lines(tmp_path, [row]))
    row["metrics"] = {"seconds": value}  # not a metric robustrec defines: any finite number
    assert read_records(_write_lines(tmp_path, [row]))[0].metrics == {"seconds": value}


@pytest.mark.parametrize("content", [b"garbage", b"", "npy"])
def test_a_per_user_file_that_is_no_npz_archive_is_a_data_error(tmp_path, content):
    record = make_audit(perturbed={})[0]
    path = write_records(tmp_path / "a.jsonl", [record], {0: user_arrays(np.array([1]), np.array([0.5]))})
    if content == "npy":  # a lone array: np.load returns it instead of an archive
        with open(tmp_path / "a.per_user.npz", "wb") as f:
            np.save(f, np.array([1.0]))
    else:
        (tmp_path / "a.per_user.npz").write_bytes(content)
    with pytest.raises(DataError, match="not an .npz archive"):
        read_per_user(path, read_records(path)[0])
