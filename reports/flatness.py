"""Flatness next to robustness: diagnoses joined to audit results, with Spearman rank correlations.

``robustrec diagnose`` measures each run's training loss around its selected weights
(:class:`robustrec.records.Diagnosis`); an audit measures how much the run's metric drops under a
perturbation (:mod:`reports.drops`). This module sets the two side by side:

- the join: a diagnosis belongs to the audited run with the same dataset fingerprint and config hash
  (the hash of everything that made the weights, the seed included); run names and paths are never
  used, and what did not match is counted and named;
- one row per matched run: its measures (loss, gradient norm, top Hessian eigenvalue, Hessian trace ±
  its standard error, sharpness) and its relative drop Decr. of the metric at every (suite, severity);
- per model (and over all models pooled, when there are several), for every measure and every
  (suite, severity): Spearman's rank correlation ρ over the runs, with its p-value and n. With few
  runs the usual t approximation of the p-value is poor, so for n <= :data:`EXACT_MAX` the p-value
  is exact (every pairing of the ranks enumerated); above, it is scipy's t approximation. Each
  model's p-values are also Holm-corrected together (:func:`reports.stats.holm`), as the
  significance tables of a report are.

::

    from reports import load_results
    from reports.flatness import build_flatness, plot_flatness, render_flatness
    from robustrec.records import load_diagnoses

    results, diagnoses = load_results("audits/noise"), load_diagnoses("diag")
    print(render_flatness(results, diagnoses, "markdown"))
    plot_flatness(build_flatness(results, diagnoses, "recall@20"), "flatness.png")

Like every report this reads records only, never torch or a model. The landscape plots of the
diagnoses themselves live in :mod:`reports.landscape` and are re-exported here.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustrec.errors import ConfigError, DataError
from robustrec.io import atomic_path
from robustrec.metrics import DEFAULT_METRIC
from robustrec.records import Diagnosis

from .drops import AuditResults, SuiteKey, format_severity, row_label, strategy_display, strategy_order
from .landscape import plot_interpolation, plot_landscapes, plot_surface, strategy_colors
from .latex import TEXT, Tex, column_kinds, latex_document, latex_escape, pm_tex, severity_tex
from .plots import (
    MARKERS,
    METADATA,
    PANEL_SIZE,
    _fit_texts,
    log_axis,
    metric_label,
    paper_style,
    plot_format,
    severity_text,
    suite_title,
)
from .stats import format_p, holm
from .tables import (
    FORMATS,
    Table,
    _flat_columns,
    _suite_slug,
    _suite_tex,
    drop_cell,
    render,
    resolve_metrics,
    to_dict,
)

__all__ = [
    "ALL_MODELS",
    "EXACT_MAX",
    "FLATNESS_SCHEMA",
    "Correlation",
    "DropColumn",
    "Flatness",
    "FlatnessRow",
    "Join",
    "build_flatness",
    "flatness_csv",
    "flatness_dict",
    "flatness_latex",
    "flatness_markdown",
    "flatness_tables",
    "plot_flatness",
    "plot_interpolation",
    "plot_landscapes",
    "plot_surface",
    "render_flatness",
    "render_with_flatness",
    "spearman",
]

FLATNESS_SCHEMA = "robustrec.flatness/1"
#: Up to this many runs the p-value of ρ is exact (n! pairings: 40320 for 8).
EXACT_MAX = 8
#: The model name of the pooled correlations (every model's runs together).
ALL_MODELS = "all"
#: Known measures in the order shown; others follow by name. A ``<name>_stderr`` measure is shown as
#: the ± of ``<name>``, never on its own.
MEASURE_ORDER = ("loss", "grad_norm", "top_eigenvalue", "hessian_trace", "sharpness")
STDERR = "_stderr"
MEASURE_NAMES = {
    "loss": Tex("loss", r"$L$"),
    "grad_norm": Tex("grad norm", r"$\lVert \nabla L \rVert$"),
    "top_eigenvalue": Tex("top eigenvalue", r"$\lambda_{\max}$"),
    "hessian_trace": Tex("Hessian trace", r"$\operatorname{tr} H$"),
    "sharpness": Tex("sharpness", r"sharpness"),
}
#: Settings that differ between runs of a model by design (not a sign of unlike measurements).
OWN_SETTINGS = ("parameters", "hvp", "other_label")
MEASURE_NOTE = (
    "Flatness is measured at each run's selected weights on its own training loss (robustrec diagnose): "
    "grad norm = norm of the gradient, top eigenvalue = largest Hessian eigenvalue (Lanczos), Hessian "
    "trace ± its standard error (Hutchinson), sharpness = largest loss increase within a rho-ball (SAM). "
    "Larger means sharper."
)
SPEARMAN_NOTE = (
    "ρ = Spearman rank correlation over the runs of a model (all models: every run pooled) between a "
    "measure and Decr.; ρ > 0 means the sharper runs drop more. p is two-sided: exact (every pairing "
    f"of ranks) for n <= {EXACT_MAX} runs, the t approximation above; p, Holm = corrected within the "
    "model's table. n < 3, or a measure or Decr. equal for every run, gives no ρ (n/a)."
)


@dataclass(frozen=True, order=True)
class DropColumn:
    """One (suite, severity) of the audit: a column of relative drops."""

    suite: SuiteKey
    severity: float

    @property
    def title(self) -> str:
        """``"noise (sigma2), sigma2 = 1e-06"``."""
        return f"{self.suite.title}, {self.suite.severity_name or 'severity'} = {format_severity(self.severity)}"

    @property
    def slug(self) -> str:
        """``"noise sigma2 1e-06"``: a CSV column's name after ``drop``."""
        return f"{_suite_slug(self.suite)} {format_severity(self.severity)}"

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite.suite, "severity_name": self.suite.severity_name,
                "noise_scale": self.suite.noise_scale, "severity": self.severity}


