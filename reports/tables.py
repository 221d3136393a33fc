"""Tables rendered from aggregated audit results: markdown, LaTeX (booktabs), CSV and JSON.

One table per suite. With one severity in the suite (the paper's Tables 4 and 5), columns are, per
metric: clean, perturbed mean ± std and Decr.; with several severities there is one table per metric
with a (perturbed, Decr.) column block per severity. ± is the standard deviation over seeds when
there are several seeds, over repeats when there is one.

Significance tables follow, one per family of comparisons (:mod:`reports.stats`: one model, suite
and level, across its severities, metrics and strategy pairs), with raw and Holm-corrected p-values
of both tests. Seed-level comparisons that have fewer than two seeds are not tables of "n/a": one
note says which they are. What ±, Decr., the tests and the correction mean is said once, in notes
at the top of the report (markdown), in the captions (LaTeX) and in ``notes`` (JSON).

The metric is :data:`robustrec.metrics.DEFAULT_METRIC` (recall@20) unless chosen. JSON holds the
aggregated numbers (every metric by default) and is what ``robustrec check --baseline`` reads; CSV
has one row per (model, strategy, suite, severity, metric).
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
from robustrec.metrics import DEFAULT_METRIC

from .drops import AuditResults, Cell, GroupKey, SuiteKey, format_severity, row_label
from .latex import (
    TEXT,
    Tex,
    column_kinds,
    latex_document,
    latex_escape,
    pm_tex,
    severity_number,
    severity_symbol,
    severity_tex,
)
from .stats import ALPHA, SEEDS, Comparison, compare, format_p

__all__ = ["DEFAULT_METRIC", "FORMATS", "REPORT_SCHEMA", "Report", "Table", "build_report", "render", "to_dict"]

FORMATS = ("markdown", "latex", "csv", "json")
#: Fields were only ever added to the JSON report since version 1 (readers ignore unknown fields), so
#: the schema name has not changed: ``check --baseline`` reads old and new reports alike.
REPORT_SCHEMA = "robustrec.report/1"
DROP_NOTE = ("Decr. = (clean - perturbed) / clean, in percent; ± = std over seeds (over repeats with one "
             "seed); with several seeds every number is the mean over seeds.")
TEST_NOTE = (
    "Significance: each strategy against its baseline (plain, or X for X + MG), paired by run seed on "
    "Decr. (Δ Decr. = other - baseline, in percentage points: negative means the other strategy drops "
    "less) and, where per-user values exist, paired by user within one seed. Each comparison gets a "
    "paired t-test and a Wilcoxon signed-rank test; both p-values are Holm-corrected within their "
    "table (one model, suite and level: all its severities, metrics and strategy pairs). A verdict "
    f"needs both corrected p < {ALPHA:g}; otherwise it says which test found a difference. With n "
    "seeds the exact Wilcoxon test cannot go below p = 2 / 2^n (0.0625 with 5 seeds, 0.031 with 6)."
)
_CAPTION_DROP = (r"Mean $\pm$ std over seeds (over repeats with one seed); "
                 r"Decr.\ = (clean $-$ perturbed) / clean, in percent.")


@dataclass
class Table:
    """A format-neutral table: column groups (label, span), column names, rows of string cells.

    A cell (or a title) that is a :class:`~reports.latex.Tex` carries its own LaTeX form; ``caption``
    is the LaTeX caption (default: the title) and ``key`` names the table in its LaTeX label.
    """

    title: str
    groups: list[tuple[str, int]]
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""
    key: tuple[str, ...] = ()


@dataclass
class Report:
    """The tables of a report with the notes that explain them, said once."""

    header: str
    notes: list[str]
    tables: list[Table]


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


def value_cell(mean: float, std: float = math.nan, digits: int = 4) -> str:
    """:func:`format_value`, with its LaTeX form: two columns aligned at the ± (a finite mean only)."""
    text = format_value(mean, std, digits)
    if not math.isfinite(mean):
        return text
    std_text = f"{std:.{digits}f}" if math.isfinite(std) else ""
    return Tex(text, pm_tex(f"{mean:.{digits}f}", std_text), span=2)


def drop_cell(mean: float, std: float = math.nan) -> str:
    """:func:`format_drop`; in LaTeX the % sign is in the column's header, not in every cell."""
    text = format_drop(mean, std)
    if not math.isfinite(mean):
        return text
    std_text = f"{100 * std:.2f}" if math.isfinite(std) else ""
    return Tex(text, pm_tex(f"{100 * mean:.2f}", std_text), span=2)


