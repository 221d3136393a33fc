"""Read and write MMRec-format dataset folders.

A folder ``DIR`` holds:

- ``<DIR name>.inter``: tab-separated with a header naming at least ``userID``, ``itemID`` and
  ``x_label`` (0 train, 1 valid, 2 test); ``rating`` and ``timestamp`` are optional and ignored.
- ``image_feat.npy`` and/or ``text_feat.npy``: float matrices with one row per item (any width).
- ``items.jsonl`` (optional): one JSON object per item, ``{"item", "orig_id", "text", "image"}``,
  which the caption audit reads. Relative image paths are resolved against ``DIR`` (or ``images_root``).
- ``features.json`` (optional): the encoders that produced the features,
  ``{"text": <encoder spec>, "image": <encoder spec>, "text_template": "..."}`` (see
  :mod:`robustrec.data.encoders`). Without it, 384-d text features are taken to be MiniLM's.

As in MMRec, validation and test interactions of users who have no training interaction are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from robustrec.data.dataset import Dataset, ItemFeatures, ItemInfo
from robustrec.errors import DataError
from robustrec.io import atomic_path, write_json, write_jsonl

FEATURE_FILES = {"image": "image_feat.npy", "text": "text_feat.npy"}
ENCODERS_FILE = "features.json"
MINILM_DIM = 384
REQUIRED_COLUMNS = ("userID", "itemID", "x_label")


def find_inter_file(folder: Path) -> Path:
    preferred = folder / f"{folder.name}.inter"
    if preferred.is_file():
        return preferred
    candidates = sorted(folder.glob("*.inter"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataError(f"{folder}: no .inter file (expected {preferred.name})")
    raise DataError(f"{folder}: several .inter files and none named {preferred.name}")


def read_inter(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(pairs [n, 2] int64, labels [n] int64)`` from an MMRec ``.inter`` file."""
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n").split("\t")
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}: header lacks column(s) {', '.join(missing)}")
            cols = [header.index(c) for c in REQUIRED_COLUMNS]
            width = len(header)
            rows = []
            for lineno, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                parts = line.split("\t")
                if len(parts) != width:
                    raise DataError(f"{path}:{lineno}: expected {width} tab-separated fields, got {len(parts)}")
                try:
                    rows.append([int(parts[c]) for c in cols])
                except ValueError:
                    raise DataError(f"{path}:{lineno}: userID, itemID and x_label must be integers") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    if not rows:
        raise DataError(f"{path}: no interactions")
    table = np.asarray(rows, dtype=np.int64)
    if (table[:, :2] < 0).any():
        raise DataError(f"{path}: negative user or item id")
    bad = ~np.isin(table[:, 2], (0, 1, 2))
    if bad.any():
        raise DataError(f"{path}: x_label must be 0, 1 or 2 (found {table[bad, 2][0]})")
    return table[:, :2], table[:, 2]


def read_features(path: Path, modality: str) -> torch.Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: {modality} features must be a 2-d numeric array, got shape {array.shape}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        rows = int((~np.isfinite(array)).any(axis=1).sum())
        raise DataError(f"{path}: {rows} rows contain NaN or inf")
    return torch.from_numpy(np.ascontiguousarray(array))


def read_items(path: Path, root: Path, images_root: Path | None) -> tuple[ItemInfo, ...]:
    infos: dict[int, ItemInfo] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                index = int(row["item"])
                text = str(row.get("text") or "")
                image = row.get("image")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise DataError(f"{path}:{lineno}: expected a JSON object with an integer 'item'") from None
            infos[index] = ItemInfo(
                orig_id=str(row.get("orig_id", index)), text=text, image=_resolve_image(image, root, images_root)
            )
    n = len(infos)
    if sorted(infos) != list(range(n)):
        raise DataError(f"{path}: item indices must be 0..{n - 1}, each once")
    return tuple(infos[i] for i in range(n))


