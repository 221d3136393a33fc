"""The demo end to end on a small synthetic shop (the README's main job, scaled down)."""

from __future__ import annotations

import importlib.util

import pytest

from robustrec.data.synthetic import make_synthetic
from robustrec.demo import DemoConfig, run_demo, training_table
from robustrec.errors import DataError


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None,
                    reason="the imagenet captioner needs robustrec[encoders]")
def test_demo_writes_report_and_plots(tmp_path):
    data = make_synthetic(tmp_path / "shop", n_users=60, n_items=40, seed=1, text_encoder="hashing",
                          image_encoder="pixels", cache_dir=tmp_path / "cache")
    config = DemoConfig(epochs=2, patience=2, sigma2=(1e-4,), scales=(0.5,), probs=(0.5,), noise_repeats=2,
                        caption_repeats=1)
    report = run_demo(str(data), tmp_path / "out", config, progress=False)
    text = report.read_text()
    for heading in ("## Training", "Information noise", "Information adjustment", "FREEDOM + MG", "GRCN"):
        assert heading in text
    for name in ("noise", "noise-relative", "caption"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 0
        assert (tmp_path / "out" / f"{name}.svg").stat().st_size > 0
        assert (tmp_path / "out" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert text.count("Decr. = (clean - perturbed) / clean") == 1  # the notes once, not per section
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").rglob("model.safetensors")}
    run_demo(str(data), tmp_path / "out", config, progress=False)  # finished runs are reused, not retrained
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").rglob("model.safetensors")}
    metrics = next((tmp_path / "out" / "runs").rglob("metrics.json"))
    metrics.write_text('{"valid": {"recall@20": "high"}}')  # edited by hand: refused, naming the file
    with pytest.raises(DataError, match="metrics.json: malformed run metrics"):
        training_table({"x": [metrics.parent]})


def test_the_demo_audits_are_registry_suites_checked_before_training(tmp_path, monkeypatch):
    import robustrec.training
    from robustrec.demo import audit_config, demo_audits
    from robustrec.errors import ConfigError

    config = DemoConfig()
    names = [audit_config(part, config).severity_name for part in demo_audits(config)]
    assert names == ["sigma2", "scale", "prob"]

    def no_training(*args, **kwargs):
        raise AssertionError("the demo trained before checking its audits")

    monkeypatch.setattr(robustrec.training, "train", no_training)
    for bad, match in (({"probs": (0.1, 1.5)}, r"caption probability must be in \[0, 1\]"),
                       ({"scales": (-1.0,)}, "noise severity must be >= 0")):
        with pytest.raises(ConfigError, match=match):
            run_demo(None, tmp_path / "out", DemoConfig(**bad), progress=False)
    assert not (tmp_path / "out").exists()
