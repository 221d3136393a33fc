"""``robustrec report`` and ``robustrec check`` run in-process through robustrec.cli.main."""

from __future__ import annotations

import csv
import importlib
import io
import json
import xml.etree.ElementTree as ET

import pytest

import robustrec.cli
import robustrec.cli.report
from robustrec.cli import main


@pytest.fixture(autouse=True)
def only_report_and_check(monkeypatch):
    """Other commands' modules may not exist yet; build the parser with these two only."""
    monkeypatch.setattr(robustrec.cli, "COMMANDS", ("report", "check"))


def test_report_markdown_on_stdout(paper_like, capsys):
    assert main(["report", str(paper_like)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Robustness report: dataset baby")
    # the default metric is recall@20 (robustrec.metrics.DEFAULT_METRIC); recall@5 is one flag away
    assert "| FREEDOM + MG |" in out and "recall@20" in out and "recall@5" not in out
    assert main(["report", str(paper_like), "--metric", "recall@5"]) == 0
    out = capsys.readouterr().out
    assert "recall@5" in out and "recall@20" not in out


def test_report_files_and_plot(paper_like, tmp_path, capsys):
    out_json, plot = tmp_path / "r.json", tmp_path / "drops.svg"
    assert main(["report", str(paper_like), "--format", "json", "--out", str(out_json), "--plot", str(plot)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out_json.read_text())["dataset"] == "baby"
    assert plot.stat().st_size > 1000
    assert main(["report", str(paper_like), "--format", "csv", "--metric", "recall@20"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["metric"] for r in rows} == {"recall@20"} and len(rows) == 6


def test_report_bad_input(paper_like, tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["report", str(paper_like), "--metric", "recal@5"]) == 2
    assert "unknown metric" in capsys.readouterr().err


def test_report_refuses_mixed_datasets(write_audit, make, tmp_path, capsys):
    write_audit("a", make(dataset="baby"), folder=tmp_path / "baby")
    write_audit("b", make(dataset="sports", fingerprint="fp-sports"), folder=tmp_path / "sports")
    assert main(["report", str(tmp_path / "baby"), str(tmp_path / "sports")]) == 2
    err = capsys.readouterr().err
    assert "different datasets" in err and "'baby'" in err and "'sports'" in err
    assert len(err.strip().splitlines()) == 1


def test_check_exit_codes(paper_like, capsys):
    assert main(["check", str(paper_like), "--max-drop", "50%"]) == 0
    assert "all 6 checks within budget" in capsys.readouterr().out
    assert main(["check", str(paper_like), "--max-drop", "0.2"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL [max-drop]") == 2
    assert "FREEDOM (strategy plain), noise (sigma2) sigma2=0.0001, recall@20: drop 46.67% > budget 20.00%" in out
    assert "2 of 6 checks failed" in out


@pytest.mark.parametrize("argv", [
    ["--max-drop", "0.1", "--metric", "recal@20"],
    ["--max-drop", "abc"],
    ["--max-drop", "1e-6="],
    ["--max-drop", "1e-5=0.1"],
    ["--min-clean", "recall@20"],
    ["--baseline", "missing.json"],
    [],
])
def test_check_bad_input_exits_2(paper_like, capsys, argv):
    assert main(["check", str(paper_like), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robustrec check: error: ") and len(err.strip().splitlines()) == 1


def test_check_missing_dir(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope"), "--max-drop", "5%"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_check_argparse_errors_exit_2(paper_like):
    with pytest.raises(SystemExit) as exc:
        main(["check", str(paper_like), "--require", "everything"])
    assert exc.value.code == 2


def test_check_baseline_tolerance(paper_like, tmp_path, write_audit, make, capsys):
    saved = tmp_path / "saved.json"
    assert main(["report", str(paper_like), "--format", "json", "--out", str(saved)]) == 0
    # VBPR's 1e-6 drop 2.5% -> 5%: 2.5 pp worse
    write_audit("vbpr-plain-1", make("vbpr", "plain", 1, 0.4, {1e-6: [0.38, 0.38], 1e-4: [0.3, 0.3]}))
    base = ["check", str(paper_like), "--baseline", str(saved)]
    assert main([*base, "--tolerance", "0.01"]) == 1
    assert "FAIL [baseline-drop] VBPR" in capsys.readouterr().out
    assert main([*base, "--tolerance", "0.03"]) == 0


def test_check_mirror_not_worse_and_junit(paper_like, tmp_path, write_audit, make, capsys):
    junit = tmp_path / "junit.xml"
    assert main(["check", str(paper_like), "--require", "mirror-not-worse", "--junit", str(junit)]) == 0
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"
    write_audit("vbpr-mirror-1", make("vbpr", "mirror", 1, 0.4, {1e-6: [0.38, 0.38], 1e-4: [0.3, 0.3]}))
    assert main(["check", str(paper_like), "--require", "mirror-not-worse", "--junit", str(junit)]) == 1
    assert "FAIL [mirror-not-worse] VBPR + MG" in capsys.readouterr().out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("4", "1")


def test_tolerance_without_baseline_is_bad_input(paper_like, capsys):
    assert main(["check", str(paper_like), "--max-drop", "5%", "--tolerance", "0.01"]) == 2


def one_line_exit_2(capsys, argv, match):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and match in err, err


def test_check_refuses_a_baseline_with_nan(paper_like, tmp_path, capsys):
    """The issue's case: a NaN baseline made every drop comparison false, so check passed (exit 0)."""
    saved = tmp_path / "saved.json"
    assert main(["report", str(paper_like), "--format", "json", "--out", str(saved)]) == 0
    doc = json.loads(saved.read_text())
    for cell in doc["cells"]:
        cell["drop_mean"] = cell["clean"] = float("nan")
    saved.write_text(json.dumps(doc))
    one_line_exit_2(capsys, ["check", str(paper_like), "--baseline", str(saved)], "non-standard JSON number NaN")


@pytest.mark.parametrize("argv, match", [
    (["--min-clean", "recall@20=nan"], "not a finite number"),
    (["--max-drop", "nan=0.1"], "not a finite number"),
    (["--max-drop", "nan"], "must be a fraction"),
])
def test_check_refuses_non_finite_budgets(paper_like, capsys, argv, match):
    one_line_exit_2(capsys, ["check", str(paper_like), *argv], match)


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_check_tolerance_must_be_finite(paper_like, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["check", str(paper_like), "--require", "mirror-not-worse", f"--tolerance={value}"])
    assert exc.value.code == 2
    assert "finite number" in capsys.readouterr().err


def test_report_metric_with_unicode_digits(paper_like, capsys):
    one_line_exit_2(capsys, ["report", str(paper_like), "--metric", "recall@²"], "unknown metric")


def test_outputs_are_checked_before_any_work(paper_like, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("records were loaded before the output was checked")

    monkeypatch.setattr(robustrec.cli.report, "load_results", no_work)
    monkeypatch.setattr(importlib.import_module("reports.check"), "load_results", no_work)
    out = tmp_path / "out"
    out.mkdir()
    (out / "file").write_text("x")
    for argv, match in [
        (["report", str(paper_like), "--out", str(out)], "is a folder; give a file name"),
        (["report", str(paper_like), "--out", str(out / "file" / "r.md")], "is not a folder"),
        (["report", str(paper_like), "--plot", str(out / "p.gif")], "must end in .png"),
        (["report", str(paper_like), "--plot", str(out / "file" / "p.png")], "is not a folder"),
        (["check", str(paper_like), "--max-drop", "5%", "--junit", str(out)], "--junit"),
        (["check", str(paper_like), "--max-drop", "5%", "--junit", "/proc/junit.xml"], "cannot write in /proc"),
    ]:
        one_line_exit_2(capsys, argv, match)
    assert sorted(p.name for p in out.iterdir()) == ["file"]


class ClosedPipe(io.StringIO):
    """A stdout whose reader has gone away (``robustrec report ... | head -1``)."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_report_into_a_closed_pipe_exits_quietly(paper_like, capsys, monkeypatch):
    capsys.readouterr()
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["report", str(paper_like)]) == robustrec.cli.EXIT_BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""
