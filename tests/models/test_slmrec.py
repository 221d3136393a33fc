"""SLMRec: its graphs by hand, the loss, gradients and scores against a literal re-statement of MMRec's
slmrec.py (FAC task), hyper-parameter checks, features, and the protocol."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from robustrec.data.dataset import Dataset, ItemFeatures
from robustrec.data.sampling import Batch, BPRSampler
from robustrec.errors import ConfigError
from robustrec.hparams import defaults
from robustrec.models import build_model
from robustrec.models.slmrec import SLMRec, in_batch_infonce, slmrec_adjacency


def make(dataset, seed=0, **params) -> SLMRec:
    return build_model("slmrec", dataset, generator=torch.Generator().manual_seed(seed), **params)


def first_batch(dataset, seed=0) -> Batch:
    sampler = BPRSampler(dataset, batch_size=64)
    return next(sampler.epoch(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)))


def scores(model) -> torch.Tensor:
    return model.scorer()(torch.arange(model.n_users))


def test_defaults_are_mmrecs_first_values():
    assert defaults(SLMRec) == dict(
        recdim=64, layer_num=3, reg=1e-4, ssl_task="FAC", ssl_alpha=0.01, ssl_temp=0.1, dropout_rate=0.3,
        mm_fusion_mode="concat", temp=0.2, init="xavier", adj_type="pre",
    )


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ssl_task", "FD", "ssl_task must be one of 'FAC', got 'FD' (MMRec's FD"),
    ("ssl_task", "FM", "ssl_task must be one of 'FAC'"),
    ("mm_fusion_mode", "mean", "mm_fusion_mode must be one of 'concat', got 'mean'"),
    ("init", "normal", "init must be one of 'xavier'"),
    ("adj_type", "laplace", "adj_type must be one of 'pre', 'plain', 'norm', 'gcmc', 'mean', got 'laplace'"),
    ("adj_type", 3, "adj_type must be one of"),
    ("temp", 0.0, "temp must be a finite number > 0"),
    ("ssl_temp", float("nan"), "ssl_temp must be a finite number > 0"),
    ("recdim", 1, "recdim must be an integer >= 2"),
    ("layer_num", -1, "layer_num must be an integer >= 0"),
    ("reg", -1.0, "reg must be a finite number >= 0"),
    ("dropout_rate", 1.0, "dropout_rate must be a number in"),
])
def test_bad_hyperparameters_are_one_line_config_errors(tiny, name, value, message):
    with pytest.raises(ConfigError, match="^slmrec: ") as caught:
        make(tiny, **{name: value})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_feature_requirements(tiny):
    for features, needed in ((ItemFeatures(), "image"), (ItemFeatures(text=tiny.features.text), "image")):
        with pytest.raises(ConfigError, match=f"SLMRec needs {needed} features"):
            make(tiny.with_features(features))


def test_init_deterministic_and_leaves_global_rng_alone(tiny):
    state = torch.get_rng_state()
    a, b, c = make(tiny, seed=3), make(tiny, seed=3), make(tiny, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.user_embedding, c.user_embedding)
    # only weights are saved: features and graphs are rebuilt from the dataset
    assert not any("feat" in k or "adj" in k for k in a.state_dict())


# ---- the graph ------------------------------------------------------------------------------------


def three_users() -> sp.csr_matrix:
    """3 users x 2 items: u0-{i0}, u1-{i0, i1}, u2-{i1}. Nodes: u0 u1 u2 i0 i1."""
    return sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float32))


A = torch.tensor([
    [0, 0, 0, 1, 0],
    [0, 0, 0, 1, 1],
    [0, 0, 0, 0, 1],
    [1, 1, 0, 0, 0],
    [0, 1, 1, 0, 0],
], dtype=torch.float32)
H, T, R = 0.5, 1 / 3, 1 / np.sqrt(2)  # degrees: u0 1, u1 2, u2 1, i0 2, i1 2
BY_HAND = {
    "plain": A,
    "pre": torch.tensor([  # 1 / sqrt(deg(row) deg(col))
        [0, 0, 0, R, 0],
        [0, 0, 0, H, H],
        [0, 0, 0, 0, R],
        [R, H, 0, 0, 0],
        [0, H, R, 0, 0],
    ]),
    "gcmc": torch.tensor([  # rows divided by their degree
        [0, 0, 0, 1, 0],
        [0, 0, 0, H, H],
        [0, 0, 0, 0, 1],
        [H, H, 0, 0, 0],
        [0, H, H, 0, 0],
    ]),
    "norm": torch.tensor([  # self loops added first, then rows divided by degree + 1
        [H, 0, 0, H, 0],
        [0, T, 0, T, T],
        [0, 0, H, 0, H],
        [T, T, 0, T, 0],
        [0, T, T, 0, T],
    ]),
}
BY_HAND["mean"] = BY_HAND["gcmc"] + torch.eye(5)


@pytest.mark.parametrize("adj_type", sorted(BY_HAND))
def test_adjacency_by_hand(adj_type):
    torch.testing.assert_close(slmrec_adjacency(three_users(), adj_type).to_dense(), BY_HAND[adj_type].float())


# ---- the loss and the scores against MMRec's code ------------------------------------------------


def mmrec_adj(train: sp.csr_matrix, adj_type: str) -> torch.Tensor:
    """MMRec's create_adj_mat, restated with dense numpy (1e-8 on the degrees for "pre")."""
    n_users, n_items = train.shape
    adj = np.zeros((n_users + n_items,) * 2)
    adj[:n_users, n_users:] = train.toarray()
    adj[n_users:, :n_users] = train.toarray().T

    def single(m):
        rowsum = m.sum(1)
        inv = np.where(rowsum > 0, 1 / np.where(rowsum > 0, rowsum, 1), 0)
        return inv[:, None] * m

    if adj_type == "pre":
        d = (adj.sum(1) + 1e-8) ** -0.5
        out = d[:, None] * adj * d[None, :]
    elif adj_type == "gcmc":
        out = single(adj)
    elif adj_type == "norm":
        out = single(adj + np.eye(len(adj)))
    else:
        raise AssertionError(adj_type)
    return torch.tensor(out, dtype=torch.float32).to_sparse()


