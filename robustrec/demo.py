"""The demo: the whole pipeline (train, audit, report) in one call, the README's main job.

On the embedded synthetic shop (or another dataset folder) it trains plain and Mirror Gradient runs
of BM3, FREEDOM, MMGCN and GRCN, audits BM3 and FREEDOM under embedding noise (the paper's Table 4;
absolute and relative to each table's scale) and MMGCN and GRCN under caption insertion (Table 5),
each over a sweep of severities (the paper's single setting is the first), and writes a markdown
report and plots. Finished runs and cached captions are reused, so a second call only redoes what is
missing.

``robustrec demo`` is a thin shell over :func:`run_demo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustrec.errors import ConfigError, DataError
from robustrec.io import check_output_folder, write_text
from robustrec.metrics import DEFAULT_METRIC, parse_metric
from robustrec.runs import METRICS_FILE, RunSpec, TrainConfig, open_run


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
    metric: str = DEFAULT_METRIC
    device: str = "cpu"


@dataclass(frozen=True)
class DemoAudit:
    """One audit of the demo and its section of the report (``results/<name>``, ``<name>.png``)."""

    name: str
    title: str
    models: tuple[str, ...]
    suite: str
    severities: tuple[float, ...]
    repeats: int
    params: dict[str, Any] = field(default_factory=dict)


def demo_audits(config: DemoConfig) -> list[DemoAudit]:
    """The demo's three audits: noise (absolute, then relative) and captions."""
    return [
        DemoAudit("noise", "Information noise, absolute sigma^2 (Table 4 style; 1e-6 is the paper's setting)",
                  config.noise_models, "noise", config.sigma2, config.noise_repeats),
        DemoAudit("noise-relative", "Information noise relative to each table's std (s = sigma / std)",
                  config.noise_models, "noise", config.scales, config.noise_repeats, {"noise_scale": "relative"}),
        DemoAudit("caption", "Information adjustment: captions inserted into item text (Table 5 style; "
                  "p = 0.01 is the paper's)", config.caption_models, "caption", config.probs, config.caption_repeats),
    ]


def run_demo(data: str | Path | None, out: str | Path, config: DemoConfig = DemoConfig(), progress: bool = True) -> Path:
    """Run the demo into ``out``; return the path of the markdown report.

    Everything that could only fail after the training is checked first: the output folder, the
    training settings, every audit's suite options and severities, the metric and the captioner.
    """
    from captioning import CaptionCache, build_captioner
    from perturbations import audit
    from perturbations.caption import caption_source
    from robustrec.data import open_dataset

    out = check_output_folder(out)
    check_config(config)
    audits = [(part, audit_config(part, config)) for part in demo_audits(config)]
    captioner = build_captioner(config.captioner, device=config.device)  # fails now, not after training
    dataset = open_dataset(data, progress=progress)
    print(dataset.describe())
    runs = train_runs(dataset, out / "runs", config, progress)
    cache = CaptionCache(out / "caption-cache")
    for part, audit_settings in audits:
        audit([p for m in part.models for p in runs[m]], audit_settings, out / "results" / part.name,
              data=data or dataset.root, captions_factory=lambda ds: caption_source(captioner, cache, ds, progress),
              progress=progress)
    sections = [f"# robustrec demo: {dataset.name}\n", dataset.describe() + "\n", training_table(runs)]
    # the notes that explain Decr., ± and the tests once, in the first audit's section
    sections += [report_section(part, out, config.metric, notes=i == 0) for i, (part, _) in enumerate(audits)]
    report = out / "report.md"
    write_text(report, "\n\n".join(sections) + "\n")
    return report


def audit_config(part: DemoAudit, config: DemoConfig):
    """The :class:`perturbations.AuditConfig` of one demo audit (which checks its severities)."""
    from perturbations import AuditConfig

    return AuditConfig(part.suite, params=part.params, severities=part.severities, repeats=part.repeats,
                       device=config.device)


def train_runs(dataset, folder: Path, config: DemoConfig, progress: bool) -> dict[str, list[Path]]:
    """Train (or reuse) the popularity floor and every model x strategy x seed; model -> run folders."""
    from robustrec.training import train

    runs: dict[str, list[Path]] = {}
    pop = folder / "pop" / f"seed-{config.seeds[0]}"
    if not (pop / METRICS_FILE).is_file():  # the sanity floor, for the training table
        train(dataset, RunSpec("pop", train=TrainConfig(seed=config.seeds[0], device=config.device)), pop,
              progress=False)
    runs["pop"] = [pop]
    for model in dict.fromkeys(config.noise_models + config.caption_models):
        for strategy in config.strategies:
            for seed in config.seeds:
                path = folder / f"{model}-{strategy}" / f"seed-{seed}"
                spec = RunSpec(model, strategy, train=train_config(config, seed))
                if not (path / METRICS_FILE).is_file():
                    train(dataset, spec, path, progress=progress)
                runs.setdefault(model, []).append(path)
    return runs


def train_config(config: DemoConfig, seed: int) -> TrainConfig:
    return TrainConfig(epochs=config.epochs, patience=config.patience, seed=seed, device=config.device)


def check_config(config: DemoConfig) -> None:
    """Refuse training settings, a report metric or a captioner that would only fail after the
    training (the audits' severities are checked by their configs)."""
    if len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"--seeds must be distinct, got {','.join(map(str, config.seeds))}")
    for seed in config.seeds:
        train_config(config, seed)
    _, k = parse_metric(config.metric)
    if k not in TrainConfig().topk:
        raise ConfigError(f"--metric {config.metric}: the demo's runs measure k = "
                          f"{', '.join(map(str, TrainConfig().topk))}")
    if config.captioner == "file":
        raise ConfigError("the demo has no captions file; use --captioner imagenet or blip2 "
                          "(robustrec audit takes --captioner file --captions FILE)")


def report_section(part: DemoAudit, out: Path, metric: str, notes: bool = True) -> str:
    """Plot one audit's drops (PNG for the report, SVG and PDF for a paper) and return its section of
    the report (with the notes on how to read the tables when ``notes``)."""
    from reports import load_results, plot_drops, render

    loaded = load_results(out / "results" / part.name)
    for ext in ("png", "svg", "pdf"):
        plot_drops(loaded, out / f"{part.name}.{ext}", metric=metric)
    table = demote_headings(render(loaded, "markdown", [metric], notes=notes))
    return f"## {part.title}\n\n![{part.name}]({part.name}.png)\n\n{table}"


def demote_headings(markdown: str, levels: int = 1) -> str:
    """Nest a rendered report under a section: '# x' becomes '## x'."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.splitlines())


def training_table(runs: dict[str, list[Path]]) -> str:
    lines = ["## Training", "", "| run | best epoch | valid recall@20 | test recall@20 | test ndcg@20 | s/epoch |",
             "|---|---|---|---|---|---|"]
    for paths in runs.values():
        for path in paths:
            m = open_run(path).results()  # checked: a malformed metrics.json is a DataError naming it
            try:
                valid, test, ndcg = m.valid["recall@20"], m.test["recall@20"], m.test["ndcg@20"]
            except (AttributeError, KeyError):
                raise DataError(f"{path / METRICS_FILE}: malformed run metrics; delete the run folder to "
                                "train it again") from None
            lines.append(f"| {path.parent.name}/{path.name} | {m.best_epoch} | {valid:.4f} | {test:.4f} | "
                         f"{ndcg:.4f} | {m.train_seconds_per_epoch:.2f} |")
    return "\n".join(lines)