DECR = Tex("Decr.", r"Decr.\ (\%)")


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
    return [value_cell(cell.perturbed_mean, cell.perturbed_std), drop_cell(cell.drop_mean, drop_std)]


def _clean(cells: Sequence[Cell]) -> str:
    first = cells[0]
    return value_cell(first.clean_mean, first.clean_std)


def _counts(cells: Sequence[Cell]) -> list[str]:
    return [_span([c.n_seeds for c in cells]), _span([n for c in cells for n in c.n_repeats])]


def _severity_title(suite: SuiteKey, severity: float) -> str:
    text = f"{suite.severity_name or 'severity'} = {format_severity(severity)}"
    return Tex(text, severity_tex(suite.severity_name, severity))


def _suite_tex(suite: SuiteKey) -> str:
    """``noise ($\\sigma^2$)``: the suite's title with its severity as a symbol."""
    if suite.noise_scale == "relative" and suite.severity_name in ("scale", ""):
        return f"{latex_escape(suite.suite)} (relative scale ${severity_symbol('scale')}$)"
    if not suite.severity_name:
        return latex_escape(suite.suite)
    return f"{latex_escape(suite.suite)} (${severity_symbol(suite.severity_name)}$)"


def _suite_slug(suite: SuiteKey) -> str:
    scale = suite.noise_scale if suite.noise_scale not in ("", "absolute") else ""
    return " ".join(part for part in (suite.suite, suite.severity_name, scale) if part)


def _drop_caption(results: AuditResults, suite: SuiteKey, metric: str, severity: float | None) -> str:
    where = _suite_tex(suite) + (f", {severity_tex(suite.severity_name, severity)}," if severity is not None else "")
    return (f"Relative drop of {latex_escape(metric)} under {where} on {latex_escape(results.dataset)}. "
            + _CAPTION_DROP)


def suite_tables(results: AuditResults, suite: SuiteKey, metrics: Sequence[str]) -> list[Table]:
    """The table(s) of one suite: metric blocks for one severity, severity blocks per metric otherwise."""
    severities = results.severities(suite)
    rows = results.rows()
    if len(severities) == 1:
        sev = severities[0]
        title = f"{suite.title}, {_severity_title(suite, sev)}: {results.dataset}"
        table = Table(title, [("", 1)] + [(m, 3) for m in metrics] + [("", 2)],
                      ["Model"] + ["Clean", "Perturbed", DECR] * len(metrics) + ["Seeds", "Repeats"],
                      caption=Tex(title, _drop_caption(results, suite, ", ".join(metrics), sev)),
                      key=(results.dataset, _suite_slug(suite), *metrics))
        for model, strategy in rows:
            cells = [_cell(results, model, strategy, suite, sev, m) for m in metrics]
            if any(c is None for c in cells):
                continue
            body = [x for c in cells for x in [_clean([c]), *_perturbed(c)]]
            table.rows.append([results.label(model, strategy), *body, *_counts(cells)])
        return [table]
    tables = []
    for metric in metrics:
        title = f"{suite.title}: {results.dataset}, {metric}"
        table = Table(title, [("", 2)] + [(_severity_title(suite, s), 2) for s in severities] + [("", 2)],
                      ["Model", "Clean"] + ["Perturbed", DECR] * len(severities) + ["Seeds", "Repeats"],
                      caption=Tex(title, _drop_caption(results, suite, metric, None)),
                      key=(results.dataset, _suite_slug(suite), metric))
        for model, strategy in rows:
            cells = [_cell(results, model, strategy, suite, s, metric) for s in severities]
            present = [c for c in cells if c is not None]
            if not present:
                continue
            body = [x for c in cells for x in _perturbed(c)]
            table.rows.append([results.label(model, strategy), _clean(present), *body, *_counts(present)])
        tables.append(table)
    return tables


_P_GROUPS = [("t-test", 2), ("Wilcoxon", 2)]
_P_COLUMNS = ["p", "p, Holm"] * 2


def _p_cells(c: Comparison) -> list[str]:
    return [format_p(c.test.t_pvalue), format_p(c.corrected.t_pvalue),
            format_p(c.test.wilcoxon_pvalue), format_p(c.corrected.wilcoxon_pvalue)]


