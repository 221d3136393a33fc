"""The study report (robustrec/studies/report.py, reports/study.py) on a fabricated study folder.

The folder is laid out as the studies contract says (study.json, runs/<model>-<strategy>/<hash>-<fp>/,
selection.json, audits/<suite>-<digest>/), but built by hand here: tiny runs trained with
robustrec.training.train (2 epochs), the selection written from their validation values, and the
chosen runs audited with perturbations.audit_run. So these tests depend on the report alone, not on
the study runner.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from perturbations import AuditConfig, audit_run
from reports import load_results, render
from reports.study import GridSurface, SurfacePoint, curves_figure, grid_figure
from reports.tables import DROP_NOTE
from robustrec.errors import DataError
from robustrec.io import read_json, read_jsonl, write_json
from robustrec.runs import RunSpec, TrainConfig, open_run
from robustrec.studies.report import load_study, study_report, write_study_report
from robustrec.training import train
from tests.conftest import make_tiny_dataset
from tests.reports.test_tables import assert_latex_structure

SELECT = "ndcg@10"
SEEDS = (1, 2)
GRID = {"alpha1": [1.0, 2.0], "alpha2": [0.1, 0.5]}
#: (model, strategy, grid) of the two run entries: plain VBPR, and VBPR + MG over a 2 x 2 grid.
ENTRIES = (("vbpr", "plain", {}), ("vbpr", "mirror", GRID))


def _points(grid: dict[str, list]) -> list[dict]:
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def _train_config(seed: int) -> TrainConfig:
    return TrainConfig(epochs=2, patience=1, seed=seed, threads=1, lr=0.01, batch_size=64, valid_metric=SELECT)


@pytest.fixture(scope="module")
def dataset():
    return make_tiny_dataset(n_users=60, n_items=80)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, dataset) -> Path:
    """A finished study: 2 entries x 2 seeds (4 grid points for MG), two noise audits of the chosen runs."""
    out = tmp_path_factory.mktemp("study") / "tiny-study"
    groups = []
    for model, strategy, grid in ENTRIES:
        for seed in SEEDS:
            points = []
            for point in _points(grid):
                spec = RunSpec(model, strategy, strategy_params=point, train=_train_config(seed))
                folder = out / "runs" / f"{model}-{strategy}" / f"{spec.config_hash()[:12]}-{dataset.fingerprint[:8]}"
                result = train(dataset, spec, folder, progress=False)
                points.append({"grid": point, "run": folder.relative_to(out).as_posix(), "valid": result.valid[SELECT]})
            best = max(range(len(points)), key=lambda i: (points[i]["valid"], -i))  # ties: first in spec order
            groups.append({"model": model, "strategy": strategy, "label": None, "seed": seed, "points": points,
                           "chosen": best})
    write_json(out / "selection.json", {"select": SELECT, "groups": groups})
    write_json(out / "study.json", {"spec": {"name": "tiny-study", "description": "a tiny study", "select": SELECT},
                                    "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint}})
    for config in (AuditConfig("noise", severities=(1e-4, 1e-2), repeats=2),
                   AuditConfig("noise", params={"noise_scale": "relative"}, severities=(0.5,), repeats=2)):
        audits = out / "audits" / f"noise-{config.digest()}"
        for group in groups:
            run = open_run(out / group["points"][group["chosen"]]["run"])
            audit_run(run, dataset, config, audits, progress=False)
    return out


@pytest.fixture
def study_copy(study_dir, tmp_path) -> Path:
    """A copy to change (the module's study stays as built)."""
    return Path(shutil.copytree(study_dir, tmp_path / "copy"))


def _selection(folder: Path) -> dict:
    return read_json(folder / "selection.json")


def _chosen_runs(folder: Path, strategy: str) -> list[Path]:
    return [folder / g["points"][g["chosen"]]["run"] for g in _selection(folder)["groups"] if g["strategy"] == strategy]


def _markdown_table(text: str, heading: str) -> list[dict[str, str]]:
    """The rows (column -> cell) of the first markdown table under a heading that contains ``heading``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and heading in line)
    table = list(itertools.takewhile(lambda line: line.startswith("|"),
                                     itertools.dropwhile(lambda line: not line.startswith("|"), lines[start + 1:])))
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def _set_test_metrics(run: Path, values: dict[str, float]) -> None:
    metrics = read_json(run / "metrics.json")
    metrics["test"].update(values)
    write_json(run / "metrics.json", metrics)


# -- the clean table ---------------------------------------------------------------------------------
def test_clean_table_means_stds_and_best_marks_are_hand_computed(study_copy):
    """recall@5: plain 0.2, 0.4 (mean 0.3) vs MG 0.5, 0.3 (mean 0.4): MG is best; ndcg@10: plain
    0.6, 0.6 (0.6, no spread) vs MG 0.1, 0.3 (0.2): plain is best."""
    for run, (recall, ndcg) in zip(_chosen_runs(study_copy, "plain"), [(0.2, 0.6), (0.4, 0.6)]):
        _set_test_metrics(run, {"recall@5": recall, "ndcg@10": ndcg})
    for run, (recall, ndcg) in zip(_chosen_runs(study_copy, "mirror"), [(0.5, 0.1), (0.3, 0.3)]):
        _set_test_metrics(run, {"recall@5": recall, "ndcg@10": ndcg})
    rows = {row["Model"]: row for row in _markdown_table(study_report(study_copy), "Clean")}
    assert set(rows) == {"VBPR", "VBPR + MG"}
    std = math.sqrt(0.02)  # sample std of (0.2, 0.4) and of (0.5, 0.3)
    assert rows["VBPR + MG"]["Recall@5"] == f"**0.4000 ± {std:.4f}**"
    assert rows["VBPR"]["Recall@5"] == f"0.3000 ± {std:.4f}"
    assert rows["VBPR"]["NDCG@10"] == "**0.6000 ± 0.0000**"
    assert rows["VBPR + MG"]["NDCG@10"] == f"0.2000 ± {std:.4f}"
    assert rows["VBPR"]["Seeds"] == rows["VBPR + MG"]["Seeds"] == "2"
    # the other columns: means of the chosen runs' metrics.json, the best of each column marked once
    for column, key in (("Recall@10", "recall@10"), ("Precision@5", "precision@5"), ("NDCG@5", "ndcg@5")):
        means = {label: np.mean([open_run(r).results().test[key] for r in _chosen_runs(study_copy, strategy)])
                 for label, strategy in (("VBPR", "plain"), ("VBPR + MG", "mirror"))}
        for label, mean in means.items():
            assert rows[label][column].strip("*").startswith(f"{mean:.4f}")
            best = round(mean, 4) == round(max(means.values()), 4)
            assert rows[label][column].startswith("**") == best, (column, label)


def test_clean_table_columns_cover_the_select_k_and_5(study_dir):
    rows = _markdown_table(study_report(study_dir), "Clean")
    assert list(rows[0]) == ["Model", "Recall@5", "Recall@10", "NDCG@5", "NDCG@10", "Precision@5", "Precision@10",
                             "Seeds"]


def test_clean_table_with_one_seed_shows_no_spread(study_copy):
    selection = _selection(study_copy)
    selection["groups"] = [g for g in selection["groups"] if g["seed"] == 1]
    write_json(study_copy / "selection.json", selection)
    shutil.rmtree(study_copy / "audits")  # the audits hold seed 2 too; this test is about the clean table
    rows = {row["Model"]: row for row in _markdown_table(study_report(study_copy), "Clean")}
    value = open_run(_chosen_runs(study_copy, "plain")[0]).results().test["recall@5"]
    assert rows["VBPR"]["Recall@5"].strip("*") == f"{value:.4f}" and rows["VBPR"]["Seeds"] == "1"


# -- the selection surface --------------------------------------------------------------------------
def _hand_surface(folder: Path) -> dict[tuple, tuple[float, float, int]]:
    """(alpha1, alpha2) -> (mean, std over seeds of the valid metric, how many seeds chose it), read
    from each point's metrics.json (not from selection.json)."""
    by_point: dict[tuple, list[float]] = {}
    chosen: dict[tuple, int] = {}
    for group in _selection(folder)["groups"]:
        if group["strategy"] != "mirror":
            continue
        for i, point in enumerate(group["points"]):
            key = (point["grid"]["alpha1"], point["grid"]["alpha2"])
            by_point.setdefault(key, []).append(open_run(folder / point["run"]).results().valid[SELECT])
            chosen[key] = chosen.get(key, 0) + (i == group["chosen"])
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)), chosen[k]) for k, v in by_point.items()}


