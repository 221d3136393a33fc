"""Caption insertion (the paper's "information adjustment", Table 5).

Each item's text, with probability p, gets a caption of its own image inserted (appended by default;
prepend or a random word position as options), and the captioned texts are re-encoded with the same
text encoder as the dataset's text features. Only captioned items are re-encoded (and a re-encoded
text is remembered across repeats); the model is handed the new features through
:meth:`Recommender.with_features`, which rebuilds every feature-derived structure.

Only items with a readable image can be drawn. Items without one are counted in each record's
details: ``items_without_image`` (no image, or no file at its path) and ``items_unreadable_image``
(a file that cannot be decoded: not an image, truncated, over the pixel limit), the same rule as
``robustrec ingest``'s. Per repeat the details also hold ``drawn_items`` (drawn and eligible),
``captioned_items`` (of those, the ones that got a caption) and ``changed_items`` (of those, the
ones whose re-encoded vector differs from the clean one: MiniLM reads 256 tokens, so a caption
appended to a long text may change nothing; those keep their clean vector exactly).

Before any evaluation, :meth:`CaptionInsertion.check` refuses a dataset whose ``items.jsonl`` names
images outside its folder (or the ``--images`` folder; :mod:`robustrec.data.mmrec` never hands such
a path out): captioning them would read, and write captions of, arbitrary files. It also re-encodes a
fixed sample of clean texts and compares them with the stored text features (once per dataset and
encoder): features made from other texts, by another template or encoder, would make the audit
measure that difference instead of the caption, so the suite refuses them.

The paper used BLIP-2 captions at p = 0.01; on small datasets that changes a handful of items, so
sweep p (REFERENCES.md).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from perturbations.base import PERTURBATIONS, CaptionSource, Perturbation, PerturbedView, SuiteContext
from perturbations.features import check_reads_features
from robustrec.data.dataset import Dataset
from robustrec.errors import ConfigError, DataError
from robustrec.media.images import check_image
from robustrec.models.base import Recommender

logger = logging.getLogger("robustrec")

Position = Literal["append", "prepend", "random"]
POSITIONS = ("append", "prepend", "random")

#: Clean texts re-encoded by the check: enough for a stable mean, cheap next to one evaluation
#: (32 MiniLM encodings take a second or two on 2 CPU cores).
CLEAN_CHECK_ITEMS = 32
CLEAN_CHECK_SEED = 0
#: Refuse features whose mean cosine with the re-encoded clean texts is below this. Measured with
#: MiniLM on ml100k-mm (features from ../shared/tools/ml100k_to_mmrec.py, and from robustrec ingest):
#: 1.0 to float precision (largest difference 1.5e-7, from batch composition). Texts built by another
#: template gave 0.72 (title and genres only) and 0.95 (the same fields reordered); a five-word phrase
#: appended to every text gave 0.98. So 0.99 refuses each of those and leaves room for float noise.
MIN_MEAN_COSINE = 0.99
#: A re-encoded vector counts as changed when ||new - clean|| > this * ||clean||. Re-encoding the
#: same text moves MiniLM vectors by at most ~2e-7 relative; one caption word inside the 256-token
#: window moved them by 0.02 or more (measured on ml100k-mm's longest texts).
CHANGE_TOLERANCE = 1e-4


def caption_source(captioner: Any, cache: Any, dataset: Dataset, progress: bool = False) -> CaptionSource:
    """Captions of ``dataset``'s items by index, from ``captioner`` through a
    :class:`captioning.CaptionCache` (each image is captioned once; the cache survives runs). An
    item whose image the captioner cannot read gets no entry. ``progress`` counts captioned images."""
    from captioning import cached_caption_items

    def source(ids: Sequence[int]) -> dict[int, str]:
        assert dataset.items is not None
        items = [(dataset.items[i].orig_id, dataset.items[i].image) for i in ids]
        captions = cached_caption_items(captioner, items, cache, progress=progress)
        return {i: captions[dataset.items[i].orig_id] for i in ids if dataset.items[i].orig_id in captions}

    return source


def insert_caption(text: str, caption: str, position: str, generator: torch.Generator | None = None) -> str:
    """``text`` with ``caption`` inserted: appended, prepended or at a random word boundary."""
    text, caption = text.strip(), caption.strip()
    if not caption:
        return text
    if position == "append":
        return f"{text} {caption}".strip()
    if position == "prepend":
        return f"{caption} {text}".strip()
    words = text.split()
    at = int(torch.randint(len(words) + 1, (1,), generator=generator))
    return " ".join(words[:at] + [caption] + words[at:])


# ---- per-dataset preparation, done once: which images can be read, do the features match -----------------
@dataclass(frozen=True)
class ImageStatus:
    """Which items can be drawn: those whose image file exists and can be read."""

    readable: np.ndarray
    without_image: int
    unreadable: int


_image_status: weakref.WeakKeyDictionary[Dataset, ImageStatus] = weakref.WeakKeyDictionary()
_clean_checks: weakref.WeakKeyDictionary[Dataset, dict[str, float]] = weakref.WeakKeyDictionary()


def image_status(dataset: Dataset) -> ImageStatus:
    """Every item's image checked with :func:`robustrec.media.images.check_image` (once per dataset;
    JPEGs are decoded at reduced scale, so this costs well under a millisecond per poster)."""
    if dataset not in _image_status:
        assert dataset.items is not None
        readable = np.zeros(dataset.n_items, dtype=bool)
        problems: list[str] = []
        without = 0
        for i, info in enumerate(dataset.items):
            if info.image is None or not info.image.is_file():
                without += 1
                continue
            problem = check_image(info.image)
            readable[i] = problem is None
            if problem is not None:
                problems.append(problem)
        if problems:
            logger.warning(f"caption suite: {len(problems)} item image(s) cannot be read and are treated as "
                           f"missing, e.g. {problems[0]}")
        _image_status[dataset] = ImageStatus(readable, without, len(problems))
    return _image_status[dataset]


def check_image_paths(dataset: Dataset) -> None:
    """DataError when ``items.jsonl`` names an image outside the dataset (and ``--images``) folder."""
    outside = dataset.summary.get("images_outside", 0)
    if outside:
        raise DataError(
            f"{dataset.summary['images_outside_first']} ({outside} such item(s)): the caption suite refuses a "
            "dataset whose image paths leave its folder; re-create it with robustrec ingest (which copies the "
            "images into it), or pass --images with the folder that holds them"
        )


def clean_sample(dataset: Dataset) -> np.ndarray:
    """The items whose clean texts the check re-encodes: a fixed seeded sample (sorted) of up to
    :data:`CLEAN_CHECK_ITEMS` items with text (all items when none has any)."""
    assert dataset.items is not None
    with_text = np.array([i for i, info in enumerate(dataset.items) if info.text.strip()], dtype=np.int64)
    candidates = with_text if len(with_text) else np.arange(dataset.n_items)
    rng = np.random.default_rng(CLEAN_CHECK_SEED)  # its own seed: the audit's draws are untouched
    return np.sort(rng.choice(candidates, size=min(CLEAN_CHECK_ITEMS, len(candidates)), replace=False))


def check_clean_texts(dataset: Dataset, encoder: Any) -> float:
    """The mean cosine between re-encoded clean texts and the stored text features (see the module
    docstring); DataError below :data:`MIN_MEAN_COSINE` or when the widths differ. Once per
    (dataset, encoder spec)."""
    done = _clean_checks.setdefault(dataset, {})
    key = _encoder_key(encoder)
    if key in done:
        return done[key]
    assert dataset.items is not None and dataset.features.text is not None
    sample = clean_sample(dataset)
    vectors = np.asarray(encoder.encode([dataset.items[i].text for i in sample]), dtype=np.float32)
    stored = dataset.features.text[torch.from_numpy(sample)].detach().cpu().numpy().astype(np.float32)
    if vectors.shape[1] != stored.shape[1]:
        raise DataError(
            f"the text encoder gives {vectors.shape[1]}-d vectors but the dataset's text features are "
            f"{stored.shape[1]}-d: re-encode with the encoder that made them"
        )
    cosines = _cosines(vectors, stored)
    mean = float(cosines.mean())
    if mean < MIN_MEAN_COSINE:
        worst = int(np.argmin(cosines))
        raise DataError(
            f"dataset {dataset.name!r}: mean cosine {mean:.4f} between re-encoded clean texts and the stored "
            f"text features ({len(sample)} items; lowest {cosines[worst]:.4f} at item {int(sample[worst])}; "
            f"at least {MIN_MEAN_COSINE} needed): the audit would measure the template change, not the caption. "
            "Make items.jsonl and the features with the same texts and encoder (robustrec ingest does)"
        )
    done[key] = mean
    return mean


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; two zero rows (e.g. an empty text under the hashing encoder) count as equal."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    return np.where(both_zero, 1.0, (a * b).sum(axis=1) / np.maximum(norms, 1e-30))


def _encoder_key(encoder: Any) -> str:
    spec = getattr(encoder, "spec", None)
    if callable(spec):
        return json.dumps(spec(), sort_keys=True, default=str)
    return f"{type(encoder).__qualname__}@{id(encoder)}"  # a test double without a spec


def _changed(new: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Rows of ``new`` that differ from ``clean`` beyond float noise (:data:`CHANGE_TOLERANCE`)."""
    distance = torch.linalg.vector_norm(new - clean, dim=1)
    return distance > CHANGE_TOLERANCE * torch.linalg.vector_norm(clean, dim=1)


