"""DualGNN against a literal restatement of MMRec's dualgnn.py, its graphs, options and randomness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustrec.data.dataset import Dataset, ItemFeatures
from robustrec.data.sampling import BPRSampler
from robustrec.errors import ConfigError
from robustrec.models import build_model
from robustrec.models.dualgnn import DualGNN
from robustrec.models.graph import user_item_graph
from robustrec.models.user_graph import expected_neighbours, sample_neighbours
from tests.conftest import make_tiny_dataset


def first_batch(dataset, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return next(iter(BPRSampler(dataset, batch_size=64).epoch(gen)))


def pyg_adjacency(dataset: Dataset, aggr_mode: str) -> torch.Tensor:
    """Dense (users + items) matrix of MMRec's Base_gcn on its edge_index (user->item edges plus the
    reversed ones): messages x_j flow from edge_index[0] (j) to edge_index[1] (i); "add" scales them
    by deg(j)^-1/2 deg(i)^-1/2 with deg counted on edge_index[0]; "mean" averages them at i."""
    n = dataset.n_users + dataset.n_items
    pairs = np.unique(dataset.train, axis=0)
    src = torch.tensor(np.concatenate([pairs[:, 0], pairs[:, 1] + dataset.n_users]))
    dst = torch.tensor(np.concatenate([pairs[:, 1] + dataset.n_users, pairs[:, 0]]))
    deg = torch.bincount(src, minlength=n).float()
    if aggr_mode == "add":
        norm = deg.pow(-0.5)[src] * deg.pow(-0.5)[dst]
    else:
        norm = 1.0 / torch.bincount(dst, minlength=n).float()[dst]
    adj = torch.zeros(n, n)
    adj.index_put_((dst, src), norm, accumulate=True)
    return adj


def mmrec_result_embed(model: DualGNN, dataset: Dataset, index: torch.Tensor, weights: torch.Tensor):
    """MMRec's DualGNN.forward up to result_embed, restated line by line (dense tensors)."""
    adj = pyg_adjacency(dataset, model.hparams["aggr_mode"])
    n_users = dataset.n_users
    reps = {}
    for m in model.modalities:
        gcn = model.branches[m]
        features = getattr(dataset.features, m)
        temp_features = gcn.mlp_1(F.leaky_relu(gcn.mlp(features)))
        x = F.normalize(torch.cat((gcn.preference, temp_features), dim=0))
        h = adj @ x
        h_1 = adj @ h
        reps[m] = h + x + h_1
    v_rep, t_rep = reps.get("image"), reps.get("text")
    representation = None
    if v_rep is not None:
        representation = v_rep
    if t_rep is not None:
        if representation is None:
            representation = t_rep
        else:
            representation += t_rep  # in place: v_rep now holds image + text, as in MMRec
    if v_rep is not None:
        v_rep = torch.unsqueeze(v_rep, 2)
        user_rep = v_rep[:n_users]
    if t_rep is not None:
        t_rep = torch.unsqueeze(t_rep, 2)
        user_rep = t_rep[:n_users]
    if v_rep is not None and t_rep is not None:
        user_rep = torch.matmul(torch.cat((v_rep[:n_users], t_rep[:n_users]), dim=2), model.weight_u)
    user_rep = torch.squeeze(user_rep)
    item_rep = representation[n_users:]
    h_u1 = torch.matmul(weights.unsqueeze(1), user_rep[index]).squeeze()  # User_Graph_sample
    user_rep = user_rep + h_u1
    return torch.cat((user_rep, item_rep), dim=0)


