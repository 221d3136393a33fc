"""Ingest: k-core, split, CSV and Amazon readers, the whole pipeline, bad input, the CLI command,
and equality with the reference converter's output on ml100k-mm."""

from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustrec.data import load_dataset
from robustrec.data.encoders import HashingTextEncoder, PixelImageEncoder, text_encoder_for
from robustrec.data.ingest import (
    amazon_text,
    encode_ids,
    first_of_pairs,
    ingest_amazon,
    ingest_csv,
    join_fields,
    k_core,
    prepare_split,
    read_amazon_meta,
    read_amazon_reviews,
    read_interactions_csv,
    read_items_csv,
    split_labels,
)
from robustrec.errors import ConfigError, DataError
from robustrec.io import read_jsonl

from ..conftest import ML100K, REPO

REFERENCE = Path(os.environ.get("ROBUSTREC_ML100K_MMREC", REPO.parent / "data" / "ml100k-mmrec"))
FAST = {"text_encoder": "hashing", "image_encoder": "pixels"}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTREC_CACHE", str(tmp_path / "cache"))


class CountingText(HashingTextEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, texts, batch_size=64, progress=False):
        self.calls += len(texts)
        return super().encode(texts, batch_size, progress)


class CountingPixels(PixelImageEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, images, batch_size=64, progress=False):
        self.calls += len(images)
        return super().encode(images, batch_size, progress)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _shop(tmp_path: Path, n_users: int = 12, n_items: int = 8, header: str = "user_id,item_id,rating,timestamp"):
    """Every user rates items 0..n_items-1 except one; item ids are 10, 11, ...; posters for most."""
    rows = [header]
    for u in range(n_users):
        for i in range(n_items):
            if i != u % n_items:
                rows.append(f"{u + 1},{10 + i},{1 + (u + i) % 5},{1000 + 7 * u + i}")
    ratings = _write(tmp_path / "raw" / "ratings.csv", "\n".join(rows) + "\n")
    items = ["item_id,title,released,genres,price,overview"]
    for i in range(n_items):
        items.append(f'{10 + i},Item {i},01-Jan-199{i % 10},Comedy|Drama,{i}.5,"Plot of\nitem {i}."')
    items_csv = _write(tmp_path / "raw" / "items.csv", "\n".join(items) + "\n")
    images = tmp_path / "raw" / "images"
    images.mkdir()
    for i in range(n_items - 2):  # the last two items have no image
        Image.new("RGB", (20, 30), (30 * i, 100, 200 - 20 * i)).save(images / f"{10 + i}.png")
    return ratings, items_csv, images


# ---- k-core, duplicates, ids, split ------------------------------------------------------------------
def test_k_core_iterates_until_stable():
    # k = 2. Item 3 has two interactions, one from user 2 who has only one: removing user 2 leaves
    # item 3 with one interaction, removed in round 2, which leaves user 1 with one: round 3.
    users = np.array([0, 0, 1, 1, 2, 3, 3])
    items = np.array([0, 1, 0, 3, 3, 0, 1])
    keep, rounds = k_core(users, items, 2)
    assert rounds == 3
    assert keep.tolist() == [True, True, False, False, False, True, True]
    assert k_core(users[keep], items[keep], 2) == (pytest.approx(np.ones(4, bool)), 0)


def test_k_core_of_one_keeps_everything():
    keep, rounds = k_core(np.array([0, 1]), np.array([0, 0]), 1)
    assert keep.all() and rounds == 0


def test_duplicates_keep_the_earliest_then_the_first():
    users = np.array([0, 0, 1, 0, 1])
    items = np.array([5, 5, 5, 5, 5])
    times = np.array([30, 10, 7, 10, 7])
    assert first_of_pairs(users, items, times).tolist() == [1, 2]
    assert first_of_pairs(users, items).tolist() == [0, 2]


