"""Readers of raw input files: interactions and item texts from CSV files, Amazon review and
metadata JSON lines, and a folder of item images. Each returns plain data (:class:`RawInteractions`,
:class:`ItemTexts`, image paths) for :mod:`robustrec.data.ingest` to filter, split, encode and write.

- CSV: an interactions file with user and item columns (names detected, e.g. ``user_id``/``userID``/
  ``user`` and ``item_id``/``itemID``/``item``/``asin``), optional rating and timestamp columns; an
  items file whose text columns are joined into each item's text.
- Amazon: McAuley's review and metadata JSON lines (2014, 2018 and 2023 layouts, plain or gzipped;
  old files with Python dict literals are read with ``ast.literal_eval``). The item text is title,
  brand, first category path and description, as in MMRec.
- Images: ``<item id>.<jpg|jpeg|png|webp>`` files in one folder; a symlink that resolves outside
  the folder is refused.

Every number read (ratings, timestamps) must be finite, and malformed lines (ragged CSV rows, JSON
too deeply nested, NaN, badly typed fields) are DataErrors naming the file and line.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from robustrec.data.values import finite_number, unix_time
from robustrec.errors import DataError
from robustrec.io import loads_json
from robustrec.media.images import inside

USER_COLUMNS = ("user_id", "userID", "user", "reviewerID")
ITEM_COLUMNS = ("item_id", "itemID", "item", "asin", "parent_asin", "movie_id")
RATING_COLUMNS = ("rating", "overall", "score")
TIME_COLUMNS = ("timestamp", "unixReviewTime", "time", "ts")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")  # in order of preference
AMAZON_TEMPLATE = "{title}. {brand}. {categories}. {description}"

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_DATE = re.compile(r"\d{1,4}[-/.](\d{1,2}|[A-Za-z]{3,9})[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?Z?")


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


def require_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a file; else a DataError naming ``what`` it should hold."""
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
    path = require_file(path, "ratings")
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
    path = require_file(path, "items")
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
    path = require_file(path, "reviews")
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
    path = require_file(path, "meta")
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


__all__ = [
    "AMAZON_TEMPLATE",
    "IMAGE_EXTENSIONS",
    "ITEM_COLUMNS",
    "RATING_COLUMNS",
    "TIME_COLUMNS",
    "USER_COLUMNS",
    "ItemTexts",
    "RawInteractions",
    "amazon_text",
    "clean_field",
    "find_column",
    "find_images",
    "iter_json_lines",
    "join_fields",
    "parse_time",
    "read_amazon_meta",
    "read_amazon_reviews",
    "read_csv",
    "read_interactions_csv",
    "read_items_csv",
    "require_file",
]