def test_surface_table_has_every_point_with_mean_std_and_choices(study_dir):
    hand = _hand_surface(study_dir)
    rows = _markdown_table(study_report(study_dir), "Selection surface")
    assert len(rows) == 4
    assert sum(int(row["Chosen by"]) for row in rows) == len(SEEDS)  # each seed chose exactly one point
    for row in rows:
        mean, std, chosen = hand[(float(row["alpha1"]), float(row["alpha2"]))]
        assert row[f"valid {SELECT}"].strip("*") == f"{mean:.4f} ± {std:.4f}"
        assert int(row["Chosen by"]) == chosen


def test_heatmap_cells_are_the_mean_validation_values_and_the_chosen_points_are_marked(study_dir):
    hand = _hand_surface(study_dir)
    (surface,) = [s for s in load_study(study_dir).surfaces() if s.names == ("alpha1", "alpha2")]
    fig = grid_figure(surface, SELECT)
    ax = fig.axes[0]
    cells = np.asarray(ax.images[0].get_array())
    expected = np.array([[hand[(a1, a2)][0] for a2 in GRID["alpha2"]] for a1 in GRID["alpha1"]])
    assert cells.shape == (2, 2)  # rows: alpha1 (first grid name), columns: alpha2
    np.testing.assert_allclose(cells, expected, rtol=0, atol=1e-12)
    marks = [line for line in ax.lines if line.get_gid() == "chosen"]
    assert len(marks) == 1
    marked = set(zip(marks[0].get_xdata(), marks[0].get_ydata()))
    chosen = {(GRID["alpha2"].index(a2), GRID["alpha1"].index(a1)) for (a1, a2), (_, _, n) in hand.items() if n}
    assert marked == chosen
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1", "0.5"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2"]


