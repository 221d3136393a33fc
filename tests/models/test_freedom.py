"""FREEDOM: the frozen kNN item graph, degree-sensitive edge pruning, feature swaps and the protocol."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustrec.data.sampling import Batch, BPRSampler
from robustrec.hparams import defaults
from robustrec.models import build_model
from robustrec.models.freedom import FREEDOM, mixed_knn_graph
from robustrec.models.graph import spmm, to_csr

REPO = Path(__file__).resolve().parents[2]
ML100K_MMREC = Path(os.environ.get("ROBUSTREC_ML100K_MMREC", REPO.parent / "data" / "ml100k-mmrec"))


def make(dataset, seed=0, **params) -> FREEDOM:
    return build_model("freedom", dataset, generator=torch.Generator().manual_seed(seed), **params)


def first_batch(dataset, seed=0) -> Batch:
    sampler = BPRSampler(dataset, batch_size=64)
    return next(sampler.epoch(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)))


def scores(model) -> torch.Tensor:
    return model.scorer()(torch.arange(model.n_users))


def test_defaults_are_mmrecs():
    assert defaults(FREEDOM) == dict(
        embedding_size=64,
        feat_embed_dim=64,
        knn_k=10,
        lambda_coeff=0.9,
        n_mm_layers=1,
        n_ui_layers=2,
        reg_weight=0.0,
        mm_image_weight=0.1,
        dropout=0.8,
    )


def test_knn_graph_by_hand():
    # image, k = 2 (self + nearest): 0 -> 1, 1 -> 2, 2 -> 1, 3 -> 2 (not symmetric)
    image = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    # text: 0 -> 3, 1 -> 3, 2 -> 1, 3 -> 0
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.1, 1.0], [1.0, 0.5, 0.0]])
    image_edges = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2), (2, 1), (3, 3), (3, 2)]
    text_edges = [(0, 0), (0, 3), (1, 1), (1, 3), (2, 2), (2, 1), (3, 3), (3, 0)]
    expected = torch.zeros(4, 4)
    for weight, edges in ((0.1, image_edges), (0.9, text_edges)):
        for row, col in edges:
            expected[row, col] += weight * 0.5  # every row has degree k = 2: 1 / sqrt(2 * 2)
    torch.testing.assert_close(mixed_knn_graph(image, text, 2, 0.1).to_dense(), expected)
    torch.testing.assert_close(mixed_knn_graph(None, text, 2, 0.1).to_dense(), _dense(text_edges))


def _dense(edges) -> torch.Tensor:
    out = torch.zeros(4, 4)
    for row, col in edges:
        out[row, col] = 0.5
    return out


def test_model_graph_is_the_mixed_knn_graph(tiny):
    model = make(tiny, knn_k=3, mm_image_weight=0.3)
    expected = mixed_knn_graph(tiny.features.image, tiny.features.text, 3, 0.3).to_dense()
    torch.testing.assert_close(model.mm_adj.to_dense(), expected)
    torch.testing.assert_close(model.mm_adj_t.to_dense(), expected.T)


def test_spmm_gradient_uses_the_transpose():
    adj = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 4.0]])
    x = torch.randn(3, 2, requires_grad=True)
    csr, csr_t = to_csr(adj.to_sparse()), to_csr(adj.T.to_sparse())
    out = spmm(csr, x, csr_t)
    torch.testing.assert_close(out, adj @ x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    (expected,) = torch.autograd.grad((adj @ x).square().sum(), x)
    torch.testing.assert_close(grad, expected)


def test_pruning_keeps_the_right_number_of_edges_reproducibly(tiny):
    model = make(tiny)
    n_edges = model.edge_index.shape[1]
    assert n_edges == tiny.train_matrix.nnz
    keep = int(n_edges * (1.0 - 0.8))
    model.pre_epoch(torch.Generator().manual_seed(5))
    first = model.masked_adj
    assert first._nnz() == 2 * keep  # both directions
    model.pre_epoch(torch.Generator().manual_seed(5))
    assert torch.equal(model.masked_adj.col_indices(), first.col_indices())
    assert torch.equal(model.masked_adj.values(), first.values())
    model.pre_epoch(torch.Generator().manual_seed(6))
    assert not torch.equal(model.masked_adj.to_dense(), first.to_dense())


def test_pruned_graph_is_renormalised_on_kept_training_edges(tiny):
    model = make(tiny, dropout=0.5)
    model.pre_epoch(torch.Generator().manual_seed(0))
    dense = model.masked_adj.to_dense()
    n_users = tiny.n_users
    torch.testing.assert_close(dense, dense.T)
    block = dense[:n_users, n_users:]
    kept = block > 0
    train = torch.from_numpy(tiny.train_matrix.toarray()) > 0
    assert not (kept & ~train).any()
    user_degree = kept.sum(1, keepdim=True).float()
    item_degree = kept.sum(0, keepdim=True).float()
    expected = kept / (user_degree.clamp_min(1) * item_degree.clamp_min(1)).sqrt()
    torch.testing.assert_close(block, expected)


def test_no_pruning_uses_the_full_graph(tiny):
    model = make(tiny, dropout=0.0)
    model.pre_epoch(torch.Generator().manual_seed(0))
    assert model.masked_adj is model.norm_adj


def test_loss_without_pre_epoch_samples_a_graph(tiny):
    model = make(tiny)
    assert model.masked_adj is None
    assert torch.isfinite(model.loss(first_batch(tiny)))
    assert model.masked_adj is not None


def test_init_deterministic_and_leaves_global_rng_alone(tiny):
    state = torch.get_rng_state()
    a, b, c = make(tiny, seed=3), make(tiny, seed=3), make(tiny, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.item_embedding, c.item_embedding)
    assert set(a.state_dict()) == {
        "user_embedding",
        "item_embedding",
        "image_embedding",
        "text_embedding",
        "image_trs.weight",
        "image_trs.bias",
        "text_trs.weight",
        "text_trs.bias",
    }


def test_scores_shape_full_graph_and_state_dict_round_trip(tiny):
    model = make(tiny)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.pre_epoch(torch.Generator().manual_seed(0))
    model.loss(first_batch(tiny)).backward()
    optimizer.step()
    before = scores(model)
    assert before.shape == (tiny.n_users, tiny.n_items)
    model.pre_epoch(torch.Generator().manual_seed(1))  # inference never uses the pruned graph
    assert torch.equal(scores(model), before)
    clone = make(tiny, seed=42)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(scores(clone), before)


def test_with_features_rebuilds_the_knn_graph(tiny):
    assert FREEDOM.reads_features_at_inference is True
    model = make(tiny)
    before = scores(model)
    graph = model.mm_adj.to_dense()
    text = tiny.features.text.clone()
    noise = torch.randn(tiny.features.text.shape, generator=torch.Generator().manual_seed(0))
    swapped = model.with_features(tiny.features.replace(text=noise))
    assert not torch.allclose(scores(swapped), before)
    expected = mixed_knn_graph(tiny.features.image, noise, 10, 0.1).to_dense()
    torch.testing.assert_close(swapped.mm_adj.to_dense(), expected)
    # the original model and the dataset are untouched
    assert torch.equal(scores(model), before)
    assert torch.equal(model.mm_adj.to_dense(), graph)
    assert torch.equal(tiny.features.text, text)


def test_zero_reg_weight_shortcut_is_exact(tiny):
    """With reg_weight = 0 the feature term is skipped; computing it (as MMRec does) changes nothing."""
    model = make(tiny)
    model.pre_epoch(torch.Generator().manual_seed(0))
    batch = first_batch(tiny)
    params = [model.user_embedding, model.item_embedding]
    short = model.loss(batch)
    full = model.loss(batch, perturb={m: torch.zeros_like(t) for m, t in model.adversarial_inputs().items()})
    torch.testing.assert_close(short, full)
    for a, b in zip(torch.autograd.grad(short, params), torch.autograd.grad(full, params)):
        torch.testing.assert_close(a, b)


def test_feature_term_and_adversarial_inputs(tiny):
    model = make(tiny, reg_weight=1e-2)
    model.pre_epoch(torch.Generator().manual_seed(0))
    inputs = model.adversarial_inputs()
    assert set(inputs) == {"image", "text"} and inputs["image"] is model.image_embedding
    kinds = {t.name: t.kind for t in model.embedding_tables()}
    assert kinds == {
        "user_embedding": "user",
        "item_embedding": "item",
        "image_embedding": "feature",
        "text_embedding": "feature",
    }
    batch = first_batch(tiny)
    delta = torch.zeros_like(inputs["image"], requires_grad=True)
    loss = model.loss(batch, perturb={"image": delta})
    (grad,) = torch.autograd.grad(loss, delta)
    assert grad.abs().sum() > 0
    assert not torch.equal(model.loss(batch, perturb={"image": torch.randn_like(delta)}), loss)


@pytest.mark.slow
def test_trains_on_ml100k_mmrec(tmp_path):
    """FREEDOM learns on the ml100k MMRec split (MMRec: test R@20 .3552 after 242 epochs)."""
    if not (ML100K_MMREC / "ml100k.inter").is_file():
        pytest.skip(f"no MMRec-format ml100k at {ML100K_MMREC} (set ROBUSTREC_ML100K_MMREC)")
    from robustrec.data.mmrec import load_dataset
    from robustrec.runs import RunSpec, TrainConfig
    from robustrec.training import train

    dataset = load_dataset(ML100K_MMREC)
    result = train(
        dataset, RunSpec("freedom", train=TrainConfig(epochs=30)), tmp_path / "run", progress=False
    )
    assert result.valid["recall@20"] > 0.27  # seed 999 reaches .29 (MMRec-like curve)
