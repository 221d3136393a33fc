"""``robustrec demo``: the whole pipeline in one command, the README's main job.

On the embedded synthetic shop (or ``--data``) it trains plain and Mirror Gradient runs of BM3,
FREEDOM, MMGCN and GRCN, audits BM3 and FREEDOM under embedding noise (the paper's Table 4; absolute and relative to each
table's scale) and
MMGCN and GRCN under caption insertion (Table 5), each over a sweep of severities (the paper's single
setting is the first), and writes a markdown report and plots. Finished runs and cached captions are
reused, so a second call only redoes what is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from robustrec.cli.common import add_data_argument, add_device_argument, float_list, int_list, open_data
from robustrec.errors import ConfigError, DataError
from robustrec.io import check_output_folder, read_json, write_text
from robustrec.metrics import parse_metric
from robustrec.runs import METRICS_FILE, RunSpec, TrainConfig


@dataclass(frozen=True)
class DemoConfig:
    noise_models: tuple[str, ...] = ("bm3", "freedom")
    caption_models: tuple[str, ...] = ("mmgcn", "grcn")
    strategies: tuple[str, ...] = ("plain", "mirror")
    seeds: tuple[int, ...] = (999,)
    epochs: int = 60
    patience: int = 10
    sigma2: tuple[float, ...] = (1e-6, 1e-4, 1e-2)
    scales: tuple[float, ...] = (0.1, 0.5, 1.0)
    probs: tuple[float, ...] = (0.01, 0.1, 0.5)
    noise_repeats: int = 10
    caption_repeats: int = 3
    captioner: str = "imagenet"
    metric: str = "recall@20"
    device: str = "cpu"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train, audit and report end to end (the README's main job)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    add_data_argument(p)
    p.add_argument("--out", required=True, help="output folder: runs/, results/, report.md, plots")
    p.add_argument("--seeds", type=int_list, default=(999,), help="training seeds (default 999)")
    p.add_argument("--epochs", type=int, default=60, help="maximum epochs per run (default 60)")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience (default 10)")
    p.add_argument("--sigma2", type=float_list, default=(1e-6, 1e-4, 1e-2), help="noise severities")
    p.add_argument("--scale", type=float_list, default=(0.1, 0.5, 1.0), help="relative noise scales s")
    p.add_argument("--prob", type=float_list, default=(0.01, 0.1, 0.5), help="caption probabilities")
    p.add_argument("--captioner", default="imagenet", help="imagenet (offline, default) or blip2")
    p.add_argument("--metric", default="recall@20", help="metric for the report and plots")
    add_device_argument(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run_demo(data: str | None, out: str | Path, config: DemoConfig = DemoConfig(), progress: bool = True) -> Path:
    """Run the demo into ``out``; return the path of the markdown report.

    The output folder, the metric and the captioner are checked before anything is trained.
    """
    from captioning import CaptionCache, build_captioner
    from perturbations import AuditConfig, audit
    from perturbations.caption import caption_source
    from reports import load_results, plot_drops, render
    from robustrec.training import train

    out = check_output_folder(out)
    _check_config(config)
    captioner = build_captioner(config.captioner, device=config.device)  # fails now, not after training
    dataset = open_data(data)
    print(dataset.describe())
    runs: dict[str, list[Path]] = {}
    pop = out / "runs" / "pop" / f"seed-{config.seeds[0]}"
    if not (pop / METRICS_FILE).is_file():  # the sanity floor, for the training table
        train(dataset, RunSpec("pop", train=TrainConfig(seed=config.seeds[0], device=config.device)), pop,
              progress=False)
    runs["pop"] = [pop]
    for model in dict.fromkeys(config.noise_models + config.caption_models):
        for strategy in config.strategies:
            for seed in config.seeds:
                path = out / "runs" / f"{model}-{strategy}" / f"seed-{seed}"
                spec = RunSpec(model, strategy, train=TrainConfig(
                    epochs=config.epochs, patience=config.patience, seed=seed, device=config.device))
                if not (path / METRICS_FILE).is_file():
                    train(dataset, spec, path, progress=progress)
                runs.setdefault(model, []).append(path)

    results = out / "results"
    noise_runs = [p for m in config.noise_models for p in runs[m]]
    noise = AuditConfig("noise", severities=config.sigma2, repeats=config.noise_repeats, device=config.device)
    audit(noise_runs, noise, results / "noise", data=data or dataset.root, progress=progress)
    relative = AuditConfig("noise", severities=config.scales, repeats=config.noise_repeats, device=config.device,
                           noise_scale="relative")
    audit(noise_runs, relative, results / "noise-relative", data=data or dataset.root, progress=progress)

    cache = CaptionCache(out / "caption-cache")

    caption_runs = [p for m in config.caption_models for p in runs[m]]
    caption = AuditConfig("caption", severities=config.probs, repeats=config.caption_repeats, device=config.device)
    audit(caption_runs, caption, results / "caption", data=data or dataset.root, captions_factory=lambda ds: caption_source(captioner, cache, ds),
          progress=progress)

    sections = [f"# robustrec demo: {dataset.name}\n", dataset.describe() + "\n", _training_table(runs)]
    parts = (
        ("noise", "Information noise, absolute sigma^2 (Table 4 style; 1e-6 is the paper's setting)"),
        ("noise-relative", "Information noise relative to each table's std (s = sigma / std)"),
        ("caption", "Information adjustment: captions inserted into item text (Table 5 style; p = 0.01 is the paper's)"),
    )
    for part, title in parts:
        loaded = load_results(results / part)
        for ext in ("png", "svg"):
            plot_drops(loaded, out / f"{part}.{ext}", metric=config.metric)
        table = demote_headings(render(loaded, "markdown", [config.metric]))
        sections.append(f"## {title}\n\n![{part}]({part}.png)\n\n{table}")
    report = out / "report.md"
    write_text(report, "\n\n".join(sections) + "\n")
    return report


def _check_config(config: DemoConfig) -> None:
    """Refuse what would only fail after all the training: training settings, severities, the report
    metric and the captioner."""
    from perturbations import EmbeddingNoise

    if len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"--seeds must be distinct, got {','.join(map(str, config.seeds))}")
    for seed in config.seeds:
        TrainConfig(epochs=config.epochs, patience=config.patience, seed=seed, device=config.device)
    for sigma2 in config.sigma2:
        EmbeddingNoise(sigma2)
    for scale in config.scales:
        EmbeddingNoise(scale, scale="relative")
    bad = [p for p in config.probs if not 0 <= p <= 1]
    if bad:
        raise ConfigError(f"--prob must be in [0, 1], got {bad[0]}")
    _, k = parse_metric(config.metric)
    if k not in TrainConfig().topk:
        raise ConfigError(f"--metric {config.metric}: the demo's runs measure k = "
                          f"{', '.join(map(str, TrainConfig().topk))}")
    if config.captioner == "file":
        raise ConfigError("the demo has no captions file; use --captioner imagenet or blip2 "
                          "(robustrec audit takes --captioner file --captions FILE)")


def demote_headings(markdown: str, levels: int = 1) -> str:
    """Nest a rendered report under a section: '# x' becomes '## x'."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.splitlines())


