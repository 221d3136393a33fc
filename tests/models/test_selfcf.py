"""SelfCF (MMRec's SELFCFED_LGN): its per-batch graph dropout, the loss and the scores against a literal
re-statement of MMRec's code, hyper-parameter checks, and the general-model protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustrec.data.dataset import Dataset, ItemFeatures
from robustrec.data.sampling import Batch, BPRSampler
from robustrec.errors import ConfigError
from robustrec.hparams import defaults
from robustrec.models import build_model
from robustrec.models.graph import to_csr
from robustrec.models.selfcf import NegativeCosine, SelfCF, transpose_order


def make(dataset, seed=0, **params) -> SelfCF:
    return build_model("selfcf", dataset, generator=torch.Generator().manual_seed(seed), **params)


def first_batch(dataset, seed=0, model_seed=1) -> Batch:
    sampler = BPRSampler(dataset, batch_size=64)
    return next(sampler.epoch(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(model_seed)))


def replay(batch: Batch, seed: int = 7) -> Batch:
    return Batch(batch.users, batch.pos_items, batch.neg_items, torch.Generator().manual_seed(seed))


def scores(model) -> torch.Tensor:
    return model.scorer()(torch.arange(model.n_users))


def test_defaults_are_mmrecs_first_values():
    assert defaults(SelfCF) == dict(embedding_size=64, n_layers=1, dropout=0.1, reg_weight=0.1)


def test_works_without_features(tiny):
    bare = tiny.with_features(ItemFeatures())
    model = make(bare)
    assert model.adversarial_inputs() == {}
    assert {(t.name, t.kind) for t in model.embedding_tables()} == {
        ("user_embedding", "user"), ("item_embedding", "item")}
    loss = model.loss(first_batch(bare))
    assert torch.isfinite(loss)
    loss.backward()
    assert model.user_embedding.grad.abs().sum() > 0
    # the features play no part: the same weights score the same with or without them
    torch.testing.assert_close(scores(make(tiny)), scores(model))


@pytest.mark.parametrize(("name", "value"), [
    ("embedding_size", 0), ("n_layers", -1), ("dropout", 1.0), ("dropout", float("nan")),
    ("reg_weight", -0.1), ("reg_weight", float("inf")),
])
def test_bad_hyperparameters_are_one_line_config_errors(tiny, name, value):
    with pytest.raises(ConfigError, match=f"selfcf: {name} must be") as caught:
        make(tiny, **{name: value})
    assert "\n" not in str(caught.value)


def test_init_deterministic_and_leaves_global_rng_alone(tiny):
    state = torch.get_rng_state()
    a, b, c = make(tiny, seed=3), make(tiny, seed=3), make(tiny, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.user_embedding, c.user_embedding)


def three_users() -> Dataset:
    """3 users x 2 items: u0-{i0}, u1-{i0, i1}, u2-{i1}; no features."""
    train = np.array([[0, 0], [1, 0], [1, 1], [2, 1]], dtype=np.int64)
    empty = np.zeros((0, 2), dtype=np.int64)
    return Dataset("three", 3, 2, train, empty, empty, ItemFeatures())


def test_graph_by_hand():
    model = make(three_users())
    s = 1 / np.sqrt(2)  # users 0, 2 and both items have degree 1, 2 or 2: 1/sqrt(1*2), 1/sqrt(2*2)
    ui = torch.tensor([[s, 0], [0.5, 0.5], [0, s]])
    expected = torch.zeros(5, 5)
    expected[:3, 3:], expected[3:, :3] = ui, ui.T
    torch.testing.assert_close(model.norm_adj.to_dense(), expected)


def test_transpose_order_gives_the_transpose():
    dense = torch.tensor([[0.0, 1, 2], [3, 0, 4], [5, 6, 0]])  # a symmetric pattern, other values
    csr = to_csr(dense.to_sparse())
    values = csr.values()[transpose_order(csr)]
    transposed = torch.sparse_csr_tensor(csr.crow_indices(), csr.col_indices(), values, csr.shape, check_invariants=False)
    torch.testing.assert_close(transposed.to_dense(), dense.T)


def test_graph_dropout_comes_from_the_generator_and_scales_kept_entries(tiny):
    model = make(tiny)
    full = model.norm_adj.to_dense()

    def drop(seed):
        adj, adj_t = model.dropped_adjacency(torch.Generator().manual_seed(seed))
        return adj.to_dense(), adj_t.to_dense()

    a, a_t = drop(1)
    torch.testing.assert_close(a_t, a.T)
    assert torch.equal(drop(1)[0], a)
    assert not torch.equal(drop(2)[0], a)
    kept = a != 0
    assert 0 < int(kept.sum()) < int((full != 0).sum())
    assert not torch.equal(kept, kept.T)  # each direction is dropped on its own, as in MMRec
    scale = (a[kept] / full[kept]).unique()  # every kept entry is scaled by the same 1 / (1 - rate)
    torch.testing.assert_close(scale, scale[:1].expand_as(scale))
    assert scale[0] > 1


def mmrec_loss(model: SelfCF, batch: Batch) -> torch.Tensor:
    """MMRec's calculate_loss, literally: sparse_dropout removes entries from the COO graph, LightGCN on
    it, F.dropout-like targets, predictor, negative cosines halved, L2Loss. Random numbers are those
    the model draws, in its documented order (rate, graph mask, user mask, item mask)."""
    g = batch.generator
    adj = model.norm_adj.to_sparse_coo().coalesce()
    rate = torch.rand((), generator=g)
    keep = torch.floor(1 - rate + torch.rand(adj._nnz(), generator=g)).bool()
    dropped = torch.sparse_coo_tensor(adj.indices()[:, keep], adj.values()[keep], adj.shape, check_invariants=False) * (1.0 / (1 - rate))
    ego = torch.cat([model.user_embedding, model.item_embedding])
    layers = [ego]
    for _ in range(model.n_layers):
        ego = torch.sparse.mm(dropped, ego)
        layers.append(ego)
    out = torch.stack(layers, 1).mean(1)
    u_online, i_online = out[: model.n_users][batch.users], out[model.n_users :][batch.pos_items]
    with torch.no_grad():
        u_target = u_online * (torch.rand(u_online.shape, generator=g) >= model.dropout) / (1 - model.dropout)
        i_target = i_online * (torch.rand(i_online.shape, generator=g) >= model.dropout) / (1 - model.dropout)
    reg = torch.sum(u_online**2) * 0.5 + torch.sum(i_online**2) * 0.5
    u_online, i_online = model.predictor(u_online), model.predictor(i_online)
    loss_ui = -F.cosine_similarity(u_online, i_target.detach(), dim=-1).mean() / 2
    loss_iu = -F.cosine_similarity(i_online, u_target.detach(), dim=-1).mean() / 2
    return loss_ui + loss_iu + model.reg_weight * reg


@pytest.mark.parametrize("n_layers", [1, 2])
def test_loss_and_gradients_equal_mmrecs(tiny, n_layers):
    model = make(tiny, n_layers=n_layers, dropout=0.3)
    batch = first_batch(tiny)
    ours = model.loss(replay(batch))
    reference = mmrec_loss(model, replay(batch))
    torch.testing.assert_close(ours, reference)
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(ours, params), torch.autograd.grad(reference, params)):
        torch.testing.assert_close(a, b)


def test_regulariser_is_half_the_squared_norms_of_the_batch_rows(tiny):
    model = make(tiny, reg_weight=0.5)
    batch = first_batch(tiny)
    terms = model.loss_terms(replay(batch))
    zero = make(tiny, reg_weight=0.0).loss_terms(replay(batch))
    torch.testing.assert_close(terms.data, zero.data)
    reference = mmrec_loss(model, replay(batch))
    torch.testing.assert_close(terms.regularizer, reference - zero.data)
    assert terms.regularizer > 0


def test_negatives_are_not_used(tiny):
    model = make(tiny)
    batch = first_batch(tiny)
    other = Batch(batch.users, batch.pos_items, batch.pos_items, torch.Generator().manual_seed(7))
    assert torch.equal(model.loss(replay(batch)), model.loss(other))


def test_scores_equal_mmrecs_full_sort_predict(tiny):
    model = make(tiny, n_layers=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.loss(first_batch(tiny)).backward()
    optimizer.step()
    with torch.no_grad():
        full = torch.sparse.mm  # get_embedding: the full graph, no dropout
        ego = torch.cat([model.user_embedding, model.item_embedding])
        layers = [ego]
        for _ in range(model.n_layers):
            layers.append(full(model.norm_adj.to_sparse_coo(), layers[-1]))
        out = torch.stack(layers, 1).mean(1)
        u, i = out[: model.n_users], out[model.n_users :]
        reference = model.predictor(u) @ i.T + u @ model.predictor(i).T
    torch.testing.assert_close(scores(model), reference)


def test_scores_follow_the_current_weights(tiny):
    model = make(tiny)
    before = scores(model)
    with torch.no_grad():
        model.item_embedding.mul_(2.0)
    assert not torch.allclose(scores(model), before)


def test_graph_is_rebuilt_from_the_dataset(tiny):
    """The graph is a non-persistent buffer: not in the checkpoint, rebuilt by every copy."""
    model = make(tiny)
    assert set(model.state_dict()) == {"user_embedding", "item_embedding", "predictor.weight", "predictor.bias"}
    torch.testing.assert_close(model.copy_with().norm_adj.to_dense(), model.norm_adj.to_dense())


def test_negative_cosine_matches_autograd_on_f_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    t = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x[2] = 0.0  # a zero row (and a zero target): the floored norms
    t[4] = 0.0
    x.requires_grad_(True)
    ours = NegativeCosine.apply(x, t)
    reference = -F.cosine_similarity(x, t, dim=-1).mean()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(reference, x)[0])
