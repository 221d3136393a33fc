"""Plots of relative drops, styled for a paper (matplotlib's Agg renderer: no display needed).

One panel per suite, one figure per call:

- a suite audited at several severities gets drop-vs-severity curves, one line per (model, strategy),
  with a band of ± one standard deviation (error bars instead when more than four lines would pile
  their bands up);
- a suite audited at one severity gets bars of the drop with error bars of ± one standard deviation:
  grouped by model with one bar per strategy, or, for one model, one bar per strategy.

The spread is over seeds, or over repeats where a run has a single seed; the legend says which and
how many, so a reader never has to guess what the shading means.

How lines are told apart, in colour and in grey print alike: the colour belongs to the strategy (fixed
for the known ones, so "MG" has the same colour in every figure of a paper, from a colour-blind-safe
palette), the marker to the model (to the strategy when the figure shows one model), and the line
style to the strategy's family (solid plain, dashed MG, dotted X+MG, dash-dotted other strategies).
Every line so has its own (colour, marker) pair.

The severity axis is logarithmic when the severities span two decades or more (sigma^2 from 1e-6 to
1e-2, a caption probability from 0.01 to 1), linear otherwise. Titles are wrapped to the figure's
width, and the legend gets as many columns as fit, so a long dataset name is never cut off.

The style (fonts of 7 to 9 pt at a column's width of 3.4 in, no top and right spines, 300 dpi, TrueType
fonts in PDF) is applied through ``matplotlib.rc_context``: nothing leaks into the caller's settings.
The file type follows the extension: ``.png``, ``.svg`` or ``.pdf``; PDF and SVG carry no creation
date, so the same records give the same bytes.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustrec.errors import ConfigError
from robustrec.io import atomic_path
from robustrec.metrics import DEFAULT_METRIC, parse_metric

from .drops import (
    BASELINE_STRATEGY,
    AuditResults,
    Cell,
    GroupKey,
    SuiteKey,
    format_severity,
    relative_drop,
    sample_std,
    strategy_display,
    strategy_order,
)

PLOT_FORMATS = ("png", "svg", "pdf")

#: Okabe and Ito's colour-blind-safe palette, with grey for its black (black error bars must show on
#: every bar) and yellow last (it is hard to see on white).
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#8c8c8c", "#f0e442")
#: Fixed colours of the known strategies, so that a strategy looks the same in every figure.
STRATEGY_COLORS = {
    "plain": "#0072b2", "mirror": "#d55e00", "amr": "#009e73", "amr+mirror": "#cc79a7",
    "sam": "#e69f00", "ssam-f": "#56b4e9", "ssam-d": "#8c8c8c",
}
#: One marker per model, in order of appearance.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")

#: The x-axis label of each severity, with its symbol in mathtext.
SEVERITY_LABELS = {
    "sigma2": r"noise variance $\sigma^2$",
    "scale": r"relative noise $s$",  # sigma = s x the std of the table or feature column
    "prob": r"caption probability $p$",
}
SUITE_TITLES = {
    "noise": "Embedding noise",
    "caption": "Caption insertion",
    "image-noise": "Image-feature noise",
    "text-noise": "Text-feature noise",
}
#: How papers write the metrics: Recall@20, NDCG@20, HR@20 ...
METRIC_NAMES = {"recall": "Recall", "precision": "Precision", "map": "MAP", "ndcg": "NDCG", "hit": "HR"}

#: The figure style: sized for a paper column (3.4 in per panel) and printed at 100%.
PAPER_STYLE: dict[str, Any] = {
    "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "figure.titlesize": 9,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7,
    "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.6,
    "axes.grid": True, "axes.grid.axis": "y", "grid.linewidth": 0.4, "grid.alpha": 0.5,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.minor.width": 0.4,
    "lines.linewidth": 1.2, "lines.markersize": 4,
    "legend.frameon": False, "legend.handlelength": 2.6,
    "savefig.dpi": 300, "pdf.fonttype": 42, "ps.fonttype": 42,
    "svg.hashsalt": "robustrec",  # fixed ids in SVG: the same figure gives the same bytes
}
PANEL_SIZE = (3.4, 2.5)  # inches per suite, to start with
Y_LABELS_WIDTH = 0.6  # inches: y label and tick labels, left of each plotting area
MAX_BANDS = 4  # more lines than this in one panel get error bars instead of shaded bands
DODGE = 0.012  # sideways shift between neighbouring lines with error bars, as a fraction of the x range
MIN_PLOT_HEIGHT = 1.9  # inches of plotting area; the figure grows to keep it under a long legend
#: Creation dates make every render differ; leave them out so that figures change only with the numbers.
METADATA: dict[str, dict[str, Any]] = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


# -- public entry points ------------------------------------------------------------------------
def plot_format(path: str | Path) -> str:
    """``"png"``, ``"svg"`` or ``"pdf"`` from the file name; ConfigError for anything else."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        raise ConfigError(f"plot file {path} must end in .png, .svg or .pdf")
    return fmt


