"""DRAGON: MMRec's maths restated densely, its graphs by hand, per-epoch randomness from the generator."""

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
from robustrec.models.dragon import DRAGON
from robustrec.models.user_graph import sample_neighbours


def batch_of(dataset, seed=0, size=64):
    gen = torch.Generator().manual_seed(seed)
    return next(iter(BPRSampler(dataset, batch_size=size).epoch(gen, torch.Generator().manual_seed(seed + 1))))


def all_scores(model):
    return model.scorer()(torch.arange(model.n_users))


def dense(csr):
    return csr.to_dense()


# ---- an independent, dense re-statement of MMRec's DRAGON --------------------------------------------


def mmrec_knn(features, k):
    """MMRec's get_knn_adj_mat + compute_normalized_laplacian, densely."""
    normed = features / features.norm(p=2, dim=-1, keepdim=True)
    knn = (normed @ normed.T).topk(k, dim=-1).indices
    adj = torch.zeros(len(features), len(features))
    adj[torch.arange(len(features)).unsqueeze(1).expand(-1, k), knn] = 1.0
    inv_sqrt = (1e-7 + adj.sum(-1)).pow(-0.5)
    return inv_sqrt[:, None] * adj * inv_sqrt[None, :]


def mmrec_mm_adj(dataset, k=10, image_weight=0.1):
    feats = dataset.features
    if feats.image is not None and feats.text is not None:
        return image_weight * mmrec_knn(feats.image, k) + (1 - image_weight) * mmrec_knn(feats.text, k)
    return mmrec_knn(feats.image if feats.image is not None else feats.text, k)


def mmrec_edge_matrix(dataset, aggr_mode="add"):
    """torch_geometric's Base_gcn on MMRec's edge_index (both directions): M[dst, src]."""
    pairs = np.unique(dataset.train, axis=0)
    users = torch.from_numpy(pairs[:, 0])
    items = torch.from_numpy(pairs[:, 1]) + dataset.n_users
    src, dst = torch.cat([users, items]), torch.cat([items, users])
    n = dataset.n_users + dataset.n_items
    deg = torch.bincount(src, minlength=n).float()  # degree(row) in MMRec's message()
    matrix = torch.zeros(n, n)
    if aggr_mode == "add":
        matrix[dst, src] = deg[src].pow(-0.5) * deg[dst].pow(-0.5)
    else:  # "mean": plain messages, averaged at the target
        matrix[dst, src] = 1.0
        matrix = matrix / matrix.sum(1, keepdim=True).clamp_min(1.0)
    return matrix


def cooccurrence_lists(dataset):
    """Each user's neighbours (users sharing a training item) and the shared counts."""
    a = torch.zeros(dataset.n_users, dataset.n_items)
    a[dataset.train[:, 0], dataset.train[:, 1]] = 1.0
    shared = a @ a.T
    shared.fill_diagonal_(0.0)
    return [(row.nonzero().flatten(), row[row > 0]) for row in shared]


def mmrec_forward(model, dataset, index_weights, n_layers=2, n_mm_layers=1, aggr_mode="add"):
    """MMRec's DRAGON.forward up to result_embed. ``index_weights``: per user (neighbour ids, weights),
    aggregated as User_Graph_sample does (weights @ user_rep[ids])."""
    matrix = mmrec_edge_matrix(dataset, aggr_mode)
    reps = {}
    for modality, branch in model.branches.items():
        feat = getattr(dataset.features, modality)
        temp = branch.mlp_1(F.leaky_relu(branch.mlp(feat)))
        x = F.normalize(torch.cat([branch.preference, temp]))
        out, h = x, x
        for _ in range(n_layers):
            h = matrix @ h
            out = out + h
        reps[modality] = out
    nu = model.n_users
    if len(reps) == 2:
        v, t = reps["image"], reps["text"]
        representation = torch.cat([v, t], dim=1)
        w = model.weight_u
        user_rep = torch.cat([w[:, :1] * v[:nu], w[:, 1:] * t[:nu]], dim=1)
    else:
        representation = next(iter(reps.values()))
        user_rep = representation[:nu]
    item_rep = representation[nu:]
    h = item_rep
    for _ in range(n_mm_layers):
        h = mmrec_mm_adj(dataset) @ h
    item_rep = item_rep + h
    h_u = torch.stack([weights @ user_rep[ids] if len(ids) else torch.zeros(user_rep.shape[1])
                       for ids, weights in index_weights])
    return user_rep + h_u, item_rep


