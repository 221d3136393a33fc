"""LGMRec: the loss and the scores against a literal re-statement of MMRec's code, its graphs by hand,
where its randomness comes from, its hyper-parameter checks and the protocol."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustrec.data.dataset import Dataset, ItemFeatures
from robustrec.data.sampling import Batch, BPRSampler
from robustrec.errors import ConfigError
from robustrec.hparams import defaults
from robustrec.models import build_model
from robustrec.models.lgmrec import LGMRec, gumbel_noise, hyper_contrast
from robustrec.numerics import using_threads

#: MMRec's LGMRec.yaml (single values) and its tau.
MMREC_DEFAULTS = dict(
    embedding_size=64,
    feat_embed_dim=64,
    cf_model="lightgcn",
    n_ui_layers=2,
    n_mm_layers=2,
    n_hyper_layer=1,
    hyper_num=4,
    keep_rate=0.5,
    alpha=0.3,
    cl_weight=1e-4,
    reg_weight=1e-6,
)
TAU = 0.2


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine two threads make these small steps 100x slower."""
    with using_threads(1):
        yield


def make(dataset, seed=0, **params) -> LGMRec:
    return build_model("lgmrec", dataset, generator=torch.Generator().manual_seed(seed), **params)


def first_batch(dataset, seed=0, model_seed=7) -> Batch:
    sampler = BPRSampler(dataset, batch_size=64)
    return next(sampler.epoch(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(model_seed)))


def with_generator(batch: Batch, seed: int) -> Batch:
    return Batch(batch.users, batch.pos_items, batch.neg_items, torch.Generator().manual_seed(seed))


def scores(model) -> torch.Tensor:
    return model.scorer()(torch.arange(model.n_users))


# ---- MMRec's LGMRec, re-stated literally with dense matrices ------------------------------------------


def mmrec_forward(model: LGMRec, noise, training: bool):
    """MMRec's ``LGMRec.forward`` on the model's weights, with the given Gumbel noise and dropout masks."""
    n_users, n_items = model.n_users, model.n_items
    inter = torch.from_numpy(model.dataset.train_matrix.toarray()).float()
    full = torch.zeros(n_users + n_items, n_users + n_items)
    full[:n_users, n_users:] = inter
    full[n_users:, :n_users] = inter.T
    count = (full > 0).sum(1).float()
    d = (count + 1e-7).pow(-0.5)
    norm_adj = d[:, None] * full * d[None, :]
    num_inters = 1.0 / (count + 1e-7)

    ego = torch.cat([model.user_embedding, model.item_id_embedding])
    if model.cf_model == "lightgcn":
        layers = [ego]
        for _ in range(model.n_ui_layers):
            ego = norm_adj @ ego
            layers.append(ego)
        cge = torch.stack(layers, dim=1).mean(dim=1)
    else:
        cge = ego

    def gumbel_softmax(logits, g):
        return torch.softmax((logits + g) / TAU, dim=1)

    image, text = model.dataset.features.image, model.dataset.features.text
    iv = image @ model.v_hyper
    uv = inter @ iv
    iv = gumbel_softmax(iv, noise.gumbel["image"][1])  # the noise is given as (users, items)
    uv = gumbel_softmax(uv, noise.gumbel["image"][0])
    it = text @ model.t_hyper
    ut = inter @ it
    it = gumbel_softmax(it, noise.gumbel["text"][1])
    ut = gumbel_softmax(ut, noise.gumbel["text"][0])

    def mge(feat, trs):
        item_feats = feat @ trs
        user_feats = (inter @ item_feats) * num_inters[:n_users, None]
        x = torch.cat([user_feats, item_feats])
        for _ in range(model.n_mm_layers):
            x = norm_adj @ x
        return x

    lge = cge + (F.normalize(mge(image, model.item_image_trs)) + F.normalize(mge(text, model.item_text_trs)))

    def drop(x, modality, which):
        if not training or noise.keep is None:
            return x
        return x * noise.keep[modality][which] / model.keep_rate

    def hgnn(i_hyper, u_hyper, embeds):
        i_ret = embeds
        for _ in range(model.n_hyper_layer):
            lat = i_hyper.T @ i_ret
            i_ret = i_hyper @ lat
            u_ret = u_hyper @ lat
        return u_ret, i_ret

    uv_e, iv_e = hgnn(drop(iv, "image", 1), drop(uv, "image", 0), cge[n_users:])
    ut_e, it_e = hgnn(drop(it, "text", 1), drop(ut, "text", 0), cge[n_users:])
    ghe = torch.cat([uv_e, iv_e]) + torch.cat([ut_e, it_e])
    everything = lge + model.alpha * F.normalize(ghe)
    return everything[:n_users], everything[n_users:], (uv_e, iv_e, ut_e, it_e)


