"""The demo: the shipped ``demo`` recipe run as a study (the README's main job, scaled down)."""

from __future__ import annotations

import importlib.util

import pytest

from robustrec.data.synthetic import make_synthetic
from robustrec.demo import AUDIT_SEVERITIES, DemoConfig, demo_spec, recipe_defaults, run_demo
from robustrec.errors import ConfigError
from robustrec.studies.recipes import read_toml, recipe_path
from robustrec.studies.spec import load_spec

needs_imagenet = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None,
                                    reason="the imagenet captioner needs robustrec[encoders]")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A small synthetic shop with item texts and images (the caption audit needs them)."""
    tmp = tmp_path_factory.mktemp("demo-shop")
    return make_synthetic(tmp / "shop", n_users=60, n_items=40, seed=1, text_encoder="hashing",
                          image_encoder="pixels", cache_dir=tmp / "cache", progress=False)


def test_the_demo_is_the_recipe(shop):
    """Without changes the demo's spec is the recipe's, so `robustrec study run demo` makes the same
    study folder (the same runs, selection and audits)."""
    for config in (DemoConfig(), DemoConfig(quick=True)):
        spec = demo_spec(shop, config)
        assert spec == load_spec("demo", data=str(shop), quick=config.quick)
    assert demo_spec(None, DemoConfig()).data is None  # the embedded default


def test_recipe_defaults_are_the_recipes_values():
    raw = read_toml(recipe_path("demo"))
    defaults = recipe_defaults()
    assert defaults.seeds == tuple(raw["study"]["seeds"])
    assert (defaults.epochs, defaults.patience) == (raw["train"]["epochs"], raw["train"]["patience"])
    audits = {a["name"]: a for a in raw["audits"]}
    assert set(audits) == set(AUDIT_SEVERITIES)  # every named audit has its flag, and no flag is left over
    for name, field in AUDIT_SEVERITIES.items():
        assert getattr(defaults, field) == tuple(audits[name]["severities"])
    assert defaults.captioner == audits["caption"]["captioner"] == "imagenet"


def test_each_flag_changes_its_part_of_the_recipe(tmp_path):
    config = DemoConfig(seeds=(1, 2), epochs=5, patience=3, sigma2=(1e-3,), scales=(0.2, 0.4), probs=(0.3,),
                        captioner="blip2", device="cuda", threads=2)
    spec = demo_spec(tmp_path / "data", config)
    base = load_spec("demo")
    assert spec.seeds == (1, 2) and spec.threads == 2
    assert spec.data == str((tmp_path / "data").resolve())
    assert dict(spec.train) == {"epochs": 5, "patience": 3, "device": "cuda"}
    assert spec.runs == base.runs  # the models and strategies are the recipe's
    audits = {a.name: a for a in spec.audits}
    assert audits["noise"].severities == (1e-3,) and audits["noise-relative"].severities == (0.2, 0.4)
    assert audits["caption"].severities == (0.3,)
    assert audits["caption"].captioner == "blip2" and dict(audits["caption"].captioner_params) == {"device": "cuda"}
    assert [a.repeats for a in spec.audits] == [a.repeats for a in base.audits]
    quick = demo_spec(None, DemoConfig(quick=True, epochs=4))
    assert quick.train["epochs"] == 4 and quick.train["patience"] == 1  # a flag given wins over --quick
    assert all(a.repeats == 1 for a in quick.audits)


def test_the_demo_checks_its_audits_before_training(tmp_path, monkeypatch):
    import robustrec.training

    def no_training(*args, **kwargs):
        raise AssertionError("the demo trained before checking its audits")

    monkeypatch.setattr(robustrec.training, "train", no_training)
    for bad, match in (({"probs": (0.1, 1.5)}, r"caption probability must be in \[0, 1\]"),
                       ({"scales": (-1.0,)}, "noise severity must be >= 0"),
                       ({"seeds": (3, 3)}, "--seeds must be distinct"),
                       ({"metric": "recall@7"}, "the demo's runs measure k = 5, 10, 20"),
                       ({"captioner": "file"}, "the demo has no captions file")):
        with pytest.raises(ConfigError, match=match):
            run_demo(None, tmp_path / "out", DemoConfig(**bad), progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # about 15 s: 9 trainings, 3 audits, a dozen plots in three formats
@needs_imagenet
def test_demo_writes_report_and_plots(shop, tmp_path):
    out = tmp_path / "out"
    report = run_demo(str(shop), out, DemoConfig(quick=True), progress=False)
    assert report == out / "report.md"
    text = report.read_text()
    for row in ("| BM3 |", "| FREEDOM + MG |", "| MMGCN |", "| GRCN + MG |", "| Popularity |"):
        assert row in text, row
    assert text.count("### Audit ") == 3  # a section per audit
    assert text.count("Decr. = (clean - perturbed) / clean") == 1  # the notes once, not per section
    for name in ("noise", "noise-relative", "caption"):  # the demo's plots, named as before
        assert (out / f"{name}.png").stat().st_size > 0
        assert (out / f"{name}.svg").stat().st_size > 0
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert (out / "study.json").is_file() and (out / "selection.json").is_file()  # a study folder

    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("model.safetensors")}
    records = {p: p.stat().st_mtime_ns for p in (out / "audits").rglob("*.jsonl")}
    assert len(before) == 9 and len(records) == 2 * 4 + 4  # 9 runs; 2 noise audits x 4 runs, a caption audit x 4
    report = run_demo(str(shop), out, DemoConfig(quick=True, metric="recall@5"), progress=False)
    assert before == {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("model.safetensors")}  # reused
    assert records == {p: p.stat().st_mtime_ns for p in (out / "audits").rglob("*.jsonl")}
    text = report.read_text()
    assert "recall@5 |" in text or ", recall@5" in text  # the drop tables of the metric asked for


def test_the_cli_changes_only_what_is_given(monkeypatch, tmp_path):
    """A flag not given keeps the recipe's value, so `robustrec demo --quick` is the quick recipe (with
    the recipe's values as flag defaults, --quick's 2 epochs were overwritten by 60)."""
    import robustrec.demo
    from robustrec.cli import main

    seen = []
    monkeypatch.setattr(robustrec.demo, "run_demo", lambda data, out, config, progress: seen.append(config) or out)
    assert main(["demo", "--out", str(tmp_path / "a"), "--quick", "--no-progress"]) == 0
    assert main(["demo", "--out", str(tmp_path / "b"), "--epochs", "3", "--scale", "0.2", "--threads", "2"]) == 0
    quick, flags = seen
    assert demo_spec(None, quick) == load_spec("demo", quick=True)
    spec = demo_spec(None, flags)
    assert spec.train["epochs"] == 3 and spec.threads == 2
    assert [a.severities for a in spec.audits] == [(1e-6, 1e-4, 1e-2), (0.2,), (0.01, 0.1, 0.5)]
