"""Significance of a difference in robustness between two strategies of one model.

Two levels, per suite, severity and metric:

- across seeds: the relative drops of the two strategies paired by ``run_seed``; the difference is
  ``other - baseline`` (negative: the other strategy drops less);
- across users, within one seed: the per-user drop ``clean_u - mean over repeats of perturbed_u``
  (absolute, in metric units) of the two strategies paired by user id.

Each pair of samples gets a paired t-test (``scipy.stats.ttest_rel``) and a Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``). Fewer than two pairs give NaN p-values ("n/a": no test, not a hypothesis);
identical samples give p = 1.

Multiple comparisons: the p-values of one *family* are Holm-corrected together, each test's
separately. A family is one model, one suite (with its severity meaning) and one level (seeds or
users): every strategy pair, severity and metric reported for that model and suite, and at the user
level every seed. It is what one significance table of a report shows.

Verdicts read both corrected p-values: a strategy "drops less" (or "more") only when both tests say
so at ``alpha``; when one does and the other does not the verdict says that the tests disagree, and
which found the difference. With few seeds the exact Wilcoxon test cannot reach ``alpha`` at all: its
smallest two-sided p-value is 2 / 2**n (0.0625 with five seeds), and Holm multiplies the smallest
p-value of a family of m tests by m (so no corrected p-value is below m * 2 / 2**n). The verdict then
says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
    def tested(self) -> bool:
        """Whether there were enough pairs for a test (otherwise the p-values are NaN)."""
        return not math.isnan(self.t_pvalue)


@dataclass(frozen=True)
class Comparison:
    """One strategy against its baseline for one model, suite, severity and metric.

    ``test`` holds the raw p-values; ``corrected`` the same test with Holm-corrected p-values over the
    ``family_size`` tested comparisons of its family (see the module docstring), and
    ``wilcoxon_floor`` the smallest corrected Wilcoxon p-value its family could have given. A
    comparison made on its own is a family of one (``corrected == test``) until :func:`holm_correct`
    sees its family.
    """

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
    corrected: PairedTest
    family_size: int
    wilcoxon_floor: float

    @property
    def family(self) -> tuple[str, SuiteKey, str]:
        """(model, suite, level): the comparisons whose p-values are corrected together."""
        return (self.model, self.suite, self.level)

    def verdict(self, alpha: float = ALPHA) -> str:
        """The verdict of both Holm-corrected tests (see :func:`verdict`)."""
        return verdict(self.corrected, self.other_label, alpha, self.wilcoxon_floor, self.family_size)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the i-th
    is max over j <= i of min(1, (m - j + 1) * p_(j)). Rejecting where the adjusted p < alpha keeps the
    family-wise error rate at alpha. NaN (a test that could not be run) is no hypothesis: it does not
    count in m and stays NaN.
    """
    finite = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(finite)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def holm_correct(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons with Holm-corrected p-values within each family (order kept)."""
    families: dict[tuple[str, SuiteKey, str], list[int]] = {}
    for i, c in enumerate(comparisons):
        families.setdefault(c.family, []).append(i)
    out = list(comparisons)
    for members in families.values():
        tests = [comparisons[i].test for i in members]
        t_adjusted = holm([t.t_pvalue for t in tests])
        w_adjusted = holm([t.wilcoxon_pvalue for t in tests])
        size = sum(t.tested for t in tests)
        # every adjusted p is at least m times the family's smallest raw p (Holm's first step)
        floor = min(1.0, size * min((min_wilcoxon_p(t.n) for t in tests if t.tested), default=1.0))
        for i, test, t_p, w_p in zip(members, tests, t_adjusted, w_adjusted):
            corrected = replace(test, t_pvalue=t_p, wilcoxon_pvalue=w_p)
            out[i] = replace(comparisons[i], corrected=corrected, family_size=size, wilcoxon_floor=floor)
    return out


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon signed-rank test can give with ``n`` pairs:
    all differences of one sign, 2 / 2**n. (scipy switches to a normal approximation for large n,
    where this bound is far below any threshold anyway.)"""
    return min(1.0, 2.0 ** (1 - n)) if n >= 1 else 1.0


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


def verdict(test: PairedTest, other_label: str, alpha: float = ALPHA, wilcoxon_floor: float | None = None,
            family_size: int = 1) -> str:
    """What both tests say at ``alpha`` (pass Holm-corrected p-values):

    ``"FREEDOM + MG drops less"`` (both tests), ``"no significant difference"`` (neither), or
    ``"tests disagree: the t-test finds FREEDOM + MG drops less, the Wilcoxon test does not"``, with
    ``"(it cannot reach p < 0.05 with n = 5)"`` when the Wilcoxon test could not have agreed:
    ``wilcoxon_floor`` (default: :func:`min_wilcoxon_p` of n) is its smallest attainable p-value,
    after the correction over ``family_size`` tests.
    """
    if not test.tested:
        return f"n/a (n = {test.n})"
    t_significant = test.t_pvalue < alpha
    w_significant = test.wilcoxon_pvalue < alpha
    finding = f"{other_label} drops {'less' if test.mean_diff < 0 else 'more'}"
    if t_significant and w_significant:
        return finding
    if not t_significant and not w_significant:
        return "no significant difference"
    if t_significant:
        text = f"tests disagree: the t-test finds {finding}, the Wilcoxon test does not"
        floor = min_wilcoxon_p(test.n) if wilcoxon_floor is None else wilcoxon_floor
        if floor >= alpha:
            corrected = f", corrected over {family_size} tests" if family_size > 1 else ""
            text += f" (it cannot reach p < {alpha:g} with n = {test.n}{corrected})"
        return text
    return f"tests disagree: the Wilcoxon test finds {finding}, the t-test does not"


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
    """An uncorrected comparison: a family of its own (of no test when it could not be tested)."""
    return Comparison(base.model, base.strategy, other.strategy, results.label(base.model, base.strategy),
                      results.label(other.model, other.strategy), base.suite_key, base.severity, metric, level,
                      seeds, test, corrected=test, family_size=int(test.tested),
                      wilcoxon_floor=min_wilcoxon_p(test.n))


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


def compare(results: AuditResults, metrics: str | Sequence[str], users: bool = True,
            cache: PerUserCache | None = None) -> list[Comparison]:
    """Seed-level comparisons of every metric, then user-level ones (when ``users`` and per-user data
    exist), Holm-corrected within each family across the metrics given (see the module docstring).

    ``cache`` keeps per-user arrays read from disk between calls.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    cache = {} if cache is None else cache
    found = [c for m in metrics for c in compare_seeds(results, m)]
    if users:
        found += [c for m in metrics for c in compare_users(results, m, cache=cache)]
    return holm_correct(found)
