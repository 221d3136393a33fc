"""Audits: severity sweeps equal separate audits, seeds reproduce, records carry provenance; bad
settings, unfinished runs and unwritable outputs are refused before any evaluation."""

from __future__ import annotations

import math

import pytest

from perturbations import AuditConfig, EmbeddingNoise, audit, audit_run
from robustrec.errors import ConfigError
from robustrec.records import read_records
from robustrec.runs import RunSpec, TrainConfig, open_run
from robustrec.training import train


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    train(tiny, RunSpec("vbpr", train=TrainConfig(epochs=2, batch_size=64, topk=(5, 10, 20))), out, progress=False)
    return open_run(out)


def records(run, dataset, tmp_path, name, noise_scale="absolute", **config):
    config = AuditConfig("noise", params={"noise_scale": noise_scale}, **config)
    path = audit_run(run, dataset, config, tmp_path / name, progress=False)
    return read_records(path)


def by_key(rows):
    return {(r.severity, r.repeat): r.metrics for r in rows if not r.is_clean}


def test_a_severity_list_equals_separate_audits(run, tiny, tmp_path):
    sweep = records(run, tiny, tmp_path, "sweep", severities=(1e-4, 1e-2), repeats=2, perturbation_seed=5)
    one = records(run, tiny, tmp_path, "one", severities=(1e-4,), repeats=2, perturbation_seed=5)
    two = records(run, tiny, tmp_path, "two", severities=(1e-2,), repeats=2, perturbation_seed=5)
    assert by_key(sweep) == {**by_key(one), **by_key(two)}
    clean = [r for r in sweep if r.is_clean]
    assert len(clean) == 1 and clean[0].metrics == [r for r in one if r.is_clean][0].metrics


def test_same_seed_same_records_other_seed_other_draws(run, tiny, tmp_path):
    a = records(run, tiny, tmp_path, "a", severities=(1e-2,), repeats=3, perturbation_seed=1)
    b = records(run, tiny, tmp_path, "b", severities=(1e-2,), repeats=3, perturbation_seed=1)
    c = records(run, tiny, tmp_path, "c", severities=(1e-2,), repeats=3, perturbation_seed=2)
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


def test_seeds_beyond_what_torch_accepts_are_config_errors():
    AuditConfig("noise", perturbation_seed=-5)  # negative seeds are fine for torch.Generator
    top = (2**64 - 1) // 1_000_003  # the largest seed whose repeat 0 fits
    AuditConfig("noise", perturbation_seed=top, repeats=1)
    for seed, repeats in ((10**30, 1), (top + 1, 1), (top, 2**64), (-(2**63), 1)):
        with pytest.raises(ConfigError, match="out of range"):
            AuditConfig("noise", perturbation_seed=seed, repeats=repeats)
    with pytest.raises(ConfigError, match="seed must be an integer"):
        AuditConfig("noise", perturbation_seed=1.5)


@pytest.mark.parametrize("severity", [math.inf, -math.inf, math.nan])
def test_non_finite_severities_are_config_errors(severity):
    with pytest.raises(ConfigError, match="severity must be a finite number"):
        EmbeddingNoise(severity)


def test_item_ids_beyond_64_bits_are_config_errors(run, tiny):
    with pytest.raises(ConfigError, match="item id 1180591620717411303424 is out of range"):
        EmbeddingNoise(1e-4, item_ids=(1, 2**70))
    noise = EmbeddingNoise(1e-4, item_ids=(1, 2**62))
    with pytest.raises(ConfigError, match=f"item id {2**62} is out of range"):
        noise.check(run.load_model(tiny), tiny)


def test_an_unfinished_run_is_refused_unless_allowed(run, tiny, tmp_path):
    import shutil

    folder = tmp_path / "killed"
    shutil.copytree(run.path, folder)
    (folder / "metrics.json").unlink()
    unfinished = open_run(folder)
    config = AuditConfig("noise", severities=(1e-4,), repeats=1)
    with pytest.raises(ConfigError, match="has not finished training"):
        audit([folder], config, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="has not finished training"):
        audit_run(unfinished, tiny, config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    path = audit_run(unfinished, tiny, config, tmp_path / "out", progress=False, allow_unfinished=True)
    assert {r.provenance["run_finished"] for r in read_records(path)} == {False}
    finished = audit_run(run, tiny, config, tmp_path / "finished", progress=False)
    assert {r.provenance["run_finished"] for r in read_records(finished)} == {True}


def test_an_output_that_is_a_file_is_refused_before_any_evaluation(run, tiny, tmp_path, monkeypatch):
    evaluations = []
    monkeypatch.setattr("robustrec.evaluate.Evaluator.evaluate", lambda *a, **k: evaluations.append(a))
    (tmp_path / "file").write_text("x")
    config = AuditConfig("noise", severities=(1e-4,), repeats=1)
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        audit([run.path], config, tmp_path / "file", progress=False)
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        audit_run(run, tiny, config, tmp_path / "file", progress=False)
    assert evaluations == [] and (tmp_path / "file").read_text() == "x"


def test_absolute_and_relative_noise_audits_of_one_run_report_together(run, tiny, tmp_path):
    """The clean record carries the suite's settings (noise_scale), so the report pairs each audit's
    perturbed records with its own clean record even when both audits share a folder."""
    from reports import load_results, render

    for scale, severity in (("absolute", 1e-4), ("relative", 0.5)):
        config = AuditConfig("noise", params={"noise_scale": scale}, severities=(severity,), repeats=1)
        path = audit_run(run, tiny, config, tmp_path / "both", progress=False)
        clean = next(r for r in read_records(path) if r.is_clean)
        assert clean.details["noise_scale"] == scale and clean.details["target"] == "items"
        assert clean.severity_name == config.severity_name and clean.details["clean"] is True
    text = render(load_results(tmp_path / "both"), "markdown", ["recall@20"])
    assert "noise (relative scale)" in text and "sigma2 = 0.0001" in text
