"""MGCN: MMRec's maths restated on full tables, its graphs by hand, the regulariser's gradient path."""

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
from robustrec.models.graph import normalized_adjacency
from robustrec.models.mgcn import MGCN, _user_item_block, info_nce, split_projection

#: the models under test use 4 neighbours (the tiny dataset has 30 items)
KNN_K = 4


def make(dataset, seed=0, **params) -> MGCN:
    return build_model("mgcn", dataset, generator=torch.Generator().manual_seed(seed), **params)


def batch_of(dataset, seed=0, size=64) -> Batch:
    sampler = BPRSampler(dataset, batch_size=size)
    return next(sampler.epoch(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)))


def scores(model) -> torch.Tensor:
    return model.scorer()(torch.arange(model.n_users))


def grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


# ---- MMRec's MGCN, restated on full tables (mgcn.py and utils.py as they run) ------------------------


def mmrec_norm_adj(train_matrix) -> torch.Tensor:
    """get_adj_mat: D^-1/2 A D^-1/2 of the user-item graph, no self loops, dense."""
    n_users, n_items = train_matrix.shape
    adj = torch.zeros(n_users + n_items, n_users + n_items)
    r = torch.from_numpy(train_matrix.toarray()).float()
    adj[:n_users, n_users:] = r
    adj[n_users:, :n_users] = r.T
    d = adj.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return d[:, None] * adj * d[None, :]


def mmrec_knn_normalized_graph(features: torch.Tensor, k: int) -> torch.Tensor:
    """build_sim -> build_knn_normalized_graph(is_sparse=True, norm_type='sym'), dense result."""
    normed = features / features.norm(p=2, dim=-1, keepdim=True)
    values, index = torch.topk(normed @ normed.T, k, dim=-1)
    n = features.shape[0]
    row = torch.arange(n).repeat_interleave(k)
    col = index.flatten()
    weight = values.flatten()
    deg = torch.zeros(n).scatter_add(0, row, weight)
    inv_sqrt = deg.pow(-0.5)
    inv_sqrt[torch.isinf(inv_sqrt)] = 0.0
    out = torch.zeros(n, n)
    out[row, col] = inv_sqrt[row] * weight * inv_sqrt[col]
    return out


def mmrec_info_nce(view1, view2, temperature):
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    pos_score = torch.exp((view1 * view2).sum(dim=-1) / temperature)
    ttl_score = torch.exp(view1 @ view2.T / temperature).sum(dim=1)
    return torch.mean(-torch.log(pos_score / ttl_score))


def mmrec_forward(model: MGCN, dataset, table_perturb=None):
    """forward(train=True): users, items, side and content of every user and item."""
    tables = {m: getattr(model, f"{m}_embedding") for m in ("image", "text")}
    if table_perturb:
        tables = {m: t + table_perturb.get(m, 0.0) for m, t in tables.items()}
    image_feats = model.image_trs(tables["image"])
    text_feats = model.text_trs(tables["text"])
    image_item = model.item_embedding * model.gate_v(image_feats)
    text_item = model.item_embedding * model.gate_t(text_feats)
    adj = mmrec_norm_adj(dataset.train_matrix)
    r = adj[: model.n_users, model.n_users :]
    ego = torch.cat([model.user_embedding, model.item_embedding])
    layers = [ego]
    for _ in range(model.n_ui_layers):
        ego = adj @ ego
        layers.append(ego)
    content = torch.stack(layers, dim=1).mean(dim=1)
    image_adj = mmrec_knn_normalized_graph(dataset.features.image, KNN_K)
    text_adj = mmrec_knn_normalized_graph(dataset.features.text, KNN_K)
    for _ in range(model.n_layers):
        image_item = image_adj @ image_item
    image_embeds = torch.cat([r @ image_item, image_item])
    for _ in range(model.n_layers):
        text_item = text_adj @ text_item
    text_embeds = torch.cat([r @ text_item, text_item])
    att = torch.cat([model.query_common(image_embeds), model.query_common(text_embeds)], dim=-1)
    weight = torch.softmax(att, dim=-1)
    common = weight[:, 0].unsqueeze(1) * image_embeds + weight[:, 1].unsqueeze(1) * text_embeds
    sep_image = model.gate_image_prefer(content) * (image_embeds - common)
    sep_text = model.gate_text_prefer(content) * (text_embeds - common)
    side = (sep_image + sep_text + common) / 3
    users, items = (content + side).split([model.n_users, model.n_items])
    return users, items, side, content


