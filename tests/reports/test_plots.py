"""Plots of relative drops: nothing clipped, every line told apart, the shading explained, paper style.

The figures are inspected as matplotlib objects (``drops_figure``) and as written files (``plot_drops``).
"""

from __future__ import annotations

import inspect
import math

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer
from matplotlib.lines import Line2D

import reports.plots as plots
from reports.drops import SuiteKey, load_results
from reports.plots import (
    Spread,
    drops_figure,
    log_axis,
    metric_label,
    plot_drops,
    plot_format,
    severity_label,
    severity_text,
    spread_label,
)
from robustrec.errors import ConfigError
from robustrec.metrics import DEFAULT_METRIC

#: The embedded synthetic dataset's name: the one that was clipped in the title.
LONG_NAME = "synthetic-v1-minilm-efficientnet-lite0-39c8707e"


def texts(fig) -> list[str]:
    """Every piece of text the figure shows: titles, axis labels, legend entries."""
    out = [fig.get_suptitle()]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        out += [t.get_text() for t in legend.get_texts()]
    return [t for t in out if t]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def data_lines(ax) -> dict:
    """The plotted curves by label (a curve with error bars is a container: its first line)."""
    handles, labels = ax.get_legend_handles_labels()
    return {label: h if isinstance(h, Line2D) else h.lines[0] for h, label in zip(handles, labels)}


def assert_inside_figure(fig) -> None:
    """Everything drawn lies inside the canvas: nothing is clipped at an edge."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.get_size_inches()
    box = fig.get_tightbbox(renderer)  # inches; covers titles, labels, tick labels, legends
    tol = 1 / fig.dpi
    assert box.x0 >= -tol and box.y0 >= -tol, box
    assert box.x1 <= width + tol and box.y1 <= height + tol, (box, width, height)
    extents = [fig._suptitle] if fig._suptitle is not None else []
    extents += [ax.title for ax in fig.axes] + list(fig.legends)
    for artist in extents:
        bbox = artist.get_window_extent(renderer)
        assert fig.bbox.x0 - 1 <= bbox.x0 and bbox.x1 <= fig.bbox.x1 + 1, (artist, bbox, fig.bbox)
        assert fig.bbox.y0 - 1 <= bbox.y0 and bbox.y1 <= fig.bbox.y1 + 1, (artist, bbox, fig.bbox)


@pytest.fixture
def long_named(write_audit, make, audit_dir):
    """The synthetic dataset's long name; three seeds of plain and MG, curves over sigma2."""
    for seed in (1, 2, 3):
        for strategy, keep in (("plain", 0.9), ("mirror", 0.95)):
            write_audit(f"bm3-{strategy}-{seed}", make(
                "bm3", strategy, seed, 0.2 + 0.01 * seed, {s: [0.2 * keep * (1 - 10 * s)] * 2 for s in (1e-6, 1e-4, 1e-2)},
                dataset=LONG_NAME, fingerprint="fp-long"))
    return audit_dir


@pytest.fixture
def bars_dir(write_audit, make, tmp_path):
    """One severity (bars): VBPR with seven strategies, one seed, two repeats each."""
    folder = tmp_path / "bars"
    for i, strategy in enumerate(("plain", "amr", "sam", "ssam-d", "ssam-f", "mirror", "amr+mirror")):
        write_audit(strategy, make("vbpr", strategy, 1, 0.3, {1.0: [0.29 - 0.002 * i, 0.28]}, severity_name="scale",
                                   dataset=LONG_NAME, fingerprint="fp-long", details={"noise_scale": "relative"}),
                    folder=folder)
    return folder


# -- nothing clipped ----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["curves", "bars", "both"])
def test_long_dataset_name_is_never_clipped(long_named, bars_dir, layout):
    paths = {"curves": [long_named], "bars": [bars_dir], "both": [long_named, bars_dir]}[layout]
    fig = drops_figure(load_results(*paths))
    assert_inside_figure(fig)
    # wrapped, not cut: the whole name is still there
    assert LONG_NAME in "".join(fig.get_suptitle().split())


