"""Read and write MMRec-format dataset folders.

A folder ``DIR`` holds:

- ``<DIR name>.inter``: tab-separated with a header naming at least ``userID``, ``itemID`` and
  ``x_label`` (0 train, 1 valid, 2 test); ``rating`` and ``timestamp`` are optional and not used
  (but must be finite numbers when present).
- ``image_feat.npy`` and/or ``text_feat.npy``: float matrices with one row per item (any width).
- ``items.jsonl`` (optional): one JSON object per item, ``{"item", "orig_id", "text", "image"}``,
  which the caption audit reads. Relative image paths are resolved against ``images_root`` when
  given (and the file exists there), else against ``DIR``. A path that, with ``..`` and symlinks
  resolved, lies outside both ``DIR`` and ``images_root`` is never handed out (the item's ``image``
  is None) and is counted in ``Dataset.summary["images_outside"]`` (with the first case, file, line
  and item, in ``"images_outside_first"``); the caption suite refuses such a dataset, as it would
  otherwise open, and caption into its records, any file on the machine. Commands that never read
  images (train, evaluate) are unaffected.
- ``features.json`` (optional): the encoders that produced the features,
  ``{"text": <encoder spec>, "image": <encoder spec>, "text_template": "..."}`` (see
  :mod:`robustrec.data.encoders`). Without it, 384-d text features are taken to be MiniLM's.

Users must be numbered ``0..U-1``, each occurring in the ``.inter`` file, as MMRec re-indexes them;
items likewise unless the feature files give the item count (then ids must be below it). Ids must be
below 2**31, and ratings and timestamps, where present, finite numbers. So a small file can never make
robustrec allocate a table for 2**62 users.

As in MMRec, validation and test interactions of users who have no training interaction are dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustrec.data.dataset import Dataset, ItemFeatures, ItemInfo
from robustrec.data.values import ID_LIMIT, bounded_int, finite_number
from robustrec.errors import DataError
from robustrec.io import atomic_path, loads_json, write_json, write_jsonl
from robustrec.media.images import inside

FEATURE_FILES = {"image": "image_feat.npy", "text": "text_feat.npy"}
ENCODERS_FILE = "features.json"
MINILM_DIM = 384
REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
NUMBER_COLUMNS = ("rating", "timestamp")  # optional; not used, but refused when not finite
LABELS = {"0": 0, "1": 1, "2": 2}


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
    """Return ``(pairs [n, 2] int64, labels [n] int64)`` from an MMRec ``.inter`` file.

    Every id, label and (when present) rating and timestamp is checked as it is read, so the error
    names its line (see :mod:`robustrec.data.values`).
    """
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n").split("\t")
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}: header lacks column(s) {', '.join(missing)}")
            user_col, item_col, label_col = (header.index(c) for c in REQUIRED_COLUMNS)
            numbers = [(header.index(c), c) for c in NUMBER_COLUMNS if c in header]
            width = len(header)
            rows = []
            for lineno, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                parts = line.split("\t")
                where = f"{path}:{lineno}"
                if len(parts) != width:
                    raise DataError(f"{where}: expected {width} tab-separated fields, got {len(parts)}")
                user, item = parts[user_col].strip(), parts[item_col].strip()
                if not (user.isascii() and user.isdigit() and item.isascii() and item.isdigit()):
                    raise DataError(f"{where}: userID, itemID and x_label must be integers (ids from 0), "
                                    f"got {user[:40]!r} and {item[:40]!r}")
                label = LABELS.get(parts[label_col].strip())
                if label is None:
                    raise DataError(f"{where}: x_label must be 0, 1 or 2, got {parts[label_col][:40]!r}")
                for column, name in numbers:
                    finite_number(parts[column], where, name)
                rows.append((bounded_int(user, where, "userID"), bounded_int(item, where, "itemID"), label))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    if not rows:
        raise DataError(f"{path}: no interactions")
    table = np.asarray(rows, dtype=np.int64)
    return table[:, :2], table[:, 2]


def check_contiguous(ids: np.ndarray, path: Path, what: str) -> int:
    """The count ``n`` of distinct ``ids``, which must be exactly ``0..n-1``: a table with one row per
    id is then no larger than the file that names them."""
    distinct = np.unique(ids)
    n = len(distinct)
    if int(distinct[-1]) != n - 1:
        raise DataError(
            f"{path}: {what} ids must be 0..{n - 1} (each used, as MMRec re-indexes from 0); "
            f"found {n} distinct ids up to {int(distinct[-1])}"
        )
    return n


def read_features(path: Path, modality: str) -> torch.Tensor:
    """A 2-d float32 feature matrix from a ``.npy`` file: never unpickled, and memory-mapped first so
    that a header declaring a huge shape fails on the file's real size instead of allocating it."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(mapped, np.ndarray):  # an .npz archive under a .npy name
        mapped.close()
        raise DataError(f"{path}: not a .npy array (an .npz archive?)")
    if mapped.ndim != 2 or mapped.dtype.kind not in "fiu" or 0 in mapped.shape:
        raise DataError(
            f"{path}: {modality} features must be a non-empty 2-d array of real numbers, "
            f"got shape {mapped.shape} of {mapped.dtype}"
        )
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        array = np.array(mapped, dtype=np.float32)  # reads the file; the map is released with ``mapped``
    del mapped
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise DataError(
            f"{path}: {int(bad.sum())} rows contain NaN or inf (as float32); first row {int(np.argmax(bad))}"
        )
    return torch.from_numpy(array)


