"""Fuzzing the CLI's file inputs: whatever a file holds, robustrec answers 0 or a one-line error (2).

Each test writes one hostile version of one input file, runs the command in-process through
:func:`robustrec.cli.main`, and asserts that no exception escapes, that stderr holds no traceback,
and that the exit status is 0 or 2 (``check`` may also say 1: a regression against its budgets).
The inputs, each fuzzed both as random bytes and as structured mutations of a valid file (wrong
types, NaN / Infinity tokens, numbers beyond float or int range, deep nesting, deleted keys):

- result records (``*.jsonl``) for ``report`` and ``check``, and the per-user ``.npz`` beside them;
- the saved JSON report that ``check --baseline`` reads;
- a run folder's ``run.json`` and ``metrics.json`` for ``evaluate`` and ``audit``;
- the captions file of ``audit --suite caption --captioner file``;
- the ratings CSV of ``ingest``.

The examples are few and derandomised so the default suite stays fast and reproducible; set
``ROBUSTREC_FUZZ_EXAMPLES=500`` to explore (then with fresh random examples on each run).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from robustrec.cli import main
from tests.test_cli import write_tiny

# Hypothesis keeps caches in ./.hypothesis even without an example database: not in the working tree
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "robustrec-hypothesis")

EXAMPLES = int(os.environ.get("ROBUSTREC_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the working tree
    derandomize="ROBUSTREC_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- running the CLI -------------------------------------------------------------------------------
def run_cli(argv: list[str], allowed: tuple[int, ...] = (0, 2)) -> tuple[int, str]:
    """Run ``robustrec argv`` in-process; fail on an escaping exception, a traceback or another status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)  # any exception escaping main is a traceback: the test fails with it
    stderr = err.getvalue()
    assert "Traceback" not in stderr, stderr
    assert code in allowed, f"exit status {code}; stderr: {stderr}"
    if code == 2:
        errors = [line for line in stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1 and errors[0].startswith("robustrec "), stderr
    return code, stderr


# -- hostile content -------------------------------------------------------------------------------
#: Placeholders that :func:`dumps` turns into text ``json.dumps`` cannot write.
RAW_TOKENS = {
    "@@HUGE_INT@@": "9" * 5000,  # beyond Python's int-from-string limit
    "@@OVERFLOW@@": "1e400",  # a float literal that Python's json reads as inf
    "@@DEEP@@": "[" * 5000 + "]" * 5000,  # beyond the decoder's recursion limit
    "@@DEEP_OBJECT@@": '{"a":' * 3000 + "1" + "}" * 3000,
}

hostile_values = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 10**30, -(10**30), 2**63, -1, 0, 1e308, -0.0, True, None,
                     "", "x", "high", "../../../etc/passwd", "/etc/passwd", [], {}, [1], {"a": 1}, [[[[]]]],
                     *RAW_TOKENS]),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
).map(copy.deepcopy)  # a fresh object each time: a mutation must not change the constants above


def dumps(value: Any) -> str:
    """JSON text (with bare NaN / Infinity, as Python writes by default) and the raw tokens spliced in."""
    text = json.dumps(value, allow_nan=True)
    for token, raw in RAW_TOKENS.items():
        text = text.replace(json.dumps(token), raw)
    return text


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a JSON document, as a tuple of keys / indices (the root is ``()``)."""
    found = [prefix]
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found += paths(child, (*prefix, key))
    return found


@st.composite
def mutated(draw: Callable, document: Any) -> Any:
    """``document`` with one to three locations replaced by hostile values, deleted, or wrapped."""
    doc = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(doc)))
        op = draw(st.sampled_from(["replace", "replace", "delete", "wrap"]))
        if not where:
            doc = draw(hostile_values) if op != "wrap" else [doc]
            continue
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        key = where[-1]
        if op == "delete":
            del parent[key]
        elif op == "wrap":
            parent[key] = [parent[key]]
        else:
            parent[key] = draw(hostile_values)
    return doc


def file_contents(valid: str, structured: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Random bytes, the valid file cut short or with a byte changed, or a structured mutation."""
    data = valid.encode()
    return st.one_of(
        st.binary(max_size=600),
        st.integers(0, len(data)).map(lambda n: data[:n]),
        st.tuples(st.integers(0, max(len(data) - 1, 0)), st.integers(0, 255)).map(
            lambda t: data[: t[0]] + bytes([t[1]]) + data[t[0] + 1:]),
        structured.map(str.encode),
    )


