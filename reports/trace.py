"""The mirror trace over training: what each epoch's Mirror Gradient steps did.

A run trained with ``robustrec train --mirror-trace`` (``TrainConfig(mirror_trace=True)``) has, in
each epoch's line of ``RUN/log.jsonl``, a ``"mirror"`` entry: the number of mirror steps and the means
over them of the loss before the step (L0), after the descent half (L1) and after the ascent half (L2),
their changes, the share of steps whose ascent raised the loss, the cosines between each half's
displacement and its gradient (-1 and +1 for the paper's SGD steps) and the displacements' norms
(:mod:`robustrec.strategies.mirror`)::

    from reports import load_trace, plot_trace, trace_table

    rows = load_trace("runs/vbpr-mg")                      # one dict per traced epoch
    plot_trace(["runs/vbpr-mg", "runs/vbpr-amr-mg"], "trace.pdf")
    print(trace_table(["runs/vbpr-mg"]))

Like the other reports this reads files only (never torch or a model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustrec.errors import DataError
from robustrec.io import atomic_path, read_jsonl
from robustrec.runs import LOG_FILE, open_run

from .drops import row_label
from .plots import MARKERS, METADATA, PALETTE, PANEL_SIZE, _fit_texts, paper_style, plot_format

#: The means an epoch's "mirror" entry holds besides "steps" (robustrec.strategies.mirror.TRACE_KEYS,
#: repeated here so that reading a trace does not import torch; a test keeps the two equal).
TRACE_FIELDS = ("loss_before", "loss_after_descent", "loss_after_ascent", "descent_change", "ascent_change",
                "ascended", "cos_descent", "cos_ascent", "norm_descent", "norm_ascent")
#: The panels of :func:`plot_trace`: (title, y label, y limits, (descent field, ascent field)).
PANELS = (
    ("Loss change: L1 - L0, L2 - L1", "mean loss change", None, ("descent_change", "ascent_change")),
    ("Move vs gradient: cos(d1, g0), cos(d2, g1)", "mean cosine", (-1.05, 1.05), ("cos_descent", "cos_ascent")),
)
#: The colour of each half-step, in the order of a panel's fields.
HALVES = (("descent half", PALETTE[0]), ("ascent half", PALETTE[1]))
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Trace:
    """One run's trace: a label for legends and tables, and its rows (see :func:`load_trace`)."""

    label: str
    rows: tuple[dict[str, Any], ...]


def load_trace(run: str | Path) -> list[dict[str, Any]]:
    """``[{"epoch": e, "steps": n, field: mean or None, ...}]`` for each epoch of ``run`` (a run folder,
    or its ``log.jsonl``) that traced a mirror step, in epoch order.

    DataError when the log is missing or malformed (NaN and infinity included), or holds no trace.
    """
    path = Path(run)
    log = path / LOG_FILE if path.is_dir() else path
    rows = []
    for n, entry in enumerate(read_jsonl(log, "training log"), start=1):
        if not isinstance(entry, dict) or not _count(entry.get("epoch"), 1):
            raise DataError(f"{log}:{n}: not a training log line (no epoch number)")
        if "mirror" in entry:
            rows.append({"epoch": entry["epoch"], **_mirror_entry(entry["mirror"], f"{log}:{n}")})
    if not rows:
        raise DataError(f"{log} holds no mirror trace: train a mirror strategy with --mirror-trace")
    epochs = [row["epoch"] for row in rows]
    if epochs != sorted(set(epochs)):
        raise DataError(f"{log}: the traced epochs are not in increasing order: {epochs[:10]}")
    return rows


def read_trace(run: str | Path) -> Trace:
    """The trace of the run folder ``run``, labelled from its run.json (``"VBPR + AMR + MG"``)."""
    found = open_run(run)
    label = row_label(found.spec.model, found.spec.strategy, str(found.info.get("strategy_label") or ""))
    return Trace(label, tuple(load_trace(found.path)))


def plot_trace(runs: Sequence[str | Path | Trace], path: str | Path, *, title: str | None = None) -> Path:
    """Draw the traces of ``runs`` (run folders or :class:`Trace` objects) over the epochs and write the
    figure to ``path`` (.png, .svg or .pdf, checked first) atomically.

    Left panel: the mean loss change of the descent half (L1 - L0) and of the ascent half (L2 - L1);
    right panel: the mean cosines of each half's move with its gradient. The colour is the quantity,
    the line style and marker the run. ``title``: ``None`` for none.
    """
    path = Path(path)
    fmt = plot_format(path)
    fig = trace_figure(runs, title=title)
    with paper_style(), atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, metadata=METADATA[fmt])
    return path


