"""Moved to :mod:`robustrec.media.images` (shared with the captioners, which do not depend on
robustrec.data); these names stay importable from here for existing code."""

from robustrec.media.images import (
    FORMATS,
    MAX_PIXELS,
    UnreadableImage,
    check_image,
    file_sha256,
    inside,
    open_image,
    read_image,
)

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
