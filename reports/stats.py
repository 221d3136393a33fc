"""Significance of a difference in robustness between two strategies of one model.

Two levels, per suite, severity and metric:

- across seeds: the relative drops of the two strategies paired by ``run_seed``; the difference is
  ``other - baseline`` (negative: the other strategy drops less);
- across users, within one seed: the per-user drop ``clean_u - mean over repeats of perturbed_u``
  (absolute, in metric units) of the two strategies paired by user id.

Each pair of samples gets a paired t-test (``scipy.stats.ttest_rel``) and a Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``). Fewer than two pairs give NaN p-values ("n/a"); identical samples give
p = 1. Verdicts use the paired t-test's p-value: with five seeds the two-sided exact Wilcoxon test
cannot go below p = 0.0625, so it is reported but not used to decide.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import numpy as np

from robustrec.errors import DataError
from robustrec.records import Record, read_per_user

from .drops import BASELINE_STRATEGY, AuditResults, GroupKey, RunAudit, SuiteKey, mirror_counterpart

ALPHA = 0.05
SEEDS = "seeds"
USERS = "users"

PerUserCache = dict[tuple[str, str], dict[str, np.ndarray]]


@dataclass(frozen=True)
class PairedTest:
    """A paired test of ``other - baseline`` differences."""

    n: int
    mean_diff: float
    t_pvalue: float
    wilcoxon_pvalue: float

    @property
    def p_value(self) -> float:
        """The p-value verdicts use: the paired t-test's."""
        return self.t_pvalue


@dataclass(frozen=True)
class Comparison:
    """One strategy against its baseline for one model, suite, severity and metric."""

    model: str
    baseline: str
    other: str
    baseline_label: str
    other_label: str
    suite: SuiteKey
    severity: float
    metric: str
    level: str
    seeds: tuple[int, ...]
    test: PairedTest

    def verdict(self, alpha: float = ALPHA) -> str:
        return verdict(self.test, self.other_label, alpha)


def paired_test(other: Sequence[float], baseline: Sequence[float]) -> PairedTest:
    """Paired t-test and Wilcoxon test of ``other - baseline`` (aligned sequences)."""
    a = np.asarray(other, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length ({a.size} vs {b.size})")
    diffs = a - b
    n = int(diffs.size)
    mean = float(diffs.mean()) if n else math.nan
    if n < 2 or np.isnan(diffs).any():
        return PairedTest(n, mean, math.nan, math.nan)
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-300)
    if np.all(np.abs(diffs) <= 1e-12 * scale):
        return PairedTest(n, 0.0, 1.0, 1.0)
    return PairedTest(n, mean, _t_pvalue(diffs, scale), _wilcoxon_pvalue(diffs))


def _t_pvalue(diffs: np.ndarray, scale: float) -> float:
    from scipy import stats

    if np.ptp(diffs) <= 1e-12 * scale:  # constant non-zero difference: t is infinite
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(diffs, np.zeros_like(diffs)).pvalue)


def _wilcoxon_pvalue(diffs: np.ndarray) -> float:
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (RuntimeWarning, UserWarning))
        try:
            return float(stats.wilcoxon(diffs).pvalue)
        except ValueError:  # every difference is zero after scipy's zero handling
            return 1.0


def format_p(p: float) -> str:
    """``0.41``, ``0.0503``, ``0.003``, ``<1e-4``; NaN as ``n/a`` (three digits near 0.05, so a value
    just above the threshold never prints as "0.05")."""
    if math.isnan(p):
        return "n/a"
    if p < 1e-4:
        return "<1e-4"
    if p < 0.01:
        return f"{p:.2g}"
    return f"{p:.3g}" if p < 0.1 else f"{p:.2f}"


def verdict(test: PairedTest, other_label: str, alpha: float = ALPHA) -> str:
    """``"no significant difference (p = 0.41, n = 5)"`` or ``"FREEDOM + MG drops less (p = 0.003, n = 5)"``."""
    p = test.p_value
    if test.n < 2 or math.isnan(p):
        return f"n/a (n = {test.n})"
    where = f"p = {format_p(p)}, n = {test.n}"
    if p >= alpha:
        return f"no significant difference ({where})"
    direction = "less" if test.mean_diff < 0 else "more"
    return f"{other_label} drops {direction} ({where})"


def strategy_pairs(results: AuditResults) -> list[tuple[str, str, str]]:
    """(model, baseline, other): plain vs every other strategy, and X vs X+mirror when X is not plain."""
    present = results.rows()
    pairs: list[tuple[str, str, str]] = []
    for model, strategy in present:
        if strategy == BASELINE_STRATEGY:
            continue
        if (model, BASELINE_STRATEGY) in present:
            pairs.append((model, BASELINE_STRATEGY, strategy))
        counterpart = mirror_counterpart(strategy)
        if counterpart not in (None, BASELINE_STRATEGY) and (model, counterpart) in present:
            pairs.append((model, counterpart, strategy))
    return pairs


