"""Recipes: study specs shipped with the package, one per table or figure of the Mirror Gradient paper.

A recipe is an ordinary study spec (TOML, see :mod:`robustrec.studies.spec`) stored in
``robustrec/studies/recipes/<name>.toml``; ``robustrec study run table4_noise --out OUT`` runs one,
``robustrec study list`` shows them with their one-line ``[study].description``. Each file says in
comments where it departs from the paper (dataset, captioner, model set, grids).

:func:`quick` is the ``--quick`` override: it shrinks any spec (few epochs, one seed, a 2-point grid
per parameter, one audit repeat at two severities) so that every recipe runs on the embedded default
dataset in seconds. It works on the raw TOML dict, before validation, so a quick spec is validated
exactly as a full one is.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from robustrec.errors import ConfigError, DataError

try:  # Python 3.11+; tomli is the same parser for 3.10
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

RECIPES_DIR = Path(__file__).with_name("recipes")

# What --quick keeps: enough to exercise every part of a study (training, early stopping, a grid with
# a choice to make, every audit at more than one severity), and nothing more.
QUICK_EPOCHS = 2
QUICK_PATIENCE = 1
QUICK_GRID_POINTS = 2
QUICK_SEVERITIES = 2
QUICK_REPEATS = 1


def recipe_names() -> list[str]:
    """The shipped recipes (the file names without ``.toml``), in natural order: table3 before table10."""
    return sorted((path.stem for path in RECIPES_DIR.glob("*.toml")), key=_natural)


def _natural(name: str) -> list[Any]:
    """``"table10_beta"`` -> ``["table", 10, "_beta"]``: numbers compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def recipe_path(name: str) -> Path:
    """The spec file of recipe ``name``; an unknown name is a ConfigError that lists the recipes."""
    names = recipe_names()
    if name not in names:
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(names)} (or give a spec file path)")
    return RECIPES_DIR / f"{name}.toml"


def recipe_summary(name: str) -> str:
    """The one-line summary of recipe ``name``: its ``[study].description`` ('' when it has none)."""
    path = recipe_path(name)
    study = read_toml(path).get("study", {})
    description = study.get("description", "") if isinstance(study, dict) else ""
    return " ".join(str(description).split())  # one line, whatever the TOML string held


def resolve(name_or_path: str | Path) -> Path:
    """The spec file meant by ``name_or_path``: an existing file wins, else a recipe name.

    Something that can only be a path (it ends in ``.toml`` or holds a folder separator) and does not
    exist is reported as a missing file, not as an unknown recipe.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    text = str(name_or_path)
    if path.suffix == ".toml" or "/" in text or "\\" in text:
        raise ConfigError(f"no spec file {text} (recipes: {', '.join(recipe_names())})")
    return recipe_path(text)


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``; unreadable or malformed TOML is a one-line DataError naming it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise DataError(f"{path}: cannot read the spec ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"{path}: not valid TOML ({e})") from None


def quick(raw: dict[str, Any]) -> dict[str, Any]:
    """A NEW spec dict: ``raw`` shrunk to run in seconds (``raw`` itself is not changed).

    ``[train]`` epochs = 2 and patience = 1; ``[study].seeds``: the first seed only; every grid list:
    its first 2 values; every audit: repeats = 1 and its first 2 severities. Values of the wrong shape
    are left as they are, for the spec's validation to report.
    """
    spec = copy.deepcopy(raw)
    train = spec.setdefault("train", {})
    if isinstance(train, dict):
        train.update(epochs=QUICK_EPOCHS, patience=QUICK_PATIENCE)
    study = spec.get("study")
    if isinstance(study, dict) and isinstance(study.get("seeds"), list):
        study["seeds"] = study["seeds"][:1]
    for run in _tables(spec, "runs"):
        if isinstance(run.get("grid"), dict):
            run["grid"] = {name: _head(values, QUICK_GRID_POINTS) for name, values in run["grid"].items()}
    for audit in _tables(spec, "audits"):
        audit["repeats"] = QUICK_REPEATS
        if "severities" in audit:
            audit["severities"] = _head(audit["severities"], QUICK_SEVERITIES)
    return spec


def _tables(spec: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The tables of array ``key`` ([[runs]] or [[audits]]) that are tables."""
    tables = spec.get(key)
    return [t for t in tables if isinstance(t, dict)] if isinstance(tables, list) else []


def _head(values: Any, n: int) -> Any:
    return values[:n] if isinstance(values, list) else values