def mmrec_loss(model: LGMRec, batch: Batch, noise) -> tuple[torch.Tensor, torch.Tensor]:
    """MMRec's ``calculate_loss`` as (bpr + cl_weight * hcl, reg_weight * reg)."""
    users_all, items_all, (uv, iv, ut, it) = mmrec_forward(model, noise, training=True)
    u, p, n = users_all[batch.users], items_all[batch.pos_items], items_all[batch.neg_items]
    bpr = -torch.mean(F.logsigmoid((u * p).sum(1) - (u * n).sum(1)))

    def ssl_triple_loss(emb1, emb2, all_emb):
        n1, n2, na = F.normalize(emb1), F.normalize(emb2), F.normalize(all_emb)
        pos = torch.exp((n1 * n2).sum(1) / TAU)
        ttl = torch.exp(n1 @ na.T / TAU).sum(1)
        return -torch.log(pos / ttl).sum()

    hcl = ssl_triple_loss(uv[batch.users], ut[batch.users], ut) + ssl_triple_loss(
        iv[batch.pos_items], it[batch.pos_items], it
    )
    reg = (torch.norm(u, p=2) + torch.norm(p, p=2) + torch.norm(n, p=2)) / n.shape[0]
    return bpr + model.cl_weight * hcl, model.reg_weight * reg


def trained(model: LGMRec, dataset, steps=3) -> LGMRec:
    """A few Adam steps, so the weights are not at their initial values."""
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-2)
    for step in range(steps):
        optimizer.zero_grad()
        model.loss(first_batch(dataset, seed=step)).backward()
        optimizer.step()
    return model


SETTINGS = [
    dict(cl_weight=0.5, reg_weight=0.1, alpha=0.7),
    dict(
        cl_weight=0.2, reg_weight=0.3, alpha=1.0, n_hyper_layer=2, hyper_num=3, n_mm_layers=1, n_ui_layers=3
    ),
    dict(cf_model="mf", keep_rate=1.0, cl_weight=1.0, reg_weight=0.01, embedding_size=16, feat_embed_dim=16),
]


@pytest.mark.parametrize("params", SETTINGS)
def test_loss_and_gradients_equal_mmrecs_formula(tiny, params):
    model = trained(make(tiny, **params), tiny)
    batch = first_batch(tiny, seed=11)
    assert len(torch.unique(batch.users)) < len(
        batch
    )  # repeated users: the per-distinct-row weighting counts
    terms = model.loss_terms(with_generator(batch, 5))
    data, reg = mmrec_loss(model, batch, model.draw_noise(torch.Generator().manual_seed(5), training=True))
    torch.testing.assert_close(terms.data, data)
    torch.testing.assert_close(terms.regularizer, reg)
    params_ = [p for _, p in model.named_parameters()]
    ours = torch.autograd.grad(terms.total(), params_)
    theirs = torch.autograd.grad(data + reg, params_)
    for (name, _), a, b in zip(model.named_parameters(), ours, theirs):
        # float32 rounding, relative to the largest entry (the hyperedge gradients span 1e-8 to 1e2)
        assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-7, name


@pytest.mark.parametrize("params", SETTINGS)
def test_scores_equal_mmrecs_full_sort_predict(tiny, params):
    model = trained(make(tiny, inference_seed=3, **params), tiny).eval()
    noise = model.draw_noise(torch.Generator().manual_seed(3), training=False)
    assert noise.keep is None  # no dropout at inference, as under MMRec's eval()
    with torch.no_grad():
        users, items, _ = mmrec_forward(model, noise, training=False)
    torch.testing.assert_close(scores(model), users @ items.T)


