"""Turn raw interaction and item files into an MMRec-format dataset folder (``robustrec ingest``):
the orchestration. Validate the options, read (:mod:`robustrec.data.readers`), filter and split
(:mod:`robustrec.data.split`), encode (:mod:`robustrec.data.encoders`) and write
(:func:`robustrec.data.mmrec.write_dataset`).

Two input layouts:

- CSV (:func:`ingest_csv`): an interactions file, an optional items file (item texts) and an
  optional images folder;
- Amazon (:func:`ingest_amazon`): McAuley's review and (optional) metadata JSON lines and an
  optional images folder.

Images are read from a folder of ``<item id>.<jpg|jpeg|png|webp>`` files; nothing is downloaded.
Each readable image is hard-linked (or, across file systems, copied) into ``<out>/images/`` and
``items.jsonl`` names it relative to the dataset folder, so the folder is self-contained and the
caption audit reads images only from inside it. An image file that cannot be decoded (not an image,
truncated, over :data:`robustrec.media.images.MAX_PIXELS`) is treated as missing, with a warning
line. A symlink in the images folder that resolves outside it is refused: ingest reads images only
from inside the folder it is given.

Processing follows MMRec's preprocessing (:mod:`robustrec.data.split`): duplicates collapsed, a
k-core filter repeated until stable, ids re-indexed, a per-user random split.

Everything is read and computed before the output folder is touched; the folder is then written in
a staging place beside it and renamed into place, so a failure leaves nothing half-written.

The readers' and the split's names (``read_interactions_csv``, ``prepare_split``, ...) stay importable
from this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustrec import checks
from robustrec.data.encoders import (
    ImageEncoder,
    TextEncoder,
    build_image_encoder,
    build_text_encoder,
    encode_image_files,
    encode_texts,
)
from robustrec.data.mmrec import ENCODERS_FILE, write_dataset
from robustrec.data.readers import (
    AMAZON_TEMPLATE,
    ItemTexts,
    RawInteractions,
    amazon_text,
    find_images,
    join_fields,
    read_amazon_meta,
    read_amazon_reviews,
    read_interactions_csv,
    read_items_csv,
    require_file,
)
from robustrec.data.split import Split, encode_ids, first_of_pairs, k_core, prepare_split, split_labels
from robustrec.errors import ConfigError, DataError
from robustrec.io import check_output_folder
from robustrec.media.cache import cache_root
from robustrec.media.images import MAX_PIXELS, UnreadableImage

logger = logging.getLogger("robustrec")

IMAGES_DIR = "images"  # where the dataset keeps its own copies of the item images


# ---- results --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureResult:
    """Feature matrices by modality, the encoder record for ``features.json`` and image counts."""

    features: dict[str, np.ndarray]
    encoders: dict[str, Any]
    without_image: int = 0
    unreadable_images: int = 0
    #: Per item, whether its image was read (empty without images): only those go into the dataset.
    readable: tuple[bool, ...] = ()


@dataclass(frozen=True)
class IngestSummary:
    """What :func:`ingest_csv` / :func:`ingest_amazon` wrote; ``str()`` gives a one-paragraph report."""

    out: Path
    source: str
    n_rows: int
    n_users: int
    n_items: int
    n_interactions: int
    n_duplicates: int
    k_core: int
    k_core_rounds: int
    seed: int
    split_counts: tuple[int, int, int]
    text_encoder: str | None
    image_encoder: str | None
    without_text: int
    without_image: int
    unreadable_images: int
    seconds: float

    def __str__(self) -> str:
        train, valid, test = self.split_counts
        removed = self.n_rows - self.n_duplicates - self.n_interactions
        text = (f"text features by {self.text_encoder} ({self.without_text:,} items without text)"
                if self.text_encoder else "no text features")
        if self.image_encoder:
            image = f"image features by {self.image_encoder} ({self.without_image:,} items without an image got the mean"
            image += f" vector, {self.unreadable_images:,} of them unreadable)" if self.unreadable_images else " vector)"
        else:
            image = "no image features"
        return (
            f"Wrote {self.out}: {self.n_users:,} users, {self.n_items:,} items and {self.n_interactions:,} "
            f"interactions from {self.n_rows:,} rows of {self.source} ({self.n_duplicates:,} duplicate pairs "
            f"collapsed; the {self.k_core}-core filter removed {removed:,} in {self.k_core_rounds} "
            f"round{'' if self.k_core_rounds == 1 else 's'}). "
            f"Split with seed {self.seed}: {train:,} train / {valid:,} valid / {test:,} test. "
            f"{text[0].upper()}{text[1:]}; {image}. Took {self.seconds:.1f}s."
        )


# ---- features and output ------------------------------------------------------------------------------------
def build_features(
    texts: Sequence[str] | None,
    images: Sequence[Path | None] | None,
    text_encoder: TextEncoder | None,
    image_encoder: ImageEncoder | None,
    cache_dir: Path | None,
    batch_size: int = 64,
    progress: bool = False,
) -> FeatureResult:
    """Encode item texts and image files (through the cache). Items without a readable image get
    the mean image vector; with no readable image at all there are no image features."""
    features: dict[str, np.ndarray] = {}
    encoders: dict[str, Any] = {}
    if texts is not None and text_encoder is not None:
        features["text"] = encode_texts(text_encoder, list(texts), cache_dir, batch_size, progress)
        encoders["text"] = text_encoder.spec()
    if images is None or image_encoder is None:
        return FeatureResult(features, encoders)
    present = [n for n, p in enumerate(images) if p is not None]
    encoded = encode_image_files(image_encoder, [images[n] for n in present], cache_dir, batch_size, progress)
    vectors, ok = encoded.features, encoded.ok
    _warn_unreadable(list(encoded.problems.values()))
    readable = np.zeros(len(images), dtype=bool)
    readable[np.asarray(present, dtype=np.int64)[ok]] = True
    if ok.any():
        matrix = np.zeros((len(images), image_encoder.dim), dtype=np.float32)
        good = np.asarray(present, dtype=np.int64)[ok]
        matrix[good] = vectors[ok]
        missing = np.setdiff1d(np.arange(len(images)), good)
        matrix[missing] = vectors[ok].mean(axis=0)
        features["image"] = matrix
        encoders["image"] = image_encoder.spec()
    else:
        logger.warning("no readable image: the dataset gets no image features")
    return FeatureResult(features, encoders, len(images) - int(ok.sum()), len(encoded.problems),
                         tuple(bool(r) for r in readable))


def _warn_unreadable(problems: list[UnreadableImage]) -> None:
    """One warning line for all the images that could not be read (each is counted as missing)."""
    if not problems:
        return
    too_large = sum(p.too_large for p in problems)
    over = f"; {too_large} over the {MAX_PIXELS:,}-pixel limit" if too_large else ""
    example = next((p for p in problems if p.too_large), problems[0])
    logger.warning(f"{len(problems)} unreadable image(s) treated as missing{over}; e.g. {example}")


def check_out_folder(out: Path) -> None:
    """``out`` must be absent, empty, or a dataset folder written by robustrec (with features.json),
    and writable (its nearest existing ancestor, when it is absent)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} exists and is not a folder")
    check_output_folder(out)
    if not out.exists():
        return
    if any(out.iterdir()) and not (out / ENCODERS_FILE).is_file():
        raise DataError(f"output folder {out} is not empty and was not written by robustrec; choose a new folder")


