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
        ({"alpha2": 0.0}, "alpha2 must be a finite number > 0"),
        ({"alpha1": float("inf")}, "alpha1 must be a finite number > 0"),
        ({"beta": 0}, "beta must be an integer >= 1"),
        ({"beta": float("nan")}, "beta must be an integer >= 1"),
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


def _one_param_optimizers():
    """Optimizers whose step is not plain SGD, as (label, factory over a parameter list)."""
    return {
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.1),
        "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=0.1),
        "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.1),
        "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        "sgd-nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        "sgd-weight-decay": lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=1e-4),
        "sgd-dampening": lambda ps: torch.optim.SGD(ps, lr=0.1, dampening=0.1),
        "sgd-maximize": lambda ps: torch.optim.SGD(ps, lr=0.1, maximize=True),
    }


@pytest.mark.parametrize("label", list(_one_param_optimizers()))
def test_sgd_variant_refuses_anything_but_plain_sgd(tiny, label):
    """Its half-steps are lr * g; beside Adam's steps (about lr each, whatever |g|) they would be noise."""
    model = build_model("vbpr", tiny)
    optimizer = _one_param_optimizers()[label](list(model.parameters()))
    with pytest.raises(ConfigError, match=rf"{type(optimizer).__name__}.*official.*--optimizer sgd"):
        MirrorGradient(variant="sgd").setup(model, optimizer)
    MirrorGradient(variant="official").setup(model, optimizer)  # the official variant takes any optimizer


def test_sgd_variant_refuses_a_non_plain_second_group(tiny):
    model = build_model("vbpr", tiny)
    params = list(model.parameters())
    optimizer = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:], "momentum": 0.5}], lr=0.1)
    with pytest.raises(ConfigError, match="momentum"):
        MirrorGradient(variant="sgd").setup(model, optimizer)


def test_sgd_variant_uses_each_groups_lr(tiny):
    model = build_model("vbpr", tiny, generator=torch.Generator().manual_seed(0))
    reference = model.copy_with()
    a1, a2 = 1.0, 0.3
    names = [n for n, _ in model.named_parameters()]
    lrs = {n: (0.05 if n == "user_embedding" else 0.5) for n in names}
    groups = [{"params": [p], "lr": lrs[n]} for n, p in model.named_parameters()]
    strategy = MirrorGradient(alpha1=a1, alpha2=a2, beta=1, variant="sgd")
    strategy.setup(model, torch.optim.SGD(groups, lr=1.0))
    (batch,) = batches(tiny, 1)
    strategy.step(batch)

    params = dict(reference.named_parameters())
    for sign, scale in ((-1.0, a1), (1.0, a2)):
        grads = torch.autograd.grad(reference.loss(batch), list(params.values()))
        with torch.no_grad():
            for (name, p), g in zip(params.items(), grads):
                p += sign * scale * lrs[name] * g
    for name, got in model.named_parameters():
        torch.testing.assert_close(got, params[name], msg=name)
