"""``robustrec audit`` is driven by the suite registry: a suite defined here, in the test, runs through
the CLI with its options and default severity; bad options are one line and exit status 2."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pytest

from perturbations import PERTURBATIONS, Perturbation, PerturbedView, SuiteContext
from robustrec.cli import main
from robustrec.data import load_dataset
from robustrec.data.mmrec import write_dataset
from robustrec.runs import RunSpec, TrainConfig
from robustrec.training import train
from tests.conftest import make_tiny_dataset

NAME = "test-shift"


class ItemShift(Perturbation):
    """A suite as a user would add one: one class, one registry line (in the fixture below)."""

    name = NAME
    severity_name = "shift"
    default_severity = 0.25
    summary = "adds the severity to every item embedding (a test suite)"

    def __init__(self, severity: float = default_severity, rows: Literal["all", "first"] = "all") -> None:
        super().__init__(severity)
        self.rows = rows
        self.prepared_with = ""

    def prepare(self, context: SuiteContext) -> ItemShift:
        self.prepared_with = context.dataset.name
        return self

    def apply(self, model, dataset, generator):
        clone = model.weights_copy({"item_embedding"})
        rows = slice(None) if self.rows == "all" else slice(0, 1)
        clone.item_embedding.data[rows] += self.severity
        return PerturbedView(clone, dataset, {"rows": self.rows, "prepared_with": self.prepared_with})


@pytest.fixture
def shift_suite():
    PERTURBATIONS.register(NAME)(ItemShift)
    yield ItemShift
    PERTURBATIONS.unregister(NAME)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-cli")
    ds = make_tiny_dataset()
    pairs = np.concatenate([ds.train, ds.valid, ds.test])
    labels = np.repeat([0, 1, 2], [len(ds.train), len(ds.valid), len(ds.test)])
    folder = write_dataset(root / "tiny", pairs, labels,
                           {"image": ds.features.image.numpy(), "text": ds.features.text.numpy()})
    out = root / "run"
    train(load_dataset(folder), RunSpec("vbpr", train=TrainConfig(epochs=1, batch_size=64, topk=(5, 10, 20))), out,
          progress=False)
    return out


def rows_of(folder):
    (path,) = folder.glob("*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def one_line_error(capsys, argv, match):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert match in err, err
    return err


def test_a_suite_defined_in_a_test_runs_through_the_cli(shift_suite, run_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["audit", str(run_dir), "--suite", NAME, "--suite-param", "rows=first", "--repeats", "2",
                 "--out", str(out)]) == 0
    rows = rows_of(out)
    perturbed = [r for r in rows if r["repeat"] >= 0]
    assert len(rows) == 1 + 2 and {r["suite"] for r in rows} == {NAME}
    assert {r["severity"] for r in perturbed} == {0.25}  # the class's default severity
    assert {r["severity_name"] for r in rows} == {"shift"}
    assert all(r["details"]["rows"] == "first" and r["details"]["prepared_with"] == "tiny" for r in perturbed)
    assert rows[0]["provenance"]["audit"]["params"] == {"rows": "first"}
    assert all(r["metrics"] != rows[0]["metrics"] for r in perturbed)  # the shift moved the scores

    other = tmp_path / "sweep"
    assert main(["audit", str(run_dir), "--suite", NAME, "--severity", "0,2", "--repeats", "1",
                 "--out", str(other)]) == 0
    by_severity = {r["severity"]: r for r in rows_of(other) if r["repeat"] >= 0}
    assert set(by_severity) == {0.0, 2.0} and by_severity[0.0]["details"]["rows"] == "all"


def test_help_lists_the_suites_from_the_registry(shift_suite, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 0
    for name in PERTURBATIONS.names():
        assert name in text and " ".join(PERTURBATIONS.get(name).summary.split()) in text
    assert f"{NAME}: shift (default 0.25)" in text
    assert "rows=all|first" in text and "noise_scale=absolute|relative" in text


@pytest.mark.parametrize("argv, match", [
    (["--suite", "noise", "--suite-param", "bogus=1"], "suite 'noise' has no parameter 'bogus'"),
    (["--suite", "noise", "--suite-param", "noise_scale=weird"], "noise_scale must be one of absolute, relative"),
    (["--suite", "noise", "--suite-param", "item_ids=1,x"], "item_ids='x' is not a valid int"),
    (["--suite", "noise", "--suite-param", "severity=1"], "give severities with --severity"),
    (["--suite", "caption", "--suite-param", "target=items"], "suite 'caption' has no parameter 'target'"),
    (["--suite", "noise", "--severity", "-1"], "noise severity must be >= 0"),
    (["--suite", "caption", "--severity", "1.5"], "caption probability must be in [0, 1]"),
])
def test_bad_suite_options_are_one_line_errors(run_dir, tmp_path, capsys, argv, match):
    one_line_error(capsys, ["audit", str(run_dir), "--out", str(tmp_path / "out"), *argv], match)
    assert not (tmp_path / "out").exists()


def test_seed_was_renamed_perturbation_seed(run_dir, tmp_path, capsys):
    err = one_line_error(capsys, ["audit", str(run_dir), "--suite", "noise", "--seed", "3", "--out",
                                  str(tmp_path / "out")], "--seed was renamed --perturbation-seed")
    assert "perturbation draws" in err
    assert not (tmp_path / "out").exists()
    argv = ["audit", str(run_dir), "--suite", "noise", "--severity", "1e-2", "--repeats", "2"]
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert main([*argv, "--perturbation-seed", seed, "--out", str(tmp_path / name)]) == 0
    a, b, c = ([r["metrics"] for r in rows_of(tmp_path / n) if r["repeat"] >= 0] for n in "abc")
    assert a == b and a != c
    assert rows_of(tmp_path / "a")[1]["seed"] == 3 * 1_000_003


def test_severity_aliases_apply_only_to_suites_measured_that_way(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["audit", str(run_dir), "--suite", "noise", "--suite-param", "noise_scale=relative",
                 "--scale", "0.5", "--repeats", "1", "--out", str(out)]) == 0
    assert {(r["severity_name"], r["severity"]) for r in rows_of(out) if r["repeat"] >= 0} == {("scale", 0.5)}
    capsys.readouterr()
    one_line_error(capsys, ["audit", str(run_dir), "--suite", "noise", "--prob", "0.1", "--out", str(tmp_path / "x")],
                   "--prob does not apply to suite noise, whose severity is sigma2: use --severity")
    one_line_error(capsys, ["audit", str(run_dir), "--suite", "noise", "--sigma2", "0.1", "--severity", "0.2",
                            "--out", str(tmp_path / "x")], "give the severities once")


@pytest.mark.parametrize("flag, value, replacement", [
    ("--noise-scale", "relative", "--suite-param noise_scale=relative"),
    ("--target", "embeddings", "--suite-param target=embeddings"),
    ("--items", "1,2", "--suite-param item_ids=1,2"),
    ("--position", "prepend", "--suite-param position=prepend"),
])
def test_removed_suite_flags_point_to_suite_param(run_dir, tmp_path, capsys, flag, value, replacement):
    one_line_error(capsys, ["audit", str(run_dir), "--suite", "noise", flag, value, "--out", str(tmp_path / "x")],
                   f"{flag} was replaced by {replacement}")


def test_runs_are_positional_and_run_still_works(run_dir, tmp_path, capsys):
    assert main(["audit", "--run", str(run_dir), "--suite", "noise", "--repeats", "1", "--out",
                 str(tmp_path / "old")]) == 0
    assert "--run is no longer needed" in capsys.readouterr().err
    one_line_error(capsys, ["audit", "--suite", "noise", "--out", str(tmp_path / "x")], "give at least one run folder")