def test_title_can_be_replaced_or_left_out(paper_like):
    results = load_results(paper_like)
    assert drops_figure(results, title="Figure 3").get_suptitle() == "Figure 3"
    fig = drops_figure(results, title="")
    assert fig.get_suptitle() == ""
    assert_inside_figure(fig)


# -- telling lines apart, explaining the shading ------------------------------------------------
def test_every_line_has_its_own_colour_and_marker(paper_like, write_audit, make, audit_dir):
    write_audit("vbpr-mirror-1", make("vbpr", "mirror", 1, 0.4, {1e-6: [0.39], 1e-4: [0.35]}))
    write_audit("vbpr-amr-1", make("vbpr", "amr", 1, 0.4, {1e-6: [0.39], 1e-4: [0.35]}))
    fig = drops_figure(load_results(audit_dir), "recall@20")
    (ax,) = fig.axes
    lines = data_lines(ax)
    assert sorted(lines) == ["FREEDOM", "FREEDOM + MG", "VBPR", "VBPR + AMR", "VBPR + MG"]
    styles = {(to_hex(line.get_color()), line.get_marker()) for line in lines.values()}
    assert len(styles) == len(lines)
    colour = {label: to_hex(line.get_color()) for label, line in lines.items()}
    # a strategy keeps its colour across models, and models differ by marker
    assert colour["FREEDOM"] == colour["VBPR"] and colour["FREEDOM + MG"] == colour["VBPR + MG"]
    assert len(set(colour.values())) == 3
    marker = {label: line.get_marker() for label, line in lines.items()}
    assert marker["FREEDOM"] == marker["FREEDOM + MG"] != marker["VBPR"]


def test_a_strategy_keeps_its_colour_across_figures(paper_like, bars_dir):
    lines = data_lines(drops_figure(load_results(paper_like)).axes[0])
    curves = {label: to_hex(line.get_color()) for label, line in lines.items()}
    (ax,) = drops_figure(load_results(bars_dir)).axes
    bars = {c.get_label().lstrip("_"): to_hex(c.patches[0].get_facecolor()) for c in ax.containers
            if hasattr(c, "patches")}
    assert curves["FREEDOM"] == bars["plain"] and curves["FREEDOM + MG"] == bars["MG"]
    assert len(set(bars.values())) == 7  # every strategy its own colour
    # one model: the strategies are named under their bars, in the same order
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["plain", "AMR", "SAM", "SSAM-D", "SSAM-F", "MG", "AMR+MG"]
    assert [bars[name] for name in ticks] == [to_hex(c.patches[0].get_facecolor()) for c in ax.containers
                                              if hasattr(c, "patches")]


def test_bars_of_several_models_are_grouped_and_named_in_the_legend(write_audit, make, audit_dir):
    for model in ("bm3", "freedom"):
        for strategy in ("plain", "mirror"):
            write_audit(f"{model}-{strategy}", make(model, strategy, 1, 0.2, {1e-6: [0.19, 0.18]}))
    fig = drops_figure(load_results(audit_dir))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["BM3", "FREEDOM"]
    assert legend_texts(fig)[:2] == ["plain", "MG"]
    assert_inside_figure(fig)


def test_legend_says_seeds_for_several_seeds(write_audit, make, tmp_path):
    folder = tmp_path / "three-seeds"
    for seed in (1, 2, 3):
        write_audit(f"f{seed}", make("freedom", "plain", seed, 0.2, {1e-6: [0.19], 1e-2: [0.1 + 0.01 * seed]}), folder=folder)
    labels = legend_texts(drops_figure(load_results(folder)))
    assert any("std over 3 seeds" in text for text in labels), labels
    assert not any("repeat" in text for text in labels), labels


