"""Suites are registry entries: each declares its default severity, what the severity measures, a
one-line summary and typed options with defaults; an audit config is a suite name plus options."""

from __future__ import annotations

import inspect
import math

import pytest

from perturbations import PERTURBATIONS, AuditConfig, EmbeddingNoise, ImageFeatureNoise, SuiteContext
from robustrec.errors import ConfigError
from robustrec.hparams import parse_params
from robustrec.registry import Registry


@pytest.mark.parametrize("name", PERTURBATIONS.names())
def test_every_suite_declares_its_severity_summary_and_options(name):
    suite = PERTURBATIONS.get(name)
    assert suite.name == name
    assert isinstance(suite.default_severity, float) and math.isfinite(suite.default_severity)
    assert suite.severity_name and suite.severity_name in suite.severity_names()
    assert suite.summary and "\n" not in suite.summary
    options = suite.options()
    assert "severity" not in options
    assert all(p.default is not inspect.Parameter.empty for p in options.values())  # every option has a default
    perturbation = suite(suite.default_severity)  # the declared default is a valid severity
    assert perturbation.severity == suite.default_severity and perturbation.severity_name == suite.severity_name


@pytest.mark.parametrize("name", PERTURBATIONS.names())
def test_the_default_severity_comes_from_the_class(name):
    config = AuditConfig(name)
    assert config.severities == (PERTURBATIONS.get(name).default_severity,)
    assert config.severity_name == PERTURBATIONS.get(name).severity_name


def test_relative_noise_has_its_own_severity_name_and_default():
    relative = AuditConfig("noise", params={"noise_scale": "relative"})
    assert relative.severity_name == "scale" and relative.severities == (0.1,)
    assert AuditConfig("noise").severity_name == "sigma2" and AuditConfig("noise").severities == (1e-6,)
    assert EmbeddingNoise(0.5, noise_scale="relative").severity_name == "scale"
    assert EmbeddingNoise.severity_names() == ("sigma2", "scale")


def test_options_parse_by_their_annotations():
    params = parse_params(EmbeddingNoise, ["noise_scale=relative", "target=embeddings"], "suite noise")
    assert params == {"noise_scale": "relative", "target": "embeddings"}
    assert parse_params(EmbeddingNoise, ["item_ids=1,2,3"], "suite noise") == {"item_ids": (1, 2, 3)}
    assert AuditConfig("noise", params={"item_ids": (1, 2)}).params == {"item_ids": (1, 2)}


@pytest.mark.parametrize("params, match", [
    ({"bogus": 1}, "suite 'noise' has no parameter 'bogus'"),
    ({"target": "weird"}, "noise target must be one of"),
    ({"noise_scale": "weird"}, "noise scale must be 'absolute' or 'relative'"),
    ({"severity": 0.1}, "severity is not an option of a suite: give severities with --severity"),
])
def test_options_are_validated_when_the_config_is_made(params, match):
    with pytest.raises(ConfigError, match=match):
        AuditConfig("noise", params=params)


def test_severities_are_validated_by_the_suite():
    with pytest.raises(ConfigError, match=r"caption probability must be in \[0, 1\]"):
        AuditConfig("caption", severities=(0.1, 1.5))
    with pytest.raises(ConfigError, match=">= 0"):
        AuditConfig("image-noise", severities=(-1.0,))


def test_the_digest_depends_on_the_options_not_the_device():
    base = AuditConfig("noise", severities=(1e-4,))
    assert base.digest() == AuditConfig("noise", severities=(1e-4,), device="cuda").digest()
    assert base.digest() != AuditConfig("noise", params={"target": "embeddings"}, severities=(1e-4,)).digest()
    assert base.digest() != AuditConfig("noise", severities=(1e-4,), perturbation_seed=1).digest()


def test_a_registry_entry_can_be_removed():
    registry: Registry[object] = Registry("thing")
    registry.register("a")(object)
    registry.unregister("a")
    assert "a" not in registry and registry.names() == []
    with pytest.raises(ConfigError, match="unknown thing 'a'"):
        registry.unregister("a")
    assert "image-noise" in PERTURBATIONS and PERTURBATIONS.get("image-noise") is ImageFeatureNoise


def test_the_context_builds_a_caption_source_only_for_a_suite_that_asks(tiny):
    built = []

    def factory(dataset):
        built.append(dataset)
        return lambda ids: {i: "a photo" for i in ids}

    context = SuiteContext(tiny, captions_factory=factory)
    for name in PERTURBATIONS.names():
        if name != "caption":
            AuditConfig(name).perturbation(PERTURBATIONS.get(name).default_severity).prepare(context)
    assert built == []
    caption = AuditConfig("caption").perturbation(0.5).prepare(context)
    AuditConfig("caption").perturbation(0.1).prepare(context)
    assert built == [tiny] and caption.captions is context.caption_source()  # built once per context
    with pytest.raises(ConfigError, match="needs a caption source"):
        AuditConfig("caption").perturbation(0.5).prepare(SuiteContext(tiny))
