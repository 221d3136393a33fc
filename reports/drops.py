"""Relative drops: read audit records, validate them and aggregate over repeats and seeds.

An audit evaluates a trained run once clean (``repeat == -1``, severity 0) and then under a
perturbation suite at one or more severities, ``R`` repeats each. For one metric:

- per run (seed): the clean value ``c``, the perturbed values ``p_1..p_R`` with their mean ``p̄`` and
  standard deviation, and the relative drop (the paper's "Decr.") ``d = (c - p̄) / c``;
- across runs: mean ± std over seeds of ``c``, of ``p̄`` and of ``d`` (the mean drop is the mean of
  the per-seed drops, not the drop of the means), keeping the per-seed values.

A clean value of 0 makes the drop undefined: it is NaN (shown as "n/a"), never an error. Standard
deviations are sample standard deviations (ddof = 1) and NaN for fewer than two values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustrec.errors import ConfigError, DataError
from robustrec.records import Record, load_records

BASELINE_STRATEGY = "plain"
#: Suite names a clean record may carry when it is shared by every suite of a run's audit.
SHARED_CLEAN_SUITES = ("", "clean", "none")

Loaded = tuple[Path, Record]


@dataclass(frozen=True, order=True)
class GroupKey:
    """One (model, strategy, suite, noise scale, severity) group; the dataset is fixed per report."""

    model: str
    strategy: str
    suite: str
    severity_name: str
    noise_scale: str
    severity: float

    @property
    def suite_key(self) -> SuiteKey:
        return SuiteKey(self.suite, self.severity_name, self.noise_scale)


@dataclass(frozen=True, order=True)
class SuiteKey:
    """A suite together with the meaning of its severity (e.g. noise as sigma2 or as relative scale)."""

    suite: str
    severity_name: str
    noise_scale: str

    @property
    def title(self) -> str:
        """``"noise (sigma2)"``, ``"noise (relative scale)"``, ``"caption (prob)"``."""
        if self.noise_scale == "relative" and self.severity_name in ("scale", ""):
            return f"{self.suite} (relative scale)"
        return f"{self.suite} ({self.severity_name})" if self.severity_name else self.suite


@dataclass(frozen=True)
class RunAudit:
    """The records of one run (seed) at one severity: its clean record and its perturbed repeats."""

    run: str
    run_seed: int
    clean: Loaded
    perturbed: tuple[Loaded, ...]


@dataclass(frozen=True)
class SeedDrop:
    """One run's numbers for one metric at one severity."""

    run: str
    run_seed: int
    clean: float
    perturbed: tuple[float, ...]

    @property
    def n_repeats(self) -> int:
        return len(self.perturbed)

    @property
    def perturbed_mean(self) -> float:
        return float(np.mean(self.perturbed))

    @property
    def perturbed_std(self) -> float:
        """Standard deviation over repeats."""
        return sample_std(self.perturbed)

    @property
    def drop(self) -> float:
        return relative_drop(self.clean, self.perturbed_mean)


@dataclass(frozen=True)
class Cell:
    """The aggregate of one group for one metric: mean ± std over seeds, with the per-seed values."""

    key: GroupKey
    strategy_label: str
    metric: str
    seeds: tuple[SeedDrop, ...]

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def n_repeats(self) -> tuple[int, int]:
        """(fewest, most) repeats of any seed."""
        counts = [s.n_repeats for s in self.seeds]
        return min(counts), max(counts)

    @property
    def clean_mean(self) -> float:
        return float(np.mean([s.clean for s in self.seeds]))

    @property
    def clean_std(self) -> float:
        return sample_std([s.clean for s in self.seeds])

    @property
    def perturbed_mean(self) -> float:
        return float(np.mean([s.perturbed_mean for s in self.seeds]))

    @property
    def perturbed_std(self) -> float:
        """Std over seeds of each seed's mean perturbed value (over repeats when only one seed)."""
        if self.n_seeds == 1:
            return self.seeds[0].perturbed_std
        return sample_std([s.perturbed_mean for s in self.seeds])

    @property
    def drop_mean(self) -> float:
        return float(np.mean([s.drop for s in self.seeds]))

    @property
    def drop_std(self) -> float:
        """Std over seeds of each seed's drop (NaN with one seed)."""
        return sample_std([s.drop for s in self.seeds])


def relative_drop(clean: float, perturbed: float) -> float:
    """``(clean - perturbed) / clean``; NaN when ``clean`` is 0 (the drop is undefined)."""
    return (clean - perturbed) / clean if clean != 0 else math.nan


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof = 1); NaN for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan


def validate_metric(key: str) -> str:
    """Normalise and check a metric key such as ``"recall@5"`` (ConfigError when unknown)."""
    from robustrec.metrics import parse_metric

    name, k = parse_metric(key)
    return f"{name}@{k}"


def strategy_display(strategy: str, label: str = "") -> str:
    """The strategy's display label: its record label, else derived (``"amr+mirror" -> "AMR+MG"``)."""
    if label:
        return label
    if strategy == BASELINE_STRATEGY:
        return BASELINE_STRATEGY
    return strategy.replace("mirror", "MG").upper()