def jsonl_mutations(rows: list[Any]) -> st.SearchStrategy[str]:
    """Records files: one row mutated, rows duplicated or dropped."""
    def render(rows: list[Any]) -> str:
        return "".join(dumps(r) + "\n" for r in rows)

    one_row = st.integers(0, len(rows) - 1).flatmap(
        lambda i: mutated(rows[i]).map(lambda row: render([*rows[:i], row, *rows[i + 1:]])))
    duplicated = st.integers(0, len(rows) - 1).map(lambda i: render([*rows, rows[i]]))
    dropped = st.integers(0, len(rows) - 1).map(lambda i: render([*rows[:i], *rows[i + 1:]]))
    return st.one_of(one_row, one_row, duplicated, dropped)


# -- valid inputs, built once ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A tiny dataset, plain and mirror runs on it, their audit records and a saved report."""
    root = tmp_path_factory.mktemp("fuzz")
    data = write_tiny(root / "tiny")
    run, mirror = root / "run", root / "mirror"
    for strategy, out in (("plain", run), ("mirror", mirror)):  # a pair: reports then compare per user
        run_cli(["train", "--data", str(data), "--model", "vbpr", "--strategy", strategy, "--epochs", "1",
                 "--batch-size", "64", "--out", str(out), "--no-progress"], allowed=(0,))
    audit = root / "audit"
    run_cli(["audit", str(run), str(mirror), "--suite", "noise", "--sigma2", "1e-4,1e-2", "--repeats",
             "2", "--out", str(audit), "--no-progress"], allowed=(0,))
    baseline = root / "baseline.json"
    run_cli(["report", str(audit), "--format", "json", "--out", str(baseline)], allowed=(0,))
    return {"root": root, "data": data, "run": run, "audit": audit, "baseline": baseline}


@pytest.fixture(scope="module")
def caption_setup(tmp_path_factory):
    """A synthetic shop with item texts and images, a run on it and a valid captions file."""
    from robustrec.data import load_dataset
    from robustrec.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("fuzz-caption")
    data = make_synthetic(root / "shop", n_users=50, n_items=30, seed=2, text_encoder="hashing",
                          image_encoder="pixels", cache_dir=root / "cache")
    items = load_dataset(data).items
    run = root / "run"
    run_cli(["train", "--data", str(data), "--model", "vbpr", "--epochs", "1", "--out", str(run),
             "--no-progress"], allowed=(0,))
    csv_text = "item_id,caption\n" + "".join(f"{it.orig_id},a photo of thing {n}\n" for n, it in enumerate(items))
    jsonl_rows = [{"item_id": it.orig_id, "caption": f"a photo of thing {n}"} for n, it in enumerate(items)]
    return {"run": run, "csv": csv_text, "jsonl_rows": jsonl_rows}


def scratch() -> tempfile.TemporaryDirectory:
    """A fresh folder per example (hypothesis cannot use function-scoped fixtures such as tmp_path)."""
    return tempfile.TemporaryDirectory(prefix="robustrec-fuzz-")


# -- the fuzz tests ----------------------------------------------------------------------------------
def _records(valid):
    """One of the two records files (the plain run's) and its rows."""
    path = min(valid["audit"].glob("*.jsonl"), key=lambda p: "mirror" in p.name)
    return path, [json.loads(line) for line in path.read_text().splitlines()]


@FUZZ
@given(st.data())
def test_result_records(valid, data):
    path, rows = _records(valid)
    content = data.draw(file_contents(path.read_text(), jsonl_mutations(rows)))
    with scratch() as tmp:
        folder = Path(tmp) / "audit"
        folder.mkdir()
        for f in valid["audit"].iterdir():  # the per-user .npz beside the records
            shutil.copy(f, folder)
        (folder / path.name).write_bytes(content)
        run_cli(["report", str(folder), "--format", data.draw(st.sampled_from(["markdown", "json"]))])
        run_cli(["check", str(folder), "--max-drop", "50%", "--require", "mirror-not-worse"], allowed=(0, 1, 2))
        run_cli(["check", str(folder), "--baseline", str(valid["baseline"]), "--tolerance", "0.01"],
                allowed=(0, 1, 2))


def _npz(arrays: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


npz_arrays = st.dictionaries(
    st.sampled_from(["r0/users", "r0/values", "r1/users", "r1/values", "r0/recall@20", "x"]),
    st.one_of(st.lists(st.integers(-5, 50), max_size=6).map(np.array),
              st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6).map(np.array),
              st.lists(st.lists(st.floats(0, 1), min_size=2, max_size=2), max_size=20).map(np.array),
              st.lists(st.text(max_size=3), max_size=3).map(np.array)),
    max_size=6,
).map(_npz)


