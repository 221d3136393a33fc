"""Significance tests and verdicts on constructed inputs with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports.drops import load_results
from reports.stats import (
    PairedTest,
    compare,
    compare_seeds,
    compare_users,
    holm,
    min_wilcoxon_p,
    paired_test,
    per_user_drop,
    verdict,
)

PLAIN_DROPS = [0.10, 0.12, 0.11, 0.13, 0.09]


def write_seeds(write_audit, make, plain_drops, other_drops, clean=0.2):
    """FREEDOM plain and mirror over seeds 1..n; each seed's single repeat gives exactly that drop."""
    for seed, (dp, dm) in enumerate(zip(plain_drops, other_drops), start=1):
        write_audit(f"p{seed}", make("freedom", "plain", seed, clean, {1e-6: [clean * (1 - dp)]}))
        write_audit(f"m{seed}", make("freedom", "mirror", seed, clean, {1e-6: [clean * (1 - dm)]}, label="MG"))


def test_identical_samples_give_p_one():
    test = paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert (test.n, test.mean_diff, test.t_pvalue, test.wilcoxon_pvalue) == (3, 0.0, 1.0, 1.0)
    assert verdict(test, "X") == "no significant difference"


def test_too_few_pairs_is_not_applicable():
    test = paired_test([0.1], [0.2])
    assert test.n == 1 and math.isnan(test.t_pvalue) and math.isnan(test.wilcoxon_pvalue)
    assert verdict(test, "X") == "n/a (n = 1)"


def test_constant_nonzero_difference_is_significant():
    test = paired_test([0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4])
    assert test.t_pvalue == 0.0
    # the t-test is certain, but an exact Wilcoxon test on 4 pairs cannot go below p = 0.125
    assert verdict(test, "X") == ("tests disagree: the t-test finds X drops more, the Wilcoxon test does not "
                                  "(it cannot reach p < 0.05 with n = 4)")


def test_verdict_uses_both_tests():
    label = "FREEDOM + MG"
    assert verdict(PairedTest(5, 0.01, 0.41, 0.5), label) == "no significant difference"
    assert verdict(PairedTest(6, -0.05, 0.003, 0.031), label) == "FREEDOM + MG drops less"
    assert verdict(PairedTest(6, 0.05, 0.003, 0.031), label) == "FREEDOM + MG drops more"
    assert verdict(PairedTest(6, -0.05, 0.003, 0.09), label) == (
        "tests disagree: the t-test finds FREEDOM + MG drops less, the Wilcoxon test does not")
    assert verdict(PairedTest(30, -0.05, 0.2, 0.01), label) == (
        "tests disagree: the Wilcoxon test finds FREEDOM + MG drops less, the t-test does not")
    assert verdict(PairedTest(5, -0.05, 0.003, 0.0625), label).endswith(
        "the Wilcoxon test does not (it cannot reach p < 0.05 with n = 5)")
    # six seeds can reach 0.031 alone, but not after Holm's correction over two tests (0.0625)
    assert verdict(PairedTest(6, -0.05, 0.003, 0.0625), label, wilcoxon_floor=0.0625, family_size=2).endswith(
        "the Wilcoxon test does not (it cannot reach p < 0.05 with n = 6, corrected over 2 tests)")
    assert verdict(PairedTest(6, -0.05, 0.003, 0.0625), label).endswith("the Wilcoxon test does not")


def test_smallest_wilcoxon_p_is_the_exact_tests_floor():
    """Two-sided exact signed-rank test: all n differences of one sign give p = 2 / 2**n."""
    from scipy import stats

    for n in (3, 5, 6, 8):
        diffs = np.arange(1.0, n + 1)
        assert min_wilcoxon_p(n) == pytest.approx(stats.wilcoxon(diffs).pvalue)
    assert min_wilcoxon_p(5) == pytest.approx(0.0625)
    assert min_wilcoxon_p(100) < 1e-20


def test_holm_on_a_hand_computed_example():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN (a test that could not be run) is not a hypothesis: m = 2 here, and it stays NaN
    adjusted = holm([0.01, math.nan, 0.02])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([0.3]) == [0.3] and holm([]) == []


