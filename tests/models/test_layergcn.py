"""LayerGCN: MMRec's defaults, layer-refined propagation, loss, and per-epoch edge pruning that alternates
between degree-sensitive and uniform sampling."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from robustrec.errors import ConfigError
from robustrec.hparams import defaults
from robustrec.models.graph import bipartite_adjacency
from robustrec.models.layergcn import LayerGCN, prune_edges
from robustrec.runs import RunSpec, TrainConfig
from robustrec.training import train
from tests.models.general_cases import (
    HAND_ADJACENCY,
    assert_general_protocol,
    first_batch,
    hand_batch,
    hand_dataset,
    make,
    mmrec_norm_adjacency,
    scores,
)


def test_defaults_are_the_first_values_of_mmrecs_yaml():
    assert defaults(LayerGCN) == dict(embedding_size=64, n_layers=4, reg_weight=1e-2, dropout=0.0)


def test_graph_by_hand():
    model = make("layergcn", hand_dataset(), embedding_size=2)
    torch.testing.assert_close(model.norm_adj.to_dense(), HAND_ADJACENCY)


def test_init_is_xavier_uniform_from_the_generator_user_first(tiny):
    state = torch.get_rng_state()
    model = make("layergcn", tiny, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    g = torch.Generator().manual_seed(3)
    users = torch.nn.init.xavier_uniform_(torch.empty(tiny.n_users, 64), generator=g)
    items = torch.nn.init.xavier_uniform_(torch.empty(tiny.n_items, 64), generator=g)
    assert torch.equal(model.user_embedding, users) and torch.equal(model.item_embedding, items)
    assert set(model.state_dict()) == {"user_embedding", "item_embedding", "pruned_graphs"}


def mmrec_forward(model, adj, n_layers):
    """MMRec's ``forward``: each layer propagates the previous one, then scales every row by its cosine
    with the ego embedding; the output is the sum of the layers (the ego layer excluded)."""
    ego = torch.cat([model.user_embedding, model.item_embedding])
    x, layers = ego, []
    for _ in range(n_layers):
        x = adj @ x
        x = torch.einsum("a,ab->ab", F.cosine_similarity(x, ego, dim=-1), x)
        layers.append(x)
    return torch.stack(layers).sum(0).split([model.n_users, model.n_items])


@pytest.mark.parametrize("n_layers", [1, 4])
def test_loss_and_scores_are_mmrecs_formulas(tiny, n_layers):
    model = make("layergcn", tiny, n_layers=n_layers, reg_weight=0.3)
    model.pre_epoch(torch.Generator().manual_seed(0))  # dropout 0: the full graph
    batch = first_batch(tiny)
    users, items = mmrec_forward(model, mmrec_norm_adjacency(tiny), n_layers)
    u, p, n = users[batch.users], items[batch.pos_items], items[batch.neg_items]
    # a SUM over the batch (not a mean), and L2Loss: half the sum of squares of the ego rows
    bpr = torch.sum(-F.logsigmoid((u * p).sum(1) - (u * n).sum(1)))
    ego = [model.user_embedding[batch.users], model.item_embedding[batch.pos_items],
           model.item_embedding[batch.neg_items]]
    reg = 0.3 * sum(0.5 * torch.sum(e**2) for e in ego)
    terms = model.loss_terms(batch)
    torch.testing.assert_close(terms.data, bpr)
    torch.testing.assert_close(terms.regularizer, reg)
    params = [model.user_embedding, model.item_embedding]
    for ours, theirs in zip(torch.autograd.grad(terms.total(), params), torch.autograd.grad(bpr + reg, params)):
        torch.testing.assert_close(ours, theirs)
    with torch.no_grad():
        torch.testing.assert_close(scores(model.eval()), users @ items.T)


def test_training_loss_uses_the_pruned_graph_and_scores_the_full_one(tiny):
    model = make("layergcn", tiny, n_layers=2, dropout=0.5)
    full = scores(model.eval())
    model.train().pre_epoch(torch.Generator().manual_seed(0))
    batch = first_batch(tiny)
    users, items = mmrec_forward(model, model.masked_adj.to_dense(), 2)
    u, p, n = users[batch.users], items[batch.pos_items], items[batch.neg_items]
    torch.testing.assert_close(model.loss_terms(batch).data,
                               torch.sum(-F.logsigmoid((u * p).sum(1) - (u * n).sum(1))))
    assert torch.equal(scores(model.eval()), full)


def test_prune_edges_samples_without_replacement_as_specified():
    values = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3])
    degree = prune_edges(values, 3, torch.Generator().manual_seed(7), degree_sensitive=True)
    expected = torch.multinomial(values, 3, replacement=False, generator=torch.Generator().manual_seed(7))
    assert torch.equal(degree, expected)
    uniform = prune_edges(values, 3, torch.Generator().manual_seed(7), degree_sensitive=False)
    assert torch.equal(uniform, torch.randperm(5, generator=torch.Generator().manual_seed(7))[:3])
    for kept in (degree, uniform):
        assert len(torch.unique(kept)) == 3


def test_degree_sensitive_pruning_prefers_edges_of_low_degree_nodes():
    # edge 0 joins two degree-1 nodes (weight 1), edge 1 two degree-100 nodes (weight 0.01)
    values = torch.tensor([1.0, 0.01])
    kept = [prune_edges(values, 1, torch.Generator().manual_seed(s), degree_sensitive=True).item()
            for s in range(200)]
    assert kept.count(0) > 180


def _kept_block(model) -> torch.Tensor:
    return model.masked_adj.to_dense()[: model.n_users, model.n_users :] > 0


def test_pruning_alternates_degree_sensitive_and_uniform_like_mmrec(tiny):
    model = make("layergcn", tiny, dropout=0.3)
    edges = model.edge_index
    n_keep = int(edges.shape[1] * 0.7)

    def expected(degree_sensitive, seed):
        keep = prune_edges(model.edge_values, n_keep, torch.Generator().manual_seed(seed), degree_sensitive)
        return bipartite_adjacency(*edges[:, keep], tiny.n_users, tiny.n_items).to_dense()

    for epoch, degree_sensitive in enumerate([True, False, True]):
        model.pre_epoch(torch.Generator().manual_seed(epoch))
        torch.testing.assert_close(model.masked_adj.to_dense(), expected(degree_sensitive, epoch))
    assert model.masked_adj._nnz() == 2 * n_keep
    # the alternation is state (a resumed run goes on with the right sampler)
    clone = make("layergcn", tiny, seed=9, dropout=0.3)
    clone.load_state_dict(model.state_dict())
    clone.pre_epoch(torch.Generator().manual_seed(5))
    torch.testing.assert_close(clone.masked_adj.to_dense(), expected(False, 5))


def test_a_run_resumed_after_an_odd_epoch_equals_the_uninterrupted_one(tiny, tmp_path):
    """Stopped after epoch 1, the resumed run must draw epoch 2's graph uniformly, as the whole run does."""
    spec = RunSpec("layergcn", model_params={"dropout": 0.3, "n_layers": 2},
                   train=TrainConfig(epochs=3, batch_size=64, seed=5, threads=1))
    full = train(tiny, spec, tmp_path / "full", progress=False)
    assert train(tiny, spec, tmp_path / "part", progress=False, max_epochs_this_call=1) is None
    resumed = train(tiny, spec, tmp_path / "part", progress=False)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / d / "log.jsonl").read_text().splitlines()]
              for d in ("full", "part")]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    assert resumed.test == full.test


