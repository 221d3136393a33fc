"""The demo: the whole pipeline (train, audit, report) in one call, the README's main job.

On the embedded synthetic shop (or another dataset folder) it trains plain and Mirror Gradient runs
of BM3, FREEDOM, MMGCN and GRCN, audits BM3 and FREEDOM under embedding noise (the paper's Table 4;
absolute and relative to each table's scale) and MMGCN and GRCN under caption insertion (Table 5),
each over a sweep of severities (the paper's single setting is the first), and writes a markdown
report and plots. Finished runs, audits and cached captions are reused, so a second call only redoes
what is missing.

The demo is a study: the shipped recipe ``demo`` (robustrec/studies/recipes/demo.toml) run by
:func:`robustrec.studies.run_study` (``robustrec study run demo --out DIR`` trains and audits the same).
:class:`DemoConfig` holds what ``robustrec demo``'s flags change in the recipe, and the demo adds one
plot per audit named after it (``noise``, ``noise-relative``, ``caption``: PNG, SVG and PDF) beside
the study report. ``robustrec demo`` is a thin shell over :func:`run_demo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustrec.errors import ConfigError
from robustrec.metrics import DEFAULT_METRIC, parse_metric
from robustrec.runs import TrainConfig

RECIPE = "demo"
#: The recipe's audits by name, and the DemoConfig field that holds each one's severities.
AUDIT_SEVERITIES = {"noise": "sigma2", "noise-relative": "scales", "caption": "probs"}


@dataclass(frozen=True)
class DemoConfig:
    """Changes to the demo recipe; ``None`` keeps the recipe's value (:func:`recipe_defaults` says
    which). ``metric`` is the report's and the plots' metric only: it changes no training.
    ``threads`` is [study].threads (torch threads of every run; part of each run's identity).
    ``quick`` shrinks the recipe as ``robustrec study run --quick`` does (2 epochs, one seed, one
    repeat at two severities per audit) before these changes apply."""

    seeds: tuple[int, ...] | None = None
    epochs: int | None = None
    patience: int | None = None
    sigma2: tuple[float, ...] | None = None
    scales: tuple[float, ...] | None = None
    probs: tuple[float, ...] | None = None
    captioner: str | None = None
    metric: str = DEFAULT_METRIC
    device: str | None = None
    threads: int | None = None
    quick: bool = False


def recipe_defaults() -> DemoConfig:
    """The demo recipe's own values, as a :class:`DemoConfig` (the CLI shows them as its defaults)."""
    from robustrec.studies.recipes import read_toml, recipe_path

    raw = read_toml(recipe_path(RECIPE))
    train = raw.get("train", {})
    audits = {a.get("name"): a for a in raw.get("audits", [])}
    severities = {field: tuple(audits[name]["severities"]) for name, field in AUDIT_SEVERITIES.items()}
    return DemoConfig(seeds=tuple(raw["study"]["seeds"]), epochs=train.get("epochs"),
                      patience=train.get("patience"), captioner=audits["caption"].get("captioner"),
                      device=train.get("device", TrainConfig.device), **severities)


def demo_spec(data: str | Path | None, config: DemoConfig = DemoConfig()):
    """The demo recipe with ``config``'s changes and ``data`` (None: the embedded default), validated
    as any study spec is (:func:`robustrec.studies.spec.parse_spec`)."""
    from robustrec.studies.recipes import RECIPES_DIR, quick, read_toml, recipe_path
    from robustrec.studies.spec import parse_spec

    path = recipe_path(RECIPE)
    raw = read_toml(path)
    if config.quick:
        raw = quick(raw)
    apply_config(raw, config)
    if data is not None:  # a path as the user typed it: relative to the working folder, not the recipe's
        raw["study"]["data"] = str(Path(data).expanduser().resolve())
    return parse_spec(raw, base=RECIPES_DIR, source=path)


def apply_config(raw: dict[str, Any], config: DemoConfig) -> None:
    """Write ``config``'s changes into the recipe's TOML dict ``raw`` (in place)."""
    if config.seeds is not None:
        raw["study"]["seeds"] = list(config.seeds)
    if config.threads is not None:
        raw["study"]["threads"] = config.threads
    train = raw.setdefault("train", {})
    for name in ("epochs", "patience"):
        if getattr(config, name) is not None:
            train[name] = getattr(config, name)
    if config.device not in (None, train.get("device", TrainConfig.device)):  # the CLI's default is cpu
        train["device"] = config.device
    for audit in raw.get("audits", []):
        field = AUDIT_SEVERITIES.get(audit.get("name"))
        severities = getattr(config, field) if field else None
        if severities is not None:
            audit["severities"] = list(severities)
        if audit.get("suite") == "caption":
            if config.captioner is not None:
                audit["captioner"] = config.captioner
            if config.device not in (None, "cpu"):  # the captioner runs where the models do
                audit.setdefault("captioner_params", {})["device"] = config.device


def check_config(config: DemoConfig) -> None:
    """What the spec does not check: distinct seeds (said with the flag's name), a report metric the
    runs measure, and a captioner that needs no captions file."""
    if config.seeds is not None and len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"--seeds must be distinct, got {','.join(map(str, config.seeds))}")
    _, k = parse_metric(config.metric)
    if k not in TrainConfig().topk:
        raise ConfigError(f"--metric {config.metric}: the demo's runs measure k = "
                          f"{', '.join(map(str, TrainConfig().topk))}")
    if config.captioner == "file":
        raise ConfigError("the demo has no captions file; use --captioner imagenet or blip2 "
                          "(robustrec audit takes --captioner file --captions FILE)")


