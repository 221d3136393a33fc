"""Turn raw interaction and item files into an MMRec-format dataset folder (``robustrec ingest``).

Two input layouts:

- CSV (:func:`ingest_csv`): an interactions file with user and item columns (names detected, e.g.
  ``user_id``/``userID``/``user`` and ``item_id``/``itemID``/``item``/``asin``), optional rating and
  timestamp columns; an optional items file whose text columns are joined into each item's text.
- Amazon (:func:`ingest_amazon`): McAuley's review and metadata JSON lines (2014, 2018 and 2023
  layouts, plain or gzipped; old files with Python dict literals are read with ``ast.literal_eval``).
  The item text is title, brand, first category path and description, as in MMRec.

Images are read from a folder of ``<item id>.<jpg|jpeg|png|webp>`` files; nothing is downloaded.
Each readable image is hard-linked (or, across file systems, copied) into ``<out>/images/`` and
``items.jsonl`` names it relative to the dataset folder, so the folder is self-contained and the
caption audit reads images only from inside it. An image file that cannot be decoded (not an image,
truncated, over :data:`robustrec.data.images.MAX_PIXELS`) is treated as missing, with a warning
line. A symlink in the images folder that resolves outside it is refused: ingest reads images only
from inside the folder it is given.

Every number read (ratings, timestamps) must be finite, ids that are integers are ordered
numerically only when they fit in 64 bits, and malformed JSON lines (too deeply nested, NaN,
badly typed fields) are DataErrors naming the file and line.

Processing follows MMRec's preprocessing: every row is a positive; duplicate (user, item) pairs are
collapsed (the earliest, then the first in the file, is kept); a k-core filter is repeated until
stable; users and items are re-indexed from 0 in ascending order of their original ids (numeric
order when every id is an integer); then the per-user random split of :func:`split_labels`.

Everything is read and computed before the output folder is touched; the folder is then written in
a staging place beside it and renamed into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import gzip
import io
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from robustrec import checks
from robustrec.data.encoders import (
    ImageEncoder,
    TextEncoder,
    build_image_encoder,
    build_text_encoder,
    default_cache_dir,
    encode_image_files,
    encode_texts,
)
from robustrec.data.images import MAX_PIXELS, UnreadableImage, inside
from robustrec.data.mmrec import ENCODERS_FILE, write_dataset
from robustrec.data.values import finite_number, unix_time
from robustrec.errors import ConfigError, DataError
from robustrec.io import check_output_folder, loads_json

logger = logging.getLogger("robustrec")

USER_COLUMNS = ("user_id", "userID", "user", "reviewerID")
ITEM_COLUMNS = ("item_id", "itemID", "item", "asin", "parent_asin", "movie_id")
RATING_COLUMNS = ("rating", "overall", "score")
TIME_COLUMNS = ("timestamp", "unixReviewTime", "time", "ts")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")  # in order of preference
IMAGES_DIR = "images"  # where the dataset keeps its own copies of the item images
AMAZON_TEMPLATE = "{title}. {brand}. {categories}. {description}"

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_DATE = re.compile(r"\d{1,4}[-/.](\d{1,2}|[A-Za-z]{3,9})[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?Z?")
_INTEGER = re.compile(r"0|[1-9]\d{0,17}")  # plain integers that fit in 64 bits


# ---- results --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RawInteractions:
    """Interactions as read: original ids as strings, optional ratings and unix timestamps."""

    users: list[str]
    items: list[str]
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None


@dataclass(frozen=True)
class ItemTexts:
    """Item text by original id, and the template that describes how it was built."""

    texts: dict[str, str]
    template: str


@dataclass(frozen=True)
class Split:
    """Filtered, re-indexed and split interactions, in output order.

    ``rows`` index the input interactions; ``user_codes``/``item_codes`` give, per new index, the
    input code of that user or item.
    """

    rows: np.ndarray
    pairs: np.ndarray
    labels: np.ndarray
    user_codes: np.ndarray
    item_codes: np.ndarray
    n_duplicates: int
    k_core_rounds: int

    @property
    def counts(self) -> tuple[int, int, int]:
        train, valid, test = np.bincount(self.labels, minlength=3)[:3]
        return int(train), int(valid), int(test)


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


# ---- ids, de-duplication, k-core, split ------------------------------------------------------------------
def encode_ids(ids: Sequence[str]) -> tuple[np.ndarray, list[int] | list[str]]:
    """Codes ``0..m-1`` in ascending id order and the ids in that order.

    Ids are compared as exact strings; when every id is a plain integer (``0`` or no leading zero)
    of at most 18 digits they are ordered and returned as numbers, otherwise as strings in
    lexicographic order.
    """
    uniques, codes = np.unique(np.array(ids, dtype=str), return_inverse=True)
    strings = [str(u) for u in uniques]
    if not all(_INTEGER.fullmatch(u) for u in strings):
        return codes.astype(np.int64), strings
    numbers = [int(u) for u in strings]
    by_value = sorted(range(len(numbers)), key=numbers.__getitem__)
    rank = np.empty(len(numbers), dtype=np.int64)
    rank[by_value] = np.arange(len(numbers))
    return rank[codes], [numbers[j] for j in by_value]


def first_of_pairs(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
    """Row indices (ascending) that keep one row per (user, item): the earliest, then the first."""
    if len(users) == 0:
        return np.zeros(0, dtype=np.int64)
    key = users.astype(np.int64) * (int(items.max()) + 1) + items
    times = timestamps if timestamps is not None else np.zeros(len(users), dtype=np.int64)
    order = np.lexsort((np.arange(len(key)), times, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    return np.sort(order[first])


def k_core(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Drop users and items with fewer than ``k`` interactions, repeated until nothing changes.

    Returns the mask of kept rows and the number of rounds that removed something.
    """
    keep = np.ones(len(users), dtype=bool)
    if k <= 1 or len(users) == 0:
        return keep, 0
    rounds = 0
    while True:
        user_count = np.bincount(users[keep], minlength=int(users.max()) + 1)
        item_count = np.bincount(items[keep], minlength=int(items.max()) + 1)
        bad = keep & ((user_count[users] < k) | (item_count[items] < k))
        if not bad.any():
            return keep, rounds
        keep &= ~bad
        rounds += 1