def test_legend_says_repeats_for_one_seed_and_the_band_is_their_std(write_audit, make, audit_dir):
    # one seed, clean 0.4, two repeats at 1e-6: drops 0 and 0.05, sample std 0.05 / sqrt(2) = 3.536%
    write_audit("vbpr", make("vbpr", "plain", 1, 0.4, {1e-6: [0.4, 0.38], 1e-4: [0.3, 0.3]}))
    fig = drops_figure(load_results(audit_dir), "recall@20")
    labels = legend_texts(fig)
    assert any("std over 2 repeats" in text for text in labels), labels
    assert not any("seeds" in text for text in labels), labels
    (ax,) = fig.axes
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    at_low = vertices[np.isclose(vertices[:, 0], 1e-6), 1]
    assert at_low.max() - at_low.min() == pytest.approx(2 * 100 * 0.05 / math.sqrt(2))
    assert (at_low.max() + at_low.min()) / 2 == pytest.approx(2.5)  # centred on the mean drop


def test_many_lines_get_error_bars_kept_apart(write_audit, make, audit_dir):
    """Seven shaded bands pile up into a grey mass: more than four lines get error bars, each line's
    points moved sideways by a small factor (on a log axis) so that the bars do not overlap."""
    strategies = ("plain", "amr", "sam", "ssam-d", "ssam-f", "mirror", "amr+mirror")
    for i, strategy in enumerate(strategies):
        for seed in (1, 2):
            write_audit(f"{strategy}-{seed}", make("vbpr", strategy, seed, 0.3, {1e-6: [0.29], 1e-2: [0.2 - 0.01 * i * seed]}))
    fig = drops_figure(load_results(audit_dir))
    (ax,) = fig.axes
    assert not [c for c in ax.collections if type(c).__name__.endswith("PolyCollection")]
    containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 7
    assert any("std over 2 seeds" in text for text in legend_texts(fig))
    lows = sorted(c.lines[0].get_xdata()[0] for c in containers)
    assert len(set(lows)) == 7 and 1e-6 / 1.5 < lows[0] < lows[-1] < 1e-6 * 1.5
    assert sorted(data_lines(ax)) == sorted(["plain", "AMR", "SAM", "SSAM-D", "SSAM-F", "MG", "AMR+MG"])
    assert ax.get_title() == "Embedding noise (VBPR)"  # one model: named once, in the title
    assert len({line.get_marker() for line in data_lines(ax).values()}) == 7  # markers tell strategies apart


def test_mixed_seed_counts_are_explained(paper_like):
    # FREEDOM has 3 seeds, VBPR one seed with 2 repeats
    labels = legend_texts(drops_figure(load_results(paper_like)))
    assert any("seeds" in text and "repeats" in text for text in labels), labels


def test_bars_have_error_bars_explained_for_one_seed(bars_dir):
    fig = drops_figure(load_results(bars_dir))
    labels = legend_texts(fig)
    assert any("std over 2 repeats" in text for text in labels), labels
    (ax,) = fig.axes
    caps = [c.errorbar for c in ax.containers if getattr(c, "errorbar", None)]
    assert caps, "no error bars drawn"
    segments = [seg for c in caps for seg in c.lines[2][0].get_segments()]
    assert len(segments) == 7 and all(abs(seg[1][1] - seg[0][1]) > 0 for seg in segments)


# -- axes --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("severities", "expected"), [
    ([1e-6, 1e-4, 1e-2], True), ([0.01, 0.1, 0.5, 1.0], True), ([0.01, 1.0], True),
    ([0.1, 0.5, 1.0], False), ([0.011, 1.0], False), ([0.5], False), ([0.0, 1e-4, 1.0], False),
])
def test_log_axis_when_severities_span_two_decades(severities, expected):
    assert log_axis(severities) is expected


