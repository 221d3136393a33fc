"""The measured loss of every registered model: deterministic, theta left alone, products right."""

from __future__ import annotations

import pytest
import torch

from robustrec.diagnostics import TrainingLoss
from robustrec.errors import ConfigError
from robustrec.models import MODELS, build_model

TRAINABLE = [name for name in MODELS.names() if MODELS.get(name).trainable]


def model(name, tiny, seed=0):
    return build_model(name, tiny, generator=torch.Generator().manual_seed(seed))


def weights(objective):
    return [p.detach().clone() for p in objective.params]


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_model_has_a_fixed_loss_and_a_right_hessian_product(name, tiny):
    torch.set_num_threads(1)
    objective = TrainingLoss(model(name, tiny), tiny, batch_size=64, seed=3)
    before = weights(objective)
    first = objective.value()
    assert first == objective.value()  # dropout masks and negatives are fixed
    again = TrainingLoss(model(name, tiny), tiny, batch_size=64, seed=3)
    assert again.value() == first
    vector = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype)
              for i, p in enumerate(objective.params)]
    product = objective.hvp(vector)
    assert objective.hvp_method in ("double-backward", "finite-difference")
    reference = objective._hvp_difference(vector)
    gap = sum(((a - b) ** 2).sum() for a, b in zip(product, reference)) ** 0.5
    scale = sum((b**2).sum() for b in reference) ** 0.5
    assert torch.isfinite(gap) and float(gap) <= 0.05 * float(scale) + 1e-6
    assert all(a.equal(b) for a, b in zip(weights(objective), before))  # every displacement undone


def test_the_seed_chooses_the_negatives_and_interactions_subsample(tiny):
    full = TrainingLoss(model("bpr", tiny), tiny, batch_size=64, seed=0)
    assert full.interactions == len(tiny.train) and len(full.batches) == -(-len(tiny.train) // 64)
    other = TrainingLoss(model("bpr", tiny), tiny, batch_size=64, seed=1)
    assert full.value() != other.value()
    part = TrainingLoss(model("bpr", tiny), tiny, batch_size=64, seed=0, interactions=100)
    assert part.interactions == 100 and [len(b) for b in part.batches] == [64, 36]
    assert part.batches[0].users.equal(full.batches[0].users)  # the first pairs of the same shuffle


def test_the_mean_is_over_batches_as_the_trainers_epoch_loss(tiny):
    objective = TrainingLoss(model("bpr", tiny), tiny, batch_size=64, seed=0)
    with torch.no_grad():
        by_hand = sum(float(objective.model.loss(b)) for b in objective.batches) / len(objective.batches)
    assert objective.value() == pytest.approx(by_hand, rel=1e-6)


def test_bad_settings_and_models_without_weights_are_refused(tiny):
    with pytest.raises(ConfigError, match="batch_size"):
        TrainingLoss(model("bpr", tiny), tiny, batch_size=0)
    with pytest.raises(ConfigError, match="interactions"):
        TrainingLoss(model("bpr", tiny), tiny, interactions=0)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        TrainingLoss(model("pop", tiny), tiny)