def mmrec_loss(model: DualGNN, dataset: Dataset, index, weights, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """MMRec's calculate_loss: (BPR in base 2, the regulariser without its unused weight_i term)."""
    result_embed = mmrec_result_embed(model, dataset, index, weights)
    user = batch.users
    user_tensor = result_embed[user]
    pos_scores = torch.sum(user_tensor * result_embed[batch.pos_items + dataset.n_users], dim=1)
    neg_scores = torch.sum(user_tensor * result_embed[batch.neg_items + dataset.n_users], dim=1)
    loss_value = -torch.mean(torch.log2(torch.sigmoid(pos_scores - neg_scores)))
    reg_weight = model.hparams["reg_weight"]
    prefs = {m: model.branches[m].preference for m in model.modalities}
    reg_v = (prefs["image"][user] ** 2).mean() if "image" in prefs else 0.0
    reg_t = (prefs["text"][user] ** 2).mean() if "text" in prefs else 0.0
    reg_loss = reg_weight * (reg_v + reg_t)
    if len(prefs) == 2:
        reg_loss = reg_loss + reg_weight * (model.weight_u ** 2).mean()
    return loss_value, reg_loss


def with_modalities(dataset: Dataset, modalities: str) -> Dataset:
    keep = {"both": {}, "image": {"text": None}, "text": {"image": None}}[modalities]
    return dataset.with_features(dataset.features.replace(**keep))


@pytest.mark.parametrize("aggr_mode", ["add", "mean"])
@pytest.mark.parametrize("modalities", ["both", "image", "text"])
def test_loss_is_mmrecs(tiny, modalities, aggr_mode):
    dataset = with_modalities(tiny, modalities)
    model = DualGNN(dataset, aggr_mode=aggr_mode, reg_weight=0.3, generator=torch.Generator().manual_seed(0))
    model.pre_epoch(torch.Generator().manual_seed(11))
    index, weights = sample_neighbours(model.users_graph, 40, "softmax", torch.Generator().manual_seed(11))
    batch = first_batch(dataset)
    terms = model.loss_terms(batch)
    data, regularizer = mmrec_loss(model, dataset, index, weights, batch)
    torch.testing.assert_close(terms.data, data)
    torch.testing.assert_close(terms.regularizer, regularizer)
    assert ("weight_u" in dict(model.named_parameters())) == (modalities == "both")


@pytest.mark.parametrize("modalities", ["both", "text"])
def test_scores_are_mmrecs_full_sort_predict_on_the_expected_user_graph(tiny, modalities):
    dataset = with_modalities(tiny, modalities)
    model = DualGNN(dataset, generator=torch.Generator().manual_seed(1)).eval()
    with torch.no_grad():  # move weight_u off its softmax start, so the mix matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    index, weights = expected_neighbours(model.users_graph, 40, "softmax")
    with torch.no_grad():
        result_embed = mmrec_result_embed(model, dataset, index, weights)
        expected = result_embed[: dataset.n_users] @ result_embed[dataset.n_users :].T
    torch.testing.assert_close(model.scorer()(torch.arange(dataset.n_users)), expected)


def test_the_in_place_addition_is_followed(tiny):
    """MMRec's users mix (image + text) and text, not image and text: with weight_u = (1, 0) the user
    side (before the user graph) is image + text, not image alone; with (0, 1) it is text."""
    model = DualGNN(tiny, generator=torch.Generator().manual_seed(0))
    adj = pyg_adjacency(tiny, "add")
    no_graph = torch.zeros(tiny.n_users, tiny.n_users).to_sparse_csr()
    with torch.no_grad():
        outputs = {}
        for m, feat in tiny.features.items():
            x = model.branches[m](feat)
            outputs[m] = (x + adj @ x + adj @ (adj @ x))[: tiny.n_users]
        for mix, expected in (((1.0, 0.0), outputs["image"] + outputs["text"]), ((0.0, 1.0), outputs["text"])):
            model.weight_u.copy_(torch.tensor(mix).view(1, 2, 1).expand(tiny.n_users, 2, 1))
            users, _ = model._propagate(no_graph, no_graph)
            torch.testing.assert_close(users, expected)


def test_n_layers_sets_the_hops(tiny):
    adj = pyg_adjacency(tiny, "add")
    outputs = {}
    for n_layers in (0, 1, 2):
        model = DualGNN(with_modalities(tiny, "text"), n_layers=n_layers, generator=torch.Generator().manual_seed(0))
        no_graph = torch.zeros(tiny.n_users, tiny.n_users).to_sparse_csr()
        with torch.no_grad():
            outputs[n_layers] = torch.cat(model._propagate(no_graph, no_graph))
            x = model.branches["text"](tiny.features.text)
    torch.testing.assert_close(outputs[0], x)
    torch.testing.assert_close(outputs[1], x + adj @ x)
    torch.testing.assert_close(outputs[2], x + adj @ x + adj @ (adj @ x))


def test_user_item_graph_of_a_hand_computed_example():
    """3 users, 2 items: u0-i0, u0-i1, u1-i0, u2-i1 (node order u0 u1 u2 i0 i1)."""
    dataset = Dataset(
        name="three", n_users=3, n_items=2,
        train=np.array([[0, 0], [0, 1], [1, 0], [2, 1]]), valid=np.zeros((0, 2), np.int64),
        test=np.zeros((0, 2), np.int64), features=ItemFeatures(text=torch.ones(2, 2)),
    )
    r = 1 / math.sqrt(2)
    add = torch.tensor([
        [0, 0, 0, 0.5, 0.5],
        [0, 0, 0, r, 0],
        [0, 0, 0, 0, r],
        [0.5, r, 0, 0, 0],
        [0.5, 0, r, 0, 0],
    ])
    mean = torch.tensor([
        [0, 0, 0, 0.5, 0.5],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
        [0.5, 0.5, 0, 0, 0],
        [0.5, 0, 0.5, 0, 0],
    ])
    adj, adj_t = user_item_graph(dataset.train_matrix, "add")
    assert adj_t is None
    torch.testing.assert_close(adj.to_dense(), add, atol=1e-6, rtol=1e-6)
    adj, adj_t = user_item_graph(dataset.train_matrix, "mean")
    torch.testing.assert_close(adj.to_dense(), mean)
    torch.testing.assert_close(adj_t.to_dense(), mean.T)


def test_the_user_graph_is_resampled_from_the_epoch_generator(tiny):
    model = DualGNN(tiny, generator=torch.Generator().manual_seed(0))

    def epoch_graph(seed):
        model.pre_epoch(torch.Generator().manual_seed(seed))
        return model.epoch_user_adj.to_dense()

    assert torch.equal(epoch_graph(1), epoch_graph(1))
    assert not torch.equal(epoch_graph(1), epoch_graph(2))
    # inference does not depend on the epoch's sample
    before = model.eval().scorer()(torch.arange(tiny.n_users))
    epoch_graph(3)
    assert torch.equal(model.scorer()(torch.arange(tiny.n_users)), before)


def test_loss_without_pre_epoch_samples_from_the_batch_generator(tiny):
    batch = first_batch(tiny)
    batch = type(batch)(batch.users, batch.pos_items, batch.neg_items, torch.Generator().manual_seed(5))
    lazy = DualGNN(tiny, generator=torch.Generator().manual_seed(0))
    lazy_loss = lazy.loss(batch)
    eager = DualGNN(tiny, generator=torch.Generator().manual_seed(0))
    eager.pre_epoch(torch.Generator().manual_seed(5))
    torch.testing.assert_close(lazy_loss, eager.loss(batch))


def test_records_which_user_graph_it_used(tiny, tmp_path):
    assert DualGNN(tiny).derived["user_graph"] == f"built from {len(tiny.train):,} training interactions"
    dataset = make_tiny_dataset(root=tmp_path)
    graph = {u: [[(u + 1) % dataset.n_users], [1.0]] for u in range(dataset.n_users)}
    np.save(tmp_path / "user_graph_dict.npy", graph, allow_pickle=True)
    model = DualGNN(dataset, k=1)
    assert model.derived["user_graph"] == f"read from {tmp_path / 'user_graph_dict.npy'}"
    assert model.user_adj.to_dense()[0].nonzero().flatten().tolist() == [1]


def test_defaults_are_mmrecs_first_setting(tiny):
    model = build_model("dualgnn", tiny)
    assert model.hparams == {"embedding_size": 64, "n_layers": 2, "aggr_mode": "add", "reg_weight": 0.1,
                             "k": 40, "user_aggr_mode": "softmax"}
    assert [t.name for t in model.embedding_tables()] == ["branches.image.preference", "branches.text.preference"]
    assert set(model.adversarial_inputs()) == {"image", "text"}


@pytest.mark.parametrize(("params", "message"), [
    ({"embedding_size": 0}, "dualgnn: embedding_size must be an integer >= 1, got 0"),
    ({"n_layers": -1}, "dualgnn: n_layers must be an integer >= 0, got -1"),
    ({"reg_weight": float("nan")}, "dualgnn: reg_weight must be a finite number >= 0, got nan"),
    ({"k": 0}, "dualgnn: k must be an integer >= 1, got 0"),
    ({"aggr_mode": "max"}, "dualgnn: aggr_mode must be one of add, mean, got 'max'"),
    ({"user_aggr_mode": "sum"}, "dualgnn: user_aggr_mode must be one of softmax, mean, got 'sum'"),
])
def test_bad_hyper_parameters_are_one_line_config_errors(tiny, params, message):
    with pytest.raises(ConfigError) as error:
        DualGNN(tiny, **params)
    assert str(error.value) == message


def test_needs_features(tiny):
    with pytest.raises(ConfigError, match="DualGNN needs image or text features"):
        DualGNN(tiny.with_features(ItemFeatures()))