def test_ids_are_ordered_numerically_when_all_are_integers():
    codes, ids = encode_ids(["10", "9", "100", "9"])
    assert ids == [9, 10, 100] and codes.tolist() == [1, 0, 2, 0]
    codes, ids = encode_ids(["b", "a", "10", "9"])
    assert ids == ["10", "9", "a", "b"] and codes.tolist() == [3, 2, 0, 1]
    assert encode_ids(["007", "7"])[1] == ["007", "7"]  # leading zeros: not plain integers


def test_split_sizes_follow_mmrec():
    sizes = {0: 5, 1: 9, 2: 10, 3: 15, 4: 23}
    users = np.repeat(list(sizes), list(sizes.values()))
    order, labels = split_labels(users, seed=999)
    assert sorted(order.tolist()) == list(range(len(users)))
    grouped = users[order]
    assert (np.diff(grouped) >= 0).all()
    expected = {5: (3, 1, 1), 9: (7, 1, 1), 10: (8, 1, 1), 15: (12, 1, 2), 23: (19, 2, 2)}
    for user, n in sizes.items():
        assert tuple(np.bincount(labels[grouped == user], minlength=3)) == expected[n]
        assert (np.diff(labels[grouped == user]) >= 0).all()  # train rows first, then valid, then test


def test_split_is_deterministic_under_a_seed():
    users = np.repeat(np.arange(20), 12)
    first, second = split_labels(users, 7), split_labels(users, 7)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], split_labels(users, 8)[0])


def test_tiny_users_keep_a_training_row():
    _, labels = split_labels(np.array([0, 1, 1]), seed=0)
    assert labels.tolist() == [0, 0, 2]


def test_prepare_split_reindexes_in_code_order():
    split = prepare_split(np.array([5, 5, 2, 2]), np.array([9, 3, 9, 3]), k=2, seed=0)
    assert split.user_codes.tolist() == [2, 5] and split.item_codes.tolist() == [3, 9]
    assert sorted(map(tuple, split.pairs.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]


# ---- CSV readers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header",
    ["user_id,item_id,rating,timestamp", "userID,itemID,rating,timestamp", "User,ASIN,overall,unixReviewTime"],
)
def test_csv_columns_are_detected(tmp_path, header):
    path = _write(tmp_path / "r.csv", f"{header}\nu1,i1,4,100\nu2,i1,5,2020-01-02\n")
    raw = read_interactions_csv(path)
    assert raw.users == ["u1", "u2"] and raw.items == ["i1", "i1"]
    assert raw.ratings.tolist() == [4.0, 5.0]
    assert raw.timestamps.tolist() == [100, 1577923200]


def test_csv_columns_can_be_chosen_and_are_optional(tmp_path):
    path = _write(tmp_path / "r.csv", "who,what,when\nu1,i1,3\n")
    raw = read_interactions_csv(path, user_col="who", item_col="what")
    assert raw.users == ["u1"] and raw.ratings is None and raw.timestamps is None


def test_items_csv_default_text_columns_skip_ids_numbers_and_dates(tmp_path):
    _, items_csv, _ = _shop(tmp_path)
    texts = read_items_csv(items_csv)
    assert texts.template == "{title}. {genres}. {overview}"
    assert texts.texts["10"] == "Item 0. Comedy, Drama. Plot of item 0."
    chosen = read_items_csv(items_csv, text_cols=["overview", "title"])
    assert chosen.texts["11"] == "Plot of item 1.. Item 1"


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (["Title", "A, B", "Story."], "Title. A, B. Story."),
        (["Title", "A, B", ""], "Title. A, B."),  # as the reference converter: an empty last field
        (["Title", "", "Story"], "Title. Story"),
        (["", "", ""], ""),
        (["  Two\nlines  ", "x\t y"], "Two lines. x y"),
    ],
)
def test_join_fields(fields, text):
    assert join_fields(fields) == text


