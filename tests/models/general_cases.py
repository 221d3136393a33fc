"""Shared pieces of the tests of the general (ID-only) models: BPR, LightGCN, LayerGCN.

MMRec's formulas are re-stated here literally, on dense tensors, so that the models' sparse and
per-batch implementations are checked against an independent statement of the same maths.
"""

from __future__ import annotations

import numpy as np
import torch

from robustrec.data.dataset import Dataset, ItemFeatures
from robustrec.data.sampling import Batch, BPRSampler
from robustrec.models import build_model

#: Three users, three items; item 2 has no training interaction. Degrees: users 2, 1, 1; items 2, 2, 0.
HAND_TRAIN = [(0, 0), (0, 1), (1, 0), (2, 1)]
#: D^-1/2 A D^-1/2 of ``HAND_TRAIN`` worked out by hand: users 0-2 then items 0-2 (nodes 3-5).
HAND_ADJACENCY = torch.zeros(6, 6)
for _u, _i, _value in ((0, 0, 0.5), (0, 1, 0.5), (1, 0, 0.5**0.5), (2, 1, 0.5**0.5)):
    HAND_ADJACENCY[_u, 3 + _i] = HAND_ADJACENCY[3 + _i, _u] = _value


def hand_dataset() -> Dataset:
    """The 3-user example above, without item features (general models must not need them)."""
    return Dataset(
        name="hand",
        n_users=3,
        n_items=3,
        train=np.array(HAND_TRAIN, dtype=np.int64),
        valid=np.array([(1, 2)], dtype=np.int64),
        test=np.array([(2, 2)], dtype=np.int64),
        features=ItemFeatures(),
    )


def hand_batch() -> Batch:
    """Triples on the 3-user example (user 0 has every training item, so the sampler refuses it)."""
    return Batch(torch.tensor([0, 1, 2]), torch.tensor([1, 0, 1]), torch.tensor([2, 1, 0]),
                 torch.Generator().manual_seed(0))


def make(name: str, dataset: Dataset, seed: int = 0, **params):
    return build_model(name, dataset, generator=torch.Generator().manual_seed(seed), **params)


def first_batch(dataset: Dataset, seed: int = 0, batch_size: int = 64) -> Batch:
    sampler = BPRSampler(dataset, batch_size=batch_size)
    return next(sampler.epoch(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)))


def scores(model) -> torch.Tensor:
    return model.scorer()(torch.arange(model.n_users))


def mmrec_norm_adjacency(dataset: Dataset) -> torch.Tensor:
    """MMRec's ``get_norm_adj_mat``, dense: A = [[0, R], [R^T, 0]], D = row sums + 1e-7, D^-1/2 A D^-1/2."""
    r = torch.from_numpy(dataset.train_matrix.toarray()).float()
    n_users, n_items = r.shape
    a = torch.zeros(n_users + n_items, n_users + n_items)
    a[:n_users, n_users:] = r
    a[n_users:, :n_users] = r.T
    d = (a.sum(1) + 1e-7).pow(-0.5)
    return d[:, None] * a * d[None, :]


def mmrec_bpr(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """MMRec's ``BPRLoss``: -mean log(1e-10 + sigmoid(u.p - u.n))."""
    pos_score, neg_score = (users * pos).sum(1), (users * neg).sum(1)
    return -torch.log(1e-10 + torch.sigmoid(pos_score - neg_score)).mean()


def mmrec_emb_loss(*embeddings: torch.Tensor) -> torch.Tensor:
    """MMRec's ``EmbLoss``: the sum of the Frobenius norms divided by the rows of the last one."""
    return sum(torch.norm(e, p=2) for e in embeddings) / embeddings[-1].shape[0]


def assert_general_protocol(model, dataset: Dataset) -> None:
    """What every ID-only model exposes: its two ID tables, nothing to perturb, no feature reads."""
    assert model.reads_features_at_inference is False
    assert model.adversarial_inputs() == {}
    tables = {(t.name, t.kind, t.offset, t.rows) for t in model.embedding_tables()}
    assert tables == {("user_embedding", "user", 0, dataset.n_users), ("item_embedding", "item", 0, dataset.n_items)}
    assert set(model.state_dict()) >= {"user_embedding", "item_embedding"}