def plot_drops(results: AuditResults, path: str | Path, metric: str = DEFAULT_METRIC, *,
               title: str | None = None) -> Path:
    """Draw the drops of ``metric`` for every suite and write them to ``path`` atomically.

    The file name is checked before anything is drawn. ``title`` replaces the default title (the
    dataset and metric); ``""`` leaves it out, as a figure with a caption in a paper wants.
    """
    path = Path(path)
    fmt = plot_format(path)
    fig = drops_figure(results, metric, title=title)
    with paper_style(), atomic_path(path) as tmp:  # pdf.fonttype and savefig.dpi are read when saving
        fig.savefig(tmp, format=fmt, metadata=METADATA[fmt])
    return path


def drops_figure(results: AuditResults, metric: str = DEFAULT_METRIC, *, title: str | None = None) -> Any:
    """The laid-out matplotlib Figure of :func:`plot_drops` (for inspection or further editing).

    It is a standalone Figure with an Agg canvas, not registered with pyplot: nothing to close.
    """
    metric = results.require_metric(metric)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    suites = results.suites
    with paper_style():
        fig = Figure(figsize=(PANEL_SIZE[0] * len(suites), PANEL_SIZE[1]), layout="constrained")
        FigureCanvasAgg(fig)
        look = Look.of(results)
        axes = fig.subplots(1, len(suites), squeeze=False)[0]
        drawn: list[Drawn] = []
        for ax, suite in zip(axes, suites):
            draw = _bars if len(results.severities(suite)) == 1 else _curves
            drawn.append(draw(ax, results, suite, metric, look))
            ax.set_ylabel(f"Relative drop of {metric_label(metric)} (%)")
            ax.axhline(0, color="0.3", linewidth=0.6, zorder=1)
        title = f"{results.dataset}: relative drop of {metric_label(metric)}" if title is None else title
        shown = fig.suptitle(title) if title else None  # an empty title would still take its space
        entries = _legend_entries(axes, drawn)
        _fit_texts(fig, shown, entries)
    return fig


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Apply :data:`PAPER_STYLE` for the duration of the block only."""
    import matplotlib

    with matplotlib.rc_context(PAPER_STYLE):
        yield


# -- labels and scales --------------------------------------------------------------------------
def log_axis(severities: Sequence[float]) -> bool:
    """A logarithmic severity axis when the (positive) severities span two decades or more."""
    values = [float(s) for s in severities]
    if len(values) < 2 or min(values) <= 0:
        return False
    return math.log10(max(values) / min(values)) >= 2 - 1e-9


def metric_label(metric: str) -> str:
    """``"recall@20" -> "Recall@20"``, ``"ndcg@10" -> "NDCG@10"``, ``"hit@5" -> "HR@5"``."""
    name, k = parse_metric(metric)
    return f"{METRIC_NAMES.get(name, name)}@{k}"


def severity_label(suite: SuiteKey) -> str:
    """The x-axis label: ``noise variance $\\sigma^2$``, ``relative noise $s$``, ..."""
    return SEVERITY_LABELS.get(_severity_kind(suite), suite.severity_name or "severity")


def severity_text(suite: SuiteKey, value: float) -> str:
    """One setting, for a panel of bars: ``noise variance $\\sigma^2$ = $10^{-6}$``."""
    exponent = round(math.log10(value)) if value > 0 else 0
    power_of_ten = abs(exponent) >= 3 and math.isclose(value, 10.0**exponent, rel_tol=1e-12)
    return f"{severity_label(suite)} = " + (f"$10^{{{exponent}}}$" if power_of_ten else format_severity(value))


def suite_title(suite: SuiteKey) -> str:
    return SUITE_TITLES.get(suite.suite, suite.suite)


def linestyle(strategy: str) -> str:
    """Solid for plain, dashed for mirror, dotted for X+mirror, dash-dotted for other strategies."""
    if strategy == BASELINE_STRATEGY:
        return "-"
    if strategy == "mirror":
        return "--"
    return ":" if "mirror" in strategy else "-."


def _severity_kind(suite: SuiteKey) -> str:
    """Relative embedding noise may be recorded without a severity name: it is the scale ``s``."""
    if suite.noise_scale == "relative" and suite.severity_name in ("scale", ""):
        return "scale"
    return suite.severity_name


@dataclass(frozen=True)
class Look:
    """Colour per strategy; marker per model, or per strategy when the figure shows one model (so
    that grey print still tells the strategies apart). See the module docstring."""

    colors: dict[str, str]
    models: tuple[str, ...]
    strategies: tuple[str, ...]

    @property
    def one_model(self) -> bool:
        return len(self.models) == 1

    @property
    def model_suffix(self) -> str:
        """`` (VBPR)`` for panel titles when the figure shows one model (its lines then name only
        the strategy), else ``""``."""
        return f" ({self.models[0].upper()})" if self.one_model else ""

    def marker(self, model: str, strategy: str) -> str:
        index = self.strategies.index(strategy) if self.one_model else self.models.index(model)
        return MARKERS[index % len(MARKERS)]

    def label(self, results: AuditResults, model: str, strategy: str) -> str:
        """``"VBPR + MG"``, or just ``"MG"`` when the figure shows one model."""
        if self.one_model:
            return strategy_display(strategy, results.labels.get(strategy, ""))
        return results.label(model, strategy)

    @classmethod
    def of(cls, results: AuditResults) -> Look:
        from matplotlib import colormaps
        from matplotlib.colors import to_hex

        strategies = sorted({s for _, s in results.rows()}, key=strategy_order)
        known = {s: STRATEGY_COLORS[s] for s in strategies if s in STRATEGY_COLORS}
        tab20 = [to_hex(c) for c in colormaps["tab20"].colors]
        free = iter(c for c in (*PALETTE, *tab20) if c not in known.values())
        colors = {s: known.get(s) or next(free, "#808080") for s in strategies}
        models = tuple(dict.fromkeys(m for m, _ in results.rows()))
        return cls(colors, models, tuple(strategies))


# -- spread: over seeds, or over repeats with one seed -------------------------------------------
@dataclass(frozen=True)
class Spread:
    """One standard deviation of a drop, and what it was taken over (``"seeds"`` or ``"repeats"``)."""

    std: float
    over: str
    n: int


def spread(cell: Cell) -> Spread:
    """The std over seeds of the per-seed drops; with one seed, the std over repeats of the drops of
    the single repeats (as the tables' ± does); NaN when there is only one value."""
    if cell.n_seeds >= 2:
        return Spread(cell.drop_std, "seeds", cell.n_seeds)
    seed = cell.seeds[0]
    drops = [relative_drop(seed.clean, p) for p in seed.perturbed]
    return Spread(sample_std(drops), "repeats", seed.n_repeats)


def spread_label(spreads: Sequence[Spread]) -> str:
    """The legend entry of the band: ``± 1 std over 5 seeds``, ``± 1 std over 10 repeats (1 seed)``,
    ``± 1 std over seeds (repeats where one seed)``; ``""`` when nothing has a spread."""
    shown = [s for s in spreads if not math.isnan(s.std)]
    kinds = {s.over for s in shown}
    if not kinds:
        return ""
    if len(kinds) == 2:
        return "± 1 std over seeds (repeats where one seed)"
    (over,) = kinds
    counts = sorted({s.n for s in shown})
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"± 1 std over {n} seeds" if over == "seeds" else f"± 1 std over {n} repeats (1 seed)"


def _pct(x: float) -> float:
    return 100 * x


# -- panels -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Drawn:
    """What a panel drew: the spreads it showed, and how (``"band"`` or ``"errorbar"``)."""

    spreads: list[Spread]
    style: str


def _curves(ax: Any, results: AuditResults, suite: SuiteKey, metric: str, look: Look) -> Drawn:
    """Drop-vs-severity lines, one per (model, strategy), with their spread.

    Up to :data:`MAX_BANDS` lines get a ± 1 std band; with more, bands pile up into a grey mass, so
    each line gets error bars instead, its points moved sideways a little (about 1% of the x range
    per line, in log space on a log axis) so that the bars stay apart.
    """
    lines = [(model, strategy, cells) for model, strategy in results.rows()
             if (cells := [results.cell(k, metric) for k in results.keys
                           if k.suite_key == suite and (k.model, k.strategy) == (model, strategy)])]
    severities = results.severities(suite)
    logx = log_axis(severities)
    bands = len(lines) <= MAX_BANDS
    spreads: list[Spread] = []
    for i, (model, strategy, cells) in enumerate(lines):
        cell_spreads = [spread(c) for c in cells]
        spreads += cell_spreads
        x = np.array([c.key.severity for c in cells])
        y = np.array([_pct(c.drop_mean) for c in cells])
        s = np.nan_to_num(np.array([_pct(sp.std) for sp in cell_spreads]))
        style = {"color": look.colors[strategy], "marker": look.marker(model, strategy), "linestyle": linestyle(strategy),
                 "label": look.label(results, model, strategy), "zorder": 3}
        if bands:
            ax.plot(x, y, **style)
            if s.any():
                ax.fill_between(x, y - s, y + s, color=style["color"], alpha=0.15, linewidth=0, zorder=2)
        else:
            shift = DODGE * (i - (len(lines) - 1) / 2)
            lo, hi = severities[0], severities[-1]
            xs = x * (hi / lo) ** shift if logx else x + shift * (hi - lo)
            ax.errorbar(xs, y, yerr=s, elinewidth=0.8, capsize=2, capthick=0.8, **style)
    if logx:
        ax.set_xscale("log")
        ax.margins(x=0.05)
    ax.set_xlabel(severity_label(suite))
    ax.set_title(suite_title(suite) + look.model_suffix)
    return Drawn(spreads, "band" if bands else "errorbar")


def _bars(ax: Any, results: AuditResults, suite: SuiteKey, metric: str, look: Look) -> Drawn:
    """Bars of the drop at the suite's one severity, with error bars of ± 1 std: grouped by model
    (one bar per strategy, named in the legend), or, for a single model, one bar per strategy named
    on the x axis."""
    severity = results.severities(suite)[0]
    present = [(k.model, k.strategy) for k in results.keys if k.suite_key == suite]
    models = list(dict.fromkeys(m for m, _ in present))
    strategies = sorted({s for _, s in present}, key=strategy_order)
    one_model = len(models) == 1
    width = 0.7 if one_model else 0.8 / max(len(strategies), 2)
    spreads: list[Spread] = []
    for j, strategy in enumerate(strategies):
        xs, means, stds = [], [], []
        for i, model in enumerate(models):
            key = GroupKey(model, strategy, suite.suite, suite.severity_name, suite.noise_scale, severity)
            if key in results.audits:
                cell = results.cell(key, metric)
                sp = spread(cell)
                spreads.append(sp)
                xs.append(j if one_model else i + width * (j - (len(strategies) - 1) / 2))
                means.append(_pct(cell.drop_mean))
                stds.append(0.0 if math.isnan(sp.std) else _pct(sp.std))
        if xs:
            label = strategy_display(strategy, results.labels.get(strategy, ""))
            ax.bar(xs, means, width, yerr=stds, label=f"_{label}" if one_model else label,
                   color=look.colors[strategy], edgecolor="black", linewidth=0.4,
                   error_kw={"elinewidth": 0.8, "capsize": 2, "capthick": 0.8}, zorder=3)
    if one_model:  # the strategies name themselves on the x axis; the model goes into the title
        names = [strategy_display(s, results.labels.get(s, "")) for s in strategies]
        ax.set_xticks(range(len(strategies)), names, rotation=30 if len(strategies) > 4 else 0,
                      ha="right" if len(strategies) > 4 else "center", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(strategies) - 0.4)
    else:
        ax.set_xticks(range(len(models)), [m.upper() for m in models])
        ax.set_xlim(-0.6, len(models) - 0.4)
    ax.tick_params(axis="x", length=0)
    ax.grid(False, axis="x")
    ax.set_xlabel(severity_text(suite, severity))  # the one setting, where curves show the severity axis
    ax.set_title(suite_title(suite) + (f" ({models[0].upper()})" if one_model else ""))
    return Drawn(spreads, "errorbar")


# -- legend and fitting -------------------------------------------------------------------------
def _legend_entries(axes: Sequence[Any], drawn: Sequence[Drawn]) -> dict[str, Any]:
    """Every line or bar once (by label), then a sample of the band or error bar saying what it shows."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    explained = spread_label([sp for d in drawn for sp in d.spreads])
    if explained:
        samples = {"band": Patch(facecolor="0.5", alpha=0.3, linewidth=0),
                   "errorbar": Line2D([], [], color="black", marker="|", markersize=8, linestyle="none")}
        used = tuple(sample for style, sample in samples.items() if any(d.style == style for d in drawn))
        entries[explained] = used[0] if len(used) == 1 else used  # a tuple shows both samples
    return entries


def _fit_texts(fig: Any, title: Any | None, entries: dict[str, Any]) -> None:
    """Wrap the titles to the width they have; put the legend below the panels in as many columns
    (up to 3) as fit; then make the figure taller if the panels got too short for their labels.

    Constrained layout makes room for text above and below the panels, but never narrows a text that
    is wider than the figure (a long dataset name would be cut at both edges), so this measures and
    wraps. Text sizes do not depend on the layout, so one layout pass (the slow part) is enough.
    """
    renderer = fig.canvas.get_renderer()
    if title is not None:
        _wrap(title, fig.bbox.width * 0.96, renderer)
    panel_width = fig.bbox.width / len(fig.axes)
    for ax in fig.axes:  # the axes are narrower than their panel by the y label and tick labels
        _wrap(ax.title, panel_width - Y_LABELS_WIDTH * fig.dpi, renderer)
    for ncols in range(min(len(entries), 3), 0, -1):
        legend = fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=ncols)
        if ncols == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width * 0.98:
            break
        legend.remove()
    fig.draw_without_rendering()  # the layout: how much height the panels got
    short = MIN_PLOT_HEIGHT - min(ax.bbox.height for ax in fig.axes) / fig.dpi
    if short > 0:  # the next draw (or savefig) lays the taller figure out again
        width, height = fig.get_size_inches()
        fig.set_size_inches(width, height + short)


def _wrap(text: Any, width: float, renderer: Any) -> None:
    """Break ``text`` at spaces or hyphens into as few lines as fit in ``width`` pixels."""
    original = text.get_text()
    for chars in range(len(original), 7, -1):
        text.set_text(textwrap.fill(original, chars, break_long_words=False))
        if text.get_window_extent(renderer).width <= width:
            return