def _significance_table(dataset: str, family: Sequence[Comparison]) -> Table:
    """One family's table: its comparisons with raw and Holm-corrected p-values and the verdict."""
    first = family[0]
    model = row_label(first.model, "plain")
    by_seed = first.level == SEEDS
    level = "across seeds" if by_seed else "across users, within one seed"
    title = f"Significance {level}: {model}, {first.suite.title}"
    severity = Tex("Severity", f"${severity_symbol(first.suite.severity_name)}$")
    head = ["Comparison", severity, "Metric"] + (["Δ Decr. (pp)", "n"] if by_seed
                                                   else ["Seed", "Δ drop per user", "n users"])
    caption = (f"Significance {level} of the difference in "
               + (r"Decr.\ (other $-$ baseline, percentage points)" if by_seed
                  else r"per-user drop clean$_u -{}$mean perturbed$_u$ (other $-$ baseline)")
               + f" for {latex_escape(model)} under {_suite_tex(first.suite)} on {latex_escape(dataset)}: "
               r"paired $t$-test and Wilcoxon signed-rank test, $p$-values raw and Holm-corrected within "
               f"this table; a verdict needs both corrected $p < {ALPHA:g}$.")
    table = Table(title, [("", len(head))] + _P_GROUPS + [("", 1)], head + _P_COLUMNS + ["Verdict"],
                  caption=Tex(title, caption), key=(dataset, _suite_slug(first.suite), first.model, first.level))
    for c in family:
        severity = format_severity(c.severity)
        where = [f"{c.other_label} vs {c.baseline_label}", Tex(severity, f"${severity_number(c.severity)}$"), c.metric]
        if by_seed:
            numbers = [_pp(c.test.mean_diff), str(c.test.n)]
        else:
            diff = "n/a" if math.isnan(c.test.mean_diff) else f"{c.test.mean_diff:+.4f}"
            numbers = [", ".join(map(str, c.seeds)), diff, str(c.test.n)]
        table.rows.append(where + numbers + _p_cells(c) + [c.verdict()])
    return table


def significance_tables(dataset: str, comparisons: Sequence[Comparison]) -> list[Table]:
    """One table per family (seed-level families first); seed-level comparisons that could not be
    tested (fewer than two seeds) are left out: :func:`untested_note` names them once."""
    families: dict[tuple, list[Comparison]] = {}
    for c in sorted(comparisons, key=lambda c: c.level != SEEDS):
        if c.level == SEEDS and not c.test.tested:
            continue
        families.setdefault(c.family, []).append(c)
    return [_significance_table(dataset, family) for family in families.values()]


def untested_note(comparisons: Sequence[Comparison]) -> str | None:
    """One sentence naming the strategy pairs whose seed-level test needs more seeds, or None."""
    seed_level = [c for c in comparisons if c.level == SEEDS]
    untested = [c for c in seed_level if not c.test.tested]
    if not untested:
        return None
    if len(untested) == len(seed_level) and all(len(c.seeds) <= 1 for c in untested):
        return ("Seed-level significance tests need at least two seeds audited with both strategies; these "
                "results have one seed per strategy, so only the tests across users (where stored) are shown.")
    pairs = dict.fromkeys(f"{c.other_label} vs {c.baseline_label} ({c.suite.title}, "
                          f"{len(c.seeds)} common seed{'' if len(c.seeds) == 1 else 's'})" for c in untested)
    return ("Seed-level significance tests need at least two seeds audited with both strategies; "
            f"not tested for lack of seeds: {'; '.join(pairs)}.")


def _pp(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.2f}"


def _header_line(results: AuditResults) -> str:
    return f"dataset {results.dataset} (fingerprint {results.fingerprint}, split {results.split})"


def _comparisons(results: AuditResults, metrics: Sequence[str], significance: bool) -> list[Comparison]:
    return compare(results, metrics, cache={}) if significance else []


def report_notes(comparisons: Sequence[Comparison]) -> list[str]:
    """What the numbers mean (once per report), with the note on untested comparisons."""
    notes = [DROP_NOTE]
    if any(c.test.tested or c.level != SEEDS for c in comparisons):  # some significance table is shown
        notes.append(TEST_NOTE)
    untested = untested_note(comparisons)
    return notes + ([untested] if untested else [])


def build_report(results: AuditResults, metrics: Sequence[str], significance: bool = True) -> Report:
    """Every table of a report (the suites' tables, then the significance tables) and its notes."""
    comparisons = _comparisons(results, metrics, significance)
    tables = [t for suite in results.suites for t in suite_tables(results, suite, metrics)]
    tables += significance_tables(results.dataset, comparisons)
    return Report(_header_line(results), report_notes(comparisons), tables)