def test_one_dimensional_grid_is_a_line_with_its_chosen_point():
    surface = GridSurface("VBPR + MG", ("alpha2",), (
        SurfacePoint({"alpha2": 0.1}, (0.2, 0.4), 0), SurfacePoint({"alpha2": 0.3}, (0.5, 0.7), 2),
        SurfacePoint({"alpha2": 0.5}, (0.1, 0.1), 0)))
    ax = grid_figure(surface, "recall@20").axes[0]
    (line,) = [line for line in ax.lines if line.get_gid() == "surface"]
    np.testing.assert_allclose(line.get_xdata(), [0.1, 0.3, 0.5])
    np.testing.assert_allclose(line.get_ydata(), [0.3, 0.6, 0.1])
    (mark,) = [line for line in ax.lines if line.get_gid() == "chosen"]
    assert list(mark.get_xdata()) == [0.3] and list(mark.get_ydata()) == [0.6]


def test_surface_point_statistics():
    point = SurfacePoint({"a": 1}, (0.2, 0.4, 0.6), 1)
    assert point.mean == pytest.approx(0.4) and point.std == pytest.approx(0.2)
    assert math.isnan(SurfacePoint({"a": 1}, (0.2,), 1).std)


# -- training curves ------------------------------------------------------------------------------------
def test_curves_have_one_line_per_model_and_strategy_with_mean_over_seeds(study_dir):
    curves = load_study(study_dir).curves(SELECT)
    fig = curves_figure(curves, SELECT)
    loss_ax, valid_ax = fig.axes
    for ax, key in ((loss_ax, "loss"), (valid_ax, SELECT)):
        lines = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
        assert set(lines) == {"VBPR", "VBPR + MG"}
        for label, strategy in (("VBPR", "plain"), ("VBPR + MG", "mirror")):
            logs = [read_jsonl(run / "log.jsonl") for run in _chosen_runs(study_dir, strategy)]
            values = [[e["loss"] if key == "loss" else e["valid"][key] for e in log] for log in logs]
            assert list(lines[label].get_xdata()) == [1, 2]  # two epochs
            np.testing.assert_allclose(lines[label].get_ydata(), np.mean(values, axis=0), rtol=0, atol=1e-12)


def test_a_model_that_does_not_train_has_a_clean_row_but_no_curve(study_copy, dataset, monkeypatch):
    """The popularity floor trains no epoch: its log is empty, which is no error."""
    import robustrec.studies.report as report

    spec = RunSpec("pop", train=_train_config(1))
    folder = study_copy / "runs" / "pop-plain" / f"{spec.config_hash()[:12]}-{dataset.fingerprint[:8]}"
    result = train(dataset, spec, folder, progress=False)
    selection = _selection(study_copy)
    selection["groups"].append({"model": "pop", "strategy": "plain", "label": "pop-plain", "seed": 1, "chosen": 0,
                                "points": [{"grid": {}, "run": folder.relative_to(study_copy).as_posix(),
                                            "valid": result.valid[SELECT]}]})
    write_json(study_copy / "selection.json", selection)
    rows = {row["Model"]: row for row in _markdown_table(study_report(study_copy), "Clean")}
    assert rows["POP"]["Seeds"] == "1" and rows["POP"]["Recall@5"].strip("*") == f"{result.test['recall@5']:.4f}"
    assert [c.label for c in load_study(study_copy).curves()] == ["VBPR", "VBPR + MG"]
    monkeypatch.setattr(report, "PLOT_TYPES", ("svg",))
    assert "plots/curves.svg" in write_study_report(study_copy).read_text()


