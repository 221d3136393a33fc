"""The embedded default dataset: a small synthetic multimodal shop, built in seconds.

Items have four latent attributes: category (drawn as a shape), colour (its fill), style (a
pattern: plain, stripes, dots, checks) and price level (a frame: none, thin grey, gold). Each item
gets a rendered 64x64 PNG and a short description that names its attributes through varying
synonyms, with filler words and, now and then, an attribute left out. Users have tastes over the
same attributes; each samples 15 to 40 items (without replacement) in proportion to
``exp(affinity)``, where affinity adds taste matches to a log-normal item popularity, so the data
has both a popularity skew and a signal that item features explain. The interactions then go
through the same k-core filter and MMRec split as ``robustrec ingest`` (:mod:`robustrec.data.split`).

:func:`default_dataset_dir` builds the default folder once under the cache directory. That takes
about a minute with the real encoders, so the build reports its stages (:data:`STAGES`) and the
encoders count their items on stderr (:mod:`robustrec.progress`), unless ``progress=False``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from robustrec.data.encoders import ImageEncoder, TextEncoder, build_image_encoder, build_text_encoder
from robustrec.data.ingest import build_features, staged_folder
from robustrec.data.mmrec import write_dataset
from robustrec.data.split import Split, prepare_split
from robustrec.errors import ConfigError
from robustrec.media.cache import cache_root, spec_sha256
from robustrec.progress import Progress
from robustrec.progress import progress as progress_report

VERSION = 1
DEFAULT_USERS = 800
DEFAULT_ITEMS = 500
IMAGE_SIZE = 64
#: What :func:`make_synthetic` reports as it goes.
STAGES = ("generate", "encode texts", "encode images", "write")
TEMPLATE = "synthetic v1: {adjective} {colour} {style} {category}, {price}. {filler}"

# category -> (synonyms, shape)
CATEGORIES = {
    "shirt": (("shirt", "tee", "top"), "tee"),
    "ball": (("ball", "sphere", "orb"), "circle"),
    "box": (("box", "crate", "case"), "square"),
    "lamp": (("lamp", "lantern", "light"), "triangle"),
    "pendant": (("pendant", "charm", "gem"), "diamond"),
    "mug": (("mug", "cup", "beaker"), "mug"),
}
COLOURS = {
    "red": ((200, 40, 40), ("red", "crimson", "scarlet")),
    "orange": ((235, 130, 30), ("orange", "tangerine", "amber")),
    "yellow": ((230, 210, 40), ("yellow", "lemon", "golden")),
    "green": ((50, 160, 70), ("green", "emerald", "leafy")),
    "blue": ((40, 80, 200), ("blue", "navy", "cobalt")),
    "purple": ((130, 60, 170), ("purple", "violet", "plum")),
    "pink": ((240, 130, 180), ("pink", "rose", "blush")),
    "black": ((35, 35, 35), ("black", "jet", "charcoal")),
}
STYLES = {
    "plain": ("plain", "solid", "simple"),
    "striped": ("striped", "stripy", "pinstriped"),
    "dotted": ("dotted", "polka-dot", "spotted"),
    "checked": ("checked", "checkered", "plaid"),
}
PRICES = {
    "budget": ("budget price", "a bargain", "cheap and cheerful"),
    "standard": ("fair price", "good value", "everyday price"),
    "premium": ("premium quality", "luxury finish", "high-end make"),
}
ADJECTIVES = ("lovely", "classic", "modern", "handy", "cosy", "bold", "neat", "fresh", "sturdy", "elegant")
FILLER = (
    "great gift idea", "ships fast", "customers love it", "new arrival", "limited stock", "easy care",
    "made to last", "perfect for every day", "a shop favourite", "back in stock", "order today",
)


@dataclass(frozen=True)
class Product:
    """One synthetic item's latent attributes."""

    category: str
    colour: str
    style: str
    price: str


# ---- catalogue and interactions -----------------------------------------------------------------------------
def make_catalogue(rng: np.random.Generator, n_items: int) -> list[Product]:
    """Items with uniformly drawn attributes."""
    picks = [rng.integers(len(options), size=n_items) for options in (CATEGORIES, COLOURS, STYLES, PRICES)]
    names = [list(options) for options in (CATEGORIES, COLOURS, STYLES, PRICES)]
    return [Product(*(names[a][picks[a][i]] for a in range(4))) for i in range(n_items)]


def _one_hot(values: list[str], names: list[str]) -> np.ndarray:
    return np.eye(len(names))[[names.index(v) for v in values]]


