"""``diagnose`` and ``robustrec diagnose``: records with provenance, the same seed the same numbers,
interpolation between runs, and bad input refused before any work."""

from __future__ import annotations

import json

import pytest

from robustrec.cli import main
from robustrec.diagnostics import DiagnoseConfig, diagnose
from robustrec.errors import ConfigError
from robustrec.records import load_diagnoses
from tests.test_cli import write_tiny

SMALL = dict(lanczos_steps=4, eigenvalues=2, trace_samples=3, ascent_steps=2, points=5, surface_points=3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diagnose")
    data = write_tiny(root / "tiny")
    out = {}
    for name, strategy in (("plain", []), ("mg", ["--strategy", "mirror", "--mirror-trace"])):
        out[name] = root / name
        code = main(["train", "--data", str(data), "--model", "freedom", *strategy, "--epochs", "3",
                     "--batch-size", "64", "--seed", "1", "--out", str(out[name]), "--no-progress"])
        assert code == 0
    out["bm3"] = root / "bm3"
    assert main(["train", "--data", str(data), "--model", "bm3", "--epochs", "2", "--batch-size", "64",
                 "--out", str(out["bm3"]), "--no-progress"]) == 0
    return out


def test_records_hold_every_measure_with_provenance_and_repeat_exactly(runs, tmp_path):
    config = DiagnoseConfig(seed=2, **SMALL)
    first = diagnose([runs["plain"], runs["mg"]], config, tmp_path / "a", progress=False)
    again = diagnose([runs["plain"], runs["mg"]], config, tmp_path / "b", progress=False)
    assert [d.measures for d in first] == [d.measures for d in again]
    assert [d.surfaces for d in first] == [d.surfaces for d in again]
    plain, mg = load_diagnoses(tmp_path / "a")
    assert (plain.model, plain.strategy, mg.strategy, plain.run_seed) == ("freedom", "plain", "mirror", 1)
    assert plain.kind == "run" and plain.config_hash == json.loads((runs["plain"] / "run.json").read_text())["config_hash"]
    assert set(plain.measures) == {"loss", "grad_norm", "top_eigenvalue", "hessian_trace", "hessian_trace_stderr",
                                   "sharpness"}
    assert len(plain.eigenvalues) == 2 and plain.eigenvalues[0] >= plain.eigenvalues[1]
    assert plain.measures["top_eigenvalue"] == plain.eigenvalues[0]
    assert plain.curves["landscape_1d"]["y"][2] == pytest.approx(plain.measures["loss"], rel=1e-6)
    assert plain.surfaces["landscape_2d"]["z"][1][1] == pytest.approx(plain.measures["loss"], rel=1e-6)
    assert plain.settings["batch_size"] == 64 and plain.settings["hvp"] in ("double-backward", "finite-difference")
    assert plain.provenance["run_finished"] is True and "torch" in json.dumps(plain.provenance)
    other_seed = diagnose([runs["plain"]], DiagnoseConfig(seed=3, **SMALL), tmp_path / "c", progress=False)
    assert other_seed[0].curves != first[0].curves


def test_only_the_chosen_measures_are_taken(runs, tmp_path):
    (d,) = diagnose([runs["bm3"]], DiagnoseConfig(measures=("eigenvalues",), **SMALL), tmp_path, progress=False)
    assert set(d.measures) == {"loss", "top_eigenvalue"} and not d.curves and not d.surfaces
    assert d.settings["hvp"] == "finite-difference"  # BM3's fused loss has no exact double backward


def test_interpolation_between_two_runs(runs, tmp_path):
    (d,) = diagnose([], DiagnoseConfig(measures=("landscape",), points=5), tmp_path,
                    pairs=[(runs["plain"], runs["mg"])], progress=False)
    assert d.kind == "interpolation" and d.other == str(runs["mg"])
    xs, ys = d.curves["interpolation"]["x"], d.curves["interpolation"]["y"]
    assert xs[xs.index(0.0)] == 0.0 and 1.0 in xs and len(xs) == len(ys) == 7
    assert d.measures["barrier"] >= 0.0 and d.settings["hvp"] is None  # no Hessian product was taken


def test_runs_of_different_models_cannot_be_interpolated(runs, tmp_path):
    with pytest.raises(ConfigError, match="same model"):
        diagnose([], DiagnoseConfig(), tmp_path / "x", pairs=[(runs["plain"], runs["bm3"])], progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_writes_records_and_plots(runs, tmp_path, capsys):
    out = tmp_path / "diag"
    code = main(["diagnose", str(runs["plain"]), str(runs["mg"]), "--interpolate", str(runs["plain"]),
                 str(runs["mg"]), "--out", str(out), "--lanczos-steps", "3", "--eigenvalues", "1",
                 "--trace-samples", "2", "--ascent-steps", "1", "--points", "3", "--surface-points", "2",
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "diagnostics.jsonl") in printed
    for name in ("landscape.png", "surface.png", "interpolation.png", "mirror-trace.png"):
        assert (out / name).stat().st_size > 0 and str(out / name) in printed
    assert [d.kind for d in load_diagnoses(out)] == ["run", "run", "interpolation"]


@pytest.mark.parametrize("argv, message", [
    (["--measures", "curvature"], "unknown measure 'curvature'"),
    (["--lanczos-steps", "0"], "lanczos_steps"),
    (["--eigenvalues", "5", "--lanczos-steps", "3"], "Lanczos steps"),
    (["--rho", "nan"], "rho"),
    (["--span", "-1"], "span"),
])
def test_bad_options_fail_in_one_line_before_any_output(runs, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["diagnose", str(runs["plain"]), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_missing_run_or_no_run_is_refused(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["diagnose", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