@contextlib.contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """Yield an empty folder named like ``out`` in a staging place beside it; when the block
    succeeds, it replaces ``out`` whole. On failure ``out`` is untouched and the staging removed."""
    out = Path(out)
    check_out_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        staged = staging / out.name
        staged.mkdir()
        yield staged
        check_out_folder(out)
        if out.exists():
            os.replace(out, staging / "previous")
        os.replace(staged, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _items_records(orig_ids: Sequence[Any], texts: Sequence[str], images: Sequence[str | None]) -> list[dict]:
    return [
        {"item": n, "orig_id": orig, "text": text, "image": image}
        for n, (orig, text, image) in enumerate(zip(orig_ids, texts, images))
    ]


def copy_images(images: Sequence[Path | None], folder: Path) -> list[str | None]:
    """Put each image into ``folder/images/`` under its own file name; return the paths relative to
    ``folder`` (what ``items.jsonl`` records). A hard link costs no space; across file systems (or
    where links are not allowed) the file is copied."""
    target = folder / IMAGES_DIR
    names: list[str | None] = []
    for source in images:
        if source is None:
            names.append(None)
            continue
        target.mkdir(exist_ok=True)
        destination = target / source.name  # one file per item id, so names differ (at least in case)
        if destination.exists():  # a case-insensitive file system: never give one item another's image
            raise DataError(f"two item images would both be stored as {destination.name} (names that differ only "
                            "in case, on a case-insensitive file system?); rename one")
        try:
            os.link(source.resolve(), destination)
        except OSError:
            shutil.copyfile(source, destination)
        names.append(f"{IMAGES_DIR}/{source.name}")
    return names


@dataclass(frozen=True)
class _Encoding:
    text_encoder: TextEncoder | None
    image_encoder: ImageEncoder | None
    cache_dir: Path | None
    batch_size: int
    progress: bool


def _encoding(
    with_text: bool, with_images: bool, text_encoder: str | TextEncoder, image_encoder: str | ImageEncoder,
    cache_dir: str | Path | None, use_cache: bool, batch_size: int, progress: bool,
) -> _Encoding:
    """Build the encoders up front, so that a bad name fails before any file is read."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    return _Encoding(
        build_text_encoder(text_encoder) if with_text else None,
        build_image_encoder(image_encoder) if with_images else None,
        (Path(cache_dir) if cache_dir is not None else cache_root()) if use_cache else None,
        batch_size,
        progress,
    )


def _ingest(
    out: Path, source: str, raw: RawInteractions, item_texts: ItemTexts | None, images_dir: Path | None,
    k: int, seed: int, encoding: _Encoding, started: float,
) -> IngestSummary:
    """Shared tail of both layouts: filter, split, encode, write, summarise."""
    users, _ = encode_ids(raw.users)
    items, item_ids = encode_ids(raw.items)
    split = prepare_split(users, items, raw.timestamps, k, seed)
    orig_ids = [item_ids[c] for c in split.item_codes]
    keys = [str(i) for i in orig_ids]
    texts = [item_texts.texts.get(key, "") for key in keys] if item_texts is not None else [""] * len(keys)
    images = find_images(images_dir, keys) if images_dir is not None else None
    result = build_features(
        texts if item_texts is not None else None, images, encoding.text_encoder, encoding.image_encoder,
        encoding.cache_dir, encoding.batch_size, encoding.progress,
    )
    record = dict(result.encoders)
    if item_texts is not None:
        record["text_template"] = item_texts.template
    extra = {}
    if raw.ratings is not None:
        extra["rating"] = raw.ratings[split.rows]
    if raw.timestamps is not None:
        extra["timestamp"] = raw.timestamps[split.rows]
    # Unreadable images are missing ones: the dataset neither holds nor names them.
    kept = [p if p is not None and result.readable[n] else None for n, p in enumerate(images)] if images else []
    with staged_folder(out) as folder:
        names = copy_images(kept, folder) if kept else [None] * len(keys)
        write_dataset(
            folder, split.pairs, split.labels, result.features, _items_records(orig_ids, texts, names), extra, record,
        )
    return IngestSummary(
        out=out, source=source, n_rows=len(raw.users), n_users=len(split.user_codes), n_items=len(orig_ids),
        n_interactions=len(split.pairs), n_duplicates=split.n_duplicates, k_core=k,
        k_core_rounds=split.k_core_rounds, seed=seed, split_counts=split.counts,
        text_encoder=encoding.text_encoder.name if "text" in result.features else None,
        image_encoder=encoding.image_encoder.name if "image" in result.features else None,
        without_text=sum(not t for t in texts), without_image=result.without_image if images else len(keys),
        unreadable_images=result.unreadable_images, seconds=time.perf_counter() - started,
    )


# ---- public entry points ---------------------------------------------------------------------------------
def ingest_csv(
    ratings: str | Path,
    out: str | Path,
    items: str | Path | None = None,
    images: str | Path | None = None,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    text_cols: Sequence[str] | None = None,
    k_core: int = 5,
    seed: int = 999,
    text_encoder: str | TextEncoder = "auto",
    image_encoder: str | ImageEncoder = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 64,
    progress: bool = True,
) -> IngestSummary:
    """Build an MMRec folder ``out`` from an interactions CSV, an optional items CSV (item texts)
    and an optional folder of ``<item id>.<ext>`` images. ``cache_dir`` defaults to
    :func:`~robustrec.media.cache.cache_root`; ``use_cache=False`` encodes everything. ``progress``
    counts the encoded texts and images on stderr (:mod:`robustrec.progress`), as the CLI does."""
    started = time.perf_counter()
    out = Path(out)
    checks.count("ingest", "k_core", k_core, 0)  # 0 and 1: no filter
    checks.count("ingest", "seed", seed, 0, 2**32 - 1)  # numpy's RandomState takes 32-bit seeds
    check_out_folder(out)
    encoding = _encoding(items is not None, images is not None, text_encoder, image_encoder,
                         cache_dir, use_cache, batch_size, progress)
    raw = read_interactions_csv(ratings, user_col, item_col)
    item_texts = read_items_csv(items, item_col, text_cols) if items is not None else None
    images_dir = _images_dir(images)
    return _ingest(out, Path(ratings).name, raw, item_texts, images_dir, k_core, seed, encoding, started)


def ingest_amazon(
    reviews: str | Path,
    out: str | Path,
    meta: str | Path | None = None,
    images: str | Path | None = None,
    *,
    k_core: int = 5,
    seed: int = 999,
    text_encoder: str | TextEncoder = "auto",
    image_encoder: str | ImageEncoder = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 64,
    progress: bool = True,
) -> IngestSummary:
    """Build an MMRec folder ``out`` from Amazon review and (optional) metadata JSON lines and an
    optional folder of ``<asin>.<ext>`` images. Options as in :func:`ingest_csv`."""
    started = time.perf_counter()
    out = Path(out)
    checks.count("ingest", "k_core", k_core, 0)  # 0 and 1: no filter
    checks.count("ingest", "seed", seed, 0, 2**32 - 1)  # numpy's RandomState takes 32-bit seeds
    check_out_folder(out)
    encoding = _encoding(meta is not None, images is not None, text_encoder, image_encoder,
                         cache_dir, use_cache, batch_size, progress)
    raw = read_amazon_reviews(reviews)
    if meta is not None:
        require_file(meta, "meta")
    images_dir = _images_dir(images)
    item_texts = read_amazon_meta(meta, set(raw.items)) if meta is not None else None
    return _ingest(out, Path(reviews).name, raw, item_texts, images_dir, k_core, seed, encoding, started)


def _images_dir(images: str | Path | None) -> Path | None:
    if images is None:
        return None
    folder = Path(images)
    if not folder.is_dir():
        raise DataError(f"images folder {folder} does not exist")
    return folder


__all__ = [
    "AMAZON_TEMPLATE",
    "FeatureResult",
    "IngestSummary",
    "ItemTexts",
    "RawInteractions",
    "Split",
    "amazon_text",
    "build_features",
    "check_out_folder",
    "copy_images",
    "encode_ids",
    "find_images",
    "first_of_pairs",
    "ingest_amazon",
    "ingest_csv",
    "join_fields",
    "k_core",
    "prepare_split",
    "read_amazon_meta",
    "read_amazon_reviews",
    "read_interactions_csv",
    "read_items_csv",
    "split_labels",
    "staged_folder",
]
