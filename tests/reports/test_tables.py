"""Rendered tables: numbers, layout and well-formed markdown, LaTeX, CSV and JSON (plots: test_plots.py)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess

import pytest

from reports.drops import load_results
from reports.latex import latex_escape
from reports.tables import format_drop, format_value, render, to_dict
from robustrec.errors import ConfigError


def test_markdown_several_severities(paper_like):
    text = render(load_results(paper_like), "markdown", ["recall@5"])
    assert "## noise (sigma2): baby, recall@5" in text
    assert "| Model | Clean | sigma2 = 1e-06 Perturbed | sigma2 = 1e-06 Decr. | sigma2 = 0.0001 Perturbed |" in text
    # FREEDOM recall@5 = recall@20 / 2: clean mean (0.10 + 0.125 + 0.15) / 3 = 0.125, std 0.025;
    # drops 1e-6: 13.33 ± 5.77% (see test_drops); 1e-4: (0.5, 0.4, 0.5) -> 46.67 ± 5.77%
    assert "| FREEDOM | 0.1250 ± 0.0250 | 0.1083 ± 0.0236 | 13.33 ± 5.77% | 0.0667 ± 0.0144 | 46.67 ± 5.77% | 3 | 3 |" in text
    # mirror keeps 98% / 90% of clean in every seed: 2.00 ± 0.00% and 10.00 ± 0.00%
    assert "| FREEDOM + MG | 0.1250 ± 0.0250 | 0.1225 ± 0.0245 | 2.00 ± 0.00% |" in text
    # VBPR, one seed, two repeats 0.20 and 0.19 (recall@5): ± is over repeats, Decr. has no ±
    assert "| VBPR | 0.2000 | 0.1950 ± 0.0071 | 2.50% | 0.1500 ± 0.0000 | 25.00% | 1 | 2 |" in text
    assert "## Significance across seeds: FREEDOM, noise (sigma2)" in text
    assert "| FREEDOM + MG vs FREEDOM | 0.0001 | recall@5 | -36.67 | 3 |" in text


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
    # the mean and the std sit in two columns (r@{}l), so that the ± signs line up; Decr. in percent
    assert r"VBPR + AMR\_50\%\& & $0.2000$ &  & $0.1800$ & ${}\pm 0.0100$ & $10.00$ &  & $1$ & $3$ \\" in text
    assert_latex_structure(text)
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


def test_json_report_of_overflowing_drops_is_valid_json(write_audit, make, audit_dir):
    """A clean value of 1e-320 makes the relative drop overflow to -inf: null in JSON, not a crash."""
    write_audit("tiny-clean", make(clean=1e-320, perturbed={1e-4: [1.0, 0.0]}))
    doc = json.loads(render(load_results(audit_dir), "json", ["recall@20"]), parse_constant=_refuse)
    (cell,) = doc["cells"]
    assert cell["drop_mean"] is None and cell["clean"] == pytest.approx(1e-320)


def _refuse(token):
    raise AssertionError(f"non-standard JSON token {token}")


def test_default_metric_is_recall_at_20(paper_like):
    """One default metric everywhere (robustrec.metrics.DEFAULT_METRIC): MMRec's validation metric."""
    results = load_results(paper_like)
    for fmt in ("markdown", "latex"):
        text = render(results, fmt)
        assert "recall@20" in text and "recall@5" not in text, fmt


def test_markdown_explains_the_notation_once(paper_like, write_audit, make, audit_dir):
    write_audit("caption", make("freedom", "plain", 1, 0.2, {0.01: [0.19]}, suite="caption", severity_name="prob"))
    text = render(load_results(audit_dir), "markdown", ["recall@20", "recall@5"])
    assert text.count("\n## ") == 4  # noise per metric, caption (one severity), FREEDOM's significance
    for phrase in ("Decr. = (clean - perturbed) / clean", "± = std over seeds", "Holm-corrected",
                   "Wilcoxon signed-rank"):
        assert text.count(phrase) == 1, phrase
    # the notes come before the first table
    assert text.index("Holm-corrected") < text.index("\n## ")
    # several reports on one page (the demo) can say it once: the first with notes, the others without
    bare = render(load_results(audit_dir), "markdown", ["recall@20"], notes=False)
    assert "Decr. =" not in bare and "Holm-corrected" not in bare and "\n## noise (sigma2)" in bare


