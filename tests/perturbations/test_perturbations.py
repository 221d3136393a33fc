"""Perturbation invariants: severity 0 is the identity, inputs are never mutated, seeds reproduce."""

from __future__ import annotations

import pytest
import torch

from perturbations import (
    PERTURBATIONS,
    CaptionInsertion,
    Compose,
    EmbeddingNoise,
    SuiteContext,
    TextFeatureNoise,
    insert_caption,
)
from robustrec.data.encoders import HashingTextEncoder
from robustrec.errors import ConfigError, DataError
from robustrec.evaluate import Evaluator
from robustrec.models import build_model


def trained(name, dataset, seed=0):
    model = build_model(name, dataset, generator=torch.Generator().manual_seed(seed))
    return model.eval()


def scores(model, dataset):
    return model.scorer()(torch.arange(dataset.n_users))


class CountingEncoder(HashingTextEncoder):
    """The hashing text encoder, recording every text it is asked to encode."""

    def __init__(self, dim=8):
        super().__init__(dim=dim)
        self.calls = []

    def encode(self, texts, batch_size=64, progress=False):
        self.calls.extend(texts)
        return super().encode(list(texts), batch_size, progress)


def caption_of(dataset):
    return lambda ids: {i: f"a photo of thing {i}" for i in ids}


def captioned(calls):
    """The encoded texts that carry a caption (the suite also re-encodes clean texts once, to check
    that the stored features were made from them)."""
    return [t for t in calls if "a photo of thing" in t]


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("target", ["items", "embeddings", "parameters"])
@pytest.mark.parametrize("scale", ["absolute", "relative"])
def test_noise_severity_zero_is_identity(tiny, target, scale):
    model = trained("vbpr", tiny)
    view = EmbeddingNoise(0.0, noise_scale=scale, target=target).apply(model, tiny, gen())
    assert torch.equal(scores(view.model, tiny), scores(model, tiny))


def test_noise_changes_only_the_targets_and_not_the_input(tiny):
    model = trained("vbpr", tiny)
    before = snapshot(model)
    view = EmbeddingNoise(1e-2, item_ids=(0, 3)).apply(model, tiny, gen())
    assert_unchanged(model, before)
    new = view.model.state_dict()
    changed_rows = (new["item_embedding"] != before["item_embedding"]).any(dim=1).nonzero().flatten().tolist()
    assert changed_rows == [0, 3]
    assert torch.equal(new["user_embedding"], before["user_embedding"])


def test_noise_same_seed_same_draw_and_relative_sigma(tiny):
    model = trained("vbpr", tiny)
    a = EmbeddingNoise(0.5, noise_scale="relative").apply(model, tiny, gen(1))
    b = EmbeddingNoise(0.5, noise_scale="relative").apply(model, tiny, gen(1))
    c = EmbeddingNoise(0.5, noise_scale="relative").apply(model, tiny, gen(2))
    assert torch.equal(scores(a.model, tiny), scores(b.model, tiny))
    assert not torch.equal(scores(a.model, tiny), scores(c.model, tiny))
    expected = 0.5 * float(model.item_embedding.detach().std())
    assert a.details["effective_sigma"]["item_embedding"] == pytest.approx(expected)
    diff = a.model.item_embedding - model.item_embedding
    assert float(diff.detach().std()) == pytest.approx(expected, rel=0.2)


def test_noise_draws_share_one_direction_across_severities(tiny):
    model = trained("vbpr", tiny)
    small = EmbeddingNoise(1e-4).apply(model, tiny, gen(3)).model.item_embedding - model.item_embedding
    large = EmbeddingNoise(1e-2).apply(model, tiny, gen(3)).model.item_embedding - model.item_embedding
    torch.testing.assert_close(large, small * 10)


def test_noise_bad_options(tiny):
    with pytest.raises(ConfigError, match=">= 0"):
        EmbeddingNoise(-1.0)
    with pytest.raises(ConfigError):
        EmbeddingNoise(1e-6, noise_scale="weird")
    with pytest.raises(ConfigError, match="out of range"):
        EmbeddingNoise(1e-6, item_ids=(tiny.n_items,)).check(trained("vbpr", tiny), tiny)
    with pytest.raises(ConfigError, match="no items"):
        EmbeddingNoise(1e-6).check(trained("pop", tiny), tiny)