def sample_interactions(
    rng: np.random.Generator, catalogue: list[Product], n_users: int, low: int = 15, high: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) codes: each user samples ``low..high`` items without replacement, with
    probability proportional to ``exp(taste match + log popularity)`` (Gumbel top-k)."""
    affinity = np.zeros((n_users, len(catalogue)))
    for attribute, options, concentration, weight in (
        ("category", CATEGORIES, 0.4, 1.0), ("colour", COLOURS, 0.4, 0.8),
        ("style", STYLES, 0.6, 0.6), ("price", PRICES, 1.0, 0.6),
    ):
        tastes = rng.dirichlet(np.full(len(options), concentration), size=n_users)
        onehot = _one_hot([getattr(p, attribute) for p in catalogue], list(options))
        affinity += weight * np.log(tastes @ onehot.T + 1e-3)
    affinity += 1.2 * rng.normal(size=len(catalogue))  # log-normal popularity
    gumbel = rng.gumbel(size=affinity.shape)
    counts = rng.integers(low, high + 1, size=n_users)
    ranked = np.argsort(-(affinity + gumbel), axis=1)
    users = np.repeat(np.arange(n_users), counts)
    items = np.concatenate([ranked[u, : counts[u]] for u in range(n_users)])
    return users.astype(np.int64), items.astype(np.int64)


# ---- content: text and images -------------------------------------------------------------------------------
def describe(product: Product, rng: np.random.Generator) -> str:
    """A short description naming the attributes through synonyms; each of colour and style is
    left out with probability 0.1, and one or two filler phrases are added."""
    words = [str(rng.choice(ADJECTIVES))]
    if rng.random() > 0.1:
        words.append(str(rng.choice(COLOURS[product.colour][1])))
    if rng.random() > 0.1:
        words.append(str(rng.choice(STYLES[product.style])))
    words.append(str(rng.choice(CATEGORIES[product.category][0])))
    filler = rng.choice(FILLER, size=int(rng.integers(1, 3)), replace=False)
    sentences = ". ".join(phrase.capitalize() for phrase in filler)
    return f"{' '.join(words).capitalize()}, {rng.choice(PRICES[product.price])}. {sentences}."


def _shape_mask(shape: str, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "square":
        draw.rectangle(box, fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=255)
    elif shape == "tee":
        draw.polygon([(x0, y0), (x1, y0), (x1, y0 + h * 0.35), (x1 - w * 0.25, y0 + h * 0.35),
                      (x1 - w * 0.25, y1), (x0 + w * 0.25, y1), (x0 + w * 0.25, y0 + h * 0.35),
                      (x0, y0 + h * 0.35)], fill=255)
    elif shape == "mug":
        draw.rectangle((x0, y0, x1 - w * 0.3, y1), fill=255)
        draw.ellipse((x1 - w * 0.45, cy - h * 0.25, x1, cy + h * 0.25), outline=255, width=max(2, int(w * 0.08)))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def _pattern(style: str, colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    """A colour layer carrying the style's pattern in a darker or lighter shade."""
    layer = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), colour)
    draw = ImageDraw.Draw(layer)
    shade = tuple(min(255, c + 110) if sum(colour) < 300 else max(0, c - 110) for c in colour)
    step = int(rng.integers(6, 9))
    if style == "striped":
        for x in range(-IMAGE_SIZE, IMAGE_SIZE, step):
            draw.line([(x, IMAGE_SIZE), (x + IMAGE_SIZE, 0)], fill=shade, width=2)
    elif style == "dotted":
        for y in range(2, IMAGE_SIZE, step):
            for x in range(2 + (y // step % 2) * step // 2, IMAGE_SIZE, step):
                draw.ellipse((x, y, x + 3, y + 3), fill=shade)
    elif style == "checked":
        for y in range(0, IMAGE_SIZE, step):
            for x in range(0, IMAGE_SIZE, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=shade)
    return layer


def render(product: Product, rng: np.random.Generator) -> Image.Image:
    """A 64x64 product picture: shape by category, fill by colour, pattern by style, frame by price."""
    background = tuple(int(v) for v in rng.integers(225, 256, size=3))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    colour = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[product.colour][0])
    size = int(rng.integers(36, 48))
    x0, y0 = (int(v) for v in rng.integers(6, IMAGE_SIZE - size - 5, size=2))
    mask = _shape_mask(CATEGORIES[product.category][1], (x0, y0, x0 + size, y0 + size))
    image.paste(_pattern(product.style, colour, rng), mask=mask)
    frame = {"budget": None, "standard": ((150, 150, 150), 1), "premium": ((212, 175, 55), 3)}[product.price]
    if frame is not None:
        ImageDraw.Draw(image).rectangle((0, 0, IMAGE_SIZE - 1, IMAGE_SIZE - 1), outline=frame[0], width=frame[1])
    return image


# ---- the dataset folder ---------------------------------------------------------------------------------
def make_synthetic(
    out_dir: str | Path,
    n_users: int = DEFAULT_USERS,
    n_items: int = DEFAULT_ITEMS,
    seed: int = 0,
    text_encoder: str | TextEncoder = "auto",
    image_encoder: str | ImageEncoder = "auto",
    k_core: int = 5,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> Path:
    """Write a synthetic shop as an MMRec folder ``out_dir`` (with ``images/<item>.png``).

    The same arguments give the same folder, byte for byte. ``items.jsonl`` rows also carry each
    item's ``attributes``. Features go through the encoder cache (``cache_dir``, default
    :func:`~robustrec.media.cache.cache_root`) unless ``use_cache`` is False. ``progress`` reports
    the :data:`STAGES` and the encoded items on stderr.
    """
    if n_users < 1 or n_items < 2:
        raise ConfigError(f"synthetic dataset needs at least 1 user and 2 items (got {n_users}, {n_items})")
    text_encoder, image_encoder = build_text_encoder(text_encoder), build_image_encoder(image_encoder)
    cache = (Path(cache_dir) if cache_dir is not None else cache_root()) if use_cache else None
    out_dir = Path(out_dir)
    with progress_report(len(STAGES), desc=f"building {out_dir.name}", unit="stages", enabled=progress) as report:
        report.set_postfix(stage=STAGES[0])
        rng = np.random.default_rng(seed)  # one stream, drawn in this order: catalogue, users, texts, images
        split, products, texts = _generate(rng, n_users, n_items, k_core, seed)
        with staged_folder(out_dir) as folder:
            paths = _render_all(products, rng, folder / "images")
            _next_stage(report, "encode texts")
            text_result = build_features(texts, None, text_encoder, None, cache, progress=progress)
            _next_stage(report, "encode images")
            image_result = build_features(None, paths, None, image_encoder, cache, progress=progress)
            _next_stage(report, "write")
            records = [
                {"item": n, "orig_id": int(code), "text": text, "image": f"images/{n}.png",
                 "attributes": asdict(product)}
                for n, (code, text, product) in enumerate(zip(split.item_codes, texts, products))
            ]
            features = {**text_result.features, **image_result.features}
            encoders = {**text_result.encoders, **image_result.encoders, "text_template": TEMPLATE}
            write_dataset(folder, split.pairs, split.labels, features, records, encoders=encoders)
        _next_stage(report, None)
    return out_dir


def _generate(
    rng: np.random.Generator, n_users: int, n_items: int, k_core: int, seed: int
) -> tuple[Split, list[Product], list[str]]:
    """The interactions (filtered and split as ingest does), the kept items and their descriptions."""
    catalogue = make_catalogue(rng, n_items)
    users, items = sample_interactions(rng, catalogue, n_users, low=min(15, n_items - 1), high=min(40, n_items - 1))
    split = prepare_split(users, items, None, k_core, seed)
    products = [catalogue[code] for code in split.item_codes]
    return split, products, [describe(product, rng) for product in products]


def _render_all(products: list[Product], rng: np.random.Generator, folder: Path) -> list[Path]:
    """``folder/<n>.png`` for each product, in order."""
    folder.mkdir()
    paths = [folder / f"{n}.png" for n in range(len(products))]
    for path, product in zip(paths, products):
        render(product, rng).save(path, format="PNG")
    return paths


def _next_stage(report: Progress, stage: str | None) -> None:
    """Count one more stage done and name the one that starts (a plain line says what runs now)."""
    if stage is None:
        report.set_postfix()
    else:
        report.set_postfix(stage=stage)
    report.update()


def default_dataset_dir(
    text_encoder: str | TextEncoder = "auto", image_encoder: str | ImageEncoder = "auto",
    cache_dir: str | Path | None = None, progress: bool = True,
) -> Path:
    """The default synthetic dataset (800 users x 500 items, seed 0), built on first use under
    ``<cache>/synthetic-v1-<text encoder>-<image encoder>-<spec hash>`` and reused afterwards.
    ``progress`` reports the build (about a minute) on stderr."""
    text_encoder, image_encoder = build_text_encoder(text_encoder), build_image_encoder(image_encoder)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    digest = spec_sha256([text_encoder.spec(), image_encoder.spec()], compact=False)
    folder = root / f"synthetic-v{VERSION}-{text_encoder.name}-{image_encoder.name}-{digest[:8]}"
    if not (folder / "features.json").is_file():  # written last, and the folder appears whole
        if progress:  # a plain progress line comes only after some seconds: say at once what is going on
            print(f"building the embedded dataset once, in {folder} (a minute or so)", file=sys.stderr, flush=True)
        make_synthetic(folder, n_users=DEFAULT_USERS, n_items=DEFAULT_ITEMS, seed=0, text_encoder=text_encoder,
                       image_encoder=image_encoder, cache_dir=root, progress=progress)
    return folder


__all__ = ["Product", "default_dataset_dir", "describe", "make_catalogue", "make_synthetic", "render",
           "sample_interactions"]
