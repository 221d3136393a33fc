"""The CI regression gate over audit results.

Rules (each checked item is one JUnit test case):

- ``max-drop``: every (model, strategy, suite, severity) mean relative drop of the metric is at most its
  budget (a fraction: 0.05 = 5%); budgets may differ per severity;
- ``min-clean``: the clean value of a metric (mean over seeds) is at least a minimum;
- ``baseline-drop`` / ``baseline-clean``: against a saved JSON report (``robustrec report --format json``),
  a drop may exceed the baseline's drop by at most ``tolerance``, and a clean value may fall below the
  baseline's by at most ``tolerance``. The tolerance is absolute in the quantity's own units: a
  fraction of relative drop for drops (0.01 = one percentage point of Decr.), metric units for clean
  values (0.01 = 0.01 of recall);
- ``mirror-not-worse``: for every model with a mirror strategy and the strategy it adds MG to
  (``mirror`` vs ``plain``, ``amr+mirror`` vs ``amr``, falling back to ``plain``), the mirror strategy's
  drop is at most the other's drop + ``tolerance`` at every suite and severity.

An undefined drop (clean value 0) fails the drop rules: the budget cannot be verified.

The metric is :data:`robustrec.metrics.DEFAULT_METRIC` (recall@20) unless chosen.

JUnit (``--junit``): one test case per checked item, with its measured value, budget and (for the
baseline and mirror rules) the baseline value it came from, in ``<system-out>`` and as properties;
``time`` on every case and on the suite. A quantity in the results that a rule could not check (a
severity without a ``--max-drop`` budget, a group or severity absent from the baseline report) is a
``skipped`` case with the reason, never silently left out.
"""

from __future__ import annotations

import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robustrec.errors import ConfigError, DataError
from robustrec.io import read_json, write_text
from robustrec.metrics import DEFAULT_METRIC

from .drops import (
    BASELINE_STRATEGY,
    AuditResults,
    Cell,
    GroupKey,
    format_severity,
    load_results,
    mirror_counterpart,
    parse_fraction,
    validate_metric,
)
from .tables import REPORT_SCHEMA

MIRROR_NOT_WORSE = "mirror-not-worse"
REQUIREMENTS = (MIRROR_NOT_WORSE,)


@dataclass(frozen=True)
class Violation:
    """A checked quantity beyond its budget; ``excess`` is by how much (positive)."""

    rule: str
    model: str
    strategy: str
    suite: str
    severity: float | None
    metric: str
    value: float
    budget: float
    excess: float
    message: str


DROP, CLEAN = "drop", "clean"