def split_labels(users: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MMRec's per-user random split of interactions whose users are re-indexed ``0..U-1``.

    The rows are shuffled with ``numpy.random.RandomState(seed).permutation`` (what pandas'
    ``sample(frac=1, random_state=seed)`` draws) and grouped by user, keeping that order. A user with
    ``n < 10`` rows gets ``n-2`` train, 1 valid, 1 test; otherwise ``int(0.2 n)`` are held out, half
    (rounded down) valid and the rest test. Users with one or two rows keep at least one train row.
    Returns ``(order, labels)``: the row order grouped by user and a label (0/1/2) per ordered row.
    """
    n = len(users)
    perm = np.random.RandomState(seed).permutation(n)
    order = perm[np.argsort(users[perm], kind="stable")]
    grouped = users[order]
    counts = np.bincount(grouped)
    rank = np.arange(n) - (np.cumsum(counts) - counts)[grouped]
    size = counts[grouped]
    held = np.minimum(np.where(size < 10, 2, (size * 0.2).astype(np.int64)), size - 1)
    n_train = size - held
    labels = np.where(rank < n_train, 0, np.where(rank < n_train + held // 2, 1, 2))
    return order, labels.astype(np.int64)


def prepare_split(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None = None, k: int = 5, seed: int = 999
) -> Split:
    """Collapse duplicates, apply the k-core filter, re-index and split (codes must be >= 0).

    New indices follow ascending code order, so codes from :func:`encode_ids` give ascending ids.
    """
    if k < 1:
        raise ConfigError(f"k-core must be >= 1, got {k}")
    unique = first_of_pairs(users, items, timestamps)
    keep, rounds = k_core(users[unique], items[unique], k)
    rows = unique[keep]
    if len(rows) == 0:
        raise DataError(f"no interactions left after the {k}-core filter (from {len(unique):,}); try a smaller k-core")
    user_codes, new_users = np.unique(users[rows], return_inverse=True)
    item_codes, new_items = np.unique(items[rows], return_inverse=True)
    order, labels = split_labels(new_users.astype(np.int64), seed)
    pairs = np.stack([new_users[order], new_items[order]], axis=1).astype(np.int64)
    return Split(rows[order], pairs, labels, user_codes, item_codes, len(users) - len(unique), rounds)


# ---- reading files ----------------------------------------------------------------------------------------
def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist")
    return path


def _open_text(path: Path) -> TextIO:
    """Open a text file, transparently gunzipping it when it starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if gzipped:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, fields)`` rows of a CSV file; ragged rows are an error."""
    try:
        with _open_text(path) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise DataError(f"{path}: empty file (expected a header row)")
            rows = []
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise DataError(f"{path}:{reader.line_num}: expected {len(header)} fields, got {len(fields)}")
                rows.append((reader.line_num, fields))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except (csv.Error, gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    return [h.strip() for h in header], rows


def _squash(name: str) -> str:
    return name.lower().replace("_", "").replace(" ", "")


def find_column(
    header: list[str], path: Path, what: str, candidates: Sequence[str], chosen: str | None = None,
    required: bool = True,
) -> int | None:
    """Index of ``chosen`` (if given) or of the first candidate name (case and ``_`` insensitive)."""
    squashed = [_squash(h) for h in header]
    for name in [chosen] if chosen else candidates:
        if name in header:
            return header.index(name)
        if _squash(name) in squashed:
            return squashed.index(_squash(name))
    if chosen:
        raise DataError(f"{path}: no column {chosen!r} (columns: {', '.join(header)})")
    if required:
        raise DataError(
            f"{path}: no {what} column; expected one of {', '.join(candidates)} (columns: {', '.join(header)})"
        )
    return None


def _number(value: str, path: Path, lineno: int, what: str) -> float:
    return finite_number(value, f"{path}:{lineno}", what)


def parse_time(value: str, path: Path, lineno: int) -> int:
    """A unix time in seconds from an integer/float or an ISO 8601 date (naive dates are UTC);
    numbers must be finite and fit in 64 bits."""
    value = value.strip()
    if _NUMBER.fullmatch(value):
        return unix_time(finite_number(value, f"{path}:{lineno}", "timestamp"), f"{path}:{lineno}", value)
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise DataError(f"{path}:{lineno}: timestamp {value!r} is neither a number nor an ISO date") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return int(stamp.timestamp())


def read_interactions_csv(
    path: str | Path, user_col: str | None = None, item_col: str | None = None
) -> RawInteractions:
    """Read an interactions CSV: user and item columns (detected or chosen), optional rating/timestamp."""
    path = _require_file(path, "ratings")
    header, rows = read_csv(path)
    u = find_column(header, path, "user", USER_COLUMNS, user_col)
    i = find_column(header, path, "item", ITEM_COLUMNS, item_col)
    r = find_column(header, path, "rating", RATING_COLUMNS, required=False)
    t = find_column(header, path, "timestamp", TIME_COLUMNS, required=False)
    if not rows:
        raise DataError(f"{path}: no interactions")
    users, items = [], []
    for lineno, fields in rows:
        user, item = fields[u].strip(), fields[i].strip()
        if not user or not item:
            raise DataError(f"{path}:{lineno}: empty user or item id")
        users.append(user)
        items.append(item)
    ratings = None if r is None else np.array([_number(f[r], path, n, "rating") for n, f in rows])
    times = None if t is None else np.array([parse_time(f[t], path, n) for n, f in rows], dtype=np.int64)
    return RawInteractions(users, items, ratings, times)


def clean_field(value: str) -> str:
    """One text field: a pipe list such as ``Animation|Comedy`` becomes ``Animation, Comedy``."""
    value = value.strip()
    if "|" in value and not re.search(r"\s\||\|\s", value):
        value = ", ".join(part for part in value.split("|") if part)
    return value


def join_fields(fields: Sequence[str]) -> str:
    """``"a. b. c"``: each non-empty field but the last is followed by ``". "``; whitespace (newlines
    included) is collapsed to single spaces. An empty last field leaves the text ending in ``"."``."""
    fields = [value.strip() for value in fields]
    if not fields:
        return ""
    text = "".join(f"{value}. " for value in fields[:-1] if value) + fields[-1]
    return " ".join(text.split())


def _is_text_column(values: list[str]) -> bool:
    """False for columns that are empty or hold only numbers and dates (ids, prices, release dates)."""
    filled = [v.strip() for v in values if v.strip()]
    return bool(filled) and not all(_NUMBER.fullmatch(v) or _DATE.fullmatch(v) for v in filled)


def read_items_csv(path: str | Path, item_col: str | None = None, text_cols: Sequence[str] | None = None) -> ItemTexts:
    """Item texts from a CSV: ``text_cols`` (default every non-id column that is not numbers or dates)
    joined with :func:`join_fields`. The first row of a repeated id wins."""
    path = _require_file(path, "items")
    header, rows = read_csv(path)
    id_index = find_column(header, path, "item id", ITEM_COLUMNS, item_col)
    if text_cols:
        columns = [find_column(header, path, "text", (), name) for name in text_cols]
    else:
        columns = [c for c in range(len(header))
                   if c != id_index and _is_text_column([fields[c] for _, fields in rows])]
        if not columns:
            raise DataError(f"{path}: no text columns (columns: {', '.join(header)}); choose them with --text-cols")
    texts: dict[str, str] = {}
    for _, fields in rows:
        texts.setdefault(fields[id_index].strip(), join_fields([clean_field(fields[c]) for c in columns]))
    template = ". ".join("{" + header[c] + "}" for c in columns)
    return ItemTexts(texts, template)


def iter_json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """Records of a JSON-lines file (gzip allowed); lines that are Python dict literals, as in the
    2014 Amazon metadata, are parsed with ``ast.literal_eval`` (never ``eval``)."""
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                yield lineno, _parse_record(line, path, lineno)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"{path}: damaged gzip file ({exc})") from None


def _parse_record(line: str, path: Path, lineno: int) -> dict:
    """Strict JSON (:func:`robustrec.io.loads_json`: no NaN, bounded nesting), else a Python literal."""
    where = f"{path}:{lineno}"
    try:
        record = loads_json(line, where)
    except DataError as json_error:
        try:
            record = ast.literal_eval(line.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            reason = str(json_error).removeprefix(f"{where}: ")
            raise DataError(f"{where}: neither a JSON object nor a Python dict literal ({reason})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    return record


def _first_key(record: dict, keys: Sequence[str]) -> tuple[str, Any]:
    """The first of ``keys`` with a value in ``record`` (not null, not empty) and that value."""
    for key in keys:
        if record.get(key) not in (None, ""):
            return key, record[key]
    return keys[0], None


def _id(record: dict, keys: Sequence[str], where: str) -> str | None:
    """An id field: a string or an integer (JSON has no other sane id), stripped."""
    key, value = _first_key(record, keys)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: {key} must be a string or an integer, got {type(value).__name__}")
    return str(value).strip()


def read_amazon_reviews(path: str | Path) -> RawInteractions:
    """Amazon reviews: ``reviewerID``/``user_id``, ``asin``/``parent_asin``, ``overall``/``rating``,
    ``unixReviewTime``/``timestamp`` (2014, 2018 and 2023 layouts)."""
    path = _require_file(path, "reviews")
    users, items, ratings, times = [], [], [], []
    for lineno, record in iter_json_lines(path):
        user = _id(record, ("reviewerID", "user_id"), f"{path}:{lineno}")
        item = _id(record, ("parent_asin", "asin"), f"{path}:{lineno}")
        if user is None or item is None:
            raise DataError(f"{path}:{lineno}: a review needs reviewerID (or user_id) and asin (or parent_asin)")
        users.append(user)
        items.append(item)
        _, rating = _first_key(record, ("overall", "rating"))
        _, stamp = _first_key(record, ("unixReviewTime", "timestamp"))
        ratings.append(None if rating is None else _number(str(rating), path, lineno, "rating"))
        times.append(None if stamp is None else parse_time(str(stamp), path, lineno))
    if not users:
        raise DataError(f"{path}: no reviews")
    return RawInteractions(
        users, items,
        None if None in ratings else np.array(ratings, dtype=np.float64),
        None if None in times else np.array(times, dtype=np.int64),
    )


def amazon_text(record: dict) -> str:
    """Title, brand, first category path and description, joined with :func:`join_fields`.

    Fields must have the types of McAuley's layouts (text: strings or numbers; categories: a list of
    names or of lists of names; description: a string or a list of strings); others are a DataError.
    """
    categories = record.get("categories") or record.get("category") or []
    if not isinstance(categories, (list, tuple)):
        raise DataError(f"categories must be a list, got {type(categories).__name__}")
    path = categories[0] if categories and isinstance(categories[0], (list, tuple)) else categories
    description = record.get("description") or ""
    if isinstance(description, (list, tuple)):
        description = " ".join(_text_field(d, "description") for d in description)
    brand = record.get("brand") or record.get("store") or ""
    return join_fields([
        _text_field(record.get("title") or "", "title"), _text_field(brand, "brand"),
        ", ".join(_text_field(c, "categories") for c in path), _text_field(description, "description"),
    ])


def _text_field(value: Any, what: str) -> str:
    """A text field's value as a string: strings and numbers only (a dict or list is not text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{what} must be text, got {type(value).__name__}")
    return str(value)