@dataclass(frozen=True)
class FlatnessRow:
    """One audited run with its diagnosis: the measures and the drop at each column (NaN where the
    run was not audited at that column, or the drop is undefined)."""

    model: str
    strategy: str
    label: str
    run: str
    run_seed: int
    config_hash: str
    diagnosis: Diagnosis
    drops: tuple[float, ...]

    def measure(self, name: str) -> float:
        value = self.diagnosis.measures.get(name)
        return math.nan if value is None else float(value)


@dataclass(frozen=True)
class Correlation:
    """Spearman's ρ between one measure and the drops at one column, over one model's runs (or all).

    ``method`` is ``"exact"``, ``"t-approximation"``, or ``""`` when there was nothing to test (n < 3 or
    a constant sample: ρ and p are NaN)."""

    model: str
    measure: str
    column: DropColumn
    n: int
    rho: float
    pvalue: float
    pvalue_holm: float = math.nan
    method: str = ""


@dataclass(frozen=True)
class Join:
    """How the diagnoses met the audited runs (on dataset fingerprint and config hash)."""

    diagnoses: int
    matched: int
    audited: int
    no_audit: tuple[str, ...]
    other_dataset: tuple[str, ...]
    undiagnosed: tuple[str, ...]
    interpolations: int

    def text(self) -> str:
        """One sentence for the report's notes."""
        parts = [f"Diagnoses joined to audited runs on (dataset fingerprint, config hash): {self.matched} of "
                 f"{self.diagnoses} run diagnoses matched {self.matched} of {self.audited} audited runs"]
        if self.no_audit:
            parts.append(f"{len(self.no_audit)} matched no audited run ({_names(self.no_audit)})")
        if self.other_dataset:
            parts.append(f"{_count(self.other_dataset, 'is', 'are')} of another dataset ({_names(self.other_dataset)})")
        if self.undiagnosed:
            parts.append(f"{_count(self.undiagnosed, 'audited run has', 'audited runs have')} no diagnosis "
                         f"({_names(self.undiagnosed)})")
        if self.interpolations:
            parts.append(f"{self.interpolations} interpolation record{'s are' if self.interpolations > 1 else ' is'} "
                         "not part of these tables")
        return "; ".join(parts) + "."

    def to_json(self) -> dict[str, Any]:
        return {"diagnoses": self.diagnoses, "matched": self.matched, "audited_runs": self.audited,
                "no_audit": list(self.no_audit), "other_dataset": list(self.other_dataset),
                "undiagnosed": list(self.undiagnosed), "interpolations": self.interpolations}