def mmrec_loss(model: MGCN, dataset, batch: Batch, with_reg=True, table_perturb=None):
    users, items, side, content = mmrec_forward(model, dataset, table_perturb)
    u, p, n = users[batch.users], items[batch.pos_items], items[batch.neg_items]
    mf = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    reg = (0.5 * (u**2).sum() + 0.5 * (p**2).sum() + 0.5 * (n**2).sum()) / len(batch)
    side_users, side_items = side.split([model.n_users, model.n_items])
    content_users, content_items = content.split([model.n_users, model.n_items])
    cl = mmrec_info_nce(side_items[batch.pos_items], content_items[batch.pos_items], 0.2) + mmrec_info_nce(
        side_users[batch.users], content_users[batch.users], 0.2
    )
    return mf + (model.reg_weight * reg if with_reg else 0.0) + model.cl_loss * cl


# ---- defaults and hyper-parameters -------------------------------------------------------------------


def test_defaults_are_mmrecs_first_setting():
    assert defaults(MGCN) == dict(
        embedding_size=64, n_ui_layers=2, n_layers=1, lambda_coeff=0.9, reg_weight=1e-4, knn_k=10, cl_loss=0.001
    )


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(embedding_size=0), "embedding_size"),
        (dict(n_ui_layers=-1), "n_ui_layers"),
        (dict(n_layers=1.5), "n_layers"),
        (dict(lambda_coeff=-0.1), "lambda_coeff"),
        (dict(reg_weight=float("nan")), "reg_weight"),
        (dict(knn_k=0), "knn_k"),
        (dict(cl_loss=float("inf")), "cl_loss"),
        (dict(cl_loss="0.1"), "cl_loss"),
    ],
)
def test_bad_hyperparameters_are_one_line_config_errors(tiny, params, message):
    with pytest.raises(ConfigError, match=message) as info:
        make(tiny, **params)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("features", [ItemFeatures(), "image only", "text only"])
def test_needs_both_modalities(tiny, features):
    if features == "image only":
        features = ItemFeatures(image=tiny.features.image)
    elif features == "text only":
        features = ItemFeatures(text=tiny.features.text)
    with pytest.raises(ConfigError, match="both image and text"):
        make(tiny.with_features(features))


def test_init_deterministic_and_leaves_global_rng_alone(tiny):
    state = torch.get_rng_state()
    a, b, c = make(tiny, seed=3), make(tiny, seed=3), make(tiny, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.gate_v[0].weight, c.gate_v[0].weight)
    assert torch.equal(a.text_embedding, tiny.features.text)
    assert "query_common.2.bias" not in a.state_dict() and a.query_common[2].weight.shape == (1, 64)


# ---- graphs by hand ----------------------------------------------------------------------------------


def test_user_item_block_by_hand():
    # users 0, 1, 2; items 0, 1. u0-i0, u1-i0, u1-i1; user 2 has none. Degrees u: 1, 2, 0; i: 2, 1.
    matrix = sp.csr_matrix((np.ones(3), ([0, 1, 1], [0, 0, 1])), shape=(3, 2))
    expected = torch.tensor([[1 / math.sqrt(2), 0.0], [1 / 2, 1 / math.sqrt(2)], [0.0, 0.0]])
    torch.testing.assert_close(_user_item_block(normalized_adjacency(matrix), 3, 2).to_dense(), expected)
    torch.testing.assert_close(mmrec_norm_adj(matrix)[:3, 3:], expected)


def test_original_graphs_are_mmrecs_sym_knn_graphs(tiny):
    model = make(tiny, knn_k=KNN_K)
    for modality in ("image", "text"):
        expected = mmrec_knn_normalized_graph(getattr(tiny.features, modality), KNN_K)
        torch.testing.assert_close(getattr(model, f"{modality}_original_adj").to_dense(), expected)
        torch.testing.assert_close(getattr(model, f"{modality}_original_adj_t").to_dense(), expected.T)


