"""``robustrec audit``: evaluate saved runs under a perturbation suite and write result records.

Nothing here names a suite. ``--suite``'s choices, ``--severity``'s meaning, the ``--suite-param``
options and the severity aliases (``--sigma2``, ``--scale``, ``--prob``: one per severity name a suite
declares) all come from the suite registry, :data:`perturbations.PERTURBATIONS`; what a suite needs
besides its options (a caption source) it takes from the audit's :class:`perturbations.SuiteContext`.
"""

from __future__ import annotations

import argparse
import functools
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robustrec.cli.common import add_device_argument, add_runs_argument, device_name, float_list, runs_given
from robustrec.errors import ConfigError
from robustrec.io import check_output_folder

#: Flags that suites' options replaced: flag -> what to give instead ({} is the value given).
REPLACED = {
    "--seed": "--perturbation-seed {} (the seed of the perturbation draws; the runs keep their training seeds)",
    "--noise-scale": "--suite-param noise_scale={}",
    "--target": "--suite-param target={}",
    "--items": "--suite-param item_ids={}",
    "--position": "--suite-param position={}",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from perturbations import PERTURBATIONS  # imports torch: only when the audit command is chosen

    suites = {name: PERTURBATIONS.get(name) for name in PERTURBATIONS.names()}
    p = sub.add_parser(
        "audit",
        help="evaluate trained runs under a perturbation suite",
        description="Evaluate each run clean once, then under the suite at each severity with R repeats; "
        "write one result record per (run, severity, repeat) to --out. No retraining.",
    )
    add_runs_argument(p, help="run folder(s), e.g. runs/freedom-plain/seed-*")
    p.add_argument("--suite", required=True, choices=list(suites), metavar="SUITE",
                   help="; ".join(f"{name}: {suite.summary}" for name, suite in suites.items()))
    p.add_argument("--severity", type=float_list, metavar="V,V,...",
                   help="severities, comma-separated; per suite: "
                   + "; ".join(f"{name}: {suite.severity_help()}" for name, suite in suites.items()))
    p.add_argument("--suite-param", action="append", default=[], metavar="KEY=VALUE",
                   help="a suite option (repeatable); the options and their defaults: "
                   + "; ".join(f"{name}: {options_help(suite)}" for name, suite in suites.items()))
    add_severity_aliases(p, suites)
    p.add_argument("--repeats", type=int, default=10, help="repeats per severity")
    p.add_argument("--perturbation-seed", type=int, default=0,
                   help="seed of the perturbation draws: repeat r draws the same for every run and severity")
    p.add_argument("--split", choices=("test", "valid"), default="test", help="the split to evaluate")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: each run's own)")
    add_device_argument(p)
    p.add_argument("--no-per-user", action="store_true", help="do not store per-user metric values")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="audit runs whose training has not finished (their best checkpoint so far); "
                        "the records say so in provenance.run_finished")
    p.add_argument("--out", required=True, help="folder for the result records")
    captions = p.add_argument_group("caption source", "for suites that insert image captions")
    captions.add_argument("--captioner", default="imagenet", help="imagenet (offline), blip2 or file")
    captions.add_argument("--captions", metavar="FILE", help="CSV/JSONL of item id -> caption (--captioner file)")
    captions.add_argument("--captioner-model", metavar="PATH_OR_ID", help="BLIP-2 weights folder or hub id")
    captions.add_argument("--captioner-prompt", help="BLIP-2 prompt (default none)")
    captions.add_argument("--captioner-device", type=device_name, default=None,
                          help="device for the captioner (default --device)")
    captions.add_argument("--caption-cache", metavar="DIR",
                          help="caption cache folder (default $ROBUSTREC_CACHE/captions or ~/.cache/robustrec/captions)")
    captions.add_argument("--images", metavar="DIR", help="folder that relative image paths resolve against")
    for flag in REPLACED:
        p.add_argument(flag, action=Replaced, help=argparse.SUPPRESS)
    p.set_defaults(func=run, replaced=[])


# ---- help and flags made from the registry -------------------------------------------------------------
def options_help(suite: Any) -> str:
    """``"noise_scale=absolute|relative (default absolute), item_ids=INT,... (default none)"``."""
    try:
        hints = typing.get_type_hints(suite.__init__)
    except Exception:  # an annotation that does not resolve: show the names without their forms
        hints = {}
    parts = [f"{name}={value_form(hints.get(name, str))} (default {_default_text(param.default)})"
             for name, param in suite.options().items()]
    return ", ".join(parts) or "none"


