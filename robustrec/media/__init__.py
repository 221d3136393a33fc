"""Media helpers shared by the encoders (:mod:`robustrec.data.encoders`) and the captioners
(:mod:`captioning`), so that each lives once and captioning does not depend on robustrec.data:

- :mod:`robustrec.media.images`: opening untrusted image files (regular files, common formats, a
  pixel cap) and hashing their bytes;
- :mod:`robustrec.media.cache`: the cache root (``$ROBUSTREC_CACHE`` or ``~/.cache/robustrec``), the
  canonical JSON and sha256 of an encoder's or captioner's spec, and the sha256 of content;
- :mod:`robustrec.media.batching`: consecutive batches of work, counted in a progress report;
- :mod:`robustrec.media.efficientnet`: the packaged ImageNet EfficientNet-lite0 and its preprocessing,
  used by the ``efficientnet-lite0`` image encoder and the ``imagenet`` captioner.

All but :mod:`~robustrec.media.efficientnet` are light: they import neither torch nor robustrec.data.
"""