@dataclass(frozen=True)
class Flatness:
    """The joined table of one metric (see the module docstring); build it with :func:`build_flatness`."""

    dataset: str
    fingerprint: str
    metric: str
    measures: tuple[str, ...]
    columns: tuple[DropColumn, ...]
    rows: tuple[FlatnessRow, ...]
    correlations: tuple[Correlation, ...]
    join: Join
    #: per model, the settings its runs' diagnoses were not measured alike in (seed, rho, ...)
    differing_settings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    strategies: tuple[str, ...] = ()

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.rows))

    def correlation(self, model: str, measure: str, column: DropColumn) -> Correlation | None:
        return next((c for c in self.correlations if (c.model, c.measure, c.column) == (model, measure, column)), None)


# -- statistics ----------------------------------------------------------------------------------
def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, str]:
    """(ρ, two-sided p, method) of two paired samples; ``(nan, nan, "")`` for n < 3 or a constant sample.

    The p-value is exact for n <= :data:`EXACT_MAX`: the share of the n! pairings of the ranks (ties
    as mid-ranks) whose |ρ| is at least the observed one. Above, scipy's t approximation.
    """
    from scipy import stats

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples differ in shape ({a.shape} vs {b.shape})")
    n = a.size
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, math.nan, ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.spearmanr(a, b)
    rho = float(result.statistic)
    if n > EXACT_MAX:
        return rho, float(result.pvalue), "t-approximation"
    ra = stats.rankdata(a) - (n + 1) / 2
    rb = stats.rankdata(b) - (n + 1) / 2
    rhos = rb[_pairings(n)] @ ra / (np.linalg.norm(ra) * np.linalg.norm(rb))
    return rho, float(np.mean(np.abs(rhos) >= abs(rho) - 1e-9)), "exact"