def test_significance_tables_show_raw_and_holm_corrected_p(paper_like):
    from reports.stats import compare

    results = load_results(paper_like)
    text = render(results, "markdown", ["recall@20"])
    assert ("| Comparison | Severity | Metric | Δ Decr. (pp) | n | t-test p | t-test p, Holm | Wilcoxon p | "
            "Wilcoxon p, Holm | Verdict |") in text
    for c in compare(results, "recall@20"):
        assert c.family_size == 2
        from reports.stats import format_p

        cells = [format_p(c.test.t_pvalue), format_p(c.corrected.t_pvalue), format_p(c.test.wilcoxon_pvalue),
                 format_p(c.corrected.wilcoxon_pvalue), c.verdict()]
        assert " | ".join(cells) + " |" in text


def test_one_seed_says_once_that_seed_tests_need_seeds(write_audit, make, audit_dir):
    for model in ("freedom", "bm3"):
        write_audit(f"{model}-p", make(model, "plain", 1, 0.2, {1e-6: [0.18], 1e-4: [0.1]}))
        write_audit(f"{model}-m", make(model, "mirror", 1, 0.2, {1e-6: [0.19], 1e-4: [0.15]}))
    results = load_results(audit_dir)
    for fmt in ("markdown", "latex"):
        text = render(results, fmt, ["recall@20", "recall@5"])
        assert text.count("need at least two seeds") == 1, fmt
        assert "Significance across seeds" not in text and "n/a (n = 1)" not in text, fmt
        assert "Holm-corrected" not in text, fmt  # no test shown, so no explanation of the tests
        assert "one seed per strategy" in text  # every pair has one seed: said once, no list of pairs
        assert "FREEDOM + MG vs FREEDOM" not in text


def test_pairs_short_of_seeds_are_named_when_others_have_enough(write_audit, make, audit_dir):
    for seed in (1, 2, 3):
        write_audit(f"freedom-p{seed}", make("freedom", "plain", seed, 0.2, {1e-6: [0.18]}))
        write_audit(f"freedom-m{seed}", make("freedom", "mirror", seed, 0.2, {1e-6: [0.19]}))
    write_audit("bm3-p", make("bm3", "plain", 1, 0.2, {1e-6: [0.18]}))
    write_audit("bm3-m", make("bm3", "mirror", 1, 0.2, {1e-6: [0.19]}))
    text = render(load_results(audit_dir), "markdown", ["recall@20"])
    assert text.count("need at least two seeds") == 1
    assert "not tested for lack of seeds: BM3 + MG vs BM3" in text and "Significance across seeds" in text


def test_json_significance_carries_the_correction(paper_like):
    doc = json.loads(render(load_results(paper_like), "json", ["recall@20", "recall@5"]))
    assert doc["schema"] == "robustrec.report/1"  # additions only: check --baseline reads old reports
    sig = doc["significance"]
    assert len(sig) == 4 and {s["family_size"] for s in sig} == {4}
    assert {s["family"] for s in sig} == {"freedom / noise (sigma2) / seeds"}
    for s in sig:
        assert s["t_pvalue_holm"] >= s["t_pvalue"] and s["wilcoxon_pvalue_holm"] >= s["wilcoxon_pvalue"]
    assert any("Holm" in note for note in doc["notes"])


# -- LaTeX: structure checked thoroughly, and compiled when a TeX engine is installed ------------------
def _column_count(spec: str) -> int:
    """Columns of a tabular spec: l, c, r and p{..} each count one; @{...} inserts no column."""
    spec = re.sub(r"@\{[^{}]*(\{\})?[^{}]*\}", "", spec)
    spec = re.sub(r"[pmb]\{[^}]*\}", "p", spec)
    return len(re.findall(r"[lcrp]", spec))


def _split_cells(row: str) -> list[str]:
    """Cells of a tabular row: split at & outside braces and not escaped."""
    cells, depth, current, prev = [], 0, "", ""
    for ch in row:
        if ch == "{" and prev != "\\":
            depth += 1
        elif ch == "}" and prev != "\\":
            depth -= 1
        if ch == "&" and depth == 0 and prev != "\\":
            cells.append(current)
            current = ""
        else:
            current += ch
        prev = ch
    return cells + [current]


def _width(cell: str) -> int:
    found = re.match(r"\s*\\multicolumn\{(\d+)\}", cell)
    return int(found.group(1)) if found else 1


def _outside_math(text: str) -> str:
    return re.sub(r"(?<!\\)\$[^$]*(?<!\\)\$", " ", text)


