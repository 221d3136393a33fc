"""SAM, SSAM-F and SSAM-D: exact restore, equivalences, masks and the second pass on the identical batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustrec.data.sampling import Batch, BPRSampler
from robustrec.models.base import LossTerms, Recommender, default_generator
from robustrec.models.losses import bpr_loss
from robustrec.optim import OPTIMIZERS, build_optimizer
from robustrec.strategies import SAM, SSAMDynamic, SSAMFisher, build_strategy

from .strategy_helpers import fast_params, make, run_epochs, same_weights

SAM_FAMILY = ["sam", "ssam-f", "ssam-d", "amr+sam"]


def _batch(dataset, size=64, seed=0) -> Batch:
    sampler = BPRSampler(dataset, size)
    return next(sampler.epoch(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)))


def _spy_on_step(optimizer, model):
    """Record the parameters and gradients each time the base optimizer steps."""
    calls = []
    original = optimizer.step

    def step(*args, **kwargs):
        calls.append(
            (
                {n: p.detach().clone() for n, p in model.named_parameters()},
                {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
            )
        )
        return original(*args, **kwargs)

    optimizer.step = step
    return calls


def _grads_at(model, batch, params):
    loss = model.loss(batch)
    return [g for g in torch.autograd.grad(loss, params)]


def _sgd_sam_by_hand(tiny, batch, rho, lr, masks=None):
    """The weights after one SAM step with plain SGD, written out: the gradient at
    w + rho g / ||g|| (times the mask, if any; the norm over the full gradient), applied at w."""
    manual = make(tiny, "plain", optimizer="sgd", lr=lr)
    params = list(manual.model.parameters())
    w = [p.detach().clone() for p in params]
    g = _grads_at(manual.model, batch, params)
    norm = torch.linalg.vector_norm(torch.stack([x.norm() for x in g]))
    with torch.no_grad():
        for i, (p, x) in enumerate(zip(params, g)):
            p.add_(x * rho / (norm + 1e-12) * (1 if masks is None else masks[i]))
    g_adv = _grads_at(manual.model, batch, params)
    return [w0 - lr * x for w0, x in zip(w, g_adv)]


def test_sam_restores_the_weights_exactly_before_the_base_step(tiny):
    setup = make(tiny, "sam", optimizer="sgd", lr=0.1, rho=0.5)
    batch = _batch(tiny)
    calls = _spy_on_step(setup.optimizer, setup.model)
    before = {n: p.detach().clone() for n, p in setup.model.named_parameters()}
    setup.strategy.step(batch)
    assert len(calls) == 1
    weights, grads = calls[0]
    assert all(torch.equal(weights[n], before[n]) for n in before)

    # the gradient handed to the optimizer is the one at w + rho g / ||g||, computed by hand
    manual = make(tiny, "plain", optimizer="sgd", lr=0.1)
    params = list(manual.model.parameters())
    g = _grads_at(manual.model, batch, params)
    norm = torch.linalg.vector_norm(torch.stack([x.norm() for x in g]))
    with torch.no_grad():
        for p, x in zip(params, g):
            p.add_(x * 0.5 / (norm + 1e-12))
    g_adv = _grads_at(manual.model, batch, params)
    for (name, _), x in zip(manual.model.named_parameters(), g_adv):
        torch.testing.assert_close(grads[name], x)


def test_sam_with_sgd_matches_the_formula(tiny):
    rho, lr = 0.3, 0.2
    setup = make(tiny, "sam", optimizer="sgd", lr=lr, rho=rho)
    batch = _batch(tiny)
    expected = _sgd_sam_by_hand(tiny, batch, rho, lr)
    setup.strategy.step(batch)
    for p, e in zip(setup.model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("strategy", SAM_FAMILY)
def test_sam_family_steps_the_base_optimizer_once_per_batch(tiny, strategy, optimizer):
    setup = make(tiny, strategy, optimizer=optimizer, **fast_params(strategy))
    calls = _spy_on_step(setup.optimizer, setup.model)
    losses = run_epochs(setup, tiny, [1, 2], total=2)
    assert len(calls) == len(losses) > 0


@pytest.mark.parametrize("strategy", ["ssam-f", "ssam-d"])
def test_ssam_with_sparsity_zero_equals_sam(tiny, strategy):
    sam = make(tiny, "sam", rho=0.2)
    ssam = make(tiny, strategy, rho=0.2, sparsity=0.0, update_freq=1)
    assert run_epochs(sam, tiny, [1, 2, 3], total=3) == run_epochs(ssam, tiny, [1, 2, 3], total=3)
    assert same_weights(sam.weights(), ssam.weights())


@pytest.mark.parametrize("strategy", ["ssam-f", "ssam-d"])
def test_ssam_perturbs_only_the_masked_entries(tiny, strategy):
    rho, lr = 0.5, 0.1
    setup = make(tiny, strategy, optimizer="sgd", lr=lr, rho=rho, sparsity=0.7)
    setup.strategy.on_epoch_start(1, 10)
    masks = [m.clone() for m in setup.strategy.masks()]
    n = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == round(0.3 * n)
    batch = _batch(tiny)

    manual = make(tiny, "plain", optimizer="sgd", lr=lr)
    params = list(manual.model.parameters())
    w = [p.detach().clone() for p in params]
    g = _grads_at(manual.model, batch, params)
    norm = torch.linalg.vector_norm(torch.stack([x.norm() for x in g]))  # over the full gradient
    with torch.no_grad():
        for p, x, m in zip(params, g, masks):
            p.add_(x * rho / (norm + 1e-12) * m)
    g_adv = _grads_at(manual.model, batch, params)
    setup.strategy.step(batch)
    for p, w0, x in zip(setup.model.parameters(), w, g_adv):
        torch.testing.assert_close(p.detach(), w0 - lr * x)


def test_ssam_f_keeps_the_entries_with_the_largest_fisher(tiny):
    setup = make(tiny, "ssam-f", sparsity=0.6, num_samples=16)
    strategy: SSAMFisher = setup.strategy
    state = strategy.generator.get_state()
    strategy.on_epoch_start(1, 10)
    mask = torch.cat([m.flatten() for m in strategy.masks()]).bool()
    strategy.generator.set_state(state)  # the same samples again
    fisher = torch.cat([f.flatten() for f in strategy.fisher()])
    assert (fisher >= 0).all() and (fisher > 0).any()
    assert int(mask.sum()) == round(0.4 * len(mask))
    assert fisher[mask].min() >= fisher[~mask].max()


def test_ssam_f_fisher_is_a_sum_of_per_interaction_squared_gradients(tiny):
    """With one sample the Fisher is that interaction's squared gradient: check against the samples drawn."""
    setup = make(tiny, "ssam-f", num_samples=1)
    strategy: SSAMFisher = setup.strategy
    drawn = []
    loss = setup.model.loss

    def recording_loss(batch, perturb=None):
        drawn.append(batch)
        return loss(batch, perturb)

    setup.model.loss = recording_loss
    fisher = strategy.fisher()
    assert len(drawn) == 1 and len(drawn[0]) == 1
    params = list(setup.model.parameters())
    expected = torch.autograd.grad(loss(drawn[0]), params)
    for f, g in zip(fisher, expected):
        torch.testing.assert_close(f, g.square())