def test_axes_follow_the_severities_and_use_math(write_audit, make, audit_dir):
    write_audit("abs", make("bm3", "plain", 1, 0.2, {1e-6: [0.19], 1e-4: [0.18], 1e-2: [0.1]}))
    write_audit("rel", make("bm3", "plain", 1, 0.2, {0.1: [0.19], 0.5: [0.18], 1.0: [0.1]}, severity_name="scale",
                            details={"noise_scale": "relative"}))
    write_audit("cap", make("mmgcn", "plain", 1, 0.2, {0.01: [0.19], 0.1: [0.18], 1.0: [0.17]}, suite="caption",
                            severity_name="prob"))
    fig = drops_figure(load_results(audit_dir), "recall@20")
    by_label = {ax.get_xlabel(): ax for ax in fig.axes}
    assert set(by_label) == {r"noise variance $\sigma^2$", r"relative noise $s$", r"caption probability $p$"}
    assert by_label[r"noise variance $\sigma^2$"].get_xscale() == "log"
    assert by_label[r"relative noise $s$"].get_xscale() == "linear"
    assert by_label[r"caption probability $p$"].get_xscale() == "log"  # 0.01 to 1: two decades
    for ax in fig.axes:
        assert ax.get_ylabel() == "Relative drop of Recall@20 (%)"
    assert not any("sigma2" in text for text in texts(fig))
    assert_inside_figure(fig)


def test_single_severity_is_shown_in_math(write_audit, make, audit_dir):
    write_audit("b", make("bm3", "plain", 1, 0.2, {1e-6: [0.19, 0.18]}))
    (ax,) = drops_figure(load_results(audit_dir)).axes
    assert ax.get_xlabel() == r"noise variance $\sigma^2$ = $10^{-6}$"
    assert ax.get_title() == "Embedding noise (BM3)"


def test_labels_read_like_a_paper():
    assert [metric_label(m) for m in ("recall@20", "ndcg@10", "hit@5", "map@50", "precision@5")] == [
        "Recall@20", "NDCG@10", "HR@5", "MAP@50", "Precision@5"]
    relative = SuiteKey("noise", "scale", "relative")
    assert severity_text(relative, 0.5) == "relative noise $s$ = 0.5"
    assert severity_text(SuiteKey("noise", "sigma2", "absolute"), 0.01) == r"noise variance $\sigma^2$ = 0.01"
    assert severity_text(SuiteKey("noise", "sigma2", "absolute"), 2e-6) == r"noise variance $\sigma^2$ = 2e-06"
    assert severity_text(SuiteKey("caption", "prob", ""), 1e-3) == "caption probability $p$ = $10^{-3}$"
    assert severity_label(SuiteKey("noise", "", "relative")) == "relative noise $s$"
    assert severity_label(SuiteKey("custom", "level", "")) == "level"  # an unknown severity keeps its name


@pytest.mark.parametrize(("spreads", "expected"), [
    ([Spread(0.1, "seeds", 5), Spread(0.2, "seeds", 5)], "± 1 std over 5 seeds"),
    ([Spread(0.1, "seeds", 3), Spread(0.2, "seeds", 5)], "± 1 std over 3–5 seeds"),
    ([Spread(0.1, "repeats", 10)], "± 1 std over 10 repeats (1 seed)"),
    ([Spread(0.1, "repeats", 10), Spread(0.1, "seeds", 3)], "± 1 std over seeds (repeats where one seed)"),
    ([Spread(math.nan, "repeats", 1), Spread(0.1, "seeds", 3)], "± 1 std over 3 seeds"),  # nothing shown
    ([Spread(math.nan, "repeats", 1)], ""),
])
def test_spread_label(spreads, expected):
    assert spread_label(spreads) == expected


def test_unknown_strategies_get_unused_colours(write_audit, make, audit_dir):
    for strategy in ("plain", "mirror", "foo", "bar+mirror"):
        write_audit(strategy, make("bm3", strategy, 1, 0.2, {1e-6: [0.19], 1e-2: [0.1]}))
    colours = [to_hex(line.get_color()) for line in data_lines(drops_figure(load_results(audit_dir)).axes[0]).values()]
    assert len(set(colours)) == 4
    assert plots.STRATEGY_COLORS["plain"] in colours and plots.STRATEGY_COLORS["mirror"] in colours


