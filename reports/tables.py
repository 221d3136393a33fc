"""Tables rendered from aggregated audit results: markdown, LaTeX (booktabs), CSV and JSON.

One table per suite. With one severity in the suite (the paper's Tables 4 and 5), columns are, per
metric: clean, perturbed mean ± std and Decr.; with several severities there is one table per metric
with a (perturbed, Decr.) column block per severity. ± is the standard deviation over seeds when
there are several seeds, over repeats when there is one. A significance table follows when a model
has a baseline and another strategy.

JSON holds the aggregated numbers (every metric by default) and is what ``robustrec check --baseline``
reads; CSV has one row per (model, strategy, suite, severity, metric).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from robustrec.errors import ConfigError

from .drops import AuditResults, Cell, GroupKey, SuiteKey, format_severity
from .stats import USERS, Comparison, PerUserCache, compare, format_p

FORMATS = ("markdown", "latex", "csv", "json")
DEFAULT_METRIC = "recall@5"
REPORT_SCHEMA = "robustrec.report/1"
NOTE = ("Decr. = (clean - perturbed) / clean; ± = std over seeds (over repeats with one seed); "
        "with several seeds every number is the mean over seeds.")


@dataclass
class Table:
    """A rendered-format-neutral table: column groups (label, span), column names, string rows."""

    title: str
    groups: list[tuple[str, int]]
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)


# -- number formatting ---------------------------------------------------------------------------
def format_value(mean: float, std: float = math.nan, digits: int = 4) -> str:
    """``"0.0272 ± 0.0004"``; without std when it is NaN; ``"n/a"`` when the mean is NaN."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_drop(mean: float, std: float = math.nan) -> str:
    """A relative drop in percent with 2 decimals: ``"16.92%"`` or ``"16.92 ± 1.20%"``."""
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.2f}%" if math.isnan(std) else f"{100 * mean:.2f} ± {100 * std:.2f}%"