def test_with_features_rebuilds_the_graphs(tiny):
    model = make(tiny, knn_k=KNN_K)
    before = scores(model)
    image = torch.randn(tiny.features.image.shape, generator=torch.Generator().manual_seed(0))
    swapped = model.with_features(tiny.features.replace(image=image))
    torch.testing.assert_close(swapped.image_original_adj.to_dense(), mmrec_knn_normalized_graph(image, KNN_K))
    assert not torch.allclose(scores(swapped), before)
    assert torch.equal(scores(model), before)


# ---- the pieces ----------------------------------------------------------------------------------------


def test_info_nce_of_distinct_rows_equals_mmrecs_on_repeated_rows():
    gen = torch.Generator().manual_seed(0)
    side, content = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    counts = torch.tensor([1, 3, 1, 2, 4])
    rows = torch.arange(5).repeat_interleave(counts)
    rows = rows[torch.randperm(len(rows), generator=gen)]  # the batch's order does not matter
    torch.testing.assert_close(info_nce(side, content, counts, 0.2), mmrec_info_nce(side[rows], content[rows], 0.2))


def test_split_projection_routes_the_second_gradient_to_the_layer_only():
    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    table = torch.randn(4, 3, generator=gen, requires_grad=True)
    first, second = split_projection(table, layer)
    torch.testing.assert_close(first, layer(table))
    torch.testing.assert_close(second, layer(table))
    w1, w2 = torch.randn(4, 2, generator=gen), torch.randn(4, 2, generator=gen)
    ours = grads((first * w1).sum() + (second * w2).sum(), [table, layer.weight, layer.bias])
    reference = grads((layer(table) * w1).sum() + (layer(table.detach()) * w2).sum(),
                      [table, layer.weight, layer.bias])
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b)
    first, second = split_projection(table, layer)
    (only_second,) = grads((second * w2).sum(), [table])
    assert only_second is None or not only_second.any()


# ---- MMRec's loss, gradients and scores ----------------------------------------------------------------


@pytest.fixture
def trained_model(tiny):
    """A model moved away from its initial values, so that every part of the maths matters."""
    model = make(tiny, knn_k=KNN_K, n_layers=2, cl_loss=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model


def test_loss_and_gradients_equal_mmrecs_without_regulariser(tiny, trained_model):
    model = trained_model
    model.reg_weight = 0.0
    names, params = zip(*model.named_parameters())
    batch = batch_of(tiny, size=200)  # 40 users and 30 items: many repeated rows
    ours = model.loss(batch)
    reference = mmrec_loss(model, tiny, batch)
    torch.testing.assert_close(ours, reference)
    for name, a, b in zip(names, grads(ours, params), grads(reference, params)):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


def test_regulariser_gradient_stops_at_the_feature_tables(tiny, trained_model):
    model = trained_model
    model.reg_weight = 0.5
    names, params = zip(*model.named_parameters())
    batch = batch_of(tiny, size=200)
    terms = model.loss_terms(batch)
    ours = terms.total()
    torch.testing.assert_close(ours, mmrec_loss(model, tiny, batch))
    ours_grads = grads(ours, params)
    reference_grads = grads(mmrec_loss(model, tiny, batch), params)
    data_grads = grads(mmrec_loss(model, tiny, batch, with_reg=False), params)
    for name, a, full, data in zip(names, ours_grads, reference_grads, data_grads):
        expected = data if name in ("image_embedding", "text_embedding") else full
        torch.testing.assert_close(a, expected, msg=lambda m, name=name: f"{name}: {m}")


def test_scores_equal_mmrecs_full_sort_predict(tiny, trained_model):
    with torch.no_grad():
        users, items, _, _ = mmrec_forward(trained_model, tiny)
    torch.testing.assert_close(scores(trained_model), users @ items.T)


def test_a_perturbation_moves_the_tables_like_mmrecs(tiny, trained_model):
    model = trained_model
    batch = batch_of(tiny)
    delta = {"text": torch.randn(tiny.features.text.shape, generator=torch.Generator().manual_seed(2))}
    torch.testing.assert_close(model.loss(batch, perturb=delta), mmrec_loss(model, tiny, batch, table_perturb=delta))


def test_scores_are_recomputed_from_the_current_weights(tiny, trained_model):
    before = scores(trained_model)
    with torch.no_grad():
        trained_model.text_trs.weight.mul_(-1.0)
    assert not torch.allclose(scores(trained_model), before)
