"""Where robustrec caches things, and how cache entries are named.

Two disk caches key entries by (the spec of what made the entry, the sha256 of the input's content):
the feature cache of :mod:`robustrec.data.encoders` (a vector per text or image file) and the caption
cache of :mod:`captioning.cache` (a caption per image file). Both live under :func:`cache_root`.

A spec is a small JSON-able dict (``{"encoder": "minilm", "model": ..., "max_length": 256}``). It is
hashed through its canonical JSON, with sorted keys. The two caches grew up apart and spell that JSON
differently (see :func:`spec_json`); both spellings stay, because the keys of caches already on
users' disks are made from them (``tests/data/test_unchanged_outputs.py`` pins them).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The environment variable that moves the cache root.
CACHE_ENV = "ROBUSTREC_CACHE"


def cache_root() -> Path:
    """``$ROBUSTREC_CACHE`` (``~`` expanded) if set, else ``~/.cache/robustrec``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robustrec"


def spec_json(spec: Mapping[str, Any] | Sequence[Any], *, compact: bool = True) -> str:
    """The canonical JSON of a spec (or a list of specs): sorted keys.

    ``compact`` (the caption cache's spelling): no spaces, non-ASCII characters as they are.
    Otherwise (the feature cache's and the default dataset's): ``json.dumps``'s defaults, with
    ``", "`` and ``": "`` separators and non-ASCII characters escaped.
    """
    if compact:
        return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(spec, sort_keys=True)


def spec_sha256(spec: Mapping[str, Any] | Sequence[Any], *, compact: bool = True) -> str:
    """sha256 hex digest of :func:`spec_json` (UTF-8)."""
    return content_sha256(spec_json(spec, compact=compact))


def content_sha256(content: str | bytes) -> str:
    """sha256 hex digest of ``content`` (a text is hashed as its UTF-8 bytes)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()


__all__ = ["CACHE_ENV", "cache_root", "content_sha256", "spec_json", "spec_sha256"]
