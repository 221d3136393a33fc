"""GRCN: MMRec's maths on an edge-list re-implementation, registered parameters, fresh inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustrec.errors import ConfigError
from robustrec.models import build_model
from robustrec.models.graph import user_item_edges
from robustrec.models.grcn import GRCN
from tests.conftest import make_tiny_dataset
from tests.models.test_mmgcn import all_scores, batch_of, leaf_tensors


@pytest.fixture
def model(tiny):
    return GRCN(tiny, generator=torch.Generator().manual_seed(0), embedding_size=8, latent_embedding=6)


def edge_softmax(scores, groups, n):
    out = torch.empty_like(scores)
    for g in groups.unique():
        mask = groups == g
        out[mask] = torch.softmax(scores[mask], 0)
    return out


def add_aggregate(messages, targets, n):
    return torch.zeros(n, messages.shape[1]).index_add(0, targets, messages)


def reference_representation(model, dataset):
    """MMRec's GRCN forward in torch_geometric's terms: ``edge_index`` rows are (source j, target i),
    messages x_j are summed at i. The routing runs on the user -> item edges exactly as MMRec does."""
    users, items = user_item_edges(dataset.train_matrix)
    n = model.n_users + model.n_items
    edge_index = torch.stack([users, items])
    both = torch.cat([edge_index, edge_index[[1, 0]]], dim=1)
    contents, alphas = [], []
    for modality, branch in model.branches.items():
        feat = F.leaky_relu(branch.mlp(getattr(dataset.features, modality)))
        preference, feat = F.normalize(branch.preference), F.normalize(feat)
        for _ in range(model.n_layers):
            x = torch.cat([preference, feat])
            j, i = edge_index
            alpha = edge_softmax((x[i] * x[j]).sum(-1), i, n)
            preference = F.normalize(preference + add_aggregate(x[j] * alpha[:, None], i, n)[: model.n_users])
        x = torch.cat([preference, feat])
        j, i = both
        alpha = edge_softmax((x[i] * x[j]).sum(-1), i, n)
        contents.append(x + add_aggregate(x[j] * alpha[:, None], i, n))
        alphas.append(alpha)
    conf = model.confidence
    confidence = torch.cat([conf[edge_index[0]], conf[edge_index[1]]])
    weight = torch.relu((torch.stack(alphas, 1) * confidence).max(1).values)[:, None]
    x0 = F.normalize(model.id_embedding)
    j, i = both
    x1 = add_aggregate(x0[j] * weight, i, n)
    x2 = add_aggregate(x1[j] * weight, i, n)
    return torch.cat([x0 + x1 + x2, *contents], dim=1)


def test_matches_reference(model, tiny):
    with torch.no_grad():
        users, items = model.inference_embeddings()
        expected = reference_representation(model, tiny)
    torch.testing.assert_close(torch.cat([users, items]), expected, rtol=1e-5, atol=1e-5)


def test_mmrec_routing_is_a_no_op(tiny):
    # On MMRec's user -> item edges the routing messages reach items only; users keep their preference.
    a = GRCN(tiny, generator=torch.Generator().manual_seed(0), n_layers=1).eval()
    b = GRCN(tiny, generator=torch.Generator().manual_seed(0), n_layers=5).eval()
    torch.testing.assert_close(all_scores(a), all_scores(b))


def test_routing_to_users_by_hand():
    # Routing toward users: p_u <- normalize(p_u + sum_i softmax_i(p_u . c_i) c_i) over u's items,
    # then the attention layer over both edge directions, here with dense masked softmaxes.
    tiny = make_tiny_dataset(n_users=6, n_items=8, seed=1)
    model = GRCN(tiny, generator=torch.Generator().manual_seed(0), n_layers=2, route_to_users=True)
    branch = model.branches["text"]
    users, items = user_item_edges(tiny.train_matrix)
    n = tiny.n_users + tiny.n_items
    adjacency = torch.zeros(n, n, dtype=torch.bool)
    adjacency[users, items] = adjacency[items, users] = True
    with torch.no_grad():
        content = F.normalize(F.leaky_relu(branch.mlp(tiny.features.text)))
        preference = F.normalize(branch.preference)
        for _ in range(2):
            scores = (preference @ content.T).masked_fill(
                ~adjacency[: tiny.n_users, tiny.n_users :], -torch.inf
            )
            preference = F.normalize(preference + torch.softmax(scores, 1) @ content)
        x = torch.cat([preference, content])
        attention = torch.softmax((x @ x.T).masked_fill(~adjacency, -torch.inf), 1).nan_to_num(0.0)
        out, _ = branch(tiny.features.text, model.graph, model.routing, model.n_layers)
    torch.testing.assert_close(out, x + attention @ x, rtol=1e-5, atol=1e-5)
    plain = GRCN(tiny, generator=torch.Generator().manual_seed(0), n_layers=2).eval()
    assert not torch.allclose(all_scores(model.eval()), all_scores(plain))


def test_every_trainable_tensor_is_a_registered_parameter(model, tiny):
    params = dict(model.named_parameters())
    assert set(params) <= set(model.state_dict())
    by_id = {id(p) for p in params.values()}
    leaves = leaf_tensors(model.loss(batch_of(tiny)))
    assert leaves and all(id(leaf) in by_id for leaf in leaves)
    model.loss(batch_of(tiny)).backward()
    for name in ("id_embedding", "confidence", "branches.image.preference", "branches.text.mlp.weight"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0


def test_same_generator_same_weights(tiny):
    a = GRCN(tiny, generator=torch.Generator().manual_seed(3))
    b = GRCN(tiny, generator=torch.Generator().manual_seed(3))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(
        a.id_embedding, GRCN(tiny, generator=torch.Generator().manual_seed(4)).id_embedding
    )


def test_training_is_deterministic(tiny):
    def run():
        model = GRCN(tiny, generator=torch.Generator().manual_seed(0))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for seed in range(3):
            opt.zero_grad()
            model.loss(batch_of(tiny, seed)).backward()
            opt.step()
        return all_scores(model.eval())

    assert torch.equal(run(), run())


def test_inference_recomputes_from_current_weights_and_features(model, tiny):
    model.eval()
    before = all_scores(model)
    noisy = model.with_features(tiny.features.replace(text=torch.randn_like(tiny.features.text)))
    assert not torch.allclose(all_scores(noisy.eval()), before)
    assert torch.equal(all_scores(model), before)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    model.loss(batch_of(tiny)).backward()
    opt.step()
    assert not torch.allclose(all_scores(model.eval()), before)


def test_state_dict_round_trip(model, tiny):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.loss(batch_of(tiny)).backward()
    opt.step()
    other = GRCN(tiny, generator=torch.Generator().manual_seed(9), embedding_size=8, latent_embedding=6)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(all_scores(other.eval()), all_scores(model.eval()))


def test_perturb_adds_to_the_raw_features(model, tiny):
    batch = batch_of(tiny)
    zero = {m: torch.zeros_like(t, requires_grad=True) for m, t in model.adversarial_inputs().items()}
    loss = model.loss(batch, perturb=zero)
    torch.testing.assert_close(loss, model.loss(batch))
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(loss, list(zero.values())))
    shifted = model.loss(batch, perturb={"image": torch.ones_like(tiny.features.image)})
    moved = model.with_features(tiny.features.replace(image=tiny.features.image + 1)).loss(batch)
    torch.testing.assert_close(shifted, moved)


def test_tables_and_registry(model, tiny):
    tables = {(t.name, t.kind): t for t in model.embedding_tables()}
    assert tables[("id_embedding", "item")].offset == tiny.n_users
    assert ("branches.image.preference", "user") in tables
    text_only = tiny.with_features(tiny.features.replace(image=None))
    single = build_model("grcn", text_only, generator=torch.Generator().manual_seed(0))
    assert single.confidence.shape == (tiny.n_users + tiny.n_items, 1)
    assert torch.isfinite(single.loss(batch_of(text_only)))
    with pytest.raises(ConfigError):
        GRCN(tiny, n_layers=-1)
