"""Progress reports: a bar only on a terminal, plain periodic lines otherwise, nothing when off."""

import io

import pytest

from robustrec.progress import BarProgress, PlainProgress, Progress, progress, track


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_at_most_one_per_interval_and_the_final_count_once():
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress(60, "train bm3/plain", "epochs", 0, stream, interval=10, clock=clock)
    for _ in range(30):  # 30 updates, one second apart: lines at 10, 20, 30 s
        clock.now += 1
        report.update()
        report.set_postfix(loss="0.5000")
    report.close()
    report.close()  # idempotent
    lines = stream.getvalue().splitlines()
    assert lines == [
        "train bm3/plain: 10/60 epochs (17%), 10 s, loss=0.5000",
        "train bm3/plain: 20/60 epochs (33%), 20 s, loss=0.5000",
        "train bm3/plain: 30/60 epochs (50%), 30 s, loss=0.5000",  # close() adds nothing new: no repeat
    ]
    assert "\r" not in stream.getvalue()


def test_close_reports_a_count_the_last_line_did_not_show():
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress(60, "train", "epochs", 0, stream, interval=10, clock=clock)
    clock.now = 10
    report.update()  # a line at 1/60
    clock.now = 12
    report.update()  # too soon for a line
    report.close()
    assert stream.getvalue().splitlines() == ["train: 1/60 epochs (2%), 10 s", "train: 2/60 epochs (3%), 12 s"]


def test_a_pipe_gets_plain_lines_and_a_terminal_a_bar():
    assert isinstance(progress(10, stream=io.StringIO()), PlainProgress)
    bar = progress(10, stream=Terminal())
    assert isinstance(bar, BarProgress)
    bar.close()


def test_disabled_progress_writes_nothing_but_still_counts():
    stream = io.StringIO()
    report = progress(5, enabled=False, stream=stream)
    assert type(report) is Progress
    with report:
        report.update(3)
    assert report.n == 3 and stream.getvalue() == ""


def test_track_yields_every_item_and_reports_the_count():
    stream = io.StringIO()
    assert list(track(range(7), desc="encode", unit="items", stream=stream, interval=1e9)) == list(range(7))
    assert stream.getvalue().startswith("encode: 7/7 items (100%)")


@pytest.mark.parametrize("value, expected", [("2.5", 2.5), ("0", 0.0), ("nan", 10.0), ("-1", 10.0), ("x", 10.0)])
def test_interval_from_the_environment(monkeypatch, value, expected):
    from robustrec.progress import default_interval

    monkeypatch.setenv("ROBUSTREC_PROGRESS_INTERVAL", value)
    assert default_interval() == expected