def inference_lists(dataset, mode="softmax"):
    """Every neighbour counted once (the tiny users have < 40 neighbours: all of them are kept)."""
    lists = []
    for ids, counts in cooccurrence_lists(dataset):
        weights = torch.softmax(counts, 0) if mode == "softmax" else torch.full_like(counts, 1 / len(counts))
        lists.append((ids, weights))
    return lists


@pytest.fixture
def model(tiny):
    return DRAGON(tiny, generator=torch.Generator().manual_seed(0), embedding_size=8)


def test_scores_match_mmrec(model, tiny):
    with torch.no_grad():
        users, items = mmrec_forward(model, tiny, inference_lists(tiny))
        torch.testing.assert_close(all_scores(model), users @ items.T, rtol=1e-5, atol=1e-5)


def test_loss_matches_mmrec(tiny):
    model = DRAGON(tiny, generator=torch.Generator().manual_seed(0), embedding_size=8, reg_weight=0.3)
    model.pre_epoch(torch.Generator().manual_seed(7))
    batch = batch_of(tiny)
    terms = model.loss_terms(batch)
    # the same epoch graph, drawn again from the same seed, aggregated as MMRec does
    index, weights = sample_neighbours(model.user_graph, 40, "softmax", torch.Generator().manual_seed(7))
    users, items = mmrec_forward(model, tiny, list(zip(index, weights)))
    nu = model.n_users
    result = torch.cat([users, items])
    user_t = result[batch.users]
    pos = (user_t * result[batch.pos_items + nu]).sum(1)
    neg = (user_t * result[batch.neg_items + nu]).sum(1)
    bpr = -torch.mean(torch.log2(torch.sigmoid(pos - neg)))
    reg = 0.3 * ((model.branches["image"].preference[batch.users] ** 2).mean()
                 + (model.branches["text"].preference[batch.users] ** 2).mean())
    reg = reg + 0.3 * (model.weight_u ** 2).mean()
    torch.testing.assert_close(terms.data, bpr)
    torch.testing.assert_close(terms.regularizer, reg)


@pytest.mark.parametrize(("n_layers", "n_mm_layers", "aggr_mode"), [(1, 0, "add"), (3, 2, "add"), (2, 1, "mean")])
def test_depths_and_mean_aggregation_match_mmrec(tiny, n_layers, n_mm_layers, aggr_mode):
    """n_layers (never read by MMRec, which always runs 2 hops) sets the hops; n_mm_layers 0 doubles."""
    model = DRAGON(tiny, generator=torch.Generator().manual_seed(1), embedding_size=8, n_layers=n_layers,
                   n_mm_layers=n_mm_layers, aggr_mode=aggr_mode)
    with torch.no_grad():
        users, items = mmrec_forward(model, tiny, inference_lists(tiny), n_layers, n_mm_layers, aggr_mode)
        torch.testing.assert_close(all_scores(model), users @ items.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality_matches_mmrec_without_modality_weights(tiny, modality):
    data = tiny.with_features(ItemFeatures(**{modality: getattr(tiny.features, modality)}))
    model = DRAGON(data, generator=torch.Generator().manual_seed(0), embedding_size=8, user_aggr_mode="mean")
    assert list(model.branches) == [modality]
    with torch.no_grad():
        users, items = mmrec_forward(model, data, inference_lists(data, "mean"))
        torch.testing.assert_close(all_scores(model), users @ items.T, rtol=1e-5, atol=1e-5)
    # weight_u does not enter the scores with one modality, but MMRec still regularises it
    model.loss_terms(batch_of(data)).total().backward()
    assert model.weight_u.grad is not None and model.weight_u.grad.abs().sum() > 0
    with torch.no_grad():
        model.weight_u.mul_(3.0)
    torch.testing.assert_close(all_scores(model), users @ items.T, rtol=1e-5, atol=1e-5)


# ---- graphs by hand ---------------------------------------------------------------------------------


def three_users(features=True):
    """Users 0, 1, 2 and items 0, 1, 2: u0 has all three, u1 items 0 and 1, u2 item 2."""
    train = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 2]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    feats = ItemFeatures(text=text) if features else ItemFeatures()
    return Dataset("three", 3, 3, train, train[:1], train[:1], feats)


