"""A whole study end to end on the tiny dataset: layout, selection on validation, reuse, extension,
refusal of another study's folder, and recovery after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustrec.cli import main
from robustrec.errors import ConfigError
from robustrec.records import read_records
from robustrec.studies import load_spec, run_study
from tests.conftest import REPO
from tests.studies.conftest import STUB_MAIN, TINY_SPEC


def weights_mtimes(out: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("runs/*/*/model.safetensors")}


def record_files(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.glob("audits/*/*.jsonl"))}


def test_a_tiny_study_end_to_end(write_spec, tmp_path, stub_report):
    out = run_study(load_spec(write_spec()), tmp_path / "out", progress=False)
    assert stub_report == [out]
    study = json.loads((out / "study.json").read_text())
    assert study["spec"]["name"] == "tiny" and len(study["dataset"]["fingerprint"]) > 8
    runs = sorted(p.parent for p in out.glob("runs/vbpr-mirror/*/metrics.json"))
    assert len(runs) == 4  # 2 grid points x 2 seeds
    fingerprint = study["dataset"]["fingerprint"]
    for run in runs:  # content-addressed: <config hash>-<fingerprint[:8]>
        info = json.loads((run / "run.json").read_text())
        assert run.name == f"{info['config_hash'][:12]}-{fingerprint[:8]}"
    selection = json.loads((out / "selection.json").read_text())
    assert selection["select"] == "recall@20" and [g["seed"] for g in selection["groups"]] == [1, 2]
    chosen = set()
    for group in selection["groups"]:
        assert [p["grid"] for p in group["points"]] == [{"alpha1": 1.0, "alpha2": 0.1}, {"alpha1": 1.5, "alpha2": 0.1}]
        values = [p["valid"] for p in group["points"]]
        assert values[group["chosen"]] == max(values) and values.index(max(values)) == group["chosen"]
        for point in group["points"]:
            metrics = json.loads((out / point["run"] / "metrics.json").read_text())
            assert point["valid"] == metrics["valid"]["recall@20"]
        chosen.add(group["points"][group["chosen"]]["run"])
    # one records file per chosen run, each with the clean record and 2 severities x 2 repeats
    files = list(out.glob("audits/noise-*/*.jsonl"))
    assert len(files) == len(chosen) == 2
    audited = set()
    for path in files:
        records = read_records(path)
        assert len(records) == 1 + 2 * 2
        audited.add(str(Path(records[0].run).relative_to(out.resolve())))
    assert audited == chosen


def test_a_rerun_trains_and_audits_nothing(write_spec, tmp_path, stub_report):
    spec = load_spec(write_spec())
    out = run_study(spec, tmp_path / "out", progress=False)
    before, records = weights_mtimes(out), record_files(out)
    selection = (out / "selection.json").read_text()
    run_study(spec, out, progress=False)
    assert weights_mtimes(out) == before and record_files(out) == records
    assert (out / "selection.json").read_text() == selection


def test_adding_a_seed_trains_only_its_runs(write_spec, tmp_path, stub_report):
    out = run_study(load_spec(write_spec()), tmp_path / "out", progress=False)
    before, records = weights_mtimes(out), record_files(out)
    run_study(load_spec(write_spec(TINY_SPEC.replace("seeds = [1, 2]", "seeds = [1, 2, 3]"))), out, progress=False)
    after = weights_mtimes(out)
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 2
    new = [k for k in after if k not in before]
    assert all(json.loads((out / k / "run.json").read_text())["spec"]["train"]["seed"] == 3 for k in new)
    now = record_files(out)
    assert {k: now[k] for k in records} == records and len(now) == len(records) + 1


def test_selection_follows_validation_not_test(write_spec, tmp_path, stub_report):
    """Make validation and test disagree in the metrics of the two grid points: the choice and the
    audit follow validation."""
    out = run_study(load_spec(write_spec()), tmp_path / "out", progress=False)
    selection = json.loads((out / "selection.json").read_text())
    for group in selection["groups"]:
        for n, point in enumerate(group["points"]):
            path = out / point["run"] / "metrics.json"
            metrics = json.loads(path.read_text())
            # the second point is better on validation, the first far better on test
            metrics["valid"]["recall@20"] = 0.5 if n == 1 else 0.1
            metrics["test"]["recall@20"] = 0.9 if n == 0 else 0.05
            path.write_text(json.dumps(metrics))
    for path in out.glob("audits/*/*"):
        path.unlink()
    run_study(load_spec(write_spec()), out, progress=False)
    selection = json.loads((out / "selection.json").read_text())
    assert [g["chosen"] for g in selection["groups"]] == [1, 1]
    audited = {str(Path(read_records(p)[0].run).relative_to(out.resolve())) for p in out.glob("audits/*/*.jsonl")}
    assert audited == {g["points"][1]["run"] for g in selection["groups"]}


def test_ties_go_to_the_first_point():
    from robustrec.studies.selection import best_index

    assert best_index([0.2, 0.3, 0.3, 0.1]) == 1 and best_index([0.5]) == 0 and best_index([0.1, 0.1]) == 0


def test_another_study_in_the_folder_is_refused(write_spec, tmp_path, stub_report):
    out = run_study(load_spec(write_spec()), tmp_path / "out", progress=False)
    other = load_spec(write_spec(TINY_SPEC.replace('name = "tiny"', 'name = "other"'), "other.toml"))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ConfigError, match="holds study 'tiny', not 'other'"):
        run_study(other, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a study"):
        run_study(other, tmp_path / "busy", progress=False)


def test_a_study_on_another_dataset_is_refused(write_spec, tmp_path, stub_report):
    import numpy as np

    from tests.test_cli import write_tiny

    out = run_study(load_spec(write_spec()), tmp_path / "out", progress=False)
    other = write_tiny(tmp_path / "other-data", image=np.ones((30, 12), dtype=np.float32))
    with pytest.raises(ConfigError, match="on another dataset"):
        run_study(load_spec(write_spec(), data=str(other)), out, progress=False)


def test_cli_run_prints_the_report_path(write_spec, tmp_path, stub_report, capsys):
    out = tmp_path / "out"
    assert main(["study", "run", str(write_spec()), "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")


def test_progress_is_one_overall_line(write_spec, tmp_path, stub_report, capsys, monkeypatch):
    monkeypatch.setenv("ROBUSTREC_PROGRESS_INTERVAL", "0")
    run_study(load_spec(write_spec()), tmp_path / "out")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines and all(line.startswith("study: ") for line in lines), lines
    assert lines[-1].startswith("study: 6/6 tasks (100%)")  # 4 trainings and 2 audits


KILL_SPEC = TINY_SPEC.replace("epochs = 2", "epochs = 15\npatience = 100").replace("seeds = [1, 2]", "seeds = [1, 2, 3]")


# about 10 s (a child process that imports torch, trains and is killed; then the rerun): kept in the
# default suite because resuming after kill -9 is a promise of the study runner
def test_kill_9_then_rerun_finishes_without_losing_or_repeating(write_spec, tmp_path, stub_report):
    """SIGKILL a ``robustrec study run`` once some runs have finished, at whatever moment it has
    reached; the rerun leaves the finished runs untouched and writes every record exactly once.
    (The report is the stand-in, in the child too: its plots would only make the test slower.)"""
    spec = write_spec(KILL_SPEC)
    out = tmp_path / "out"
    argv = [sys.executable, "-c", STUB_MAIN, "study", "run", str(spec), "--out", str(out), "--no-progress"]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.monotonic() + 120
    # once two runs have finished and a third is under way: somewhere in its epochs or their writes
    while not (len(list(out.glob("runs/*/*/metrics.json"))) >= 2 and list(out.glob("runs/*/*/state.pt"))):
        assert child.poll() is None and time.monotonic() < deadline, child.stderr.read().decode()
        time.sleep(0.005)
    assert child.poll() is None, child.stderr.read().decode()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    finished = {k: v for k, v in weights_mtimes(out).items() if (out / k / "metrics.json").is_file()}
    assert 2 <= len(finished) < 6, "the kill came too late or too early; adjust the epochs"
    assert not (out / "report.md").exists()

    assert main(["study", "run", str(spec), "--out", str(out), "--no-progress"]) == 0
    after = weights_mtimes(out)
    assert {k: after[k] for k in finished} == finished and len(after) == 6
    assert not list(out.rglob("*.tmp")) and (out / "report.md").is_file()
    selection = json.loads((out / "selection.json").read_text())
    chosen = {g["points"][g["chosen"]]["run"] for g in selection["groups"]}
    files = list(out.glob("audits/*/*.jsonl"))
    assert len(files) == len(chosen) == 3
    for path in files:
        keys = [(r.severity, r.repeat) for r in read_records(path)]
        assert len(keys) == len(set(keys)) == 1 + 2 * 2


def test_what_a_kill_leaves_behind_is_finished_by_a_rerun(write_spec, tmp_path, stub_report):
    """In process, what kill -9 leaves: a training stopped after some epochs (state.pt, no
    metrics.json), temporaries of atomic writes, and an audit whose per-user arrays were written but
    not its records. The rerun resumes the training, keeps every finished run, and writes each
    records file once."""
    from robustrec.data import open_dataset
    from robustrec.studies.plan import plan_groups
    from robustrec.training import train

    spec = load_spec(write_spec())
    out = run_study(spec, tmp_path / "out", progress=False)
    records = record_files(out)
    victim = next(iter(records))
    (out / victim).unlink()  # the audit was killed between its two writes
    fingerprint = json.loads((out / "study.json").read_text())["dataset"]["fingerprint"]
    groups = plan_groups(spec, out, fingerprint)
    task = groups[-1].tasks[-1]
    for path in task.folder.iterdir():  # this training was killed after its first epoch
        path.unlink()
    train(open_dataset(spec.data), task.spec, task.folder, progress=False, max_epochs_this_call=1)
    assert (task.folder / "state.pt").is_file() and not (task.folder / "metrics.json").exists()
    (task.folder / ".log.jsonl.x1.tmp").write_text("half")
    (out / ".selection.json.x2.tmp").write_text("half")
    (out / victim).with_name(f".{Path(victim).name}.x3.tmp").write_text("half")
    before = {k: v for k, v in weights_mtimes(out).items() if k != task.key}

    run_study(spec, out, progress=False)
    after = weights_mtimes(out)
    assert {k: after[k] for k in before} == before
    assert (task.folder / "metrics.json").is_file() and not (task.folder / "state.pt").exists()
    assert not list(out.rglob("*.tmp"))
    assert set(record_files(out)) == set(records)
    for path in out.glob("audits/*/*.jsonl"):
        keys = [(r.severity, r.repeat) for r in read_records(path)]
        assert len(keys) == len(set(keys)) == 5


def test_cli_report_writes_the_chosen_format(tmp_path, stub_report, capsys):
    out = tmp_path / "report.md"
    assert main(["study", "report", str(tmp_path), "--format", "json", "--out", str(out)]) == 0
    assert out.read_text() == "stub\n"
    assert main(["study", "report", str(tmp_path)]) == 0 and capsys.readouterr().out == "stub\n"
    (tmp_path / "folder").mkdir()
    assert main(["study", "report", str(tmp_path), "--out", str(tmp_path / "folder")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_cli_list_shows_every_recipe_with_its_line(capsys):
    from robustrec.studies.recipes import recipe_names, recipe_summary

    assert main(["study", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(recipe_names()) and len(recipe_names()) >= 9
    for name, line in zip(recipe_names(), lines[1:]):
        assert line.startswith(name) and line.endswith(recipe_summary(name))


def test_a_job_refuses_a_dataset_that_is_not_the_plans(write_spec, tmp_path):
    """The run folder's name holds the dataset fingerprint the plan was made for; a job handed another
    dataset (changed on disk since) refuses to train rather than fill the folder with other numbers."""
    import numpy as np

    from robustrec.errors import DataError
    from robustrec.studies.plan import plan_groups, train_job
    from tests.test_cli import write_tiny

    spec = load_spec(write_spec())
    task = plan_groups(spec, tmp_path / "out", "0" * 40)[0].tasks[0]
    other = write_tiny(tmp_path / "other", image=np.ones((30, 12), dtype=np.float32))
    with pytest.raises(DataError, match="not the dataset this study was planned for"):
        train_job(task, str(other), 1)
    assert not task.folder.exists()


def test_job_bars_only_in_one_process_on_a_terminal(monkeypatch):
    from robustrec.studies import LocalExecutor, SequentialExecutor
    from robustrec.studies.runner import job_bars

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert job_bars(SequentialExecutor(), True) and not job_bars(SequentialExecutor(), False)
    assert not job_bars(LocalExecutor(2), True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not job_bars(SequentialExecutor(), True)


def test_adding_a_grid_point_trains_only_its_runs(write_spec, tmp_path, stub_report):
    out = run_study(load_spec(write_spec()), tmp_path / "out", progress=False)
    before = weights_mtimes(out)
    wider = TINY_SPEC.replace("alpha1 = [1.0, 1.5]", "alpha1 = [1.0, 1.5, 2.0]")
    run_study(load_spec(write_spec(wider)), out, progress=False)
    after = weights_mtimes(out)
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 2  # one per seed
    selection = json.loads((out / "selection.json").read_text())
    assert [len(g["points"]) for g in selection["groups"]] == [3, 3]
    assert all(g["points"][2]["grid"] == {"alpha1": 2.0, "alpha2": 0.1} for g in selection["groups"])


def test_an_audit_covers_only_its_models(write_spec, tmp_path, stub_report):
    text = TINY_SPEC.replace("seeds = [1, 2]", "seeds = [1]") + '\n[[runs]]\nmodel = "bm3"\n'
    text = text.replace("repeats = 2", 'repeats = 2\nmodels = ["bm3"]')
    out = run_study(load_spec(write_spec(text)), tmp_path / "out", progress=False)
    files = list(out.glob("audits/*/*.jsonl"))
    assert len(files) == 1 and [r.model for r in read_records(files[0])] == ["bm3"] * 5
    assert len(weights_mtimes(out)) == 3  # vbpr's 2 grid points and bm3, all trained