@PERTURBATIONS.register("caption")
class CaptionInsertion(Perturbation):
    """Its one option is ``position``. The caption source and the text encoder are objects, not
    options: the audit hands them over through :meth:`prepare`, direct callers through :meth:`use`."""

    name = "caption"
    severity_name = "prob"
    default_severity: ClassVar[float] = 0.01
    summary = "image captions inserted into item text with probability p, re-encoded (paper Table 5)"

    def __init__(self, severity: float = 0.01, position: Position = "append") -> None:
        super().__init__(severity)
        if not 0.0 <= self.severity <= 1.0:
            raise ConfigError(f"caption probability must be in [0, 1], got {severity}")
        if position not in POSITIONS:
            raise ConfigError(f"caption position must be one of {', '.join(POSITIONS)}, got {position!r}")
        self.position = position
        self.captions: CaptionSource | None = None
        self.text_encoder: Any = None
        self._encoded: dict[str, np.ndarray] = {}

    def use(self, captions: CaptionSource, text_encoder: Any = None) -> CaptionInsertion:
        """Caption items with ``captions`` and re-encode texts with ``text_encoder`` (default: the
        encoder the dataset's text features were made with); returns ``self``."""
        self.captions = captions
        self.text_encoder = text_encoder
        return self

    def prepare(self, context: SuiteContext) -> CaptionInsertion:
        return self.use(context.caption_source(), context.text_encoder)

    def check(self, model: Recommender, dataset: Dataset) -> None:
        """Refuse what the suite cannot measure, before any evaluation: models that ignore features,
        datasets without item texts or text features, image paths that leave the dataset folder,
        and features the clean texts do not re-encode to. Also checks which item images can be read
        (both checks run once per dataset)."""
        if self.captions is None:
            raise ConfigError("the caption suite needs a caption source (a captioner or a captions file)")
        check_reads_features(model, self.name)
        if dataset.items is None:
            raise DataError(f"dataset {dataset.name!r} has no items.jsonl: the caption suite needs item texts and images")
        if dataset.features.text is None:
            raise DataError(f"dataset {dataset.name!r} has no text features to re-encode")
        check_image_paths(dataset)
        check_clean_texts(dataset, self._encoder(dataset))
        image_status(dataset)

    @staticmethod
    def eligible(dataset: Dataset) -> np.ndarray:
        """Boolean mask of items with a readable image (only those can be drawn)."""
        return image_status(dataset).readable

    def _encoder(self, dataset: Dataset):
        if self.text_encoder is None:
            from robustrec.data.encoders import text_encoder_for

            self.text_encoder = text_encoder_for(dataset)
        return self.text_encoder

    def encode(self, texts: list[str], dataset: Dataset) -> np.ndarray:
        """Encode ``texts``, calling the encoder only for texts not encoded before."""
        todo = sorted({t for t in texts if t not in self._encoded})
        if todo:
            vectors = np.asarray(self._encoder(dataset).encode(todo), dtype=np.float32)
            self._encoded.update(zip(todo, vectors))
        return np.stack([self._encoded[t] for t in texts])

    def apply(self, model: Recommender, dataset: Dataset, generator: torch.Generator) -> PerturbedView:
        self.check(model, dataset)
        status = image_status(dataset)
        draws = (torch.rand(dataset.n_items, generator=generator) < self.severity).numpy() & status.readable
        drawn = np.flatnonzero(draws).tolist()
        details: dict[str, Any] = {
            "position": self.position,
            "drawn_items": len(drawn),
            "captioned_items": 0,
            "changed_items": 0,
            "items_without_image": status.without_image,
            "items_unreadable_image": status.unreadable,
            "changed_item_ids": [],
        }
        if not drawn:
            return PerturbedView(model, dataset, details)
        assert self.captions is not None  # check() refuses a suite without one
        captions = self.captions(drawn)
        captioned = [i for i in drawn if captions.get(i, "").strip()]
        details["captioned_items"] = len(captioned)
        if not captioned:
            return PerturbedView(model, dataset, details)
        assert dataset.items is not None
        texts = [insert_caption(dataset.items[i].text, captions[i], self.position, generator) for i in captioned]
        clean = dataset.features.text
        rows = torch.tensor(captioned)
        vectors = torch.from_numpy(self.encode(texts, dataset)).to(clean.dtype)
        changed = _changed(vectors, clean[rows])
        changed_ids = rows[changed].tolist()
        details.update(changed_items=len(changed_ids), changed_item_ids=changed_ids[:1000])
        if not changed_ids:
            return PerturbedView(model, dataset, details)
        text = clean.clone()
        text[rows[changed]] = vectors[changed]
        features = dataset.features.replace(text=text)
        return PerturbedView(model.with_features(features), dataset.with_features(features), details)

    def describe(self) -> dict[str, Any]:
        return {"suite": self.name, "prob": self.severity, "position": self.position}