def test_defaults_are_mmrecs():
    assert defaults(LGMRec) == {**MMREC_DEFAULTS, "inference_seed": 0}


# ---- graphs by hand --------------------------------------------------------------------------------


def three_users() -> Dataset:
    """u0: i0; u1: i0, i1; u2: i1 (item 2 has no training interaction)."""
    train = np.array([[0, 0], [1, 0], [1, 1], [2, 1]])
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    text = torch.tensor([[1.0], [2.0], [4.0]])
    return Dataset(
        name="three",
        n_users=3,
        n_items=3,
        train=train,
        valid=np.array([[0, 2]]),
        test=np.array([[2, 2]]),
        features=ItemFeatures(image=image, text=text),
    )


def test_graphs_by_hand():
    model = make(three_users(), embedding_size=2, feat_embed_dim=2)
    h, q = 1 / math.sqrt(2), 0.5  # 1/sqrt(1*2) and 1/sqrt(2*2): degrees u0 1, u1 2, u2 1, i0 2, i1 2, i2 0
    expected = torch.zeros(6, 6)
    for user, item, value in ((0, 0, h), (1, 0, q), (1, 1, q), (2, 1, h)):
        expected[user, 3 + item] = expected[3 + item, user] = value
    torch.testing.assert_close(model.norm_adj.to_dense(), expected, rtol=1e-6, atol=0)
    binary = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 1, 0]])
    torch.testing.assert_close(model.adj.to_dense(), binary)
    torch.testing.assert_close(model.adj_t.to_dense(), binary.T)
    torch.testing.assert_close(model.inv_degree.squeeze(1), torch.tensor([1.0, 0.5, 1.0]))


def test_users_get_the_mean_of_their_items_projection_and_the_sum_of_their_logits():
    model = make(three_users(), embedding_size=2, feat_embed_dim=2, hyper_num=3)
    features, logits = model._modal_inputs(None)
    image = model.dataset.features.image
    projected, hyper = image @ model.item_image_trs, image @ model.v_hyper
    torch.testing.assert_close(features["image"][1], projected)
    expected_users = torch.stack([projected[0], (projected[0] + projected[1]) / 2, projected[1]])
    torch.testing.assert_close(features["image"][0], expected_users)
    torch.testing.assert_close(logits["image"][1], hyper)
    torch.testing.assert_close(logits["image"][0], torch.stack([hyper[0], hyper[0] + hyper[1], hyper[1]]))


def test_hyper_contrast_by_hand():
    """Rows repeat: each occurrence counts once; a row matching only its own view has the lowest loss."""
    anchor = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    positive = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    rows = torch.tensor([0, 1, 0])
    cos = F.normalize(anchor) @ F.normalize(positive).T
    per_row = torch.logsumexp(cos / TAU, 1) - cos.diagonal() / TAU
    torch.testing.assert_close(hyper_contrast(anchor, positive, rows), 2 * per_row[0] + per_row[1])


# ---- randomness ----------------------------------------------------------------------------------------


