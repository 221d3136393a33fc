"""Image captioners (BLIP-2, an offline ImageNet classifier, captions from a file) with a disk cache."""