def mmrec_forward(model: SLMRec, raw: ItemFeatures, adj: torch.Tensor):
    """MMRec's compute(): normalised features, dense projections, three LightGCN runs, fusion of all rows."""
    users_emb, items_emb = model.user_embedding, model.item_embedding

    def compute_graph(u_emb, i_emb):
        all_emb = torch.cat([u_emb, i_emb])
        embs = [all_emb]
        for _ in range(model.layer_num):
            all_emb = torch.sparse.mm(adj, all_emb)
            embs.append(all_emb)
        return torch.stack(embs, dim=1).mean(dim=1).split([model.n_users, model.n_items])

    views = {"i": compute_graph(users_emb, items_emb)}
    views["v"] = compute_graph(users_emb, model.image_dense(F.normalize(raw.image, dim=1)))
    if raw.text is not None:
        views["t"] = compute_graph(users_emb, model.text_dense(F.normalize(raw.text, dim=1)))
    user = model.user_fusion(torch.cat([v[0] for v in views.values()], dim=1))
    item = model.item_fusion(torch.cat([v[1] for v in views.values()], dim=1))
    return user, item, {k: v[1] for k, v in views.items()}


def mmrec_loss(model: SLMRec, raw: ItemFeatures, adj: torch.Tensor, batch: Batch) -> torch.Tensor:
    """MMRec's calculate_loss with ssl_task FAC: infonce(users, pos) + ssl_alpha * fac(pos)."""
    user, item, item_views = mmrec_forward(model, raw, adj)
    users, pos = batch.users, batch.pos_items

    def criterion(logits):
        return torch.nn.CrossEntropyLoss()(logits, torch.tensor(list(range(logits.shape[0]))))

    users_emb = F.normalize(user[users], dim=1)
    pos_emb = F.normalize(item[pos], dim=1)
    main = criterion(torch.mm(users_emb, pos_emb.T) / model.temp)

    x_i_iv = model.g_i_iv(item_views["i"][pos])
    x_v_iv = model.g_v_iv(item_views["v"][pos])
    ssl = criterion(torch.mm(x_i_iv, x_v_iv.T) / model.ssl_temp)
    if "t" in item_views:
        x_iva_ivat = model.g_iva_ivat(model.g_iv_iva(x_i_iv))
        x_t_ivat = model.g_t_ivat(item_views["t"][pos])
        ssl = ssl + criterion(torch.mm(x_iva_ivat, x_t_ivat.T) / model.ssl_temp)
    return main + model.ssl_alpha * ssl


def batch_with_repeats(dataset) -> Batch:
    """The first batch with its first user and item repeated: MMRec's in-batch negatives then include
    a copy of the positive, which the per-distinct-row computation must reproduce."""
    batch = first_batch(dataset)
    users = torch.cat([batch.users, batch.users[:3]])
    items = torch.cat([batch.pos_items, batch.pos_items[:3]])
    return Batch(users, items, torch.cat([batch.neg_items, batch.neg_items[:3]]), batch.generator)


