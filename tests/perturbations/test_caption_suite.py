"""The caption suite on awkward datasets: unreadable images are missing images (never drawn, counted),
only items whose vectors change count as changed, and features made from other texts are refused
before any evaluation."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from captioning import CaptionCache, Captioner
from perturbations import AuditConfig, CaptionInsertion, audit
from perturbations.caption import CLEAN_CHECK_ITEMS, MIN_MEAN_COSINE, caption_source
from robustrec.data import load_dataset
from robustrec.data.dataset import ItemInfo
from robustrec.data.encoders import HashingTextEncoder
from robustrec.data.mmrec import write_dataset
from robustrec.errors import DataError
from robustrec.models import build_model
from robustrec.runs import RunSpec, TrainConfig
from robustrec.training import train
from tests.conftest import make_tiny_dataset
from tests.data.image_helpers import png_declaring


class CountingHashing(HashingTextEncoder):
    """The hashing encoder, recording every text it encodes."""

    def __init__(self, dim: int = 32, keep_words: int | None = None) -> None:
        super().__init__(dim=dim)
        self.keep_words = keep_words
        self.calls: list[str] = []

    def encode(self, texts, batch_size=64, progress=False):
        self.calls.extend(texts)
        if self.keep_words is not None:  # like MiniLM's 256-token window: words past it are ignored
            texts = [" ".join(t.split()[: self.keep_words]) for t in texts]
        return super().encode(list(texts), batch_size, progress)


def with_texts(dataset, texts: list[str], encoder: HashingTextEncoder, stored: list[str] | None = None):
    """``dataset`` with these item texts, and text features encoded from ``stored`` (default: the texts)."""
    items = tuple(ItemInfo(info.orig_id, text, info.image) for info, text in zip(dataset.items, texts))
    vectors = HashingTextEncoder(dim=encoder.dim).encode(stored if stored is not None else texts)
    features = dataset.features.replace(text=torch.from_numpy(vectors))
    return dataclasses.replace(dataset, items=items, features=features)


@pytest.fixture
def shop(tmp_path):
    """30 items, 27 with a PNG; item 0's file is not an image, item 1 is a bomb, item 2's file is gone."""
    dataset = make_tiny_dataset(tmp_path / "images", with_images=True)
    dataset.items[0].image.write_bytes(b"not an image at all")
    dataset.items[1].image.write_bytes(png_declaring(12_000, 12_000))
    dataset.items[2].image.unlink()
    encoder = CountingHashing()
    texts = [f"item {i} a {['red', 'blue', 'green'][i % 3]} thing number {i}" for i in range(dataset.n_items)]
    return with_texts(dataset, texts, encoder), encoder


def trained(dataset):
    return build_model("vbpr", dataset, generator=torch.Generator().manual_seed(0)).eval()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def recording_source(requested: list[int]):
    def source(ids):
        requested.extend(ids)
        return {i: f"a photo of thing {i}" for i in ids}

    return source


# ---- unreadable images are missing images -------------------------------------------------------------
def test_unreadable_images_are_never_drawn_and_are_counted(shop):
    dataset, encoder = shop
    requested: list[int] = []
    view = CaptionInsertion(1.0).use(recording_source(requested), encoder).apply(
        trained(dataset), dataset, gen())
    details = view.details
    assert details["items_unreadable_image"] == 2  # not an image; over the pixel limit
    assert details["items_without_image"] == 3 + 1  # no image path (items 9, 19, 29); a file that is gone
    assert not {0, 1, 2, 9, 19, 29} & set(requested)
    assert details["drawn_items"] == details["captioned_items"] == dataset.n_items - 6 == len(requested)


def test_a_caption_audit_survives_an_unreadable_image_end_to_end(tmp_path):
    """Through the real caption source, a captioner that reads the images and the cache."""

    class MeanColour(Captioner):
        name = "mean-colour"

        def spec(self):
            return {"backend": self.name}

        def _caption_batch(self, images):
            return [f"a {image.resize((1, 1)).getpixel((0, 0))[0]} red thing" for image in images]

    source = make_tiny_dataset(tmp_path / "src", with_images=True)
    folder = tmp_path / "data" / "shop"
    texts = [f"item {i} colour {i % 4}" for i in range(source.n_items)]
    items = [{"item": i, "orig_id": info.orig_id, "text": texts[i],
              "image": f"images/{info.image.name}" if info.image else None} for i, info in enumerate(source.items)]
    encoder = HashingTextEncoder(dim=16)
    pairs = np.concatenate([source.train, source.valid, source.test])
    labels = np.repeat([0, 1, 2], [len(source.train), len(source.valid), len(source.test)])
    write_dataset(folder, pairs, labels, {"text": encoder.encode(texts), "image": source.features.image.numpy()},
                  items, encoders={"text": encoder.spec()})
    (folder / "images").mkdir()
    for info in source.items:
        if info.image is not None:
            (folder / "images" / info.image.name).write_bytes(info.image.read_bytes())
    (folder / "images" / source.items[3].image.name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run = tmp_path / "run"
    train(load_dataset(folder), RunSpec("vbpr", "plain", train=TrainConfig(epochs=1, seed=1)), run, progress=False)
    cache = CaptionCache(tmp_path / "captions")
    (path,) = audit([run], AuditConfig("caption", severities=(1.0,), repeats=1), tmp_path / "out",
                    captions_factory=lambda ds: caption_source(MeanColour(), cache, ds), progress=False)
    (details,) = [row["details"] for row in map(json.loads, path.read_text().splitlines()) if row["repeat"] == 0]
    assert details["items_unreadable_image"] == 1 and details["drawn_items"] == 26

    # An image path that leaves the dataset folder: a real image elsewhere on the machine is not captioned.
    private = tmp_path / "private.png"
    private.write_bytes((folder / "images" / source.items[0].image.name).read_bytes())
    items[5]["image"] = "../../private.png"
    (folder / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in items))
    with pytest.raises(DataError, match=r"item 5's image '../../private.png' resolves to .*private.png, outside"):
        audit([run], AuditConfig("caption", severities=(1.0,), repeats=1), tmp_path / "out2",
              captions_factory=lambda ds: caption_source(MeanColour(), cache, ds), progress=False)
    assert not (tmp_path / "out2").exists() or not list((tmp_path / "out2").iterdir())


# ---- changed means the vector changed ----------------------------------------------------------------------
def test_only_items_whose_vector_changes_count_as_changed(shop):
    dataset, _ = shop
    encoder = CountingHashing(keep_words=12)  # long texts: an appended caption falls past the window
    texts = [info.text + (" filler" * 20 if i % 2 else "") for i, info in enumerate(dataset.items)]
    dataset = with_texts(dataset, texts, encoder, stored=[" ".join(t.split()[:12]) for t in texts])
    clean = dataset.features.text.clone()
    view = CaptionInsertion(1.0).use(recording_source([]), encoder).apply(
        trained(dataset), dataset, gen())
    details = view.details
    drawn = details["drawn_items"]
    rows = (view.dataset.features.text != clean).any(dim=1).nonzero().flatten().tolist()
    assert rows == details["changed_item_ids"] and details["changed_items"] == len(rows)
    assert set(rows) == {i for i in range(dataset.n_items) if i % 2 == 0} - {0, 2}  # short texts with an image
    assert drawn == details["captioned_items"] == dataset.n_items - 6 and details["changed_items"] < drawn


def test_a_missing_caption_leaves_the_item_unchanged(shop):
    dataset, encoder = shop

    def flaky(ids):  # e.g. an image that became unreadable after the suite checked it
        return {i: "a photo" for i in ids if i != 5}

    view = CaptionInsertion(1.0).use(flaky, encoder).apply(trained(dataset), dataset, gen())
    assert view.details["captioned_items"] == view.details["drawn_items"] - 1
    assert 5 not in view.details["changed_item_ids"]
    assert torch.equal(view.dataset.features.text[5], dataset.features.text[5])


# ---- the clean texts must re-encode to the stored features -----------------------------------------------------
def test_features_made_from_other_texts_are_refused_with_the_similarity(shop):
    dataset, encoder = shop
    other = with_texts(dataset, [info.text for info in dataset.items], encoder,
                       stored=[f"brand acme {info.text.split()[2]} widget" for info in dataset.items])
    suite = CaptionInsertion(0.5).use(recording_source([]), encoder)
    with pytest.raises(DataError) as info:
        suite.check(trained(other), other)
    message = str(info.value)
    match = re.search(r"mean cosine (\d\.\d+) between re-encoded clean texts and the stored text features", message)
    assert match and float(match.group(1)) < MIN_MEAN_COSINE
    assert "the audit would measure the template change, not the caption" in message and "\n" not in message


def test_the_check_runs_once_per_dataset_on_a_fixed_sample(shop):
    dataset, encoder = shop
    model = trained(dataset)
    for severity in (0.0, 0.1, 0.5):  # as the audit does: one suite per severity, each checked
        CaptionInsertion(severity).use(recording_source([]), encoder).check(model, dataset)
    first = list(encoder.calls)
    assert 0 < len(first) <= CLEAN_CHECK_ITEMS and len(set(first)) == len(first)
    assert set(first) <= {info.text for info in dataset.items}

    again = with_texts(dataset, [info.text for info in dataset.items], CountingHashing())
    second = CountingHashing()
    CaptionInsertion(0.1).use(recording_source([]), second).check(model, again)
    assert second.calls == first  # the same items, in the same order: no randomness from outside


def test_the_check_does_not_change_the_draws(shop):
    dataset, encoder = shop
    model = trained(dataset)
    fresh = with_texts(dataset, [info.text for info in dataset.items], CountingHashing())
    checked_first = CaptionInsertion(0.4).use(recording_source([]), encoder)
    checked_first.check(model, dataset)
    a = checked_first.apply(model, dataset, gen(3)).details["changed_item_ids"]
    b = CaptionInsertion(0.4).use(recording_source([]), CountingHashing()).apply(
        model, fresh, gen(3)).details["changed_item_ids"]
    assert a == b and 0 < len(a)
