"""The demo end to end on a small synthetic shop (the README's main job, scaled down)."""

from __future__ import annotations

import importlib.util

import pytest

from robustrec.cli.demo import DemoConfig, run_demo
from robustrec.data.synthetic import make_synthetic


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
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").rglob("model.safetensors")}
    run_demo(str(data), tmp_path / "out", config, progress=False)  # finished runs are reused, not retrained
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").rglob("model.safetensors")}
