"""VBPR: the hand-written loss gradients equal autograd's on the shared loss functions."""

from __future__ import annotations

import pytest
import torch

from robustrec.data.sampling import Batch, BPRSampler
from robustrec.hparams import defaults
from robustrec.models import build_model
from robustrec.models.losses import bpr_loss, embedding_norm_loss
from robustrec.models.vbpr import VBPR, VBPRLoss


def make(dataset, seed=0) -> VBPR:
    return build_model("vbpr", dataset, generator=torch.Generator().manual_seed(seed)).double()


def first_batch(dataset, seed=0) -> Batch:
    return next(BPRSampler(dataset, batch_size=64).epoch(torch.Generator().manual_seed(seed)))


def reference_terms(model: VBPR, batch: Batch, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The textbook formulation: project every item, gather the batch rows, shared loss functions.

    Returns (BPR, regulariser); the regulariser's rows are built from detached features: it
    penalises the weights, and its gradient stops at the features (the data)."""
    def rows(feats):
        items = torch.cat([model.item_embedding, model.item_linear(feats)], dim=1)
        return items[batch.pos_items], items[batch.neg_items]

    users = model.user_embedding[batch.users]
    pos, neg = rows(features)
    reg = model.reg_weight * embedding_norm_loss(users, *rows(features.detach()))
    return bpr_loss(users, pos, neg), reg


def reference_loss(model: VBPR, batch: Batch, features: torch.Tensor) -> torch.Tensor:
    return sum(reference_terms(model, batch, features))


def test_defaults_are_mmrecs():
    assert defaults(VBPR) == dict(embedding_size=64, reg_weight=1e-4)


@pytest.mark.parametrize("reg_weight", [1e-4, 0.5])
def test_loss_and_gradients_equal_autograd(tiny, reg_weight):
    model = make(tiny)
    model.reg_weight = reg_weight
    batch = first_batch(tiny)
    params = list(model.parameters())
    ours = model.loss(batch)
    our_grads = torch.autograd.grad(3.0 * ours, params)  # a non-unit upstream gradient too
    theirs = reference_loss(model, batch, model.item_features)
    their_grads = torch.autograd.grad(3.0 * theirs, params)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    for name, a, b in zip([n for n, _ in model.named_parameters()], our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("reg_weight", [1e-4, 0.5])
def test_feature_gradient_equals_autograd(tiny, reg_weight):
    """AMR differentiates the loss with respect to a perturbation of each modality's features: the
    gradient is the BPR term's, whatever the regulariser's weight."""
    model = make(tiny)
    model.reg_weight = reg_weight
    batch = first_batch(tiny)
    zeros = {m: torch.zeros_like(getattr(model, f"{m}_feat"), requires_grad=True) for m in ("text", "image")}
    ours = torch.autograd.grad(model.loss(batch, perturb=zeros), list(zeros.values()))
    features = torch.cat([model.text_feat + zeros["text"], model.image_feat + zeros["image"]], dim=1)
    theirs = torch.autograd.grad(reference_loss(model, batch, features), list(zeros.values()))
    bpr_only = torch.autograd.grad(reference_terms(model, batch, features)[0], list(zeros.values()))
    assert ours[0].abs().sum() > 0 and ours[1].abs().sum() > 0
    for a, b, c in zip(ours, theirs, bpr_only, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)


def test_terms_equal_the_reference_terms(tiny):
    model = make(tiny)
    model.reg_weight = 0.5
    batch = first_batch(tiny)
    terms = model.loss_terms(batch)
    bpr, reg = reference_terms(model, batch, model.item_features)
    torch.testing.assert_close(terms.data, bpr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms.regularizer, reg, rtol=1e-12, atol=1e-12)


def test_gradcheck(tiny):
    """Both outputs (BPR, regulariser) against finite differences, for every weight; the features'
    gradient is checked on the BPR output (the regulariser's gradient stops at them on purpose)."""
    gen = torch.Generator().manual_seed(0)
    users, items, dim, width = 5, 4, 3, 6
    weights = [torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
               for shape in ((users, 2 * dim), (items, dim), (dim, width), (dim,))]
    features = torch.randn((items, width), generator=gen, dtype=torch.float64, requires_grad=True)
    index = [torch.tensor(v) for v in ([0, 1, 1, 4], [0, 2, 3, 2], [1, 1, 0, 3])]  # repeated rows on purpose
    assert torch.autograd.gradcheck(lambda *w: VBPRLoss.apply(*w, features.detach(), *index, 0.3), weights)
    assert torch.autograd.gradcheck(lambda f: VBPRLoss.apply(*weights, f, *index, 0.3)[0], [features])
    regulariser_grad = torch.autograd.grad(VBPRLoss.apply(*weights, features, *index, 0.3)[1], features)[0]
    assert not regulariser_grad.any()


def test_perturbed_features_change_the_loss_and_not_the_model(tiny):
    model = make(tiny)
    batch = first_batch(tiny)
    before = model.item_features.clone()
    clean = model.loss(batch).detach()
    noise = torch.randn(model.image_feat.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shifted = model.loss(batch, perturb={"image": noise}).detach()
    assert abs((clean - shifted).item()) > 1e-3
    assert torch.equal(model.item_features, before)


def test_zero_rows_get_the_gradient_autograd_gives(tiny):
    """||U_b|| = 0 (all users zero): the norm's gradient is 0 there, not NaN."""
    model = make(tiny)
    with torch.no_grad():
        model.user_embedding.zero_()
    batch = first_batch(tiny)
    params = list(model.parameters())
    ours = torch.autograd.grad(model.loss(batch), params)
    theirs = torch.autograd.grad(reference_loss(model, batch, model.item_features), params)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
