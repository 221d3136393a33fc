"""SLMRec (Tao et al., IEEE TMM 2022, "Self-supervised Learning for Multimedia Recommendation"), as MMRec's
``slmrec.py`` runs it: image and text features, the "FAC" (fine and coarse) self-supervised task.

Representations. The item features are scaled to unit rows once (MMRec normalises ``v_feat`` and
``t_feat`` at construction) and projected by a linear layer per modality (``{m}_dense``) to
``recdim``. Three views go through ``layer_num`` LightGCN layers (the mean of the layer outputs) on
the user-item graph, all three starting from the same user ID table: ``[U ; I]`` (IDs),
``[U ; V]`` (image) and ``[U ; T]`` (text). A user's (an item's) representation is a linear layer
(``user_fusion``, ``item_fusion``: MMRec's ``embedding_user_after_GCN`` / ``embedding_item_after_GCN``)
of its three propagated views side by side (``mm_fusion_mode = "concat"``); the score is their dot
product.

Loss, over the batch's (user, positive item) pairs only (MMRec's ``calculate_loss`` reads the users
and positives; the sampled negatives are not used, here as there):

    InfoNCE(norm(user), norm(item), temp) + ssl_alpha * FAC

where ``InfoNCE(a, b, t)`` is the cross-entropy of the ``B x B`` logits ``a b^T / t`` with the
diagonal as labels: the other rows of the batch are the negatives (a user or item that occurs twice
in a batch is its own negative, as in MMRec). FAC aligns, for the batch's positive items, the
propagated ID view with the image view and then, coarser, with the text view, through small linear
heads (MMRec's names; i = ID, v = image, a = audio, t = text; no normalisation here):

    InfoNCE(g_i_iv(i), g_v_iv(v), ssl_temp) + InfoNCE(g_iva_ivat(g_iv_iva(g_i_iv(i))), g_t_ivat(t), ssl_temp)

All of it reads the features, so it is the data term; SLMRec has no weight regulariser (MMRec
trains it with Adam's ``weight_decay 1e-4``, a trainer setting: ``--weight-decay 1e-4``).

Hyper-parameters keep MMRec's names and first values (SLMRec.yaml). Read but unused by MMRec's code,
kept so configurations carry over, checked, and unused here too: ``reg`` (no term reads it) and
``dropout_rate`` (only the FD task reads it). Other choices that MMRec's code cannot run are refused
with a one-line ConfigError: ``ssl_task`` other than "FAC" (its FD, FM and FD+FM paths read an audio
branch that it never builds), ``mm_fusion_mode = "mean"`` (the fusion
layers expect the concatenation) and ``init = "normal"`` (it initialises a table that does not exist).
``adj_type`` is MMRec's: "pre" D^-1/2 A D^-1/2 (default), "plain" A, "norm" D^-1 (A + I), "gcmc"
D^-1 A, "mean" D^-1 A + I, with A the (users + items) adjacency and D its row sums.

Datasets: with image and text features MMRec's default path runs. With image features only it runs
MMRec's "kwai" path (fusion of the ID and image views, FAC's first term only); MMRec chooses that
path by the dataset's name, here by the features present. Text alone is refused (MMRec has no such
path). MMRec's import of scikit-learn's KMeans (and of torch_scatter) is never used.

Departures from MMRec, none of which changes the maths:

- the three views are propagated as one ``recdim * 3`` wide matrix (graph products are CSR with a
  transposed backward, see ``graph.spmm``); the fusion layers, normalisation and FAC heads run once
  per distinct user or item of the batch, where MMRec fuses every user and item, then indexes;
- each InfoNCE is computed on the batch's distinct anchors x distinct positives, a positive that
  fills several columns counted by its multiplicity (:func:`in_batch_infonce`): the value of MMRec's
  ``B x B`` cross-entropy on a matrix about 7 times smaller on ml100k. Most of the speed-up (an
  epoch takes about 0.25x MMRec's) comes from here;
- the "pre" graph uses ``graph.normalized_adjacency`` (degrees + 1e-7 rather than 1e-8, which only
  guards against empty rows and changes no weight at float32 precision);
- scores are the dot products; MMRec passes them through a sigmoid, which keeps their order. MMRec
  scores with the representations cached by the last training batch, before that batch's optimizer
  step; here they are recomputed from the current weights and features at every ``scorer()`` call;
- initial values come from the injected generator, in MMRec's order of construction (its unused
  audio head ``g_a_iva``, and on image-only data its text heads, are not built).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.models.base import (
    EmbeddingTable,
    LossTerms,
    Recommender,
    default_generator,
    perturbed,
    seeded_linear,
    xavier_table,
)
from robustrec.models.graph import layer_mean, normalized_adjacency, sparse, to_csr

AdjType = Literal["pre", "plain", "norm", "gcmc", "mean"]
ADJ_TYPES: tuple[str, ...] = ("pre", "plain", "norm", "gcmc", "mean")
#: The graphs that are their own transpose.
SYMMETRIC_ADJ_TYPES = ("pre", "plain")


class SLMRec(Recommender):
    name = "slmrec"
    reads_features_at_inference = True

    def __init__(
        self,
        dataset: Dataset,
        *,
        recdim: int = 64,
        layer_num: int = 3,
        reg: float = 1e-4,
        ssl_task: Literal["FAC"] = "FAC",
        ssl_alpha: float = 0.01,
        ssl_temp: float = 0.1,
        dropout_rate: float = 0.3,
        mm_fusion_mode: Literal["concat"] = "concat",
        temp: float = 0.2,
        init: Literal["xavier"] = "xavier",
        adj_type: AdjType = "pre",
        generator: torch.Generator | None = None,
    ) -> None:
        recdim = checks.count(self.name, "recdim", recdim, minimum=2)  # the text heads have recdim // 2
        layer_num = checks.count(self.name, "layer_num", layer_num, minimum=0)
        checks.non_negative(self.name, "reg", reg)  # unused, as in MMRec
        _choice(self.name, "ssl_task", ssl_task, ("FAC",),
                "MMRec's FD and FM tasks read an audio branch it never builds")
        ssl_alpha = checks.non_negative(self.name, "ssl_alpha", ssl_alpha)
        ssl_temp = checks.positive(self.name, "ssl_temp", ssl_temp)
        checks.fraction(self.name, "dropout_rate", dropout_rate, below_one=True)  # FD only: unused
        _choice(self.name, "mm_fusion_mode", mm_fusion_mode, ("concat",),
                "MMRec's fusion layers take the concatenated views, so its 'mean' mode cannot run")
        temp = checks.positive(self.name, "temp", temp)
        _choice(self.name, "init", init, ("xavier",), "MMRec's 'normal' initialises a table it never builds")
        _choice(self.name, "adj_type", adj_type, ADJ_TYPES)
        super().__init__(dataset)
        if dataset.features.image is None:
            raise ConfigError("SLMRec needs image features (text is optional; MMRec has no text-only path)")
        g = default_generator(generator)
        self.recdim = recdim
        self.layer_num = layer_num
        self.ssl_alpha = ssl_alpha
        self.ssl_temp = ssl_temp
        self.temp = temp
        self.modalities = tuple(m for m in ("image", "text") if getattr(dataset.features, m) is not None)

        adj = slmrec_adjacency(dataset.train_matrix, adj_type)
        self.register_buffer("norm_adj", to_csr(adj), persistent=False)
        transpose = None if adj_type in SYMMETRIC_ADJ_TYPES else to_csr(adj.t())
        self.register_buffer("norm_adj_t", transpose, persistent=False)
        for modality in self.modalities:  # unit rows, as MMRec's v_feat / t_feat after its normalisation
            feat = getattr(dataset.features, modality).float()
            self.register_buffer(f"{modality}_feat", F.normalize(feat, dim=1), persistent=False)

        # MMRec's order of construction: ID tables, per-modality projections, fusion layers, FAC heads
        self.user_embedding = xavier_table(self.n_users, recdim, g)
        self.item_embedding = xavier_table(self.n_items, recdim, g)
        for modality in self.modalities:
            width = getattr(self, f"{modality}_feat").shape[1]
            self.add_module(f"{modality}_dense", self._linear(width, recdim, g))
        fused = recdim * (len(self.modalities) + 1)
        self.item_fusion = self._linear(fused, recdim, g)
        self.user_fusion = self._linear(fused, recdim, g)
        self.g_i_iv = self._linear(recdim, recdim, g)
        self.g_v_iv = self._linear(recdim, recdim, g)
        if "text" in self.modalities:
            self.g_iv_iva = self._linear(recdim, recdim, g)
            self.g_iva_ivat = self._linear(recdim, recdim // 2, g)
            self.g_t_ivat = self._linear(recdim, recdim // 2, g)

    @staticmethod
    def _linear(n_in: int, n_out: int, generator: torch.Generator) -> nn.Linear:
        """MMRec's layers: nn.Linear with its weight re-initialised Xavier-uniform."""
        return seeded_linear(n_in, n_out, generator, nn.init.xavier_uniform_)

    # ---- representations --------------------------------------------------------------------
    def _views(self, perturb: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The propagated views side by side: user and item rows of ``[ids | image | text]``.

        LightGCN is linear and column-wise, so propagating ``[U U U ; I V T]`` once gives MMRec's three
        separate propagations of ``[U ; I]``, ``[U ; V]`` and ``[U ; T]`` in its column blocks."""
        dense = [
            getattr(self, f"{m}_dense")(perturbed(getattr(self, f"{m}_feat"), perturb, m)) for m in self.modalities
        ]
        ego = torch.cat([
            self.user_embedding.repeat(1, len(dense) + 1),
            torch.cat([self.item_embedding, *dense], dim=1),
        ])
        out = layer_mean(self.norm_adj, ego, self.layer_num, self.norm_adj_t)
        return out[: self.n_users], out[self.n_users :]

    def _fac(self, item_views: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """FAC on the batch's items: ``item_views`` are their distinct rows, ``index`` the batch's order."""
        ids, image, *text = item_views.split(self.recdim, dim=1)
        x_i_iv = self.g_i_iv(ids)
        loss = in_batch_infonce(x_i_iv, index, self.g_v_iv(image), index, self.ssl_temp)
        if text:  # MMRec's audio term is commented out; the text head reads the ID head's output
            x_iva_ivat = self.g_iva_ivat(self.g_iv_iva(x_i_iv))
            loss = loss + in_batch_infonce(x_iva_ivat, index, self.g_t_ivat(text[0]), index, self.ssl_temp)
        return loss

    # ---- protocol ---------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        """InfoNCE of users against their positives plus ``ssl_alpha`` times FAC; no regulariser."""
        user_views, item_views = self._views(perturb)
        users, user_index = torch.unique(batch.users, return_inverse=True)
        items, item_index = torch.unique(batch.pos_items, return_inverse=True)
        item_views = item_views.index_select(0, items)
        user_rep = F.normalize(self.user_fusion(user_views.index_select(0, users)), dim=1)
        item_rep = F.normalize(self.item_fusion(item_views), dim=1)
        main = in_batch_infonce(user_rep, user_index, item_rep, item_index, self.temp)
        data = main + self.ssl_alpha * self._fac(item_views, item_index)
        return LossTerms(data, data.new_zeros(()))

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_views, item_views = self._views()
        return self.user_fusion(user_views), self.item_fusion(item_views)

    def embedding_tables(self) -> list[EmbeddingTable]:
        return [
            EmbeddingTable("user_embedding", "user", 0, self.n_users),
            EmbeddingTable("item_embedding", "item", 0, self.n_items),
        ]

    def adversarial_inputs(self) -> dict[str, torch.Tensor]:
        """The unit-row features that the projections read (MMRec's normalised ``v_feat`` / ``t_feat``)."""
        return {m: getattr(self, f"{m}_feat") for m in self.modalities}


def in_batch_infonce(
    anchors: torch.Tensor, anchor_index: torch.Tensor, positives: torch.Tensor, positive_index: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """MMRec's in-batch InfoNCE, computed on distinct rows.

    MMRec takes the batch's ``B`` anchor rows ``a_b`` and positive rows ``p_b`` and the cross-entropy
    of the ``B x B`` logits ``a_b . p_c / temperature`` with the diagonal as labels. Here ``anchors``
    and ``positives`` hold each distinct row once and ``anchor_index`` / ``positive_index`` map the
    batch's rows to them. Row b's log-sum-exp over the batch's columns depends on its anchor only, and
    a positive that fills ``n_j`` columns adds ``n_j exp(s_j)``, i.e. ``exp(s_j + log n_j)``:

        loss = (sum over distinct anchors i of m_i lse_i - sum_b s(a_b, p_b)) / B,
        lse_i = logsumexp_j (a_i . p_j / temperature + log n_j)

    with ``m_i`` the anchor's count: the same value as MMRec's, on a matrix of distinct anchors x
    distinct positives (on ml100k about 770 x 770 rather than 2048 x 2048 per batch).
    """
    scaled = anchors / temperature
    anchor_count = torch.bincount(anchor_index, minlength=len(anchors)).to(scaled.dtype)
    positive_count = torch.bincount(positive_index, minlength=len(positives)).to(scaled.dtype)
    lse = torch.logsumexp(scaled @ positives.T + positive_count.log(), dim=1)
    matched = torch.linalg.vecdot(scaled.index_select(0, anchor_index), positives.index_select(0, positive_index))
    return ((anchor_count * lse).sum() - matched.sum()) / len(anchor_index)


def slmrec_adjacency(train_matrix: sp.csr_matrix, adj_type: str) -> torch.Tensor:
    """MMRec's ``create_adj_mat``: the (users + items) square graph of the training pairs, normalised by
    ``adj_type`` (see the module docstring), as a sparse COO tensor."""
    if adj_type == "pre":
        return normalized_adjacency(train_matrix)
    ui = sp.csr_matrix(train_matrix, dtype=np.float32)
    adj = sp.bmat([[None, ui], [ui.T, None]], format="csr")
    identity = sp.eye(adj.shape[0], dtype=np.float32, format="csr")
    matrix = {
        "plain": lambda: adj,
        "norm": lambda: _row_normalised(adj + identity),
        "gcmc": lambda: _row_normalised(adj),
        "mean": lambda: _row_normalised(adj) + identity,
    }[adj_type]().tocoo()
    index = torch.from_numpy(np.stack([matrix.row, matrix.col]).astype(np.int64))
    return sparse(index, torch.from_numpy(matrix.data.astype(np.float32)), matrix.shape)


def _row_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """D^-1 M with D the row sums (an empty row stays empty, as MMRec's inf -> 0)."""
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    inverse = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums != 0)
    return (sp.diags(inverse.astype(np.float32)) @ matrix).tocsr()


def _choice(owner: str, name: str, value: Any, supported: tuple[str, ...], why: str = "") -> str:
    """``value`` when it is one of ``supported``, else a one-line ConfigError naming them (and ``why``)."""
    if isinstance(value, str) and value in supported:
        return value
    reason = f" ({why})" if why else ""
    raise ConfigError(f"{owner}: {name} must be one of {', '.join(map(repr, supported))}, got {value!r}{reason}")
