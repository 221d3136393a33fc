"""LightGCN: MMRec's defaults, graph, propagation (mean of the layers), loss and scores."""

from __future__ import annotations

import pytest
import torch

from robustrec.errors import ConfigError
from robustrec.hparams import defaults
from robustrec.models.lightgcn import LightGCN
from tests.models.general_cases import (
    HAND_ADJACENCY,
    assert_general_protocol,
    first_batch,
    hand_batch,
    hand_dataset,
    make,
    mmrec_bpr,
    mmrec_emb_loss,
    mmrec_norm_adjacency,
    scores,
)


def test_defaults_are_the_first_values_of_mmrecs_yaml():
    assert defaults(LightGCN) == dict(embedding_size=64, n_layers=1, reg_weight=1e-2)


def test_graph_by_hand():
    model = make("lightgcn", hand_dataset(), embedding_size=2)
    torch.testing.assert_close(model.norm_adj.to_dense(), HAND_ADJACENCY)


def test_init_is_xavier_uniform_from_the_generator_user_first(tiny):
    state = torch.get_rng_state()
    model = make("lightgcn", tiny, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    g = torch.Generator().manual_seed(3)
    users = torch.nn.init.xavier_uniform_(torch.empty(tiny.n_users, 64), generator=g)
    items = torch.nn.init.xavier_uniform_(torch.empty(tiny.n_items, 64), generator=g)
    assert torch.equal(model.user_embedding, users) and torch.equal(model.item_embedding, items)
    assert set(model.state_dict()) == {"user_embedding", "item_embedding"}


def mmrec_forward(model, dataset, n_layers):
    """MMRec's ``forward``: the mean of ego, A ego, ..., A^n ego on the dense normalised graph."""
    adj = mmrec_norm_adjacency(dataset)
    x = torch.cat([model.user_embedding, model.item_embedding])
    layers = [x]
    for _ in range(n_layers):
        x = adj @ x
        layers.append(x)
    return torch.stack(layers, dim=1).mean(dim=1).split([dataset.n_users, dataset.n_items])


@pytest.mark.parametrize("n_layers", [0, 1, 3])
def test_loss_and_scores_are_mmrecs_formulas(tiny, n_layers):
    model = make("lightgcn", tiny, n_layers=n_layers, reg_weight=0.3)
    batch = first_batch(tiny)
    users, items = mmrec_forward(model, tiny, n_layers)
    bpr = mmrec_bpr(users[batch.users], items[batch.pos_items], items[batch.neg_items])
    # the regulariser reads the ego (layer-0) rows of the batch, not the propagated ones
    reg = 0.3 * mmrec_emb_loss(model.user_embedding[batch.users], model.item_embedding[batch.pos_items],
                               model.item_embedding[batch.neg_items])
    terms = model.loss_terms(batch)
    torch.testing.assert_close(terms.data, bpr)
    torch.testing.assert_close(terms.regularizer, reg)
    params = [model.user_embedding, model.item_embedding]
    for ours, theirs in zip(torch.autograd.grad(terms.total(), params), torch.autograd.grad(bpr + reg, params)):
        torch.testing.assert_close(ours, theirs)
    with torch.no_grad():
        torch.testing.assert_close(scores(model.eval()), users @ items.T)


def test_scores_follow_the_current_weights(tiny):
    model = make("lightgcn", tiny).eval()
    before = scores(model)
    with torch.no_grad():  # propagation is linear: doubling both tables doubles every representation
        model.user_embedding.mul_(2.0)
        model.item_embedding.mul_(2.0)
    torch.testing.assert_close(scores(model), 4.0 * before)


def test_works_without_features_and_exposes_only_id_tables(tiny):
    hand = hand_dataset()
    model = make("lightgcn", hand, embedding_size=4)
    assert_general_protocol(model, hand)
    assert_general_protocol(make("lightgcn", tiny), tiny)
    assert torch.isfinite(scores(model)).all()
    assert torch.isfinite(model.loss(hand_batch()))


@pytest.mark.parametrize(("name", "value"), [("n_layers", -1), ("reg_weight", float("nan")), ("embedding_size", 0)])
def test_bad_hyperparameter_is_a_one_line_config_error(tiny, name, value):
    with pytest.raises(ConfigError, match=rf"^lightgcn: {name} must be [^\n]*$"):
        make("lightgcn", tiny, **{name: value})