def test_holm_invariants_on_random_p_values():
    """Adjusted p >= raw p, at most 1, in the same order as the raw p, and no smaller than Bonferroni
    allows for the smallest (m * min p)."""
    rng = np.random.default_rng(0)
    for m in (2, 5, 17):
        raw = rng.uniform(0, 0.2, size=m).tolist()
        adjusted = holm(raw)
        assert all(r <= a <= 1 for r, a in zip(raw, adjusted))
        order = np.argsort(raw)
        assert np.all(np.diff(np.asarray(adjusted)[order]) >= 0)
        assert min(adjusted) == pytest.approx(min(1.0, m * min(raw)))


@pytest.mark.parametrize(("shift", "expected"), [
    (-0.05, "tests disagree: the t-test finds FREEDOM + MG drops less"),
    (+0.05, "tests disagree: the t-test finds FREEDOM + MG drops more"),
])
def test_seed_level_known_difference(write_audit, make, audit_dir, shift, expected):
    jitter = [0.002, -0.001, 0.0, 0.001, -0.002]
    write_seeds(write_audit, make, PLAIN_DROPS, [d + shift + j for d, j in zip(PLAIN_DROPS, jitter)])
    [comparison] = compare_seeds(load_results(audit_dir), "recall@20")
    assert (comparison.baseline, comparison.other, comparison.seeds) == ("plain", "mirror", (1, 2, 3, 4, 5))
    assert comparison.test.n == 5
    assert comparison.test.mean_diff == pytest.approx(shift)
    assert comparison.test.t_pvalue < 1e-4
    assert comparison.test.wilcoxon_pvalue == pytest.approx(0.0625)  # the exact test's floor at n = 5
    assert comparison.verdict().startswith(expected)
    assert comparison.verdict().endswith("(it cannot reach p < 0.05 with n = 5)")


def test_seed_level_null(write_audit, make, audit_dir):
    noise = [0.01, -0.01, 0.005, -0.005, 0.0]
    write_seeds(write_audit, make, PLAIN_DROPS, [d + e for d, e in zip(PLAIN_DROPS, noise)])
    [comparison] = compare_seeds(load_results(audit_dir), "recall@20")
    assert comparison.test.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert comparison.verdict() == "no significant difference"


def test_seeds_are_paired_by_run_seed(write_audit, make, audit_dir):
    # plain has seeds 1, 2, 3; mirror only 2 and 3 -> two pairs
    for seed in (1, 2, 3):
        write_audit(f"p{seed}", make("freedom", "plain", seed, 0.2, {1e-6: [0.18]}))
    for seed in (2, 3):
        write_audit(f"m{seed}", make("freedom", "mirror", seed, 0.2, {1e-6: [0.19]}))
    [comparison] = compare_seeds(load_results(audit_dir), "recall@20")
    assert comparison.seeds == (2, 3)
    assert comparison.test.mean_diff == pytest.approx(-0.05)  # 0.05 - 0.10


def write_users(write_audit, make, arrays, plain_loss, mirror_loss):
    """Seed 1, 200 users; perturbed_u = clean_u - loss_u in both repeats (so per-user drop = loss_u)."""
    rng = np.random.default_rng(0)
    users = np.arange(200)
    clean = rng.uniform(0.2, 0.8, size=200)
    for name, strategy, loss in (("p", "plain", plain_loss), ("m", "mirror", mirror_loss)):
        records = make("freedom", strategy, 1, float(clean.mean()), {1e-6: [0.1, 0.1]})
        # users listed in a different order in the repeats: pairing must go by user id
        order = rng.permutation(200)
        per_user = {0: arrays(users, clean), 1: arrays(users[order], (clean - loss)[order]),
                    2: arrays(users, clean - loss)}
        write_audit(name, records, per_user)


def test_user_level_known_difference(write_audit, make, arrays, audit_dir):
    rng = np.random.default_rng(1)
    plain_loss = 0.05 + rng.normal(0, 0.01, size=200)
    write_users(write_audit, make, arrays, plain_loss, plain_loss - 0.02)
    results = load_results(audit_dir)
    [comparison] = compare_users(results, "recall@20")
    assert (comparison.level, comparison.seeds, comparison.test.n) == ("users", (1,), 200)
    assert comparison.test.mean_diff == pytest.approx(-0.02)
    assert comparison.verdict() == "FREEDOM + MG drops less"
    audit = results.audits[results.keys[0]][0]
    users, drop = per_user_drop(audit, "recall@20")
    assert np.array_equal(users, np.arange(200))
    assert drop == pytest.approx(plain_loss)