@functools.lru_cache(maxsize=EXACT_MAX)
def _pairings(n: int) -> np.ndarray:
    """Every permutation of ``range(n)``, one per row (n! x n)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp)


# -- the join ------------------------------------------------------------------------------------
def build_flatness(results: AuditResults, diagnoses: Sequence[Diagnosis], metric: str = DEFAULT_METRIC) -> Flatness:
    """Join ``diagnoses`` to the audited runs of ``results`` and correlate them with the drops of
    ``metric``. DataError when no diagnosis matches an audited run, or a match is ambiguous."""
    metric = results.require_metric(metric)
    columns = tuple(DropColumn(suite, severity) for suite in results.suites for severity in results.severities(suite))
    audited, drops = _audited_runs(results, metric, columns)
    singles = [d for d in diagnoses if d.kind == "run"]
    by_hash: dict[str, Diagnosis] = {}
    no_audit, other_dataset = [], []
    for d in singles:
        if d.dataset_fingerprint != results.fingerprint:
            other_dataset.append(d.run)
            continue
        if d.config_hash not in audited:
            no_audit.append(d.run)
            continue
        if d.config_hash in by_hash:
            raise DataError(f"two diagnoses of the run with config hash {d.config_hash} "
                            f"({by_hash[d.config_hash].run!r} and {d.run!r}); give one diagnosis per run")
        identities = audited[d.config_hash]
        if len(identities) > 1:
            raise DataError(f"the diagnosis of {d.run!r} matches several audited runs with config hash "
                            f"{d.config_hash}: {_names(list(identities.values()))}")
        by_hash[d.config_hash] = d
    if not by_hash:
        fingerprints = sorted({d.dataset_fingerprint for d in singles})
        raise DataError(f"none of the {len(singles)} run diagnoses matches an audited run (joined on dataset "
                        f"fingerprint and config hash; the audits are of {results.dataset!r}, fingerprint "
                        f"{results.fingerprint}; the diagnoses of fingerprint {', '.join(fingerprints) or 'none'})")
    rows = []
    for config_hash, identities in audited.items():
        if config_hash in by_hash:
            ((model, strategy, seed), run), = identities.items()
            rows.append(FlatnessRow(model, strategy, results.label(model, strategy), run, seed, config_hash,
                                    by_hash[config_hash], drops[config_hash]))
    models = [m for m, _ in results.rows()]
    rows.sort(key=lambda r: (models.index(r.model), strategy_order(r.strategy), r.run_seed))
    measures = _measures(rows)
    join = Join(len(singles), len(rows), sum(map(len, audited.values())), tuple(no_audit), tuple(other_dataset),
                tuple(run for h, ids in audited.items() if h not in by_hash for run in ids.values()),
                len(diagnoses) - len(singles))
    return Flatness(results.dataset, results.fingerprint, metric, measures, columns, tuple(rows),
                    _correlations(rows, measures, columns), join, _differing_settings(rows),
                    tuple(dict.fromkeys(s for _, s in results.rows())))


def _audited_runs(results: AuditResults, metric: str, columns: Sequence[DropColumn],
                  ) -> tuple[dict[str, dict[tuple[str, str, int], str]], dict[str, tuple[float, ...]]]:
    """Per config hash: the audited runs that have it ((model, strategy, seed) -> run name; one, unless
    records were made up), and their drops at each column."""
    index = {c: i for i, c in enumerate(columns)}
    audited: dict[str, dict[tuple[str, str, int], str]] = {}
    drops: dict[str, list[float]] = {}
    for key in results.keys:
        cell = results.cell(key, metric)
        for audit, seed in zip(results.audits[key], cell.seeds):
            config_hash = audit.clean[1].config_hash
            audited.setdefault(config_hash, {}).setdefault((key.model, key.strategy, audit.run_seed), audit.run)
            column = index[DropColumn(key.suite_key, key.severity)]
            drops.setdefault(config_hash, [math.nan] * len(columns))[column] = seed.drop
    ordered = sorted(audited.items(), key=lambda item: sorted(item[1].items()))
    return dict(ordered), {h: tuple(v) for h, v in drops.items()}


def _measures(rows: Sequence[FlatnessRow]) -> tuple[str, ...]:
    names = {name for r in rows for name, v in r.diagnosis.measures.items()
             if v is not None and not name.endswith(STDERR)}
    known = [m for m in MEASURE_ORDER if m in names]
    return tuple(known + sorted(names - set(known)))


def _correlations(rows: Sequence[FlatnessRow], measures: Sequence[str], columns: Sequence[DropColumn],
                  ) -> tuple[Correlation, ...]:
    groups: dict[str, list[FlatnessRow]] = {}
    for r in rows:
        groups.setdefault(r.model, []).append(r)
    if len(groups) > 1:
        groups[ALL_MODELS] = list(rows)
    out: list[Correlation] = []
    for model, members in groups.items():
        family = []
        for measure in measures:
            for i, column in enumerate(columns):
                pairs = [(r.measure(measure), r.drops[i]) for r in members]
                pairs = [(m, d) for m, d in pairs if math.isfinite(m) and math.isfinite(d)]
                rho, p, method = spearman([m for m, _ in pairs], [d for _, d in pairs])
                family.append(Correlation(model, measure, column, len(pairs), rho, p, method=method))
        corrected = holm([c.pvalue for c in family])
        out += [Correlation(c.model, c.measure, c.column, c.n, c.rho, c.pvalue, p, c.method)
                for c, p in zip(family, corrected)]
    return tuple(out)


def _differing_settings(rows: Sequence[FlatnessRow]) -> dict[str, tuple[str, ...]]:
    out = {}
    for model in dict.fromkeys(r.model for r in rows):
        settings = [r.diagnosis.settings for r in rows if r.model == model]
        names = sorted({k for s in settings for k in s} - set(OWN_SETTINGS))
        differing = tuple(k for k in names if len({json.dumps(s.get(k), sort_keys=True) for s in settings}) > 1)
        if differing:
            out[model] = differing
    return out


def _count(items: Sequence[Any], one: str, many: str) -> str:
    return f"{len(items)} {one if len(items) == 1 else many}"


def _names(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# -- tables --------------------------------------------------------------------------------------
def _number(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.4g}"


def _measure_title(name: str) -> str:
    return MEASURE_NAMES.get(name) or Tex(name, latex_escape(name))


def _measure_cell(row: FlatnessRow, name: str) -> str:
    value = row.measure(name)
    if math.isnan(value):
        return "-"
    stderr = row.measure(name + STDERR)
    if math.isnan(stderr):
        return _number(value)
    return Tex(f"{value:.4g} ± {stderr:.2g}", pm_tex(f"{value:.4g}", f"{stderr:.2g}"), span=2)


def _column_title(column: DropColumn) -> str:
    return Tex(column.title, f"{_suite_tex(column.suite)}, {severity_tex(column.suite.severity_name, column.severity)}")


def flatness_tables(flat: Flatness) -> list[Table]:
    """The table of runs (measures, then Decr. per suite and severity) and one table of correlations
    per model (and all models pooled)."""
    suites = list(dict.fromkeys(c.suite for c in flat.columns))
    title = f"Flatness and Decr. per run: {flat.dataset}, {flat.metric}"
    caption = (f"Flatness at each run's selected weights and relative drop Decr.\\ of {latex_escape(flat.metric)} "
               f"on {latex_escape(flat.dataset)}.")
    runs = Table(title, [("", 2 + len(flat.measures))]
                 + [(Tex(f"Decr. {s.title}", rf"Decr.\ (\%), {_suite_tex(s)}"),
                     sum(c.suite == s for c in flat.columns)) for s in suites],
                 ["Model", "Seed", *map(_measure_title, flat.measures)]
                 + [Tex(format_severity(c.severity), severity_tex(c.suite.severity_name, c.severity))
                    for c in flat.columns],
                 caption=Tex(title, caption), key=("flatness", flat.dataset, flat.metric))
    for r in flat.rows:
        runs.rows.append([r.label, str(r.run_seed), *(_measure_cell(r, m) for m in flat.measures),
                          *(drop_cell(d) for d in r.drops)])
    tables = [runs]
    for model in dict.fromkeys(c.model for c in flat.correlations):
        shown = "all models" if model == ALL_MODELS else row_label(model, "plain")
        title = f"Spearman ρ of flatness and Decr.: {shown}, {flat.dataset}, {flat.metric}"
        caption = (rf"Spearman rank correlation $\rho$ over the runs of {latex_escape(shown)} between each flatness "
                   f"measure and Decr.\\ of {latex_escape(flat.metric)} on {latex_escape(flat.dataset)}; two-sided "
                   f"$p$ (exact for $n \\le {EXACT_MAX}$), raw and Holm-corrected within this table.")
        table = Table(title, [], ["Measure", "Decr. under", Tex("ρ", r"$\rho$"), "p", "p, Holm", "n"],
                      caption=Tex(title, caption), key=("flatness", flat.dataset, flat.metric, model))
        for c in flat.correlations:
            if c.model == model:
                rho = "n/a" if math.isnan(c.rho) else f"{c.rho:+.2f}"
                table.rows.append([_measure_title(c.measure), _column_title(c.column), rho, format_p(c.pvalue),
                                   format_p(c.pvalue_holm), str(c.n)])
        tables.append(table)
    return tables


def flatness_notes(flat: Flatness) -> list[str]:
    """What the flatness tables mean, with how the join went and any settings that differ."""
    notes = [flat.join.text(), MEASURE_NOTE, SPEARMAN_NOTE]
    for model, names in flat.differing_settings.items():
        notes.append(f"The diagnoses of {row_label(model, 'plain')} were not all measured alike (they differ in "
                     f"{', '.join(names)}); compare their measures with care.")
    return notes


def _markdown_table(table: Table) -> list[str]:
    align = ["---" if kind == TEXT else "---:" for kind in column_kinds(table)]
    lines = ["", f"## {table.title}", "", "| " + " | ".join(_flat_columns(table)) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(s.replace("|", "\\|") for s in row) + " |" for row in table.rows]


def flatness_markdown(flats: Flatness | Sequence[Flatness], notes: bool = True) -> str:
    """The flatness tables of one or more metrics in markdown, after a heading and the notes (once)."""
    flats = [flats] if isinstance(flats, Flatness) else list(flats)
    first = flats[0]
    lines = [f"# Flatness and robustness: dataset {first.dataset} (fingerprint {first.fingerprint})"]
    if notes:
        lines += [""] + [f"- {note}" for note in flatness_notes(first)]
    for flat in flats:
        for table in flatness_tables(flat):
            lines += _markdown_table(table)
    return "\n".join(lines) + "\n"


def flatness_latex(flats: Flatness | Sequence[Flatness]) -> str:
    """The flatness tables as LaTeX ``table`` floats (the notes as comments)."""
    flats = [flats] if isinstance(flats, Flatness) else list(flats)
    return latex_document([f"Flatness and robustness: {flats[0].dataset}", *flatness_notes(flats[0])],
                          [t for flat in flats for t in flatness_tables(flat)])


def _json_number(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def flatness_dict(flat: Flatness) -> dict[str, Any]:
    """One metric's flatness as plain JSON types (NaN as None); drops are fractions, as in the report JSON."""
    return {
        "schema": FLATNESS_SCHEMA, "dataset": flat.dataset, "dataset_fingerprint": flat.fingerprint,
        "metric": flat.metric, "join": flat.join.to_json(), "measures": list(flat.measures),
        "drops": [c.to_json() for c in flat.columns], "notes": flatness_notes(flat),
        "runs": [{"model": r.model, "strategy": r.strategy, "strategy_label": r.diagnosis.strategy_label,
                  "row": r.label, "run": r.run, "run_seed": r.run_seed, "config_hash": r.config_hash,
                  "diagnosis_run": r.diagnosis.run, "measures": dict(r.diagnosis.measures),
                  "eigenvalues": list(r.diagnosis.eigenvalues), "drops": [_json_number(d) for d in r.drops]}
                 for r in flat.rows],
        "correlations": [{"model": c.model, **c.column.to_json(), "measure": c.measure, "n": c.n,
                          "rho": _json_number(c.rho), "pvalue": _json_number(c.pvalue),
                          "pvalue_holm": _json_number(c.pvalue_holm), "method": c.method}
                         for c in flat.correlations],
        "differing_settings": {m: list(names) for m, names in flat.differing_settings.items()},
    }


