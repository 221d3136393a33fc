"""Aggregation of audit records into relative drops, checked against hand-computed numbers."""

from __future__ import annotations

import dataclasses
import math

import pytest

from reports.drops import (
    GroupKey,
    SuiteKey,
    format_severity,
    load_results,
    mirror_counterpart,
    parse_fraction,
    relative_drop,
    row_label,
)
from robustrec.errors import ConfigError, DataError

NOISE = ("noise", "sigma2", "absolute")


def key(model: str, strategy: str, severity: float) -> GroupKey:
    return GroupKey(model, strategy, *NOISE, severity)


def test_one_seed_matches_hand_computed_drop(write_audit, make, audit_dir):
    write_audit("a", make("freedom", "plain", 1, 0.2, {1e-6: [0.18, 0.17, 0.19]}))
    cell = load_results(audit_dir).cell(key("freedom", "plain", 1e-6), "recall@20")
    # mean perturbed = (0.18 + 0.17 + 0.19) / 3 = 0.18; drop = (0.2 - 0.18) / 0.2 = 0.1
    assert cell.clean_mean == pytest.approx(0.2)
    assert cell.perturbed_mean == pytest.approx(0.18)
    assert cell.drop_mean == pytest.approx(0.1)
    # std over repeats (one seed): deviations -0.00, -0.01, +0.01 -> sqrt(0.0002 / 2) = 0.01
    assert cell.perturbed_std == pytest.approx(0.01)
    assert math.isnan(cell.drop_std)  # one seed: no spread over seeds
    assert (cell.n_seeds, cell.n_repeats) == (1, (3, 3))


def test_mean_and_std_over_seeds(paper_like):
    results = load_results(paper_like)
    cell = results.cell(key("freedom", "plain", 1e-6), "recall@20")
    # seed 1: clean 0.20, mean 0.18 -> drop 0.10; seed 2: 0.25, 0.20 -> 0.20; seed 3: 0.30, 0.27 -> 0.10
    assert [s.drop for s in cell.seeds] == pytest.approx([0.1, 0.2, 0.1])
    assert cell.drop_mean == pytest.approx(0.4 / 3)
    # deviations from 0.1333: -1/30, +2/30, -1/30 -> sqrt((1 + 4 + 1) / 900 / 2) = sqrt(1/300)
    assert cell.drop_std == pytest.approx(math.sqrt(1 / 300))
    assert cell.clean_mean == pytest.approx(0.25)
    assert cell.clean_std == pytest.approx(0.05)
    # std of the per-seed means (0.18, 0.20, 0.27) over seeds
    assert cell.perturbed_mean == pytest.approx(0.65 / 3)
    assert cell.perturbed_std == pytest.approx(math.sqrt(((0.18 - 0.65 / 3) ** 2 + (0.2 - 0.65 / 3) ** 2
                                                          + (0.27 - 0.65 / 3) ** 2) / 2))
    # recall@5 is half of recall@20 in every record: same relative drop
    assert results.cell(key("freedom", "plain", 1e-6), "recall@5").drop_mean == pytest.approx(0.4 / 3)


def test_groups_rows_and_severities(paper_like):
    results = load_results(paper_like)
    assert results.dataset == "baby"
    assert results.rows() == [("freedom", "plain"), ("freedom", "mirror"), ("vbpr", "plain")]
    assert results.suites == [SuiteKey(*NOISE)]
    assert results.severities(SuiteKey(*NOISE)) == [1e-6, 1e-4]
    assert results.label("freedom", "mirror") == "FREEDOM + MG"


def test_zero_clean_gives_undefined_drop(write_audit, make, audit_dir):
    write_audit("a", make("pop", "plain", 1, 0.0, {1e-6: [0.0, 0.0]}))
    cell = load_results(audit_dir).cell(key("pop", "plain", 1e-6), "recall@20")
    assert math.isnan(cell.drop_mean)
    assert math.isnan(relative_drop(0.0, 0.1))


def test_relative_noise_is_its_own_suite(write_audit, make, audit_dir):
    write_audit("abs", make(perturbed={1e-6: [0.19]}))
    write_audit("rel", make(perturbed={0.01: [0.19]}, severity_name="scale", details={"noise_scale": "relative"}))
    titles = [s.title for s in load_results(audit_dir).suites]
    assert sorted(titles) == ["noise (relative scale)", "noise (sigma2)"]


