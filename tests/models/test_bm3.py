"""BM3: protocol, determinism, and equality with MMRec's full-table formulation of the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustrec.data.dataset import ItemFeatures
from robustrec.data.sampling import Batch, BPRSampler
from robustrec.errors import ConfigError
from robustrec.hparams import defaults
from robustrec.models import build_model
from robustrec.models.bm3 import BM3


def make(dataset, seed=0, **params) -> BM3:
    return build_model("bm3", dataset, generator=torch.Generator().manual_seed(seed), **params)


def first_batch(dataset, seed=0, model_seed=1) -> Batch:
    sampler = BPRSampler(dataset, batch_size=64)
    return next(sampler.epoch(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(model_seed)))


def scores(model) -> torch.Tensor:
    return model.scorer()(torch.arange(model.n_users))


def test_defaults_are_mmrecs():
    assert defaults(BM3) == dict(embedding_size=64, n_layers=1, dropout=0.5, reg_weight=0.1, cl_weight=2.0)


def test_init_deterministic_and_leaves_global_rng_alone(tiny):
    state = torch.get_rng_state()
    a, b, c = make(tiny, seed=3), make(tiny, seed=3), make(tiny, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.user_embedding, c.user_embedding)
    # the learnable feature tables start as copies of the raw features
    assert torch.equal(a.image_embedding, tiny.features.image)
    assert a.image_embedding.data_ptr() != tiny.features.image.data_ptr()


def test_loss_reproducible_under_generator_and_ignores_negatives(tiny):
    model = make(tiny)
    batch = first_batch(tiny)

    def with_negatives(negatives):
        return Batch(batch.users, batch.pos_items, negatives, torch.Generator().manual_seed(1))

    first = model.loss(with_negatives(batch.neg_items))
    assert torch.equal(model.loss(with_negatives(batch.neg_items)), first)
    assert torch.equal(model.loss(with_negatives(batch.pos_items)), first)


def test_scores_shape_and_state_dict_round_trip(tiny):
    model = make(tiny)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.loss(first_batch(tiny)).backward()
    optimizer.step()
    model.eval()
    block = model.scorer()(torch.tensor([0, 5, 7]))
    assert block.shape == (3, tiny.n_items)
    clone = make(tiny, seed=99)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(scores(clone), scores(model))
    assert torch.equal(scores(model.copy_with()), scores(model))


def test_scores_do_not_read_raw_features(tiny):
    assert BM3.reads_features_at_inference is False
    model = make(tiny)
    noise = ItemFeatures(
        image=torch.randn_like(tiny.features.image), text=torch.randn_like(tiny.features.text)
    )
    assert torch.equal(scores(model.with_features(noise)), scores(model))


def test_tables_and_adversarial_inputs(tiny):
    model = make(tiny)
    params = dict(model.named_parameters())
    kinds = {t.name: t.kind for t in model.embedding_tables()}
    assert kinds == {
        "user_embedding": "user",
        "item_embedding": "item",
        "image_embedding": "feature",
        "text_embedding": "feature",
    }
    for table in model.embedding_tables():
        assert params[table.name].shape[0] == table.offset + table.rows
    inputs = model.adversarial_inputs()
    assert set(inputs) == {"image", "text"} and inputs["text"] is model.text_embedding

    zero = {m: torch.zeros_like(t) for m, t in inputs.items()}
    assert torch.equal(model.loss(first_batch(tiny), perturb=zero), model.loss(first_batch(tiny)))
    delta = torch.zeros_like(inputs["text"], requires_grad=True)
    loss = model.loss(first_batch(tiny), perturb={"text": delta})
    (grad,) = torch.autograd.grad(loss, delta)
    assert grad.abs().sum() > 0
    bumped = model.loss(first_batch(tiny), perturb={"text": torch.randn_like(inputs["text"])})
    assert not torch.equal(bumped, loss)


def mmrec_loss(model: BM3, batch: Batch) -> torch.Tensor:
    """MMRec's calculate_loss with dropout off: project every row, then index (no unique rows)."""
    u_all, i_all = model._propagate()
    users, items = batch.users, batch.pos_items
    u_target, i_target = u_all.detach()[users], i_all.detach()[items]
    u_online, i_online = model.predictor(u_all)[users], model.predictor(i_all)[items]

    def cos(a, b):
        return 1 - F.cosine_similarity(a, b, dim=-1).mean()

    extra = 0.0
    for m in ("text", "image"):
        feat = getattr(model, f"{m}_trs")(getattr(model, f"{m}_embedding"))
        online = model.predictor(feat)[items]
        extra = extra + cos(online, i_target) + cos(online, feat.detach()[items])
    reg = (torch.linalg.vector_norm(u_all) + torch.linalg.vector_norm(i_all)) / model.n_items
    return (
        cos(u_online, i_target) + cos(i_online, u_target) + model.reg_weight * reg + model.cl_weight * extra
    )


def test_loss_equals_mmrec_formulation_without_dropout(tiny):
    model = make(tiny, dropout=0.0, n_layers=2)
    batch = first_batch(tiny)
    ours = model.loss(batch)
    grads = torch.autograd.grad(ours, list(model.parameters()))
    reference = mmrec_loss(model, batch)
    reference_grads = torch.autograd.grad(reference, list(model.parameters()))
    torch.testing.assert_close(ours, reference)
    for a, b in zip(grads, reference_grads):
        torch.testing.assert_close(a, b)


def test_dropout_masks_are_shared_by_repeated_rows(tiny):
    """MMRec draws one mask per user / item row; a user twice in a batch gets the same target."""
    model = make(tiny, dropout=0.5)
    pair = Batch(
        torch.tensor([3, 3]), torch.tensor([4, 4]), torch.tensor([0, 0]), torch.Generator().manual_seed(0)
    )
    single = Batch(torch.tensor([3]), torch.tensor([4]), torch.tensor([0]), torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.loss(pair), model.loss(single))


def test_text_only(tiny):
    text_only = tiny.with_features(ItemFeatures(text=tiny.features.text))
    model = make(text_only)
    assert set(model.adversarial_inputs()) == {"text"}
    assert torch.isfinite(model.loss(first_batch(text_only)))


def test_needs_features(tiny):
    with pytest.raises(ConfigError, match="features"):
        make(tiny.with_features(ItemFeatures()))


def test_feature_perturbation_gets_the_table_gradient(tiny):
    model = BM3(tiny, generator=torch.Generator().manual_seed(0))
    batch = Batch(torch.tensor([0, 1, 2]), torch.tensor([0, 3, 3]), torch.tensor([1, 1, 1]),
                  torch.Generator().manual_seed(1))
    delta = torch.zeros_like(model.image_embedding, requires_grad=True)
    model.loss(batch, perturb={"image": delta}).backward()
    assert model.image_embedding.grad is not None
    torch.testing.assert_close(delta.grad, model.image_embedding.grad)
    assert delta.grad[[0, 3]].abs().sum() > 0 and delta.grad[[1, 2]].abs().sum() == 0
