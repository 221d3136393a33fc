"""Shared fixtures: a tiny synthetic multimodal dataset built in milliseconds, and the real
ml100k-mm dataset when ../shared is present (tests that need it skip otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from robustrec.data.dataset import Dataset, ItemFeatures, ItemInfo

# Tests never download: any hub access fails fast instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ROBUSTREC_SHARED", REPO.parent / "shared"))
ML100K = SHARED / "datasets" / "ml100k-mm"


def make_tiny_dataset(
    root: Path | None = None, n_users: int = 40, n_items: int = 30, seed: int = 0, with_images: bool = False
) -> Dataset:
    """Users and items with latent tastes; ~8 interactions per user split 6/1/1."""
    rng = np.random.default_rng(seed)
    users_latent = rng.normal(size=(n_users, 4))
    items_latent = rng.normal(size=(n_items, 4))
    affinity = users_latent @ items_latent.T
    train, valid, test = [], [], []
    for u in range(n_users):
        liked = np.argsort(-affinity[u] + rng.normal(scale=0.5, size=n_items))[:8]
        train += [(u, i) for i in liked[:6]]
        valid.append((u, liked[6]))
        test.append((u, liked[7]))
    image = torch.tensor(items_latent @ rng.normal(size=(4, 12)) + rng.normal(scale=0.1, size=(n_items, 12)),
                         dtype=torch.float32)
    text = torch.tensor(items_latent @ rng.normal(size=(4, 8)) + rng.normal(scale=0.1, size=(n_items, 8)),
                        dtype=torch.float32)
    items = None
    if with_images:
        from PIL import Image

        assert root is not None
        root.mkdir(parents=True, exist_ok=True)
        infos = []
        for i in range(n_items):
            path = None
            if i % 10 != 9:  # every tenth item has no image
                color = tuple(int(c) for c in rng.integers(0, 255, size=3))
                path = root / f"item{i}.png"
                Image.new("RGB", (32, 32), color).save(path)
            infos.append(ItemInfo(orig_id=f"i{i}", text=f"item {i} with taste {items_latent[i, 0]:.2f}", image=path))
        items = tuple(infos)
    return Dataset(
        name="tiny",
        n_users=n_users,
        n_items=n_items,
        train=np.array(train, dtype=np.int64),
        valid=np.array(valid, dtype=np.int64),
        test=np.array(test, dtype=np.int64),
        features=ItemFeatures(image=image, text=text),
        items=items,
        root=root,
    )


@pytest.fixture(scope="session")
def tiny() -> Dataset:
    return make_tiny_dataset()


@pytest.fixture(scope="session")
def tiny_with_images(tmp_path_factory) -> Dataset:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny-images"), with_images=True)


@pytest.fixture(scope="session")
def shop(tiny_with_images) -> Dataset:
    """``tiny_with_images`` with text features made from its item texts (as ingest makes them)."""
    from robustrec.data.encoders import HashingTextEncoder

    texts = [info.text for info in tiny_with_images.items]
    text = torch.from_numpy(HashingTextEncoder(dim=8).encode(texts))
    return tiny_with_images.with_features(tiny_with_images.features.replace(text=text))


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    if not (ML100K / "ratings.csv").is_file():
        pytest.skip(f"ml100k-mm not found at {ML100K} (set ROBUSTREC_SHARED to the shared folder)")
    return ML100K