# -- audits: the drop tables, notes once, stale records ignored -----------------------------------------
def test_drop_tables_of_every_audit_and_the_notes_once(study_dir):
    text = study_report(study_dir)
    assert text.count(DROP_NOTE) == 1
    assert "noise (sigma2)" in text and "noise (relative scale)" in text
    assert text.count("Significance across seeds") >= 2  # both audits have 2 seeds of each strategy
    for folder in (study_dir / "audits").iterdir():  # each audit's tables as `robustrec report` renders them
        alone = render(load_results(folder), "markdown", [SELECT])
        rows = [line for line in alone.splitlines() if line.startswith("| VBPR")]
        assert len(rows) >= 4 and all(row in text for row in rows)
        assert len(re.findall(r"^#### ", text, flags=re.M)) >= len(re.findall(r"^## ", alone, flags=re.M))


def test_records_of_runs_no_longer_selected_are_left_out(study_copy, dataset):
    """A spec change can select another point; the old chosen run's records stay in the audit folder
    (a records file that exists is done) and must not be mixed in (they would share a seed)."""
    selection = _selection(study_copy)
    group = next(g for g in selection["groups"] if g["strategy"] == "mirror")
    stale = next(p for i, p in enumerate(group["points"]) if i != group["chosen"])
    config = AuditConfig("noise", severities=(1e-4, 1e-2), repeats=2)
    audits = study_copy / "audits" / f"noise-{config.digest()}"
    audit_run(open_run(study_copy / stale["run"]), dataset, config, audits, progress=False)
    assert "not selected" in study_report(study_copy)  # said, not silently dropped
    doc = json.loads(study_report(study_copy, "json"))
    audit = next(a for a in doc["audits"] if a["folder"] == audits.name)
    assert audit["left_out"] == 1
    assert all(c["n_seeds"] == 2 for c in audit["report"]["cells"])


# -- formats --------------------------------------------------------------------------------------------
def test_json_holds_the_clean_table_the_selection_and_the_audits(study_dir):
    doc = json.loads(study_report(study_dir, "json"))
    assert doc["study"] == "tiny-study" and doc["select"] == SELECT
    rows = {(r["model"], r["strategy"]): r for r in doc["clean"]}
    runs = _chosen_runs(study_dir, "mirror")
    values = [open_run(r).results().test["ndcg@10"] for r in runs]
    cell = rows[("vbpr", "mirror")]["metrics"]["ndcg@10"]
    assert cell["mean"] == pytest.approx(np.mean(values)) and cell["std"] == pytest.approx(np.std(values, ddof=1))
    assert cell["seeds"] == [{"seed": s, "value": v} for s, v in zip(SEEDS, values)]
    assert doc["selection"] == _selection(study_dir)
    assert len(doc["audits"]) == 2 and all(a["report"]["schema"] == "robustrec.report/1" for a in doc["audits"])


def test_csv_is_one_tidy_table(study_dir):
    rows = list(csv.DictReader(io.StringIO(study_report(study_dir, "csv"))))
    sections = {row["section"] for row in rows}
    assert sections == {"clean", "selection", "audit"}
    clean = [r for r in rows if r["section"] == "clean" and r["metric"] == "ndcg@10" and r["strategy"] == "mirror"]
    values = [open_run(r).results().test["ndcg@10"] for r in _chosen_runs(study_dir, "mirror")]
    assert len(clean) == 1 and float(clean[0]["mean"]) == pytest.approx(np.mean(values))
    assert sum(int(r["chosen_by"]) for r in rows if r["section"] == "selection" and r["strategy"] == "mirror") == 2