@pytest.mark.parametrize(("adj_type", "layer_num", "modalities"), [
    ("pre", 3, ("image", "text")),
    ("gcmc", 2, ("image", "text")),  # not symmetric: the backward needs the transpose
    ("norm", 1, ("image",)),  # MMRec's image-only ("kwai") path
])
def test_loss_and_gradients_equal_mmrecs(tiny, adj_type, layer_num, modalities):
    raw = ItemFeatures(**{m: getattr(tiny.features, m) for m in modalities})
    data = tiny.with_features(raw)
    model = make(data, adj_type=adj_type, layer_num=layer_num, ssl_alpha=0.5)
    batch = batch_with_repeats(data)
    ours = model.loss(batch)
    reference = mmrec_loss(model, raw, mmrec_adj(data.train_matrix, adj_type), batch)
    torch.testing.assert_close(ours, reference)
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(ours, params), torch.autograd.grad(reference, params)):
        torch.testing.assert_close(a, b)
    assert model.loss_terms(batch).regularizer.item() == 0.0


def test_scores_equal_mmrecs_full_sort_predict(tiny):
    model = make(tiny)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.loss(first_batch(tiny)).backward()
    optimizer.step()
    with torch.no_grad():
        user, item, _ = mmrec_forward(model, tiny.features, mmrec_adj(tiny.train_matrix, "pre"))
        reference = torch.sigmoid(user @ item.T)  # MMRec's full_sort_predict: self.f = nn.Sigmoid()
    torch.testing.assert_close(torch.sigmoid(scores(model)), reference)


def test_negatives_are_not_used(tiny):
    model = make(tiny)
    batch = first_batch(tiny)
    swapped = Batch(batch.users, batch.pos_items, batch.pos_items.flip(0), batch.generator)
    assert torch.equal(model.loss(batch), model.loss(swapped))


def test_features_are_read_as_unit_rows(tiny):
    """MMRec normalises the features once: scaling an item's feature row changes nothing."""
    model = make(tiny)
    scale = torch.rand(tiny.n_items, 1, generator=torch.Generator().manual_seed(0)) * 5 + 0.1
    scaled = tiny.features.replace(image=tiny.features.image * scale, text=tiny.features.text * scale)
    torch.testing.assert_close(scores(model.with_features(scaled)), scores(model))
    torch.testing.assert_close(model.image_feat.norm(dim=1), torch.ones(tiny.n_items))


def test_tables_and_adversarial_inputs(tiny):
    model = make(tiny)
    assert {(t.name, t.kind) for t in model.embedding_tables()} == {
        ("user_embedding", "user"), ("item_embedding", "item")}
    inputs = model.adversarial_inputs()
    assert set(inputs) == {"image", "text"} and inputs["image"] is model.image_feat
    batch = first_batch(tiny)
    zero = {m: torch.zeros_like(t) for m, t in inputs.items()}
    assert torch.equal(model.loss(batch, perturb=zero), model.loss(batch))
    delta = torch.zeros_like(inputs["text"], requires_grad=True)
    (grad,) = torch.autograd.grad(model.loss(batch, perturb={"text": delta}), delta)
    assert grad.abs().sum() > 0


def test_image_only_has_no_text_heads(tiny):
    model = make(tiny.with_features(ItemFeatures(image=tiny.features.image)))
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"user_embedding", "item_embedding", "image_dense", "user_fusion", "item_fusion",
                     "g_i_iv", "g_v_iv"}
    assert model.user_fusion.in_features == 2 * model.recdim


def test_no_layers(tiny):
    model = make(tiny, layer_num=0)
    assert torch.isfinite(model.loss(first_batch(tiny)))
    users, items = model.inference_embeddings()
    torch.testing.assert_close(users, model.user_fusion(model.user_embedding.repeat(1, 3)))


def test_unused_hyperparameters_change_nothing(tiny):
    """``reg`` and ``dropout_rate`` are read but unused by MMRec's FAC path: the same loss."""
    batch = first_batch(tiny)
    reference = make(tiny).loss(batch)
    assert torch.equal(make(tiny, reg=0.5, dropout_rate=0.0).loss(batch), reference)


def test_a_tiny_dataset_built_by_hand_trains():
    train = np.array([[0, 0], [1, 0], [1, 1], [2, 1], [2, 2]], dtype=np.int64)
    empty = np.zeros((0, 2), dtype=np.int64)
    features = ItemFeatures(image=torch.eye(3), text=torch.ones(3, 2))
    model = make(Dataset("three", 3, 3, train, empty, empty, features), recdim=4)
    batch = Batch(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]))
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.image_dense.weight.grad.abs().sum() > 0


def test_in_batch_infonce_on_distinct_rows_equals_the_batch_cross_entropy():
    g = torch.Generator().manual_seed(0)
    anchors, positives = torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g)
    anchor_index = torch.tensor([0, 1, 1, 2, 3, 3, 3, 0])
    positive_index = torch.tensor([4, 0, 1, 1, 2, 3, 3, 4])
    logits = anchors[anchor_index] @ positives[positive_index].T / 0.3
    expected = F.cross_entropy(logits, torch.arange(8))
    torch.testing.assert_close(in_batch_infonce(anchors, anchor_index, positives, positive_index, 0.3), expected)
