"""Plots of loss landscapes from diagnosis records (:class:`robustrec.records.Diagnosis`).

- :func:`plot_landscapes`: the 1-D landscapes (``curves["landscape_1d"]``), the training loss along a
  filter-normalised random direction through each run's weights; one panel per model, one line per run;
- :func:`plot_surface`: the 2-D landscapes (``surfaces["landscape_2d"]``) as filled contours, one panel
  per run (the runs of one model on one colour scale), the run's weights marked with a cross at the origin;
- :func:`plot_interpolation`: the loss on the straight line between two runs (``curves["interpolation"]``,
  t = 0 is the first run, t = 1 the other); one panel per model, one line per pair.

The colour of a line is its strategy's (the colours of :mod:`reports.plots`, so MG looks the same in
every figure), its line style the run's seed. Figures follow :mod:`reports.plots`: the paper style,
the file type from the extension (.png, .svg, .pdf, checked before anything is drawn), atomic writes,
and no import of torch or a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robustrec.errors import DataError
from robustrec.io import atomic_path
from robustrec.records import Diagnosis

from .drops import row_label, strategy_display, strategy_order
from .plots import (
    MARKERS,
    METADATA,
    PALETTE,
    PANEL_SIZE,
    STRATEGY_COLORS,
    _fit_texts,
    paper_style,
    plot_format,
)

LANDSCAPE = "landscape_1d"
SURFACE = "landscape_2d"
INTERPOLATION = "interpolation"
LINESTYLES = ("-", "--", ":", "-.")
#: Filled contour levels of a surface; geometric steps when its losses span more than a decade.
CONTOUR_LEVELS = 15
MAX_COLUMNS = 4  # surface panels per row


def strategy_colors(strategies: Sequence[str]) -> dict[str, str]:
    """A colour per strategy: the fixed colour of a known one (:data:`reports.plots.STRATEGY_COLORS`),
    the palette's next free colour for others, in :func:`~reports.drops.strategy_order` (as the drops
    plots assign them)."""
    ordered = sorted(set(strategies), key=strategy_order)
    known = {s: STRATEGY_COLORS[s] for s in ordered if s in STRATEGY_COLORS}
    free = iter(c for c in PALETTE if c not in known.values())
    return {s: known.get(s) or next(free, "#808080") for s in ordered}


def plot_landscapes(diagnoses: Sequence[Diagnosis], path: str | Path, *, title: str | None = None) -> Path:
    """Draw the 1-D landscape of every diagnosis that has one (one panel per model) to ``path``."""
    return _save(lambda: _curves_figure(
        _with_curve(diagnoses, LANDSCAPE, "a 1-D landscape"), LANDSCAPE,
        r"step along a filter-normalised direction $\alpha$", "loss along a random direction", title), path)


def plot_interpolation(diagnoses: Sequence[Diagnosis], path: str | Path, *, title: str | None = None) -> Path:
    """Draw the loss between each interpolated pair of runs (one panel per model) to ``path``."""
    return _save(lambda: _curves_figure(
        _with_curve(diagnoses, INTERPOLATION, "an interpolation between two runs"), INTERPOLATION,
        r"$t$ (0: the run, 1: the other run)", "loss between two runs", title), path)


def plot_surface(diagnoses: Diagnosis | Sequence[Diagnosis], path: str | Path, *, title: str | None = None,
                 surface: str = SURFACE) -> Path:
    """Draw the 2-D landscape of one diagnosis, or of each of several (one panel each), to ``path``."""
    chosen = [diagnoses] if isinstance(diagnoses, Diagnosis) else list(diagnoses)
    return _save(lambda: _surface_figure(chosen, surface, title), path)


# -- figures -------------------------------------------------------------------------------------
def _save(draw: Any, path: str | Path) -> Path:
    path = Path(path)
    fmt = plot_format(path)  # before anything is drawn
    fig = draw()
    with paper_style(), atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, metadata=METADATA[fmt])
    return path


def _figure(panels: int, columns: int | None = None) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = columns or panels
    rows = -(-panels // columns)
    fig = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.remove()
    return fig, axes[:panels]


def _with_curve(diagnoses: Sequence[Diagnosis], name: str, what: str) -> list[Diagnosis]:
    if isinstance(diagnoses, Diagnosis):
        diagnoses = [diagnoses]
    chosen = [d for d in diagnoses if name in d.curves]
    if not chosen:
        raise DataError(f"no diagnosis holds {what} (curve {name!r}); measure it with robustrec diagnose")
    return chosen


def _by_model(diagnoses: Sequence[Diagnosis]) -> dict[tuple[str, str], list[Diagnosis]]:
    groups: dict[tuple[str, str], list[Diagnosis]] = {}
    for d in diagnoses:
        groups.setdefault((d.dataset, d.model), []).append(d)
    return groups


def _line_label(d: Diagnosis, seeds_shown: bool) -> str:
    label = strategy_display(d.strategy, d.strategy_label)
    if d.kind == INTERPOLATION:
        other_label = d.settings.get("other_label")
        label += f" → {strategy_display(str(other_label)) if other_label else Path(d.other or '').name}"
        barrier = d.measures.get("barrier")
        if barrier is not None:
            label += f" (barrier {barrier:.3g})"
    return f"{label}, seed {d.run_seed}" if seeds_shown else label


def _seed_style(index: int) -> dict[str, str]:
    """Line style and marker of the ``index``-th seed: distinct for 4 x 10 seeds (styles first)."""
    return {"linestyle": LINESTYLES[index % len(LINESTYLES)],
            "marker": MARKERS[index // len(LINESTYLES) % len(MARKERS)]}


def _curves_figure(diagnoses: list[Diagnosis], name: str, xlabel: str, subject: str, title: str | None) -> Any:
    from matplotlib.lines import Line2D

    groups = _by_model(diagnoses)
    colors = strategy_colors([d.strategy for d in diagnoses])
    seeds = sorted({d.run_seed for d in diagnoses})
    seeds_shown = len(seeds) > 1
    datasets = {dataset for dataset, _ in groups}
    with paper_style():
        fig, axes = _figure(len(groups))
        entries: dict[str, Any] = {}
        for ax, ((dataset, model), members) in zip(axes, groups.items()):
            for d in sorted(members, key=lambda d: (strategy_order(d.strategy), d.run_seed)):
                curve = d.curves[name]
                style = _seed_style(seeds.index(d.run_seed))
                style["color"] = colors[d.strategy]
                ax.plot(curve["x"], curve["y"], markersize=2.5, **style)
                entries.setdefault(_line_label(d, seeds_shown), Line2D([], [], **style))
            for x in (0.0, 1.0) if name == INTERPOLATION else (0.0,):
                ax.axvline(x, color="0.3", linewidth=0.6, zorder=1)
            where = f" on {dataset}" if len(datasets) > 1 else ""
            ax.set(title=f"{row_label(model, 'plain')}: {subject}{where}", xlabel=xlabel, ylabel="training loss")
        shown = fig.suptitle(title) if title else None
        _fit_texts(fig, shown, entries)
    return fig


def _surface_figure(diagnoses: list[Diagnosis], name: str, title: str | None) -> Any:
    from matplotlib.colors import LogNorm

    chosen = [d for d in diagnoses if name in d.surfaces]
    if not chosen:
        raise DataError(f"no diagnosis holds a 2-D landscape (surface {name!r}); measure it with robustrec "
                        "diagnose --measures surface")
    for d in chosen:
        s = d.surfaces[name]
        if len(s["x"]) < 2 or len(s["y"]) < 2:
            raise DataError(f"the 2-D landscape of {d.run} has {len(s['x'])} x {len(s['y'])} points; "
                            "a contour needs at least 2 x 2")
    with paper_style():
        fig, axes = _figure(len(chosen), min(len(chosen), MAX_COLUMNS))
        ranges: dict[tuple[str, str], tuple[float, float]] = {}  # one colour scale per model: runs compare
        for d in chosen:
            z = np.asarray(d.surfaces[name]["z"], dtype=float)
            lo, hi = ranges.get((d.dataset, d.model), (np.inf, -np.inf))
            ranges[(d.dataset, d.model)] = (min(lo, float(z.min())), max(hi, float(z.max())))
        for ax, d in zip(axes, chosen):
            s = d.surfaces[name]
            z = np.asarray(s["z"], dtype=float)
            lo, hi = ranges[(d.dataset, d.model)]
            if lo > 0 and hi / lo > 10:
                levels, norm = np.geomspace(lo, hi, CONTOUR_LEVELS), LogNorm(lo, hi)
            else:
                pad = 0.0 if hi > lo else max(abs(lo) * 1e-6, 1e-12)  # a flat surface still needs two levels
                levels, norm = np.linspace(lo - pad, hi + pad, CONTOUR_LEVELS), None
            filled = ax.contourf(s["x"], s["y"], z, levels=levels, norm=norm, cmap="viridis")
            ax.contour(s["x"], s["y"], z, levels=levels, norm=norm, colors="white", linewidths=0.3, alpha=0.6)
            ax.plot([0], [0], marker="+", color="#d55e00", markersize=8, markeredgewidth=1.2, linestyle="none")
            fig.colorbar(filled, ax=ax, label="training loss", format="%.3g")
            ax.set(title=f"{row_label(d.model, d.strategy, d.strategy_label)}, seed {d.run_seed}",
                   xlabel=r"direction 1 $\alpha$", ylabel=r"direction 2 $\beta$")
            ax.grid(False)
        if title:
            fig.suptitle(title)
    return fig
