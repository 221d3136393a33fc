"""What train, evaluate and compare print: a short aligned table, or one JSON document with --json."""

from __future__ import annotations

import json
import shutil

import pytest

from robustrec.cli import main
from tests.test_cli import data_dir, one_line_error, run_dir  # noqa: F401 (fixtures)


def table_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_train_prints_its_result_line_and_a_metrics_table(data_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--model", "vbpr", "--epochs", "2", "--batch-size", "64",
                 "--out", str(out), "--no-progress"]) == 0
    first, *table = capsys.readouterr().out.strip().splitlines()
    saved = json.loads((out / "metrics.json").read_text())
    assert first.startswith(f"{out}: best epoch {saved['best_epoch']} of 2") and first.endswith(" s/epoch")
    rows = table_rows("\n".join(table))
    assert rows[0] == ["split", "k", "recall", "precision", "map", "ndcg", "hit"]
    assert [row[:2] for row in rows[1:]] == [["valid", "5"], ["valid", "10"], ["valid", "20"],
                                            ["test", "5"], ["test", "10"], ["test", "20"]]
    test20 = rows[6]
    assert test20[2] == f"{saved['test']['recall@20']:.4f}" and test20[5] == f"{saved['test']['ndcg@20']:.4f}"
    widths = {len(line) for line in table}
    assert len(widths) == 1  # aligned: every row as wide as the header


def test_train_json_is_one_document(data_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "seeds"
    assert main(["train", "--data", str(data_dir), "--model", "pop", "--seeds", "1,2", "--out", str(out),
                 "--json", "--quiet"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in document["runs"]] == [str(out / "seed-1"), str(out / "seed-2")]
    for run in document["runs"]:
        saved = json.loads((out / run["path"].rsplit("/", 1)[1] / "metrics.json").read_text())
        assert run["test"] == saved["test"] and run["best_epoch"] == saved["best_epoch"]


def test_evaluate_takes_the_run_as_an_argument_and_prints_a_table(run_dir, capsys):  # noqa: F811
    assert main(["evaluate", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    saved = json.loads((run_dir / "evaluation.json").read_text())
    rows = table_rows(captured.out.split("\n", 1)[1])
    assert rows[-1][:3] == ["test", "20", f"{saved['test']['recall@20']:.4f}"]
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["test"] == saved["test"] and document["run"] == str(run_dir) and document["finished"]


def test_evaluate_still_accepts_run_with_a_note(run_dir, capsys):  # noqa: F811
    assert main(["evaluate", "--run", str(run_dir)]) == 0
    assert "note: --run is no longer needed" in capsys.readouterr().err
    one_line_error(capsys, ["evaluate"], "give a run folder")
    one_line_error(capsys, ["evaluate", str(run_dir), str(run_dir)], "give one run folder, got 2")


@pytest.fixture
def two_runs(data_dir, run_dir, tmp_path):  # noqa: F811
    """The module's finished vbpr run, a finished pop run and a copy of the vbpr run that has not finished."""
    pop = tmp_path / "pop"
    assert main(["train", "--data", str(data_dir), "--model", "pop", "--out", str(pop), "--no-progress"]) == 0
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    (unfinished / "metrics.json").unlink()
    return run_dir, pop, unfinished


def test_compare_puts_runs_side_by_side(two_runs, capsys):
    vbpr, pop, unfinished = two_runs
    capsys.readouterr()
    assert main(["compare", str(vbpr), str(pop), str(unfinished)]) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.split()[:6] == ["run", "model", "strategy", "seed", "best", "epoch"]
    assert "valid recall@20" in header and "test recall@20" in header and "test ndcg@20" in header
    saved = json.loads((vbpr / "metrics.json").read_text())
    vbpr_row = rows[0].split()
    assert vbpr_row[:3] == [str(vbpr), "vbpr", "mirror"]
    assert f"{saved['valid']['recall@20']:.4f}" in vbpr_row and f"{saved['test']['recall@20']:.4f}" in vbpr_row
    assert rows[1].split()[1] == "pop"
    assert "unfinished" in rows[2] and rows[2].split()[-1] == "-"


def test_compare_metric_choice_and_json(two_runs, capsys):
    vbpr, pop, unfinished = two_runs
    capsys.readouterr()
    assert main(["compare", str(vbpr), str(pop), "--metric", "ndcg@5", "--metric", "hit@10"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split()[-6:] == ["valid", "ndcg@5", "test", "ndcg@5", "test", "hit@10"]
    assert main(["compare", str(vbpr), str(unfinished), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["metrics"][0] == "recall@20"
    first, second = document["runs"]
    assert first["test"] == json.loads((vbpr / "metrics.json").read_text())["test"] and first["finished"]
    assert second == {"run": str(unfinished), "model": "vbpr", "strategy": "mirror", "seed": 999, "finished": False}


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(test={"recall@20": float("nan")}), "NaN"),
    (lambda m: m.update(test={"recall@20": 1.5}), "not a number in [0, 1]"),
    (lambda m: m.update(best_epoch=-1), "best_epoch is -1"),
    (lambda m: m.pop("valid"), "KeyError"),
    (lambda m: m.update(test={"banana@3": 0.1}), "unknown metric"),
])
def test_compare_refuses_malformed_metrics(run_dir, tmp_path, capsys, edit, match):  # noqa: F811
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    metrics = json.loads((broken / "metrics.json").read_text())
    edit(metrics)
    (broken / "metrics.json").write_text(json.dumps(metrics))
    err = one_line_error(capsys, ["compare", str(broken)], match)
    assert "metrics.json" in err


def test_compare_errors(run_dir, tmp_path, capsys):  # noqa: F811
    one_line_error(capsys, ["compare"], "give at least one run folder")
    one_line_error(capsys, ["compare", str(tmp_path)], "not a robustrec run folder")
    one_line_error(capsys, ["compare", str(run_dir), "--metric", "recall@7"], "no run measures recall@7")
    one_line_error(capsys, ["compare", str(run_dir), "--metric", "banana"], "unknown metric")


def test_the_thread_count_reaches_the_run_wherever_it_is_given(data_dir, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("ROBUSTREC_THREADS", raising=False)
    base = ["--data", str(data_dir), "--model", "pop", "--quiet"]
    for name, argv in [("default", ["train", *base]), ("after", ["train", *base, "--threads", "2"]),
                       ("before", ["--threads", "3", "train", *base])]:
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
    recorded = {name: json.loads((tmp_path / name / "run.json").read_text())["spec"]["train"]["threads"]
                for name in ("default", "after", "before")}
    assert recorded == {"default": 1, "after": 2, "before": 3}