def read_items(path: Path, root: Path, images_root: Path | None) -> tuple[tuple[ItemInfo, ...], list[str]]:
    """The rows of ``items.jsonl``, checked: JSON objects with an integer ``item``, a string ``text``
    and ``image`` (or null), a string or integer ``orig_id``. Returns the items and a message per
    image path that leaves its folders (those items get no image; see the module docstring)."""
    bases = [b.resolve() for b in (images_root, root) if b is not None]
    infos: dict[int, ItemInfo] = {}
    outside: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    where = f"{path}:{lineno}"
                    index, info, escape = _item_row(loads_json(line, where), where, bases)
                    infos[index] = info
                    if escape:
                        outside.append(escape)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    n = len(infos)
    if sorted(infos) != list(range(n)):
        raise DataError(f"{path}: item indices must be 0..{n - 1}, each once")
    return tuple(infos[i] for i in range(n)), outside


def _item_row(row: object, where: str, bases: list[Path]) -> tuple[int, ItemInfo, str | None]:
    """One checked row: its index, its item and, when its image leaves ``bases``, why (then the item
    has no image)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    index = row.get("item")
    if isinstance(index, bool) or not isinstance(index, (int, str)):
        raise DataError(f"{where}: 'item' must be an integer, got {type(index).__name__}")
    index = bounded_int(str(index), where, "'item'", ID_LIMIT)
    text, image, orig_id = row.get("text"), row.get("image"), row.get("orig_id", index)
    if text is not None and not isinstance(text, str):
        raise DataError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    if image is not None and not isinstance(image, str):
        raise DataError(f"{where}: 'image' must be a string or null, got {type(image).__name__}")
    if isinstance(orig_id, bool) or not isinstance(orig_id, (int, str)):
        raise DataError(f"{where}: 'orig_id' must be a string or an integer, got {type(orig_id).__name__}")
    resolved = _resolve_image(image, bases) if image else None
    if resolved is None or any(inside(resolved, base) for base in bases):
        return index, ItemInfo(orig_id=str(orig_id), text=text or "", image=resolved), None
    folders = f"the dataset folder {bases[-1]}" + (f" and the images folder {bases[0]}" if len(bases) > 1 else "")
    escape = f"{where}: item {index}'s image {image!r} resolves to {resolved}, outside {folders}"
    return index, ItemInfo(orig_id=str(orig_id), text=text or "", image=None), escape


def _resolve_image(image: str, bases: list[Path]) -> Path:
    """``image`` with ``..`` and symlinks resolved; a relative path is taken against the first of
    ``bases`` (images root, dataset folder) where it exists, else against the first."""
    path = Path(image)
    candidates = [path] if path.is_absolute() else [base / path for base in bases]
    return next((c for c in candidates if c.exists()), candidates[0]).resolve()


def read_encoders(folder: Path, text_width: int | None) -> dict:
    """The encoder record of ``folder`` (its ``features.json``; a MiniLM guess for 384-d text)."""
    path = folder / ENCODERS_FILE
    if not path.is_file():
        return {"text": {"encoder": "minilm"}} if text_width == MINILM_DIM else {}
    record = loads_json(path.read_bytes(), path)
    if not isinstance(record, dict):
        raise DataError(f"{path}: expected a JSON object")
    return record


def load_dataset(folder: str | Path, images_root: str | Path | None = None) -> Dataset:
    """Load an MMRec-format folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    inter = find_inter_file(folder)
    pairs, labels = read_inter(inter)

    features = {}
    for modality, filename in FEATURE_FILES.items():
        if (folder / filename).is_file():
            features[modality] = read_features(folder / filename, modality)
    items_path = folder / "items.jsonl"
    items, outside = (read_items(items_path, folder, Path(images_root) if images_root else None)
                      if items_path.is_file() else (None, []))

    n_users = check_contiguous(pairs[:, 0], inter, "user")
    max_item = int(pairs[:, 1].max())
    widths = {m: t.shape[0] for m, t in features.items()}
    if len(set(widths.values())) > 1:
        raise DataError(f"{folder}: feature files disagree on the item count: {widths}")
    # With features, items without interactions are allowed (the feature files bound the count).
    n_items = next(iter(widths.values())) if widths else check_contiguous(pairs[:, 1], inter, "item")
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
        summary={"dropped_cold_interactions": dropped, "images_outside": len(outside),
                 "images_outside_first": outside[0] if outside else None},
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
