"""Captions made elsewhere (another machine, a bigger model, by hand), read from a CSV or JSONL file.

CSV (``.csv``, or ``.tsv`` tab-separated) needs a header with an item id column (``item``,
``item_id``, ``orig_id`` or ``id``) and a caption column (``caption``, or else ``text``). JSONL
(``.jsonl``/``.ndjson``, or any file whose first character is ``{``) has one object per line with the
same keys, e.g. ``{"orig_id": "1", "caption": "a cowboy doll on a bed"}``. Header names are matched
case-insensitively. When a file has several id columns, pass ``id_column`` to pick one.

The captioner looks captions up by item key, so it overrides
:meth:`~captioning.base.Captioner.caption_items` and cannot caption bare images.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from captioning.base import Captioner, Item, register_captioner
from robustrec.errors import ConfigError, DataError
from robustrec.io import loads_json

ID_FIELDS = ("item", "item_id", "orig_id", "id")
CAPTION_FIELDS = ("caption", "text")  # in order of preference
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")

#: (line number, item id, caption) as read from a file, before validation.
_Row = tuple[int, Any, Any]


@register_captioner
class FileCaptioner(Captioner):
    """Captions looked up by item id in a CSV or JSONL file read once at construction."""

    name = "file"
    uses_images = False

    def __init__(self, path: str | Path, *, id_column: str | None = None) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        self.id_column = id_column
        data = _read_bytes(self.path)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.captions = parse_captions(data, self.path, id_column)

    def spec(self) -> dict[str, Any]:
        return {"backend": self.name, "sha256": self.sha256, "id_column": self.id_column}

    def caption_items(self, items: Sequence[Item]) -> dict[str, str]:
        """Look every item's key up; any key without a caption raises DataError."""
        missing = [key for key, _ in items if key not in self.captions]
        if missing:
            raise DataError(
                f"{self.path} has no caption for {len(missing)} of {len(items)} items "
                f"(first missing id: {missing[0]!r})"
            )
        return {key: self.captions[key] for key, _ in items}

    def _caption_batch(self, images: list[Image.Image]) -> list[str]:
        raise ConfigError("the file captioner looks captions up by item id and cannot caption images")


def parse_captions(data: bytes, path: Path, id_column: str | None = None) -> dict[str, str]:
    """Parse a captions file's bytes into ``{item id: caption}``; ``path`` names the format and errors."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from None
    rows = _jsonl_rows(text, path, id_column) if _is_jsonl(path, text) else _csv_rows(text, path, id_column)
    return _collect(rows, path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"captions file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read captions file {path}: {exc}") from None


def _is_jsonl(path: Path, text: str) -> bool:
    if path.suffix.lower() in JSONL_SUFFIXES:
        return True
    if path.suffix.lower() in (".csv", ".tsv"):
        return False
    return text.lstrip().startswith("{")


def _csv_rows(text: str, path: Path, id_column: str | None) -> Iterator[_Row]:
    # newline="" semantics: the csv module sees the raw line ends, so a stray carriage return inside
    # a field is data (or a clear error below), never a crash
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        header = reader.fieldnames or []
        id_field = _pick_id_field(header, id_column, f"{path} header")
        caption_field = _pick_caption_field(header, f"{path} header")
        for row in reader:
            yield reader.line_num, row[id_field], row[caption_field]
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None


def _jsonl_rows(text: str, path: Path, id_column: str | None) -> Iterator[_Row]:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = loads_json(line, f"{path}:{line_no}")
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        where = f"{path}:{line_no}"
        yield line_no, row[_pick_id_field(row, id_column, where)], row[_pick_caption_field(row, where)]


def _pick_id_field(fields: Sequence[str] | Mapping[str, Any], id_column: str | None, where: str) -> str:
    """The field holding item ids: ``id_column`` if given, else the one field named like an id."""
    by_lower = {name.strip().lower(): name for name in fields}
    if id_column is not None:
        if id_column.lower() not in by_lower:
            raise DataError(f"{where} has no id column {id_column!r}; columns: {', '.join(fields)}")
        return by_lower[id_column.lower()]
    found = [by_lower[name] for name in ID_FIELDS if name in by_lower]
    if not found:
        raise DataError(
            f"{where} has no item id column (one of {', '.join(ID_FIELDS)}); columns: {', '.join(fields)}"
        )
    if len(found) > 1:
        raise DataError(f"{where} has several id columns ({', '.join(found)}); choose one with id_column")
    return found[0]


def _pick_caption_field(fields: Sequence[str] | Mapping[str, Any], where: str) -> str:
    by_lower = {name.strip().lower(): name for name in fields}
    for name in CAPTION_FIELDS:
        if name in by_lower:
            return by_lower[name]
    raise DataError(
        f"{where} has no caption column (one of {', '.join(CAPTION_FIELDS)}); columns: {', '.join(fields)}"
    )


def _collect(rows: Iterator[_Row], path: Path) -> dict[str, str]:
    """Validate rows into a dict (ids: strings or integers; captions: non-empty strings, whitespace runs
    collapsed to one space); an id given two different captions raises DataError."""
    captions: dict[str, str] = {}
    for line_no, raw_id, caption in rows:
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or str(raw_id).strip() == "":
            raise DataError(
                f"{path}:{line_no}: item id must be a non-empty string or integer, got {raw_id!r}"
            )
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{path}:{line_no}: caption must be a non-empty string, got {caption!r}")
        key, caption = str(raw_id).strip(), " ".join(caption.split())
        if captions.get(key, caption) != caption:
            raise DataError(f"{path}:{line_no}: item {key!r} has two different captions")
        captions[key] = caption
    if not captions:
        raise DataError(f"{path} contains no captions")
    return captions
