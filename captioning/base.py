"""The captioner protocol, the captioner registry and the helpers every backend shares.

A captioner turns images into one-line captions. Each backend is a small subclass of
:class:`Captioner` that implements :meth:`Captioner.spec` (its identity, used as the cache key) and
:meth:`Captioner._caption_batch` (one batch of RGB images to captions); batching, image loading
and item bookkeeping live here once.

The caption audit asks for captions of items, ``(key, image_path)`` pairs, through
:meth:`Captioner.caption_items`; a backend that looks captions up by key instead of reading images
(:class:`captioning.file.FileCaptioner`) overrides that one method. Images are opened with
:func:`robustrec.media.images.open_image`, as in ingest and the image encoders, and an image that
cannot be read (not an image, truncated, over the pixel limit) is a missing one: no caption.
Batches are cut by :func:`robustrec.media.batching.batched`, which the encoders use too.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from PIL import Image

from robustrec.errors import ConfigError
from robustrec.media.batching import batched
from robustrec.media.images import UnreadableImage, open_image
from robustrec.registry import Registry

#: An item to caption: its key (e.g. the item's original id) and its image file, if it has one.
Item = tuple[str, Path | None]

logger = logging.getLogger("robustrec")

_C = TypeVar("_C", bound="type[Captioner]")


class Captioner(ABC):
    """Turns images into captions, ``batch_size`` images per backend call.

    Subclasses set the class attribute ``name`` (the registry name) and implement :meth:`spec` and
    :meth:`_caption_batch`. ``uses_images`` is False for backends whose captions do not depend on
    image content (they are not cached by image hash).
    """

    name: ClassVar[str]
    uses_images: ClassVar[bool] = True

    def __init__(self, batch_size: int = 16) -> None:
        self.batch_size = positive_int("batch_size", batch_size)

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able identity: everything that changes the captions (backend, model, prompt, ...)."""

    @abstractmethod
    def _caption_batch(self, images: list[Image.Image]) -> list[str]:
        """Caption one batch of at most ``batch_size`` RGB images, one caption per image, in order."""

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Caption ``images`` (converted to RGB when needed) in batches of ``batch_size``."""
        captions: list[str] = []
        for batch in batched(images, self.batch_size):
            rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in batch]
            out = self._caption_batch(rgb)
            if len(out) != len(rgb):
                raise RuntimeError(f"{self.name} returned {len(out)} captions for {len(rgb)} images")
            captions.extend(out)
        return captions

    def caption_items(self, items: Sequence[Item]) -> dict[str, str]:
        """Map each item's key to the caption of its image.

        Images are opened lazily, one batch at a time. Items without an image (path None) or whose
        image cannot be read are skipped: they get no entry in the result (one warning line names
        the unreadable ones' count and the first).
        """
        with_images = [(key, path) for key, path in items if path is not None]
        captions: dict[str, str] = {}
        unreadable: list[UnreadableImage] = []
        for batch in batched(with_images, self.batch_size):
            keys, images = [], []
            for key, path in batch:
                try:
                    images.append(open_image(path))
                    keys.append(key)
                except UnreadableImage as exc:
                    unreadable.append(exc)
            if images:
                captions.update(zip(keys, self.caption(images)))
        if unreadable:
            logger.warning(f"{len(unreadable)} unreadable image(s) not captioned, e.g. {unreadable[0]}")
        return captions

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r})"


#: Registry name -> Captioner subclass; backends add themselves with :func:`register_captioner`.
CAPTIONERS: Registry[Captioner] = Registry("captioner")


def register_captioner(cls: _C) -> _C:
    """Class decorator: register a Captioner subclass in CAPTIONERS under its ``name``."""
    CAPTIONERS.register(cls.name)(cls)
    return cls


def build_captioner(name: str, **options: Any) -> Captioner:
    """Build the registered captioner ``name`` with keyword ``options``.

    Unknown names and unknown options raise ConfigError listing what is accepted.
    """
    factory = CAPTIONERS.get(name)
    accepted = [
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"captioner {name!r} has no option {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}"
        )
    return factory(**options)


def positive_int(option: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise ConfigError naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be a positive integer, got {value!r}")
    return value
