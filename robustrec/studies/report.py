"""The study report: one document from a study folder's records and logs alone.

It reads only the study folder ``DIR`` (see :mod:`robustrec.studies.plan` for its layout):
``study.json`` (the study's name and dataset), ``selection.json`` (every grid point's validation
value and the point chosen per run entry and seed), the chosen runs' ``run.json``, ``metrics.json``
and ``log.jsonl``, and the audit records under ``DIR/audits/``. Nothing is trained or evaluated, and
any missing or malformed file is a one-line :class:`~robustrec.errors.DataError` naming it.

The report holds, in this order:

1. **Clean test metrics of the selected runs**: one row per run entry (model, strategy or label),
   recall, NDCG and precision at 5 and at the selection metric's cut-off, mean ± std over seeds, the
   best mean of each column in bold (as the paper's Table 3), and the number of seeds.
2. **The selection surface** of every entry with a grid: each point's validation value (mean ± std
   over seeds) and how many seeds chose it; a heatmap (2-D grid) or a line (1-D) in the plots.
3. **Training curves**: loss and validation metric per epoch of the chosen runs, mean ± std over
   seeds, one line per entry (the paper's Fig. 4).
4. **The audits**: per ``DIR/audits/<suite>-<digest>/``, the drop tables and significance tests of
   :mod:`reports.tables` with a drop plot. What Decr., ± and the tests mean is said once for all.

Only the records of runs that ``selection.json`` chose are reported. A records file that exists is
never redone, so after a spec change selects another grid point, the old point's records stay in the
audit folder; mixing them in would give a seed two runs, so they are left out and the report says how
many.

Formats: ``markdown`` (``write_study_report`` adds the plots), ``latex`` (booktabs ``table`` floats
with labels unique across the whole document), ``csv`` (one tidy table: a ``section`` column says
clean, selection or audit) and ``json`` (the clean table, the selection as read, the surfaces and each
audit's :func:`reports.tables.to_dict`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from reports.drops import AuditResults, row_label, sample_std
from reports.latex import TEXT, Tex, column_kinds, latex_document, latex_escape
from reports.plots import metric_label, plot_drops
from reports.study import Curve, GridSurface, SurfacePoint, plot_curves, plot_grid, tick_text
from reports.tables import (
    FORMATS,
    Report,
    Table,
    _flat_columns,
    build_report,
    cell_dict,
    resolve_metrics,
    to_dict,
    value_cell,
)
from robustrec.errors import ConfigError, DataError
from robustrec.io import read_json, read_jsonl, write_text
from robustrec.metrics import parse_metric
from robustrec.records import load_records
from robustrec.runs import LOG_FILE, RunResults, open_run
from robustrec.studies.plan import AUDITS_DIR
from robustrec.studies.runner import STUDY_FILE
from robustrec.studies.selection import SELECTION_FILE

__all__ = ["Study", "load_study", "study_report", "write_study_report"]

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
PLOT_TYPES = ("png", "svg", "pdf")
#: The clean table's metrics, in the paper's order, each at 5 and at the selection metric's cut-off.
CLEAN_METRICS = ("recall", "ndcg", "precision")
CLEAN_KS = (5,)
SCHEMA = "robustrec.study-report/1"
CLEAN_NOTE = ("Test metrics of the run chosen for each seed (the grid point with the best validation "
              "value), mean ± std over seeds; bold: the best mean of each column.")


# -- what selection.json holds ----------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One grid point of one group: its values, its run folder (relative to DIR) and validation value."""

    grid: dict[str, Any]
    run: str
    valid: float


@dataclass(frozen=True)
class Entry:
    """A run entry as the report shows it: one row of the clean table, one line of the curves."""

    model: str
    strategy: str
    label: str
    index: int | None = None  # the run entry's index in the spec, where selection.json gives it


@dataclass(frozen=True)
class Group:
    """The grid points of one (run entry, seed) and the index of the chosen one."""

    entry: Entry
    seed: int
    points: tuple[Point, ...]
    chosen: int

    @property
    def chosen_point(self) -> Point:
        return self.points[self.chosen]


@dataclass(frozen=True)
class Audit:
    """One audit folder: its records of the chosen runs (None when it has none) and how many other
    runs it holds records of (runs no longer selected)."""

    name: str
    results: AuditResults | None
    left_out: int