def flatness_csv(flats: Flatness | Sequence[Flatness]) -> str:
    """One row per (run, metric): identity, every measure (``*_stderr`` included) and ``drop <suite>
    <severity>`` columns (fractions; empty where undefined). The correlations are in the other formats."""
    flats = [flats] if isinstance(flats, Flatness) else list(flats)
    measures = list(dict.fromkeys(name for f in flats for m in f.measures for name in (m, m + STDERR)
                                  if name == m or any(name in r.diagnosis.measures for r in f.rows)))
    columns = list(dict.fromkeys(c for f in flats for c in f.columns))
    head = ["dataset", "metric", "model", "strategy", "strategy_label", "run", "run_seed", "config_hash",
            *measures, *(f"drop {c.slug}" for c in columns)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head)
    for f in flats:
        for r in f.rows:
            drops = dict(zip(f.columns, r.drops))
            values = [r.measure(m) for m in measures] + [drops.get(c, math.nan) for c in columns]
            writer.writerow([f.dataset, f.metric, r.model, r.strategy, r.diagnosis.strategy_label, r.run, r.run_seed,
                             r.config_hash, *("" if math.isnan(v) else repr(float(v)) for v in values)])
    return buffer.getvalue()


# -- rendering with the drops ---------------------------------------------------------------------
def render_flatness(results: AuditResults, diagnoses: Sequence[Diagnosis], fmt: str = "markdown",
                    metrics: Sequence[str] | None = None, notes: bool = True) -> str:
    """The flatness tables alone in ``fmt`` (markdown, latex, csv or json), one set per metric
    (default as :func:`reports.tables.render`: recall@20, every metric for csv and json)."""
    flats = _build_all(results, diagnoses, fmt, metrics)
    if fmt == "json":
        return json.dumps({"schema": FLATNESS_SCHEMA, "flatness": [flatness_dict(f) for f in flats]},
                          indent=2, allow_nan=False) + "\n"
    return _render(flats, fmt, notes)


