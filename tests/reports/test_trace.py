"""The mirror trace report: strict reading of hand-written logs, the table's means, the figure."""

from __future__ import annotations

import json

import pytest

import reports
from reports.trace import TRACE_FIELDS, Trace, load_trace, plot_trace, read_trace, trace_figure, trace_table
from robustrec.errors import ConfigError, DataError
from robustrec.runs import RunSpec


def mirror(steps=2, descent=-0.5, ascent=0.25, ascended=0.5, cos=(-1.0, 1.0), **extra):
    entry = {"steps": steps, "loss_before": 1.0, "loss_after_descent": 1.0 + descent,
             "loss_after_ascent": 1.0 + descent + ascent, "descent_change": descent, "ascent_change": ascent,
             "ascended": ascended, "cos_descent": cos[0], "cos_ascent": cos[1], "norm_descent": 0.1,
             "norm_ascent": 0.02}
    return {**entry, **extra}


def write_run(folder, entries, model="vbpr", strategy="mirror", label="MG"):
    """A run folder as training leaves it, as far as the trace report reads it (run.json, log.jsonl)."""
    folder.mkdir(parents=True)
    info = {"spec": RunSpec(model, strategy).to_json(), "strategy_label": label,
            "dataset": {"fingerprint": "fp", "name": "tiny", "path": None}}
    (folder / "run.json").write_text(json.dumps(info))
    lines = [json.dumps({"epoch": n, "loss": 0.5, **({"mirror": m} if m else {})}) for n, m in entries]
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_fields_match_what_training_writes():
    from robustrec.strategies.mirror import TRACE_KEYS

    assert TRACE_FIELDS == TRACE_KEYS


def test_load_trace_keeps_the_traced_epochs(tmp_path):
    run = write_run(tmp_path / "run", [(1, mirror()), (2, None), (3, mirror(cos=(None, 0.5)))])
    rows = load_trace(run)
    assert [row["epoch"] for row in rows] == [1, 3]
    assert rows[0] == {"epoch": 1, **mirror()}
    assert rows[1]["cos_descent"] is None and rows[1]["cos_ascent"] == 0.5
    assert load_trace(run / "log.jsonl") == rows


@pytest.mark.parametrize(("line", "match"), [
    ('{"epoch": 1, "mirror": {"steps": 1, "cos_descent": NaN}}', "NaN"),
    ('{"epoch": 1, "mirror": {"steps": 1, "cos_descent": 1e999}}', "out of range"),
    ('{"epoch": 1, "mirror": {"steps": 0}}', "step count"),
    ('{"epoch": 1, "mirror": [1, 2]}', "step count"),
    ('{"loss": 0.5}', "epoch number"),
    ('{"epoch": 1, "loss": 0.5}', "no mirror trace"),
])
def test_bad_logs_are_refused_with_one_line(tmp_path, line, match):
    (tmp_path / "log.jsonl").write_text(line + "\n")
    with pytest.raises(DataError, match=match):
        load_trace(tmp_path)


@pytest.mark.parametrize("value", ["true", "\"high\"", "null"])
def test_a_field_that_is_not_a_number_is_refused(tmp_path, value):
    entry = {"epoch": 1, "mirror": mirror()}
    if value == "null":
        del entry["mirror"]["ascended"]  # a missing field, unlike null, is refused
    text = json.dumps(entry).replace('"ascended": 0.5', f'"ascended": {value}')
    (tmp_path / "log.jsonl").write_text(text + "\n")
    with pytest.raises(DataError, match="mirror ascended"):
        load_trace(tmp_path)


def test_missing_log_and_empty_run_list_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="cannot read training log"):
        load_trace(tmp_path)
    with pytest.raises(DataError, match="one or more"):
        trace_table([])


def test_table_weights_each_epoch_by_its_steps(tmp_path):
    run = write_run(tmp_path / "mg", [(1, mirror(steps=1, descent=-0.4, ascended=1.0)),
                                      (2, mirror(steps=3, descent=-0.8, ascended=0.0, cos=(None, 0.2)))])
    table = trace_table([run]).splitlines()
    assert table[0].startswith("| run | epochs | steps | L1 - L0 | L2 - L1 | ascended | cos descent |")
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    # L1 - L0: (1 * -0.4 + 3 * -0.8) / 4 = -0.7; ascended 1 of 4 steps; cos descent from epoch 1 only
    assert cells[:8] == ["VBPR + MG", "2", "4", "-0.7", "+0.25", "25%", "-1", "+0.4"]


def test_labels_come_from_run_json_and_are_told_apart(tmp_path):
    a = write_run(tmp_path / "seed-1", [(1, mirror())])
    b = write_run(tmp_path / "seed-2", [(1, mirror())])
    c = write_run(tmp_path / "amr", [(1, mirror())], strategy="amr+mirror", label="AMR+MG")
    assert read_trace(c).label == "VBPR + AMR + MG"
    rows = trace_table([a, b, c]).splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["VBPR + MG (seed-1)", "VBPR + MG (seed-2)", "VBPR + AMR + MG"]


def test_figure_has_a_loss_and_a_cosine_panel_with_one_style_per_run(tmp_path):
    run = write_run(tmp_path / "mg", [(1, mirror()), (2, mirror(descent=-0.2)), (3, mirror())])
    other = Trace("hand-made", ({"epoch": 1, **mirror(cos=(-0.5, None))},))
    fig = trace_figure([run, other], title="ml100k")
    losses, cosines = fig.axes
    assert "loss" in losses.get_ylabel() and "cosine" in cosines.get_ylabel()
    assert cosines.get_ylim() == (-1.05, 1.05)
    # per panel: (descent, ascent) x (run, other), then the zero line
    descent, descent_other, ascent, _, zero = losses.get_lines()
    assert list(descent.get_xdata()) == [1, 2, 3] and list(descent.get_ydata()) == [-0.5, -0.2, -0.5]
    assert descent.get_linestyle() == ascent.get_linestyle() != descent_other.get_linestyle()
    assert descent.get_color() == descent_other.get_color() != ascent.get_color()
    assert list(zero.get_ydata()) == [0, 0]
    _, cos_descent_other, _, cos_ascent_other, _ = cosines.get_lines()
    assert list(cos_descent_other.get_ydata()) == [-0.5]
    assert len(cos_ascent_other.get_xdata()) == 0  # a null cosine is left out, not drawn at 0
    legend = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert legend == ["descent half", "ascent half", "VBPR + MG", "hand-made"]
    assert fig.get_suptitle() == "ml100k"


@pytest.mark.parametrize("suffix", ["png", "pdf", "svg"])
def test_plot_trace_writes_each_format(tmp_path, suffix):
    run = write_run(tmp_path / "mg", [(1, mirror()), (2, mirror())])
    out = plot_trace([run], tmp_path / f"trace.{suffix}")
    assert out.is_file() and out.stat().st_size > 1000


def test_bad_plot_file_is_refused_before_reading(tmp_path):
    with pytest.raises(ConfigError, match=r"\.png, \.svg or \.pdf"):
        plot_trace([tmp_path / "not-a-run"], tmp_path / "trace.txt")
    with pytest.raises(DataError, match="not a robustrec run folder"):
        plot_trace([tmp_path / "not-a-run"], tmp_path / "trace.png")
    assert not (tmp_path / "trace.png").exists()


def test_exported_from_reports():
    assert {"load_trace", "plot_trace", "read_trace", "trace_table", "Trace"} <= set(reports.__all__)