# -- reading and checking ----------------------------------------------------------------------------
def _malformed(path: Path, what: str) -> DataError:
    return DataError(f"{path}: malformed {path.name} ({what})")


def _read_object(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: no {what} ({path.name} is missing); is {path.parent} a study folder?")
    raw = read_json(path, what)
    if not isinstance(raw, dict):
        raise _malformed(path, "not a JSON object")
    return raw


def _field(raw: dict[str, Any], key: str, types: type | tuple[type, ...], path: Path, where: str) -> Any:
    """``raw[key]`` if it is one of ``types`` (never a bool: JSON's true is no number)."""
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, types):
        raise _malformed(path, f"{where}{key} is {str(value)[:40]!r}")
    return value


def _run_path(text: str, path: Path, where: str) -> str:
    """A run folder named relative to DIR, inside it: a selection file must not point elsewhere."""
    parts = PurePosixPath(text).parts
    if not parts or PurePosixPath(text).is_absolute() or ".." in parts or "\\" in text:
        raise _malformed(path, f"{where}run {text[:60]!r} is not a folder inside the study")
    return text


def _point(raw: Any, path: Path, where: str) -> Point:
    if not isinstance(raw, dict):
        raise _malformed(path, f"{where} is not an object")
    grid = _field(raw, "grid", dict, path, where)
    run = _run_path(_field(raw, "run", str, path, where), path, where)
    valid = _field(raw, "valid", (int, float), path, where)
    if not 0 <= valid <= 1:
        raise _malformed(path, f"{where}valid is {valid}, not a metric value in [0, 1]")
    return Point(dict(grid), run, float(valid))


def _group(raw: Any, path: Path, where: str) -> Group:
    if not isinstance(raw, dict):
        raise _malformed(path, f"{where} is not an object")
    model = _field(raw, "model", str, path, where)
    strategy = _field(raw, "strategy", str, path, where)
    label = raw.get("label") or ""
    if not isinstance(label, str):
        raise _malformed(path, f"{where}label is {str(label)[:40]!r}")
    seed = _field(raw, "seed", int, path, where)
    index = _field(raw, "entry", int, path, where) if "entry" in raw else None
    points = _field(raw, "points", list, path, where)
    if not points:
        raise _malformed(path, f"{where}points is empty")
    chosen = _field(raw, "chosen", int, path, where)
    if not 0 <= chosen < len(points):
        raise _malformed(path, f"{where}chosen is {chosen}, not an index of its {len(points)} points")
    # The runner may write the entry's default name (model-strategy) as its label: that is no label.
    label = "" if label == f"{model}-{strategy}" else label
    return Group(Entry(model, strategy, label, index), seed,
                 tuple(_point(p, path, f"{where}points[{i}].") for i, p in enumerate(points)), chosen)


def read_selection(folder: Path) -> tuple[str, list[Group], dict[str, Any]]:
    """The selection metric, the groups and the raw document of ``folder/selection.json``, checked."""
    path = folder / SELECTION_FILE
    raw = _read_object(path, "selection")
    select = _field(raw, "select", str, path, "")
    try:
        name, k = parse_metric(select)
    except ConfigError:
        raise _malformed(path, f"select is {select[:40]!r}, not a metric") from None
    groups = [_group(g, path, f"groups[{i}].") for i, g in enumerate(_field(raw, "groups", list, path, ""))]
    if not groups:
        raise _malformed(path, "groups is empty")
    seen: set[tuple[Entry, int]] = set()
    for g in groups:
        if (g.entry, g.seed) in seen:
            raise _malformed(path, f"two groups of {g.entry.model}/{g.entry.strategy} "
                             f"{g.entry.label or '(no label)'} have seed {g.seed} and no distinct entry index")
        seen.add((g.entry, g.seed))
    return f"{name}@{k}", groups, raw


def _study_identity(folder: Path) -> tuple[str, str, dict[str, Any]]:
    """The study's name and description and the dataset's identity, from ``study.json``."""
    path = folder / STUDY_FILE
    raw = _read_object(path, "study description")
    spec = raw.get("spec", raw)
    dataset = raw.get("dataset", {})
    if not isinstance(spec, dict) or not isinstance(dataset, dict):
        raise _malformed(path, "spec and dataset must be objects")
    name, description = spec.get("name", folder.name), spec.get("description") or ""
    if not isinstance(name, str) or not isinstance(description, str):
        raise _malformed(path, "the study's name and description must be text")
    return name, description, dataset


