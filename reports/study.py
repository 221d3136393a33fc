"""Figures of a study: the grid surface (the paper's Fig. 5) and training curves (its Fig. 4).

Both are drawn from plain numbers (validation values per grid point and seed; per-epoch loss and
validation values per seed), so this module knows nothing of study folders: ``robustrec.studies.report``
reads those and builds :class:`GridSurface` and :class:`Curve` objects.

- **Grid surface.** For a 2-D grid, a heatmap of the validation metric (mean over seeds) with the
  first grid parameter down the rows and the second across the columns, each cell labelled with its
  value and the point(s) chosen by some seed marked with a star. For a 1-D grid, the mean as a line
  with a ± 1 std band over seeds and the chosen point(s) starred. (The paper's Fig. 5 is a 3-D
  surface; a heatmap shows the same numbers without hiding cells behind others.)
- **Training curves.** Two panels, the training loss and the validation metric per epoch, one line
  per (model, strategy) with the mean over seeds and a ± 1 std band where two or more seeds reached
  that epoch (runs stop early at different epochs).

Style, colours, markers, line styles and file handling are those of :mod:`reports.plots`, imported.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from robustrec.errors import ConfigError
from robustrec.io import atomic_path

from .drops import sample_std
from .plots import (
    MARKERS,
    METADATA,
    PANEL_SIZE,
    Look,
    _fit_texts,
    linestyle,
    log_axis,
    metric_label,
    paper_style,
    plot_format,
)

__all__ = ["Curve", "GridSurface", "SurfacePoint", "curves_figure", "grid_figure", "plot_curves", "plot_grid"]

CHOSEN_STYLE: dict[str, Any] = {"marker": "*", "markersize": 9, "linestyle": "none", "color": "white",
                                "markeredgecolor": "black", "markeredgewidth": 0.6, "zorder": 5}
CHOSEN_LABEL = "chosen on validation (by some seed)"
LINE_COLOR = "#0072b2"  # the 1-D surface: the palette's first colour
MAX_LABELLED_COLUMNS = 8  # wider heatmaps leave their values to the colour bar and the surface table
MAX_MARKERS = 12  # markers per training curve; a 300-epoch line gets one every 25 epochs


# -- data ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SurfacePoint:
    """One grid point: its parameter values, the validation value of each seed, and how many seeds
    chose it."""

    grid: Mapping[str, Any]
    values: tuple[float, ...]
    chosen_by: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample std over seeds (NaN with one seed)."""
        return sample_std(self.values)


@dataclass(frozen=True)
class GridSurface:
    """The validation surface of one run entry (``title``, e.g. ``"FREEDOM + MG"``) over its grid
    parameters ``names``, in the spec's order."""

    title: str
    names: tuple[str, ...]
    points: tuple[SurfacePoint, ...]

    def axis(self, name: str) -> list[Any]:
        """The distinct values of one grid parameter, in the order the points give them."""
        return list(dict.fromkeys(p.grid[name] for p in self.points))


@dataclass(frozen=True)
class Curve:
    """The training curves of one (model, strategy): per seed, epoch -> loss and epoch -> validation
    value (epochs without a validation pass are absent)."""

    label: str
    model: str
    strategy: str
    loss: tuple[Mapping[int, float], ...]
    valid: tuple[Mapping[int, float], ...]


