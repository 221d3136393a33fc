"""Opening image files, which are untrusted input: the one helper that ingest, the image encoders, the
caption suite and the captioners all use (``robustrec.data.images`` re-exports it).

An image file named by a dataset can be anything: not an image, truncated, a decompression bomb (a
140 KB PNG whose header declares 12,000 x 12,000 pixels decodes to 1.4 GB), a format whose decoder
runs an external program (PIL opens EPS files with Ghostscript), or a FIFO that blocks its reader
forever. :func:`open_image` therefore

- opens regular files only (without blocking: a FIFO is refused, never waited on);
- decodes only common web formats (:data:`FORMATS`);
- reads the size from the header and refuses more than ``max_pixels`` (default :data:`MAX_PIXELS`)
  *before* decoding. The limit is passed per call: PIL's global ``Image.MAX_IMAGE_PIXELS`` is left
  alone, as other code in the process may rely on it;
- raises :class:`UnreadableImage` (a DataError) for all of these.

Every caller treats an unreadable image as a missing one (ingest gives the item the mean image
vector, the caption suite never draws it, a captioner gives it no caption) and counts it.

Image paths named by a dataset must also stay inside their folder: :func:`inside` is the one test,
applied by :mod:`robustrec.data.mmrec` (``items.jsonl``) and :mod:`robustrec.data.readers` (the images
folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from robustrec.errors import DataError, first_line

#: Decoded pixels allowed per image: 40 Mpx is about 120 MB as RGB. Product photos and posters are far
#: smaller (ml100k-mm's posters are 92 x 138; Amazon's product images are about 500 x 500).
MAX_PIXELS = 40_000_000
#: The PIL decoders we trust with untrusted files.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
FORMAT_NAMES = "JPEG, PNG, WebP, GIF or BMP"
#: :func:`check_image` decodes JPEGs at this size (JPEG can decode at 1/2, 1/4 or 1/8 scale): the
#: whole stream is still read, so truncation is still found, for a fraction of the work.
CHECK_SIZE = 64
_CHUNK = 1 << 20

# What PIL's decoders raise on hostile bytes (fuzzing has found each of these at some point).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, ZeroDivisionError,
                  struct.error, Image.DecompressionBombError)


class UnreadableImage(DataError):
    """An image file that cannot be used; ``too_large`` tells a file over the pixel limit apart."""

    def __init__(self, path: str | os.PathLike, reason: str, *, too_large: bool = False) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = Path(path)
        self.reason = reason
        self.too_large = too_large


def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image at ``path`` decoded into memory as RGB; :class:`UnreadableImage` when it cannot be."""
    with _opened(path, max_pixels) as image:
        try:
            image.load()
            return image.convert("RGB")  # a copy: the file is closed on return
        except _DECODE_ERRORS as exc:
            raise UnreadableImage(path, first_line(exc)) from None


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image | None:
    """:func:`open_image`, or ``None`` when the image cannot be read."""
    try:
        return open_image(path, max_pixels)
    except UnreadableImage:
        return None


def check_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why the image at ``path`` cannot be read (the one-line message), or ``None`` when it can.

    Cheaper than :func:`open_image` (JPEGs are decoded at reduced scale, nothing is converted), for
    a caller that only needs to know which images it may use later.
    """
    try:
        with _opened(path, max_pixels) as image:
            try:
                if image.format == "JPEG":
                    image.draft("RGB", (CHECK_SIZE, CHECK_SIZE))
                image.load()
            except _DECODE_ERRORS as exc:
                raise UnreadableImage(path, first_line(exc)) from None
    except UnreadableImage as exc:
        return str(exc)
    return None


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a regular file's bytes, read in chunks; DataError when it cannot be read."""
    with _regular_file(path) as f:
        digest = hashlib.sha256()
        try:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        except OSError as exc:
            raise UnreadableImage(path, exc.strerror or str(exc)) from None
    return digest.hexdigest()


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path``, with ``..`` and every symlink resolved, lies in ``folder`` (also resolved)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


# ---- internals ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _regular_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``path`` opened for reading if it is a regular file. Opened non-blocking and checked on the
    open descriptor, so a FIFO (or a file swapped for one) is refused instead of blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UnreadableImage(path, "the file does not exist") from None
    except OSError as exc:
        raise UnreadableImage(path, exc.strerror or str(exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnreadableImage(path, "not a file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


@contextlib.contextmanager
def _opened(path: str | os.PathLike, max_pixels: int) -> Iterator[Image.Image]:
    """The image at ``path``, header read but not decoded, after the format and size checks."""
    with _regular_file(path) as f:
        try:
            with warnings.catch_warnings():
                # PIL warns above its own (global) limit; ours, checked below, is lower.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(f, formats=FORMATS)
        except Image.DecompressionBombError as exc:  # beyond twice PIL's global limit: refused in open()
            raise UnreadableImage(path, first_line(exc), too_large=True) from None
        except Image.UnidentifiedImageError:
            raise UnreadableImage(path, f"not a {FORMAT_NAMES} image") from None
        except _DECODE_ERRORS as exc:
            raise UnreadableImage(path, first_line(exc)) from None
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise UnreadableImage(
                    path, f"{width} x {height} pixels, over the limit of {max_pixels:,}", too_large=True
                )
            yield image


__all__ = [
    "FORMATS",
    "MAX_PIXELS",
    "UnreadableImage",
    "check_image",
    "file_sha256",
    "inside",
    "open_image",
    "read_image",
]