# ---- Amazon ------------------------------------------------------------------------------------------
REVIEWS_2014 = [
    {"reviewerID": "A1", "asin": "B01", "overall": 5.0, "unixReviewTime": 1400000000, "reviewText": "good"},
    {"reviewerID": "A2", "asin": "B01", "overall": 3.0, "unixReviewTime": 1400000100},
]
REVIEWS_2018 = [
    {"overall": 4.0, "verified": True, "reviewerID": "A1", "asin": "B02", "unixReviewTime": 1500000000,
     "style": {"Size:": "M"}, "vote": "2"},
]
META_2014_LITERAL = (
    "{'asin': 'B01', 'title': 'Soft Blanket', 'brand': 'Cosy', 'categories': [['Baby', 'Nursery', "
    "'Bedding'], ['Home']], 'description': 'Warm\\nand soft.', 'price': 12.5, 'related': {'also_bought': ['B02']}}"
)
META_2018 = {"asin": "B02", "title": "Bottle", "brand": "", "category": ["Baby", "Feeding"],
             "description": ["BPA free.", "Dishwasher safe."], "imageURL": []}


def test_amazon_reviews_2014_2018_and_gzip(tmp_path):
    plain = _write(tmp_path / "r.json", "\n".join(json.dumps(r) for r in REVIEWS_2014) + "\n")
    packed = tmp_path / "r.json.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in REVIEWS_2018) + "\n\n")
    raw = read_amazon_reviews(plain)
    assert raw.users == ["A1", "A2"] and raw.items == ["B01", "B01"]
    assert raw.ratings.tolist() == [5.0, 3.0] and raw.timestamps.tolist() == [1400000000, 1400000100]
    assert read_amazon_reviews(packed).items == ["B02"]


def test_amazon_meta_dict_literals_and_2018_layout(tmp_path):
    path = _write(tmp_path / "meta.json", META_2014_LITERAL + "\n" + json.dumps(META_2018) + "\n")
    texts = read_amazon_meta(path).texts
    assert texts["B01"] == "Soft Blanket. Cosy. Baby, Nursery, Bedding. Warm and soft."
    assert texts["B02"] == "Bottle. Baby, Feeding. BPA free. Dishwasher safe."
    assert set(read_amazon_meta(path, wanted={"B02"}).texts) == {"B02"}


def test_amazon_2023_layout():
    record = {"parent_asin": "X", "title": "Lamp", "store": "Brite", "categories": ["Home", "Lighting"],
              "description": []}
    assert amazon_text(record) == "Lamp. Brite. Home, Lighting."


def test_malformed_amazon_line_names_the_line(tmp_path):
    path = _write(tmp_path / "meta.json", json.dumps(META_2018) + "\n{'asin': __import__('os')}\n")
    with pytest.raises(DataError, match=r"meta.json:2: neither a JSON object nor a Python dict literal"):
        read_amazon_meta(path)


def test_ingest_amazon_end_to_end(tmp_path):
    reviews, meta = [], []
    for u in range(6):
        for i in range(6):
            if (u + i) % 6:
                reviews.append({"reviewerID": f"U{u}", "asin": f"B{i:02d}", "overall": 4, "unixReviewTime": u * 10 + i})
    for i in range(5):  # B05 has no metadata
        meta.append(repr({"asin": f"B{i:02d}", "title": f"Toy {i}", "categories": [["Toys", "Blocks"]]}))
    reviews_path = tmp_path / "reviews.json.gz"
    with gzip.open(reviews_path, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in reviews))
    meta_path = _write(tmp_path / "meta.json", "\n".join(meta) + "\n")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(images / "B01.jpg")
    summary = ingest_amazon(reviews_path, tmp_path / "out" / "toys", meta_path, images, k_core=3, **FAST)
    dataset = load_dataset(summary.out)
    assert (dataset.n_users, dataset.n_items) == (6, 6)
    assert summary.without_text == 1 and summary.without_image == 5
    rows = read_jsonl(summary.out / "items.jsonl")
    assert [r["orig_id"] for r in rows] == [f"B{i:02d}" for i in range(6)]
    assert rows[0]["text"] == "Toy 0. Toys, Blocks." and rows[5]["text"] == ""
    assert dataset.encoders["text_template"] == "{title}. {brand}. {categories}. {description}"


