"""One default thread count (1, or $ROBUSTREC_THREADS) for the CLI and the Python API alike.

Before, only the CLI set it: a FREEDOM run through the API ran on every core torch found and was
2.2x slower than the same run through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from robustrec.errors import ConfigError
from robustrec.evaluate import Evaluator
from robustrec.numerics import THREADS_ENV, default_threads, reproducible
from robustrec.runs import RunSpec, TrainConfig
from robustrec.training import train


@pytest.fixture
def many_threads():
    """torch's own default on a multi-core machine: more than one thread (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


@pytest.mark.parametrize("value, expected", [(None, 1), ("2", 2), (" 4 ", 4)])
def test_default_threads(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(THREADS_ENV, value)
    assert default_threads() == expected


@pytest.mark.parametrize("value, match", [("x", "must be an integer"), ("0", "between 1 and 1024"),
                                          ("nan", "must be an integer"), ("2000", "between 1 and 1024")])
def test_a_bad_threads_variable_is_a_config_error(monkeypatch, value, match):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ConfigError, match=match):
        default_threads()


def test_train_without_a_thread_count_uses_the_default(tiny, tmp_path, monkeypatch, many_threads):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    spec = RunSpec("vbpr", train=TrainConfig(epochs=1, batch_size=64, topk=(5, 10, 20)))
    train(tiny, spec, tmp_path / "one", progress=False)
    monkeypatch.setenv(THREADS_ENV, "2")
    train(tiny, spec, tmp_path / "two", progress=False)
    recorded = [json.loads((tmp_path / d / "run.json").read_text())["spec"]["train"]["threads"] for d in ("one", "two")]
    assert recorded == [1, 2]
    assert torch.get_num_threads() == many_threads  # the caller's setting is restored


class ThreadSpy(torch.nn.Module):
    """A model that scores at random and records the thread count it was evaluated on."""

    def __init__(self, n_items):
        super().__init__()
        self.n_items, self.seen = n_items, []

    def scorer(self):
        self.seen.append(torch.get_num_threads())
        return lambda users: torch.rand(len(users), self.n_items, generator=torch.Generator().manual_seed(0))


def test_evaluation_uses_the_default_thread_count_unless_inside_a_training(tiny, monkeypatch, many_threads):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    spy = ThreadSpy(tiny.n_items)
    evaluator = Evaluator(tiny, "test", (5,))
    evaluator.evaluate(spy)
    with reproducible(2):  # as inside train(spec with threads=2): the enclosing count is kept
        evaluator.evaluate(spy)
    assert spy.seen == [1, 2]
    assert torch.get_num_threads() == many_threads


def test_a_commands_thread_count_is_the_default_within_it(monkeypatch, many_threads):
    from robustrec.numerics import threads_default

    monkeypatch.setenv(THREADS_ENV, "4")
    with threads_default(2):
        assert default_threads() == 2 and torch.get_num_threads() == 2
        with reproducible() as inside:
            assert inside == 2
    assert default_threads() == 4 and torch.get_num_threads() == many_threads
    with pytest.raises(ConfigError, match="between 1 and 1024"):
        with threads_default(0):
            pass
