"""LGMRec (Guo et al., AAAI 2024, "LGMRec: Local and Global Graph Learning for Multimodal
Recommendation"), as MMRec's ``lgmrec.py`` runs it.

Every node (users first, then items) gets the sum of a local and a global representation:

- collaborative (CGE): LightGCN over the normalised user-item graph ``L = D^-1/2 A D^-1/2`` on the
  user and item-ID tables, the mean of ``E, L E, ..., L^n_ui_layers E`` (``cf_model="mf"``: ``E``);
- modal (MGE), per modality m: the items' projected raw features ``f_m W_m`` (a bare matrix, no
  bias), each user the mean of its items' rows, then ``n_mm_layers`` products with ``L`` (the last
  layer only, no mean);
- global (GHE), per modality: soft hyperedge assignments of the items, ``softmax((f_m H_m + g) / tau)``,
  and of the users, ``softmax((A f_m H_m + g') / tau)`` (A the binary user-item matrix: the user's
  logits are the SUM of its items'), with Gumbel noise ``g, g'`` (MMRec's ``F.gumbel_softmax``,
  ``hard=False``, ``tau = 0.2``) and, in training, dropout (``1 - keep_rate``) on both assignments.
  ``n_hyper_layer`` hypergraph layers on the CGE item rows ``X``: ``lat = S_i^T X``, ``X = S_i lat``;
  the users get ``S_u lat`` of the last layer;

    e = CGE + normalize(MGE_image) + normalize(MGE_text) + alpha * normalize(GHE_image + GHE_text)

(row-wise L2 normalisation) and the score is a dot product of the user and item rows. The loss is

    BPR(e_u, e_pos, e_neg) + cl_weight * (NCE(U_image, U_text, users) + NCE(I_image, I_text, pos))
    + reg_weight * (||e_users|| + ||e_pos|| + ||e_neg||) / B

where ``NCE(a, b, rows) = sum over the batch rows r of -log(exp(cos(a_r, b_r) / tau) / sum_j
exp(cos(a_r, b_j) / tau))`` (summed, not averaged, as MMRec's ``ssl_triple_loss``) contrasts a node's
image-side hypergraph embedding with the text-side embeddings of all users (or items), and the norms
are Frobenius norms of the batch's rows (MMRec's ``reg_loss``). The last line is the regulariser
(:class:`~robustrec.models.base.LossTerms`), the rest the data term.

The raw features are frozen in MMRec (``nn.Embedding.from_pretrained(..., freeze=True)``): there are
no learnable feature tables. The noise suite therefore targets the user and item-ID tables
(``user_embedding``, ``item_id_embedding``), and AMR perturbs the raw feature buffers, as for MMGCN
and GRCN. Scores read the raw features (projections and hyperedge assignments), so
``reads_features_at_inference`` is True and ``with_features`` changes them.

What MMRec draws, and when: every forward draws four Gumbel noise tensors (image items, image users,
text items, text users), then in training four dropout masks in the same order. Its forward runs for
every training batch AND at every evaluation (``full_sort_predict`` calls ``forward``; ``eval()``
switches dropout off, not the Gumbel noise), so its validation and test scores are random. Here a
batch draws its noise from ``batch.generator`` in that order; inference draws the same Gumbel noise
from a generator seeded with ``inference_seed`` at every call, so the scores are MMRec's kind of draw
but deterministic, and a clean and a perturbed evaluation (an audit) share the draw. How much the draw
matters, measured on ml100k-mm (MMRec's split, seed 999, the trained model of MMRec's setting): test
recall@20 .3604 +- .0011 over inference seeds 0-9 (.3587 to .3621), .3610 without Gumbel noise.

Departures from MMRec's code, none of which changes the maths unless said:

- both modalities are required: with one, MMRec's forward ends in a NameError; ``feat_embed_dim``
  must equal ``embedding_size`` (MMRec adds the two; other values fail there with a shape error) and
  ``n_hyper_layer >= 1`` (with 0, MMRec's hypergraph layer returns an undefined user output);
- each modality's projection and hyperedge logits are one product ``f [W | H]``, and the users' sums
  of their items' rows one sparse product for both modalities; MGE propagates both modalities side by
  side (graph products are CSR with a transposed backward, see ``graph.spmm``);
- the contrast is computed once per distinct user / item of the batch, weighted by its count, as
  ``log(sum exp) - positive`` rather than ``-log(exp / sum exp)`` (the same value);
- MMRec's regulariser reads the final embeddings, which depend on the features. When a perturbation
  that requires a gradient is given (AMR's clean pass), the regulariser is evaluated on a second pass
  with that perturbation detached (same noise, same value): it then sends no gradient to the
  features, as :class:`~robustrec.models.base.LossTerms` requires, and its weight gradient is the same;
- all randomness (initial values, Gumbel noise, dropout) comes from injected generators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.models.base import (
    FEATURE_ORDER,
    EmbeddingTable,
    LossTerms,
    Recommender,
    default_generator,
    perturbed,
    xavier_table,
)
from robustrec.models.graph import EPS, layer_mean, normalized_adjacency, sparse, spmm, to_csr
from robustrec.models.losses import bpr_loss, embedding_norm_loss

#: MMRec's ``self.tau``: the temperature of the Gumbel-softmax and of the hypergraph contrast (fixed).
TAU = 0.2
#: MMRec's names of each modality's projection ``W_m`` and hyperedge matrix ``H_m``.
MODAL_PARAMETERS = {"image": ("item_image_trs", "v_hyper"), "text": ("item_text_trs", "t_hyper")}
CF_MODELS = ("lightgcn", "mf")

#: One modality's (users, items) tensors.
Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class HyperNoise:
    """The randomness of one forward pass, by modality as (users, items): Gumbel noise of the hyperedge
    logits and, in training, the dropout keep-masks of the soft assignments (``None`` at inference or
    with ``keep_rate = 1``)."""

    gumbel: dict[str, Pair]
    keep: dict[str, Pair] | None


def gumbel_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Standard Gumbel samples ``-log(E)``, ``E ~ Exp(1)``, as ``F.gumbel_softmax`` draws them, but from
    ``generator`` (``F.gumbel_softmax`` only uses the global RNG)."""
    return -torch.empty(shape, device=device).exponential_(generator=generator).log()