# ---- the whole CSV pipeline --------------------------------------------------------------------------
def test_ingest_csv_writes_a_loadable_folder(tmp_path):
    ratings, items, images = _shop(tmp_path)
    (images / "12.png").write_bytes(b"broken")  # an unreadable image counts as missing
    summary = ingest_csv(ratings, tmp_path / "out" / "shop", items, images, k_core=3, **FAST)
    dataset = load_dataset(tmp_path / "out" / "shop")
    assert (dataset.n_users, dataset.n_items) == (12, 8)
    assert summary.n_interactions == 12 * 7 and summary.split_counts == (60, 12, 12)
    assert (summary.without_image, summary.unreadable_images, summary.without_text) == (3, 1, 0)
    assert dataset.features.text.shape == (8, 128) and dataset.features.image.shape == (8, PixelImageEncoder().dim)
    image = dataset.features.image.numpy()
    np.testing.assert_allclose(image[2], image[[0, 1, 3, 4, 5]].mean(0), rtol=1e-5)  # mean vector
    rows = read_jsonl(summary.out / "items.jsonl")
    assert [r["orig_id"] for r in rows] == list(range(10, 18))
    assert rows[0]["image"] == "images/10.png" and (summary.out / rows[0]["image"]).is_file()  # inside the dataset
    assert rows[2]["image"] is None and rows[7]["image"] is None  # unreadable is missing, as for the audit
    assert dataset.items[0].text == "Item 0. Comedy, Drama. Plot of item 0."
    assert text_encoder_for(dataset).spec() == HashingTextEncoder().spec()
    assert dataset.encoders["image"]["encoder"] == "pixels"
    text = str(summary)
    assert "12 users, 8 items and 84 interactions" in text and "60 train / 12 valid / 12 test" in text
    assert "\n" not in text


def test_second_ingest_encodes_nothing(tmp_path):
    ratings, items, images = _shop(tmp_path)
    text, pixels = CountingText(), CountingPixels()
    ingest_csv(ratings, tmp_path / "a", items, images, k_core=3, text_encoder=text, image_encoder=pixels)
    assert (text.calls, pixels.calls) == (8, 6)
    ingest_csv(ratings, tmp_path / "b", items, images, k_core=3, text_encoder=text, image_encoder=pixels)
    assert (text.calls, pixels.calls) == (8, 6)
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "text_feat.npy"), np.load(tmp_path / "b" / "text_feat.npy"))


def test_rerun_replaces_an_earlier_output_whole(tmp_path):
    ratings, items, images = _shop(tmp_path)
    out = tmp_path / "out"
    ingest_csv(ratings, out, items, images, k_core=3, **FAST)
    ingest_csv(ratings, out, items, None, k_core=3, **FAST)
    assert not (out / "image_feat.npy").exists()  # no stale file from the first run
    assert load_dataset(out).features.image is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out", "raw"]  # no staging left


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    if out.parent.exists():
        assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize(
    ("ratings_text", "message"),
    [
        ("user_id,rating\n1,5\n", r"no item column; expected one of item_id"),
        ("user_id,item_id,rating\n1,2,five\n", r"ratings.csv:2: rating 'five' is not a finite number"),
        ("user_id,item_id\n1,2\n3\n", r"ratings.csv:3: expected 2 fields, got 1"),
        ("user_id,item_id\n", r"no interactions"),
        ("", r"empty file"),
        ("user_id,item_id,timestamp\n1,2,yesterday\n", r"timestamp 'yesterday' is neither"),
        ("user_id,item_id\n1,2\n2,2\n", r"no interactions left after the 5-core filter"),
    ],
)
def test_bad_ratings_raise_data_errors_and_write_nothing(tmp_path, ratings_text, message):
    ratings = _write(tmp_path / "ratings.csv", ratings_text)
    out = tmp_path / "out" / "ds"
    with pytest.raises(DataError, match=message):
        ingest_csv(ratings, out, **FAST)
    _assert_nothing_written(out)


