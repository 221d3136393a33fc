"""LATTICE: MMRec's maths restated densely, its graphs by hand, when the learnt graph is rebuilt."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from robustrec.data.dataset import ItemFeatures
from robustrec.data.sampling import Batch, BPRSampler
from robustrec.errors import ConfigError
from robustrec.hparams import defaults
from robustrec.models import build_model
from robustrec.models.lattice import LATTICE, self_loop_mean_adjacency, summed_edge_graph, weighted_knn_graph


def make(dataset, seed=0, **params) -> LATTICE:
    return build_model("lattice", dataset, generator=torch.Generator().manual_seed(seed), **params)


def first_batch(dataset, seed=0) -> Batch:
    sampler = BPRSampler(dataset, batch_size=64)
    return next(sampler.epoch(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)))


def scores(model) -> torch.Tensor:
    return model.scorer()(torch.arange(model.n_users))


# ---- MMRec's LATTICE, restated with dense matrices (utils.py and lattice.py as they run) -----------


def mmrec_knn_laplacian(features: torch.Tensor, k: int) -> torch.Tensor:
    """build_sim -> build_knn_neighbourhood -> compute_normalized_laplacian."""
    normed = features / features.norm(p=2, dim=-1, keepdim=True)
    sim = normed @ normed.T
    values, index = torch.topk(sim, k, dim=-1)
    adj = torch.zeros_like(sim).scatter_(-1, index, values)
    return mmrec_laplacian(adj)


def mmrec_laplacian(adj: torch.Tensor) -> torch.Tensor:
    d_inv_sqrt = adj.sum(-1).pow(-0.5)
    d_inv_sqrt[torch.isinf(d_inv_sqrt)] = 0.0
    d = torch.diagflat(d_inv_sqrt)
    return d @ adj @ d


def mmrec_norm_adj(train_matrix) -> torch.Tensor:
    """get_adj_mat: D^-1 (A + I) of the symmetric user-item adjacency, dense."""
    n_users, n_items = train_matrix.shape
    adj = torch.zeros(n_users + n_items, n_users + n_items)
    r = torch.from_numpy(train_matrix.toarray()).float()
    adj[:n_users, n_users:] = r
    adj[n_users:, :n_users] = r.T
    adj = adj + torch.eye(n_users + n_items)
    return adj / adj.sum(1, keepdim=True)


def mmrec_item_adj(model: LATTICE, dataset) -> torch.Tensor:
    """The forward's build_item_graph branch (both modalities), from the model's current weights."""
    weight = torch.softmax(model.modal_weight, dim=0)
    image_adj = mmrec_knn_adjacency(model.image_trs(model.image_embedding), model.knn_k)
    text_adj = mmrec_knn_adjacency(model.text_trs(model.text_embedding), model.knn_k)
    learned = mmrec_laplacian(weight[0] * image_adj + weight[1] * text_adj)
    original = weight[0] * mmrec_knn_laplacian(dataset.features.image, model.knn_k) + weight[
        1
    ] * mmrec_knn_laplacian(dataset.features.text, model.knn_k)
    return (1 - model.lambda_coeff) * learned + model.lambda_coeff * original


def mmrec_knn_adjacency(features: torch.Tensor, k: int) -> torch.Tensor:
    normed = features / features.norm(p=2, dim=-1, keepdim=True)
    sim = normed @ normed.T
    values, index = torch.topk(sim, k, dim=-1)
    return torch.zeros_like(sim).scatter_(-1, index, values)


def mmrec_forward(model: LATTICE, dataset, item_adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """forward() after the item graph: item graph layers, then the cf model (dropout off)."""
    h = model.item_embedding
    for _ in range(model.n_layers):
        h = item_adj @ h
    adj = mmrec_norm_adj(dataset.train_matrix)
    ego = torch.cat([model.user_embedding, model.item_embedding])
    if model.cf_model == "mf":
        return model.user_embedding, model.item_embedding + F.normalize(h, p=2, dim=1)
    layers = [ego]
    for i in range(model.n_ui_layers):
        side = adj @ ego
        if model.cf_model == "lightgcn":
            ego = side
            layers.append(ego)
        else:  # ngcf
            ego = F.leaky_relu(model.gc_linears[i](side)) + F.leaky_relu(model.bi_linears[i](ego * side))
            layers.append(F.normalize(ego, p=2, dim=1))
    out = torch.stack(layers, dim=1).mean(dim=1)
    users, items = out.split([model.n_users, model.n_items])
    return users, items + F.normalize(h, p=2, dim=1)


def mmrec_loss(model: LATTICE, dataset, batch: Batch, item_adj: torch.Tensor) -> torch.Tensor:
    """calculate_loss: BPR plus reg_weight * half the squared norms of the rows / batch size."""
    users, items = mmrec_forward(model, dataset, item_adj)
    u, p, n = users[batch.users], items[batch.pos_items], items[batch.neg_items]
    mf = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    reg = (0.5 * (u**2).sum() + 0.5 * (p**2).sum() + 0.5 * (n**2).sum()) / len(batch)
    return mf + model.reg_weight * reg


def grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


def assert_grads_close(ours, reference, names):
    for name, a, b in zip(names, ours, reference):
        if b is None or not b.any():
            assert a is None or not a.any(), name
        else:
            assert a is not None, name
            torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


# ---- defaults and hyper-parameters -------------------------------------------------------------------


def test_defaults_are_mmrecs_first_setting():
    assert defaults(LATTICE) == dict(
        embedding_size=64,
        feat_embed_dim=64,
        weight_size=(64, 64),
        lambda_coeff=0.9,
        reg_weight=0.0,
        cf_model="lightgcn",
        mess_dropout=(0.1, 0.1),
        n_layers=1,
        knn_k=10,
    )


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(embedding_size=0), "embedding_size"),
        (dict(feat_embed_dim=2.5), "feat_embed_dim"),
        (dict(weight_size=64), "weight_size"),
        (dict(weight_size=(64, -1)), "weight_size"),
        (dict(lambda_coeff=1.5), "lambda_coeff"),
        (dict(reg_weight=float("nan")), "reg_weight"),
        (dict(reg_weight=float("inf")), "reg_weight"),
        (dict(cf_model="gcn"), "cf_model"),
        (dict(mess_dropout=(0.1, 1.0)), "mess_dropout"),
        (dict(n_layers=-1), "n_layers"),
        (dict(knn_k=0), "knn_k"),
        (dict(cf_model="ngcf", weight_size=(64, 32)), "embedding_size"),
        (dict(cf_model="ngcf", mess_dropout=(0.1,)), "mess_dropout"),
    ],
)
def test_bad_hyperparameters_are_one_line_config_errors(tiny, params, message):
    with pytest.raises(ConfigError, match=message) as info:
        make(tiny, **params)
    assert "\n" not in str(info.value)


def test_needs_features(tiny):
    with pytest.raises(ConfigError, match="features"):
        make(tiny.with_features(ItemFeatures()))


def test_init_deterministic_and_leaves_global_rng_alone(tiny):
    state = torch.get_rng_state()
    a, b, c = make(tiny, seed=3), make(tiny, seed=3), make(tiny, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.item_embedding, c.item_embedding)
    assert set(a.state_dict()) == {
        "user_embedding", "item_embedding", "image_embedding", "text_embedding", "modal_weight",
        "image_trs.weight", "image_trs.bias", "text_trs.weight", "text_trs.bias",
    }
    assert torch.equal(a.image_embedding, tiny.features.image)
    assert torch.equal(a.modal_weight, torch.tensor([0.5, 0.5]))


# ---- graphs by hand ----------------------------------------------------------------------------------


def test_weighted_knn_graph_by_hand():
    # k = 2 (self + nearest by cosine): 0 -> 1 (.8), 1 -> 2 (.96), 2 -> 1 (.96), 3 -> 2 (.8)
    features = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    s = {(0, 0): 1.0, (0, 1): 0.8, (1, 1): 1.0, (1, 2): 0.96, (2, 2): 1.0, (2, 1): 0.96, (3, 3): 1.0, (3, 2): 0.8}
    degree = [1.8, 1.96, 1.96, 1.8]  # row sums of the kept similarities
    expected = torch.zeros(4, 4)
    for (row, col), value in s.items():
        expected[row, col] = value / math.sqrt(degree[row] * degree[col])
    index, values = weighted_knn_graph(features, 2)
    assert index.shape == (2, 8)
    torch.testing.assert_close(torch.sparse_coo_tensor(index, values, (4, 4), check_invariants=True).to_dense(), expected)
    # and MMRec's dense helpers agree
    torch.testing.assert_close(mmrec_knn_laplacian(features, 2), expected)


def test_weighted_knn_graph_caps_k_and_survives_a_zero_row():
    features = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.6, 0.8]])
    index, values = weighted_knn_graph(features, 10)  # k capped at the 3 items
    assert index.shape == (2, 9) and torch.isfinite(values).all()


def test_knn_similarities_are_differentiable_like_mmrecs():
    features = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    index, values = weighted_knn_graph(features, 3)
    ours = torch.sparse_coo_tensor(index, values, (7, 7), check_invariants=True).to_dense()
    reference = mmrec_knn_laplacian(features, 3)
    torch.testing.assert_close(ours, reference)
    weight = torch.randn(7, 7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(grads((ours * weight).sum(), [features])[0],
                               grads((reference * weight).sum(), [features])[0])


def test_self_loop_mean_adjacency_by_hand():
    # users 0, 1, 2; items 0, 1 (nodes 3, 4). u0-i0, u1-i0, u1-i1; user 2 has no training item.
    matrix = sp.csr_matrix((np.ones(3), ([0, 1, 1], [0, 0, 1])), shape=(3, 2))
    expected = torch.tensor(
        [
            [1 / 2, 0, 0, 1 / 2, 0],  # u0: itself and i0
            [0, 1 / 3, 0, 1 / 3, 1 / 3],  # u1: itself, i0, i1
            [0, 0, 1, 0, 0],  # u2: only itself
            [1 / 3, 1 / 3, 0, 1 / 3, 0],  # i0: u0, u1, itself
            [0, 1 / 2, 0, 0, 1 / 2],  # i1: u1, itself
        ]
    )
    torch.testing.assert_close(self_loop_mean_adjacency(matrix).to_dense(), expected)
    torch.testing.assert_close(mmrec_norm_adj(matrix), expected)


def test_summed_edge_graph_sums_repeated_edges():
    rows, cols = torch.tensor([0, 2, 0, 1]), torch.tensor([1, 0, 1, 1])
    values = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    graph, summed = summed_edge_graph(rows, cols, values, 3)
    dense = torch.zeros(3, 3)
    dense[0, 1], dense[2, 0], dense[1, 1] = 4.0, 2.0, 4.0
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(graph.propagate(x, summed), dense @ x)
    (grad,) = grads(graph.propagate(x, summed).sum(), [values])
    torch.testing.assert_close(grad, x.sum(1)[cols])


# ---- MMRec's loss, gradients and scores ----------------------------------------------------------------


@pytest.mark.parametrize("reg_weight", [0.0, 0.3])
def test_loss_and_gradients_equal_mmrecs_through_an_epoch(tiny, reg_weight):
    model = make(tiny, knn_k=4, n_layers=2, reg_weight=reg_weight)
    names, params = zip(*model.named_parameters())
    batch = first_batch(tiny)

    # the epoch's first batch builds the graph with its gradient
    model.pre_epoch(None)
    ours = model.loss(batch)
    item_adj = mmrec_item_adj(model, tiny)
    reference = mmrec_loss(model, tiny, batch, item_adj)
    torch.testing.assert_close(ours, reference)
    graph_params = {"image_embedding", "text_embedding", "image_trs.weight", "image_trs.bias",
                    "text_trs.weight", "text_trs.bias", "modal_weight"}
    ours_grads, reference_grads = grads(ours, params), grads(reference, params)
    assert all(ours_grads[names.index(n)] is not None for n in graph_params)
    if reg_weight == 0.0:
        assert_grads_close(ours_grads, reference_grads, names)
    else:  # our regulariser reads the graph detached; the graph's parameters get the data term's gradient
        keep = [i for i, n in enumerate(names) if n not in graph_params]
        assert_grads_close([ours_grads[i] for i in keep], [reference_grads[i] for i in keep],
                           [names[i] for i in keep])
        fresh = mmrec_item_adj(model, tiny)
        data_grads = grads(mmrec_loss(model, tiny, batch, fresh) - reg_weight * mmrec_reg(model, tiny, batch, fresh),
                           params)
        for i, n in enumerate(names):
            if n in graph_params:
                torch.testing.assert_close(ours_grads[i], data_grads[i])

    # later batches of the epoch reuse the graph detached: nothing reaches the graph's parameters
    other = first_batch(tiny, seed=5)
    ours = model.loss(other)
    reference = mmrec_loss(model, tiny, other, item_adj.detach())
    torch.testing.assert_close(ours, reference)
    ours_grads = grads(ours, params)
    assert_grads_close(ours_grads, grads(reference, params), names)
    assert all(g is None for n, g in zip(names, ours_grads) if n in graph_params)


def mmrec_reg(model, dataset, batch, item_adj):
    users, items = mmrec_forward(model, dataset, item_adj)
    u, p, n = users[batch.users], items[batch.pos_items], items[batch.neg_items]
    return (0.5 * (u**2).sum() + 0.5 * (p**2).sum() + 0.5 * (n**2).sum()) / len(batch)


@pytest.mark.parametrize("cf_model", ["lightgcn", "ngcf", "mf"])
def test_scores_equal_mmrecs_full_sort_predict(tiny, cf_model):
    model = make(tiny, knn_k=5, cf_model=cf_model, lambda_coeff=0.6)
    with torch.no_grad():  # move away from the initial values so every part matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        users, items = mmrec_forward(model, tiny, mmrec_item_adj(model, tiny))
    torch.testing.assert_close(scores(model), users @ items.T)


def test_ngcf_loss_equals_mmrecs_without_dropout(tiny):
    model = make(tiny, knn_k=4, cf_model="ngcf", mess_dropout=(0.0, 0.0), reg_weight=0.1)
    names, params = zip(*model.named_parameters())
    batch = first_batch(tiny)
    ours = model.loss(batch)
    reference = mmrec_loss(model, tiny, batch, mmrec_item_adj(model, tiny))
    torch.testing.assert_close(ours, reference)
    keep = [i for i, n in enumerate(names) if n.startswith(("gc_", "bi_", "user", "item"))]
    ours_grads, reference_grads = grads(ours, params), grads(reference, params)
    assert_grads_close([ours_grads[i] for i in keep], [reference_grads[i] for i in keep], [names[i] for i in keep])


def test_ngcf_dropout_comes_from_the_batch_generator(tiny):
    model = make(tiny, cf_model="ngcf", mess_dropout=(0.5, 0.5))
    batch = first_batch(tiny)

    def loss(seed):
        model.pre_epoch(None)
        return model.loss(Batch(batch.users, batch.pos_items, batch.neg_items, torch.Generator().manual_seed(seed)))

    assert torch.equal(loss(1), loss(1))
    assert not torch.equal(loss(1), loss(2))
    # inference has no dropout
    assert torch.equal(scores(model), scores(model))


# ---- when the learnt graph is built ---------------------------------------------------------------


def test_each_epoch_rebuilds_the_graph_from_the_current_weights(tiny):
    model = make(tiny, knn_k=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    batch = first_batch(tiny)
    model.pre_epoch(None)
    model.loss(batch).backward()
    optimizer.step()
    optimizer.zero_grad()
    stale = mmrec_item_adj(model, tiny).detach()  # what the graph would be now
    # within the epoch the graph of the weights before the step is reused
    before = model.loss(batch)
    # a new epoch builds it from the stepped weights
    model.pre_epoch(None)
    after = model.loss(batch)
    torch.testing.assert_close(after, mmrec_loss(model, tiny, batch, stale))
    assert not torch.allclose(before, after)


def test_loss_without_pre_epoch_builds_the_graph(tiny):
    model = make(tiny)
    loss = model.loss(first_batch(tiny))
    (grad,) = grads(loss, [model.image_trs.weight])
    assert grad is not None and grad.any()


def test_inference_builds_the_graph_from_the_current_weights(tiny):
    model = make(tiny, knn_k=4)
    model.pre_epoch(None)
    model.loss(first_batch(tiny))  # caches the training graph
    with torch.no_grad():
        model.image_trs.weight.mul_(-2.0)
        model.modal_weight.copy_(torch.tensor([1.0, -1.0]))
        users, items = mmrec_forward(model, tiny, mmrec_item_adj(model, tiny))
    torch.testing.assert_close(scores(model), users @ items.T)


def test_a_perturbation_always_reads_the_tables_and_leaves_the_epoch_graph(tiny):
    model = make(tiny, knn_k=4)
    batch = first_batch(tiny)
    model.pre_epoch(None)
    clean = model.loss(batch)  # builds and caches the epoch's graph
    delta = torch.zeros_like(model.image_embedding, requires_grad=True)
    (grad,) = torch.autograd.grad(model.loss(batch, perturb={"image": delta}), delta)
    assert grad.abs().sum() > 0  # even though the epoch's graph is cached
    noise = torch.randn(delta.shape, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(model.loss(batch, perturb={"image": noise}), clean)
    torch.testing.assert_close(model.loss(batch), clean)  # the cached graph is still the clean one


def test_with_features_rebuilds_the_original_graphs(tiny):
    model = make(tiny, knn_k=3)
    before = scores(model)
    text = torch.randn(tiny.features.text.shape, generator=torch.Generator().manual_seed(0))
    swapped = model.with_features(tiny.features.replace(text=text))
    index, values = weighted_knn_graph(text, 3)
    assert torch.equal(swapped.text_original_index, index)
    torch.testing.assert_close(swapped.text_original_values, values)
    assert not torch.allclose(scores(swapped), before)
    assert torch.equal(scores(model), before)


def test_one_modality(tiny):
    text_only = tiny.with_features(ItemFeatures(text=tiny.features.text))
    model = make(text_only, knn_k=4)
    assert model.modalities == ("text",) and set(model.adversarial_inputs()) == {"text"}
    batch = first_batch(text_only)
    loss = model.loss(batch)
    # MMRec: the learnt and the original graph of the one modality, no modal weights
    learned = mmrec_laplacian(mmrec_knn_adjacency(model.text_trs(model.text_embedding), 4))
    original = mmrec_knn_laplacian(text_only.features.text, 4)
    item_adj = 0.1 * learned + 0.9 * original
    torch.testing.assert_close(loss, mmrec_loss(model, text_only, batch, item_adj))
    assert grads(loss, [model.modal_weight]) == (None,)
