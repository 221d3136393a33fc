"""Captions cached on disk, so each image is captioned once per captioner setting.

A caption is keyed by ``sha256(json(spec, sort_keys) + sha256(image bytes))``: the captioner's
:meth:`~captioning.base.Captioner.spec` (model, revision, prompt, generation settings, ...) and the
image's content, never its path or item id. The folder holds, per spec, ``<spec hash>.json`` (the spec,
for people) and ``<spec hash>.jsonl`` (one ``{"key", "image_sha256", "caption"}`` object per line).

Rows are only ever appended, one ``write`` per batch to a file opened with ``O_APPEND``, so concurrent
writers do not clobber each other and a crash loses at most the batch being written. A torn last line
is skipped on reading (its images are captioned again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from captioning.base import Captioner, Item
from robustrec.io import write_json
from robustrec.media.batching import batch_ranges
from robustrec.media.cache import content_sha256, spec_json, spec_sha256
from robustrec.media.images import UnreadableImage, file_sha256

#: The sha256 hex digest of an image file's bytes (read in chunks; a FIFO or folder is refused); a
#: file that cannot be read raises :class:`~robustrec.media.images.UnreadableImage`.
image_sha256 = file_sha256


def spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 of the spec's compact canonical JSON (:func:`robustrec.media.cache.spec_json`): names
    the spec's files in the cache folder."""
    return spec_sha256(spec)


def cache_key(spec: Mapping[str, Any], image_sha256: str) -> str:
    """``sha256(json(spec, sort_keys) + sha256 of the image bytes)`` as hex."""
    return content_sha256(spec_json(spec) + image_sha256)


class CaptionCache:
    """Captions on disk under ``folder``, looked up by captioner spec and image hash."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._loaded: dict[str, dict[str, str]] = {}  # spec hash -> {cache key: caption}

    def get(self, spec: Mapping[str, Any], image_sha: str) -> str | None:
        """The cached caption of the image with hash ``image_sha`` under ``spec``, or None."""
        return self._rows(spec).get(cache_key(spec, image_sha))

    def put(self, spec: Mapping[str, Any], image_sha: str, caption: str) -> None:
        """Store one caption (see :meth:`put_many`)."""
        self.put_many(spec, {image_sha: caption})

    def put_many(self, spec: Mapping[str, Any], captions: Mapping[str, str]) -> None:
        """Append ``{image sha256: caption}`` rows for ``spec`` in one write."""
        if not captions:
            return
        rows = self._rows(spec)
        lines = []
        for image_sha, caption in captions.items():
            key = cache_key(spec, image_sha)
            rows[key] = caption
            lines.append(
                json.dumps({"key": key, "image_sha256": image_sha, "caption": caption}, ensure_ascii=False)
            )
        path = self._jsonl(spec)
        _append(path, ("\n" if _ends_torn(path) else "") + "\n".join(lines) + "\n")

    def _jsonl(self, spec: Mapping[str, Any]) -> Path:
        return self.folder / f"{spec_hash(spec)}.jsonl"

    def _rows(self, spec: Mapping[str, Any]) -> dict[str, str]:
        """This spec's rows, read from disk on first use (creating the folder and spec file)."""
        digest = spec_hash(spec)
        if digest not in self._loaded:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not (self.folder / f"{digest}.json").is_file():
                write_json(self.folder / f"{digest}.json", dict(spec))
            self._loaded[digest] = _read_rows(self._jsonl(spec))
        return self._loaded[digest]


def cached_caption_items(
    captioner: Captioner, items: Sequence[Item], cache: CaptionCache, progress: bool = False
) -> dict[str, str]:
    """Like ``captioner.caption_items(items)``, calling the captioner only for images not in ``cache``.

    Images are identified by content, so identical images are captioned once. Misses are captioned
    in batches of ``captioner.batch_size`` and stored after each batch; ``progress`` counts them on
    stderr (:mod:`robustrec.progress`: BLIP-2 on a CPU takes seconds per image). Items without an
    image, or whose image cannot be read, are skipped, as by :meth:`Captioner.caption_items` (and
    nothing is cached for them). Captioners whose captions do not depend on image content
    (``uses_images`` False, e.g. the file captioner) are not cached.
    """
    if not captioner.uses_images:
        return captioner.caption_items(items)
    spec = captioner.spec()
    hashes: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for key, path in items:
        if path is None:
            continue
        try:
            hashes[key] = image_sha256(path)
        except UnreadableImage:  # a missing or non-regular file: no caption, as for a bad image
            continue
        paths.setdefault(hashes[key], Path(path))
    captions: dict[str, str] = {}
    for digest in paths:
        cached = cache.get(spec, digest)
        if cached is not None:
            captions[digest] = cached
    misses = [(digest, path) for digest, path in paths.items() if digest not in captions]
    batches = batch_ranges(len(misses), captioner.batch_size, progress=progress,
                           desc=f"captioning ({captioner.name})", unit="images")
    for chunk in batches:
        new = captioner.caption_items(misses[chunk.start : chunk.stop])
        cache.put_many(spec, new)
        captions.update(new)
    return {key: captions[digest] for key, digest in hashes.items() if digest in captions}


def _read_rows(path: Path) -> dict[str, str]:
    """``{key: caption}`` from a cache file; missing file -> empty; unparsable (torn) lines skipped."""
    rows: dict[str, str] = {}
    if not path.is_file():
        return rows
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(row, dict)
                and isinstance(row.get("key"), str)
                and isinstance(row.get("caption"), str)
            ):
                rows[row["key"]] = row["caption"]
    return rows


def _ends_torn(path: Path) -> bool:
    """True if ``path`` is non-empty and does not end with a newline (an interrupted write)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) != b"\n"


def _append(path: Path, text: str) -> None:
    """Append ``text`` with a single write to a file opened with O_APPEND (appends do not interleave)."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write on a regular file is rare; finish it
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)
