"""``robustrec ingest``: build an MMRec-format dataset folder from raw CSV or Amazon files."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustrec.data.ingest import ingest_amazon, ingest_csv
from robustrec.errors import ConfigError

DESCRIPTION = """\
Build an MMRec-format dataset folder (<DIR name>.inter, text_feat.npy, image_feat.npy, items.jsonl,
features.json) from raw files: every row is a positive interaction; duplicate (user, item) pairs
are collapsed; a k-core filter is repeated until stable; users and items are re-indexed from 0;
each user's interactions are split at random (seed) into train/valid/test as in MMRec. Item texts
and images are encoded (MiniLM and EfficientNet-lite0 when robustrec[encoders] is installed),
through a content cache so a re-run encodes nothing new. Readable images are hard-linked (or
copied) into DIR/images, so the folder is self-contained; an image that cannot be decoded (not an
image, truncated, over 40 million pixels) counts as missing. Ratings and timestamps must be finite
numbers; bad input stops the command before anything is written."""

EPILOG = """\
examples:
  robustrec ingest --ratings ratings.csv --items items.csv --images posters/ --out data/ml100k
  robustrec ingest --format amazon --reviews reviews_Baby_5.json.gz --meta meta_Baby.json.gz \\
      --images images/ --out data/baby"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ingest", help="build a dataset folder from raw CSV or Amazon files", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--format", choices=("csv", "amazon"), default="csv", help="input layout (default csv)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder: new, empty, or one written earlier by robustrec (replaced)")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="folder of <item id>.<jpg|jpeg|png|webp> images (linked or copied into --out; "
                             "symlinks leading out of the folder are refused)")

    csv_group = parser.add_argument_group("csv layout")
    csv_group.add_argument("--ratings", type=Path, metavar="CSV", help="interactions: user, item[, rating, timestamp]")
    csv_group.add_argument("--items", type=Path, metavar="CSV", help="items: an id column and text columns")
    csv_group.add_argument("--user-col", metavar="NAME", help="user column (default: user_id, userID, user, ...)")
    csv_group.add_argument("--item-col", metavar="NAME",
                           help="item id column in both files (default: item_id, itemID, item, asin, ...)")
    csv_group.add_argument("--text-cols", metavar="A,B,...",
                           help="item text columns, joined as 'A. B. C' (default: every non-id column that "
                                "is not numbers or dates; pipe lists a|b become 'a, b')")

    amazon_group = parser.add_argument_group("amazon layout (McAuley's JSON lines, .json or .json.gz)")
    amazon_group.add_argument("--reviews", type=Path, metavar="FILE", help="reviews (reviewerID, asin, ...)")
    amazon_group.add_argument("--meta", type=Path, metavar="FILE", help="metadata (title, brand, categories, ...)")

    processing = parser.add_argument_group("processing")
    processing.add_argument("--k-core", type=int, default=5, metavar="N", help="k-core filter (default 5)")
    processing.add_argument("--seed", type=int, default=999, help="split seed (default 999, MMRec's)")
    processing.add_argument("--text-encoder", default="auto", metavar="NAME",
                            help="auto (default), minilm, minilm:<folder or hub id>, hashing")
    processing.add_argument("--image-encoder", default="auto", metavar="NAME",
                            help="auto (default), efficientnet-lite0, pixels")
    processing.add_argument("--cache", type=Path, metavar="DIR",
                            help="feature cache (default $ROBUSTREC_CACHE or ~/.cache/robustrec)")
    processing.add_argument("--no-cache", action="store_true", help="encode everything, cache nothing")
    processing.add_argument("--batch-size", type=int, default=64, metavar="N", help="encoder batch size (default 64)")
    parser.set_defaults(func=run)
    return parser


def _check_layout(args: argparse.Namespace) -> None:
    csv_only = {"--ratings": args.ratings, "--items": args.items, "--user-col": args.user_col,
                "--item-col": args.item_col, "--text-cols": args.text_cols}
    amazon_only = {"--reviews": args.reviews, "--meta": args.meta}
    wrong, needed = (amazon_only, "--ratings") if args.format == "csv" else (csv_only, "--reviews")
    misplaced = [flag for flag, value in wrong.items() if value is not None]
    if misplaced:
        raise ConfigError(f"{', '.join(misplaced)} cannot be used with --format {args.format}")
    if getattr(args, needed.lstrip("-")) is None:
        raise ConfigError(f"--format {args.format} needs {needed}")


def run(args: argparse.Namespace) -> int:
    _check_layout(args)
    common = dict(
        images=args.images, k_core=args.k_core, seed=args.seed, text_encoder=args.text_encoder,
        image_encoder=args.image_encoder, cache_dir=args.cache, use_cache=not args.no_cache,
        batch_size=args.batch_size, progress=not args.no_progress,
    )
    if args.format == "csv":
        text_cols = [c.strip() for c in args.text_cols.split(",") if c.strip()] if args.text_cols else None
        summary = ingest_csv(args.ratings, args.out, args.items, user_col=args.user_col, item_col=args.item_col,
                             text_cols=text_cols, **common)
    else:
        summary = ingest_amazon(args.reviews, args.out, args.meta, **common)
    print(summary)
    return 0
