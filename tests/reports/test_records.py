"""Result records on disk: per-user arrays round-trip in the current and the first layout."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from robustrec.errors import DataError
from robustrec.records import read_per_user, read_records, write_records
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
