"""Significance tests and verdicts on constructed inputs with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports.drops import load_results
from reports.stats import PairedTest, compare_seeds, compare_users, paired_test, per_user_drop, verdict

PLAIN_DROPS = [0.10, 0.12, 0.11, 0.13, 0.09]


def write_seeds(write_audit, make, plain_drops, other_drops, clean=0.2):
    """FREEDOM plain and mirror over seeds 1..n; each seed's single repeat gives exactly that drop."""
    for seed, (dp, dm) in enumerate(zip(plain_drops, other_drops), start=1):
        write_audit(f"p{seed}", make("freedom", "plain", seed, clean, {1e-6: [clean * (1 - dp)]}))
        write_audit(f"m{seed}", make("freedom", "mirror", seed, clean, {1e-6: [clean * (1 - dm)]}, label="MG"))


def test_identical_samples_give_p_one():
    test = paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert (test.n, test.mean_diff, test.t_pvalue, test.wilcoxon_pvalue) == (3, 0.0, 1.0, 1.0)
    assert verdict(test, "X") == "no significant difference (p = 1.00, n = 3)"


def test_too_few_pairs_is_not_applicable():
    test = paired_test([0.1], [0.2])
    assert test.n == 1 and math.isnan(test.t_pvalue) and math.isnan(test.wilcoxon_pvalue)
    assert verdict(test, "X") == "n/a (n = 1)"


def test_constant_nonzero_difference_is_significant():
    test = paired_test([0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4])
    assert test.t_pvalue == 0.0
    assert verdict(test, "X").startswith("X drops more")


def test_verdict_strings():
    assert verdict(PairedTest(5, 0.01, 0.41, 0.5), "FREEDOM + MG") == "no significant difference (p = 0.41, n = 5)"
    assert verdict(PairedTest(5, -0.05, 0.003, 0.06), "FREEDOM + MG") == "FREEDOM + MG drops less (p = 0.003, n = 5)"
    assert verdict(PairedTest(5, 0.05, 0.003, 0.06), "FREEDOM + MG") == "FREEDOM + MG drops more (p = 0.003, n = 5)"


@pytest.mark.parametrize(("shift", "expected"), [
    (-0.05, "FREEDOM + MG drops less"),
    (+0.05, "FREEDOM + MG drops more"),
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
    assert comparison.verdict().endswith("n = 5)")


def test_seed_level_null(write_audit, make, audit_dir):
    noise = [0.01, -0.01, 0.005, -0.005, 0.0]
    write_seeds(write_audit, make, PLAIN_DROPS, [d + e for d, e in zip(PLAIN_DROPS, noise)])
    [comparison] = compare_seeds(load_results(audit_dir), "recall@20")
    assert comparison.test.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert comparison.verdict().startswith("no significant difference (p = ")
    assert comparison.verdict().endswith(", n = 5)")


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
    assert comparison.verdict().startswith("FREEDOM + MG drops less (p = <1e-4, n = 200)")
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
    assert comparison.verdict() == "no significant difference (p = 1.00, n = 200)"


def test_user_level_skipped_without_per_user_values(paper_like):
    assert compare_users(load_results(paper_like), "recall@20") == []