def _training_table(runs: dict[str, list[Path]]) -> str:
    lines = ["## Training", "", "| run | best epoch | valid recall@20 | test recall@20 | test ndcg@20 | s/epoch |",
             "|---|---|---|---|---|---|"]
    for paths in runs.values():
        for path in paths:
            m = read_json(path / METRICS_FILE, "run metrics")
            try:
                row = (m["best_epoch"], m["valid"]["recall@20"], m["test"]["recall@20"], m["test"]["ndcg@20"],
                       m["train_seconds_per_epoch"])
                best, *numbers = (float(v) for v in row)  # TypeError/ValueError for anything but numbers
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{path / METRICS_FILE}: malformed run metrics; delete the run folder to "
                                "train it again") from None
            valid, test, ndcg, seconds = numbers
            lines.append(f"| {path.parent.name}/{path.name} | {best:g} | {valid:.4f} | {test:.4f} | {ndcg:.4f} | "
                         f"{seconds:.2f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise ConfigError("--epochs must be >= 1")
    config = dataclasses.replace(
        DemoConfig(), seeds=tuple(args.seeds), epochs=args.epochs, patience=args.patience,
        sigma2=tuple(args.sigma2), scales=tuple(args.scale), probs=tuple(args.prob), captioner=args.captioner, metric=args.metric.lower(),
        device=args.device,
    )
    report = run_demo(args.data, args.out, config, progress=not args.no_progress)
    print(f"report: {report}")
    return 0
