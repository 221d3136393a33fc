"""MMGCN: MMRec's maths on a dense re-implementation, registered parameters, fresh inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustrec.data.sampling import BPRSampler
from robustrec.errors import ConfigError
from robustrec.models import build_model
from robustrec.models.graph import user_item_edges
from robustrec.models.mmgcn import MMGCN, _Bipartite


def batch_of(dataset, seed=0, size=64):
    gen = torch.Generator().manual_seed(seed)
    return next(
        iter(BPRSampler(dataset, batch_size=size).epoch(gen, torch.Generator().manual_seed(seed + 1)))
    )


def all_scores(model):
    return model.scorer()(torch.arange(model.n_users))


def leaf_tensors(loss):
    """Every leaf tensor the autograd graph of ``loss`` would accumulate a gradient into."""
    seen, leaves, stack = set(), [], [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.append(fn.variable)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return leaves


@pytest.fixture
def model(tiny):
    return MMGCN(tiny, generator=torch.Generator().manual_seed(0), image_latent=6, embedding_size=8)


def test_mean_conv_by_hand():
    # users 0, 1; items 0, 1, 2. Edges: u0-i0, u0-i1, u1-i1. Item 2 has no interaction.
    users, items = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])
    graph = _Bipartite(users, items, n_users=2, n_items=3)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 4.0], [6.0, 6.0]])  # u0, u1, i0, i1, i2
    weight = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    mean = torch.tensor(
        [
            [1.0, 2.0],  # u0: mean(i0, i1)
            [0.0, 4.0],  # u1: i1
            [1.0, 0.0],  # i0: u0
            [0.5, 0.5],  # i1: mean(u0, u1)
            [0.0, 0.0],  # i2: no neighbour
        ]
    )
    torch.testing.assert_close(torch.cat(graph.mean_conv(x[:2], x[2:], weight)), mean @ weight)


def test_mean_conv_either_side_first():
    # More users than items takes the other branch of mean_conv; both equal the dense product.
    gen = torch.Generator().manual_seed(0)
    for n_users, n_items in ((3, 5), (5, 3)):
        pairs = torch.cartesian_prod(torch.arange(n_users), torch.arange(n_items))
        pairs = pairs[torch.rand(len(pairs), generator=gen) < 0.6]
        graph = _Bipartite(pairs[:, 0], pairs[:, 1], n_users, n_items)
        dense = torch.zeros(n_users + n_items, n_users + n_items)
        dense[pairs[:, 0], n_users + pairs[:, 1]] = 1.0
        dense[n_users + pairs[:, 1], pairs[:, 0]] = 1.0
        dense = dense / dense.sum(1, keepdim=True).clamp_min(1.0)
        x, weight = torch.randn(n_users + n_items, 4, generator=gen), torch.randn(4, 4, generator=gen)
        out = torch.cat(graph.mean_conv(x[:n_users], x[n_users:], weight))
        torch.testing.assert_close(out, dense @ x @ weight)


def reference_representation(model, dataset):
    """MMRec's MMGCN forward, written densely: mean over in-neighbours of both edge directions."""
    users, items = user_item_edges(dataset.train_matrix)
    n = model.n_users + model.n_items
    adj = torch.zeros(n, n)
    adj[items, users] = 1.0  # message user -> item
    adj[users, items] = 1.0  # and item -> user
    adj = adj / adj.sum(1, keepdim=True).clamp_min(1.0)
    total = 0
    for modality, branch in model.branches.items():
        feat = getattr(dataset.features, modality)
        feat = branch.mlp(feat) if branch.mlp is not None else feat
        x = F.normalize(torch.cat([branch.preference, feat]))
        for layer in branch.layers:
            h = F.leaky_relu(adj @ (x @ layer.conv))
            x_hat = F.leaky_relu(layer.linear(x)) + model.id_embedding
            x = F.leaky_relu(layer.combine(torch.cat([h, x_hat], dim=1)))
        total = total + x
    return total / len(model.branches)


def test_matches_dense_reference(model, tiny):
    with torch.no_grad():
        expected = reference_representation(model, tiny)
        users, items = model.inference_embeddings()
    torch.testing.assert_close(torch.cat([users, items]), expected, rtol=1e-5, atol=1e-5)


