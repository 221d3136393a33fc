"""Caption insertion (the paper's "information adjustment", Table 5).

Each item's text, with probability p, gets a caption of its own image inserted (appended by default;
prepend or a random word position as options), and the changed texts are re-encoded with the same
text encoder as the dataset's text features. Only changed items are re-encoded (and a re-encoded text
is remembered across repeats); the model is handed the new features through
:meth:`Recommender.with_features`, which rebuilds every feature-derived structure.

Items without an image are never drawn, and are counted. The paper used BLIP-2 captions at p = 0.01;
on small datasets that changes a handful of items, so sweep p (REFERENCES.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from perturbations.base import PERTURBATIONS, Perturbation, PerturbedView
from perturbations.features import check_reads_features
from robustrec.data.dataset import Dataset
from robustrec.errors import ConfigError, DataError
from robustrec.models.base import Recommender

Position = Literal["append", "prepend", "random"]
POSITIONS = ("append", "prepend", "random")
#: Returns the caption of each requested item index.
CaptionSource = Callable[[Sequence[int]], dict[int, str]]


def caption_source(captioner: Any, cache: Any, dataset: Dataset) -> CaptionSource:
    """Captions of ``dataset``'s items by index, from ``captioner`` through a
    :class:`captioning.CaptionCache` (each image is captioned once; the cache survives runs)."""
    from captioning import cached_caption_items

    def source(ids: Sequence[int]) -> dict[int, str]:
        assert dataset.items is not None
        items = [(dataset.items[i].orig_id, dataset.items[i].image) for i in ids]
        captions = cached_caption_items(captioner, items, cache)
        return {i: captions[dataset.items[i].orig_id] for i in ids}

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


@PERTURBATIONS.register("caption")
class CaptionInsertion(Perturbation):
    name = "caption"
    severity_name = "prob"

    def __init__(
        self,
        severity: float = 0.01,
        captions: CaptionSource | None = None,
        text_encoder: Any = None,
        position: Position = "append",
    ) -> None:
        super().__init__(severity)
        if not 0.0 <= self.severity <= 1.0:
            raise ConfigError(f"caption probability must be in [0, 1], got {severity}")
        if position not in POSITIONS:
            raise ConfigError(f"caption position must be one of {', '.join(POSITIONS)}, got {position!r}")
        if captions is None:
            raise ConfigError("the caption suite needs a caption source (a captioner or a captions file)")
        self.captions = captions
        self.text_encoder = text_encoder
        self.position = position
        self._encoded: dict[str, np.ndarray] = {}

    def check(self, model: Recommender, dataset: Dataset) -> None:
        check_reads_features(model, self.name)
        if dataset.items is None:
            raise DataError(f"dataset {dataset.name!r} has no items.jsonl: the caption suite needs item texts and images")
        if dataset.features.text is None:
            raise DataError(f"dataset {dataset.name!r} has no text features to re-encode")

    @staticmethod
    def eligible(dataset: Dataset) -> np.ndarray:
        """Boolean mask of items that have an image file (only those can be drawn)."""
        assert dataset.items is not None
        return np.array([info.image is not None and info.image.is_file() for info in dataset.items])

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
        eligible = self.eligible(dataset)
        draws = (torch.rand(dataset.n_items, generator=generator) < self.severity).numpy() & eligible
        chosen = np.flatnonzero(draws).tolist()
        details: dict[str, Any] = {
            "position": self.position,
            "changed_items": len(chosen),
            "items_without_image": int((~eligible).sum()),
            "changed_item_ids": chosen[:1000],
        }
        if not chosen:
            return PerturbedView(model, dataset, details)
        captions = self.captions(chosen)
        assert dataset.items is not None
        texts = [insert_caption(dataset.items[i].text, captions[i], self.position, generator) for i in chosen]
        clean = dataset.features.text
        vectors = torch.from_numpy(self.encode(texts, dataset))
        if vectors.shape[1] != clean.shape[1]:
            raise DataError(
                f"the text encoder gives {vectors.shape[1]}-d vectors but the dataset's text features are "
                f"{clean.shape[1]}-d: re-encode with the encoder that made them"
            )
        text = clean.clone()
        text[torch.tensor(chosen)] = vectors.to(text.dtype)
        features = dataset.features.replace(text=text)
        return PerturbedView(model.with_features(features), dataset.with_features(features), details)

    def describe(self) -> dict[str, Any]:
        return {"suite": self.name, "prob": self.severity, "position": self.position}