def test_missing_files_and_folders_are_data_errors(tmp_path):
    ratings, items, _ = _shop(tmp_path)
    with pytest.raises(DataError, match="ratings file .*absent.csv does not exist"):
        ingest_csv(tmp_path / "absent.csv", tmp_path / "out", **FAST)
    with pytest.raises(DataError, match="items file .*absent.csv does not exist"):
        ingest_csv(ratings, tmp_path / "out", tmp_path / "absent.csv", **FAST)
    with pytest.raises(DataError, match="images folder .*nope does not exist"):
        ingest_csv(ratings, tmp_path / "out", items, tmp_path / "nope", k_core=3, **FAST)
    with pytest.raises(DataError, match="reviews file"):
        ingest_amazon(tmp_path / "r.json", tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()


def test_items_without_the_chosen_column(tmp_path):
    ratings, items, _ = _shop(tmp_path)
    with pytest.raises(DataError, match="no column 'blurb'"):
        ingest_csv(ratings, tmp_path / "out", items, text_cols=["blurb"], k_core=3, **FAST)
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    ratings, items, _ = _shop(tmp_path)
    foreign = tmp_path / "precious"
    _write(foreign / "notes.txt", "keep me")
    with pytest.raises(DataError, match="not empty and was not written by robustrec"):
        ingest_csv(ratings, foreign, items, k_core=3, **FAST)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_failure_while_encoding_leaves_nothing(tmp_path):
    ratings, items, _ = _shop(tmp_path)

    class Broken(HashingTextEncoder):
        def encode(self, texts, batch_size=64, progress=False):
            raise DataError("encoder exploded")

    with pytest.raises(DataError, match="exploded"):
        ingest_csv(ratings, tmp_path / "out" / "ds", items, k_core=3, text_encoder=Broken())
    _assert_nothing_written(tmp_path / "out" / "ds")


def test_bad_options_are_config_errors(tmp_path):
    ratings, items, _ = _shop(tmp_path)
    with pytest.raises(ConfigError, match="unknown text encoder 'bert'"):
        ingest_csv(ratings, tmp_path / "out", items, text_encoder="bert")
    with pytest.raises(ConfigError, match="k-core must be >= 1"):
        ingest_csv(ratings, tmp_path / "out", k_core=0, **FAST)


# ---- the CLI command ---------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    """The real command line (with the global options such as --quiet), the ingest command in full."""
    from robustrec.cli import build_parser

    return build_parser(["ingest"])


def test_cli_ingest_runs_the_api(tmp_path, capsys):
    ratings, items, images = _shop(tmp_path)
    out = tmp_path / "cli-out"
    args = _parser().parse_args([
        "ingest", "--ratings", str(ratings), "--items", str(items), "--images", str(images), "--out", str(out),
        "--k-core", "3", "--text-encoder", "hashing", "--image-encoder", "pixels", "--quiet",
        "--cache", str(tmp_path / "c"), "--text-cols", "title, overview",
    ])
    assert args.func(args) == 0
    assert f"Wrote {out}" in capsys.readouterr().out
    assert load_dataset(out).encoders["text_template"] == "{title}. {overview}"
    assert (tmp_path / "c" / "features").is_dir()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "amazon", "--ratings", "r.csv"], "--ratings cannot be used with --format amazon"),
        (["--reviews", "r.json"], "--reviews cannot be used with --format csv"),
        (["--items", "i.csv"], "--format csv needs --ratings"),
        (["--format", "amazon"], "--format amazon needs --reviews"),
    ],
)
def test_cli_layout_errors(tmp_path, argv, message):
    args = _parser().parse_args(["ingest", "--out", str(tmp_path / "o"), *argv])
    with pytest.raises(ConfigError, match=message):
        args.func(args)


