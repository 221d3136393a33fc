"""Hostile numbers, ids, JSON and field types in raw files and dataset folders: each is one DataError
that names the file (and line where there is one), raised before anything is written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from robustrec.data import load_dataset
from robustrec.data.ingest import encode_ids, ingest_amazon, ingest_csv, read_amazon_meta, read_amazon_reviews
from robustrec.data.mmrec import read_features, read_inter, write_dataset
from robustrec.errors import DataError

FAST = {"text_encoder": "hashing", "image_encoder": "pixels", "use_cache": False}
NON_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _ratings(rows: list[str], header: str = "user_id,item_id,rating,timestamp") -> str:
    """A 3-core-proof shop (3 users x 3 items) followed by ``rows``."""
    body = [f"{u},{i},4,{100 + 3 * u + i}" for u in range(3) for i in range(3)]
    return "\n".join([header, *body, *rows]) + "\n"


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not any(p.name.startswith(".") for p in out.parent.glob("*"))


# ---- ratings and timestamps in a CSV --------------------------------------------------------------------
@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_rating_is_refused_with_file_and_line(tmp_path, value):
    ratings = _write(tmp_path / "ratings.csv", _ratings([f"0,1,{value},5"]))
    out = tmp_path / "out" / "ds"
    with pytest.raises(DataError, match=rf"ratings.csv:11: rating '{value}' is not a finite number"):
        ingest_csv(ratings, out, k_core=1, **FAST)
    assert _nothing_written(out)


@pytest.mark.parametrize("value", ["1e999", "nan", "inf", "1e300", "-9e30"])
def test_non_finite_or_huge_timestamp_is_refused(tmp_path, value):
    ratings = _write(tmp_path / "ratings.csv", _ratings([f"0,1,4,{value}"]))
    out = tmp_path / "out" / "ds"
    with pytest.raises(DataError, match=r"ratings.csv:11: timestamp"):
        ingest_csv(ratings, out, k_core=1, **FAST)
    assert _nothing_written(out)


def test_ids_with_thousands_of_digits_are_ids_not_a_crash():
    huge = "9" * 5000  # int() refuses to convert this many digits
    codes, ids = encode_ids([huge, "2", huge])
    assert codes.tolist() == [1, 0, 1] and ids == ["2", huge]  # compared as strings


# ---- Amazon JSON lines ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rating", ["NaN", "Infinity", "-Infinity", "1e999", '"nan"', '"inf"'])
def test_amazon_non_finite_rating_is_refused(tmp_path, rating):
    line = '{"reviewerID": "A", "asin": "B", "overall": ' + rating + ', "unixReviewTime": 1}'
    path = _write(tmp_path / "reviews.json", '{"reviewerID": "A", "asin": "C", "overall": 4}\n' + line + "\n")
    with pytest.raises(DataError, match=r"reviews.json:2: "):
        read_amazon_reviews(path)


def test_amazon_deeply_nested_line_is_a_data_error(tmp_path):
    path = _write(tmp_path / "reviews.json", "[" * 100_000 + "\n")
    with pytest.raises(DataError, match=r"reviews.json:1: "):
        read_amazon_reviews(path)
    gz = tmp_path / "meta.json.gz"
    with gzip.open(gz, "wt") as f:
        f.write('{"asin": "B1", "title": "ok"}\n' + '{"asin": ' + "[" * 100_000 + "\n")
    with pytest.raises(DataError, match=r"meta.json.gz:2: "):
        read_amazon_meta(gz)


@pytest.mark.parametrize(
    "field", ['"reviewerID": {"a": 1}', '"reviewerID": [1, 2]', '"asin": true', '"asin": 1.5'],
)
def test_amazon_review_ids_must_be_strings_or_integers(tmp_path, field):
    record = '{"reviewerID": "A", "asin": "B", "overall": 4, ' + field + "}"
    path = _write(tmp_path / "reviews.json", record + "\n")
    with pytest.raises(DataError, match=r"reviews.json:1: .*(reviewerID|asin)"):
        read_amazon_reviews(path)


@pytest.mark.parametrize(
    "field",
    ['"categories": {"a": 1}', '"category": 5', '"title": {"t": 1}', '"description": [{"x": 1}]', '"brand": [1]'],
)
def test_amazon_meta_badly_typed_fields_name_the_line(tmp_path, field):
    path = _write(tmp_path / "meta.json", '{"asin": "B0", "title": "fine"}\n{"asin": "B1", ' + field + "}\n")
    with pytest.raises(DataError, match=r"meta.json:2: "):
        read_amazon_meta(path)


def test_amazon_ingest_with_a_nan_rating_writes_nothing(tmp_path):
    rows = [{"reviewerID": f"U{u}", "asin": f"B{i}", "overall": 4} for u in range(3) for i in range(3)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"reviewerID": "U0", "asin": "B9", "overall": NaN}\n'
    reviews = _write(tmp_path / "reviews.json", text)
    out = tmp_path / "out" / "ds"
    with pytest.raises(DataError, match="reviews.json:10: "):
        ingest_amazon(reviews, out, k_core=1, **FAST)
    assert _nothing_written(out)


# ---- the MMRec .inter reader -------------------------------------------------------------------------------
def _inter(tmp_path: Path, rows: list[str], header: str = "userID\titemID\trating\ttimestamp\tx_label") -> Path:
    body = ["0\t0\t4\t10\t0", "0\t1\t4\t11\t2", "1\t0\t4\t12\t0", "1\t1\t4\t13\t1"]
    return _write(tmp_path / "ds" / "ds.inter", "\n".join([header, *body, *rows]) + "\n")


@pytest.mark.parametrize("user", [str(10**30), str(2**62), str(2**31)])
def test_inter_huge_user_id_is_a_data_error(tmp_path, user):
    path = _inter(tmp_path, [f"{user}\t0\t4\t14\t0"])
    with pytest.raises(DataError, match=r"ds.inter:6: userID .* is out of range"):
        read_inter(path)


def test_inter_ids_must_be_contiguous(tmp_path):
    _inter(tmp_path, ["5\t0\t4\t14\t0"])  # users 0, 1 and 5: 2 to 4 never occur
    with pytest.raises(DataError, match=r"user ids must be 0\.\.2 .*found 3 distinct ids up to 5"):
        load_dataset(tmp_path / "ds")


def test_inter_item_ids_must_be_contiguous_without_features(tmp_path):
    _inter(tmp_path, ["1\t700000\t4\t14\t0"])
    with pytest.raises(DataError, match=r"item ids must be 0\.\.2 .*up to 700000"):
        load_dataset(tmp_path / "ds")


@pytest.mark.parametrize(("column", "row"), [("rating", "1\t1\tnan\t14\t0"), ("rating", "1\t1\t1e999\t14\t0"),
                                              ("timestamp", "1\t1\t4\tinf\t0"), ("timestamp", "1\t1\t4\tx\t0")])
def test_inter_non_finite_rating_or_timestamp_is_a_data_error(tmp_path, column, row):
    path = _inter(tmp_path, [row])
    with pytest.raises(DataError, match=rf"ds.inter:6: {column} .* is not a finite number"):
        read_inter(path)


def test_inter_x_label_nan_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"ds.inter:6: "):
        read_inter(_inter(tmp_path, ["1\t1\t4\t14\tnan"]))


# ---- .npy features -------------------------------------------------------------------------------------------
def test_features_with_nan_or_inf_name_the_rows(tmp_path):
    array = np.ones((5, 3), dtype=np.float32)
    array[1, 2], array[3, 0] = np.nan, np.inf
    np.save(tmp_path / "f.npy", array)
    with pytest.raises(DataError, match=r"f.npy: 2 rows contain NaN or inf .*first row 1"):
        read_features(tmp_path / "f.npy", "text")
    np.save(tmp_path / "big.npy", np.full((2, 2), 1e300))  # finite in float64, inf in float32
    with pytest.raises(DataError, match=r"big.npy: 2 rows"):
        read_features(tmp_path / "big.npy", "text")


def test_features_are_never_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj.npy: not a readable .npy array"):
        read_features(tmp_path / "obj.npy", "image")


def test_features_declaring_a_huge_shape_are_refused_without_allocating(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
        f.write(b"\0" * 64)
    with pytest.raises(DataError, match=r"huge.npy: "):
        read_features(path, "image")


@pytest.mark.parametrize("array", [np.ones((2, 3), dtype=np.complex64), np.ones((2, 3), dtype=bool),
                                   np.zeros((0, 3), dtype=np.float32)])
def test_features_must_be_real_numbers_with_rows(tmp_path, array):
    np.save(tmp_path / "f.npy", array)
    with pytest.raises(DataError, match=r"f.npy: "):
        read_features(tmp_path / "f.npy", "text")


# ---- items.jsonl --------------------------------------------------------------------------------------------
def _folder_with_items(tmp_path: Path, lines: list[str]) -> Path:
    folder = write_dataset(tmp_path / "ds", np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), np.array([0, 2, 0, 1]),
                           {"text": np.ones((2, 4))})
    _write(folder / "items.jsonl", "\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"item": 1, "text": 5}', "'text' must be a string"),
        ('{"item": 1, "text": "t", "image": [1]}', "'image' must be a string"),
        ('{"item": 1, "text": "t", "image": {"p": "x.png"}}', "'image' must be a string"),
        ('{"item": 1, "text": "t", "orig_id": [1]}', "'orig_id' must be a string or an integer"),
        ('{"item": 1.5, "text": "t"}', "'item' must be an integer"),
        ('{"item": true, "text": "t"}', "'item' must be an integer"),
        ('{"item": ' + "9" * 5000 + ', "text": "t"}', ""),
        ("[" * 100_000, ""),
        ('{"item": 1, "text": NaN}', ""),
        ('"just a string"', "expected a JSON object"),
    ],
)
def test_items_jsonl_bad_rows_name_the_line(tmp_path, bad, message):
    folder = _folder_with_items(tmp_path, ['{"item": 0, "text": "fine", "image": null}', bad])
    with pytest.raises(DataError, match=rf"items.jsonl:2: .*{message}"):
        load_dataset(folder)


# ---- the command line ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rows", "message"),
    [(["0,1,nan,5"], "rating 'nan' is not a finite number"), (["0,1,4,1e999"], "timestamp '1e999'")],
)
def test_cli_ingest_reports_hostile_numbers_in_one_line(tmp_path, monkeypatch, capsys, rows, message):
    import robustrec.cli

    monkeypatch.setattr(robustrec.cli, "COMMANDS", ("ingest",))
    ratings = _write(tmp_path / "ratings.csv", _ratings(rows))
    out = tmp_path / "out" / "ds"
    code = robustrec.cli.main(["ingest", "--ratings", str(ratings), "--out", str(out), "--k-core", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err and "ratings.csv:11" in err
    assert _nothing_written(out)
