"""Every registered model against every strategy, suite and training invariant.

These tests read the registries, so a model added with its registry line is covered without
editing this file: one training step under every strategy; the same seed at one thread gives the same
weights; an interrupted run resumes to the uninterrupted one (models draw their own randomness:
dropout, graph pruning, neighbour sampling); noise severity 0 and caption probability 0 leave the
scores unchanged, and a real perturbation reaches every model that has something to perturb.
"""

from __future__ import annotations

import json

import pytest
import torch

from perturbations.caption import CaptionInsertion
from perturbations.features import TextFeatureNoise
from perturbations.noise import EmbeddingNoise
from robustrec.data.sampling import BPRSampler
from robustrec.errors import ConfigError
from robustrec.models import MODELS, build_model
from robustrec.models.base import Recommender
from robustrec.runs import RunSpec, TrainConfig, load_weights
from robustrec.strategies import STRATEGIES, build_strategy, with_run_seed
from robustrec.training import train
from tests.perturbations.test_perturbations import CountingEncoder, caption_of

ALL = MODELS.names()
TRAINABLE = [n for n in ALL if MODELS.get(n).trainable]
FEATURE_READERS = [n for n in ALL if MODELS.get(n).reads_features_at_inference]
STRATEGY_NAMES = [*STRATEGIES.names(), "amr+mirror"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def scores(model: Recommender, dataset) -> torch.Tensor:
    return model.scorer()(torch.arange(dataset.n_users))


def a_batch(dataset, seed: int = 0):
    return next(iter(BPRSampler(dataset, batch_size=64).epoch(gen(seed), gen(seed + 1))))


def snapshot(model: Recommender) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("name", TRAINABLE)
def test_every_model_trains_a_step_under_every_strategy(name, strategy, tiny):
    model = build_model(name, tiny, generator=gen())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    # SSAM-F's Fisher mask takes one backward pass per sampled interaction: 8 show it works
    params = {"num_samples": 8} if strategy == "ssam-f" else {}
    rule = build_strategy(strategy, **with_run_seed(strategy, params, 0))
    if strategy.startswith("amr") and not model.adversarial_inputs():
        with pytest.raises(ConfigError, match=f"amr needs a model whose loss reads item features; '{name}'"):
            rule.setup(model, optimizer)
        return
    rule.setup(model, optimizer)
    model.train()
    model.pre_epoch(gen(1))
    rule.on_epoch_start(1, 2)
    before = snapshot(model)
    loss = rule.step(a_batch(tiny))
    assert isinstance(loss, float) and loss == loss and abs(loss) != float("inf")
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), f"{name}/{strategy} moved no weight"


def spec(name: str, epochs: int = 3, seed: int = 5, strategy: str = "plain") -> RunSpec:
    return RunSpec(name, strategy, train=TrainConfig(epochs=epochs, batch_size=64, seed=seed, threads=1))


def weights(run) -> dict[str, torch.Tensor]:
    tensors, _ = load_weights(run.path / "model.safetensors")
    return tensors


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_weights_at_one_thread(name, tiny, tmp_path):
    a = train(tiny, spec(name), tmp_path / "a", progress=False)
    b = train(tiny, spec(name), tmp_path / "b", progress=False)
    assert a.test == b.test and a.valid == b.valid
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    if MODELS.get(name).trainable:
        c = train(tiny, spec(name, seed=6), tmp_path / "c", progress=False)
        assert any(not torch.equal(wa[k], weights(c)[k]) for k in wa), "another seed trained the same weights"


@pytest.mark.parametrize("name", TRAINABLE)
def test_resume_equals_uninterrupted(name, tiny, tmp_path):
    full = train(tiny, spec(name, epochs=4), tmp_path / "full", progress=False)
    assert train(tiny, spec(name, epochs=4), tmp_path / "part", progress=False, max_epochs_this_call=2) is None
    resumed = train(tiny, spec(name, epochs=4), tmp_path / "part", progress=False)
    assert resumed.test == full.test and resumed.best_epoch == full.best_epoch
    losses = [[json.loads(x)["loss"] for x in (tmp_path / d / "log.jsonl").read_text().splitlines()]
              for d in ("full", "part")]
    assert losses[0] == losses[1]


def test_run_file_records_every_resolved_hyper_parameter(tiny, tmp_path):
    """run.json holds the model's and the strategy's hyper-parameters with defaults filled in, so a
    run says what it trained with even when the defaults change later."""
    result = train(tiny, spec("vbpr", epochs=1, strategy="mirror"), tmp_path / "run", progress=False)
    info = json.loads((result.path / "run.json").read_text())
    assert info["model_hparams"] == {"embedding_size": 64, "reg_weight": 1e-4}
    assert info["strategy_hparams"]["alpha2"] == 0.2 and info["strategy_hparams"]["beta"] == 3
    assert info["model_derived"] == {}