def read_amazon_meta(path: str | Path, wanted: set[str] | None = None) -> ItemTexts:
    """Amazon metadata texts by ``asin`` (or ``parent_asin``), only for ``wanted`` ids if given."""
    path = _require_file(path, "meta")
    texts: dict[str, str] = {}
    for lineno, record in iter_json_lines(path):
        item = _id(record, ("parent_asin", "asin"), f"{path}:{lineno}")
        if item is None:
            raise DataError(f"{path}:{lineno}: a metadata record needs asin (or parent_asin)")
        if (wanted is None or item in wanted) and item not in texts:
            try:
                texts[item] = amazon_text(record)
            except DataError as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from None
    return ItemTexts(texts, AMAZON_TEMPLATE)


def find_images(folder: str | Path, ids: Sequence[str]) -> list[Path | None]:
    """``folder/<id>.<ext>`` for each id (jpg, jpeg, png, webp, any case), ``None`` where absent.

    A path is the file's own name in ``folder``, never a symlink's target. A symlink is followed
    only within ``folder``: one of the wanted images that resolves outside it is a DataError (a
    downloaded images folder must not make ingest read, and copy, arbitrary files).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"images folder {folder} does not exist")
    found: dict[str, Path] = {}
    rank = {ext: n for n, ext in enumerate(IMAGE_EXTENSIONS)}
    for path in sorted(folder.iterdir()):
        ext = path.suffix.lower()
        if ext in rank and path.is_file():
            stem = path.stem
            if stem not in found or rank[ext] < rank[found[stem].suffix.lower()]:
                found[stem] = path
    images = [found.get(i) for i in ids]
    for path in images:
        if path is not None and not inside(path, folder):
            raise DataError(
                f"images folder {folder}: {path.name} is a link to {path.resolve()}, outside the images folder; "
                "copy the image into the folder (ingest reads images only from inside it)"
            )
    return images


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
        (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None,
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
    progress: bool = False,
) -> IngestSummary:
    """Build an MMRec folder ``out`` from an interactions CSV, an optional items CSV (item texts)
    and an optional folder of ``<item id>.<ext>`` images. ``cache_dir`` defaults to
    :func:`~robustrec.data.encoders.default_cache_dir`; ``use_cache=False`` encodes everything."""
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
    progress: bool = False,
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
        _require_file(meta, "meta")
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
    "IngestSummary",
    "ItemTexts",
    "RawInteractions",
    "Split",
    "amazon_text",
    "build_features",
    "copy_images",
    "encode_ids",
    "find_images",
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