# -- renderers -----------------------------------------------------------------------------------
def _flat_columns(table: Table) -> list[str]:
    names = []
    spans = [label for label, span in table.groups for _ in range(span)] or [""] * len(table.columns)
    for group, col in zip(spans, table.columns):
        names.append(f"{group} {col}".strip())
    return names


def to_markdown(results: AuditResults, metrics: Sequence[str], significance: bool = True,
                notes: bool = True) -> str:
    """The report in markdown: the notes once, as a list (unless ``notes`` is False, e.g. for the
    second of several reports on one page), then one section per table."""
    report = build_report(results, metrics, significance)
    shown = report.notes if notes else []
    lines = [f"# Robustness report: {report.header}"] + ([""] if shown else []) + [f"- {note}" for note in shown]
    for table in report.tables:
        cols = _flat_columns(table)
        align = ["---" if kind == TEXT else "---:" for kind in column_kinds(table)]
        lines += ["", f"## {table.title}", "", "| " + " | ".join(cols) + " |", "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(s.replace("|", "\\|") for s in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def to_latex(results: AuditResults, metrics: Sequence[str], significance: bool = True) -> str:
    """The report's tables as LaTeX ``table`` floats (:mod:`reports.latex`); the notes as comments."""
    report = build_report(results, metrics, significance)
    return latex_document([f"Robustness report: {report.header}", *report.notes], report.tables)


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
    """One comparison: raw p-values, Holm-corrected ones (``*_holm``) over its ``family``, verdict."""
    return {"model": c.model, "baseline": c.baseline, "other": c.other, "suite": c.suite.suite,
            "severity_name": c.suite.severity_name, "noise_scale": c.suite.noise_scale, "severity": c.severity,
            "metric": c.metric, "level": c.level, "seeds": list(c.seeds), "n": c.test.n,
            "mean_diff": _num(c.test.mean_diff), "t_pvalue": _num(c.test.t_pvalue),
            "wilcoxon_pvalue": _num(c.test.wilcoxon_pvalue), "t_pvalue_holm": _num(c.corrected.t_pvalue),
            "wilcoxon_pvalue_holm": _num(c.corrected.wilcoxon_pvalue),
            "family": f"{c.model} / {c.suite.title} / {c.level}", "family_size": c.family_size,
            "verdict": c.verdict()}


def to_dict(results: AuditResults, metrics: Sequence[str], significance: bool = True) -> dict[str, Any]:
    """The machine-readable report (the ``--format json`` document)."""
    comparisons = _comparisons(results, metrics, significance)
    return {
        "schema": REPORT_SCHEMA, "dataset": results.dataset, "dataset_fingerprint": results.fingerprint,
        "split": results.split, "metrics": list(metrics), "notes": report_notes(comparisons),
        "cells": [cell_dict(results, c) for m in metrics for c in results.cells(m)],
        "significance": [comparison_dict(c) for c in comparisons],
    }


def to_json(results: AuditResults, metrics: Sequence[str], significance: bool = True) -> str:
    return json.dumps(to_dict(results, metrics, significance), indent=2, allow_nan=False) + "\n"


def resolve_metrics(results: AuditResults, fmt: str, metrics: Sequence[str] | None) -> list[str]:
    """The metrics to report: as asked; by default every metric for csv/json, :data:`DEFAULT_METRIC`
    (recall@20) otherwise."""
    if not metrics:
        metrics = list(results.metrics) if fmt in ("csv", "json") else [DEFAULT_METRIC]
    return list(dict.fromkeys(results.require_metric(m) for m in metrics))


def render(results: AuditResults, fmt: str = "markdown", metrics: Sequence[str] | None = None,
           significance: bool = True, notes: bool = True) -> str:
    """The report in ``fmt`` (one of :data:`FORMATS`); ``notes=False`` leaves out the markdown notes
    that explain Decr., ± and the tests (say them once on a page that holds several reports)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    chosen = resolve_metrics(results, fmt, metrics)
    if fmt == "markdown":
        return to_markdown(results, chosen, significance, notes)
    if fmt == "latex":
        return to_latex(results, chosen, significance)
    if fmt == "csv":
        return to_csv(results, chosen)
    return to_json(results, chosen, significance)