def value_form(hint: Any) -> str:
    """What an option's value looks like, from its annotation: choices, INT, FLOAT,..., STR."""
    origin, args = typing.get_origin(hint), [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Literal:
        return "|".join(map(str, typing.get_args(hint)))
    if origin in (tuple, list) and args:
        return f"{value_form(args[0])},..."
    if args:  # Optional[X], X | None
        return value_form(args[0])
    return getattr(hint, "__name__", str(hint)).upper()


def _default_text(value: Any) -> str:
    return "none" if value is None else str(value)


def add_severity_aliases(parser: argparse.ArgumentParser, suites: dict[str, Any]) -> None:
    """``--NAME V,...`` for every severity name a suite declares: ``--severity`` for suites whose
    severity is called NAME (checked in :func:`severities`)."""
    names = sorted({name for suite in suites.values() for name in suite.severity_names()})
    aliases = []
    for name in names:
        users = ", ".join(s for s, suite in suites.items() if name in suite.severity_names())
        try:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=f"severity_alias_{name}", type=float_list,
                                metavar="V,V,...", help=f"--severity, for suites whose severity is {name} ({users})")
        except argparse.ArgumentError:  # a name that is already an option: reachable through --severity
            continue
        aliases.append(name)
    parser.set_defaults(severity_aliases=tuple(aliases))


class Replaced(argparse.Action):
    """A flag that was replaced: remembered, and refused with the replacement in :func:`run` (a
    one-line error, as every other bad input)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.replaced = [*namespace.replaced, (option_string, values)]


def severities(args: argparse.Namespace, suite: Any, params: dict[str, Any]) -> tuple[float, ...]:
    """The severities given with --severity or one alias (the suite's default when none is)."""
    given = {f"--{name}": getattr(args, f"severity_alias_{name}") for name in args.severity_aliases
             if getattr(args, f"severity_alias_{name}") is not None}
    if args.severity is not None:
        given["--severity"] = args.severity
    if len(given) > 1:
        raise ConfigError(f"give the severities once (got {' and '.join(given)})")
    if not given:
        return ()
    flag, values = next(iter(given.items()))
    measured = suite.severity_name_for(params)
    if flag != "--severity" and flag != f"--{measured}":
        raise ConfigError(f"{flag} does not apply to suite {suite.name}, whose severity is {measured}: use --severity")
    return tuple(values)


# ---- the caption source, built only when a suite asks for it ---------------------------------------------
def default_cache() -> Path:
    from robustrec.media.cache import cache_root

    return cache_root() / "captions"


def captioner_options(args: argparse.Namespace) -> dict[str, Any]:
    """The --captioner options, checked for consistency (before any work)."""
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
    return options


def captions_factory(args: argparse.Namespace) -> Callable[[Any], Any]:
    """dataset -> caption source through the cache. The captioner (a model to load) is built on the
    first call, which only a suite that inserts captions makes."""
    from captioning import CaptionCache, build_captioner
    from perturbations.caption import caption_source

    options = captioner_options(args)
    captioner = functools.cache(lambda: build_captioner(args.captioner, **options))
    cache = CaptionCache(Path(args.caption_cache) if args.caption_cache else default_cache())
    return lambda dataset: caption_source(captioner(), cache, dataset, progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    from perturbations import PERTURBATIONS, AuditConfig, audit, parse_suite_params

    if args.replaced:
        flag, value = args.replaced[0]
        raise ConfigError(f"{flag} was {'renamed' if flag == '--seed' else 'replaced by'} "
                          f"{REPLACED[flag].format(value)}")
    runs = runs_given(args, "audit")
    check_output_folder(args.out)  # before any work, the captioner included
    if args.caption_cache:
        check_output_folder(args.caption_cache, "--caption-cache")
    params = parse_suite_params(args.suite, args.suite_param)
    config = AuditConfig(
        suite=args.suite,
        params=params,
        severities=severities(args, PERTURBATIONS.get(args.suite), params),
        repeats=args.repeats,
        perturbation_seed=args.perturbation_seed,
        device=args.device,
        split=args.split,
        per_user=not args.no_per_user,
    )
    paths = audit(runs, config, args.out, data=args.data, captions_factory=captions_factory(args),
                  progress=not args.no_progress, images_root=args.images, allow_unfinished=args.allow_unfinished)
    for path in paths:
        print(path)
    return 0
