"""Image captioners (BLIP-2, an offline ImageNet classifier, captions from a file) with a disk cache.

>>> from captioning import build_captioner, CaptionCache, cached_caption_items
>>> captioner = build_captioner("imagenet")                      # doctest: +SKIP
>>> cached_caption_items(captioner, [("1", poster)], CaptionCache(out / "captions"))  # doctest: +SKIP
{'1': 'a photo of a comic book'}

Registered captioners: ``blip2`` (:class:`Blip2Captioner`), ``imagenet`` (:class:`ImageNetCaptioner`)
and ``file`` (:class:`FileCaptioner`). Importing this package is light: torch, transformers and the
EfficientNet packages are imported when a model is first loaded.
"""

from captioning.base import CAPTIONERS, Captioner, Item, build_captioner, register_captioner
from captioning.blip2 import DEFAULT_MODEL as BLIP2_DEFAULT_MODEL
from captioning.blip2 import Blip2Captioner
from captioning.cache import CaptionCache, cache_key, cached_caption_items, image_sha256, spec_hash
from captioning.file import FileCaptioner
from captioning.imagenet import ImageNetCaptioner, imagenet_labels

__all__ = [
    "BLIP2_DEFAULT_MODEL",
    "CAPTIONERS",
    "Blip2Captioner",
    "CaptionCache",
    "Captioner",
    "FileCaptioner",
    "ImageNetCaptioner",
    "Item",
    "build_captioner",
    "cache_key",
    "cached_caption_items",
    "image_sha256",
    "imagenet_labels",
    "register_captioner",
    "spec_hash",
]
