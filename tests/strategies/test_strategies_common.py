"""Tests every strategy shares, parametrised over the registries (new models and strategies are covered
automatically), plus Mirror Gradient's equivalences."""

from __future__ import annotations

import io
import math

import pytest
import torch

from robustrec.errors import ConfigError
from robustrec.hparams import numeric_params
from robustrec.models import MODELS, build_model
from robustrec.optim import OPTIMIZERS
from robustrec.runs import RunSpec, TrainConfig
from robustrec.strategies import STRATEGIES, build_strategy
from robustrec.training import train

from .strategy_helpers import close_weights, fast_params, make, run_epochs, same_weights, strategy_names

STRATEGY_NAMES = strategy_names()
#: Models with parameters to train (popularity has none: the trainer only evaluates it).
TRAINABLE_MODELS = [m for m in MODELS.names() if getattr(MODELS.get(m), "trainable", True)]


def _needs_features(name: str) -> bool:
    return "amr" in name.split("+")


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("model", TRAINABLE_MODELS)
def test_every_strategy_trains_every_model_with_every_optimizer(tiny, model, strategy, optimizer):
    net = build_model(model, tiny, generator=torch.Generator().manual_seed(0))
    params = fast_params(strategy)
    if _needs_features(strategy) and not net.adversarial_inputs():
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        with pytest.raises(ConfigError, match="item features"):
            build_strategy(strategy, **params).setup(net, opt)
        return
    setup = make(tiny, strategy, model=model, optimizer=optimizer, lr=0.01, **params)
    before = setup.weights()
    losses = run_epochs(setup, tiny, [1, 2], total=2, batch_size=len(tiny.train) // 2 + 1)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    after = setup.weights()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert not same_weights(before, after)


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_same_seed_same_weights(tiny, strategy):
    runs = []
    for _ in range(2):
        setup = make(tiny, strategy, **fast_params(strategy))
        run_epochs(setup, tiny, [1, 2, 3], total=3)
        runs.append(setup.weights())
    assert same_weights(*runs)


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_state_dict_round_trip_resumes_identically(tiny, strategy):
    """Save after epoch 1 (as the trainer does, read back with weights_only) and continue: same weights."""
    params = fast_params(strategy)
    gens = (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    first = make(tiny, strategy, **params)
    run_epochs(first, tiny, [1], total=3, gens=gens)
    buffer = io.BytesIO()
    torch.save(
        {
            "model": first.model.state_dict(),
            "optimizer": first.optimizer.state_dict(),
            "strategy": first.strategy.state_dict(),
            "gens": [g.get_state() for g in gens],
        },
        buffer,
    )
    run_epochs(first, tiny, [2, 3], total=3, gens=gens)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    second = make(tiny, strategy, **params)
    second.model.load_state_dict(saved["model"])
    second.optimizer.load_state_dict(saved["optimizer"])
    second.strategy.load_state_dict(saved["strategy"])
    resumed_gens = (torch.Generator(), torch.Generator())
    for g, state in zip(resumed_gens, saved["gens"]):
        g.set_state(state)
    run_epochs(second, tiny, [2, 3], total=3, gens=resumed_gens)
    assert same_weights(first.weights(), second.weights())


@pytest.mark.parametrize("strategy", ["ssam-f", "ssam-d", "amr+sam"])
def test_trainer_resume_equals_uninterrupted(tiny, tmp_path, strategy):
    spec = RunSpec(
        model="vbpr",
        strategy=strategy,
        strategy_params=fast_params(strategy),
        train=TrainConfig(epochs=3, patience=5, batch_size=64, topk=(5, 20), seed=3),
    )
    whole = train(tiny, spec, tmp_path / "whole", progress=False)
    assert train(tiny, spec, tmp_path / "parts", progress=False, max_epochs_this_call=1) is None
    assert train(tiny, spec, tmp_path / "parts", progress=False, max_epochs_this_call=1) is None
    resumed = train(tiny, spec, tmp_path / "parts", progress=False)
    assert resumed.test == whole.test and resumed.valid == whole.valid


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_label_is_a_nonempty_string(strategy):
    assert build_strategy(strategy).label()


@pytest.mark.parametrize("name", ["sam+mirror", "ssam-f+mirror", "mirror+sam", "sam+ssam-d"])
def test_two_update_rules_cannot_be_combined(name):
    with pytest.raises(ConfigError, match="update rule, not an objective.*objective in .*amr.*plain"):
        build_strategy(name)


def test_an_objective_cannot_wrap():
    with pytest.raises(ConfigError, match="'amr' cannot wrap another strategy"):
        build_strategy("plain+amr")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("sam", {"rho": 0.0}),
        ("sam", {"rho": -0.1}),
        ("ssam-f", {"rho": 0.0}),
        ("ssam-f", {"sparsity": 1.0}),
        ("ssam-d", {"sparsity": -0.1}),
        ("ssam-d", {"sparsity": 1.5}),
        ("ssam-f", {"num_samples": 0}),
        ("ssam-d", {"update_freq": 0}),
        ("ssam-d", {"drop_rate": 1.5}),
        ("amr", {"eps": -0.1}),
        ("amr", {"amr_lambda": -1.0}),
        ("amr", {"modalities": ("audio",)}),
        ("amr+mirror", {"eps": -1.0}),
        ("amr+sam", {"rho": 0.0}),
        ("mirror", {"alpha1": 0.1, "alpha2": 0.2}),
        ("sam", {"beta": 3}),
    ],
)
def test_bad_options_are_config_errors(name, params):
    with pytest.raises(ConfigError):
        build_strategy(name, **params)