def row_label(model: str, strategy: str, label: str = "") -> str:
    """``"FREEDOM"``, ``"FREEDOM + MG"``, ``"VBPR + AMR + MG"`` (MMRec's upper-case model names)."""
    shown = strategy_display(strategy, label)
    if strategy == BASELINE_STRATEGY or shown.lower() == BASELINE_STRATEGY:
        return model.upper()
    return " + ".join([model.upper()] + [part.strip() for part in shown.split("+")])


def strategy_order(strategy: str) -> tuple[bool, bool, int, str]:
    """Sort key: plain first, then other strategies, then the mirror ones (fewest parts first)."""
    return (strategy != BASELINE_STRATEGY, "mirror" in strategy, strategy.count("+"), strategy)


def mirror_counterpart(strategy: str) -> str | None:
    """The strategy a mirror strategy adds MG to: ``"mirror" -> "plain"``, ``"amr+mirror" -> "amr"``."""
    parts = [p for p in strategy.split("+") if p]
    if "mirror" not in parts:
        return None
    rest = [p for p in parts if p != "mirror"]
    return "+".join(rest) if rest else BASELINE_STRATEGY


def format_severity(value: float) -> str:
    """Compact severity: ``1e-06``, ``0.0001``, ``0.01``, ``0.5``, ``1``."""
    return f"{value:g}"


def noise_scale_of(record: Record) -> str:
    """``"relative"`` or ``"absolute"`` for noise-like suites (from details), else ``""``."""
    scale = record.details.get("noise_scale")
    if scale:
        return str(scale)
    return "absolute" if record.severity_name == "sigma2" else ""


class AuditResults:
    """Validated audit records of one dataset, grouped by (model, strategy, suite, severity) and seed."""

    def __init__(self, records: Sequence[Loaded]) -> None:
        if not records:
            raise DataError("no result records found")
        self.dataset, self.fingerprint, self.split = _single_dataset(records)
        self.metrics = _common_metrics(records)
        self.labels = _strategy_labels(records)
        self.audits = _group(records)
        if not self.audits:
            raise DataError("no perturbed records found (only clean evaluations)")

    # -- structure --------------------------------------------------------------------------
    @property
    def keys(self) -> list[GroupKey]:
        """Every group, ordered by model (first seen), strategy, suite and severity."""
        models = list(dict.fromkeys(k.model for k in self.audits))
        return sorted(self.audits, key=lambda k: (models.index(k.model), strategy_order(k.strategy),
                                                  k.suite_key, k.severity))

    @property
    def suites(self) -> list[SuiteKey]:
        return sorted({k.suite_key for k in self.audits})

    def severities(self, suite: SuiteKey) -> list[float]:
        return sorted({k.severity for k in self.audits if k.suite_key == suite})

    def rows(self) -> list[tuple[str, str]]:
        """(model, strategy) pairs in display order."""
        return list(dict.fromkeys((k.model, k.strategy) for k in self.keys))

    def label(self, model: str, strategy: str) -> str:
        return row_label(model, strategy, self.labels.get(strategy, ""))

    # -- numbers ----------------------------------------------------------------------------
    def require_metric(self, metric: str) -> str:
        """Validate ``metric`` and check that every record has it."""
        metric = validate_metric(metric)
        if metric not in self.metrics:
            raise DataError(f"metric {metric} is not in every record; available: {', '.join(self.metrics) or 'none'}")
        return metric

    def cell(self, key: GroupKey, metric: str) -> Cell:
        seeds = tuple(
            SeedDrop(a.run, a.run_seed, float(a.clean[1].metrics[metric]),
                     tuple(float(r.metrics[metric]) for _, r in a.perturbed))
            for a in self.audits[key]
        )
        return Cell(key, strategy_display(key.strategy, self.labels.get(key.strategy, "")), metric, seeds)

    def cells(self, metric: str) -> list[Cell]:
        metric = self.require_metric(metric)
        return [self.cell(key, metric) for key in self.keys]


def load_results(*paths: str | Path) -> AuditResults:
    """Load records from files or folders (``*.jsonl``) and validate them (DataError on problems)."""
    return AuditResults(load_records(*paths))


