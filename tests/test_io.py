"""robustrec.io: strict JSON in and out, atomic writes, and output paths checked before any work."""

from __future__ import annotations

import json
import math

import pytest

from robustrec.errors import ConfigError, DataError
from robustrec.io import (
    append_jsonl,
    check_output_file,
    check_output_folder,
    loads_json,
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
    write_text,
)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_writers_refuse_nan_and_infinity_naming_the_value(tmp_path, value):
    doc = {"test": {"recall@20": 0.5, "ndcg@20": value}}
    with pytest.raises(DataError, match=r"test\.ndcg@20 = (nan|inf|-inf)"):
        write_json(tmp_path / "m.json", doc)
    with pytest.raises(DataError, match=r"m\.jsonl:2: refusing to write test\.ndcg@20"):
        write_jsonl(tmp_path / "m.jsonl", [{"a": 1}, doc])
    (tmp_path / "log.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(DataError, match="refusing to write"):
        append_jsonl(tmp_path / "log.jsonl", doc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]  # nothing written, no temporary left
    assert (tmp_path / "log.jsonl").read_text() == '{"epoch": 1}\n'


def test_finite_documents_round_trip(tmp_path):
    doc = {"a": [1, 2.5, -0.0, None, "x"], "b": {"c": 1e-300}}
    write_json(tmp_path / "d.json", doc)
    assert read_json(tmp_path / "d.json") == doc == json.loads((tmp_path / "d.json").read_text())
    write_jsonl(tmp_path / "d.jsonl", [doc, doc])
    assert read_jsonl(tmp_path / "d.jsonl") == [doc, doc]


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"x": NaN}', "non-standard JSON number NaN"),
        ('{"x": Infinity}', "non-standard JSON number Infinity"),
        ("[-Infinity]", "non-standard JSON number -Infinity"),
        ('{"x": 1e400}', "out of range"),  # Python's json reads it as inf
        ('{"x": ' + "9" * 5000 + "}", "not valid JSON"),  # beyond Python's int conversion limit
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # RecursionError inside json
        ('{"x": 1', "not valid JSON"),
    ],
)
def test_strict_json_reading(tmp_path, text, match):
    with pytest.raises(DataError, match=match) as exc:
        loads_json(text, "where.json")
    assert str(exc.value).startswith("where.json: ")
    path = tmp_path / "f.json"
    path.write_text(text)
    with pytest.raises(DataError, match=str(path)):
        read_json(path)


def test_bytes_that_are_not_utf8_are_a_data_error(tmp_path):
    path = tmp_path / "f.json"
    path.write_bytes(b'{"x": "\xff"}')
    with pytest.raises(DataError, match=rf"cannot read file {path}: not UTF-8"):
        read_json(path)


def test_read_jsonl_names_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n{"a": NaN}\n')
    with pytest.raises(DataError, match=rf"{path}:3: non-standard"):
        read_jsonl(path)


def test_reading_a_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match=rf"cannot read baseline report {tmp_path / 'nope.json'}"):
        read_json(tmp_path / "nope.json", "baseline report")


def test_writing_onto_a_folder_or_under_a_file_is_a_config_error(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="it is a folder"):
        write_text(tmp_path / "folder", "x")
    with pytest.raises(ConfigError, match=rf"cannot write {tmp_path / 'file' / 'x.json'}"):
        write_text(tmp_path / "file" / "x.json", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]


def test_output_checks_create_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_output_folder(tmp_path / "folder") == tmp_path / "folder"
    assert check_output_file(tmp_path / "file") == tmp_path / "file"  # replacing a file is fine
    assert check_output_file(tmp_path / "new" / "report.md") == tmp_path / "new" / "report.md"
    with pytest.raises(ConfigError, match="--out .*file exists and is not a folder"):
        check_output_folder(tmp_path / "file")
    with pytest.raises(ConfigError, match="--junit .*folder is a folder"):
        check_output_file(tmp_path / "folder", "--junit")
    with pytest.raises(ConfigError, match="is not a folder"):
        check_output_folder(tmp_path / "file" / "sub")
    with pytest.raises(ConfigError, match="is not a folder"):
        check_output_file(tmp_path / "file" / "sub" / "r.md")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_an_unwritable_location_is_refused(tmp_path):
    # /proc refuses new files even for root, for whom permission bits do not count
    with pytest.raises(ConfigError, match="cannot write in /proc"):
        check_output_folder("/proc/robustrec-out")
    with pytest.raises(ConfigError, match="cannot write in /proc"):
        check_output_file("/proc/report.md")