def test_pruned_graph_is_renormalised_on_kept_training_edges(tiny):
    model = make("layergcn", tiny, dropout=0.5)
    for _ in range(2):  # both samplers
        model.pre_epoch(torch.Generator().manual_seed(0))
        dense = model.masked_adj.to_dense()
        torch.testing.assert_close(dense, dense.T)
        block = dense[: tiny.n_users, tiny.n_users :]
        kept = block > 0
        assert int(kept.sum()) == int(tiny.train_matrix.nnz * 0.5)
        assert not (kept & ~(torch.from_numpy(tiny.train_matrix.toarray()) > 0)).any()
        degrees = kept.sum(1, keepdim=True).float() * kept.sum(0, keepdim=True).float()
        torch.testing.assert_close(block, kept / degrees.clamp_min(1).sqrt())


def test_pruning_comes_from_the_generator(tiny):
    a, b = make("layergcn", tiny, dropout=0.2), make("layergcn", tiny, dropout=0.2)
    a.pre_epoch(torch.Generator().manual_seed(1))
    b.pre_epoch(torch.Generator().manual_seed(1))
    assert torch.equal(_kept_block(a), _kept_block(b))
    b = make("layergcn", tiny, dropout=0.2)
    b.pre_epoch(torch.Generator().manual_seed(2))
    assert not torch.equal(_kept_block(a), _kept_block(b))


def test_no_pruning_uses_the_full_graph(tiny):
    model = make("layergcn", tiny)
    model.pre_epoch(torch.Generator().manual_seed(0))
    assert model.masked_adj is model.norm_adj
    assert int(model.pruned_graphs) == 0


def test_loss_without_pre_epoch_samples_a_graph(tiny):
    model = make("layergcn", tiny, dropout=0.2)
    assert model.masked_adj is None
    assert torch.isfinite(model.loss(first_batch(tiny)))
    assert model.masked_adj is not None and int(model.pruned_graphs) == 1


def test_works_without_features_and_exposes_only_id_tables(tiny):
    hand = hand_dataset()
    model = make("layergcn", hand, embedding_size=4, dropout=0.5)
    assert_general_protocol(model, hand)
    assert_general_protocol(make("layergcn", tiny), tiny)
    assert torch.isfinite(scores(model)).all()  # item 2 has no edge: a zero row, cosine 0
    assert torch.isfinite(model.loss(hand_batch()))


@pytest.mark.parametrize(("name", "value"), [("n_layers", 0), ("dropout", 1.0), ("reg_weight", -0.1)])
def test_bad_hyperparameter_is_a_one_line_config_error(tiny, name, value):
    with pytest.raises(ConfigError, match=rf"^layergcn: {name} must be [^\n]*$"):
        make("layergcn", tiny, **{name: value})
