"""Rendered tables: numbers, layout and well-formed markdown, LaTeX, CSV and JSON; plots."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from reports.drops import load_results
from reports.plots import plot_drops
from reports.tables import format_drop, format_value, latex_escape, render, to_dict
from robustrec.errors import ConfigError


def test_markdown_several_severities(paper_like):
    text = render(load_results(paper_like), "markdown")
    assert "## noise (sigma2): baby, recall@5" in text
    assert "| Model | Clean | sigma2 = 1e-06 Perturbed | sigma2 = 1e-06 Decr. | sigma2 = 0.0001 Perturbed |" in text
    # FREEDOM recall@5 = recall@20 / 2: clean mean (0.10 + 0.125 + 0.15) / 3 = 0.125, std 0.025;
    # drops 1e-6: 13.33 ± 5.77% (see test_drops); 1e-4: (0.5, 0.4, 0.5) -> 46.67 ± 5.77%
    assert "| FREEDOM | 0.1250 ± 0.0250 | 0.1083 ± 0.0236 | 13.33 ± 5.77% | 0.0667 ± 0.0144 | 46.67 ± 5.77% | 3 | 3 |" in text
    # mirror keeps 98% / 90% of clean in every seed: 2.00 ± 0.00% and 10.00 ± 0.00%
    assert "| FREEDOM + MG | 0.1250 ± 0.0250 | 0.1225 ± 0.0245 | 2.00 ± 0.00% |" in text
    # VBPR, one seed, two repeats 0.20 and 0.19 (recall@5): ± is over repeats, Decr. has no ±
    assert "| VBPR | 0.2000 | 0.1950 ± 0.0071 | 2.50% | 0.1500 ± 0.0000 | 25.00% | 1 | 2 |" in text
    assert "Significance across seeds" in text
    assert "| FREEDOM + MG vs FREEDOM | noise (sigma2) | 0.0001 | recall@5 | -36.67 | 3 |" in text


def test_markdown_single_severity_has_metric_blocks(write_audit, make, audit_dir):
    write_audit("a", make("mmgcn", "plain", 1, 0.2, {0.01: [0.19, 0.18]}, suite="caption", severity_name="prob"))
    text = render(load_results(audit_dir), "markdown", ["recall@5", "recall@20"])
    assert "## caption (prob), prob = 0.01: baby" in text
    assert "| Model | recall@5 Clean | recall@5 Perturbed | recall@5 Decr. | recall@20 Clean |" in text
    # recall@20: (0.2 - 0.185) / 0.2 = 7.50%
    assert "| MMGCN | 0.1000 | 0.0925 ± 0.0035 | 7.50% | 0.2000 | 0.1850 ± 0.0071 | 7.50% | 1 | 2 |" in text
    assert "Significance" not in text  # no baseline/other pair


def test_undefined_drop_shows_na(write_audit, make, audit_dir):
    write_audit("a", make("pop", "plain", 1, 0.0, {1e-6: [0.0]}))
    assert "| POP | 0.0000 | 0.0000 | n/a | 1 | 1 |" in render(load_results(audit_dir), "markdown", ["recall@20"])


def test_csv_round_trip(paper_like):
    rows = list(csv.DictReader(io.StringIO(render(load_results(paper_like), "csv", ["recall@20", "recall@5"]))))
    assert len(rows) == 3 * 2 * 2  # (model, strategy) x severity x metric
    row = next(r for r in rows if (r["model"], r["strategy"], r["metric"], float(r["severity"]))
               == ("freedom", "plain", "recall@20", 1e-6))
    assert float(row["clean"]) == pytest.approx(0.25)
    assert float(row["drop_mean"]) == pytest.approx(0.4 / 3)
    assert (row["n_seeds"], row["n_repeats"]) == ("3", "3")
    vbpr = next(r for r in rows if r["model"] == "vbpr")
    assert vbpr["drop_std"] == ""  # one seed: no std over seeds


def test_json_is_the_aggregated_numbers(paper_like):
    results = load_results(paper_like)
    doc = json.loads(render(results, "json"))
    assert doc["schema"] == "robustrec.report/1" and doc["dataset"] == "baby"
    assert doc["metrics"] == ["recall@5", "ndcg@20", "recall@20"]  # every metric by default
    cell = next(c for c in doc["cells"] if (c["model"], c["strategy"], c["metric"], c["severity"])
                == ("freedom", "plain", "recall@20", 1e-6))
    assert [s["drop"] for s in cell["seeds"]] == pytest.approx([0.1, 0.2, 0.1])
    assert cell["drop_mean"] == pytest.approx(0.4 / 3)
    sig = [s for s in doc["significance"] if s["metric"] == "recall@20"]
    assert {(s["other"], s["severity"]) for s in sig} == {("mirror", 1e-6), ("mirror", 1e-4)}
    assert to_dict(results, ["recall@20"], significance=False)["significance"] == []


def test_latex_is_booktabs_and_escaped(write_audit, make, audit_dir):
    write_audit("a", make("vbpr", "amr_x", 1, 0.2, label="AMR_50%&"))
    text = render(load_results(audit_dir), "latex", ["recall@20"])
    assert text.count(r"\begin{tabular}") == text.count(r"\end{tabular}") == 1
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in text
    assert r"VBPR + AMR\_50\%\& & 0.2000 & 0.1800 $\pm$ 0.0100 & 10.00\% & 1 & 3 \\" in text
    body = [line for line in text.splitlines() if line.endswith(r"\\") and "multicolumn" not in line]
    assert {len(re.findall(r"(?<!\\)&", line)) for line in body} == {5}  # every row has the 6 columns
    assert latex_escape(r"a_b & 5% {x} \ ~") == r"a\_b \& 5\% \{x\} \textbackslash{} \textasciitilde{}"


def test_formatting_helpers():
    assert format_value(0.12345, 0.001) == "0.1235 ± 0.0010"
    assert format_value(float("nan")) == "n/a"
    assert format_drop(0.1692) == "16.92%"
    assert format_drop(0.1692, 0.012) == "16.92 ± 1.20%"


def test_unknown_format_and_metric(paper_like):
    results = load_results(paper_like)
    with pytest.raises(ConfigError, match="unknown report format"):
        render(results, "html")
    with pytest.raises(ConfigError, match="unknown metric"):
        render(results, "markdown", ["recal@5"])


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_plots_curves_and_bars(paper_like, write_audit, make, tmp_path, suffix):
    curves = plot_drops(load_results(paper_like), tmp_path / f"curves.{suffix}", "recall@20")
    other = tmp_path / "single"
    write_audit("b", make("bm3", "plain", 1, 0.2), folder=other)
    write_audit("m", make("bm3", "mirror", 1, 0.2, {1e-6: [0.19]}), folder=other)
    bars = plot_drops(load_results(other), tmp_path / f"bars.{suffix}")
    for path in (curves, bars):
        data = path.read_bytes()
        assert len(data) > 1000
        assert data.startswith(b"\x89PNG") if suffix == "png" else b"<svg" in data[:2000]
    assert not list(tmp_path.glob(".*.tmp"))


def test_plot_needs_png_or_svg(paper_like, tmp_path):
    with pytest.raises(ConfigError, match=".png or .svg"):
        plot_drops(load_results(paper_like), tmp_path / "x.pdf")


def test_json_report_of_overflowing_drops_is_valid_json(write_audit, make, audit_dir):
    """A clean value of 1e-320 makes the relative drop overflow to -inf: null in JSON, not a crash."""
    write_audit("tiny-clean", make(clean=1e-320, perturbed={1e-4: [1.0, 0.0]}))
    doc = json.loads(render(load_results(audit_dir), "json", ["recall@20"]), parse_constant=_refuse)
    (cell,) = doc["cells"]
    assert cell["drop_mean"] is None and cell["clean"] == pytest.approx(1e-320)


def _refuse(token):
    raise AssertionError(f"non-standard JSON token {token}")
