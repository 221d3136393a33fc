"""Every registered model gets the same smoke tests and protocol checks."""

from __future__ import annotations

import pytest
import torch

from robustrec.data.sampling import BPRSampler
from robustrec.hparams import accepted
from robustrec.models import MODELS, build_model

ALL = MODELS.names()
TRAINABLE = [n for n in ALL if MODELS.get(n).trainable]


def first_batch(dataset, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return next(iter(BPRSampler(dataset, batch_size=64).epoch(gen, torch.Generator().manual_seed(seed + 1))))


def scores(model, dataset):
    return model.scorer()(torch.arange(dataset.n_users))


@pytest.mark.parametrize("name", ALL)
def test_scores_cover_all_items(name, tiny):
    model = build_model(name, tiny, generator=torch.Generator().manual_seed(0)).eval()
    out = scores(model, tiny)
    assert out.shape == (tiny.n_users, tiny.n_items)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", TRAINABLE)
def test_one_training_step(name, tiny):
    model = build_model(name, tiny, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = scores(model.eval(), tiny)
    model.train()
    loss = model.loss(first_batch(tiny))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert not torch.equal(before, scores(model.eval(), tiny))


@pytest.mark.parametrize("name", TRAINABLE)
def test_loss_finite_and_decreasing_on_a_fixed_batch(name, tiny):
    model = build_model(name, tiny, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.pre_epoch(torch.Generator().manual_seed(0))
    batch = first_batch(tiny)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = model.loss(batch)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ALL)
def test_same_generator_same_model(name, tiny):
    a = build_model(name, tiny, generator=torch.Generator().manual_seed(5))
    b = build_model(name, tiny, generator=torch.Generator().manual_seed(5))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("name", ALL)
def test_every_trainable_tensor_is_registered(name, tiny):
    model = build_model(name, tiny)
    registered = {id(p) for p in model.parameters()}
    state = model.state_dict()
    for attr, value in vars(model).items():
        if isinstance(value, torch.Tensor) and value.requires_grad:
            assert id(value) in registered, f"{name}.{attr} requires grad but is not a parameter"
    for pname, _ in model.named_parameters():
        assert pname in state


@pytest.mark.parametrize("name", ALL)
def test_copies_are_independent(name, tiny):
    model = build_model(name, tiny, generator=torch.Generator().manual_seed(0)).eval()
    reference = scores(model, tiny)
    for copy in (model.copy_with(), model.weights_copy(), model.with_features(tiny.features)):
        torch.testing.assert_close(scores(copy.eval(), tiny), reference)
        with torch.no_grad():
            for p in copy.parameters():
                p.add_(1.0)
    assert torch.equal(scores(model, tiny), reference)


@pytest.mark.parametrize("name", ["freedom", "mmgcn"])
def test_weights_copy_of_some_parameters_shares_the_others(name, tiny):
    model = build_model(name, tiny, generator=torch.Generator().manual_seed(0))
    ours = dict(model.named_parameters())
    chosen = {next(iter(ours)), list(ours)[-1]}  # a top-level and (for MMGCN) a nested parameter
    copy = model.weights_copy(chosen)
    theirs = dict(copy.named_parameters())
    assert theirs.keys() == ours.keys()
    for pname, param in theirs.items():
        assert (param is ours[pname]) == (pname not in chosen), pname
        torch.testing.assert_close(param, ours[pname])


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name, tiny):
    model = build_model(name, tiny, generator=torch.Generator().manual_seed(0)).eval()
    other = build_model(name, tiny, generator=torch.Generator().manual_seed(1)).eval()
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(scores(other, tiny), scores(model, tiny))


@pytest.mark.parametrize("name", ALL)
def test_embedding_tables_name_real_parameters(name, tiny):
    model = build_model(name, tiny)
    params = dict(model.named_parameters())
    for table in model.embedding_tables():
        assert table.name in params
        assert table.offset + table.rows <= params[table.name].shape[0]


@pytest.mark.parametrize("name", [n for n in ALL if MODELS.get(n).reads_features_at_inference])
def test_feature_readers_react_to_new_features(name, tiny):
    model = build_model(name, tiny, generator=torch.Generator().manual_seed(0)).eval()
    reference = scores(model, tiny)
    noisy = tiny.features.replace(text=torch.randn_like(tiny.features.text))
    assert not torch.allclose(scores(model.with_features(noisy).eval(), tiny), reference)
    assert torch.equal(scores(model, tiny), reference)


# ---- the loss as a data term and a regulariser (AMR counts the regulariser once) -----------------


def _reg(name, weight):
    """The model's weight on its regulariser as a keyword (SLMRec keeps MMRec's name ``reg``)."""
    return {"reg" if "reg" in accepted(MODELS.get(name)) else "reg_weight": weight}


def _replay(batch, seed=3):
    """The batch with a fresh generator, so two calls draw the same model randomness (BM3's dropout)."""
    return type(batch)(batch.users, batch.pos_items, batch.neg_items, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", TRAINABLE)
def test_loss_is_the_data_term_plus_the_regulariser(name, tiny):
    model = build_model(name, tiny, generator=torch.Generator().manual_seed(0), **_reg(name, 0.5))
    model.pre_epoch(torch.Generator().manual_seed(0))
    batch = first_batch(tiny)
    terms = model.loss_terms(_replay(batch))
    assert terms.data.dim() == 0 and terms.regularizer.dim() == 0
    torch.testing.assert_close(model.loss(_replay(batch)), terms.data + terms.regularizer)


@pytest.mark.parametrize("name", TRAINABLE)
def test_the_regulariser_sends_no_gradient_to_the_features(name, tiny):
    """What AMR perturbs moves the data term only, so its perturbation follows the data term's gradient.
    (VBPR's regulariser reads the features, through the norms of its item rows, but it penalises the
    weights: its gradient stops at the features.)"""
    model = build_model(name, tiny, generator=torch.Generator().manual_seed(0), **_reg(name, 0.5))
    if not model.adversarial_inputs():  # an ID-only model: AMR refuses it (tests/models/test_registry.py)
        assert not model.reads_features_at_inference
        return
    model.pre_epoch(torch.Generator().manual_seed(0))
    batch = first_batch(tiny)
    zeros = {m: torch.zeros_like(t, requires_grad=True) for m, t in model.adversarial_inputs().items()}
    terms = model.loss_terms(_replay(batch), perturb=zeros)
    if terms.regularizer.requires_grad:  # (FREEDOM's is a constant zero)
        grads = torch.autograd.grad(terms.regularizer, list(zeros.values()),
                                    allow_unused=True, retain_graph=True)
        assert all(g is None or not g.any() for g in grads)
    assert all(g.any() for g in torch.autograd.grad(terms.data, list(zeros.values())))


#: FREEDOM's ``reg_weight`` weighs a BPR loss on the projected feature tables: it reads the features, so
#: it belongs to the data term, and FREEDOM has no weight regulariser.
#: SLMRec keeps MMRec's ``reg`` but, as in MMRec, no term reads it: its weights are kept small by
#: Adam's weight decay (MMRec's ``weight_decay: 1e-4``, a trainer setting), so its regulariser is zero.
L2_REGULARISED = [n for n in TRAINABLE if n not in ("freedom", "slmrec")]


@pytest.mark.parametrize("name", L2_REGULARISED)
def test_reg_weight_scales_the_regulariser_and_leaves_the_data_term(name, tiny):
    batch = first_batch(tiny)
    terms = {}
    for weight in (0.0, 0.5, 1.0):
        model = build_model(name, tiny, generator=torch.Generator().manual_seed(0), **_reg(name, weight))
        model.pre_epoch(torch.Generator().manual_seed(0))
        terms[weight] = model.loss_terms(_replay(batch))
    assert terms[0.0].regularizer.item() == 0.0
    assert terms[0.5].regularizer.item() > 0
    torch.testing.assert_close(terms[1.0].regularizer, 2 * terms[0.5].regularizer)
    for weight in (0.5, 1.0):
        torch.testing.assert_close(terms[weight].data, terms[0.0].data)


def test_freedom_has_no_weight_regulariser(tiny):
    model = build_model("freedom", tiny, generator=torch.Generator().manual_seed(0), reg_weight=0.5)
    model.pre_epoch(torch.Generator().manual_seed(0))
    terms = model.loss_terms(first_batch(tiny))
    assert terms.regularizer.item() == 0.0
