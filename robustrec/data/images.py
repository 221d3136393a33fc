"""Moved to :mod:`robustrec.media.images` (shared with the captioners, which do not depend on
robustrec.data); its names stay importable from here for existing code."""

from robustrec.media.images import *  # noqa: F403
from robustrec.media.images import __all__  # noqa: F401