def test_cli_main_reports_one_line(tmp_path, monkeypatch, capsys):
    import robustrec.cli

    monkeypatch.setattr(robustrec.cli, "COMMANDS", ("ingest",))
    code = robustrec.cli.main(["ingest", "--ratings", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "ratings file" in err and "does not exist" in err


def test_cli_help_mentions_both_layouts(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["ingest", "--help"])
    text = capsys.readouterr().out
    assert "--ratings" in text and "--reviews" in text and "--k-core" in text


# ---- ml100k-mm against the reference converter -------------------------------------------------------
def _reference() -> Path:
    if not (ML100K / "ratings.csv").is_file():
        pytest.skip(f"ml100k-mm not found at {ML100K}")
    if not (REFERENCE / "image_feat.npy").is_file():
        pytest.skip(f"reference folder {REFERENCE} not built (yet)")
    return REFERENCE


def test_ml100k_split_and_text_equal_the_reference(tmp_path):
    reference = _reference()
    summary = ingest_csv(ML100K / "ratings.csv", tmp_path / "ml100k", ML100K / "items.csv",
                         text_encoder="hashing", use_cache=False)
    assert summary.split_counts == (79790, 9531, 9966)
    assert (summary.out / "ml100k.inter").read_bytes() == (reference / "ml100k.inter").read_bytes()
    ours, theirs = read_jsonl(summary.out / "items.jsonl"), read_jsonl(reference / "items.jsonl")
    assert [(r["orig_id"], r["text"]) for r in ours] == [(r["orig_id"], r["text"]) for r in theirs]


@pytest.mark.slow
def test_ml100k_features_equal_the_reference(tmp_path):
    reference = _reference()
    summary = ingest_csv(ML100K / "ratings.csv", tmp_path / "ml100k", ML100K / "items.csv", ML100K / "posters",
                         text_encoder="minilm", image_encoder="efficientnet-lite0", use_cache=False)
    for name in ("text_feat.npy", "image_feat.npy"):
        np.testing.assert_allclose(np.load(summary.out / name), np.load(reference / name), atol=2e-4)
    ours, theirs = read_jsonl(summary.out / "items.jsonl"), read_jsonl(reference / "items.jsonl")
    assert [r["image"] is None for r in ours] == [r["image"] is None for r in theirs]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed": 10**23}, r"seed must be an integer in \[0, 4294967295\]"),  # numpy: ValueError before
        ({"seed": -1}, "seed must be an integer"),
        ({"k_core": -3}, "k_core must be an integer >= 0"),
    ],
)
def test_options_are_checked_before_anything_is_read(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        ingest_csv(tmp_path / "absent.csv", tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_one_line_before_any_work(tmp_path):
    """/proc refuses new files whatever the permission bits say (the tests may run as root)."""
    ratings, _, _ = _shop(tmp_path)
    with pytest.raises(ConfigError, match="cannot write in /proc"):
        ingest_csv(ratings, "/proc/robustrec-out")


def test_ingest_reports_encoding_progress_by_default(tmp_path, capsys):
    """As the CLI does without --no-progress: the encoders count their items on stderr."""
    ratings, items, images = _shop(tmp_path)
    ingest_csv(ratings, tmp_path / "loud", items, images, k_core=3, use_cache=False, **FAST)
    err = capsys.readouterr().err
    assert "encoding (hashing): 8/8 items (100%)" in err and "encoding (pixels): 6/6 items (100%)" in err
    ingest_csv(ratings, tmp_path / "quiet", items, images, k_core=3, use_cache=False, progress=False, **FAST)
    assert capsys.readouterr().err == ""