def test_user_item_graph_by_hand():
    model = DRAGON(three_users(), generator=torch.Generator().manual_seed(0))
    adj = model.ui_adj
    assert model.ui_adj_t is None  # symmetric: its own transpose
    a, b, c = 1 / math.sqrt(6), 1 / 2, 1 / math.sqrt(2)
    # nodes u0 u1 u2 i0 i1 i2; degrees 3 2 1 2 2 2; weight 1 / sqrt(deg(u) deg(i))
    expected = torch.tensor([
        [0, 0, 0, a, a, a],
        [0, 0, 0, b, b, 0],
        [0, 0, 0, 0, 0, c],
        [a, b, 0, 0, 0, 0],
        [a, b, 0, 0, 0, 0],
        [a, 0, c, 0, 0, 0],
    ])
    torch.testing.assert_close(dense(adj), expected)
    model = DRAGON(three_users(), generator=torch.Generator().manual_seed(0), aggr_mode="mean")
    mean, mean_t = model.ui_adj, model.ui_adj_t
    t, h = 1 / 3, 1 / 2
    expected = torch.tensor([
        [0, 0, 0, t, t, t],
        [0, 0, 0, h, h, 0],
        [0, 0, 0, 0, 0, 1.0],
        [h, h, 0, 0, 0, 0],
        [h, h, 0, 0, 0, 0],
        [h, 0, h, 0, 0, 0],
    ])
    torch.testing.assert_close(dense(mean), expected)
    torch.testing.assert_close(dense(mean_t), expected.T)


