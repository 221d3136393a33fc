"""Image files are untrusted input: one opening helper caps decoded pixels, refuses formats and
files that are not images, and never blocks; image paths stay inside their dataset folder (or the
--images root); ingest copies images into the dataset and refuses symlinks that leave the images
folder."""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perturbations.caption import check_image_paths
from robustrec.data import load_dataset
from robustrec.data.encoders import PixelImageEncoder, encode_image_files
from robustrec.data.ingest import copy_images, ingest_csv
from robustrec.data.mmrec import write_dataset
from robustrec.errors import DataError
from robustrec.io import read_jsonl
from robustrec.media.images import UnreadableImage, check_image, file_sha256, open_image, read_image

from .image_helpers import png_declaring

FAST = {"text_encoder": "hashing", "image_encoder": "pixels", "use_cache": False}


def _save(path: Path, size=(20, 30), color=(200, 40, 40), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def _truncated(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.effect_noise((200, 200), 60).convert("RGB").save(buffer, "JPEG" if path.suffix == ".jpg" else "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


# ---- the shared opening helper -------------------------------------------------------------------------
def test_a_declared_huge_size_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(12_000, 12_000))  # 144 Mpx: 1.4 GB once decoded
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self) or None)
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(UnreadableImage, match=r"bomb.png: 12000 x 12000 pixels, over the limit") as info:
        open_image(bomb)
    assert info.value.too_large and decoded == []
    assert read_image(bomb) is None and "over the limit" in check_image(bomb)
    assert Image.MAX_IMAGE_PIXELS == limit_before  # the limit is ours, per open: PIL's global is untouched


def test_pixel_limit_is_exact(tmp_path):
    path = _save(tmp_path / "a.png", size=(100, 50))
    assert open_image(path, max_pixels=5000).size == (100, 50)
    with pytest.raises(UnreadableImage, match="100 x 50 pixels, over the limit of 4,999"):
        open_image(path, max_pixels=4999)


def test_header_beyond_pils_own_bomb_limit_is_too_large_too(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_declaring(100_000, 100_000))
    with pytest.raises(UnreadableImage) as info:
        open_image(path)
    assert info.value.too_large


@pytest.mark.parametrize("name", ["t.png", "t.jpg"])
def test_truncated_images_are_unreadable_in_open_and_in_check(tmp_path, name):
    path = _truncated(tmp_path / name)
    with pytest.raises(UnreadableImage, match=name) as info:
        open_image(path)
    assert not info.value.too_large
    assert check_image(path) is not None and read_image(path) is None


def test_good_images_open_as_rgb_and_check_clean(tmp_path):
    path = _save(tmp_path / "good.jpg", size=(640, 480))
    image = open_image(path)
    assert image.mode == "RGB" and image.size == (640, 480)
    assert check_image(path) is None


@pytest.mark.parametrize(("name", "fmt"), [("x.tiff", "TIFF"), ("x.png", "TIFF"), ("x.ico", "ICO")])
def test_only_common_web_formats_are_opened(tmp_path, name, fmt):
    path = _save(tmp_path / name, size=(16, 16), fmt=fmt)
    with pytest.raises(UnreadableImage, match="not a JPEG, PNG, WebP, GIF or BMP image"):
        open_image(path)


def test_non_files_are_unreadable_and_never_block(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result: list = []
    reader = threading.Thread(target=lambda: result.append(read_image(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "wb"):
            pass
    assert result == [None]
    assert read_image(tmp_path) is None and read_image(tmp_path / "absent.png") is None
    assert "not a file" in check_image(fifo) and "does not exist" in check_image(tmp_path / "absent.png")


def test_file_sha256_streams_the_bytes(tmp_path):
    import hashlib

    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(3 * 2**20 + 5))
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="cannot read .*absent"):
        file_sha256(tmp_path / "absent")


def test_encoder_treats_a_bomb_as_unreadable_and_says_why(tmp_path):
    good, bomb = _save(tmp_path / "good.png"), tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(12_000, 12_000))
    result = encode_image_files(PixelImageEncoder(), [good, bomb], None)
    assert result.ok.tolist() == [True, False] and not result.features[1].any()
    assert result.problems[1].too_large and "over the limit" in str(result.problems[1])
    assert list(result.problems) == [1]


# ---- ingest: bombs, unreadable files, symlinks, a self-contained dataset --------------------------------
def _shop(tmp_path: Path, n_users: int = 8, n_items: int = 6) -> tuple[Path, Path]:
    rows = ["user_id,item_id"] + [f"{u},{10 + i}" for u in range(n_users) for i in range(n_items) if i != u % n_items]
    ratings = tmp_path / "raw" / "ratings.csv"
    ratings.parent.mkdir(parents=True)
    ratings.write_text("\n".join(rows) + "\n")
    images = tmp_path / "raw" / "images"
    for i in range(n_items - 1):  # the last item has no image
        _save(images / f"{10 + i}.png", color=(40 * i, 90, 200 - 30 * i))
    return ratings, images


def test_ingest_counts_a_bomb_as_unreadable_with_a_warning(tmp_path, caplog):
    ratings, images = _shop(tmp_path)
    (images / "11.png").write_bytes(png_declaring(12_000, 12_000))
    with caplog.at_level(logging.WARNING, logger="robustrec"):
        summary = ingest_csv(ratings, tmp_path / "out", images=images, k_core=2, **FAST)
    assert summary.unreadable_images == 1 and summary.without_image == 2
    (warning,) = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert "11.png" in warning and "pixel" in warning and "\n" not in warning
    rows = read_jsonl(summary.out / "items.jsonl")
    assert rows[1]["image"] is None  # unreadable is missing, as the caption audit will see it too