NOT_A_NUMBER = [math.nan, math.inf, -math.inf, "0.1"]
NUMERIC_STRATEGY_PARAMS = [
    (name, pname, bad)
    for name in STRATEGIES.names()
    for pname, _ in numeric_params(STRATEGIES.get(name))
    for bad in NOT_A_NUMBER
]


def test_every_strategy_has_numeric_parameters_to_check():
    covered = {name for name, _, _ in NUMERIC_STRATEGY_PARAMS}
    assert covered == set(STRATEGIES.names()) - {"plain"}


@pytest.mark.parametrize(("name", "pname", "bad"), NUMERIC_STRATEGY_PARAMS)
def test_nan_inf_and_strings_are_config_errors_naming_the_parameter(name, pname, bad):
    """``not rho > 0`` catches NaN but lets inf through; ``int(nan)`` raises ValueError: every
    numeric option must give a one-line ConfigError naming it."""
    with pytest.raises(ConfigError, match=pname) as caught:
        build_strategy(name, **{pname: bad})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "params"),
    [("mirror", {"beta": 2.5}), ("ssam-f", {"num_samples": 1.5}), ("ssam-d", {"seed": -1}), ("ssam-f", {"seed": 2**64}),
     ("ssam-d", {"update_freq": True}), ("amr", {"eps_relative": "false"}), ("sam", {"rho": math.inf})],
)
def test_non_integers_booleans_and_odd_types_are_config_errors(name, params):
    with pytest.raises(ConfigError, match=next(iter(params))):
        build_strategy(name, **params)


def test_every_registered_strategy_has_a_name_matching_its_key():
    for name in STRATEGIES.names():
        assert STRATEGIES.get(name).name == name


# ---- Mirror Gradient equivalences ---------------------------------------------------------------


def test_mirror_that_never_mirrors_equals_plain(tiny):
    plain = make(tiny, "plain")
    mirror = make(tiny, "mirror", beta=1000)
    steps = [run_epochs(s, tiny, [1, 2], total=2) for s in (plain, mirror)]
    assert steps[0] == steps[1]
    assert same_weights(plain.weights(), mirror.weights())


def test_mirror_official_with_sgd_equals_the_sgd_variant(tiny):
    official = make(tiny, "mirror", optimizer="sgd", lr=0.1, beta=2, variant="official")
    literal = make(tiny, "mirror", optimizer="sgd", lr=0.1, beta=2, variant="sgd")
    for s in (official, literal):
        run_epochs(s, tiny, [1, 2], total=2)
    assert close_weights(official.weights(), literal.weights(), rtol=1e-5, atol=1e-6)
    assert not same_weights(official.weights(), make(tiny, "plain").weights())