def hyper_contrast(anchor: torch.Tensor, positive: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """MMRec's ``ssl_triple_loss(anchor[rows], positive[rows], positive)``: the InfoNCE loss, summed over
    ``rows``, of each row's anchor against its own positive view among the positive views of all
    nodes (cosine similarities over ``TAU``). Computed once per distinct row, weighted by its count."""
    distinct, counts = torch.unique(rows, return_counts=True)
    anchors = F.normalize(anchor.index_select(0, distinct)) / TAU  # (scaled here: [rows, d], not [rows, n])
    views = F.normalize(positive)
    own = (anchors * views.index_select(0, distinct)).sum(1)
    # log sum exp without the max shift, as MMRec: |cos| / tau <= 5, so exp cannot overflow
    total = (anchors @ views.T).exp().sum(1).log()
    return (counts.to(own.dtype) * (total - own)).sum()


class LGMRec(Recommender):
    name = "lgmrec"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        embedding_size: int = 64,
        feat_embed_dim: int = 64,
        cf_model: Literal["lightgcn", "mf"] = "lightgcn",
        n_ui_layers: int = 2,
        n_mm_layers: int = 2,
        n_hyper_layer: int = 1,
        hyper_num: int = 4,
        keep_rate: float = 0.5,
        alpha: float = 0.3,
        cl_weight: float = 1e-4,
        reg_weight: float = 1e-6,
        inference_seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        """``inference_seed`` seeds the Gumbel noise of every scoring pass (robustrec's; see above)."""
        embedding_size = checks.count(self.name, "embedding_size", embedding_size)
        feat_embed_dim = checks.count(self.name, "feat_embed_dim", feat_embed_dim)
        checks.choice(self.name, "cf_model", cf_model, CF_MODELS)
        n_ui_layers = checks.count(self.name, "n_ui_layers", n_ui_layers, minimum=0)
        n_mm_layers = checks.count(self.name, "n_mm_layers", n_mm_layers, minimum=0)
        n_hyper_layer = checks.count(self.name, "n_hyper_layer", n_hyper_layer)
        hyper_num = checks.count(self.name, "hyper_num", hyper_num)
        keep_rate = checks.fraction(self.name, "keep_rate", keep_rate)
        if keep_rate == 0.0:  # dropout would keep nothing (and divide by zero)
            raise ConfigError(f"{self.name}: keep_rate must be a number in (0, 1], got {keep_rate!r}")
        alpha = checks.non_negative(self.name, "alpha", alpha)
        cl_weight = checks.non_negative(self.name, "cl_weight", cl_weight)
        reg_weight = checks.non_negative(self.name, "reg_weight", reg_weight)
        inference_seed = checks.count(self.name, "inference_seed", inference_seed, minimum=0)
        if feat_embed_dim != embedding_size:
            raise ConfigError(
                f"{self.name}: feat_embed_dim must equal embedding_size (LGMRec adds the modal and the "
                f"collaborative embeddings), got {feat_embed_dim} and {embedding_size}"
            )
        missing = [m for m in FEATURE_ORDER if getattr(dataset.features, m) is None]
        if missing:
            raise ConfigError(
                f"LGMRec needs image and text features; this dataset has no {' or '.join(missing)}"
            )
        super().__init__(dataset)
        g = default_generator(generator)
        self.cf_model = cf_model
        self.feat_embed_dim = feat_embed_dim
        self.n_ui_layers = n_ui_layers
        self.n_mm_layers = n_mm_layers
        self.n_hyper_layer = n_hyper_layer
        self.hyper_num = hyper_num
        self.keep_rate = keep_rate
        self.alpha = alpha
        self.cl_weight = cl_weight
        self.reg_weight = reg_weight
        self.inference_seed = inference_seed
        self.modalities = FEATURE_ORDER
        self.register_features(dataset.features)
        self._register_graphs(dataset)

        # MMRec's initialisation order: user, item ID, then per modality projection and hyperedges
        self.user_embedding = xavier_table(self.n_users, embedding_size, g)
        self.item_id_embedding = xavier_table(self.n_items, embedding_size, g)
        for modality in self.modalities:
            width = getattr(dataset.features, modality).shape[1]
            projection, hyperedges = MODAL_PARAMETERS[modality]
            self.register_parameter(projection, xavier_table(width, feat_embed_dim, g))
            self.register_parameter(hyperedges, xavier_table(width, hyper_num, g))

    def _register_graphs(self, dataset: Dataset) -> None:
        """The normalised (users + items) graph ``L``, the binary user x item matrix ``A`` with its
        transpose, and ``1 / (deg(u) + 1e-7)`` (MMRec's ``num_inters``): non-persistent buffers."""
        matrix = dataset.train_matrix
        self.register_buffer("norm_adj", to_csr(normalized_adjacency(matrix)), persistent=False)
        coo = matrix.tocoo()
        index = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
        adj = sparse(index, torch.ones(index.shape[1]), (self.n_users, self.n_items))
        self.register_buffer("adj", to_csr(adj), persistent=False)
        self.register_buffer("adj_t", to_csr(adj.t()), persistent=False)
        degree = torch.bincount(index[0], minlength=self.n_users).to(torch.float32)
        self.register_buffer("inv_degree", (1.0 / (degree + EPS)).unsqueeze(1), persistent=False)

    # ---- randomness ---------------------------------------------------------------------------
    def draw_noise(self, generator: torch.Generator | None, training: bool) -> HyperNoise:
        """One forward pass's Gumbel noise and (``training``) dropout masks, drawn in MMRec's order:
        the noise of image items, image users, text items, text users, then the masks likewise."""
        device = self.device

        def per_modality(draw) -> dict[str, Pair]:
            out = {}
            for m in self.modalities:
                items = draw((self.n_items, self.hyper_num))
                out[m] = (draw((self.n_users, self.hyper_num)), items)
            return out

        gumbel = per_modality(lambda shape: gumbel_noise(shape, generator, device))
        keep = None
        if training and self.keep_rate < 1.0:
            drop = 1.0 - self.keep_rate  # as losses.dropout: an entry is kept when rand >= p
            keep = per_modality(lambda shape: torch.rand(shape, generator=generator, device=device) >= drop)
        return HyperNoise(gumbel, keep)

    # ---- representations ----------------------------------------------------------------------
    def _collaborative(self) -> torch.Tensor:
        """CGE: LightGCN's layer mean over ``L`` (no propagation for ``cf_model="mf"``)."""
        ego = torch.cat([self.user_embedding, self.item_id_embedding])
        return layer_mean(self.norm_adj, ego, self.n_ui_layers if self.cf_model == "lightgcn" else 0)

    def _modal_inputs(
        self, perturb: dict[str, torch.Tensor] | None
    ) -> tuple[dict[str, Pair], dict[str, Pair]]:
        """Per modality, (users, items) of the projected features (MMRec's ``user_feats``,
        ``item_feats``: a user's row is the mean of its items') and of the hyperedge logits (a user's
        row is the sum of its items')."""
        items = torch.cat(
            [
                perturbed(getattr(self, f"{m}_feat"), perturb, m)
                @ torch.cat([getattr(self, name) for name in MODAL_PARAMETERS[m]], dim=1)
                for m in self.modalities
            ],
            dim=1,
        )
        users = spmm(self.adj, items, self.adj_t)
        sizes = [self.feat_embed_dim, self.hyper_num] * len(self.modalities)
        user_parts, item_parts = users.split(sizes, dim=1), items.split(sizes, dim=1)
        features, logits = {}, {}
        for k, m in enumerate(self.modalities):
            features[m] = (user_parts[2 * k] * self.inv_degree, item_parts[2 * k])
            logits[m] = (user_parts[2 * k + 1], item_parts[2 * k + 1])
        return features, logits

    def _modal_graph(self, features: dict[str, Pair]) -> dict[str, torch.Tensor]:
        """MGE: each modality's (users + items) rows after ``n_mm_layers`` products with ``L``."""
        x = torch.cat(
            [
                torch.cat([features[m][0] for m in self.modalities], 1),
                torch.cat([features[m][1] for m in self.modalities], 1),
            ]
        )
        for _ in range(self.n_mm_layers):
            x = spmm(self.norm_adj, x)
        return dict(zip(self.modalities, x.split(self.feat_embed_dim, dim=1)))

    def _hypergraph(self, logits: Pair, gumbel: Pair, keep: Pair | None, items: torch.Tensor) -> Pair:
        """GHE of one modality: (users, items) hypergraph embeddings of the CGE item rows ``items``."""
        (u_logit, i_logit), (u_noise, i_noise) = logits, gumbel
        i_hyper = torch.softmax((i_logit + i_noise) / TAU, dim=1)
        u_hyper = torch.softmax((u_logit + u_noise) / TAU, dim=1)
        if keep is not None:
            u_keep, i_keep = keep
            i_hyper = i_hyper * i_keep / self.keep_rate
            u_hyper = u_hyper * u_keep / self.keep_rate
        for _ in range(self.n_hyper_layer):
            latent = i_hyper.T @ items
            items = i_hyper @ latent
        # (MMRec also computes the users in every layer; only the last one is returned)
        return u_hyper @ latent, items

    def _representation(
        self, cge: torch.Tensor, noise: HyperNoise, perturb: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, dict[str, Pair]]:
        """All node representations (users first) and each modality's (users, items) GHE."""
        features, logits = self._modal_inputs(perturb)
        mge = self._modal_graph(features)
        cge_items = cge[self.n_users :]
        hyper = {
            m: self._hypergraph(
                logits[m], noise.gumbel[m], None if noise.keep is None else noise.keep[m], cge_items
            )
            for m in self.modalities
        }
        local = cge + (F.normalize(mge["image"]) + F.normalize(mge["text"]))
        ghe = sum(torch.cat(hyper[m]) for m in self.modalities)
        return local + self.alpha * F.normalize(ghe), hyper

    # ---- protocol ---------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        noise = self.draw_noise(batch.generator, training=True)
        cge = self._collaborative()
        rep, hyper = self._representation(cge, noise, perturb)
        pos, neg = batch.pos_items + self.n_users, batch.neg_items + self.n_users
        bpr = bpr_loss(rep.index_select(0, batch.users), rep.index_select(0, pos), rep.index_select(0, neg))
        (u_image, i_image), (u_text, i_text) = hyper["image"], hyper["text"]
        contrast = hyper_contrast(u_image, u_text, batch.users) + hyper_contrast(
            i_image, i_text, batch.pos_items
        )
        if self.reg_weight > 0.0 and perturb and any(p.requires_grad for p in perturb.values()):
            # the regulariser penalises the weights: evaluate it with the perturbation as a constant
            rep, _ = self._representation(cge, noise, {m: p.detach() for m, p in perturb.items()})
        regularizer = embedding_norm_loss(
            rep.index_select(0, batch.users), rep.index_select(0, pos), rep.index_select(0, neg)
        )
        return LossTerms(bpr + self.cl_weight * contrast, self.reg_weight * regularizer)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """MMRec's ``full_sort_predict``: a forward without dropout, with Gumbel noise drawn afresh
        from ``inference_seed`` (so every call on the same weights and features gives the same scores)."""
        generator = torch.Generator(device=self.device).manual_seed(self.inference_seed)
        rep, _ = self._representation(self._collaborative(), self.draw_noise(generator, training=False), None)
        return rep[: self.n_users], rep[self.n_users :]

    def embedding_tables(self) -> list[EmbeddingTable]:
        """The ID tables: LGMRec has no learnable feature tables (MMRec freezes the raw features)."""
        return [
            EmbeddingTable("user_embedding", "user", 0, self.n_users),
            EmbeddingTable("item_id_embedding", "item", 0, self.n_items),
        ]

    def adversarial_inputs(self) -> dict[str, torch.Tensor]:
        """The raw feature buffers: the projections and hyperedge logits read them."""
        return {m: getattr(self, f"{m}_feat") for m in self.modalities}