def render_with_flatness(results: AuditResults, diagnoses: Sequence[Diagnosis], fmt: str = "markdown",
                         metrics: Sequence[str] | None = None, significance: bool = True) -> str:
    """The report of ``robustrec report --flatness``: the drops report with the flatness tables after
    it (markdown, latex); for json the report's document with a ``flatness`` list added; for csv the
    flatness rows alone (the drops' CSV has other columns: ``report`` without ``--flatness`` gives it)."""
    flats = _build_all(results, diagnoses, fmt, metrics)  # every check before any rendering
    chosen = [f.metric for f in flats]
    if fmt == "json":
        document = to_dict(results, chosen, significance)
        document["flatness"] = [flatness_dict(f) for f in flats]
        return json.dumps(document, indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return flatness_csv(flats)
    return render(results, fmt, chosen, significance) + "\n" + _render(flats, fmt, True)


def _build_all(results: AuditResults, diagnoses: Sequence[Diagnosis], fmt: str,
               metrics: Sequence[str] | None) -> list[Flatness]:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    return [build_flatness(results, diagnoses, m) for m in resolve_metrics(results, fmt, metrics)]


def _render(flats: Sequence[Flatness], fmt: str, notes: bool) -> str:
    if fmt == "markdown":
        return flatness_markdown(flats, notes)
    if fmt == "latex":
        return flatness_latex(flats)
    return flatness_csv(flats)


# -- the scatter plot ----------------------------------------------------------------------------
def plot_flatness(flat: Flatness, path: str | Path, *, measures: Sequence[str] | None = None,
                  columns: Sequence[DropColumn] | None = None, title: str | None = None) -> Path:
    """Scatter each measure (a column of panels) against Decr. (a row per drop column; by default
    each suite at its largest severity) and write the figure to ``path`` (.png, .svg, .pdf, checked
    first). Colour: the strategy; marker: the model; each panel says ρ and n per model."""
    path = Path(path)
    fmt = plot_format(path)
    fig = flatness_figure(flat, measures=measures, columns=columns, title=title)
    with paper_style(), atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, metadata=METADATA[fmt])
    return path


