"""Plots of relative drops (matplotlib, Agg backend: no display needed).

One subplot per suite. A suite audited at one severity gets grouped bars of the drop per model (one
bar per strategy, error bars = std over seeds); a suite with several severities gets drop-vs-severity
curves, one line per model and strategy with a band of ± one std over seeds. Severity axes are
logarithmic for Gaussian noise (sigma2) and relative noise scales, linear otherwise (e.g. caption
probability). The file type follows the extension: ``.png`` or ``.svg``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from robustrec.errors import ConfigError
from robustrec.io import atomic_path

from .drops import (
    BASELINE_STRATEGY,
    AuditResults,
    GroupKey,
    SuiteKey,
    format_severity,
    strategy_display,
    strategy_order,
)

PLOT_FORMATS = ("png", "svg")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_axis(suite: SuiteKey) -> bool:
    """Severities spanning orders of magnitude: Gaussian noise variance and relative noise scale."""
    return suite.severity_name in ("sigma2", "scale") or suite.noise_scale == "relative"


def linestyle(strategy: str) -> str:
    """Solid for plain, dashed for mirror, dotted for X+mirror, dash-dotted for other strategies."""
    if strategy == BASELINE_STRATEGY:
        return "-"
    if strategy == "mirror":
        return "--"
    return ":" if "mirror" in strategy else "-."


def _pct(x: float) -> float:
    return 100 * x if not math.isnan(x) else math.nan


def _bars(ax: Any, results: AuditResults, suite: SuiteKey, metric: str) -> None:
    severity = results.severities(suite)[0]
    present = [(k.model, k.strategy) for k in results.keys if k.suite_key == suite]
    models = list(dict.fromkeys(m for m, _ in present))
    strategies = sorted({s for _, s in present}, key=strategy_order)
    width = 0.8 / max(len(strategies), 2)
    colors = _pyplot().get_cmap("tab10")
    for j, strategy in enumerate(strategies):
        xs, means, stds = [], [], []
        for i, model in enumerate(models):
            key = GroupKey(model, strategy, suite.suite, suite.severity_name, suite.noise_scale, severity)
            if key in results.audits:
                cell = results.cell(key, metric)
                xs.append(i + width * (j - (len(strategies) - 1) / 2))
                means.append(_pct(cell.drop_mean))
                stds.append(0.0 if math.isnan(cell.drop_std) else _pct(cell.drop_std))
        if xs:
            label = strategy_display(strategy, results.labels.get(strategy, ""))
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=label, color=colors(j % 10))
    ax.set_xticks(range(len(models)), [m.upper() for m in models])
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_title(f"{suite.title} = {format_severity(severity)}")
    ax.axhline(0, color="black", linewidth=0.6)


def _curves(ax: Any, results: AuditResults, suite: SuiteKey, metric: str) -> None:
    models = list(dict.fromkeys(m for m, _ in results.rows()))
    colors = _pyplot().get_cmap("tab10")
    for model, strategy in results.rows():
        cells = [results.cell(k, metric) for k in results.keys
                 if k.suite_key == suite and (k.model, k.strategy) == (model, strategy)]
        if not cells:
            continue
        x = np.array([c.key.severity for c in cells])
        y = np.array([_pct(c.drop_mean) for c in cells])
        s = np.nan_to_num(np.array([_pct(c.drop_std) for c in cells]))
        color = colors(models.index(model) % 10)
        ax.plot(x, y, marker="o", linestyle=linestyle(strategy), color=color, label=results.label(model, strategy))
        ax.fill_between(x, y - s, y + s, color=color, alpha=0.15, linewidth=0)
    if log_axis(suite):
        ax.set_xscale("log")
    ax.set_xlabel(suite.severity_name or "severity")
    ax.set_title(suite.title)
    ax.axhline(0, color="black", linewidth=0.6)


def plot_format(path: str | Path) -> str:
    """``"png"`` or ``"svg"`` from the file name; ConfigError for anything else."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        raise ConfigError(f"plot file {path} must end in .png or .svg")
    return fmt


def plot_drops(results: AuditResults, path: str | Path, metric: str = "recall@5") -> Path:
    """Draw the drops of ``metric`` for every suite and write them to ``path`` (.png or .svg) atomically."""
    path = Path(path)
    fmt = plot_format(path)
    metric = results.require_metric(metric)
    plt = _pyplot()
    suites = results.suites
    fig, axes = plt.subplots(1, len(suites), figsize=(5.5 * len(suites), 4.2), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        if len(results.severities(suite)) == 1:
            _bars(ax, results, suite, metric)
        else:
            _curves(ax, results, suite, metric)
        ax.set_ylabel(f"Decr. of {metric} (%)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results.dataset}: relative drop of {metric} (mean ± std over seeds)")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120)
    finally:
        plt.close(fig)
    return path