def test_old_clean_records_without_noise_scale_still_pair_with_their_audit(write_audit, make, audit_dir):
    """Audits before 0.2 wrote no noise scale into clean records: an absolute and a relative audit
    of one run in one folder then had two candidate clean records for the relative one."""
    write_audit("abs", make(perturbed={1e-6: [0.19]}, clean=0.2))
    relative = make(perturbed={0.01: [0.15]}, severity_name="scale", details={"noise_scale": "relative"}, clean=0.2)
    relative[0] = dataclasses.replace(relative[0], details={})  # the clean record, as old audits wrote it
    write_audit("rel", relative)
    results = load_results(audit_dir)
    [suite] = [s for s in results.suites if s.severity_name == "scale"]
    cell = results.cell(GroupKey("freedom", "plain", suite.suite, suite.severity_name, suite.noise_scale, 0.01),
                        "recall@20")
    assert cell.drop_mean == pytest.approx(0.25)


def test_mixing_datasets_is_refused(write_audit, make, audit_dir):
    write_audit("a", make(dataset="baby"))
    write_audit("b", make(strategy="mirror", dataset="sports", fingerprint="fp-sports"))
    with pytest.raises(DataError, match="different datasets.*'baby'.*'sports'"):
        load_results(audit_dir)


def test_same_name_other_fingerprint_is_refused(write_audit, make, audit_dir):
    write_audit("a", make(fingerprint="aaa"))
    write_audit("b", make(strategy="mirror", fingerprint="bbb"))
    with pytest.raises(DataError, match="fingerprint aaa.*fingerprint bbb"):
        load_results(audit_dir)


def test_run_audited_twice_with_different_clean_values(write_audit, make, audit_dir):
    write_audit("a", make(clean=0.2))
    write_audit("b", make(clean=0.21))
    with pytest.raises(DataError, match="two clean records.*different clean values"):
        load_results(audit_dir)


def test_duplicate_repeat_is_refused(write_audit, make, audit_dir):
    records = make()
    write_audit("a", records + [records[1]])
    with pytest.raises(DataError, match="repeat 0 .* appears twice"):
        load_results(audit_dir)


def test_missing_clean_record(write_audit, make, audit_dir):
    write_audit("a", make()[1:])
    with pytest.raises(DataError, match="no clean record"):
        load_results(audit_dir)


def test_shared_clean_record_is_used_for_every_suite(write_audit, make, audit_dir):
    clean = make(suite="clean", perturbed={})
    noise = make(perturbed={1e-6: [0.19]})[1:]
    caption = make(suite="caption", severity_name="prob", perturbed={0.5: [0.1]})[1:]
    write_audit("a", clean + noise + caption)
    results = load_results(audit_dir)
    cell = results.cell(GroupKey("freedom", "plain", "caption", "prob", "", 0.5), "recall@20")
    assert cell.drop_mean == pytest.approx(0.5)  # (0.2 - 0.1) / 0.2


def test_missing_folder_and_unknown_metric(tmp_path, paper_like):
    with pytest.raises(DataError, match="no such file"):
        load_results(tmp_path / "nope")
    with pytest.raises(ConfigError, match="unknown metric"):
        load_results(paper_like).cells("recal@20")
    with pytest.raises(DataError, match="not in every record"):
        load_results(paper_like).cells("ndcg@5")


@pytest.mark.parametrize(("model", "strategy", "label", "expected"), [
    ("freedom", "plain", "", "FREEDOM"),
    ("bm3", "plain", "plain", "BM3"),
    ("freedom", "mirror", "", "FREEDOM + MG"),
    ("freedom", "mirror", "MG", "FREEDOM + MG"),
    ("vbpr", "amr+mirror", "AMR+MG", "VBPR + AMR + MG"),
    ("vbpr", "amr", "", "VBPR + AMR"),
    ("grcn", "ssam-f", "", "GRCN + SSAM-F"),
])
def test_row_labels(model, strategy, label, expected):
    assert row_label(model, strategy, label) == expected


def test_small_helpers():
    assert mirror_counterpart("mirror") == "plain"
    assert mirror_counterpart("amr+mirror") == "amr"
    assert mirror_counterpart("amr") is None
    assert [format_severity(x) for x in (1e-6, 1e-4, 0.01, 0.5, 1.0)] == ["1e-06", "0.0001", "0.01", "0.5", "1"]
    assert parse_fraction("5%") == pytest.approx(0.05)
    assert parse_fraction("0.05") == 0.05
    for bad in ("abc", "5", "-0.1", "nan"):
        with pytest.raises(ConfigError):
            parse_fraction(bad)