def test_gumbel_noise_is_standard_gumbel_from_the_generator():
    a = gumbel_noise((200_000,), torch.Generator().manual_seed(1), torch.device("cpu"))
    b = gumbel_noise((200_000,), torch.Generator().manual_seed(1), torch.device("cpu"))
    c = gumbel_noise((200_000,), torch.Generator().manual_seed(2), torch.device("cpu"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(a.mean().item() - 0.5772) < 0.01  # Euler-Mascheroni
    assert abs(a.var().item() - math.pi**2 / 6) < 0.03
    assert torch.isfinite(a).all()


def test_noise_comes_from_the_generator_in_mmrecs_shapes(tiny):
    model = make(tiny)
    a = model.draw_noise(torch.Generator().manual_seed(4), training=True)
    b = model.draw_noise(torch.Generator().manual_seed(4), training=True)
    c = model.draw_noise(torch.Generator().manual_seed(5), training=True)
    for m in ("image", "text"):
        assert [t.shape for t in a.gumbel[m]] == [(tiny.n_users, 4), (tiny.n_items, 4)]
        assert [t.shape for t in a.keep[m]] == [(tiny.n_users, 4), (tiny.n_items, 4)]
        for x, y, z in zip(a.gumbel[m] + a.keep[m], b.gumbel[m] + b.keep[m], c.gumbel[m] + c.keep[m]):
            assert torch.equal(x, y) and not torch.equal(x, z)
    kept = torch.cat([k.flatten().float() for m in ("image", "text") for k in a.keep[m]])
    assert 0.4 < kept.mean().item() < 0.6  # keep_rate 0.5
    assert model.draw_noise(torch.Generator(), training=False).keep is None
    assert make(tiny, keep_rate=1.0).draw_noise(torch.Generator(), training=True).keep is None


def test_noise_is_drawn_in_mmrecs_order(tiny):
    """MMRec's forward: gumbel_softmax of image items, image users, text items, text users, then the
    dropout of the same four assignments (``F.gumbel_softmax`` draws ``-log(Exp(1))``)."""
    model = make(tiny, hyper_num=3, keep_rate=0.7)
    g = torch.Generator().manual_seed(9)
    shapes = [(tiny.n_items, 3), (tiny.n_users, 3)] * 2
    gumbels = [-torch.empty(s).exponential_(generator=g).log() for s in shapes]
    keeps = [torch.rand(s, generator=g) >= 1 - 0.7 for s in shapes]
    noise = model.draw_noise(torch.Generator().manual_seed(9), training=True)
    for drawn, expected in ((noise.gumbel, gumbels), (noise.keep, keeps)):
        assert torch.equal(drawn["image"][1], expected[0]) and torch.equal(drawn["image"][0], expected[1])
        assert torch.equal(drawn["text"][1], expected[2]) and torch.equal(drawn["text"][0], expected[3])


def test_loss_draws_from_the_batch_generator_and_never_the_global_rng(tiny):
    model = make(tiny)
    batch = first_batch(tiny)
    state = torch.get_rng_state()
    same = [model.loss(with_generator(batch, 1)) for _ in range(2)]
    other = model.loss(with_generator(batch, 2))
    reference = scores(model)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(same[0], same[1]) and not torch.equal(same[0], other)
    assert torch.equal(scores(model.train()), reference)  # inference: the same draw at every call, any mode


def test_inference_seed_chooses_the_gumbel_draw(tiny):
    base = scores(make(tiny, seed=0))
    assert torch.equal(scores(make(tiny, seed=0, inference_seed=0)), base)
    assert not torch.allclose(scores(make(tiny, seed=0, inference_seed=1)), base)


def test_init_deterministic_and_leaves_global_rng_alone(tiny):
    state = torch.get_rng_state()
    a, b, c = make(tiny, seed=3), make(tiny, seed=3), make(tiny, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.user_embedding, c.user_embedding)
    assert set(a.state_dict()) == {
        "user_embedding",
        "item_id_embedding",
        "item_image_trs",
        "v_hyper",
        "item_text_trs",
        "t_hyper",
    }
    assert a.item_image_trs.shape == (12, 64) and a.v_hyper.shape == (12, 4)
    assert a.item_text_trs.shape == (8, 64) and a.t_hyper.shape == (8, 4)


# ---- AMR and the regulariser -----------------------------------------------------------------------------


def test_zero_perturbation_changes_neither_the_loss_nor_the_weight_gradients(tiny):
    """Under AMR's clean pass (a zero perturbation that requires a gradient) the regulariser is
    evaluated a second time with the perturbation detached: same value, same weight gradients."""
    model = trained(make(tiny, reg_weight=0.5), tiny)
    batch = first_batch(tiny)
    params = list(model.parameters())
    clean = model.loss_terms(with_generator(batch, 3))
    zeros = {m: torch.zeros_like(t, requires_grad=True) for m, t in model.adversarial_inputs().items()}
    perturbed = model.loss_terms(with_generator(batch, 3), perturb=zeros)
    torch.testing.assert_close(perturbed.data, clean.data)
    torch.testing.assert_close(perturbed.regularizer, clean.regularizer)
    for a, b in zip(
        torch.autograd.grad(clean.total(), params),
        torch.autograd.grad(perturbed.total(), params, retain_graph=True),
    ):
        torch.testing.assert_close(a, b)
    grads = torch.autograd.grad(perturbed.regularizer, list(zeros.values()), allow_unused=True)
    assert all(g is None or not g.any() for g in grads)


def test_a_perturbation_moves_the_data_term(tiny):
    model = make(tiny, cl_weight=0.5)
    batch = first_batch(tiny)
    clean = model.loss_terms(with_generator(batch, 3))
    noise = {"image": torch.randn(tiny.features.image.shape, generator=torch.Generator().manual_seed(0))}
    moved = model.loss_terms(with_generator(batch, 3), perturb=noise)
    assert not torch.allclose(moved.data, clean.data)


def test_tables_and_adversarial_inputs(tiny):
    model = make(tiny)
    assert [(t.name, t.kind, t.rows) for t in model.embedding_tables()] == [
        ("user_embedding", "user", tiny.n_users),
        ("item_id_embedding", "item", tiny.n_items),
    ]
    inputs = model.adversarial_inputs()
    assert set(inputs) == {"image", "text"}
    assert inputs["image"] is model.image_feat and not inputs["image"].requires_grad


def test_with_features_changes_the_scores_and_leaves_the_original(tiny):
    assert LGMRec.reads_features_at_inference is True
    model = make(tiny)
    before = scores(model)
    image = torch.randn(tiny.features.image.shape, generator=torch.Generator().manual_seed(0))
    swapped = model.with_features(tiny.features.replace(image=image))
    assert not torch.allclose(scores(swapped), before)
    assert torch.equal(scores(model), before)


# ---- hyper-parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cf_model": "ngcf"}, "lgmrec: cf_model must be one of lightgcn, mf, got 'ngcf'"),
        ({"keep_rate": 0.0}, "lgmrec: keep_rate must be a number in (0, 1], got 0.0"),
        ({"keep_rate": 1.5}, "lgmrec: keep_rate must be a number in [0, 1], got 1.5"),
        ({"n_hyper_layer": 0}, "lgmrec: n_hyper_layer must be an integer >= 1, got 0"),
        ({"hyper_num": 0}, "lgmrec: hyper_num must be an integer >= 1, got 0"),
        ({"feat_embed_dim": 32}, "lgmrec: feat_embed_dim must equal embedding_size"),
    ],
)
def test_bad_hyperparameters_are_one_line_config_errors(tiny, params, message):
    with pytest.raises(ConfigError) as caught:
        make(tiny, **params)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