def run_demo(data: str | Path | None, out: str | Path, config: DemoConfig = DemoConfig(), progress: bool = True) -> Path:
    """Run the demo into ``out``; return the path of the markdown report.

    Everything that could only fail after the training is checked first: the options, the whole
    spec (training settings, every audit's suite options and severities), the output folder and the
    captioner (built once here, so that a missing model fails now).
    """
    from robustrec.io import check_output_folder
    from robustrec.studies import run_study

    check_config(config)
    spec = demo_spec(data, config)
    out = check_output_folder(out)
    for audit in spec.audits:
        if audit.suite == "caption":
            check_captioner(audit.captioner, dict(audit.captioner_params))
    folder = run_study(spec, out, progress=progress)
    plots = write_audit_plots(folder, spec, config.metric)
    return rewrite_report(folder, config.metric, spec.select, plots)


def check_captioner(name: str, params: dict[str, Any]) -> None:
    """Build the captioner, so that a missing model or package fails before the training."""
    from captioning import build_captioner

    build_captioner(name, **params)


def write_audit_plots(folder: Path, spec, metric: str) -> list[Path]:
    """``folder/<audit name>.png`` (and ``.svg``, ``.pdf``): the relative drops of each named audit of
    the runs the study selected, as the demo wrote them before it was a study."""
    from reports import plot_drops
    from robustrec.studies.plan import audit_folder
    from robustrec.studies.report import load_study

    study = load_study(folder)
    results = {audit.name: audit.results for audit in study.audits}
    written = []
    for entry in spec.audits:
        found = results.get(audit_folder(folder, entry, entry.config(spec.device)).name)
        if entry.name is None or found is None:
            continue
        for ext in ("png", "svg", "pdf"):
            written.append(plot_drops(found, folder / f"{entry.name}.{ext}", metric=metric))
    return written


def rewrite_report(folder: Path, metric: str, select: str, plots: list[Path]) -> Path:
    """The study report, rewritten with the drop tables of ``metric`` when that is not the study's
    selection metric (which the study report uses), with the demo's plots (drawn in ``metric``)
    linked at the end."""
    report = folder / "report.md"
    if parse_metric(metric) != parse_metric(select):
        from robustrec.io import write_text
        from robustrec.studies.report import study_report

        links = [f"![{p.stem}]({p.name})" for p in plots if p.suffix == ".png"]
        write_text(report, study_report(folder, "markdown", metric) + "\n## Plots of " + metric + "\n\n"
                   + "\n\n".join(links) + "\n")
    return report


__all__ = ["DemoConfig", "demo_spec", "recipe_defaults", "run_demo"]