@FUZZ
@given(st.data())
def test_per_user_file(valid, data):
    path, _ = _records(valid)
    npz = path.with_suffix(".per_user.npz")
    original = npz.read_bytes()
    content = data.draw(st.one_of(
        st.binary(max_size=300),
        st.integers(0, len(original)).map(lambda n: original[:n]),
        npz_arrays,
    ))
    with scratch() as tmp:
        folder = Path(tmp) / "audit"
        shutil.copytree(valid["audit"], folder)
        (folder / npz.name).write_bytes(content)
        run_cli(["report", str(folder), "--format", data.draw(st.sampled_from(["markdown", "json"]))])


@FUZZ
@given(st.data())
def test_check_baseline(valid, data):
    document = json.loads(valid["baseline"].read_text())
    structured = mutated(document).map(dumps)
    content = data.draw(file_contents(valid["baseline"].read_text(), structured))
    with scratch() as tmp:
        baseline = Path(tmp) / "baseline.json"
        baseline.write_bytes(content)
        run_cli(["check", str(valid["audit"]), "--baseline", str(baseline)], allowed=(0, 1, 2))


@FUZZ
@given(st.data())
def test_run_folder(valid, data):
    which = data.draw(st.sampled_from(["run.json", "metrics.json"]))
    original = (valid["run"] / which).read_text()
    content = data.draw(file_contents(original, mutated(json.loads(original)).map(dumps)))
    with scratch() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(valid["run"], run)
        (run / which).write_bytes(content)
        run_cli(["evaluate", str(run)])
        run_cli(["audit", str(run), "--suite", "noise", "--sigma2", "1e-4", "--repeats", "1",
                 "--out", str(Path(tmp) / "out"), "--no-progress", "--allow-unfinished"])


@FUZZ
@given(st.data())
def test_captions_file(caption_setup, data):
    as_jsonl = data.draw(st.booleans())
    if as_jsonl:
        rows = caption_setup["jsonl_rows"]
        valid_text, structured = "".join(dumps(r) + "\n" for r in rows), jsonl_mutations(rows)
    else:
        valid_text = caption_setup["csv"]
        structured = st.lists(st.text(max_size=30), min_size=1, max_size=5).map(
            lambda lines: valid_text + "\n".join(lines))
    content = data.draw(file_contents(valid_text, structured))
    with scratch() as tmp:
        captions = Path(tmp) / ("captions.jsonl" if as_jsonl else "captions.csv")
        captions.write_bytes(content)
        run_cli(["audit", str(caption_setup["run"]), "--suite", "caption", "--captioner", "file",
                 "--captions", str(captions), "--prob", "1", "--repeats", "1", "--out", str(Path(tmp) / "out"),
                 "--caption-cache", str(Path(tmp) / "cache"), "--no-progress", "--no-per-user"])


RATINGS = "user_id,item_id,rating,timestamp\n" + "".join(
    f"{u},{(u * 7 + k) % 12},{1 + k % 5},{1000 + 10 * u + k}\n" for u in range(15) for k in range(6))

ratings_cells = st.one_of(st.integers(-3, 30).map(str), st.sampled_from(["", "nan", "inf", "-1", "1e400", "x", "9" * 40,
                                                                         '"', "a,b", "\x00", "é"]))


@FUZZ
@given(st.data())
def test_ingest_ratings(data):
    lines = RATINGS.splitlines()
    structured = st.lists(st.tuples(st.integers(1, len(lines) - 1), st.integers(0, 3), ratings_cells),
                          min_size=1, max_size=4).map(lambda edits: _edit_csv(lines, edits))
    content = data.draw(file_contents(RATINGS, structured))
    with scratch() as tmp:
        ratings = Path(tmp) / "ratings.csv"
        ratings.write_bytes(content)
        run_cli(["ingest", "--ratings", str(ratings), "--out", str(Path(tmp) / "data"), "--k-core", "2",
                 "--text-encoder", "hashing", "--image-encoder", "pixels", "--no-cache", "--quiet"])


def _edit_csv(lines: list[str], edits: list[tuple[int, int, str]]) -> str:
    rows = [line.split(",") for line in lines]
    for row, column, value in edits:
        rows[row][column] = value
    return "\n".join(",".join(r) for r in rows) + "\n"