def test_feature_noise_identity_and_not_mutating(tiny):
    model = trained("vbpr", tiny)
    text_before = tiny.features.text.clone()
    assert torch.equal(scores(TextFeatureNoise(0.0).apply(model, tiny, gen()).model, tiny), scores(model, tiny))
    view = TextFeatureNoise(0.5).apply(model, tiny, gen())
    assert torch.equal(tiny.features.text, text_before)
    assert not torch.equal(view.dataset.features.text, text_before)
    assert not torch.allclose(scores(view.model, tiny), scores(model, tiny))


def test_feature_noise_refuses_models_that_ignore_features(tiny):
    with pytest.raises(ConfigError, match="does not read features"):
        TextFeatureNoise(0.1).check(trained("pop", tiny), tiny)


def test_insert_caption_positions():
    assert insert_caption("red mug", "a cup", "append") == "red mug a cup"
    assert insert_caption("red mug", "a cup", "prepend") == "a cup red mug"
    text = insert_caption("one two three", "X", "random", gen(0))
    assert sorted(text.split()) == sorted(["one", "two", "three", "X"])


def test_caption_probability_zero_is_identity(shop):
    ds = shop
    model = trained("vbpr", ds)
    encoder = CountingEncoder()
    view = CaptionInsertion(0.0).use(caption_of(ds), encoder).apply(model, ds, gen())
    assert view.model is model and view.dataset is ds
    assert view.details["changed_items"] == view.details["drawn_items"] == 0
    assert captioned(encoder.calls) == []


def test_caption_reencodes_only_changed_items(shop):
    ds = shop
    model = trained("vbpr", ds)
    text_before = ds.features.text.clone()
    encoder = CountingEncoder()
    suite = CaptionInsertion(0.3).use(caption_of(ds), encoder)
    view = suite.apply(model, ds, gen(7))
    changed = view.details["changed_items"]
    assert 0 < changed < ds.n_items and len(captioned(encoder.calls)) == changed == view.details["drawn_items"]
    rows = (view.dataset.features.text != text_before).any(dim=1).nonzero().flatten().tolist()
    assert rows == view.details["changed_item_ids"]
    assert torch.equal(ds.features.text, text_before)  # input untouched
    without_image = {i for i, info in enumerate(ds.items) if info.image is None}
    assert not without_image & set(rows) and view.details["items_without_image"] == len(without_image)
    calls = len(encoder.calls)
    suite.apply(model, ds, gen(7))  # the same draw again: nothing new to encode
    assert len(encoder.calls) == calls


def test_caption_same_seed_same_view(shop):
    model = trained("vbpr", shop)
    views = [CaptionInsertion(0.5, position="random").use(caption_of(shop), CountingEncoder())
             .apply(model, shop, gen(seed)) for seed in (4, 4, 5)]
    assert views[0].details == views[1].details
    assert torch.equal(views[0].dataset.features.text, views[1].dataset.features.text)
    assert views[0].details["changed_item_ids"] != views[2].details["changed_item_ids"]


def test_caption_probability_one_changes_every_item_with_an_image(shop):
    ds = shop
    view = CaptionInsertion(1.0).use(caption_of(ds), CountingEncoder()).apply(
        trained("vbpr", ds), ds, gen())
    assert view.details["changed_items"] == ds.n_items - view.details["items_without_image"]


def test_caption_needs_item_texts(tiny):
    suite = CaptionInsertion(0.5).use(caption_of(tiny), CountingEncoder())
    with pytest.raises(DataError, match="items.jsonl"):
        suite.check(trained("vbpr", tiny), tiny)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        CaptionInsertion(1.5)
    with pytest.raises(ConfigError, match="needs a caption source"):
        CaptionInsertion(0.5).check(trained("vbpr", tiny), tiny)


def test_compose_applies_each_part(tiny):
    model = trained("vbpr", tiny)
    view = Compose([EmbeddingNoise(1e-2), TextFeatureNoise(0.5)]).apply(model, tiny, gen())
    assert set(view.details) == {"noise", "text-noise"}
    assert not torch.equal(view.model.item_embedding, model.item_embedding)


@pytest.mark.parametrize("name", PERTURBATIONS.names())
def test_every_suite_smoke(name, shop):
    ds = shop
    suite = PERTURBATIONS.get(name)(0.5 if name != "noise" else 1e-2)
    suite.prepare(SuiteContext(ds, captions_factory=caption_of, text_encoder=CountingEncoder()))
    model = trained("vbpr", ds)
    view = suite.apply(model, ds, gen())
    metrics = Evaluator(view.dataset, "test", (5,)).evaluate(view.model).metrics
    assert 0.0 <= metrics["recall@5"] <= 1.0