def _resolve_image(image: str | None, root: Path, images_root: Path | None) -> Path | None:
    if not image:
        return None
    path = Path(image)
    if path.is_absolute():
        return path
    for base in (images_root, root):
        if base is not None and (base / path).exists():
            return base / path
    if images_root is not None:
        return images_root / path
    return root / path


def read_encoders(folder: Path, text_width: int | None) -> dict:
    """The encoder record of ``folder`` (its ``features.json``; a MiniLM guess for 384-d text)."""
    path = folder / ENCODERS_FILE
    if not path.is_file():
        return {"text": {"encoder": "minilm"}} if text_width == MINILM_DIM else {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path}: not valid JSON") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: expected a JSON object")
    return record


def load_dataset(folder: str | Path, images_root: str | Path | None = None) -> Dataset:
    """Load an MMRec-format folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    pairs, labels = read_inter(find_inter_file(folder))

    features = {}
    for modality, filename in FEATURE_FILES.items():
        if (folder / filename).is_file():
            features[modality] = read_features(folder / filename, modality)
    items_path = folder / "items.jsonl"
    items = read_items(items_path, folder, Path(images_root) if images_root else None) if items_path.is_file() else None

    n_users = int(pairs[:, 0].max()) + 1
    max_item = int(pairs[:, 1].max())
    widths = {m: t.shape[0] for m, t in features.items()}
    if len(set(widths.values())) > 1:
        raise DataError(f"{folder}: feature files disagree on the item count: {widths}")
    n_items = next(iter(widths.values())) if widths else max_item + 1
    if max_item >= n_items:
        raise DataError(
            f"{folder}: item id {max_item} is out of range: the feature files have {n_items} rows"
        )

    train = pairs[labels == 0]
    if len(train) == 0:
        raise DataError(f"{folder}: no training interactions (x_label 0)")
    known = np.zeros(n_users, dtype=bool)
    known[train[:, 0]] = True
    valid = pairs[labels == 1]
    test = pairs[labels == 2]
    dropped = int((~known[valid[:, 0]]).sum() + (~known[test[:, 0]]).sum())
    valid, test = valid[known[valid[:, 0]]], test[known[test[:, 0]]]
    return Dataset(
        name=folder.name,
        n_users=n_users,
        n_items=n_items,
        train=np.ascontiguousarray(train),
        valid=np.ascontiguousarray(valid),
        test=np.ascontiguousarray(test),
        features=ItemFeatures(**features),
        items=items,
        root=folder.resolve(),
        summary={"dropped_cold_interactions": dropped},
        encoders=read_encoders(folder, features["text"].shape[1] if "text" in features else None),
    )


def write_dataset(
    folder: str | Path,
    pairs: np.ndarray,
    labels: np.ndarray,
    features: dict[str, np.ndarray],
    items: list[dict] | None = None,
    extra_columns: dict[str, np.ndarray] | None = None,
    encoders: dict | None = None,
) -> Path:
    """Write an MMRec-format folder; each file is written whole (temporary name, then rename).

    ``encoders`` (the encoder specs and text template) is written to ``features.json``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extra_columns = extra_columns or {}
    with atomic_path(folder / f"{folder.name}.inter") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            names = ["userID", "itemID", *extra_columns, "x_label"]
            f.write("\t".join(names) + "\n")
            extras = [extra_columns[c] for c in extra_columns]
            for row, (u, i) in enumerate(pairs):
                fields = [str(int(u)), str(int(i)), *(_fmt(col[row]) for col in extras), str(int(labels[row]))]
                f.write("\t".join(fields) + "\n")
    for modality, array in features.items():
        with atomic_path(folder / FEATURE_FILES[modality]) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(array, dtype=np.float32))
    if items is not None:
        write_jsonl(folder / "items.jsonl", items)
    if encoders is not None:
        write_json(folder / ENCODERS_FILE, encoders)
    return folder


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)