def test_default_metric_is_the_project_default(paper_like):
    assert inspect.signature(plot_drops).parameters["metric"].default == DEFAULT_METRIC
    assert inspect.signature(drops_figure).parameters["metric"].default == DEFAULT_METRIC
    fig = drops_figure(load_results(paper_like))
    assert "Recall@20" in fig.axes[0].get_ylabel()


# -- files -------------------------------------------------------------------------------------
MAGIC = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}


@pytest.mark.parametrize("suffix", ["png", "svg", "PDF"])
def test_writes_png_svg_and_pdf(paper_like, bars_dir, tmp_path, suffix):
    out = tmp_path / "out"
    curves = plot_drops(load_results(paper_like), out / f"curves.{suffix}", "recall@20")
    bars = plot_drops(load_results(bars_dir), out / f"bars.{suffix}")
    for path in (curves, bars):
        data = path.read_bytes()
        assert data.startswith(MAGIC[suffix.lower()]) and len(data) > 1000
        if suffix == "svg":
            assert b"<svg" in data[:2000]
        if suffix.lower() == "pdf":  # TrueType fonts, as publishers ask, not Type 3 bitmaps
            assert b"/FontFile2" in data and b"/Type3" not in data
    assert sorted(p.name for p in out.iterdir()) == sorted([curves.name, bars.name])  # no temporary files left


def test_same_records_give_the_same_bytes(paper_like, tmp_path):
    """Committed figures only change when the numbers do: no creation date in PDF or SVG."""
    results = load_results(paper_like)
    for suffix in ("pdf", "svg"):
        a, b = plot_drops(results, tmp_path / f"a.{suffix}"), plot_drops(results, tmp_path / f"b.{suffix}")
        assert a.read_bytes() == b.read_bytes(), suffix


@pytest.mark.parametrize("name", ["x.jpg", "x", "x.png.txt", "x.eps"])
def test_unknown_extension_is_refused_before_any_work(paper_like, tmp_path, monkeypatch, name):
    def no_work(*args, **kwargs):
        raise AssertionError("the figure was drawn before the file name was checked")

    monkeypatch.setattr(plots, "drops_figure", no_work)
    with pytest.raises(ConfigError, match=r"must end in \.png, \.svg or \.pdf") as info:
        plot_drops(load_results(paper_like), tmp_path / "sub" / name)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "sub").exists()
    with pytest.raises(ConfigError, match=r"\.png, \.svg or \.pdf"):
        plot_format(name)
    assert [plot_format(f"a.{s}") for s in ("png", "SVG", "pdf")] == ["png", "svg", "pdf"]


def test_style_does_not_leak(paper_like, tmp_path):
    before = dict(matplotlib.rcParams)
    plot_drops(load_results(paper_like), tmp_path / "a.pdf")
    drops_figure(load_results(paper_like))
    after = dict(matplotlib.rcParams)
    assert {k: after[k] for k in after if after[k] != before.get(k)} == {}


def test_paper_style_inside_the_figure(paper_like):
    """Small fonts for a column-wide figure, no box around the plot, fonts embedded as TrueType in PDF."""
    fig = drops_figure(load_results(paper_like))
    (ax,) = fig.axes
    assert ax.xaxis.label.get_fontsize() <= 9
    assert not ax.spines["top"].get_visible() and not ax.spines["right"].get_visible()
    assert fig.get_size_inches()[0] <= 3.5  # one suite fits a paper column (3.3 to 3.5 in)
    fig.canvas.draw()
    for ax in fig.axes:  # and its labels have room
        assert ax.bbox.height / fig.dpi >= 1.6
        assert ax.yaxis.label.get_window_extent().height <= ax.bbox.height
