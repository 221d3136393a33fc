"""MMRec's preprocessing of interactions: ids re-indexed, duplicates collapsed, the k-core filter and
the per-user random split. Used by ``robustrec ingest`` (:mod:`robustrec.data.ingest`) and the
synthetic default dataset (:mod:`robustrec.data.synthetic`).

Every row is a positive; duplicate (user, item) pairs are collapsed (the earliest, then the first in
the file, is kept); a k-core filter is repeated until stable; users and items are re-indexed from 0
in ascending order of their original ids (numeric order when every id is an integer); then the
per-user random split of :func:`split_labels`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robustrec.errors import ConfigError, DataError

_INTEGER = re.compile(r"0|[1-9]\d{0,17}")  # plain integers that fit in 64 bits


@dataclass(frozen=True)
class Split:
    """Filtered, re-indexed and split interactions, in output order.

    ``rows`` index the input interactions; ``user_codes``/``item_codes`` give, per new index, the
    input code of that user or item.
    """

    rows: np.ndarray
    pairs: np.ndarray
    labels: np.ndarray
    user_codes: np.ndarray
    item_codes: np.ndarray
    n_duplicates: int
    k_core_rounds: int

    @property
    def counts(self) -> tuple[int, int, int]:
        train, valid, test = np.bincount(self.labels, minlength=3)[:3]
        return int(train), int(valid), int(test)


def encode_ids(ids: Sequence[str]) -> tuple[np.ndarray, list[int] | list[str]]:
    """Codes ``0..m-1`` in ascending id order and the ids in that order.

    Ids are compared as exact strings; when every id is a plain integer (``0`` or no leading zero)
    of at most 18 digits they are ordered and returned as numbers, otherwise as strings in
    lexicographic order.
    """
    uniques, codes = np.unique(np.array(ids, dtype=str), return_inverse=True)
    strings = [str(u) for u in uniques]
    if not all(_INTEGER.fullmatch(u) for u in strings):
        return codes.astype(np.int64), strings
    numbers = [int(u) for u in strings]
    by_value = sorted(range(len(numbers)), key=numbers.__getitem__)
    rank = np.empty(len(numbers), dtype=np.int64)
    rank[by_value] = np.arange(len(numbers))
    return rank[codes], [numbers[j] for j in by_value]


def first_of_pairs(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
    """Row indices (ascending) that keep one row per (user, item): the earliest, then the first."""
    if len(users) == 0:
        return np.zeros(0, dtype=np.int64)
    key = users.astype(np.int64) * (int(items.max()) + 1) + items
    times = timestamps if timestamps is not None else np.zeros(len(users), dtype=np.int64)
    order = np.lexsort((np.arange(len(key)), times, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    return np.sort(order[first])


def k_core(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Drop users and items with fewer than ``k`` interactions, repeated until nothing changes.

    Returns the mask of kept rows and the number of rounds that removed something.
    """
    keep = np.ones(len(users), dtype=bool)
    if k <= 1 or len(users) == 0:
        return keep, 0
    rounds = 0
    while True:
        user_count = np.bincount(users[keep], minlength=int(users.max()) + 1)
        item_count = np.bincount(items[keep], minlength=int(items.max()) + 1)
        bad = keep & ((user_count[users] < k) | (item_count[items] < k))
        if not bad.any():
            return keep, rounds
        keep &= ~bad
        rounds += 1


def split_labels(users: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MMRec's per-user random split of interactions whose users are re-indexed ``0..U-1``.

    The rows are shuffled with ``numpy.random.RandomState(seed).permutation`` (what pandas'
    ``sample(frac=1, random_state=seed)`` draws) and grouped by user, keeping that order. A user with
    ``n < 10`` rows gets ``n-2`` train, 1 valid, 1 test; otherwise ``int(0.2 n)`` are held out, half
    (rounded down) valid and the rest test. Users with one or two rows keep at least one train row.
    Returns ``(order, labels)``: the row order grouped by user and a label (0/1/2) per ordered row.
    """
    n = len(users)
    perm = np.random.RandomState(seed).permutation(n)
    order = perm[np.argsort(users[perm], kind="stable")]
    grouped = users[order]
    counts = np.bincount(grouped)
    rank = np.arange(n) - (np.cumsum(counts) - counts)[grouped]
    size = counts[grouped]
    held = np.minimum(np.where(size < 10, 2, (size * 0.2).astype(np.int64)), size - 1)
    n_train = size - held
    labels = np.where(rank < n_train, 0, np.where(rank < n_train + held // 2, 1, 2))
    return order, labels.astype(np.int64)


def prepare_split(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None = None, k: int = 5, seed: int = 999
) -> Split:
    """Collapse duplicates, apply the k-core filter, re-index and split (codes must be >= 0).

    New indices follow ascending code order, so codes from :func:`encode_ids` give ascending ids.
    """
    if k < 1:
        raise ConfigError(f"k-core must be >= 1, got {k}")
    unique = first_of_pairs(users, items, timestamps)
    keep, rounds = k_core(users[unique], items[unique], k)
    rows = unique[keep]
    if len(rows) == 0:
        raise DataError(f"no interactions left after the {k}-core filter (from {len(unique):,}); try a smaller k-core")
    user_codes, new_users = np.unique(users[rows], return_inverse=True)
    item_codes, new_items = np.unique(items[rows], return_inverse=True)
    order, labels = split_labels(new_users.astype(np.int64), seed)
    pairs = np.stack([new_users[order], new_items[order]], axis=1).astype(np.int64)
    return Split(rows[order], pairs, labels, user_codes, item_codes, len(users) - len(unique), rounds)


__all__ = ["Split", "encode_ids", "first_of_pairs", "k_core", "prepare_split", "split_labels"]