def assert_latex_structure(text: str) -> None:
    """Balanced environments; one caption and one unique label per table; every row (headers included)
    fills exactly the spec's columns; no unescaped special character outside math; numbers in math
    (a real minus sign); the first (text) column left-aligned."""
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{([^}]*)\}", text):
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name, f"\\end{{{name}}} does not close an open environment"
    assert not stack, f"unclosed environments {stack}"
    tables = re.findall(r"\\begin\{table\}.*?\\end\{table\}", text, flags=re.S)
    assert tables
    labels = re.findall(r"\\label\{([^}]*)\}", text)
    assert len(labels) == len(set(labels)) == len(tables)
    assert all(re.fullmatch(r"tab:[a-z0-9:.-]+", label) for label in labels), labels
    for table in tables:
        assert table.count(r"\caption{") == 1 and table.count(r"\label{") == 1
        assert r"\toprule" in table and r"\midrule" in table and r"\bottomrule" in table
        spec = re.search(r"\\begin\{tabular\}\{(.*)\}\s*$", table, flags=re.M).group(1)
        assert spec.startswith("l"), spec
        n = _column_count(spec)
        body = table.split(r"\toprule", 1)[1].split(r"\bottomrule", 1)[0]
        for line in body.splitlines():
            line = re.sub(r"\\cmidrule\([lr]*\)\{\d+-\d+\}", "", line).strip()
            if not line or line == r"\midrule":
                continue
            assert line.endswith(r"\\"), line
            cells = _split_cells(line[:-2])
            assert sum(_width(c) for c in cells) == n, (spec, line)
            for cell in cells:
                plain = _outside_math(cell)
                plain = re.sub(r"\\[a-zA-Z]+|\\[&%$#_{}\\ ]", "", plain)
                assert not re.search(r"[&%$#_^~]", plain), cell
                assert not re.search(r"(?<![-\w])-\d", plain), f"a number outside math: {cell}"
    for line in text.splitlines():  # outside the tables, only comments
        if not line.strip().startswith("%"):
            assert line.strip() == "" or "\\" in line or line.strip() in ("{", "}"), line


def test_latex_tables_are_complete_and_well_formed(paper_like, write_audit, make, audit_dir):
    write_audit("odd", make("vbpr", "x_y", 1, 0.2, {1e-6: [0.21], 1e-4: [0.19]}, label="A&B_50%#~^{}\\$"))
    text = render(load_results(audit_dir), "latex", ["recall@20", "ndcg@20"])
    assert_latex_structure(text)
    assert r"$\sigma^2 = 10^{-6}$" in text and r"$\sigma^2 = 10^{-4}$" in text
    assert r"$-5.00$" in text  # VBPR + A&B gains 5%: a negative drop, with a real minus sign
    assert r"$-36.67$" in text  # a significance difference in percentage points
    assert text.count(r"\caption{") == 3  # noise for recall@20 and ndcg@20, FREEDOM's significance
    assert r"\label{tab:baby:noise-sigma2:recall-20}" in text


def test_latex_severities_as_math():
    from reports.latex import severity_tex

    assert severity_tex("sigma2", 1e-6) == r"$\sigma^2 = 10^{-6}$"
    assert severity_tex("sigma2", 2.5e-5) == r"$\sigma^2 = 2.5 \times 10^{-5}$"
    assert severity_tex("prob", 0.01) == r"$p = 0.01$"
    assert severity_tex("scale", 0.5) == r"$s = 0.5$"
    assert severity_tex("my_level", 1.0) == r"$\mathrm{my\_level} = 1$"


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex is not installed (Debian: apt-get install texlive-latex-base "
                           "texlive-latex-recommended); the structure test above still runs")
def test_latex_output_compiles(paper_like, write_audit, make, tmp_path):
    write_audit("odd", make("vbpr", "x_y", 1, 0.2, {1e-6: [0.21], 1e-4: [0.19]}, label="A&B_50%#~^{}\\$<>"))
    write_audit("cap", make("mmgcn", "plain", 1, 0.2, {0.01: [0.19]}, suite="caption", severity_name="prob"))
    write_audit("rel", make("bm3", "plain", 1, 0.2, {0.1: [0.19], 0.5: [0.15]}, severity_name="scale",
                            details={"noise_scale": "relative"}))
    body = render(load_results(paper_like), "latex", ["recall@20", "recall@5"])
    assert_latex_structure(body)
    assert r"noise (relative scale $s$)" in body and r"$p = 0.01$" in body
    document = ("\\documentclass{article}\n\\usepackage{booktabs}\n"
                "\\usepackage[margin=1cm,paperwidth=60cm,paperheight=80cm]{geometry}\n"
                "\\begin{document}\n" + body + "\\end{document}\n")
    (tmp_path / "report.tex").write_text(document, encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape",
                           "report.tex"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    log = (tmp_path / "report.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert (tmp_path / "report.pdf").stat().st_size > 1000
    assert "multiply defined" not in log and "Overfull" not in log
    assert "Missing character" not in log
