"""Full-ranking evaluation with MMRec's metric definitions.

For each evaluated user (one with at least one item in the split) every item is scored, the user's
training items are masked (validation items stay unmasked at test time, as in MMRec), and the top-K
list is compared with the user's split items. With hit_i = 1 when the item at rank i is relevant
and T_u the user's relevant items:

- recall@k    = sum_{i<=k} hit_i / |T_u|
- precision@k = sum_{i<=k} hit_i / k
- hit@k       = 1 if any hit_i, i <= k
- ndcg@k      = (sum_{i<=k} hit_i / log2(i+1)) / (sum_{i<=min(|T_u|,k)} 1 / log2(i+1))
- map@k       = sum_{i<=k} precision@i * hit_i / min(|T_u|, k)

all averaged over users. Users are processed in blocks so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from robustrec.data.dataset import Dataset
from robustrec.errors import ConfigError, DataError
from robustrec.metrics import DEFAULT_TOPK, METRICS, metric_key, parse_metric  # noqa: F401 (re-exported)
from robustrec.numerics import using_threads

#: Scores held at once: users per block x items (64M floats = 256 MB).
MAX_BLOCK_SCORES = 1 << 26


def ranking_metrics(hits: torch.Tensor, n_relevant: torch.Tensor, topk: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-user metrics from a ``[users, K]`` 0/1 hit matrix (K >= max(topk)) and relevant counts."""
    hits = hits.to(torch.float64)
    n_relevant = n_relevant.to(torch.float64)
    width = hits.shape[1]
    ranks = torch.arange(1, width + 1, dtype=torch.float64, device=hits.device)
    cum_hits = hits.cumsum(1)
    discount = 1.0 / torch.log2(ranks + 1.0)
    dcg = (hits * discount).cumsum(1)
    ideal = discount.cumsum(0)
    ap = (cum_hits / ranks * hits).cumsum(1)
    out: dict[str, torch.Tensor] = {}
    for k in topk:
        kth = cum_hits[:, k - 1]
        capped = torch.minimum(n_relevant, torch.tensor(float(k), dtype=torch.float64))
        out[metric_key("recall", k)] = kth / n_relevant
        out[metric_key("precision", k)] = kth / k
        out[metric_key("map", k)] = ap[:, k - 1] / capped
        out[metric_key("ndcg", k)] = dcg[:, k - 1] / ideal[capped.long() - 1]
        out[metric_key("hit", k)] = (kth > 0).to(torch.float64)
    return out


@dataclass(frozen=True)
class EvalResult:
    """Mean metrics over the evaluated users; per-user values when asked for."""

    metrics: dict[str, float]
    users: np.ndarray
    per_user: dict[str, np.ndarray] | None = None


def _rows_of(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(block row index, column) of every stored entry in ``rows`` of a CSR matrix, vectorised."""
    starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
    counts = ends - starts
    block_rows = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return block_rows, matrix.indices[np.repeat(starts, counts) + offsets]


def _check_scores(top_values: torch.Tensor) -> None:
    """Refuse a ranking built on NaN or +inf scores: its metrics would be made up.

    Checking the top of each row suffices and costs nothing: ``topk`` ranks NaN above every number,
    so a row with any NaN among its unmasked items has one in its top values."""
    bad = torch.isnan(top_values) | (top_values == float("inf"))
    if bool(bad.any()):
        raise DataError(
            f"the model's scores are NaN or infinite for {int(bad.any(dim=1).sum())} users of a block: "
            "its weights or (perturbed) inputs are not finite numbers"
        )


class Evaluator:
    """Evaluates models on one split of a dataset. Masks and ground truth are prepared once.

    ``threads``: CPU threads of each evaluation (default: see :meth:`evaluate`)."""

    def __init__(
        self,
        dataset: Dataset,
        split: str = "test",
        topk: Sequence[int] = DEFAULT_TOPK,
        device: str | torch.device = "cpu",
        block_users: int | None = None,
        threads: int | None = None,
    ) -> None:
        if split not in ("valid", "test"):
            raise ConfigError(f"split must be 'valid' or 'test', got {split!r}")
        topk = tuple(sorted(set(int(k) for k in topk)))
        if not topk or topk[0] < 1:
            raise ConfigError("top-k values must be positive integers")
        if topk[-1] > dataset.n_items:
            raise ConfigError(f"top-k {topk[-1]} exceeds the number of items ({dataset.n_items})")
        self.split = split
        self.topk = topk
        self.threads = threads
        self.device = torch.device(device)
        truth = dataset.split_matrix(split)
        self.users = np.flatnonzero(np.diff(truth.indptr) > 0)
        if len(self.users) == 0:
            raise ConfigError(f"the {split} split has no interactions")
        if block_users is None:
            block_users = max(1, min(4096, MAX_BLOCK_SCORES // dataset.n_items))
        self.blocks = []
        train = dataset.train_matrix
        for start in range(0, len(self.users), block_users):
            rows = self.users[start : start + block_users]
            mask = _rows_of(train, rows)
            gt = _rows_of(truth, rows)
            self.blocks.append(
                (
                    torch.from_numpy(rows).to(self.device),
                    tuple(torch.from_numpy(a).to(self.device) for a in mask),
                    tuple(torch.from_numpy(a).to(self.device) for a in gt),
                    torch.from_numpy(np.diff(truth.indptr)[rows]).to(self.device),
                )
            )

    @property
    def metric_keys(self) -> list[str]:
        return [metric_key(m, k) for k in self.topk for m in METRICS]

    @torch.no_grad()
    def evaluate(self, model, per_user: bool = False) -> EvalResult:
        """Evaluate a :class:`~robustrec.models.Recommender` (anything with ``scorer()``).

        It runs on ``threads`` CPU threads (:func:`robustrec.numerics.using_threads`): by default
        those of an enclosing training, else the default count (1, or $ROBUSTREC_THREADS), as in the CLI.
        """
        with using_threads(self.threads):
            return self._evaluate(model, per_user)

    def _evaluate(self, model, per_user: bool) -> EvalResult:
        was_training = model.training
        model.eval()
        try:
            score = model.scorer()
            chunks: dict[str, list[torch.Tensor]] = {}
            width = self.topk[-1]
            for users, (mrow, mcol), (grow, gcol), n_rel in self.blocks:
                scores = score(users).to(torch.float32)
                scores[mrow, mcol] = float("-inf")
                values, top = torch.topk(scores, width, dim=1)
                _check_scores(values)
                relevant = torch.zeros_like(scores, dtype=torch.bool)
                relevant[grow, gcol] = True
                hits = relevant.gather(1, top)
                for key, values in ranking_metrics(hits, n_rel, self.topk).items():
                    chunks.setdefault(key, []).append(values)
        finally:
            model.train(was_training)
        values = {key: torch.cat(parts).cpu().numpy() for key, parts in chunks.items()}
        metrics = {key: float(values[key].mean()) for key in self.metric_keys}
        return EvalResult(metrics, self.users, values if per_user else None)
