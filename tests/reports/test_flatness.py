"""Flatness beside the drops: the join on (fingerprint, config hash), Spearman values worked out by hand,
the renderings, the plots and ``robustrec report --flatness``."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pytest
from scipy import stats

import robustrec.cli
from reports.drops import load_results
from reports.flatness import (
    ALL_MODELS,
    build_flatness,
    flatness_csv,
    flatness_dict,
    plot_flatness,
    plot_interpolation,
    plot_landscapes,
    plot_surface,
    render_flatness,
    render_with_flatness,
    spearman,
)
from robustrec.cli import main
from robustrec.errors import ConfigError, DataError
from robustrec.records import DIAGNOSIS_FILE, Diagnosis, write_diagnoses

#: (model, strategy, seed) -> (perturbed recall@20 at sigma2 = 1e-4 with clean 0.2, top eigenvalue,
#: sharpness). Decr. = 10%, 20%, 30%: the eigenvalue rises with it (rho = +1), the sharpness falls (-1).
RUNS = {
    ("freedom", "plain", 1): (0.18, 5.0, 0.3),
    ("freedom", "plain", 2): (0.16, 7.0, 0.2),
    ("freedom", "mirror", 1): (0.14, 9.0, 0.1),
    ("vbpr", "plain", 1): (0.18, 50.0, 3.0),
    ("vbpr", "plain", 2): (0.16, 70.0, 2.0),
    ("vbpr", "mirror", 1): (0.14, 90.0, 1.0),
}


def config_hash(model: str, strategy: str, seed: int) -> str:
    return f"{model}-{strategy}-{seed}"


def diagnosis(model: str, strategy: str, seed: int, eigenvalue: float | None = 1.0, sharp: float | None = 1.0,
              **changes) -> Diagnosis:
    d = Diagnosis(dataset="baby", dataset_fingerprint="fp-baby", model=model, strategy=strategy,
                  strategy_label="MG" if strategy == "mirror" else strategy, run=f"diag/{model}-{strategy}-{seed}",
                  run_seed=seed, config_hash=config_hash(model, strategy, seed), kind="run", settings={"seed": 0},
                  measures={"loss": 0.5, "top_eigenvalue": eigenvalue, "sharpness": sharp,
                            "hessian_trace": 10.0, "hessian_trace_stderr": 0.5},
                  eigenvalues=[] if eigenvalue is None else [eigenvalue],
                  curves={"landscape_1d": {"x": [-1.0, 0.0, 1.0], "y": [0.8, 0.5, 0.9]}},
                  surfaces={"landscape_2d": {"x": [-1.0, 0.0, 1.0], "y": [-1.0, 1.0],
                                             "z": [[1.0, 0.6, 1.1], [1.2, 0.7, 1.3]]}})
    return replace(d, **changes)


@pytest.fixture
def audits(write_audit, make, audit_dir):
    """The audits of RUNS plus FREEDOM + MG seed 2 (audited, never diagnosed): clean 0.2, two repeats
    at sigma2 = 1e-6 (no drop) and at 1e-4."""
    for (model, strategy, seed), (perturbed, _, _) in {**RUNS, ("freedom", "mirror", 2): (0.1, 0, 0)}.items():
        records = make(model, strategy, seed, 0.2, {1e-6: [0.2, 0.2], 1e-4: [perturbed, perturbed]},
                       label="MG" if strategy == "mirror" else "")
        write_audit(f"{model}-{strategy}-{seed}", [replace(r, config_hash=config_hash(model, strategy, seed))
                                                    for r in records])
    return audit_dir


@pytest.fixture
def diagnoses():
    found = [diagnosis(*run, eigenvalue, sharp) for run, (_, eigenvalue, sharp) in RUNS.items()]
    return found + [
        diagnosis("freedom", "plain", 3, config_hash="never-audited"),
        diagnosis("freedom", "plain", 1, dataset_fingerprint="fp-sports", run="diag/sports"),
        diagnosis("freedom", "plain", 1, kind="interpolation", other="diag/freedom-mirror-1", surfaces={},
                  curves={"interpolation": {"x": [0.0, 0.5, 1.0], "y": [0.5, 0.7, 0.6]}},
                  measures={"loss": 0.5, "barrier": 0.15}, settings={"other_label": "MG"}),
    ]


@pytest.fixture
def diag_dir(tmp_path, diagnoses):
    write_diagnoses(tmp_path / "diag" / DIAGNOSIS_FILE, diagnoses)
    return tmp_path / "diag"


# -- Spearman, by hand ---------------------------------------------------------------------------
def test_spearman_exact_p_values_by_hand():
    # n = 3 in order: 2 of the 3! pairings (identity, reversal) reach |rho| = 1
    assert spearman([1, 2, 3], [10, 20, 30]) == (pytest.approx(1.0), pytest.approx(1 / 3), "exact")
    assert spearman([1, 2, 3, 4], [9, 7, 5, 1]) == (pytest.approx(-1.0), pytest.approx(2 / 24), "exact")
    # one adjacent swap: sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8; |rho| >= 0.8 for the identity, the
    # three adjacent swaps and their four reversals: p = 8 / 24
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == (pytest.approx(0.8), pytest.approx(1 / 3), "exact")


def test_spearman_beyond_the_exact_range_is_scipys():
    x = [3, 1, 4, 1.5, 5, 9, 2, 6, 5.5, 3.5]
    y = [2, 7, 1, 8, 2.5, 8.5, 2.8, 1.8, 2.9, 0.5]
    rho, p, method = spearman(x, y)
    expected = stats.spearmanr(x, y)
    assert (rho, p, method) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue), "t-approximation")


@pytest.mark.parametrize("x, y", [([1, 2], [1, 2]), ([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [4, 4, 4]), ([], [])])
def test_spearman_untestable_samples_are_nan(x, y):
    rho, p, method = spearman(x, y)
    assert rho != rho and p != p and method == ""


# -- the join and the correlations ----------------------------------------------------------------
def test_join_counts_and_rows(audits, diagnoses):
    flat = build_flatness(load_results(audits), diagnoses)
    join = flat.join
    assert (join.diagnoses, join.matched, join.audited, join.interpolations) == (8, 6, 7, 1)
    assert join.no_audit == ("diag/freedom-plain-3",) and join.other_dataset == ("diag/sports",)
    assert join.undiagnosed == ("freedom-mirror-s2",)
    assert [(r.label, r.run_seed) for r in flat.rows] == [
        ("FREEDOM", 1), ("FREEDOM", 2), ("FREEDOM + MG", 1), ("VBPR", 1), ("VBPR", 2), ("VBPR + MG", 1)]
    assert flat.measures == ("loss", "top_eigenvalue", "hessian_trace", "sharpness")  # stderr goes with its trace
    assert [c.title for c in flat.columns] == ["noise (sigma2), sigma2 = 1e-06", "noise (sigma2), sigma2 = 0.0001"]
    assert [r.drops[1] for r in flat.rows] == pytest.approx([0.1, 0.2, 0.3] * 2)
    assert [r.drops[0] for r in flat.rows] == [0.0] * 6
    assert "matched 6 of 7 audited runs" in join.text() and "1 is of another dataset" in join.text()


def test_perfectly_monotone_measures_give_rho_one(audits, diagnoses):
    flat = build_flatness(load_results(audits), diagnoses)
    high = flat.columns[1]
    for model in ("freedom", "vbpr"):
        eig = flat.correlation(model, "top_eigenvalue", high)
        assert (eig.rho, eig.n, eig.method) == (pytest.approx(1.0), 3, "exact") and eig.pvalue == pytest.approx(1 / 3)
        assert flat.correlation(model, "sharpness", high).rho == pytest.approx(-1.0)
        # no drop at 1e-6 and a constant loss: nothing to rank
        assert flat.correlation(model, "top_eigenvalue", flat.columns[0]).rho != flat.correlation(
            model, "top_eigenvalue", flat.columns[0]).rho
        assert flat.correlation(model, "loss", high).n == 3 and flat.correlation(model, "loss", high).method == ""
    # pooled: eigenvalues ranked 1..6 (FREEDOM's below VBPR's), drops in mid-ranks 1.5, 3.5, 5.5 twice
    pooled = flat.correlation(ALL_MODELS, "top_eigenvalue", high)
    expected = stats.pearsonr([1, 2, 3, 4, 5, 6], [1.5, 3.5, 5.5, 1.5, 3.5, 5.5]).statistic
    assert (pooled.rho, pooled.n, pooled.method) == (pytest.approx(expected), 6, "exact") and expected < 0.5
    # Holm within a model's table: of its 8 correlations (4 measures x 2 severities) only two are tested
    tested = [c for c in flat.correlations if c.model == "freedom" and c.method]
    assert len(tested) == 2  # the eigenvalue and the sharpness at 1e-4
    assert all(c.pvalue_holm == pytest.approx(min(1.0, 2 * c.pvalue)) for c in tested)


def test_a_missing_measure_leaves_its_run_out_of_that_correlation(audits, diagnoses):
    diagnoses[0] = replace(diagnoses[0], measures={**diagnoses[0].measures, "sharpness": None})
    flat = build_flatness(load_results(audits), diagnoses)
    assert flat.correlation("freedom", "sharpness", flat.columns[1]).n == 2
    assert flat.correlation("freedom", "top_eigenvalue", flat.columns[1]).n == 3


def test_only_one_model_has_no_pooled_row(audits, diagnoses):
    flat = build_flatness(load_results(audits), [d for d in diagnoses if d.model == "freedom"])
    assert {c.model for c in flat.correlations} == {"freedom"}
    assert flat.join.undiagnosed == ("freedom-mirror-s2", "vbpr-mirror-s1", "vbpr-plain-s1", "vbpr-plain-s2")


def test_no_match_and_ambiguous_matches_are_refused(audits, diagnoses):
    results = load_results(audits)
    with pytest.raises(DataError, match="none of the 2 run diagnoses matches an audited run"):
        build_flatness(results, [diagnosis("freedom", "plain", 9, config_hash="x"),
                                 diagnosis("freedom", "plain", 1, dataset_fingerprint="fp-sports")])
    with pytest.raises(DataError, match="two diagnoses of the run with config hash freedom-plain-1"):
        build_flatness(results, diagnoses + [diagnosis("freedom", "plain", 1, run="diag/again")])
    with pytest.raises(ConfigError, match="unknown metric"):
        build_flatness(results, diagnoses, "recal@20")


def test_diagnoses_measured_differently_are_noted(audits, diagnoses):
    diagnoses[1] = replace(diagnoses[1], settings={"seed": 1})
    flat = build_flatness(load_results(audits), diagnoses)
    assert flat.differing_settings == {"freedom": ("seed",)}
    assert "FREEDOM were not all measured alike (they differ in seed)" in render_flatness(
        load_results(audits), diagnoses)


# -- renderings -----------------------------------------------------------------------------------
def test_markdown_tables(audits, diagnoses):
    text = render_with_flatness(load_results(audits), diagnoses, "markdown", significance=False)
    drops, flatness = text.split("# Flatness and robustness: dataset baby (fingerprint fp-baby)")
    assert drops.startswith("# Robustness report") and "## noise (sigma2): baby, recall@20" in drops
    assert "| FREEDOM + MG | 1 | 0.5 | 9 | 10 ± 0.5 | 0.1 | 0.00% | 30.00% |" in flatness
    assert "| top eigenvalue | noise (sigma2), sigma2 = 0.0001 | +1.00 | 0.33 | 0.67 | 3 |" in flatness
    assert "## Spearman ρ of flatness and Decr.: all models, baby, recall@20" in flatness
    assert flatness.count("## Spearman") == 3


def test_json_csv_and_latex(audits, diagnoses):
    results = load_results(audits)
    document = json.loads(render_with_flatness(results, diagnoses, "json", significance=False))
    assert document["schema"] == "robustrec.report/1" and document["cells"]
    (first, *others) = document["flatness"]
    assert first["metric"] == "recall@5" and len(others) == 2  # json: every metric, as the drops
    assert first["join"]["undiagnosed"] == ["freedom-mirror-s2"]
    eig = [c for c in first["correlations"]
           if (c["model"], c["measure"], c["severity"]) == ("vbpr", "top_eigenvalue", 1e-4)]
    assert eig[0]["rho"] == pytest.approx(1.0) and eig[0]["n"] == 3 and eig[0]["method"] == "exact"
    assert first["runs"][0]["drops"][1] == pytest.approx(0.1)
    assert json.loads(json.dumps(flatness_dict(build_flatness(results, diagnoses))))["metric"] == "recall@20"

    rows = list(csv.DictReader(io.StringIO(render_with_flatness(results, diagnoses, "csv", ["recall@20"]))))
    assert len(rows) == 6 and rows[2]["config_hash"] == "freedom-mirror-1"
    assert float(rows[2]["drop noise sigma2 0.0001"]) == pytest.approx(0.3)
    assert rows[2]["hessian_trace_stderr"] == "0.5" and rows[2]["sharpness"] == "0.1"
    assert flatness_csv(build_flatness(results, diagnoses)).count("\n") == 7

    latex = render_with_flatness(results, diagnoses, "latex", significance=False)
    assert r"\label{tab:flatness:baby:recall-20:freedom}" in latex and r"$\lambda_{\max}$" in latex


# -- plots ----------------------------------------------------------------------------------------
def test_plots_are_written(audits, diagnoses, tmp_path):
    flat = build_flatness(load_results(audits), diagnoses)
    for path in (plot_flatness(flat, tmp_path / "flat.svg"),
                 plot_landscapes(diagnoses, tmp_path / "landscape.svg"),
                 plot_surface(diagnoses[0], tmp_path / "surface.png"),
                 plot_interpolation(diagnoses, tmp_path / "interpolation.svg")):
        assert path.stat().st_size > 1000
    svg = (tmp_path / "flat.svg").read_text()  # matplotlib keeps each text as a comment
    assert "FREEDOM: ρ = +1.00, n = 3" in svg and "VBPR: ρ = -1.00, n = 3" in svg and "all: ρ = n/a, n = 6" in svg
    assert "baby: flatness and relative drop of Recall@20" in svg
    landscape = (tmp_path / "landscape.svg").read_text()
    assert "FREEDOM: loss along a random direction" in landscape and "MG, seed 1" in landscape
    assert "plain → MG (barrier 0.15)" in (tmp_path / "interpolation.svg").read_text()


def test_plots_refuse_bad_input_before_drawing(audits, diagnoses, tmp_path):
    flat = build_flatness(load_results(audits), diagnoses)
    with pytest.raises(ConfigError, match=r"must end in \.png, \.svg or \.pdf"):
        plot_flatness(flat, tmp_path / "flat.jpg")
    with pytest.raises(ConfigError, match="no measure 'curvature'"):
        plot_flatness(flat, tmp_path / "flat.png", measures=["curvature"])
    with pytest.raises(DataError, match="no diagnosis holds an interpolation"):
        plot_interpolation(diagnoses[:3], tmp_path / "i.png")
    with pytest.raises(DataError, match="a contour needs at least 2 x 2"):
        plot_surface(replace(diagnoses[0], surfaces={"landscape_2d": {"x": [0.0], "y": [0.0], "z": [[1.0]]}}),
                     tmp_path / "s.png")
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.jpg"))


# -- robustrec report --flatness --------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setattr(robustrec.cli, "COMMANDS", ("report",))
    return main


def test_cli_flatness_after_the_drops_and_the_scatter(cli, audits, diag_dir, tmp_path, capsys):
    plot = tmp_path / "flat.png"
    assert cli(["report", str(audits), "--flatness", str(diag_dir), "--plot-flatness", str(plot),
                "--no-significance"]) == 0
    out = capsys.readouterr().out
    assert out.index("## noise (sigma2): baby, recall@20") < out.index("## Flatness and Decr. per run")
    assert "| VBPR + MG | 1 | 0.5 | 90 |" in out and plot.stat().st_size > 1000


@pytest.mark.parametrize("extra, message", [
    (["--flatness", "MISSING"], "no such file or folder"),
    (["--flatness", "BAD"], "BAD:1: not valid JSON"),
    (["--plot-flatness", "x.png"], "--plot-flatness needs --flatness"),
    (["--flatness", "DIAG", "--plot-flatness", "x.jpg"], "must end in .png, .svg or .pdf"),
])
def test_cli_bad_input_exits_2_in_one_line(cli, audits, diag_dir, tmp_path, capsys, extra, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    names = {"MISSING": str(tmp_path / "missing"), "BAD": str(bad), "DIAG": str(diag_dir)}
    out = tmp_path / "report.md"
    assert cli(["report", str(audits), *[names.get(a, a) for a in extra], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message.replace("BAD", str(bad)) in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_diagnoses_of_other_runs(cli, audits, tmp_path, capsys):
    write_diagnoses(tmp_path / "d.jsonl", [diagnosis("freedom", "plain", 1, config_hash="elsewhere")])
    assert cli(["report", str(audits), "--flatness", str(tmp_path / "d.jsonl")]) == 2
    assert "none of the 1 run diagnoses matches an audited run" in capsys.readouterr().err


def test_audited_runs_sharing_a_config_hash_cannot_be_joined(paper_like):
    # the fabricated paper_like records give every run the config hash "cfg"
    with pytest.raises(DataError, match="matches several audited runs with config hash cfg"):
        build_flatness(load_results(paper_like), [diagnosis("freedom", "plain", 1, config_hash="cfg")])
