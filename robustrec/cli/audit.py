"""``robustrec audit``: evaluate saved runs under a perturbation suite and write result records."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from robustrec.cli.common import add_device_argument, device_name, float_list, int_list
from robustrec.errors import ConfigError
from robustrec.io import check_output_folder

SUITE_HELP = (
    "noise: Gaussian noise in learnable embedding tables (paper Table 4); caption: image captions "
    "inserted into item text and re-encoded (Table 5); image-noise / text-noise: noise on raw features"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="evaluate trained runs under a perturbation suite",
        description="Evaluate each run clean once, then under the suite at each severity with R repeats; "
        "write one result record per (run, severity, repeat) to --out. No retraining.",
    )
    p.add_argument("--run", nargs="+", action="extend", required=True, metavar="RUN",
                   help="run folder(s); repeat or give several (e.g. runs/freedom-plain/seed-*)")
    p.add_argument("--suite", required=True, choices=("noise", "caption", "image-noise", "text-noise"),
                   help=SUITE_HELP)
    p.add_argument("--sigma2", type=float_list, help="noise: variance(s) of absolute noise (default 1e-6)")
    p.add_argument("--noise-scale", choices=("absolute", "relative"), default="absolute",
                   help="noise: absolute eps~N(0, sigma2) (paper) or relative eps~N(0, (s*std(T))^2)")
    p.add_argument("--scale", type=float_list,
                   help="relative noise / image-noise / text-noise: scale factor(s) s (default 0.1)")
    p.add_argument("--target", choices=("items", "embeddings", "parameters"), default="items",
                   help="noise: item embedding tables (default), all embedding tables, or all parameters")
    p.add_argument("--items", type=int_list, help="noise: only these item ids (comma-separated)")
    p.add_argument("--prob", type=float_list, help="caption: insertion probability(ies) p (default 0.01)")
    p.add_argument("--position", choices=("append", "prepend", "random"), default="append",
                   help="caption: where the caption goes in the item text")
    p.add_argument("--captioner", default="imagenet", help="caption: imagenet (offline), blip2 or file")
    p.add_argument("--captions", metavar="FILE", help="caption: CSV/JSONL of item id -> caption (--captioner file)")
    p.add_argument("--captioner-model", metavar="PATH_OR_ID", help="caption: BLIP-2 weights folder or hub id")
    p.add_argument("--captioner-prompt", help="caption: BLIP-2 prompt (default none)")
    p.add_argument("--captioner-device", type=device_name, default=None,
                   help="caption: device for the captioner (default --device)")
    p.add_argument("--caption-cache", metavar="DIR",
                   help="caption cache folder (default $ROBUSTREC_CACHE/captions or ~/.cache/robustrec/captions)")
    p.add_argument("--images", metavar="DIR", help="caption: folder that relative image paths resolve against")
    p.add_argument("--repeats", type=int, default=10, help="repeats per severity (default 10)")
    p.add_argument("--seed", type=int, default=0, help="perturbation seed (repeat r uses the same draw for every run)")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: each run's own)")
    add_device_argument(p)
    p.add_argument("--no-per-user", action="store_true", help="do not store per-user metric values")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="audit runs whose training has not finished (their best checkpoint so far); "
                        "the records say so in provenance.run_finished")
    p.add_argument("--out", required=True, help="folder for the result records")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def severities(args: argparse.Namespace) -> tuple[float, ...]:
    chosen = {
        "noise": args.sigma2 if args.noise_scale == "absolute" else args.scale,
        "caption": args.prob,
        "image-noise": args.scale,
        "text-noise": args.scale,
    }[args.suite]
    if args.suite == "noise" and args.noise_scale == "relative" and args.sigma2:
        raise ConfigError("relative noise takes --scale, not --sigma2")
    if chosen is None and args.suite == "noise" and args.noise_scale == "relative":
        chosen = (0.1,)
    for value in chosen or ():
        if args.suite == "caption" and not 0.0 <= value <= 1.0:
            raise ConfigError(f"--prob must be in [0, 1], got {value}")
        if value < 0:
            raise ConfigError(f"severity must be >= 0, got {value}")
    return tuple(chosen or ())


def default_cache() -> Path:
    return Path(os.environ.get("ROBUSTREC_CACHE", Path.home() / ".cache" / "robustrec")) / "captions"


def caption_factory(args: argparse.Namespace):
    """Build the caption source lazily: dataset -> (item indices -> captions), through the cache."""
    from captioning import CaptionCache, build_captioner
    from perturbations.caption import caption_source

    options: dict[str, Any] = {}
    if args.captioner == "file":
        if not args.captions:
            raise ConfigError("--captioner file needs --captions FILE")
        options["path"] = args.captions
    elif args.captions:
        raise ConfigError("--captions is only used with --captioner file")
    if args.captioner_model:
        options["model"] = args.captioner_model
    if args.captioner_prompt:
        options["prompt"] = args.captioner_prompt
    if args.captioner != "file":
        options["device"] = args.captioner_device or args.device
    captioner = build_captioner(args.captioner, **options)
    cache = CaptionCache(Path(args.caption_cache) if args.caption_cache else default_cache())

    return lambda dataset: caption_source(captioner, cache, dataset)


def run(args: argparse.Namespace) -> int:
    from perturbations import AuditConfig, audit

    check_output_folder(args.out)  # before any work, the captioner included
    if args.caption_cache:
        check_output_folder(args.caption_cache, "--caption-cache")
    config = AuditConfig(
        suite=args.suite,
        severities=severities(args),
        repeats=args.repeats,
        seed=args.seed,
        device=args.device,
        split=args.split,
        noise_scale=args.noise_scale,
        target=args.target,
        item_ids=tuple(args.items) if args.items else None,
        position=args.position,
        per_user=not args.no_per_user,
    )
    factory = caption_factory(args) if args.suite == "caption" else None
    paths = audit(args.run, config, args.out, data=args.data, captions_factory=factory,
                  progress=not args.no_progress, images_root=args.images, allow_unfinished=args.allow_unfinished)
    for path in paths:
        print(path)
    return 0