def flatness_figure(flat: Flatness, *, measures: Sequence[str] | None = None,
                    columns: Sequence[DropColumn] | None = None, title: str | None = None) -> Any:
    """The laid-out matplotlib Figure of :func:`plot_flatness` (standalone, not registered with pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    measures = list(measures or flat.measures)
    unknown = [m for m in measures if m not in flat.measures]
    if unknown or not measures:
        raise ConfigError(f"no measure {unknown[0] if unknown else ''!r} in the diagnoses; they hold "
                          f"{', '.join(flat.measures) or 'none'}")
    if columns is None:
        columns = [max((c for c in flat.columns if c.suite == s), key=lambda c: c.severity)
                   for s in dict.fromkeys(c.suite for c in flat.columns)]
    columns = list(columns)
    missing = [c for c in columns if c not in flat.columns]
    if missing or not columns:
        raise ConfigError(f"no drop column {missing[0].title if missing else ''!r} in the audit results")
    colors = strategy_colors(flat.strategies or [r.strategy for r in flat.rows])
    models = flat.models
    with paper_style():
        fig = Figure(figsize=(PANEL_SIZE[0] * len(measures), PANEL_SIZE[1] * len(columns)), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(columns), len(measures), squeeze=False)
        entries: dict[str, Any] = {}
        for row_axes, column in zip(axes, columns):
            i = flat.columns.index(column)
            for ax, measure in zip(row_axes, measures):
                xs = []
                for r in flat.rows:
                    x, y = r.measure(measure), r.drops[i]
                    if math.isfinite(x) and math.isfinite(y):
                        xs.append(x)
                        ax.plot([x], [100 * y], linestyle="none", marker=MARKERS[models.index(r.model) % len(MARKERS)],
                                color=colors.get(r.strategy, "#808080"), markeredgecolor="black",
                                markeredgewidth=0.3, markersize=5, zorder=3)
                if log_axis(xs):
                    ax.set_xscale("log")
                ax.set(xlabel=str(_measure_title(measure)),
                       ylabel=f"Decr. (%), {suite_title(column.suite)}\n{severity_text(column.suite, column.severity)}")
        for strategy in sorted({r.strategy for r in flat.rows}, key=strategy_order):
            label = next(r.diagnosis.strategy_label for r in flat.rows if r.strategy == strategy)
            label = strategy_display(strategy, label)
            entries[label] = Line2D([], [], linestyle="none", marker="o", color=colors.get(strategy, "#808080"))
        if len(models) > 1:
            for n, model in enumerate(models):
                entries[row_label(model, "plain")] = Line2D([], [], linestyle="none", marker=MARKERS[n % len(MARKERS)],
                                                           color="0.5")
        if title is None:
            title = f"{flat.dataset}: flatness and relative drop of {metric_label(flat.metric)}"
        shown = fig.suptitle(title) if title else None
        _fit_texts(fig, shown, entries)
        for row_axes, column in zip(axes, columns):  # after the fitting, which would wrap them into one line
            for ax, measure in zip(row_axes, measures):
                ax.set_title(_rho_text(flat, measure, column), fontsize=6.5, color="0.25")
    return fig


def _rho_text(flat: Flatness, measure: str, column: DropColumn) -> str:
    lines = []
    for model in [*flat.models, ALL_MODELS] if len(flat.models) > 1 else flat.models:
        c = flat.correlation(model, measure, column)
        if c is not None:
            name = "all" if model == ALL_MODELS else row_label(model, "plain")
            rho = "n/a" if math.isnan(c.rho) else f"{c.rho:+.2f}"
            lines.append(f"{name}: ρ = {rho}, n = {c.n}")
    return "\n".join(lines)
