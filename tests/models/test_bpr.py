"""BPR-MF: MMRec's defaults, initialisation, loss (BPR + EmbLoss on the batch rows) and scores."""

from __future__ import annotations

import pytest
import torch

from robustrec.errors import ConfigError
from robustrec.hparams import defaults
from robustrec.models.bpr import BPR
from tests.models.general_cases import (
    assert_general_protocol,
    first_batch,
    hand_batch,
    hand_dataset,
    make,
    mmrec_bpr,
    mmrec_emb_loss,
    scores,
)


def test_defaults_are_the_first_values_of_mmrecs_yaml():
    assert defaults(BPR) == dict(embedding_size=64, reg_weight=2.0)


def test_init_is_xavier_normal_from_the_generator_user_first(tiny):
    state = torch.get_rng_state()
    model = make("bpr", tiny, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    g = torch.Generator().manual_seed(3)
    users = torch.nn.init.xavier_normal_(torch.empty(tiny.n_users, 64), generator=g)
    items = torch.nn.init.xavier_normal_(torch.empty(tiny.n_items, 64), generator=g)
    assert torch.equal(model.user_embedding, users)
    assert torch.equal(model.item_embedding, items)
    assert not torch.equal(make("bpr", tiny, seed=4).user_embedding, users)
    assert set(model.state_dict()) == {"user_embedding", "item_embedding"}


def test_loss_is_mmrecs_formula_in_value_and_gradient(tiny):
    model = make("bpr", tiny, reg_weight=0.7)
    batch = first_batch(tiny)
    terms = model.loss_terms(batch)
    u = model.user_embedding[batch.users]
    p, n = model.item_embedding[batch.pos_items], model.item_embedding[batch.neg_items]
    bpr, reg = mmrec_bpr(u, p, n), 0.7 * mmrec_emb_loss(u, p, n)
    torch.testing.assert_close(terms.data, bpr)
    torch.testing.assert_close(terms.regularizer, reg)
    assert len(torch.unique(batch.pos_items)) < len(batch)  # repeated rows enter the norms repeatedly
    params = [model.user_embedding, model.item_embedding]
    # each term on its own (AMR counts the regulariser once), and both together
    for ours, theirs in ((terms.data, bpr), (terms.regularizer, reg), (terms.total(), bpr + reg)):
        for a, b in zip(torch.autograd.grad(ours, params, retain_graph=True),
                        torch.autograd.grad(theirs, params, retain_graph=True)):
            torch.testing.assert_close(a, b)


def test_zero_rows_give_a_zero_regulariser_gradient_not_nan(tiny):
    model = make("bpr", tiny)
    with torch.no_grad():
        model.user_embedding.zero_()
    terms = model.loss_terms(first_batch(tiny))
    grads = torch.autograd.grad(terms.total(), [model.user_embedding, model.item_embedding])
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[1].abs().sum() > 0  # the items' norms still pull


def test_regulariser_reads_only_the_batch_rows(tiny):
    model = make("bpr", tiny)
    batch = first_batch(tiny, batch_size=8)
    grad_users, grad_items = torch.autograd.grad(model.loss_terms(batch).regularizer,
                                                 [model.user_embedding, model.item_embedding])
    untouched_users = torch.ones(tiny.n_users, dtype=torch.bool)
    untouched_users[batch.users] = False
    untouched_items = torch.ones(tiny.n_items, dtype=torch.bool)
    untouched_items[torch.cat([batch.pos_items, batch.neg_items])] = False
    assert untouched_users.any() and untouched_items.any()
    assert not grad_users[untouched_users].any() and not grad_items[untouched_items].any()
    assert grad_users[batch.users].abs().sum(1).gt(0).all()


def test_scores_are_dot_products_of_the_tables(tiny):
    model = make("bpr", tiny).eval()
    torch.testing.assert_close(scores(model), model.user_embedding @ model.item_embedding.T)


def test_works_without_features_and_exposes_only_id_tables(tiny):
    hand = hand_dataset()
    model = make("bpr", hand, embedding_size=4)
    assert_general_protocol(model, hand)
    assert_general_protocol(make("bpr", tiny), tiny)
    assert scores(model).shape == (3, 3)
    assert torch.isfinite(model.loss(hand_batch()))


@pytest.mark.parametrize(("name", "value"), [("reg_weight", -1.0), ("embedding_size", 0)])
def test_bad_hyperparameter_is_a_one_line_config_error(tiny, name, value):
    with pytest.raises(ConfigError, match=rf"^bpr: {name} must be [^\n]*$"):
        make("bpr", tiny, **{name: value})
