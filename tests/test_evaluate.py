"""Metric kernels against values worked out by hand, and the evaluator's masking rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustrec.data.dataset import Dataset, ItemFeatures
from robustrec.errors import ConfigError
from robustrec.evaluate import Evaluator, parse_metric, ranking_metrics


def test_metrics_equal_hand_computed_values():
    # user 0: hits at ranks 1 and 3, 3 relevant items; user 1: a hit at rank 2, 1 relevant item
    hits = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]])
    n_rel = torch.tensor([3, 1])
    m = ranking_metrics(hits, n_rel, (1, 3))
    lg = math.log2
    assert m["recall@3"].tolist() == pytest.approx([2 / 3, 1.0])
    assert m["precision@3"].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert m["hit@1"].tolist() == [1.0, 0.0]
    ndcg0 = (1 / lg(2) + 1 / lg(4)) / (1 / lg(2) + 1 / lg(3) + 1 / lg(4))
    ndcg1 = (1 / lg(3)) / (1 / lg(2))
    assert m["ndcg@3"].tolist() == pytest.approx([ndcg0, ndcg1])
    # map@3: user 0 = (P@1*1 + P@3*1) / min(3, 3) = (1 + 2/3) / 3 ; user 1 = P@2 / min(1, 3) = 1/2
    assert m["map@3"].tolist() == pytest.approx([(1 + 2 / 3) / 3, 0.5])
    assert m["recall@1"].tolist() == pytest.approx([1 / 3, 0.0])
    assert m["ndcg@1"].tolist() == pytest.approx([1.0, 0.0])
    assert m["map@1"].tolist() == pytest.approx([1.0, 0.0])


class FixedScores(torch.nn.Module):
    """A stand-in model whose scores are a fixed matrix."""

    def __init__(self, scores):
        super().__init__()
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    def scorer(self):
        return lambda users: self.scores[users]


def small_dataset():
    # 2 users x 5 items. user 0: train {0}, valid {1}, test {2, 3}; user 1: train {4}, test {0}
    return Dataset(
        name="hand",
        n_users=2,
        n_items=5,
        train=np.array([[0, 0], [1, 4]]),
        valid=np.array([[0, 1]]),
        test=np.array([[0, 2], [0, 3], [1, 0]]),
        features=ItemFeatures(),
    )


def test_training_items_masked_validation_items_not():
    ds = small_dataset()
    scores = [[9, 8, 7, 1, 0], [0, 1, 2, 3, 9]]  # user 0 ranks its train item 0 first, valid item 1 second
    result = Evaluator(ds, "test", topk=(1, 2, 3)).evaluate(FixedScores(scores), per_user=True)
    # user 0 ranking after masking item 0: [1, 2, 3, 4]: item 1 (valid) stays and is not a hit
    assert result.per_user["recall@1"].tolist() == [0.0, 0.0]
    assert result.per_user["recall@2"].tolist() == [0.5, 0.0]  # user 1: item 4 masked, ranks 3, 2, 1, 0
    assert result.per_user["recall@3"].tolist() == [1.0, 0.0]
    assert result.metrics["recall@3"] == pytest.approx(0.5)
    assert result.users.tolist() == [0, 1]


def test_block_size_does_not_change_results(tiny):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(tiny.n_users, tiny.n_items, generator=gen)
    a = Evaluator(tiny, "test").evaluate(FixedScores(scores)).metrics
    b = Evaluator(tiny, "test", block_users=3).evaluate(FixedScores(scores)).metrics
    assert a == b


def test_parse_metric_rejects_unknown():
    assert parse_metric("NDCG@5") == ("ndcg", 5)
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_metric("auc@5")
    with pytest.raises(ConfigError):
        parse_metric("recall@0")


def test_topk_larger_than_items_is_an_error():
    with pytest.raises(ConfigError, match="exceeds"):
        Evaluator(small_dataset(), "test", topk=(10,))