def test_latex_is_well_formed_with_unique_labels(study_dir):
    text = study_report(study_dir, "latex")
    assert_latex_structure(text)
    assert r"{\boldmath$" in text  # the best of each clean column
    assert text.count("% " + DROP_NOTE[:40]) == 1


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles(study_dir, tmp_path):
    body = study_report(study_dir, "latex")
    document = ("\\documentclass{article}\n\\usepackage{booktabs}\n"
                "\\usepackage[margin=1cm,paperwidth=60cm,paperheight=80cm]{geometry}\n"
                "\\begin{document}\n" + body + "\\end{document}\n")
    (tmp_path / "study.tex").write_text(document, encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "study.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    log = (tmp_path / "study.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert "multiply defined" not in log


def _check_written(folder: Path, types: tuple[str, ...]) -> str:
    path = write_study_report(folder)
    assert path == folder / "report.md"
    text = path.read_text()
    linked = re.findall(rf"\]\((plots/[^)]+\.{types[0]})\)", text)
    assert len(linked) == 2 + 1 + 1  # a drop plot per audit, the grid heatmap, the curves
    for name in linked:
        for ext in types:
            assert (folder / name).with_suffix(f".{ext}").stat().st_size > 1000
    assert sorted(p.name for p in (folder / "plots").iterdir()) == sorted(
        Path(name).with_suffix(f".{ext}").name for name in linked for ext in types)
    assert not list(folder.glob("**/*.tmp"))
    return text


def test_write_study_report_writes_the_markdown_and_every_plot_it_links(study_copy, monkeypatch):
    import robustrec.studies.report as report

    monkeypatch.setattr(report, "PLOT_TYPES", ("svg",))  # one file type: the drawing is what takes time
    text = _check_written(study_copy, ("svg",))
    assert _markdown_table(text, "Clean") == _markdown_table(study_report(study_copy), "Clean")
    assert text.count(DROP_NOTE) == 1


@pytest.mark.slow
def test_write_study_report_writes_png_svg_and_pdf(study_copy):
    _check_written(study_copy, ("png", "svg", "pdf"))


# -- bad input: one line naming the file ----------------------------------------------------------------
@pytest.mark.parametrize("damage", ["missing", "not json", "chosen out of range", "run outside",
                                    "valid not a number", "metrics missing"])
def test_a_missing_or_malformed_file_is_one_line_naming_it(study_copy, damage):
    selection_file = study_copy / "selection.json"
    selection = _selection(study_copy)
    named = selection_file
    if damage == "missing":
        selection_file.unlink()
    elif damage == "not json":
        selection_file.write_text("{", encoding="utf-8")
    elif damage == "chosen out of range":
        selection["groups"][0]["chosen"] = 7
    elif damage == "run outside":
        selection["groups"][0]["points"][0]["run"] = "../elsewhere"
    elif damage == "valid not a number":
        selection["groups"][0]["points"][0]["valid"] = "high"
    elif damage == "metrics missing":
        run = study_copy / selection["groups"][0]["points"][selection["groups"][0]["chosen"]]["run"]
        (run / "metrics.json").unlink()
        named = run
    if damage not in ("missing", "not json", "metrics missing"):
        write_json(selection_file, selection)
    with pytest.raises(DataError) as caught:
        study_report(study_copy)
    message = str(caught.value)
    assert "\n" not in message and str(named) in message, message


def test_valid_nan_is_refused(study_copy):
    selection_file = study_copy / "selection.json"
    text = selection_file.read_text().replace('"valid": ', '"valid": NaN, "x": ', 1)
    selection_file.write_text(text)
    with pytest.raises(DataError, match="selection.json"):
        study_report(study_copy)


def test_a_metric_the_runs_did_not_measure_is_refused(study_copy):
    shutil.rmtree(study_copy / "audits")  # the runs' metrics alone must refuse it
    with pytest.raises(DataError, match="recall@50"):
        study_report(study_copy, metric="recall@50")
    rows = _markdown_table(study_report(study_copy, metric="hit@20"), "Clean")
    assert "Recall@20" in rows[0] and "Recall@5" in rows[0]  # hit@20 adds its cut-off to the clean table


def test_a_grid_of_three_parameters_has_a_table_but_no_figure():
    from robustrec.errors import ConfigError

    surface = GridSurface("X", ("a", "b", "c"), (SurfacePoint({"a": 1, "b": 2, "c": 3}, (0.1,), 1),))
    with pytest.raises(ConfigError, match="3 parameters"):
        grid_figure(surface, "recall@20")


def test_unknown_format_is_a_config_error(study_dir):
    from robustrec.errors import ConfigError

    with pytest.raises(ConfigError, match="markdown"):
        study_report(study_dir, "html")