@pytest.mark.parametrize("missing", ["image", "text"])
def test_both_modalities_are_required(tiny, missing):
    dataset = tiny.with_features(tiny.features.replace(**{missing: None}))
    with pytest.raises(
        ConfigError, match=f"LGMRec needs image and text features; this dataset has no {missing}"
    ):
        make(dataset)


def test_boundary_values_are_accepted(tiny):
    model = make(tiny, n_ui_layers=0, n_mm_layers=0, keep_rate=1.0, alpha=0.0, cl_weight=0.0, reg_weight=0.0)
    assert torch.isfinite(model.loss(first_batch(tiny)))
    assert torch.isfinite(scores(model)).all()


# ---- real data ---------------------------------------------------------------------------------------------

ML100K_MMREC = Path(
    os.environ.get("ROBUSTREC_ML100K_MMREC", Path(__file__).resolve().parents[3] / "data" / "ml100k-mmrec")
)


@pytest.mark.slow
def test_trains_on_ml100k_mmrec(tmp_path):
    """LGMRec learns on the ml100k MMRec split with MMRec's setting (seed 999: valid R@20 about .30 after
    20 epochs; popularity's test R@20 is .1635)."""
    if not (ML100K_MMREC / "ml100k.inter").is_file():
        pytest.skip(f"no MMRec-format ml100k at {ML100K_MMREC} (set ROBUSTREC_ML100K_MMREC)")
    from robustrec.data.mmrec import load_dataset
    from robustrec.runs import RunSpec, TrainConfig
    from robustrec.training import train

    dataset = load_dataset(ML100K_MMREC)
    result = train(dataset, RunSpec("lgmrec", train=TrainConfig(epochs=20)), tmp_path / "run", progress=False)
    assert result.valid["recall@20"] > 0.27