def test_ssam_f_mask_is_recomputed_every_update_freq_epochs(tiny):
    setup = make(tiny, "ssam-f", num_samples=8, update_freq=2)
    seen = []
    for epoch in range(1, 6):
        setup.strategy.on_epoch_start(epoch, 5)
        seen.append(torch.cat([m.flatten() for m in setup.strategy.masks()]).clone())
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[2], seen[3])
    assert not torch.equal(seen[1], seen[2]) and not torch.equal(seen[3], seen[4])


def test_ssam_d_death_rate_follows_the_cosine_schedule():
    """The reference's schedule over 0-based epochs e: drop_rate (1 + cos(pi e / epochs)) / 2; ours are
    counted from 1, so the first epoch has the full drop_rate."""
    strategy = SSAMDynamic(drop_rate=0.4)
    strategy.epochs = 10
    assert strategy.death_rate(1) == pytest.approx(0.4)
    assert strategy.death_rate(6) == pytest.approx(0.2)
    assert strategy.death_rate(11) == pytest.approx(0.0)
    rates = [strategy.death_rate(e) for e in range(1, 11)]
    assert rates == sorted(rates, reverse=True) and rates[-1] > 0


def test_ssam_d_drops_the_smallest_gradients_and_regrows_as_many(tiny):
    setup = make(tiny, "ssam-d", sparsity=0.5)
    strategy: SSAMDynamic = setup.strategy
    before = torch.cat([m.flatten() for m in strategy.masks()]).bool()
    grads = [
        torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
        for i, p in enumerate(strategy.params)
    ]
    strategy.update_mask(grads, rate=0.3)
    after = torch.cat([m.flatten() for m in strategy.masks()]).bool()
    magnitude = torch.cat([g.flatten() for g in grads]).abs()
    n_drop = int(0.3 * int(before.sum()))
    assert int(after.sum()) == int(before.sum())
    smallest = torch.zeros_like(before)
    live = before.nonzero().squeeze(1)
    smallest[live[magnitude[live].argsort()[:n_drop]]] = True
    assert torch.equal(before & ~after, smallest)  # exactly the smallest live entries died
    assert int((~before & after).sum()) == n_drop  # and as many entries dead before came back


