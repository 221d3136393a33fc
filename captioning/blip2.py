"""BLIP-2 captions (the captioner of the Mirror Gradient paper's information-adjustment experiment).

Weights come from a local folder (``save_pretrained`` layout) or a Hugging Face hub id, by default
``Salesforce/blip2-opt-2.7b``. Nothing is downloaded unless ``allow_download=True``: a hub id must
already be in the local Hugging Face cache, and when it is not, construction raises one ConfigError
that says how to provide the weights. The model itself is loaded on the first caption, so a run
whose captions are all in the cache (:mod:`captioning.cache`) never loads it.

Decoding is greedy (``do_sample=False, num_beams=1``), so captions are deterministic; the prompt
(empty by default) is fed after the image tokens and is not part of the returned caption.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from captioning.base import Captioner, positive_int, register_captioner
from robustrec.devices import resolve_device
from robustrec.errors import ConfigError, first_line

if TYPE_CHECKING:
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

DEFAULT_MODEL = "Salesforce/blip2-opt-2.7b"
DTYPES = ("float32", "float16", "bfloat16")
HOW_TO = (
    "pass a local model folder with --captioner-model DIR, "
    "or use captions made elsewhere with --captioner file --captions FILE"
)
_HASHED_FILE_BYTES = 16 * 2**20  # folder fingerprint: hash files up to this size, name + size above


@register_captioner
class Blip2Captioner(Captioner):
    """Greedy BLIP-2 captions from a local folder or a hub id already in the local cache."""

    name = "blip2"

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        prompt: str = "",
        max_new_tokens: int = 30,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        revision: str | None = None,
        allow_download: bool = False,
    ) -> None:
        super().__init__(batch_size)
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be a string, got {prompt!r}")
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.prompt = prompt
        self.max_new_tokens = positive_int("max_new_tokens", max_new_tokens)
        self.device = resolve_device(device)
        self.dtype = dtype
        self.allow_download = allow_download
        self.source, self.revision, self.fingerprint = locate_weights(str(model), revision, allow_download)
        self._loaded: tuple[Blip2ForConditionalGeneration, Blip2Processor] | None = None

    def spec(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            # A folder is identified by its contents (its fingerprint), a hub model by id and commit.
            "model": Path(self.source).name if self.fingerprint else self.source,
            "revision": self.revision,
            "weights": self.fingerprint,
            "dtype": self.dtype,
            "prompt": self.prompt,
            "max_new_tokens": self.max_new_tokens,
            "decoding": "greedy",
        }

    def _caption_batch(self, images: list[Image.Image]) -> list[str]:
        import torch

        model, processor = self._load()
        inputs = processor(images=images, text=[self.prompt] * len(images), return_tensors="pt")
        input_ids = inputs["input_ids"].to(self.device)
        with torch.inference_mode():
            out = model.generate(
                pixel_values=inputs["pixel_values"].to(self.device, getattr(torch, self.dtype)),
                input_ids=input_ids,
                attention_mask=inputs["attention_mask"].to(self.device),
                do_sample=False,
                num_beams=1,
                max_new_tokens=self.max_new_tokens,
            )
        # A decoder-only language model (OPT) echoes image tokens + prompt; an encoder-decoder does not.
        start = 0 if model.config.text_config.is_encoder_decoder else input_ids.shape[1]
        texts = processor.tokenizer.batch_decode(out[:, start:], skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]

    def _load(self) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
        if self._loaded is None:
            model, processor = load_blip2(self.source, self.revision, not self.allow_download, self.dtype)
            self._loaded = model.to(self.device).eval(), processor
        return self._loaded


def locate_weights(
    model: str, revision: str | None, allow_download: bool
) -> tuple[str, str | None, str | None]:
    """Find BLIP-2 weights without touching the network unless ``allow_download``.

    Returns ``(source, revision, fingerprint)``: for a local folder its resolved path, None and a
    fingerprint of its files; for a hub id the id, the cached commit (or ``revision`` when
    downloading) and None. Weights that are not available raise ConfigError with the how-to.
    """
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{folder} is not a BLIP-2 model folder (it has no config.json); {HOW_TO}")
        return str(folder.resolve()), None, folder_fingerprint(folder)
    if allow_download:
        return model, revision, None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json", revision=revision)
    except ValueError:  # not a valid hub id either (e.g. a folder path that does not exist)
        cached = None
    if not isinstance(cached, str):
        raise ConfigError(
            f"BLIP-2 weights {model!r} are not available offline (no such folder, not in the Hugging Face cache); "
            f"{HOW_TO}"
        )
    return model, Path(cached).parent.name, None  # .../snapshots/<commit>/config.json


def folder_fingerprint(folder: Path) -> str:
    """sha256 over a model folder's files: contents of small files, name and size of large ones."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        if size <= _HASHED_FILE_BYTES:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def load_blip2(
    source: str, revision: str | None, local_files_only: bool, dtype: str
) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    """Load model and processor (with the PIL image processor: the default one needs torchvision)."""
    import torch
    from transformers import (
        AutoTokenizer,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessorPil,
    )

    options: dict[str, Any] = {"revision": revision, "local_files_only": local_files_only}
    try:
        model = Blip2ForConditionalGeneration.from_pretrained(source, dtype=getattr(torch, dtype), **options)
        image_processor = BlipImageProcessorPil.from_pretrained(source, **options)
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except OSError as exc:
        raise ConfigError(f"cannot load BLIP-2 from {source!r} ({first_line(exc)}); {HOW_TO}") from None
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=model.config.num_query_tokens)
    _check_image_token(model, tokenizer.convert_tokens_to_ids(str(processor.image_token)))
    return model, processor


def _check_image_token(model: Blip2ForConditionalGeneration, token_id: int) -> None:
    """The config's image token must be the tokenizer's (older checkpoints leave it unset: set it)."""
    config = model.config
    if config.image_token_index is None:
        config.image_token_index = token_id
    if config.image_token_index != token_id or token_id >= model.get_input_embeddings().num_embeddings:
        raise ConfigError(
            f"BLIP-2 checkpoint mismatch: image token id {config.image_token_index} in the config, "
            f"{token_id} in the tokenizer (vocabulary {model.get_input_embeddings().num_embeddings})"
        )