# ---- suites ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["embeddings", "parameters"])
@pytest.mark.parametrize("name", ALL)
def test_noise_severity_zero_is_the_identity_and_noise_reaches_the_model(name, target, tiny):
    model = build_model(name, tiny, generator=gen()).eval()
    clean = scores(model, tiny)
    if not model.embedding_tables():
        with pytest.raises(ConfigError, match=f"model .{name}. has no"):
            EmbeddingNoise(1e-2, target=target).check(model, tiny)
        return
    assert torch.equal(scores(EmbeddingNoise(0.0, target=target).apply(model, tiny, gen()).model, tiny), clean)
    noisy = EmbeddingNoise(1e-1, target=target).apply(model, tiny, gen()).model
    assert not torch.equal(scores(noisy, tiny), clean)
    assert torch.equal(scores(model, tiny), clean)  # the input model is untouched


@pytest.mark.parametrize("name", ALL)
def test_feature_suites_reach_every_feature_reader_and_refuse_the_others(name, shop):
    model = build_model(name, shop, generator=gen()).eval()
    clean = scores(model, shop)
    caption = CaptionInsertion(0.0).use(caption_of(shop), CountingEncoder())
    if name not in FEATURE_READERS:
        for suite in (caption, TextFeatureNoise(0.5)):
            with pytest.raises(ConfigError, match="does not read features"):
                suite.check(model, shop)
        return
    assert torch.equal(scores(caption.apply(model, shop, gen()).model, shop), clean)
    assert torch.equal(scores(TextFeatureNoise(0.0).apply(model, shop, gen()).model, shop), clean)
    everything = CaptionInsertion(1.0).use(caption_of(shop), CountingEncoder()).apply(model, shop, gen())
    assert not torch.equal(scores(everything.model, shop), clean), "captions on every item changed no score"
    assert not torch.equal(scores(TextFeatureNoise(0.5).apply(model, shop, gen()).model, shop), clean)
    assert torch.equal(scores(model, shop), clean)


# ---- hyper-parameters survive subclassing and copies ------------------------------------------


def test_a_subclass_records_its_parents_hyper_parameters(tiny):
    vbpr = MODELS.get("vbpr")

    class MyVBPR(vbpr):
        pass

    class Small(vbpr):
        def __init__(self, dataset, *, generator=None):
            super().__init__(dataset, embedding_size=8, generator=generator)

    class Wider(vbpr):
        def __init__(self, dataset, *, extra: int = 1, **kwargs):
            self.extra = extra
            super().__init__(dataset, **kwargs)

    mine = MyVBPR(tiny, embedding_size=16, reg_weight=0.5, generator=gen())
    assert mine.hparams == {"embedding_size": 16, "reg_weight": 0.5}
    copy = mine.copy_with()
    assert type(copy) is MyVBPR and copy.hparams == mine.hparams
    assert copy.item_embedding.shape == (tiny.n_items, 16)
    torch.testing.assert_close(scores(copy.eval(), tiny), scores(mine.eval(), tiny))

    small = Small(tiny)
    assert small.hparams == {"embedding_size": 8, "reg_weight": 1e-4}
    assert small.copy_with().item_embedding.shape == (tiny.n_items, 8)

    wider = Wider(tiny, extra=3, embedding_size=4)
    assert wider.hparams == {"extra": 3, "embedding_size": 4, "reg_weight": 1e-4}
    assert wider.copy_with().extra == 3 and wider.copy_with().item_embedding.shape == (tiny.n_items, 4)


@pytest.mark.parametrize("name", [n for n in ALL if MODELS.get(n).trainable])
def test_the_noise_suites_default_target_reaches_every_model_or_says_what_to_use(name, tiny):
    """The noise suite's default target is the item tables; a model without one (DualGNN and DRAGON
    compute item representations from the features) gets a one-line error naming its tables."""
    model = build_model(name, tiny, generator=gen()).eval()
    if model.item_tables():
        noisy = EmbeddingNoise(1e-1).apply(model, tiny, gen()).model
        assert not torch.equal(scores(noisy, tiny), scores(model, tiny))
        return
    with pytest.raises(ConfigError, match="has no item embedding table.*target=embeddings") as info:
        EmbeddingNoise(1e-1).check(model, tiny)
    assert "\n" not in str(info.value)
    for table in model.embedding_tables():
        assert table.name in str(info.value)