def mean_by_epoch(series: Sequence[Mapping[int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, std) over the seeds that reached each epoch; std is NaN where only one did."""
    epochs = sorted({e for s in series for e in s})
    values = [[s[e] for s in series if e in s] for e in epochs]
    return (np.array(epochs), np.array([np.mean(v) for v in values]), np.array([sample_std(v) for v in values]))


def tick_text(value: Any) -> str:
    """A grid value as a tick label: ``1.0 -> "1"``, ``0.1 -> "0.1"``, ``1e-05 -> "1e-05"``, names as is."""
    return f"{value:g}" if _is_number(value) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# -- grid surface ----------------------------------------------------------------------------------
def grid_figure(surface: GridSurface, metric: str) -> Any:
    """The heatmap (2-D grid) or line (1-D grid) of ``surface``: a standalone Agg Figure."""
    if len(surface.names) not in (1, 2):
        raise ConfigError(f"{surface.title}: a grid of {len(surface.names)} parameters has no figure "
                          "(only 1-D and 2-D grids do; the surface table lists every point)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with paper_style():
        fig = Figure(figsize=(PANEL_SIZE[0] + 0.6, PANEL_SIZE[1] + 0.4), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        (_heatmap if len(surface.names) == 2 else _line)(fig, ax, surface, metric)
        title = f"{surface.title}: validation {metric_label(metric)} over the grid"
        ax.set_title(textwrap.fill(title, 48))
    return fig


def _heatmap(fig: Any, ax: Any, surface: GridSurface, metric: str) -> None:
    """Rows: the first grid parameter; columns: the second; a missing combination is left blank."""
    rows, cols = surface.axis(surface.names[0]), surface.axis(surface.names[1])
    cells = np.full((len(rows), len(cols)), np.nan)
    chosen_x, chosen_y = [], []
    for p in surface.points:
        i, j = rows.index(p.grid[surface.names[0]]), cols.index(p.grid[surface.names[1]])
        cells[i, j] = p.mean
        if p.chosen_by:
            chosen_x.append(j)
            chosen_y.append(i)
    image = ax.imshow(np.ma.masked_invalid(cells), cmap="viridis", aspect="auto")
    labelled = cells.shape[1] <= MAX_LABELLED_COLUMNS
    for i, j in np.ndindex(cells.shape):
        if labelled and math.isfinite(cells[i, j]):  # the value above the centre, where the star goes
            light = image.norm(cells[i, j]) > 0.6 if cells.size > 1 else False
            ax.text(j, i - 0.22, f"{cells[i, j]:.4f}", ha="center", va="center", fontsize=6.5,
                    color="black" if light else "white")
    ax.plot(chosen_x, chosen_y, gid="chosen", label=CHOSEN_LABEL, **CHOSEN_STYLE)
    ax.set_xticks(range(len(cols)), [tick_text(v) for v in cols])
    ax.set_yticks(range(len(rows)), [tick_text(v) for v in rows])
    ax.set_xlabel(surface.names[1])
    ax.set_ylabel(surface.names[0])
    ax.grid(False)
    ax.tick_params(length=0)
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(f"valid {metric_label(metric)} (mean over seeds)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=6.5)


def _line(fig: Any, ax: Any, surface: GridSurface, metric: str) -> None:
    """The mean over seeds against the parameter (its values on a numeric axis when they are
    numbers, else one position each), ± 1 std as a band."""
    name = surface.names[0]
    values = surface.axis(name)
    numeric = all(_is_number(v) for v in values)
    x = np.array(values, dtype=float) if numeric else np.arange(len(values), dtype=float)
    mean = np.array([p.mean for p in surface.points])
    std = np.nan_to_num(np.array([p.std for p in surface.points]))
    order = [values.index(p.grid[name]) for p in surface.points]
    x = x[order]
    ax.plot(x, mean, marker="o", color=LINE_COLOR, gid="surface", label="mean over seeds")
    if std.any():
        ax.fill_between(x, mean - std, mean + std, color=LINE_COLOR, alpha=0.15, linewidth=0,
                        label="± 1 std over seeds")
    chosen = [k for k, p in enumerate(surface.points) if p.chosen_by]
    ax.plot(x[chosen], mean[chosen], gid="chosen", label=CHOSEN_LABEL, **{**CHOSEN_STYLE, "color": "#d55e00"})
    if numeric and log_axis(values):
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(values)), [tick_text(v) for v in values])
    ax.set_xlabel(name)
    ax.set_ylabel(f"valid {metric_label(metric)}")
    ax.legend(loc="best")


def plot_grid(surface: GridSurface, path: str | Path, metric: str) -> Path:
    """Write :func:`grid_figure` to ``path`` (.png, .svg or .pdf) atomically."""
    plot_format(path)  # the file name is checked before anything is drawn
    return _save(grid_figure(surface, metric), path)


# -- training curves ------------------------------------------------------------------------------
class _Rows:
    """What :meth:`reports.plots.Look.of` reads of its argument (``rows()``), for a set of curves:
    so a strategy has the same colour and a model the same marker as in the drop plots."""

    def __init__(self, curves: Sequence[Curve]) -> None:
        self._rows = list(dict.fromkeys((c.model, c.strategy) for c in curves))

    def rows(self) -> list[tuple[str, str]]:
        return self._rows


def curves_figure(curves: Sequence[Curve], metric: str) -> Any:
    """Loss and validation ``metric`` per epoch, mean ± 1 std over seeds, one line per curve."""
    if not curves:
        raise ConfigError("no training curves to draw")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    look = Look.of(_Rows(curves))  # type: ignore[arg-type]
    with paper_style():
        fig = Figure(figsize=(PANEL_SIZE[0] * 2, PANEL_SIZE[1]), layout="constrained")
        FigureCanvasAgg(fig)
        loss_ax, valid_ax = fig.subplots(1, 2)
        banded = False
        for curve in curves:
            style = {"color": look.colors[curve.strategy], "linestyle": linestyle(curve.strategy),
                     "marker": MARKERS[look.models.index(curve.model) % len(MARKERS)], "label": curve.label}
            for ax, series in ((loss_ax, curve.loss), (valid_ax, curve.valid)):
                banded |= _curve(ax, series, style)
        loss_ax.set_ylabel("training loss")
        valid_ax.set_ylabel(f"valid {metric_label(metric)}")
        for ax in (loss_ax, valid_ax):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        entries = {c.label: h for c, h in zip(curves, loss_ax.get_lines())}
        if banded:
            seeds = sorted({len(c.loss) for c in curves})
            n = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
            entries[f"± 1 std over {n} seeds"] = Patch(facecolor="0.5", alpha=0.3, linewidth=0)
        title = fig.suptitle(f"Training curves (mean over seeds); selection on valid {metric_label(metric)}")
        _fit_texts(fig, title, entries)
    return fig


def _curve(ax: Any, series: Sequence[Mapping[int, float]], style: dict[str, Any]) -> bool:
    """One mean line (and its band); whether a band was drawn."""
    epochs, mean, std = mean_by_epoch(series)
    ax.plot(epochs, mean, markevery=max(1, math.ceil(len(epochs) / MAX_MARKERS)), **style)
    finite = np.isfinite(std)
    if finite.any():
        ax.fill_between(epochs, mean - np.where(finite, std, 0), mean + np.where(finite, std, 0),
                        color=style["color"], alpha=0.15, linewidth=0)
    return bool(finite.any())


def plot_curves(curves: Sequence[Curve], path: str | Path, metric: str) -> Path:
    """Write :func:`curves_figure` to ``path`` (.png, .svg or .pdf) atomically."""
    plot_format(path)
    return _save(curves_figure(curves, metric), path)


def _save(fig: Any, path: str | Path) -> Path:
    """As :func:`reports.plots.plot_drops` saves: the file type from the name, no creation date."""
    path = Path(path)
    fmt = plot_format(path)
    with paper_style(), atomic_path(path) as tmp:  # pdf.fonttype and savefig.dpi are read when saving
        fig.savefig(tmp, format=fmt, metadata=METADATA[fmt])
    return path