def parse_fraction(text: str, what: str = "value") -> float:
    """``"0.05"`` or ``"5%"`` -> 0.05; ConfigError unless it is a number in [0, 1]."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a number (write e.g. 0.05 or 5%)") from None
    if not 0 <= value <= 1 or math.isnan(value):
        raise ConfigError(f"{what} {text!r} must be a fraction between 0 and 1 (e.g. 0.05 or 5%)")
    return value


# -- validation and grouping helpers -------------------------------------------------------------
def _single_dataset(records: Sequence[Loaded]) -> tuple[str, str, str]:
    first_path, first = records[0]
    for path, r in records:
        if (r.dataset, r.dataset_fingerprint) != (first.dataset, first.dataset_fingerprint):
            raise DataError(
                f"records from different datasets: {first.dataset!r} (fingerprint {first.dataset_fingerprint}) "
                f"in {first_path} and {r.dataset!r} (fingerprint {r.dataset_fingerprint}) in {path}; "
                "report one dataset at a time"
            )
        if r.split != first.split:
            raise DataError(f"records from different splits: {first.split!r} in {first_path} and {r.split!r} in {path}")
    return first.dataset, first.dataset_fingerprint, first.split


def _common_metrics(records: Iterable[Loaded]) -> tuple[str, ...]:
    sets = [set(r.metrics) for _, r in records]
    common = set.intersection(*sets)
    return tuple(sorted(common, key=_metric_order))


def _metric_order(key: str) -> tuple[int, str]:
    """Sort key: by cut-off, then name. Records may hold any metric key (``isdigit`` accepts "²",
    which ``int`` cannot convert), so only short ASCII digit strings are read as cut-offs."""
    name, _, k = key.partition("@")
    return (int(k) if re.fullmatch(r"[0-9]{1,10}", k) else 0, name)


def _strategy_labels(records: Iterable[Loaded]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for _, r in records:
        if r.strategy_label and not labels.get(r.strategy):
            labels[r.strategy] = r.strategy_label
    return labels


def _describe(r: Record) -> str:
    return f"{r.model}/{r.strategy} run {r.run!r} (seed {r.run_seed})"


def _clean_index(records: Iterable[Loaded]) -> dict[tuple, Loaded]:
    """Clean records by (model, strategy, seed, suite key); duplicates are an error."""
    index: dict[tuple, Loaded] = {}
    for path, r in records:
        if not r.is_clean:
            continue
        key = (r.model, r.strategy, r.run_seed, r.suite, r.severity_name, noise_scale_of(r))
        if key in index:
            other_path, other = index[key]
            what = f"{_describe(r)} has two clean records for suite {r.suite!r} ({other_path}, {path})"
            differing = sorted(m for m in set(r.metrics) & set(other.metrics) if r.metrics[m] != other.metrics[m])
            if differing:
                m = differing[0]
                what += f" with different clean values ({m} {other.metrics[m]:.6g} vs {r.metrics[m]:.6g})"
            if other.run != r.run:
                what += f" from different runs ({other.run!r}, {r.run!r})"
            raise DataError(what + "; audit each run once per suite")
        index[key] = (path, r)
    return index


def _find_clean(index: dict[tuple, Loaded], r: Record) -> Loaded:
    """The clean record of ``r``'s audit: same suite and severity meaning (and noise scale), else the
    run's only clean record of that suite and severity meaning (audits before 0.2 did not write the
    noise scale into clean records, so an absolute and a relative noise audit of one run in one folder
    found two), else its only clean record of that suite, else its only one shared by all suites."""
    base = (r.model, r.strategy, r.run_seed)
    found = index.get((*base, r.suite, r.severity_name, noise_scale_of(r)))
    fallbacks = (lambda k: k[3] == r.suite and k[4] == r.severity_name, lambda k: k[3] == r.suite,
                 lambda k: k[3] in SHARED_CLEAN_SUITES)
    for matches in fallbacks:
        if found is None:
            candidates = [v for k, v in index.items() if k[:3] == base and matches(k)]
            found = candidates[0] if len(candidates) == 1 else None
    if found is None:
        raise DataError(f"{_describe(r)}: no clean record (repeat -1) for suite {r.suite!r}")
    if found[1].run != r.run:
        raise DataError(f"{_describe(r)}: its clean record belongs to run {found[1].run!r}; "
                        "two runs of one strategy share a seed")
    return found


def _group(records: Sequence[Loaded]) -> dict[GroupKey, tuple[RunAudit, ...]]:
    clean = _clean_index(records)
    by_run: dict[tuple[GroupKey, int], list[Loaded]] = {}
    for path, r in records:
        if r.is_clean:
            continue
        key = GroupKey(r.model, r.strategy, r.suite, r.severity_name, noise_scale_of(r), float(r.severity))
        by_run.setdefault((key, r.run_seed), []).append((path, r))
    groups: dict[GroupKey, list[RunAudit]] = {}
    for (key, seed), loaded in sorted(by_run.items(), key=lambda item: (item[0][0], item[0][1])):
        loaded.sort(key=lambda pr: pr[1].repeat)
        repeats = [r.repeat for _, r in loaded]
        if len(set(repeats)) != len(repeats):
            dup = next(x for x in repeats if repeats.count(x) > 1)
            raise DataError(f"{_describe(loaded[0][1])}: repeat {dup} of suite {key.suite!r} at severity "
                            f"{format_severity(key.severity)} appears twice; audit each run once per suite")
        clean_loaded = _find_clean(clean, loaded[0][1])
        groups.setdefault(key, []).append(RunAudit(loaded[0][1].run, seed, clean_loaded, tuple(loaded)))
    return {k: tuple(v) for k, v in groups.items()}