def _matching(results: AuditResults, model: str, baseline: str, other: str) -> list[tuple[GroupKey, GroupKey]]:
    """(baseline key, other key) for every suite and severity both strategies were audited at."""
    out = []
    for key in results.keys:
        if key.model == model and key.strategy == baseline:
            twin = GroupKey(model, other, key.suite, key.severity_name, key.noise_scale, key.severity)
            if twin in results.audits:
                out.append((key, twin))
    return out


def _comparison(results: AuditResults, base: GroupKey, other: GroupKey, metric: str, level: str,
                seeds: tuple[int, ...], test: PairedTest) -> Comparison:
    return Comparison(base.model, base.strategy, other.strategy, results.label(base.model, base.strategy),
                      results.label(other.model, other.strategy), base.suite_key, base.severity, metric, level,
                      seeds, test)


def compare_seeds(results: AuditResults, metric: str) -> list[Comparison]:
    """Differences in relative drop across seeds (paired by run seed) for every strategy pair."""
    metric = results.require_metric(metric)
    out = []
    for model, baseline, other in strategy_pairs(results):
        for base_key, other_key in _matching(results, model, baseline, other):
            base = {s.run_seed: s.drop for s in results.cell(base_key, metric).seeds}
            oth = {s.run_seed: s.drop for s in results.cell(other_key, metric).seeds}
            common = tuple(sorted(set(base) & set(oth)))
            test = paired_test([oth[s] for s in common], [base[s] for s in common])
            out.append(_comparison(results, base_key, other_key, metric, SEEDS, common, test))
    return out


def per_user_drop(audit: RunAudit, metric: str, cache: PerUserCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(users, clean_u - mean over repeats of perturbed_u) over the users present in every record."""
    cache = {} if cache is None else cache
    arrays = [_per_user(path, record, metric, cache) for path, record in (audit.clean, *audit.perturbed)]
    users = reduce(np.intersect1d, [u for u, _ in arrays])
    aligned = [values[np.searchsorted(u, users)] for u, values in arrays]
    return users, aligned[0] - np.mean(aligned[1:], axis=0)


def _per_user(source: Path, record: Record, metric: str, cache: PerUserCache) -> tuple[np.ndarray, np.ndarray]:
    """Sorted user ids and the metric's per-user values of one record."""
    if not record.per_user:
        raise DataError(f"record of {record.run} ({record.suite}) has no per-user values")
    key = (str(source.parent / record.per_user["file"]), record.per_user["key"])
    if key not in cache:
        cache[key] = read_per_user(source, record)
    data = cache[key]
    if "users" not in data or metric not in data:
        raise DataError(f"per-user values of {record.run} ({record.suite}) lack 'users' or {metric}")
    users, values = np.asarray(data["users"]), np.asarray(data[metric], dtype=float)
    if users.shape != values.shape or np.unique(users).size != users.size:
        raise DataError(f"per-user values of {record.run} ({record.suite}) are malformed")
    order = np.argsort(users)
    return users[order], values[order]


def _has_per_user(audit: RunAudit) -> bool:
    return all(r.per_user for _, r in (audit.clean, *audit.perturbed))


def compare_users(results: AuditResults, metric: str, seeds: Sequence[int] | None = None,
                  cache: PerUserCache | None = None) -> list[Comparison]:
    """Per-seed paired tests over users of the per-user drop, where per-user values are available.

    ``seeds`` limits the seeds tested (default: every seed both strategies were audited with).
    """
    metric = results.require_metric(metric)
    cache = {} if cache is None else cache
    out = []
    for model, baseline, other in strategy_pairs(results):
        for base_key, other_key in _matching(results, model, baseline, other):
            base = {a.run_seed: a for a in results.audits[base_key] if _has_per_user(a)}
            oth = {a.run_seed: a for a in results.audits[other_key] if _has_per_user(a)}
            for seed in sorted(set(base) & set(oth)):
                if seeds is not None and seed not in seeds:
                    continue
                bu, bd = per_user_drop(base[seed], metric, cache)
                ou, od = per_user_drop(oth[seed], metric, cache)
                users = np.intersect1d(bu, ou)
                test = paired_test(od[np.searchsorted(ou, users)], bd[np.searchsorted(bu, users)])
                out.append(_comparison(results, base_key, other_key, metric, USERS, (seed,), test))
    return out


def compare(results: AuditResults, metric: str, users: bool = True,
            cache: PerUserCache | None = None) -> list[Comparison]:
    """Seed-level comparisons, followed by user-level ones (when ``users`` and per-user data exist).

    ``cache`` keeps per-user arrays read from disk; pass one dict when comparing several metrics.
    """
    found = compare_seeds(results, metric)
    return found + (compare_users(results, metric, cache=cache) if users else [])