def test_user_user_graph_by_hand():
    # shared items: u0-u1 two (items 0, 1), u0-u2 one (item 2), u1-u2 none
    e = math.e
    expected = torch.tensor([[0, e / (e + 1), 1 / (e + 1)], [1.0, 0, 0], [1.0, 0, 0]])
    model = DRAGON(three_users(), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(dense(model.user_adj), expected)
    torch.testing.assert_close(dense(model.user_adj_t), expected.T)
    # every user has at most 2 neighbours: padded to k = 40 with repeats, which shifts u0's weights
    model.pre_epoch(torch.Generator().manual_seed(0))
    sampled = dense(model.epoch_user_adj)
    torch.testing.assert_close(sampled[1:], expected[1:])
    assert sampled[0, 0] == 0 and not torch.isclose(sampled[0, 1], expected[0, 1])
    torch.testing.assert_close(sampled[0].sum(), torch.tensor(1.0))
    # k = 1: only the neighbour sharing the most items; "mean" weighs neighbours equally
    model = DRAGON(three_users(), generator=torch.Generator().manual_seed(0), k=1)
    torch.testing.assert_close(dense(model.user_adj)[0], torch.tensor([0, 1.0, 0]))
    model = DRAGON(three_users(), generator=torch.Generator().manual_seed(0), user_aggr_mode="mean")
    torch.testing.assert_close(dense(model.user_adj)[0], torch.tensor([0, 0.5, 0.5]))


def test_kernel_graph_is_rebuilt_from_the_features(tiny):
    model = DRAGON(tiny, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(dense(model.mm_adj), mmrec_mm_adj(tiny))
    shuffled = tiny.features.replace(text=tiny.features.text.flip(0))
    other = model.with_features(shuffled)
    torch.testing.assert_close(dense(other.mm_adj), 0.1 * mmrec_knn(tiny.features.image, 10)
                               + 0.9 * mmrec_knn(shuffled.text, 10))
    assert not torch.allclose(dense(other.mm_adj), dense(model.mm_adj))


# ---- randomness -------------------------------------------------------------------------------------


def test_epoch_user_graph_comes_from_the_generator(tiny):
    """Tiny users have < 40 neighbours: their lists are padded at random, every epoch anew."""
    model = DRAGON(tiny, generator=torch.Generator().manual_seed(0))
    state = torch.random.get_rng_state()
    graphs = []
    for seed in (1, 1, 2):
        model.pre_epoch(torch.Generator().manual_seed(seed))
        graphs.append(dense(model.epoch_user_adj))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is never used
    assert torch.equal(graphs[0], graphs[1])
    assert not torch.equal(graphs[0], graphs[2])
    # every epoch graph links each user to its own neighbours only, with weights summing to 1
    neighbours = torch.zeros(tiny.n_users, tiny.n_users, dtype=torch.bool)
    for user, (ids, _) in enumerate(cooccurrence_lists(tiny)):
        neighbours[user, ids] = True
    for graph in graphs:
        assert not (graph.ne(0) & ~neighbours).any()
        torch.testing.assert_close(graph.sum(1), torch.ones(tiny.n_users))


def test_without_padding_the_epoch_graph_is_the_inference_graph(tiny):
    k = min(len(ids) for ids, _ in cooccurrence_lists(tiny))
    model = DRAGON(tiny, generator=torch.Generator().manual_seed(0), k=k)
    model.pre_epoch(torch.Generator().manual_seed(3))
    torch.testing.assert_close(dense(model.epoch_user_adj), dense(model.user_adj))


def test_scores_do_not_depend_on_the_epoch_graph(model, tiny):
    """MMRec scores with the representation of the last training batch; here with the fixed graph."""
    before = all_scores(model)
    model.pre_epoch(torch.Generator().manual_seed(5))
    model.loss(batch_of(tiny))
    assert torch.equal(all_scores(model), before)
    torch.testing.assert_close(all_scores(model.copy_with()), before)


def test_loss_samples_the_epoch_graph_when_pre_epoch_was_not_called(tiny):
    a = DRAGON(tiny, generator=torch.Generator().manual_seed(0))
    b = DRAGON(tiny, generator=torch.Generator().manual_seed(0))
    batch = batch_of(tiny)  # its generator is seeded with 1
    b.pre_epoch(torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.loss(batch), b.loss(batch))


def test_same_generator_same_weights(tiny):
    a = DRAGON(tiny, generator=torch.Generator().manual_seed(3))
    b = DRAGON(tiny, generator=torch.Generator().manual_seed(3))
    c = DRAGON(tiny, generator=torch.Generator().manual_seed(4))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.weight_u, c.weight_u)
    # weight_u starts as a softmax over the two modalities
    torch.testing.assert_close(a.weight_u.sum(1), torch.ones(tiny.n_users))


# ---- hyper-parameters and protocol ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"aggr_mode": "max"}, "dragon: aggr_mode must be 'add' or 'mean', got 'max'"),
        ({"user_aggr_mode": "weighted"}, "dragon: user_aggr_mode must be 'softmax' or 'mean', got 'weighted'"),
        ({"k": 0}, "dragon: k must be an integer >= 1, got 0"),
        ({"n_layers": -1}, "dragon: n_layers must be an integer >= 0, got -1"),
    ],
)
def test_bad_hyperparameters_are_one_line_errors(tiny, params, message):
    with pytest.raises(ConfigError) as caught:
        build_model("dragon", tiny, **params)
    assert str(caught.value) == message


def test_needs_features():
    with pytest.raises(ConfigError, match="^DRAGON needs image or text features$"):
        DRAGON(three_users(features=False))


def test_feat_embed_dim_has_no_effect_as_in_mmrec(tiny):
    a = DRAGON(tiny, generator=torch.Generator().manual_seed(0), feat_embed_dim=64)
    b = DRAGON(tiny, generator=torch.Generator().manual_seed(0), feat_embed_dim=7)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert torch.equal(all_scores(a), all_scores(b))
    assert b.hparams["feat_embed_dim"] == 7


def test_tables_inputs_and_provenance(model, tiny):
    assert [t.name for t in model.embedding_tables()] == ["branches.image.preference", "branches.text.preference"]
    assert all(t.kind == "user" and t.rows == tiny.n_users for t in model.embedding_tables())
    assert model.item_tables() == []  # no item ID embedding: items are made from their features
    assert model.adversarial_inputs().keys() == {"image", "text"}
    assert model.adversarial_inputs()["text"] is model.text_feat
    assert model.derived["user_graph"] == model.user_graph.source
