"""The model protocol every recommender implements.

A model is built from a :class:`~robustrec.data.Dataset` plus explicit, typed keyword
hyper-parameters. It exposes:

- :meth:`Recommender.loss` -- the training loss of one prepared batch, the one loss the trainer and
  every strategy minimise. Subclasses implement :meth:`Recommender.loss_terms` instead, which returns
  it as a data term and a weight regulariser (:class:`LossTerms`), so that AMR can count the
  regulariser once, as the paper does, while perturbing the data term;
- :meth:`Recommender.scorer` -- scores of a block of users over all items (inference);
- :meth:`Recommender.embedding_tables` -- the named learnable embedding tables that the noise
  perturbation targets;
- :meth:`Recommender.adversarial_inputs` -- the item-feature tensors its loss reads, which AMR perturbs;
- :meth:`Recommender.with_features` -- an independent copy using other item features, with every
  feature-derived structure (kNN graphs, ...) rebuilt from them.

Only learnable tensors are persistent state; graphs and features are non-persistent buffers rebuilt
from the dataset, so checkpoints hold weights only.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from robustrec.data.dataset import Dataset, ItemFeatures
from robustrec.data.sampling import Batch

Scorer = Callable[[torch.Tensor], torch.Tensor]

#: ``__init__`` arguments that are not hyper-parameters (the generator only seeds the initial values).
_NOT_HPARAMS = ("self", "dataset", "generator")


@dataclass(frozen=True)
class EmbeddingTable:
    """A learnable embedding table: ``rows`` rows of parameter ``name`` starting at ``offset``."""

    name: str
    kind: Literal["item", "user", "feature"]
    offset: int
    rows: int


@dataclass(frozen=True)
class LossTerms:
    """A model's training loss of one batch, in two parts.

    ``data`` is the recommendation loss: every term that learns from the item features (BPR, BM3's
    contrastive terms, FREEDOM's feature BPR). ``regularizer`` is the penalty on the weights (MMRec's
    norm terms, possibly on the batch's rows), a zero tensor for a model without one. It sends no
    gradient to the features: VBPR's reads them, through the norms of its item rows ``[q_i ; W f_i]``,
    but its gradient stops there, since the features are data, not weights. So AMR's perturbation,
    taken along the gradient of the loss with respect to the features, is that of the data term.
    The training loss is the sum of both (:meth:`Recommender.loss`).
    """

    data: torch.Tensor
    regularizer: torch.Tensor

    def total(self) -> torch.Tensor:
        return self.data + self.regularizer


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


def seeded_linear(
    in_features: int,
    out_features: int,
    generator: torch.Generator,
    weight_init: Callable[..., torch.Tensor] | None = None,
) -> nn.Linear:
    """An ``nn.Linear`` initialised from ``generator`` alone (the global RNG is not touched).

    Weight and bias follow PyTorch's default (both U(-1/sqrt(in), 1/sqrt(in))), unless ``weight_init``
    (e.g. ``nn.init.xavier_normal_``, called with ``generator=``) initialises the weight.
    """
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features)
    if weight_init is None:
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    else:
        weight_init(layer.weight, generator=generator)
    bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def xavier_table(rows: int, cols: int, generator: torch.Generator) -> nn.Parameter:
    """A ``rows x cols`` embedding table initialised Xavier-uniform from ``generator`` (MMRec's usual
    ``nn.init.xavier_uniform_`` on an ``nn.Embedding`` weight or a bare parameter)."""
    table = nn.Parameter(torch.empty(rows, cols))
    nn.init.xavier_uniform_(table, generator=generator)
    return table


def perturbed(tensor: torch.Tensor, perturb: dict[str, torch.Tensor] | None, key: str) -> torch.Tensor:
    """``tensor + perturb[key]`` when a perturbation for ``key`` is given (AMR), else ``tensor``."""
    if perturb and key in perturb:
        return tensor + perturb[key]
    return tensor


class Recommender(nn.Module):
    """Base class. Subclasses define ``name`` and implement ``loss_terms`` and ``inference_embeddings``,
    and check their hyper-parameters (:mod:`robustrec.checks`) before building anything."""

    name: ClassVar[str] = ""
    #: True when the scores depend on the raw item features at inference time.
    reads_features_at_inference: ClassVar[bool] = False
    #: False for models without learnable parameters (popularity): the trainer only evaluates them.
    trainable: ClassVar[bool] = True

    hparams: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Record each model's keyword hyper-parameters so copies can be rebuilt exactly.

        Every class in the chain that defines ``__init__`` records its own bound arguments, defaults
        included (a ``**kwargs`` parameter is flattened), after its body has run; the base classes'
        records come first and the subclass's own values win. So ``class MyVBPR(VBPR): pass`` records
        VBPR's hyper-parameters, and a subclass that fixes one of them in its ``super().__init__`` call
        records the value it fixed. :meth:`Recommender.copy_with` passes back what ``type(self)``
        accepts.
        """
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, dataset, *args, **kw):
            init(self, dataset, *args, **kw)
            bound = signature.bind(self, dataset, *args, **kw)
            bound.apply_defaults()
            recorded: dict[str, Any] = {}
            for name, value in bound.arguments.items():
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    recorded.update({k: v for k, v in value.items() if k != "generator"})
                elif kind is not inspect.Parameter.VAR_POSITIONAL and name not in _NOT_HPARAMS:
                    recorded[name] = value
            self.hparams = {**self.hparams, **recorded}

        cls.__init__ = recording_init

    def __init__(self, dataset: Dataset) -> None:
        super().__init__()
        self.dataset = dataset
        self.n_users = dataset.n_users
        self.n_items = dataset.n_items
        self.hparams = {}
        #: What the model built and from where, for run.json, e.g. ``{"user_graph": "read from ..."}``.
        self.derived: dict[str, str] = {}

    # ---- what subclasses implement ---------------------------------------------------------
    def loss_terms(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> LossTerms:
        """The training loss of ``batch`` as its data term and its regulariser. ``perturb`` maps a
        modality to an additive perturbation of the feature tensor named by
        :meth:`adversarial_inputs` (used by AMR); it moves the data term only."""
        raise NotImplementedError

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item representations whose dot products are the scores."""
        raise NotImplementedError

    def embedding_tables(self) -> list[EmbeddingTable]:
        """The learnable embedding tables (user, item, learnable feature tables)."""
        return []

    def adversarial_inputs(self) -> dict[str, torch.Tensor]:
        """The item-feature tensors the loss reads, by modality; AMR perturbs these."""
        return {}

    def pre_epoch(self, generator: torch.Generator | None) -> None:
        """Called once before each training epoch (e.g. FREEDOM samples its pruned graph)."""

    # ---- provided ----------------------------------------------------------------------------
    def loss(self, batch: Batch, perturb: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The training loss of ``batch``: data term plus regulariser (see :meth:`loss_terms`)."""
        return self.loss_terms(batch, perturb).total()

    @property
    def features(self) -> ItemFeatures:
        return self.dataset.features

    @property
    def device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")

    @torch.no_grad()
    def scorer(self) -> Scorer:
        """Compute the representations once; return a function scoring a block of users."""
        users, items = self.inference_embeddings()
        items_t = items.T.contiguous()
        return lambda block: users[block] @ items_t

    def item_tables(self) -> list[EmbeddingTable]:
        return [t for t in self.embedding_tables() if t.kind == "item"]

    def copy_with(self, dataset: Dataset | None = None) -> Recommender:
        """An independent copy (own weights) built on ``dataset`` (default: the same one)."""
        clone = type(self)(dataset if dataset is not None else self.dataset, **self.init_hparams())
        clone.load_state_dict(self.state_dict())
        return clone.to(self.device).train(self.training)

    def init_hparams(self) -> dict[str, Any]:
        """The recorded hyper-parameters that ``type(self)(dataset, ...)`` accepts (all of them when
        its ``__init__`` takes ``**kwargs``): what rebuilds this model."""
        parameters = inspect.signature(type(self).__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return dict(self.hparams)
        return {k: v for k, v in self.hparams.items() if k in parameters}

    def weights_copy(self, names: Collection[str] | None = None) -> Recommender:
        """A cheap copy with its own copy of the parameters in ``names`` (default: all of them).

        Every other tensor (the remaining parameters, buffers such as graphs and features) is shared
        with this model, so the copy is for inference: buffers are never modified in place (models
        re-assign them). This is what a weight perturbation needs without rebuilding graphs."""
        return _weights_copy(self, None if names is None else set(names))

    def with_features(self, features: ItemFeatures) -> Recommender:
        """A copy that uses ``features``; graphs derived from features are rebuilt from them."""
        return self.copy_with(self.dataset.with_features(features))

    def register_features(self, features: ItemFeatures) -> None:
        """Keep the raw features as non-persistent buffers so ``.to(device)`` moves them."""
        for name in ("image", "text"):
            value = getattr(features, name)
            self.register_buffer(f"{name}_feat", value, persistent=False)


#: MMRec's order of the modalities where a model keeps one table each (image first).
FEATURE_ORDER = ("image", "text")


class IDEmbeddingModel(Recommender):
    """Models with a user and an item ID embedding table, ``user_embedding`` and ``item_embedding``
    (MMRec draws users first). The noise suite targets both (:meth:`embedding_tables`)."""

    user_embedding: nn.Parameter
    item_embedding: nn.Parameter

    def init_id_embeddings(
        self, size: int, generator: torch.Generator, init: Callable[..., torch.Tensor] = nn.init.xavier_uniform_
    ) -> None:
        """``user_embedding`` then ``item_embedding``, each ``init`` from ``generator``."""
        self.user_embedding = nn.Parameter(init(torch.empty(self.n_users, size), generator=generator))
        self.item_embedding = nn.Parameter(init(torch.empty(self.n_items, size), generator=generator))

    def ego_rows(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's rows of the ID tables (users, positives, negatives): what MMRec often regularises."""
        return (
            self.user_embedding.index_select(0, batch.users),
            self.item_embedding.index_select(0, batch.pos_items),
            self.item_embedding.index_select(0, batch.neg_items),
        )

    def embedding_tables(self) -> list[EmbeddingTable]:
        return [
            EmbeddingTable("user_embedding", "user", 0, self.n_users),
            EmbeddingTable("item_embedding", "item", 0, self.n_items),
        ]


class GeneralRecommender(IDEmbeddingModel):
    """A model of user and item ID embeddings only (MMRec's "general" models: BPR, LightGCN, LayerGCN,
    SelfCF): it reads no item features, so it trains on a dataset without any, exposes nothing for AMR
    to perturb, and the feature and caption suites refuse it."""

    reads_features_at_inference = False

    def adversarial_inputs(self) -> dict[str, torch.Tensor]:
        return {}


class FeatureTableModel(IDEmbeddingModel):
    """Models with ID embeddings and learnable item-feature tables (BM3, FREEDOM, LATTICE, MGCN, ...).

    Per present modality ``m`` the model holds a parameter ``{m}_embedding``: a copy of the raw
    features that training moves (MMRec's ``nn.Embedding.from_pretrained(feat, freeze=False)``),
    and usually a linear projection ``{m}_trs`` of it. The noise suite targets the ID and the feature
    tables (:meth:`embedding_tables`); AMR perturbs the feature tables (:meth:`adversarial_inputs`),
    which :meth:`feature_table` adds when given.
    """

    modalities: tuple[str, ...]

    def init_feature_tables(
        self,
        dataset: Dataset,
        generator: torch.Generator,
        project_to: int | None = None,
        weight_init: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        """One learnable table per present modality (image first), each followed by its projection
        ``{m}_trs`` to ``project_to`` columns when that is given (``seeded_linear``, ``weight_init``
        for the weight). Sets ``self.modalities``."""
        self.modalities = tuple(m for m in FEATURE_ORDER if getattr(dataset.features, m) is not None)
        for modality in self.modalities:
            feat = getattr(dataset.features, modality)
            self.register_parameter(f"{modality}_embedding", nn.Parameter(feat.detach().clone().float()))
            if project_to is not None:
                self.add_module(
                    f"{modality}_trs", seeded_linear(feat.shape[1], project_to, generator, weight_init)
                )

    def feature_table(self, modality: str, perturb: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The learnable table of ``modality``, plus AMR's perturbation of it when one is given."""
        return perturbed(getattr(self, f"{modality}_embedding"), perturb, modality)

    def projected_features(
        self, modality: str, perturb: dict[str, torch.Tensor] | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``{m}_trs`` of the table (only of ``rows`` when given: same values, less work)."""
        table = self.feature_table(modality, perturb)
        if rows is not None:
            table = table.index_select(0, rows)
        return getattr(self, f"{modality}_trs")(table)

    def embedding_tables(self) -> list[EmbeddingTable]:
        features = [EmbeddingTable(f"{m}_embedding", "feature", 0, self.n_items) for m in self.modalities]
        return super().embedding_tables() + features

    def adversarial_inputs(self) -> dict[str, torch.Tensor]:
        """The learnable feature tables (initialised from the raw features) that the loss reads."""
        return {m: getattr(self, f"{m}_embedding") for m in self.modalities}


class BranchedGraphModel(Recommender):
    """MMGCN/GRCN-style models: ``representation()`` is one ``[(n_users + n_items), d]`` matrix (users
    first) built from a joint ``id_embedding`` table and one branch per modality in ``branches``, each
    with a user ``preference`` table; scores are dot products of its user and item rows."""

    branches: nn.ModuleDict
    id_embedding: nn.Parameter

    def representation(self, perturb: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        rep = self.representation()
        return rep[: self.n_users], rep[self.n_users :]

    def embedding_tables(self) -> list[EmbeddingTable]:
        return [
            EmbeddingTable("id_embedding", "user", 0, self.n_users),
            EmbeddingTable("id_embedding", "item", self.n_users, self.n_items),
            *(EmbeddingTable(f"branches.{m}.preference", "user", 0, self.n_users) for m in self.branches),
        ]

    def adversarial_inputs(self) -> dict[str, torch.Tensor]:
        return {m: getattr(self, f"{m}_feat") for m in self.branches}


def _weights_copy(module: nn.Module, names: set[str] | None, prefix: str = "") -> nn.Module:
    clone = copy.copy(module)
    clone._parameters = {
        name: p if p is None or (names is not None and prefix + name not in names)
        else nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
        for name, p in module._parameters.items()
    }
    clone._buffers = dict(module._buffers)
    clone._modules = {
        name: None if m is None else _weights_copy(m, names, f"{prefix}{name}.")
        for name, m in module._modules.items()
    }
    return clone