def _span(values: Sequence[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _num(x: float) -> float | None:
    """A number for JSON, None where it is undefined: NaN (e.g. a drop from a clean value of 0) or
    infinite (a std over drops that overflowed); JSON has neither."""
    return float(x) if math.isfinite(x) else None


# -- building tables -----------------------------------------------------------------------------
def _cell(results: AuditResults, model: str, strategy: str, suite: SuiteKey, severity: float,
          metric: str) -> Cell | None:
    key = GroupKey(model, strategy, suite.suite, suite.severity_name, suite.noise_scale, severity)
    return results.cell(key, metric) if key in results.audits else None


def _perturbed(cell: Cell | None) -> list[str]:
    if cell is None:
        return ["-", "-"]
    drop_std = cell.drop_std if cell.n_seeds > 1 else math.nan
    return [format_value(cell.perturbed_mean, cell.perturbed_std), format_drop(cell.drop_mean, drop_std)]


def _clean(cells: Sequence[Cell]) -> str:
    first = cells[0]
    return format_value(first.clean_mean, first.clean_std)


def _counts(cells: Sequence[Cell]) -> list[str]:
    return [_span([c.n_seeds for c in cells]), _span([n for c in cells for n in c.n_repeats])]


def _severity_title(suite: SuiteKey, severity: float) -> str:
    return f"{suite.severity_name or 'severity'} = {format_severity(severity)}"


def suite_tables(results: AuditResults, suite: SuiteKey, metrics: Sequence[str]) -> list[Table]:
    """The table(s) of one suite: metric blocks for one severity, severity blocks per metric otherwise."""
    severities = results.severities(suite)
    rows = results.rows()
    if len(severities) == 1:
        sev = severities[0]
        table = Table(f"{suite.title}, {_severity_title(suite, sev)}: {results.dataset}",
                      [("", 1)] + [(m, 3) for m in metrics] + [("", 2)],
                      ["Model"] + ["Clean", "Perturbed", "Decr."] * len(metrics) + ["Seeds", "Repeats"])
        for model, strategy in rows:
            cells = [_cell(results, model, strategy, suite, sev, m) for m in metrics]
            if any(c is None for c in cells):
                continue
            body = [x for c in cells for x in [_clean([c]), *_perturbed(c)]]
            table.rows.append([results.label(model, strategy), *body, *_counts(cells)])
        return [table]
    tables = []
    for metric in metrics:
        table = Table(f"{suite.title}: {results.dataset}, {metric}",
                      [("", 2)] + [(_severity_title(suite, s), 2) for s in severities] + [("", 2)],
                      ["Model", "Clean"] + ["Perturbed", "Decr."] * len(severities) + ["Seeds", "Repeats"])
        for model, strategy in rows:
            cells = [_cell(results, model, strategy, suite, s, metric) for s in severities]
            present = [c for c in cells if c is not None]
            if not present:
                continue
            body = [x for c in cells for x in _perturbed(c)]
            table.rows.append([results.label(model, strategy), _clean(present), *body, *_counts(present)])
        tables.append(table)
    return tables


def significance_tables(comparisons: Sequence[Comparison]) -> list[Table]:
    """Across-seed and across-user tables of strategy comparisons (empty when there are none)."""
    tables = []
    seeds = [c for c in comparisons if c.level != USERS]
    users = [c for c in comparisons if c.level == USERS]
    head = ["Comparison", "Suite", "Severity", "Metric"]
    if seeds:
        table = Table("Significance across seeds (paired by run seed): difference in Decr., other - baseline",
                      [], head + ["Δ Decr. (pp)", "n", "t-test p", "Wilcoxon p", "Verdict"])
        for c in seeds:
            table.rows.append(_comparison_head(c) + [_pp(c.test.mean_diff), str(c.test.n),
                                                     format_p(c.test.t_pvalue), format_p(c.test.wilcoxon_pvalue),
                                                     c.verdict()])
        tables.append(table)
    if users:
        table = Table("Significance across users within one seed (paired by user): per-user drop "
                      "clean_u - mean perturbed_u, other - baseline", [],
                      head + ["Seed", "Δ drop per user", "n users", "t-test p", "Wilcoxon p", "Verdict"])
        for c in users:
            diff = "n/a" if math.isnan(c.test.mean_diff) else f"{c.test.mean_diff:+.4f}"
            table.rows.append(_comparison_head(c) + [", ".join(map(str, c.seeds)), diff, str(c.test.n),
                                                     format_p(c.test.t_pvalue), format_p(c.test.wilcoxon_pvalue),
                                                     c.verdict()])
        tables.append(table)
    return tables


def _comparison_head(c: Comparison) -> list[str]:
    return [f"{c.other_label} vs {c.baseline_label}", c.suite.title, format_severity(c.severity), c.metric]


def _pp(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.2f}"


def build_tables(results: AuditResults, metrics: Sequence[str], significance: bool = True) -> list[Table]:
    """Every table of a report: the suites' tables, then the significance tables."""
    tables = [t for suite in results.suites for t in suite_tables(results, suite, metrics)]
    if significance:
        cache: PerUserCache = {}
        comparisons = [c for m in metrics for c in compare(results, m, cache=cache)]
        tables += significance_tables(comparisons)
    return tables


# -- renderers -----------------------------------------------------------------------------------
def _header_line(results: AuditResults) -> str:
    return f"dataset {results.dataset} (fingerprint {results.fingerprint}, split {results.split})"


def _flat_columns(table: Table) -> list[str]:
    names = []
    spans = [label for label, span in table.groups for _ in range(span)] or [""] * len(table.columns)
    for group, col in zip(spans, table.columns):
        names.append(f"{group} {col}".strip())
    return names


def _numeric(text: str) -> bool:
    """Right-align columns of numbers (``0.1250 ± 0.0250``, ``-11.33``, ``<1e-4``, ``n/a``, ``1-3``)."""
    return text in ("n/a", "-") or (text[:1].isdigit() or text[:1] in "+-<") and not text[1:2].isalpha()


def to_markdown(results: AuditResults, metrics: Sequence[str], significance: bool = True) -> str:
    lines = [f"# Robustness report: {_header_line(results)}", "", NOTE]
    for table in build_tables(results, metrics, significance):
        cols = _flat_columns(table)
        align = ["---:" if all(_numeric(row[i]) for row in table.rows) else "---" for i in range(len(cols))]
        lines += ["", f"## {table.title}", "", "| " + " | ".join(cols) + " |", "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(s.replace("|", "\\|") for s in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
        "Δ": r"$\Delta$", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and write ± and Δ in math mode)."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def _latex_table(table: Table) -> list[str]:
    n = len(table.columns)
    out = [f"% {latex_escape(table.title)}", r"\begin{tabular}{l" + "r" * (n - 1) + "}", r"\toprule"]
    if any(label for label, _ in table.groups):
        cells, rules, col = [], [], 1
        for label, span in table.groups:
            if label:
                cells.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}")
                rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
            else:
                cells += [""] * span
            col += span
        out += [" & ".join(cells) + r" \\", " ".join(rules)]
    out += [" & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    out += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows]
    return out + [r"\bottomrule", r"\end{tabular}"]


def to_latex(results: AuditResults, metrics: Sequence[str], significance: bool = True) -> str:
    lines = [f"% Robustness report: {latex_escape(_header_line(results))}", "% requires \\usepackage{booktabs}",
             f"% {latex_escape(NOTE)}"]
    for table in build_tables(results, metrics, significance):
        lines += [""] + _latex_table(table)
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("dataset", "model", "strategy", "strategy_label", "suite", "severity_name", "noise_scale",
               "severity", "metric", "clean", "clean_std", "perturbed_mean", "perturbed_std", "drop_mean",
               "drop_std", "n_seeds", "n_repeats")


def cell_dict(results: AuditResults, cell: Cell) -> dict[str, Any]:
    """A cell's numbers as plain JSON types (NaN as None), per-seed values included."""
    k = cell.key
    return {
        "dataset": results.dataset, "model": k.model, "strategy": k.strategy, "strategy_label": cell.strategy_label,
        "row": results.label(k.model, k.strategy), "suite": k.suite, "severity_name": k.severity_name,
        "noise_scale": k.noise_scale, "severity": k.severity, "metric": cell.metric,
        "clean": _num(cell.clean_mean), "clean_std": _num(cell.clean_std),
        "perturbed_mean": _num(cell.perturbed_mean), "perturbed_std": _num(cell.perturbed_std),
        "drop_mean": _num(cell.drop_mean), "drop_std": _num(cell.drop_std),
        "n_seeds": cell.n_seeds, "n_repeats": min(cell.n_repeats),
        "seeds": [{"run": s.run, "run_seed": s.run_seed, "clean": _num(s.clean),
                   "perturbed_mean": _num(s.perturbed_mean), "perturbed_std": _num(s.perturbed_std),
                   "drop": _num(s.drop), "n_repeats": s.n_repeats} for s in cell.seeds],
    }


def to_csv(results: AuditResults, metrics: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for metric in metrics:
        for cell in results.cells(metric):
            writer.writerow({k: ("" if v is None else v) for k, v in cell_dict(results, cell).items()})
    return buffer.getvalue()


def comparison_dict(c: Comparison) -> dict[str, Any]:
    return {"model": c.model, "baseline": c.baseline, "other": c.other, "suite": c.suite.suite,
            "severity_name": c.suite.severity_name, "noise_scale": c.suite.noise_scale, "severity": c.severity,
            "metric": c.metric, "level": c.level, "seeds": list(c.seeds), "n": c.test.n,
            "mean_diff": _num(c.test.mean_diff), "t_pvalue": _num(c.test.t_pvalue),
            "wilcoxon_pvalue": _num(c.test.wilcoxon_pvalue), "verdict": c.verdict()}


def to_dict(results: AuditResults, metrics: Sequence[str], significance: bool = True) -> dict[str, Any]:
    """The machine-readable report (the ``--format json`` document)."""
    cache: PerUserCache = {}
    comparisons = [c for m in metrics for c in compare(results, m, cache=cache)] if significance else []
    return {
        "schema": REPORT_SCHEMA, "dataset": results.dataset, "dataset_fingerprint": results.fingerprint,
        "split": results.split, "metrics": list(metrics),
        "cells": [cell_dict(results, c) for m in metrics for c in results.cells(m)],
        "significance": [comparison_dict(c) for c in comparisons],
    }


def to_json(results: AuditResults, metrics: Sequence[str], significance: bool = True) -> str:
    return json.dumps(to_dict(results, metrics, significance), indent=2, allow_nan=False) + "\n"


def resolve_metrics(results: AuditResults, fmt: str, metrics: Sequence[str] | None) -> list[str]:
    """The metrics to report: as asked; by default every metric for csv/json, recall@5 otherwise."""
    if not metrics:
        metrics = list(results.metrics) if fmt in ("csv", "json") else [DEFAULT_METRIC]
    return list(dict.fromkeys(results.require_metric(m) for m in metrics))


def render(results: AuditResults, fmt: str = "markdown", metrics: Sequence[str] | None = None,
           significance: bool = True) -> str:
    """The report in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    chosen = resolve_metrics(results, fmt, metrics)
    if fmt == "markdown":
        return to_markdown(results, chosen, significance)
    if fmt == "latex":
        return to_latex(results, chosen, significance)
    if fmt == "csv":
        return to_csv(results, chosen)
    return to_json(results, chosen, significance)
