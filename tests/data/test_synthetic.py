"""The synthetic default dataset: deterministic, loadable, and its features carry the attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustrec.data import load_dataset, open_dataset, synthetic
from robustrec.data.synthetic import default_dataset_dir, make_catalogue, make_synthetic, render
from robustrec.errors import ConfigError
from robustrec.io import read_jsonl

FAST = {"text_encoder": "hashing", "image_encoder": "pixels"}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTREC_CACHE", str(tmp_path / "cache"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("syn") / "shop", n_users=80, n_items=120, seed=3,
                          use_cache=False, **FAST)


def test_same_seed_gives_the_same_folder(tmp_path, shop):
    again = make_synthetic(tmp_path / "again" / "shop", n_users=80, n_items=120, seed=3, **FAST)
    assert _files(again) == _files(shop)  # also with the feature cache in between
    other = make_synthetic(tmp_path / "other" / "shop", n_users=80, n_items=120, seed=4, use_cache=False, **FAST)
    assert _files(other)["shop.inter"] != _files(shop)["shop.inter"]


def test_folder_loads_with_images_and_encoder_record(shop):
    dataset = load_dataset(shop)
    assert dataset.n_users == 80 and dataset.n_items <= 120
    assert len(dataset.train) > 3 * len(dataset.test) > 0
    assert dataset.items is not None and all(info.image is not None and info.image.is_file() for info in dataset.items)
    assert dataset.encoders["text"]["encoder"] == "hashing" and dataset.encoders["image"]["encoder"] == "pixels"
    assert dataset.features.text.shape[0] == dataset.features.image.shape[0] == dataset.n_items


def test_users_have_between_15_and_40_interactions(shop):
    dataset = load_dataset(shop)
    per_user = np.bincount(np.concatenate([dataset.train, dataset.valid, dataset.test])[:, 0])
    assert per_user.min() >= 5 and per_user.max() <= 40 and np.median(per_user) >= 15


def _probe_accuracy(features: np.ndarray, labels: list[str], folds: int = 4) -> float:
    """Held-out accuracy of a ridge one-vs-rest classifier on standardised features."""
    x = torch.from_numpy(features).double()
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    names = sorted(set(labels))
    y = torch.tensor([names.index(v) for v in labels])
    onehot = torch.nn.functional.one_hot(y, len(names)).double()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    hits = 0
    for held in torch.tensor_split(order, folds):
        fit = order[~torch.isin(order, held)]
        gram = x[fit].T @ x[fit] + 10 * torch.eye(x.shape[1], dtype=x.dtype)
        weights = torch.linalg.solve(gram, x[fit].T @ onehot[fit])
        hits += int(((x[held] @ weights).argmax(1) == y[held]).sum())
    return hits / len(labels)


def test_features_carry_the_attributes(shop):
    rows = read_jsonl(shop / "items.jsonl")
    dataset = load_dataset(shop)
    for modality, attribute, chance in (("text", "category", 1 / 6), ("text", "price", 1 / 3),
                                        ("image", "colour", 1 / 8), ("image", "category", 1 / 6)):
        labels = [row["attributes"][attribute] for row in rows]
        features = getattr(dataset.features, modality).numpy()
        assert _probe_accuracy(features, labels) > chance + 0.4, (modality, attribute)


def test_render_is_small_and_deterministic():
    product = make_catalogue(np.random.default_rng(0), 1)[0]
    first = render(product, np.random.default_rng(1))
    assert first.size == (64, 64) and first.mode == "RGB"
    assert first.tobytes() == render(product, np.random.default_rng(1)).tobytes()


def test_too_small_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        make_synthetic(tmp_path / "x", n_users=0, **FAST)


def test_default_dataset_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "DEFAULT_USERS", 40)
    monkeypatch.setattr(synthetic, "DEFAULT_ITEMS", 30)
    folder = default_dataset_dir(cache_dir=tmp_path, **FAST)
    assert folder.parent == tmp_path and folder.name.startswith("synthetic-v1-hashing-pixels-")
    assert load_dataset(folder).n_users == 40
    monkeypatch.setattr(synthetic, "make_synthetic", lambda *a, **k: pytest.fail("rebuilt"))
    assert default_dataset_dir(cache_dir=tmp_path, **FAST) == folder


def test_open_dataset(tmp_path, monkeypatch, shop):
    assert open_dataset(shop).n_users == 80
    asked = []
    monkeypatch.setattr(synthetic, "default_dataset_dir", lambda **options: asked.append(options) or shop)
    assert open_dataset(None).root == shop.resolve()
    assert open_dataset(None, progress=False).root == shop.resolve()
    assert asked == [{"progress": True}, {"progress": False}]  # shown by default, as by the CLI


def test_building_reports_its_stages(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBUSTREC_PROGRESS_INTERVAL", "0")  # a plain line at every step
    make_synthetic(tmp_path / "shop", n_users=20, n_items=15, seed=1, progress=True, **FAST)
    lines = capsys.readouterr().err.splitlines()
    stages = [line.rsplit("stage=", 1)[1] for line in lines if "stages" in line and "stage=" in line]
    assert stages == ["encode texts", "encode images", "write"]
    assert lines[-1].startswith("building shop: 4/4 stages (100%)")
    assert any(line.startswith("encoding (hashing): ") for line in lines)  # the encoders count items
    make_synthetic(tmp_path / "quiet", n_users=20, n_items=15, seed=1, progress=False, **FAST)
    assert capsys.readouterr().err == ""


def test_default_dataset_passes_progress_on(tmp_path, monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(synthetic, "make_synthetic", lambda folder, **options: asked.append(options["progress"]))
    folder = default_dataset_dir(cache_dir=tmp_path, progress=False, **FAST)
    assert capsys.readouterr().err == ""
    default_dataset_dir(cache_dir=tmp_path, **FAST)
    assert asked == [False, True]
    assert capsys.readouterr().err == f"building the embedded dataset once, in {folder} (a minute or so)\n"


@pytest.mark.slow
def test_default_size(tmp_path):
    dataset = load_dataset(default_dataset_dir(cache_dir=tmp_path, **FAST))
    assert 700 <= dataset.n_users <= 800 and 400 <= dataset.n_items <= 500
    assert 15_000 <= len(dataset.train) + len(dataset.valid) + len(dataset.test) <= 25_000
