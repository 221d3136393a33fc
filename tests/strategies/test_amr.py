"""AMR: the fast-gradient feature perturbation and its objective."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch, BPRSampler
from robustrec.errors import ConfigError
from robustrec.models import build_model
from robustrec.models.base import LossTerms, Recommender, default_generator
from robustrec.models.losses import bpr_loss
from robustrec.strategies import AMR, MirrorGradient, build_strategy

from .strategy_helpers import close_weights, make, run_epochs


def _batch(dataset, size=32, seed=0) -> Batch:
    sampler = BPRSampler(dataset, size)
    return next(sampler.epoch(torch.Generator().manual_seed(seed)))


def test_defaults_are_the_papers():
    amr = AMR()
    assert (amr.eps, amr.amr_lambda, amr.modalities, amr.eps_relative) == (0.1, 1.0, ("image",), True)


def test_eps_zero_without_a_regulariser_equals_plain_with_the_loss_scaled_by_one_plus_lambda(tiny):
    lam, lr = 0.7, 0.05
    no_reg = {"reg_weight": 0.0}  # with a regulariser only the data term is scaled (next test)
    amr = make(tiny, "amr", optimizer="sgd", lr=lr, model_params=no_reg, eps=0.0, amr_lambda=lam)
    plain = make(tiny, "plain", optimizer="sgd", lr=lr * (1 + lam), model_params=no_reg)
    run_epochs(amr, tiny, [1, 2], total=2)
    run_epochs(plain, tiny, [1, 2], total=2)
    assert close_weights(amr.weights(), plain.weights(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("relative", [True, False])
def test_perturbation_is_eps_times_the_per_item_unit_gradient(tiny, relative):
    setup = make(tiny, "amr", eps=0.3, eps_relative=relative, modalities=("image", "text"))
    batch = _batch(tiny)
    clean, deltas = setup.strategy.perturbation(batch)
    assert set(deltas) == {"image", "text"}
    touched = torch.zeros(tiny.n_items, dtype=torch.bool)
    touched[batch.pos_items] = True
    touched[batch.neg_items] = True
    for modality, delta in deltas.items():
        assert not delta.requires_grad
        scale = getattr(tiny.features, modality).abs().max() if relative else 1.0
        norms = delta.norm(dim=1)
        torch.testing.assert_close(norms[touched], torch.full_like(norms[touched], 0.3 * float(scale)))
        assert (norms[~touched] == 0).all()  # VBPR: only the batch's items have a loss gradient
        # the direction is the loss gradient's
        feat = setup.model.adversarial_inputs()[modality].clone().requires_grad_(True)
        grad = torch.autograd.grad(setup.model.loss(batch, perturb={modality: feat - feat.detach()}), feat)[0]
        cos = torch.nn.functional.cosine_similarity(delta[touched], grad[touched], dim=1)
        torch.testing.assert_close(cos, torch.ones_like(cos))
    torch.testing.assert_close(clean, setup.model.loss(batch))


def test_the_perturbation_increases_the_loss(tiny):
    setup = make(tiny, "amr", eps=0.05)
    batch = _batch(tiny)
    clean, deltas = setup.strategy.perturbation(batch)
    assert setup.model.loss(batch, perturb=deltas) > clean


def test_no_gradient_flows_through_delta(tiny):
    lam = 0.5
    setup = make(tiny, "amr", eps=0.5, amr_lambda=lam)
    batch = _batch(tiny)
    params = list(setup.model.parameters())
    _, deltas = setup.strategy.perturbation(batch)
    frozen = {m: d.detach().clone() for m, d in deltas.items()}
    expected = torch.autograd.grad(
        setup.model.loss(batch) + lam * setup.model.loss_terms(batch, perturb=frozen).data, params
    )
    got = torch.autograd.grad(setup.strategy.objective(batch), params)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_by_default_only_the_image_features_are_perturbed_as_in_the_paper(tiny):
    setup = make(tiny, "amr")
    _, deltas = setup.strategy.perturbation(_batch(tiny))
    assert set(deltas) == {"image"}


@pytest.mark.parametrize("modalities", [("text",), ("image", "text")])
def test_modalities_option_perturbs_only_those(tiny, modalities):
    setup = make(tiny, "amr", modalities=modalities)
    _, deltas = setup.strategy.perturbation(_batch(tiny))
    assert set(deltas) == set(modalities)


def test_modalities_none_perturbs_every_modality_the_model_exposes(tiny):
    setup = make(tiny, "amr", modalities=None)
    _, deltas = setup.strategy.perturbation(_batch(tiny))
    assert set(deltas) == {"image", "text"}


@pytest.mark.parametrize("model", ["vbpr", "mmgcn", "grcn", "bm3"])
def test_the_regulariser_is_counted_once(tiny, model):
    """AMR's objective is L_data(f) + lambda * L_data(f + delta) + reg (paper and reference code).

    The expected value is built from two copies of the model that differ only in reg_weight, so it
    does not rely on the split the code under test uses. The regulariser is made large so that
    counting it twice could not hide in the tolerance. (MMGCN's and GRCN's depend on the batch.)"""
    batch = _batch(tiny)
    lam = 1.0
    heavy = make(tiny, "amr", model=model, model_params={"reg_weight": 5.0}, eps=0.0, amr_lambda=lam)
    free = make(tiny, "plain", model=model, model_params={"reg_weight": 0.0})
    data = _replayed(free.model.loss, batch)
    total = _replayed(heavy.model.loss, batch)
    assert float((total - data).detach()) > 0.1  # the regulariser is large
    objective = _replayed(heavy.strategy.objective, batch)
    torch.testing.assert_close(objective, total + lam * data)  # = 2 * data + reg, once
    # and so is its gradient
    params = list(heavy.model.parameters())
    got = torch.autograd.grad(_replayed(heavy.strategy.objective, batch), params, allow_unused=True)
    free_params = list(free.model.parameters())
    want_data = torch.autograd.grad(_replayed(free.model.loss, batch), free_params, allow_unused=True)
    want_total = torch.autograd.grad(_replayed(heavy.model.loss, batch), params, allow_unused=True)
    for g, d, t in zip(got, want_data, want_total):
        if g is None:
            continue
        torch.testing.assert_close(g, t + lam * (d if d is not None else 0.0))


def _replayed(fn, batch):
    """``fn(batch)`` with the model's randomness (BM3's dropout) drawn from a fixed generator."""
    return fn(Batch(batch.users, batch.pos_items, batch.neg_items, torch.Generator().manual_seed(5)))


def test_pop_has_no_adversarial_inputs(tiny):
    pop = build_model("pop", tiny)
    with pytest.raises(ConfigError, match="reads none"):
        AMR().setup(pop, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))


def test_missing_modality_is_a_config_error(tiny):
    text_only = Dataset(
        name="text-only",
        n_users=tiny.n_users,
        n_items=tiny.n_items,
        train=tiny.train,
        valid=tiny.valid,
        test=tiny.test,
        features=tiny.features.replace(image=None),
    )
    model = build_model("vbpr", text_only)
    with pytest.raises(ConfigError, match="no image features"):
        AMR(modalities=("image",)).setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    # the default (the paper's image features) says how to perturb the text features instead
    with pytest.raises(ConfigError, match="no image features.*modalities=text"):
        AMR().setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    AMR(modalities=("text",)).setup(model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_amr_composes_under_mirror(tiny):
    strategy = build_strategy("amr+mirror", eps=0.2, amr_lambda=0.5, beta=2)
    assert isinstance(strategy, MirrorGradient) and isinstance(strategy.inner, AMR)
    assert (strategy.inner.eps, strategy.inner.amr_lambda, strategy.beta) == (0.2, 0.5, 2)
    assert strategy.label() == "AMR+MG"


def test_strings_from_the_cli_convert(tiny):
    from robustrec.strategies import parse_strategy_params

    params = parse_strategy_params("amr", ["modalities=image,text", "eps_relative=false", "eps=0.2"])
    assert params == {"modalities": ("image", "text"), "eps_relative": False, "eps": 0.2}
    AMR(**params)


class TableMF(Recommender):
    """Item representations read a learnable feature table (as BM3 and FREEDOM expose theirs)."""

    name = "table-mf"

    def __init__(self, dataset, *, generator: torch.Generator | None = None) -> None:
        super().__init__(dataset)
        g = default_generator(generator)
        self.user = nn.Parameter(torch.randn(dataset.n_users, 4, generator=g))
        self.table = nn.Parameter(dataset.features.image.clone())
        self.proj = nn.Parameter(torch.randn(self.table.shape[1], 4, generator=g))

    def loss_terms(self, batch, perturb=None):
        items = (self.table + (perturb or {}).get("image", 0.0)) @ self.proj
        data = bpr_loss(self.user[batch.users], items[batch.pos_items], items[batch.neg_items])
        return LossTerms(data, self.user.new_zeros(()))

    def adversarial_inputs(self):
        return {"image": self.table}


def test_eps_follows_a_learnable_feature_table(tiny):
    model = TableMF(tiny)
    amr = AMR(eps=0.1)
    amr.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    batch = _batch(tiny)
    first = amr.perturbation(batch)[1]["image"].norm(dim=1).max()
    with torch.no_grad():
        model.table.mul_(3.0)
    second = amr.perturbation(batch)[1]["image"].norm(dim=1).max()
    torch.testing.assert_close(second, 3 * first)
    torch.testing.assert_close(first, 0.1 * tiny.features.image.abs().max())