def _flat_mask(strategy) -> torch.Tensor:
    return torch.cat([m.flatten() for m in strategy.masks()]).bool()


def _random_grads(strategy, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=gen) for p in strategy.params]


@pytest.mark.parametrize("sparsity, rate", [(0.5, 0.9), (0.5, 0.5), (0.3, 0.2)])
def test_ssam_d_never_regrows_an_entry_dropped_in_the_same_update(tiny, sparsity, rate):
    """The reference's growth score is multiplied by (1 - old mask): only entries dead before can grow."""
    strategy = make(tiny, "ssam-d", sparsity=sparsity).strategy
    before = _flat_mask(strategy)
    strategy.update_mask(_random_grads(strategy), rate=rate)
    after = _flat_mask(strategy)
    dropped, grown = before & ~after, ~before & after
    n_drop = min(int(rate * int(before.sum())), int((~before).sum()))
    assert int(dropped.sum()) == int(grown.sum()) == n_drop > 0
    assert int(after.sum()) == int(before.sum())


def test_ssam_d_with_fewer_dead_entries_than_the_rate_drops_only_as_many(tiny):
    """Sparsity 0.1, rate 0.5: the rate asks for 45% of the entries, only 10% are dead. Dropping 45%
    and regrowing 10% (the reference) would shrink the mask to 65%; we swap the 10% and keep it at 90%."""
    strategy = make(tiny, "ssam-d", sparsity=0.1).strategy
    before = _flat_mask(strategy)
    dead = int((~before).sum())
    grads = _random_grads(strategy, seed=1)
    strategy.update_mask(grads, rate=0.5)
    after = _flat_mask(strategy)
    assert int(after.sum()) == int(before.sum())
    assert torch.equal(after, ~before | (after & before))  # every entry dead before is now live
    assert int((before & ~after).sum()) == dead
    magnitude = torch.cat([g.flatten() for g in grads]).abs()
    assert magnitude[before & ~after].max() <= magnitude[before & after].min()  # the smallest died


def test_ssam_d_with_sparsity_zero_keeps_the_full_mask(tiny):
    strategy = make(tiny, "ssam-d", sparsity=0.0).strategy
    strategy.update_mask(_random_grads(strategy), rate=0.5)
    assert _flat_mask(strategy).all()


def test_ssam_d_updates_the_mask_in_the_first_epoch(tiny):
    """The reference updates at 0-based epochs 0, f, 2f, ... (ours 1, 1 + f, ...), the first included."""
    setup = make(tiny, "ssam-d", update_freq=5)
    initial = _flat_mask(setup.strategy).clone()
    run_epochs(setup, tiny, [1], total=10, batch_size=128)
    assert not torch.equal(_flat_mask(setup.strategy), initial)