def test_layer_shapes_follow_mmrec(tiny):
    model = MMGCN(tiny, image_latent=6, text_latent=None, embedding_size=8, n_layers=3)
    image, text = model.branches["image"], model.branches["text"]
    assert image.mlp.weight.shape == (6, tiny.features.image.shape[1])
    assert text.mlp is None and text.preference.shape == (tiny.n_users, tiny.features.text.shape[1])
    assert len(image.layers) == 3
    assert image.layers[0].combine.in_features == 6 + 8  # concat of h (latent) and x_hat (id)
    assert image.layers[1].combine.in_features == 16
    assert MMGCN(tiny, n_layers=1).branches["text"].layers.__len__() == 1


def test_every_trainable_tensor_is_a_registered_parameter(model, tiny):
    params = dict(model.named_parameters())
    state = model.state_dict()
    assert {"id_embedding", "branches.image.preference", "branches.text.preference"} <= set(params)
    assert set(params) <= set(state)
    by_id = {id(p) for p in params.values()}
    for leaf in leaf_tensors(model.loss(batch_of(tiny))):
        assert id(leaf) in by_id
    # MMRec's pitfall: the ID embedding and preferences never trained. Here every one gets a gradient.
    model.loss(batch_of(tiny)).backward()
    for name in ("id_embedding", "branches.image.preference", "branches.text.preference"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0


def test_same_generator_same_weights(tiny):
    a = MMGCN(tiny, generator=torch.Generator().manual_seed(3))
    b = MMGCN(tiny, generator=torch.Generator().manual_seed(3))
    c = MMGCN(tiny, generator=torch.Generator().manual_seed(4))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.id_embedding, c.id_embedding)


def test_training_is_deterministic(tiny):
    def run():
        model = MMGCN(tiny, generator=torch.Generator().manual_seed(0))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for seed in range(3):
            opt.zero_grad()
            model.loss(batch_of(tiny, seed)).backward()
            opt.step()
        return all_scores(model.eval())

    assert torch.equal(run(), run())


def test_init_leaves_global_rng_alone(tiny):
    state = torch.random.get_rng_state()
    MMGCN(tiny, generator=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.random.get_rng_state())


def test_inference_recomputes_from_current_weights_and_features(model, tiny):
    model.eval()
    before = all_scores(model)
    noisy = model.with_features(tiny.features.replace(text=torch.randn_like(tiny.features.text)))
    assert not torch.allclose(all_scores(noisy.eval()), before)
    assert torch.equal(all_scores(model), before)  # the original is untouched
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    model.loss(batch_of(tiny)).backward()
    opt.step()
    model.eval()
    assert not torch.allclose(all_scores(model), before)


def test_state_dict_round_trip(model, tiny):
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.loss(batch_of(tiny)).backward()
    opt.step()
    model.eval()
    other = MMGCN(tiny, generator=torch.Generator().manual_seed(9), image_latent=6, embedding_size=8).eval()
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(all_scores(other), all_scores(model))


def test_perturb_adds_to_the_raw_features(model, tiny):
    batch = batch_of(tiny)
    zero = {m: torch.zeros_like(t, requires_grad=True) for m, t in model.adversarial_inputs().items()}
    loss = model.loss(batch, perturb=zero)
    torch.testing.assert_close(loss, model.loss(batch))
    grads = torch.autograd.grad(loss, list(zero.values()))
    assert all(g.abs().sum() > 0 for g in grads)
    shifted = {"text": torch.ones_like(tiny.features.text)}
    plus_one = model.with_features(tiny.features.replace(text=tiny.features.text + 1))
    torch.testing.assert_close(model.loss(batch, perturb=shifted), plus_one.loss(batch))


def test_tables_and_inputs(model, tiny):
    tables = {(t.name, t.kind): t for t in model.embedding_tables()}
    assert tables[("id_embedding", "item")].offset == tiny.n_users
    assert tables[("id_embedding", "item")].rows == tiny.n_items
    assert ("branches.text.preference", "user") in tables
    assert set(model.adversarial_inputs()) == {"image", "text"}
    assert model.adversarial_inputs()["image"] is model.image_feat


def test_single_modality_and_registry(tiny):
    text_only = tiny.with_features(tiny.features.replace(image=None))
    model = build_model("mmgcn", text_only, generator=torch.Generator().manual_seed(0))
    assert list(model.branches) == ["text"]
    assert torch.isfinite(model.loss(batch_of(text_only)))
    with pytest.raises(ConfigError):
        MMGCN(tiny.with_features(tiny.features.replace(image=None, text=None)))
    with pytest.raises(ConfigError):
        MMGCN(tiny, n_layers=0)