@dataclass(frozen=True)
class CheckItem:
    """One checked quantity (one JUnit test case): passed unless it has a ``violation``.

    ``value`` is what was measured: a relative drop (``kind`` DROP, a fraction) or a clean metric
    value (CLEAN). ``budget`` is the bound it was held to: at most, for drops; at least, for clean
    values. ``baseline`` is the value the budget came from (the saved report's, or the drop of the
    strategy a mirror strategy is compared with), None for a fixed budget, and ``baseline_text`` says
    what it is. ``skipped`` is why a quantity present in the results was not checked (then the
    budget is NaN). ``seconds`` is the time taken to compute and check it.
    """

    rule: str
    name: str
    violation: Violation | None = None
    metric: str = ""
    kind: str = DROP
    value: float = math.nan
    budget: float = math.nan
    baseline: float | None = None
    baseline_text: str = ""
    skipped: str | None = None
    seconds: float = 0.0

    def _show(self, x: float) -> str:
        return f"{100 * x:.2f}%" if self.kind == DROP else f"{x:.4f}"

    def output(self) -> str:
        """What the JUnit case prints: ``value: drop 2.50%``, ``budget: at most 5.00%``, ``baseline: ...``."""
        lines = [f"value: {self.kind} {self._show(self.value)}"]
        if self.skipped is None:
            lines.append(f"budget: {'at most' if self.kind == DROP else 'at least'} {self._show(self.budget)}")
        if self.baseline_text:
            lines.append(f"baseline: {self.baseline_text}")
        if self.skipped is not None:
            lines.append(f"skipped: {self.skipped}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CheckResult:
    items: tuple[CheckItem, ...]
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    #: When the check started (ISO 8601, UTC), for JUnit's ``timestamp``.
    started: str = ""

    @property
    def violations(self) -> list[Violation]:
        return [item.violation for item in self.items if item.violation is not None]

    @property
    def skipped(self) -> list[CheckItem]:
        return [item for item in self.items if item.skipped is not None]

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        failed, skipped = len(self.violations), len(self.skipped)
        checked = len(self.items) - skipped
        text = f"all {checked} checks within budget" if not failed else f"{failed} of {checked} checks failed"
        return text + (f" ({skipped} skipped)" if skipped else "")


# -- parsing budgets -----------------------------------------------------------------------------
def parse_max_drop(specs: str | Sequence[str]) -> tuple[float | None, dict[float, float]]:
    """``"0.05"``, ``"5%"``, ``"1e-6=0.02,1e-4=10%"`` or a mix -> (budget for all, per-severity budgets)."""
    items = [specs] if isinstance(specs, str) else list(specs)
    default: float | None = None
    per_severity: dict[float, float] = {}
    for item in (part.strip() for spec in items for part in spec.split(",")):
        if not item:
            raise ConfigError(f"malformed --max-drop {','.join(items)!r}: empty budget")
        if "=" in item:
            sev_text, _, budget = item.partition("=")
            severity = _finite(sev_text, f"--max-drop item {item!r}")
            per_severity[severity] = parse_fraction(budget, f"--max-drop budget for severity {sev_text}")
        else:
            default = parse_fraction(item, "--max-drop")
    return default, per_severity


def parse_min_clean(specs: Iterable[str]) -> dict[str, float]:
    """``["recall@20=0.3", "ndcg@20=0.25"]`` -> ``{"recall@20": 0.3, "ndcg@20": 0.25}``."""
    out: dict[str, float] = {}
    for spec in specs:
        metric, sep, value = spec.partition("=")
        if not sep:
            raise ConfigError(f"malformed --min-clean {spec!r}: write METRIC=VALUE, e.g. recall@20=0.3")
        out[validate_metric(metric.strip())] = _finite(value, f"--min-clean {spec!r}")
    return out


def _finite(text: str, what: str) -> float:
    """A finite number: NaN would make every comparison false, so every check would pass."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"malformed {what}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"malformed {what}: {text.strip()!r} is not a finite number")
    return value


def read_saved_report(path: str | Path) -> dict[str, Any]:
    """A JSON report written by ``robustrec report --format json``, read strictly (DataError when
    unreadable, not standard JSON, or not a saved report with well-typed cells)."""
    doc = read_json(path, "baseline report")
    if not isinstance(doc, dict) or doc.get("schema") != REPORT_SCHEMA or not isinstance(doc.get("cells"), list):
        raise DataError(f"{path} is not a saved robustrec report (write one with: robustrec report --format json)")
    for name in ("dataset", "dataset_fingerprint"):
        if not isinstance(doc.get(name), str):
            raise DataError(f"baseline report {path}: {name!r} must be a string")
    metrics = doc.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise DataError(f"baseline report {path}: 'metrics' must be a list of metric names")
    for n, cell in enumerate(doc["cells"]):
        problem = _cell_problem(cell)
        if problem:
            raise DataError(f"baseline report {path} is malformed: cell {n} {problem}")
    return doc


# -- naming --------------------------------------------------------------------------------------
def _where(results: AuditResults, key: GroupKey, metric: str, with_severity: bool = True) -> str:
    row = f"{results.label(key.model, key.strategy)} (strategy {key.strategy}), {key.suite_key.title}"
    if with_severity:
        row += f" {key.severity_name or 'severity'}={format_severity(key.severity)}"
    return f"{row}, {metric}"


def _violation(rule: str, key: GroupKey, metric: str, value: float, budget: float, message: str,
               severity: bool = True) -> Violation:
    excess = value - budget if rule != "min-clean" and rule != "baseline-clean" else budget - value
    return Violation(rule, key.model, key.strategy, key.suite, key.severity if severity else None, metric,
                     value, budget, excess, message)


def _drop_item(rule: str, results: AuditResults, cell: Cell, budget: float, what: str,
               baseline: float | None = None, baseline_text: str = "") -> CheckItem:
    """``drop <= budget`` for one cell; ``what`` describes the budget (e.g. ``"budget 5.00%"``)."""
    where = _where(results, cell.key, cell.metric)
    drop = cell.drop_mean
    item = CheckItem(rule, where, metric=cell.metric, kind=DROP, value=drop, budget=budget, baseline=baseline,
                     baseline_text=baseline_text)
    if math.isnan(drop):
        message = f"{where}: drop undefined (clean {cell.metric} is 0), cannot verify {what}"
        return replace(item, violation=_violation(rule, cell.key, cell.metric, drop, budget, message))
    if drop > budget:
        message = f"{where}: drop {100 * drop:.2f}% > {what} (over by {100 * (drop - budget):.2f} pp)"
        return replace(item, violation=_violation(rule, cell.key, cell.metric, drop, budget, message))
    return item


def _clean_item(rule: str, results: AuditResults, cell: Cell, minimum: float, what: str,
                baseline: float | None = None, baseline_text: str = "") -> CheckItem:
    where = _where(results, cell.key, cell.metric, with_severity=False)
    clean = cell.clean_mean
    item = CheckItem(rule, where, metric=cell.metric, kind=CLEAN, value=clean, budget=minimum, baseline=baseline,
                     baseline_text=baseline_text)
    if clean < minimum:
        message = f"{where}: clean {clean:.4f} < {what} (under by {minimum - clean:.4f})"
        return replace(item, violation=_violation(rule, cell.key, cell.metric, clean, minimum, message, False))
    return item


def _skipped_item(rule: str, results: AuditResults, cell: Cell, reason: str) -> CheckItem:
    """A drop in the results that ``rule`` cannot check (JUnit ``skipped``), with the reason."""
    return CheckItem(rule, _where(results, cell.key, cell.metric), metric=cell.metric, kind=DROP,
                     value=cell.drop_mean, skipped=reason)


def _timed(make: Callable[..., CheckItem], *args: Any) -> CheckItem:
    """``make(*args)``, with the seconds it took (JUnit's ``time`` of the case)."""
    start = time.perf_counter()
    item = make(*args)
    return replace(item, seconds=time.perf_counter() - start)


# -- rules ---------------------------------------------------------------------------------------
def _budget_for(severity: float, default: float | None, per_severity: dict[float, float]) -> float | None:
    for sev, budget in per_severity.items():
        if math.isclose(sev, severity, rel_tol=1e-9, abs_tol=0.0):
            return budget
    return default


def _max_drop_item(results: AuditResults, key: GroupKey, metric: str, budget: float | None) -> CheckItem:
    cell = results.cell(key, metric)
    if budget is None:
        return _skipped_item("max-drop", results, cell, f"no --max-drop budget for severity {format_severity(key.severity)}")
    return _drop_item("max-drop", results, cell, budget, f"budget {100 * budget:.2f}%")


def check_max_drop(results: AuditResults, metric: str, default: float | None,
                   per_severity: dict[float, float]) -> tuple[list[CheckItem], list[str]]:
    severities = {k.severity for k in results.audits}
    for sev in per_severity:
        if not any(math.isclose(sev, s, rel_tol=1e-9) for s in severities):
            present = ", ".join(format_severity(s) for s in sorted(severities))
            raise ConfigError(f"--max-drop names severity {format_severity(sev)}, which no record has "
                              f"(severities present: {present})")
    metric = results.require_metric(metric)
    items, unchecked = [], 0
    for key in results.keys:
        budget = _budget_for(key.severity, default, per_severity)
        unchecked += budget is None
        items.append(_timed(_max_drop_item, results, key, metric, budget))
    notes = [f"{unchecked} group(s) at severities without a --max-drop budget were not checked"] if unchecked else []
    return items, notes


def _clean_cells(results: AuditResults, metric: str) -> list[Cell]:
    """One cell per (model, strategy, suite): the clean value does not depend on the severity."""
    seen: dict[tuple, Cell] = {}
    for cell in results.cells(metric):
        seen.setdefault((cell.key.model, cell.key.strategy, cell.key.suite_key), cell)
    return list(seen.values())


def check_min_clean(results: AuditResults, minima: dict[str, float]) -> list[CheckItem]:
    return [_timed(_clean_item, "min-clean", results, cell, minimum, f"minimum {minimum:.4f}")
            for metric, minimum in minima.items() for cell in _clean_cells(results, metric)]


#: The fields of a saved report's cell that the baseline rule reads, and what each must be.
_CELL_TEXT = ("model", "strategy", "suite", "severity_name", "noise_scale")
_CELL_NUMBERS = ("clean", "drop_mean")  # null where the saved value was undefined


def _baseline_cells(doc: dict[str, Any], metric: str) -> dict[tuple, dict[str, Any]]:
    """The saved cells of ``metric`` by group key (checked by :func:`read_saved_report`)."""
    cells = {}
    for c in doc["cells"]:
        if c["metric"] == metric:
            cells[tuple(c[name] for name in _CELL_TEXT) + (float(c["severity"]),)] = c
    if not cells:
        raise DataError(f"baseline report has no {metric} numbers (it has {', '.join(doc.get('metrics', []))}); "
                        f"write it with: robustrec report --format json --metric {metric}")
    return cells


def _cell_problem(cell: Any) -> str | None:
    """What is wrong with a saved cell, or None. A baseline is a budget: a NaN in it would make every
    comparison false (a silent pass), a string would crash the comparison."""
    if not isinstance(cell, dict):
        return "is not a JSON object"
    for name in (*_CELL_TEXT, "metric"):
        if not isinstance(cell.get(name), str):
            return f"lacks a string {name!r}"
    if not _is_finite_number(cell.get("severity")):
        return "lacks a finite number 'severity'"
    for name in _CELL_NUMBERS:
        if cell.get(name) is not None and not _is_finite_number(cell[name]):
            return f"has {name} = {cell[name]!r}, not a finite number or null"
    return None


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_baseline(results: AuditResults, doc: dict[str, Any], metric: str,
                   tolerance: float) -> tuple[list[CheckItem], list[str]]:
    if (doc.get("dataset"), doc.get("dataset_fingerprint")) != (results.dataset, results.fingerprint):
        raise DataError(f"baseline report is for dataset {doc.get('dataset')!r} (fingerprint "
                        f"{doc.get('dataset_fingerprint')}), the results for {results.dataset!r} "
                        f"(fingerprint {results.fingerprint})")
    saved = _baseline_cells(doc, metric)
    items: list[CheckItem] = []
    seen_clean: set[tuple] = set()
    current = set()
    undefined = 0
    for cell in results.cells(metric):
        k = cell.key
        key = (k.model, k.strategy, k.suite, k.severity_name, k.noise_scale, k.severity)
        current.add(key)
        base = saved.get(key)
        if base is None:
            items.append(_skipped_item("baseline-drop", results, cell, _absent_reason(saved, key)))
            continue
        if base.get("drop_mean") is not None:
            items.append(_timed(_baseline_drop_item, results, cell, base["drop_mean"], tolerance))
        else:
            undefined += 1
            items.append(_skipped_item("baseline-drop", results, cell,
                                       "the saved report's drop is undefined (its clean value was 0)"))
        clean_key = key[:5]
        if base.get("clean") is not None and clean_key not in seen_clean:
            seen_clean.add(clean_key)
            items.append(_timed(_baseline_clean_item, results, cell, base["clean"], tolerance))
    missing = len(set(saved) - current)
    notes = [f"{missing} baseline group(s) are not in the results and were not compared"] if missing else []
    if undefined:
        notes.append(f"{undefined} baseline group(s) have no saved drop (undefined there) and were not compared")
    absent = sum(item.skipped is not None for item in items) - undefined
    if absent:
        notes.append(f"{absent} result group(s) are not in the baseline report and were not compared")
    if all(item.skipped is not None for item in items):
        raise DataError("no result group matches the baseline report (different models, strategies or severities)")
    return items, notes


def _baseline_drop_item(results: AuditResults, cell: Cell, saved: float, tolerance: float) -> CheckItem:
    what = f"baseline {100 * saved:.2f}% + tolerance {100 * tolerance:.2f} pp"
    told = f"drop {100 * saved:.2f}% in the saved report (+ tolerance {100 * tolerance:.2f} pp)"
    return _drop_item("baseline-drop", results, cell, saved + tolerance, what, saved, told)


def _baseline_clean_item(results: AuditResults, cell: Cell, saved: float, tolerance: float) -> CheckItem:
    what = f"baseline {saved:.4f} - tolerance {tolerance:.4f}"
    told = f"clean {saved:.4f} in the saved report (- tolerance {tolerance:.4f})"
    return _clean_item("baseline-clean", results, cell, saved - tolerance, what, saved, told)


def _absent_reason(saved: dict[tuple, dict[str, Any]], key: tuple) -> str:
    """Why a result group has no baseline: a new severity, or a group the baseline never had."""
    if any(other[:5] == key[:5] for other in saved):
        return "not in the baseline report (no saved drop at this severity)"
    return "not in the baseline report (no saved results for this model, strategy and suite)"


def _mirror_item(results: AuditResults, key: GroupKey, twin: GroupKey, metric: str, tolerance: float) -> CheckItem:
    base = results.cell(twin, metric).drop_mean
    other = f"{results.label(twin.model, twin.strategy)}'s drop {100 * base:.2f}%"
    what = f"{other} + tolerance {100 * tolerance:.2f} pp"
    return _drop_item(MIRROR_NOT_WORSE, results, results.cell(key, metric), base + tolerance, what, base,
                      f"{other} (+ tolerance {100 * tolerance:.2f} pp)")


def check_mirror_not_worse(results: AuditResults, metric: str, tolerance: float) -> list[CheckItem]:
    present = set(results.rows())
    items = []
    for key in results.keys:
        counterpart = mirror_counterpart(key.strategy)
        if counterpart is None:
            continue
        if (key.model, counterpart) not in present:
            counterpart = BASELINE_STRATEGY
        twin = GroupKey(key.model, counterpart, key.suite, key.severity_name, key.noise_scale, key.severity)
        if twin == key or twin not in results.audits:
            continue
        items.append(_timed(_mirror_item, results, key, twin, metric, tolerance))
    if not items:
        raise DataError("--require mirror-not-worse: no model has both a mirror strategy and the strategy it "
                        "adds MG to (or plain) at a common suite and severity")
    return items


def check(
    paths: str | Path | Sequence[str | Path],
    max_drop: float | None = None,
    max_drop_per_severity: dict[float, float] | None = None,
    min_clean: dict[str, float] | None = None,
    baseline: str | Path | None = None,
    tolerance: float = 0.0,
    metric: str = DEFAULT_METRIC,
    require_mirror_not_worse: bool = False,
    junit: str | Path | None = None,
) -> CheckResult:
    """Check audit results against budgets; see the module docstring for the rules.

    Raises DataError/ConfigError for bad input (unreadable results or baseline, unknown metric, a budget
    that is out of range or names an absent severity, nothing to check).
    """
    per_severity = dict(max_drop_per_severity or {})
    minima = {validate_metric(m): v for m, v in (min_clean or {}).items()}
    metric = validate_metric(metric)
    if max_drop is None and not per_severity and not minima and baseline is None and not require_mirror_not_worse:
        raise ConfigError("nothing to check: give --max-drop, --min-clean, --baseline or --require")
    for budget in ([max_drop] if max_drop is not None else []) + list(per_severity.values()):
        if not 0 <= budget <= 1:
            raise ConfigError(f"drop budget {budget} must be a fraction between 0 and 1")
    if not 0 <= tolerance < math.inf:
        raise ConfigError(f"tolerance {tolerance} must be a finite number >= 0")
    for name, minimum in minima.items():
        if not _is_finite_number(minimum):
            raise ConfigError(f"minimum clean {name} {minimum!r} must be a finite number")
    doc = read_saved_report(baseline) if baseline is not None else None
    started, start = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    results = load_results(*([paths] if isinstance(paths, (str, Path)) else paths))
    results.require_metric(metric)
    items: list[CheckItem] = []
    notes: list[str] = []
    if max_drop is not None or per_severity:
        found, extra = check_max_drop(results, metric, max_drop, per_severity)
        items += found
        notes += extra
    items += check_min_clean(results, minima)
    if doc is not None:
        found, extra = check_baseline(results, doc, metric, tolerance)
        items += found
        notes += extra
    if require_mirror_not_worse:
        items += check_mirror_not_worse(results, metric, tolerance)
    result = CheckResult(tuple(items), tuple(notes), time.perf_counter() - start, started)
    if junit is not None:
        write_junit(junit, result)
    return result


def junit_xml(result: CheckResult) -> str:
    """JUnit XML, one test case per checked item: failures carry the violation message, skipped cases
    their reason; every case prints its value, budget and baseline and has them as properties."""
    counts = {"tests": str(len(result.items)), "failures": str(len(result.violations)), "errors": "0",
              "skipped": str(len(result.skipped)), "time": _seconds(result.seconds)}
    suites = ET.Element("testsuites", counts)
    suite = ET.SubElement(suites, "testsuite", {"name": "robustrec check", **counts})
    if result.started:
        suite.set("timestamp", result.started)
    for item in result.items:
        case = ET.SubElement(suite, "testcase", classname=f"robustrec.check.{item.rule}", name=item.name,
                             time=_seconds(item.seconds))
        properties = ET.SubElement(case, "properties")
        for name, value in _properties(item).items():
            ET.SubElement(properties, "property", name=name, value=value)
        if item.violation is not None:
            failure = ET.SubElement(case, "failure", message=item.violation.message, type=item.rule)
            failure.text = item.violation.message
        elif item.skipped is not None:
            ET.SubElement(case, "skipped", message=item.skipped)
        ET.SubElement(case, "system-out").text = item.output()
    if result.notes:
        ET.SubElement(suite, "system-out").text = "\n".join(result.notes)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _properties(item: CheckItem) -> dict[str, str]:
    """Machine-readable numbers of a case (fractions, not percent; NaN as "nan")."""
    props = {"rule": item.rule, "metric": item.metric, "kind": item.kind, "value": _number(item.value)}
    if item.skipped is None:
        props["budget"] = _number(item.budget)
    if item.baseline is not None:
        props["baseline"] = _number(item.baseline)
    return props


def _number(x: float) -> str:
    return f"{x:.10g}"


def _seconds(x: float) -> str:
    return f"{x:.6f}"


def write_junit(path: str | Path, result: CheckResult) -> Path:
    """Write :func:`junit_xml` atomically."""
    write_text(path, junit_xml(result))
    return Path(path)