def test_ssam_d_perturbs_the_updating_batch_with_the_old_mask(tiny):
    """As the reference (first_step, then update_mask): the batch whose gradient decides the new mask
    is itself perturbed with the mask it replaces."""
    rho, lr = 0.5, 0.1
    setup = make(tiny, "ssam-d", optimizer="sgd", lr=lr, rho=rho, sparsity=0.5)
    old = [m.clone() for m in setup.strategy.masks()]
    setup.strategy.on_epoch_start(1, 10)
    batch = _batch(tiny)
    expected = _sgd_sam_by_hand(tiny, batch, rho, lr, masks=old)
    setup.strategy.step(batch)
    assert not all(torch.equal(a, b) for a, b in zip(old, setup.strategy.masks()))  # it did update
    for p, e in zip(setup.model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)


def test_ssam_d_updates_the_mask_with_the_next_batch_gradient(tiny):
    setup = make(tiny, "ssam-d", update_freq=2)
    masks = []
    for epoch in (1, 2, 3):
        run_epochs(setup, tiny, [epoch], total=10, batch_size=128)
        masks.append(torch.cat([m.flatten() for m in setup.strategy.masks()]).clone())
    assert torch.equal(masks[0], masks[1])  # epoch 2 is not an update epoch
    assert not torch.equal(masks[1], masks[2])  # epoch 3 = 1 + update_freq is


class NoisyMF(Recommender):
    """A matrix factorisation with item features and dropout drawn from ``batch.generator``; records calls."""

    name = "noisy-mf"

    def __init__(self, dataset, *, generator: torch.Generator | None = None) -> None:
        super().__init__(dataset)
        g = default_generator(generator)
        self.register_features(dataset.features)
        self.user = nn.Parameter(torch.randn(dataset.n_users, 4, generator=g))
        self.item = nn.Parameter(torch.randn(dataset.n_items, 4, generator=g))
        self.proj = nn.Parameter(torch.randn(self.image_feat.shape[1], 4, generator=g) * 0.1)
        self.calls: list[tuple[Batch, torch.Tensor]] = []

    def loss_terms(self, batch, perturb=None):
        feat = self.image_feat + (perturb or {}).get("image", 0.0)
        items = self.item + feat @ self.proj
        keep = (torch.rand(len(batch), 4, generator=batch.generator) > 0.5).float()
        self.calls.append((batch, keep))
        users = self.user[batch.users] * keep
        data = bpr_loss(users, items[batch.pos_items], items[batch.neg_items])
        return LossTerms(data, self.user.square().mean())

    def adversarial_inputs(self):
        return {"image": self.image_feat}


@pytest.mark.parametrize("strategy", ["sam", "ssam-f", "ssam-d", "amr+sam"])
def test_second_pass_uses_the_identical_batch_and_model_randomness(tiny, strategy):
    model = NoisyMF(tiny)
    opt = build_optimizer("adam", model.parameters())
    strat = build_strategy(strategy)
    strat.setup(model, opt)
    batch = _batch(tiny)
    model.calls.clear()
    strat.step(batch)
    assert len(model.calls) in (2, 4)  # two passes (each two for AMR's objective)
    assert all(b is batch for b, _ in model.calls)
    assert all(torch.equal(k, model.calls[0][1]) for _, k in model.calls)
    # the generator ends where one pass leaves it
    one_pass = torch.Generator().manual_seed(batch_seed := 7)
    again = torch.Generator().manual_seed(batch_seed)
    torch.rand(len(batch), 4, generator=one_pass)
    model.calls.clear()
    strat.step(Batch(batch.users, batch.pos_items, batch.neg_items, again))
    assert torch.equal(again.get_state(), one_pass.get_state())


def test_amr_objective_under_sam_is_recomputed_at_the_perturbed_weights(tiny):
    setup = make(tiny, "amr+sam", optimizer="sgd", lr=0.1, rho=0.2)
    assert isinstance(setup.strategy, SAM)
    assert setup.strategy.label() == "AMR+SAM"
    calls = _spy_on_step(setup.optimizer, setup.model)
    setup.strategy.step(_batch(tiny))
    assert len(calls) == 1


def test_sam_family_labels():
    assert [build_strategy(n).label() for n in ("sam", "ssam-f", "ssam-d")] == ["SAM", "SSAM-F", "SSAM-D"]
    assert math.isclose(build_strategy("ssam-d").drop_rate, 0.5)
