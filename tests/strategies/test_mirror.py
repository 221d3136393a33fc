"""Mirror Gradient: the schedule over the whole run, both variants against the paper's formulas."""

from __future__ import annotations

import pytest
import torch

from robustrec.data.sampling import BPRSampler
from robustrec.errors import ConfigError
from robustrec.models import build_model
from robustrec.strategies import MirrorGradient, build_strategy


class CountingSGD(torch.optim.SGD):
    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.calls = 0

    def step(self, closure=None):
        self.calls += 1
        return super().step(closure)


def batches(dataset, n, seed=0):
    sampler = BPRSampler(dataset, batch_size=32)
    gen = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        out.extend(sampler.epoch(gen))
    return out[:n]


def test_mirror_steps_counted_over_the_whole_run(tiny):
    model = build_model("vbpr", tiny, generator=torch.Generator().manual_seed(0))
    opt = CountingSGD(model.parameters(), lr=0.01)
    strategy = MirrorGradient(beta=3)
    strategy.setup(model, opt)
    data = batches(tiny, 10)
    for epoch in (1, 2):  # the counter must not restart with the epoch
        strategy.on_epoch_start(epoch, 2)
        for batch in data[:5] if epoch == 1 else data[5:]:
            strategy.step(batch)
    assert strategy.t == 10
    assert opt.calls == 10 + 10 // 3  # mirror steps t = 3, 6, 9 take two optimizer steps


def test_sgd_variant_is_the_papers_formula(tiny):
    model = build_model("vbpr", tiny, generator=torch.Generator().manual_seed(0))
    reference = model.copy_with()
    lr, a1, a2 = 0.05, 1.0, 0.3
    strategy = MirrorGradient(alpha1=a1, alpha2=a2, beta=1, variant="sgd")
    strategy.setup(model, torch.optim.SGD(model.parameters(), lr=lr))
    (batch,) = batches(tiny, 1)
    strategy.step(batch)

    params = list(reference.parameters())
    grads = torch.autograd.grad(reference.loss(batch), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= a1 * lr * g
    grads = torch.autograd.grad(reference.loss(batch), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p += a2 * lr * g
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want)


def test_official_variant_with_sgd_equals_sgd_variant(tiny):
    (batch,) = batches(tiny, 1)
    results = []
    for variant in ("official", "sgd"):
        model = build_model("vbpr", tiny, generator=torch.Generator().manual_seed(0))
        strategy = MirrorGradient(alpha1=1.0, alpha2=0.2, beta=1, variant=variant)
        strategy.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
        strategy.step(batch)
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha1": 0.2, "alpha2": 0.2}, "alpha1 > alpha2 > 0"),
        ({"alpha1": 0.1, "alpha2": 0.2}, "alpha1 > alpha2 > 0"),
        ({"alpha2": 0.0}, "alpha1 > alpha2 > 0"),
        ({"beta": 0}, "beta >= 1"),
        ({"variant": "fast"}, "official"),
    ],
)
def test_bad_mirror_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MirrorGradient(**kwargs)


def test_composition_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown strategy"):
        build_strategy("nope")
    with pytest.raises(ConfigError, match="cannot wrap"):
        build_strategy("mirror+plain")
    with pytest.raises(ConfigError, match="no parameter"):
        build_strategy("plain", alpha1=1.0)
