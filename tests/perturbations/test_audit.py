"""Audits: severity sweeps equal separate audits, seeds reproduce, records carry provenance."""

from __future__ import annotations

import pytest

from perturbations import AuditConfig, audit_run
from robustrec.errors import ConfigError
from robustrec.records import read_records
from robustrec.runs import RunSpec, TrainConfig, open_run
from robustrec.train import train


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    train(tiny, RunSpec("vbpr", train=TrainConfig(epochs=2, batch_size=64, topk=(5, 10, 20))), out, progress=False)
    return open_run(out)


def records(run, dataset, tmp_path, name, **config):
    path = audit_run(run, dataset, AuditConfig("noise", **config), tmp_path / name, progress=False)
    return read_records(path)


def by_key(rows):
    return {(r.severity, r.repeat): r.metrics for r in rows if not r.is_clean}


def test_a_severity_list_equals_separate_audits(run, tiny, tmp_path):
    sweep = records(run, tiny, tmp_path, "sweep", severities=(1e-4, 1e-2), repeats=2, seed=5)
    one = records(run, tiny, tmp_path, "one", severities=(1e-4,), repeats=2, seed=5)
    two = records(run, tiny, tmp_path, "two", severities=(1e-2,), repeats=2, seed=5)
    assert by_key(sweep) == {**by_key(one), **by_key(two)}
    clean = [r for r in sweep if r.is_clean]
    assert len(clean) == 1 and clean[0].metrics == [r for r in one if r.is_clean][0].metrics


def test_same_seed_same_records_other_seed_other_draws(run, tiny, tmp_path):
    a = records(run, tiny, tmp_path, "a", severities=(1e-2,), repeats=3, seed=1)
    b = records(run, tiny, tmp_path, "b", severities=(1e-2,), repeats=3, seed=1)
    c = records(run, tiny, tmp_path, "c", severities=(1e-2,), repeats=3, seed=2)
    assert by_key(a) == by_key(b)
    assert by_key(a) != by_key(c)


def test_zero_severity_records_equal_the_clean_record(run, tiny, tmp_path):
    for scale, severity in (("absolute", 0.0), ("relative", 0.0)):
        rows = records(run, tiny, tmp_path, scale, severities=(severity,), repeats=2, noise_scale=scale)
        clean = next(r for r in rows if r.is_clean).metrics
        assert all(r.metrics == clean for r in rows)


def test_records_carry_provenance_and_per_user_values(run, tiny, tmp_path):
    rows = records(run, tiny, tmp_path, "prov", severities=(1e-3,), repeats=1, noise_scale="relative")
    perturbed = next(r for r in rows if not r.is_clean)
    assert perturbed.model == "vbpr" and perturbed.strategy == "plain" and perturbed.suite == "noise"
    assert perturbed.dataset_fingerprint == tiny.fingerprint and perturbed.config_hash == run.info["config_hash"]
    assert perturbed.severity_name == "scale" and perturbed.details["noise_scale"] == "relative"
    assert perturbed.details["effective_sigma"]["item_embedding"] > 0
    assert {"robustrec_version", "device", "time", "audit"} <= set(perturbed.provenance)
    assert perturbed.per_user is not None


def test_bad_audit_configs():
    with pytest.raises(ConfigError, match="unknown suite"):
        AuditConfig("fog")
    with pytest.raises(ConfigError, match="repeats"):
        AuditConfig("noise", repeats=0)
    with pytest.raises(ConfigError, match="distinct"):
        AuditConfig("noise", severities=(1e-4, 1e-4))