def test_user_level_null(write_audit, make, arrays, audit_dir):
    plain_loss = np.full(200, 0.05)
    symmetric = np.where(np.arange(200) % 2 == 0, 0.01, -0.01)  # mean difference exactly 0
    write_users(write_audit, make, arrays, plain_loss, plain_loss + symmetric)
    [comparison] = compare_users(load_results(audit_dir), "recall@20")
    assert comparison.test.t_pvalue == pytest.approx(1.0)
    assert comparison.verdict() == "no significant difference"


def test_user_level_skipped_without_per_user_values(paper_like):
    assert compare_users(load_results(paper_like), "recall@20") == []


def test_holm_family_is_one_model_suite_and_level(paper_like):
    """paper_like: FREEDOM plain vs MG at 2 severities; with 2 metrics the seed-level family has 4 tests."""
    results = load_results(paper_like)
    comparisons = compare(results, ["recall@20", "ndcg@20"])
    assert len(comparisons) == 4 and {c.family_size for c in comparisons} == {4}
    assert len({c.family for c in comparisons}) == 1
    raw_t = [c.test.t_pvalue for c in comparisons]
    raw_w = [c.test.wilcoxon_pvalue for c in comparisons]
    assert [c.corrected.t_pvalue for c in comparisons] == pytest.approx(holm(raw_t))
    assert [c.corrected.wilcoxon_pvalue for c in comparisons] == pytest.approx(holm(raw_w))
    assert all(c.corrected.t_pvalue >= c.test.t_pvalue for c in comparisons)
    # one metric alone is a family of 2; the uncorrected per-level functions are families of one
    assert {c.family_size for c in compare(results, "recall@20")} == {2}
    assert all(c.corrected == c.test and c.family_size == 1 for c in compare_seeds(results, "recall@20"))
    # 3 seeds: each Wilcoxon p is at least 0.25, so a family of 4 cannot go below 1
    assert {c.wilcoxon_floor for c in comparisons} == {1.0}
    disagreeing = [c for c in comparisons if c.verdict().startswith("tests disagree")]
    assert disagreeing  # 1e-4: the t-test survives the correction (p = 0.0082 * 4), the Wilcoxon cannot
    assert all("cannot reach p < 0.05 with n = 3, corrected over 4 tests" in c.verdict() for c in disagreeing)


def test_families_do_not_mix_models_or_levels(write_audit, make, arrays, audit_dir):
    write_users(write_audit, make, arrays, np.full(200, 0.05), np.full(200, 0.04))
    for seed in (1, 2, 3):  # a second model, seeds only
        write_audit(f"bp{seed}", make("bm3", "plain", seed, 0.2, {1e-6: [0.18]}))
        write_audit(f"bm{seed}", make("bm3", "mirror", seed, 0.2, {1e-6: [0.19 - 0.001 * seed]}))
    comparisons = compare(load_results(audit_dir), "recall@20")
    families = {(c.model, c.level): c.family for c in comparisons}
    assert len(set(families.values())) == len(families) == 3  # freedom seeds, freedom users, bm3 seeds
    sizes = {(c.model, c.level): c.family_size for c in comparisons}
    assert sizes == {("freedom", "seeds"): 0, ("freedom", "users"): 1, ("bm3", "seeds"): 1}  # one seed: no test


def test_a_comparison_without_enough_seeds_is_no_hypothesis(write_audit, make, audit_dir):
    write_audit("p", make("freedom", "plain", 1, 0.2, {1e-6: [0.18], 1e-4: [0.1]}))
    write_audit("m", make("freedom", "mirror", 1, 0.2, {1e-6: [0.19], 1e-4: [0.15]}))
    comparisons = compare(load_results(audit_dir), "recall@20")
    assert [c.test.n for c in comparisons] == [1, 1]
    assert all(math.isnan(c.corrected.t_pvalue) for c in comparisons)
    assert {c.family_size for c in comparisons} == {0}