class Study:
    """A study folder read back: the groups, the chosen runs' results and logs, and the audits.

    Everything is read and checked when it is made (:func:`load_study`), so rendering never fails
    half-way through a file.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: no such study folder")
        self.name, self.description, self.dataset = _study_identity(self.folder)
        self.select, self.groups, self.selection = read_selection(self.folder)
        self.results: dict[str, RunResults] = {}
        self.labels: dict[Entry, str] = {}
        for group in self.groups:
            self._read_chosen(group)
        self._distinguish_labels()
        self.audits = self._read_audits()

    def _read_chosen(self, group: Group) -> None:
        run_dir = self.folder / group.chosen_point.run
        run = open_run(run_dir)  # a DataError naming the folder when it is not a run
        results = run.results()
        if results is None:
            raise DataError(f"{run_dir}: the chosen run has not finished training (no metrics.json); "
                            "rerun the study to finish it")
        self.results[group.chosen_point.run] = results
        entry, shown = group.entry, run.info.get("strategy_label")  # e.g. "MG", as the run named itself
        self.labels.setdefault(entry, entry.label or row_label(entry.model, entry.strategy,
                                                                 shown if isinstance(shown, str) else ""))

    def _distinguish_labels(self) -> None:
        """Two entries of one model and strategy without labels (other fixed parameters) would
        share a row name: number them as the spec does (``VBPR + MG [entry 3]``)."""
        titles = list(self.labels.values())
        for entry, title in self.labels.items():
            if titles.count(title) > 1 and entry.index is not None:
                self.labels[entry] = f"{title} [entry {entry.index + 1}]"

    def _read_audits(self) -> list[Audit]:
        root = self.folder / AUDITS_DIR
        if not root.is_dir():
            return []
        chosen = {_run_key(g.chosen_point.run) for g in self.groups}
        return [self._read_audit(d, chosen) for d in sorted(root.iterdir()) if d.is_dir()]

    @staticmethod
    def _read_audit(folder: Path, chosen: set[tuple[str, ...]]) -> Audit:
        if not any(folder.glob("*.jsonl")):
            return Audit(folder.name, None, 0)
        records = load_records(folder)
        kept = [(p, r) for p, r in records if _run_key(r.run) in chosen]
        left_out = len({r.run for _, r in records} - {r.run for _, r in kept})
        return Audit(folder.name, AuditResults(kept) if kept else None, left_out)

    # -- structure ---------------------------------------------------------------------------------
    @property
    def entries(self) -> list[Entry]:
        """The run entries in the order of selection.json (the spec's)."""
        return list(dict.fromkeys(g.entry for g in self.groups))

    def groups_of(self, entry: Entry) -> list[Group]:
        return [g for g in self.groups if g.entry == entry]

    @property
    def dataset_name(self) -> str:
        name = self.dataset.get("name")
        if isinstance(name, str) and name:
            return name
        found = [a.results.dataset for a in self.audits if a.results is not None]
        return found[0] if found else "dataset"

    # -- numbers ------------------------------------------------------------------------------------
    def require_measured(self, metric: str) -> None:
        """DataError unless every chosen run measured ``metric`` on the test split."""
        missing = [run for run, results in self.results.items() if metric not in results.test]
        if missing:
            measured = sorted(set.intersection(*(set(r.test) for r in self.results.values())))
            raise DataError(f"metric {metric} was not measured by {len(missing)} of the {len(self.results)} "
                            f"selected runs (e.g. {self.folder / missing[0]}); measured: {', '.join(measured)}")

    def clean_metrics(self, metric: str | None = None) -> list[str]:
        """Recall, NDCG and precision at 5 and at the selection metric's cut-off (and ``metric``'s),
        as far as every chosen run measured them."""
        ks = {*CLEAN_KS, parse_metric(self.select)[1]} | ({parse_metric(metric)[1]} if metric else set())
        measured = set.intersection(*(set(r.test) for r in self.results.values()))
        return [f"{m}@{k}" for m in CLEAN_METRICS for k in sorted(ks) if f"{m}@{k}" in measured]

    def test_values(self, entry: Entry, metric: str) -> list[tuple[int, float]]:
        """(seed, test value of the chosen run) of one entry, in seed order of selection.json."""
        return [(g.seed, self.results[g.chosen_point.run].test[metric]) for g in self.groups_of(entry)]

    def surfaces(self) -> list[GridSurface]:
        """The validation surface of every entry with a grid (points in spec order)."""
        surfaces = []
        for entry in self.entries:
            groups = self.groups_of(entry)
            names = tuple(dict.fromkeys(n for g in groups for p in g.points for n in p.grid))
            if not names:
                continue
            values: dict[str, list[float]] = {}
            chosen: dict[str, int] = {}
            grids: dict[str, dict[str, Any]] = {}
            for g in groups:
                for i, p in enumerate(g.points):
                    key = json.dumps(p.grid, sort_keys=True)
                    grids.setdefault(key, p.grid)
                    values.setdefault(key, []).append(p.valid)
                    chosen[key] = chosen.get(key, 0) + (i == g.chosen)
            points = tuple(SurfacePoint(grids[k], tuple(v), chosen[k]) for k, v in values.items())
            surfaces.append(GridSurface(self.labels[entry], names, points))
        return surfaces

    def curves(self, metric: str | None = None) -> list[Curve]:
        """Loss and validation ``metric`` (default: the selection metric) per epoch of every entry's
        chosen runs, read from their ``log.jsonl``; an entry that trained no epoch has no curve."""
        metric = metric or self.select
        curves = []
        for entry in self.entries:
            logs = [_read_log(self.folder / g.chosen_point.run / LOG_FILE, metric) for g in self.groups_of(entry)]
            if not any(loss for loss, _ in logs):
                continue
            curves.append(Curve(self.labels[entry], entry.model, entry.strategy,
                                tuple(loss for loss, _ in logs), tuple(valid for _, valid in logs)))
        return curves


def _run_key(run: str) -> tuple[str, ...]:
    """A run folder by its last two names (``<model>-<strategy>/<hash>-<fingerprint>``): records
    name runs by the path they were audited at, which is another one once DIR is moved."""
    return PurePosixPath(str(run).replace("\\", "/")).parts[-2:]


def _read_log(path: Path, metric: str) -> tuple[dict[int, float], dict[int, float]]:
    """epoch -> loss and epoch -> validation ``metric`` of one run's ``log.jsonl``, checked."""
    loss, valid = {}, {}
    for n, entry in enumerate(read_jsonl(path, "training log"), start=1):
        epoch = entry.get("epoch") if isinstance(entry, dict) else None
        value = entry.get("loss") if isinstance(entry, dict) else None
        if isinstance(epoch, bool) or not isinstance(epoch, int) or isinstance(value, bool) \
                or not isinstance(value, (int, float)):
            raise DataError(f"{path}:{n}: malformed training log line (no epoch and loss)")
        loss[epoch] = float(value)
        if "valid" in entry:
            measured = entry["valid"].get(metric) if isinstance(entry["valid"], dict) else None
            if isinstance(measured, bool) or not isinstance(measured, (int, float)):
                raise DataError(f"{path}:{n}: the validation metrics have no {metric}")
            valid[epoch] = float(measured)
    return loss, valid  # empty for a model that does not train (the popularity floor)


def load_study(folder: str | Path) -> Study:
    """Read and check a study folder (a DataError naming the first missing or malformed file)."""
    return Study(folder)


# -- tables -------------------------------------------------------------------------------------------
def _bold(cell: str) -> str:
    r"""A table cell marked as the best: ``**x**`` in markdown, ``{\boldmath ...}`` in LaTeX (each of
    the two tabular cells of a "mean ± std" value in bold math)."""
    tex = getattr(cell, "tex", None)
    if tex is None:
        return Tex(f"**{cell}**", rf"\textbf{{{latex_escape(cell)}}}")
    parts = [rf"{{\boldmath{part}}}" if part.strip() else part for part in tex.split(" & ")]
    return Tex(f"**{cell}**", " & ".join(parts), span=getattr(cell, "span", 1))


def _best(means: Sequence[float]) -> set[int]:
    """The rows holding the best mean of a column as shown (4 decimals), when there are rows to
    compare (a single row marks nothing)."""
    shown = [round(m, 4) for m in means]
    if len(shown) < 2:
        return set()
    top = max(shown)
    return {i for i, m in enumerate(shown) if m == top}


def _stats(values: Sequence[float]) -> tuple[float, float]:
    return float(np.mean(values)), sample_std(values)


def clean_table(study: Study, metrics: Sequence[str]) -> Table:
    """The test metrics of the selected runs, one row per entry (the paper's Table 3)."""
    title = f"Clean test metrics of the selected runs: {study.dataset_name}"
    caption = (f"Test metrics of the selected runs on {latex_escape(study.dataset_name)}, mean $\\pm$ std over "
               "seeds; bold: the best of each column.")
    table = Table(title, [], ["Model", *(metric_label(m) for m in metrics), "Seeds"],
                  caption=Tex(title, caption), key=(study.dataset_name, "clean"))
    columns = []
    for m in metrics:
        stats = [_stats([v for _, v in study.test_values(e, m)]) for e in study.entries]
        best = _best([mean for mean, _ in stats])
        columns.append([_bold(value_cell(*s)) if i in best else value_cell(*s) for i, s in enumerate(stats)])
    for i, entry in enumerate(study.entries):
        table.rows.append([study.labels[entry], *(col[i] for col in columns), str(len(study.groups_of(entry)))])
    return table


def surface_table(study: Study, surface: GridSurface) -> Table:
    """Every grid point of one entry with its validation value and how many seeds chose it."""
    title = f"Selection surface: {surface.title}"
    caption = (f"Validation {metric_label(study.select)} of every grid point of {latex_escape(surface.title)}, "
               "mean $\\pm$ std over seeds, and how many seeds selected it; bold: the best mean.")
    table = Table(title, [], [*surface.names, f"valid {study.select}", "Seeds", "Chosen by"],
                  caption=Tex(title, caption),
                  key=(study.dataset_name, "surface", surface.title))
    best = _best([p.mean for p in surface.points])
    for i, p in enumerate(surface.points):
        value = value_cell(p.mean, p.std)
        grid = [tick_text(p.grid[n]) if n in p.grid else "-" for n in surface.names]
        table.rows.append([*grid, _bold(value) if i in best else value, str(len(p.values)), str(p.chosen_by)])
    return table


def markdown_table(table: Table) -> list[str]:
    """A table as markdown lines (header, alignment row, rows), as :func:`reports.tables.to_markdown`
    lays them out."""
    align = ["---" if kind == TEXT else "---:" for kind in column_kinds(table)]
    return (["| " + " | ".join(_flat_columns(table)) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(str(s).replace("|", "\\|") for s in row) + " |" for row in table.rows])


def _audit_metrics(results: AuditResults, fmt: str, metric: str | None, select: str) -> list[str]:
    """The drop tables' metric: ``metric``, else the selection metric (csv/json: every metric)."""
    if metric is None and fmt in ("csv", "json"):
        return resolve_metrics(results, fmt, None)
    return resolve_metrics(results, fmt, [metric or select])


def _audit_notes(study: Study, metric: str | None) -> tuple[list[str], dict[str, Report]]:
    """Each audit's report, and the notes of all of them (each said once, in order)."""
    reports, notes = {}, {}
    for audit in study.audits:
        if audit.results is not None:
            report = build_report(audit.results, _audit_metrics(audit.results, "markdown", metric, study.select))
            reports[audit.name] = report
            notes.update(dict.fromkeys(report.notes))
    return list(notes), reports


def _left_out_text(audit: Audit) -> str:
    if audit.results is None and not audit.left_out:
        return "No records yet: the audit has not run."
    runs = f"{audit.left_out} run{'' if audit.left_out == 1 else 's'}"
    return (f"Records of {runs} not selected (any more) are left out." if audit.left_out else "")


# -- renderers ---------------------------------------------------------------------------------------
def _markdown(study: Study, metric: str | None, plots: dict[str, str] | None = None) -> str:
    """The markdown report; ``plots`` (figure key -> path in DIR) adds the figures written for it."""
    plots = plots or {}
    lines = [f"# Study {study.name}: {study.dataset_name}", ""]
    if study.description:
        lines += [study.description, ""]
    lines += [f"Grid points are selected on validation {study.select} (for each run entry and seed, the best "
              "point); the test metrics, curves and audits below are those of the selected points only.", ""]
    clean = clean_table(study, study.clean_metrics(metric))
    lines += [f"## {clean.title}", "", CLEAN_NOTE, "", *markdown_table(clean)]
    for i, surface in enumerate(study.surfaces()):
        table = surface_table(study, surface)
        lines += ["", f"## {table.title}", ""]
        if f"grid:{i}" in plots:
            lines += [f"![validation surface of {surface.title}]({plots[f'grid:{i}']})", ""]
        lines += markdown_table(table)
    if "curves" in plots:
        lines += ["", "## Training curves", "", f"![training loss and validation {study.select} per epoch]"
                  f"({plots['curves']})"]
    return "\n".join(lines + _markdown_audits(study, metric, plots)) + "\n"


def _markdown_audits(study: Study, metric: str | None, plots: dict[str, str]) -> list[str]:
    """The audits' section: the notes once, then per audit its plot and tables (headings nested
    two levels below those of ``robustrec report``)."""
    if not study.audits:
        return []
    notes, reports = _audit_notes(study, metric)
    lines = ["", "## Audits", ""] + [f"- {note}" for note in notes]
    for audit in study.audits:
        suites = ", ".join(s.title for s in audit.results.suites) if audit.results else ""
        lines += ["", f"### Audit {audit.name}" + (f": {suites}" if suites else "")]
        if audit.name in reports:
            lines += ["", reports[audit.name].header[0].upper() + reports[audit.name].header[1:] + "."]
        if _left_out_text(audit):
            lines += ["", _left_out_text(audit)]
        if f"audit:{audit.name}" in plots:
            lines += ["", f"![relative drops of {audit.name}]({plots[f'audit:{audit.name}']})"]
        for table in reports[audit.name].tables if audit.name in reports else []:
            lines += ["", f"#### {table.title}", ""] + markdown_table(table)
    return lines


def _latex(study: Study, metric: str | None) -> str:
    """Every table as a LaTeX float in one document, so that labels are unique across the audits."""
    notes, reports = _audit_notes(study, metric)
    tables = [clean_table(study, study.clean_metrics(metric))]
    tables += [surface_table(study, s) for s in study.surfaces()]
    tables += [t for report in reports.values() for t in report.tables]
    comments = [f"Study {study.name}: {study.dataset_name}", f"selection on validation {study.select}", CLEAN_NOTE,
                *notes, *(f"audit {a.name}: {_left_out_text(a)}" for a in study.audits if _left_out_text(a))]
    return latex_document(comments, tables)


def _number(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _clean_rows(study: Study, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """The clean table as data: per entry and metric, mean, std, per-seed values and the best mark."""
    rows = []
    best = {m: _best([_stats([v for _, v in study.test_values(e, m)])[0] for e in study.entries]) for m in metrics}
    for i, entry in enumerate(study.entries):
        cells = {}
        for m in metrics:
            seeds = study.test_values(entry, m)
            mean, std = _stats([v for _, v in seeds])
            cells[m] = {"mean": mean, "std": _number(std), "best": i in best[m],
                        "seeds": [{"seed": s, "value": v} for s, v in seeds]}
        rows.append({"model": entry.model, "strategy": entry.strategy, "label": entry.label or None,
                     "row": study.labels[entry], "n_seeds": len(study.groups_of(entry)), "metrics": cells})
    return rows


def _surface_dicts(study: Study) -> list[dict[str, Any]]:
    return [{"row": s.title, "names": list(s.names),
             "points": [{"grid": p.grid, "mean": p.mean, "std": _number(p.std), "n_seeds": len(p.values),
                         "chosen_by": p.chosen_by} for p in s.points]} for s in study.surfaces()]


def _json(study: Study, metric: str | None) -> str:
    metrics = study.clean_metrics(metric)
    doc = {
        "schema": SCHEMA, "study": study.name, "description": study.description, "dataset": study.dataset,
        "select": study.select, "clean_metrics": metrics, "clean": _clean_rows(study, metrics),
        "selection": study.selection, "surfaces": _surface_dicts(study),
        "audits": [{"folder": a.name, "left_out": a.left_out,
                    "report": None if a.results is None else
                    to_dict(a.results, _audit_metrics(a.results, "json", metric, study.select))}
                   for a in study.audits],
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


CSV_COLUMNS = ("section", "audit", "model", "strategy", "label", "row", "grid", "metric", "severity_name",
               "noise_scale", "severity", "mean", "std", "n_seeds", "chosen_by", "best", "clean", "clean_std",
               "perturbed_mean", "perturbed_std", "drop_mean", "drop_std", "n_repeats")


def _csv(study: Study, metric: str | None) -> str:
    """One tidy table: clean rows (mean, std of the test metric), selection rows (of the validation
    metric, per grid point) and audit rows (the drop cells of :func:`reports.tables.cell_dict`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in _clean_rows(study, study.clean_metrics(metric)):
        for m, cell in row["metrics"].items():
            writer.writerow({"section": "clean", **row, "metric": m, "mean": cell["mean"], "std": cell["std"],
                             "best": cell["best"]})
    for entry, surface in ((e, s) for s in study.surfaces() for e in study.entries if study.labels[e] == s.title):
        for p in surface.points:
            writer.writerow({"section": "selection", "model": entry.model, "strategy": entry.strategy,
                             "label": entry.label, "row": surface.title, "grid": json.dumps(p.grid, sort_keys=True),
                             "metric": study.select, "mean": p.mean, "std": _number(p.std),
                             "n_seeds": len(p.values), "chosen_by": p.chosen_by})
    for audit in study.audits:
        if audit.results is None:
            continue
        for m in _audit_metrics(audit.results, "csv", metric, study.select):
            for cell in audit.results.cells(m):
                data = cell_dict(audit.results, cell)
                writer.writerow({**{k: ("" if v is None else v) for k, v in data.items()}, "section": "audit",
                                 "audit": audit.name, "label": data["strategy_label"]})
    return buffer.getvalue()


def study_report(folder: str | Path, fmt: str = "markdown", metric: str | None = None) -> str:
    """The report of the study in ``folder`` as ``fmt`` (markdown, latex, csv or json).

    ``metric`` is the drop tables' metric (default: the study's selection metric; csv and json hold
    every metric by default) and adds its cut-off to the clean table.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    if metric is not None:
        name, k = parse_metric(metric)
        metric = f"{name}@{k}"
    study = load_study(folder)
    if metric is not None:
        study.require_measured(metric)
    return {"markdown": _markdown, "latex": _latex, "csv": _csv, "json": _json}[fmt](study, metric)


# -- the report file with its plots ------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _write_plot(draw: Any, folder: Path, name: str) -> str:
    """Draw one figure in each of :data:`PLOT_TYPES` (PNG for the markdown, SVG and PDF for a
    paper); the path in DIR of the first."""
    for ext in PLOT_TYPES:
        draw(folder / PLOTS_DIR / f"{name}.{ext}")
    return f"{PLOTS_DIR}/{name}.{PLOT_TYPES[0]}"


def write_study_report(folder: str | Path) -> Path:
    """Write ``folder/report.md`` and its plots (``folder/plots/*.png``, ``.svg``, ``.pdf``): a drop
    plot per audit, the grid surface of every entry with a 1-D or 2-D grid, and the training curves.
    Everything is read and checked before the first file is written."""
    study = load_study(folder)
    folder = study.folder
    plots: dict[str, str] = {}
    used: set[str] = set()
    for i, surface in enumerate(study.surfaces()):
        if len(surface.names) in (1, 2):
            name = _unique(f"grid-{_slug(surface.title)}", used)
            plots[f"grid:{i}"] = _write_plot(lambda p, s=surface: plot_grid(s, p, study.select), folder, name)
    curves = study.curves()
    if curves:
        plots["curves"] = _write_plot(lambda p: plot_curves(curves, p, study.select), folder, "curves")
    for audit in study.audits:
        if audit.results is not None:
            metric = audit.results.require_metric(study.select)
            name = _unique(f"drops-{_slug(audit.name)}", used)
            plots[f"audit:{audit.name}"] = _write_plot(
                lambda p, r=audit.results, m=metric: plot_drops(r, p, metric=m), folder, name)
    path = folder / REPORT_FILE
    write_text(path, _markdown(study, None, plots))
    return path


def _unique(name: str, used: set[str]) -> str:
    n, candidate = 1, name
    while candidate in used:
        n += 1
        candidate = f"{name}-{n}"
    used.add(candidate)
    return candidate