def test_ingest_copies_images_into_the_dataset(tmp_path):
    ratings, images = _shop(tmp_path)
    summary = ingest_csv(ratings, tmp_path / "out" / "shop", images=images, k_core=2, **FAST)
    rows = read_jsonl(summary.out / "items.jsonl")
    assert [r["image"] for r in rows] == [f"images/{10 + i}.png" for i in range(5)] + [None]
    for row in rows[:5]:
        assert (summary.out / row["image"]).read_bytes() == (images / Path(row["image"]).name).read_bytes()
    moved = tmp_path / "elsewhere" / "shop"  # the folder is self-contained: it can move, the raw folder can go
    moved.parent.mkdir()
    os.replace(summary.out, moved)
    dataset = load_dataset(moved)
    assert all(info.image is not None and info.image.is_file() for info in dataset.items[:5])
    assert all(moved.resolve() in info.image.parents for info in dataset.items[:5])


def test_ingest_refuses_a_symlink_out_of_the_images_folder(tmp_path):
    ratings, images = _shop(tmp_path)
    secret = _save(tmp_path / "private" / "holiday.png")
    (images / "11.png").unlink()
    (images / "11.png").symlink_to(secret)
    out = tmp_path / "out" / "ds"
    with pytest.raises(DataError, match=r"11.png is a link to .*holiday.png, outside the images folder"):
        ingest_csv(ratings, out, images=images, k_core=2, **FAST)
    assert not out.exists() and not list(out.parent.glob(".*"))


def test_ingest_records_a_symlink_inside_the_folder_as_its_own_name(tmp_path):
    ratings, images = _shop(tmp_path)
    (images / "11.png").unlink()
    (images / "11.png").symlink_to("10.png")  # a duplicate poster, linked
    summary = ingest_csv(ratings, tmp_path / "out", images=images, k_core=2, **FAST)
    rows = read_jsonl(summary.out / "items.jsonl")
    assert rows[1]["image"] == "images/11.png"
    copied = summary.out / "images" / "11.png"
    assert not copied.is_symlink() and copied.read_bytes() == (images / "10.png").read_bytes()


def test_copy_never_gives_one_item_another_items_image(tmp_path):
    first, second = _save(tmp_path / "a" / "x.png"), _save(tmp_path / "b" / "x.png", color=(0, 0, 0))
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="would both be stored as x.png"):
        copy_images([first, second], tmp_path / "out")
    assert (tmp_path / "out" / "images" / "x.png").read_bytes() == first.read_bytes()


# ---- load_dataset: image paths stay inside their folder ---------------------------------------------------
def _folder(tmp_path: Path, images: list[str | None]) -> Path:
    n = len(images)
    pairs = np.array([[u, i] for u in range(2) for i in range(n)])
    labels = np.zeros(len(pairs), dtype=np.int64)
    items = [{"item": i, "orig_id": str(i), "text": f"item {i}", "image": image} for i, image in enumerate(images)]
    return write_dataset(tmp_path / "ds", pairs, labels, {"text": np.ones((n, 4))}, items)


def _refused_by_the_caption_suite(dataset, match: str) -> None:
    with pytest.raises(DataError, match=match):
        check_image_paths(dataset)


@pytest.mark.parametrize("image", ["../../../../etc/passwd", "/etc/passwd", "images/../../outside.png"])
def test_an_image_path_that_escapes_the_folder_is_never_handed_out(tmp_path, image):
    dataset = load_dataset(_folder(tmp_path, ["images/0.png", image]))  # training needs no images
    assert dataset.items[1].image is None and dataset.summary["images_outside"] == 1
    _refused_by_the_caption_suite(
        dataset, r"items.jsonl:2: item 1's image .* resolves to .*outside the dataset folder .* the caption suite refuses"
    )


def test_a_symlink_inside_the_folder_that_points_out_is_refused(tmp_path):
    folder = _folder(tmp_path, ["images/0.png", "images/1.png"])
    _save(folder / "images" / "0.png")
    (folder / "images" / "1.png").symlink_to(_save(tmp_path / "private.png"))
    dataset = load_dataset(folder)
    assert dataset.items[0].image == (folder / "images" / "0.png").resolve() and dataset.items[1].image is None
    _refused_by_the_caption_suite(dataset, r"item 1's image 'images/1.png' resolves to .*private.png, outside")


def test_images_root_confines_relative_paths_too(tmp_path):
    root = tmp_path / "raw"
    _save(root / "posters" / "0.png")
    dataset = load_dataset(_folder(tmp_path, ["posters/0.png", "../secret.png"]), images_root=root)
    _refused_by_the_caption_suite(dataset, r"outside the dataset folder .* and the images folder")
    folder = _folder(tmp_path / "b", ["posters/0.png", str(root / "posters" / "0.png")])
    dataset = load_dataset(folder, images_root=root)
    assert dataset.items[0].image == (root / "posters" / "0.png").resolve() == dataset.items[1].image


def test_missing_images_inside_the_folder_are_just_missing(tmp_path):
    dataset = load_dataset(_folder(tmp_path, ["images/absent.png", None]))
    assert dataset.items[0].image is not None and not dataset.items[0].image.exists()
    assert dataset.items[1].image is None