def trace_figure(runs: Sequence[str | Path | Trace], *, title: str | None = None) -> Any:
    """The laid-out matplotlib Figure of :func:`plot_trace` (standalone, not registered with pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    traces = _traces(runs)
    with paper_style():
        fig = Figure(figsize=(PANEL_SIZE[0] * len(PANELS), PANEL_SIZE[1]), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(PANELS), squeeze=False)[0]
        entries: dict[str, Any] = {}
        for ax, (panel_title, ylabel, ylim, fields) in zip(axes, PANELS):
            for field, (name, colour) in zip(fields, HALVES):
                entries.setdefault(name, Line2D([], [], color=colour))
                for n, trace in enumerate(traces):
                    points = [(row["epoch"], row[field]) for row in trace.rows if row[field] is not None]
                    ax.plot([e for e, _ in points], [v for _, v in points], color=colour,
                            linestyle=LINESTYLES[n % len(LINESTYLES)], marker=MARKERS[n % len(MARKERS)])
            ax.axhline(0, color="0.3", linewidth=0.6, zorder=1)
            ax.set(title=panel_title, xlabel="epoch", ylabel=ylabel, ylim=ylim)
        for n, trace in enumerate(traces):
            entries[trace.label] = Line2D([], [], color="0.3", linestyle=LINESTYLES[n % len(LINESTYLES)],
                                          marker=MARKERS[n % len(MARKERS)])
        shown = fig.suptitle(title) if title else None
        _fit_texts(fig, shown, entries)
    return fig


def trace_table(runs: Sequence[str | Path | Trace]) -> str:
    """A markdown table, one row per run: traced epochs and steps, and each field's mean over all its
    mirror steps (each epoch's mean weighted by its step count)."""
    traces = _traces(runs)
    columns = ["run", "epochs", "steps", "L1 - L0", "L2 - L1", "ascended", "cos descent", "cos ascent",
               "norm descent", "norm ascent"]
    fields = ("descent_change", "ascent_change", "ascended", "cos_descent", "cos_ascent", "norm_descent",
              "norm_ascent")
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for trace in traces:
        steps = sum(row["steps"] for row in trace.rows)
        cells = [trace.label.replace("|", "\\|"), str(len(trace.rows)), str(steps)]
        for field in fields:
            mean = _weighted_mean(trace.rows, field)
            form = ".0%" if field == "ascended" else ".4g" if field.startswith("norm") else "+.4g"
            cells.append("n/a" if mean is None else format(mean, form))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- helpers -------------------------------------------------------------------------------------
def _traces(runs: Sequence[str | Path | Trace]) -> list[Trace]:
    """Traces from run folders (read) or Trace objects (as given); a label that two runs share gets
    the run's folder name (or its position) added."""
    if isinstance(runs, (str, Path, Trace)) or not runs:
        raise DataError("give a list of one or more run folders (or traces)")
    traces = [run if isinstance(run, Trace) else read_trace(run) for run in runs]
    labels = [trace.label for trace in traces]
    return [Trace(f"{trace.label} ({f'#{n}' if isinstance(run, Trace) else Path(run).name})", trace.rows)
            if labels.count(trace.label) > 1 else trace
            for n, (run, trace) in enumerate(zip(runs, traces), start=1)]


def _mirror_entry(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict) or not _count(entry.get("steps"), 1):
        raise DataError(f"{where}: the mirror entry has no step count")
    out: dict[str, Any] = {"steps": entry["steps"]}
    for field in TRACE_FIELDS:
        value = entry.get(field, "missing")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise DataError(f"{where}: mirror {field} is {str(value)[:40]}, not a finite number or null")
        out[field] = None if value is None else float(value)
    return out


def _count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _weighted_mean(rows: Sequence[dict[str, Any]], field: str) -> float | None:
    pairs = [(row["steps"], row[field]) for row in rows if row[field] is not None]
    total = sum(steps for steps, _ in pairs)
    return sum(steps * value for steps, value in pairs) / total if total else None
