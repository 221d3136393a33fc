"""Executors: results in the order of the items, progress as each finishes, the first failure raised
with its type; a local pool gives the same study as one process."""

from __future__ import annotations

import json
import time

import pytest

from robustrec.errors import ConfigError, DataError
from robustrec.studies import LocalExecutor, SequentialExecutor, build_executor, load_spec, run_study


def square_after(item: tuple[int, float]) -> int:
    """Top level, so that a spawned worker can unpickle it; sleeps so that jobs finish out of order."""
    value, delay = item
    time.sleep(delay)
    return value * value


def fail_on_three(item: tuple[int, float]) -> int:
    value, delay = item
    time.sleep(delay)
    if value == 3:
        raise DataError(f"item {value} is bad")
    return value


ITEMS = [(1, 0.3), (2, 0.0), (3, 0.1), (4, 0.0)]


@pytest.mark.parametrize("executor", [SequentialExecutor(), LocalExecutor(2)], ids=["sequential", "local-2"])
def test_results_in_item_order_and_progress_as_each_finishes(executor):
    seen = []
    results = executor.run(square_after, ITEMS, lambda item, result: seen.append((item[0], result)))
    getattr(executor, "close", lambda: None)()
    assert results == [1, 4, 9, 16]
    assert sorted(seen) == [(1, 1), (2, 4), (3, 9), (4, 16)]


@pytest.mark.parametrize("executor", [SequentialExecutor(), LocalExecutor(2)], ids=["sequential", "local-2"])
def test_the_first_failure_keeps_its_type_and_message(executor):
    done = []
    with pytest.raises(DataError, match="^item 3 is bad$"):
        executor.run(fail_on_three, ITEMS, lambda item, result: done.append(item[0]))
    assert 3 not in done
    assert executor.run(square_after, [(5, 0.0)]) == [25]  # still usable after a failure
    getattr(executor, "close", lambda: None)()


def test_build_executor():
    assert isinstance(build_executor("local", 1), SequentialExecutor)
    pool = build_executor("local", 3)
    assert isinstance(pool, LocalExecutor) and pool.workers == 3
    with pytest.raises(ConfigError, match="unknown executor 'spark'; known: local, ray"):
        build_executor("spark", 1)
    with pytest.raises(ConfigError, match="--workers must be an integer >= 1"):
        build_executor("local", 0)
    with pytest.raises(ConfigError, match="--ray-address is for --executor ray"):
        build_executor("local", 2, "localhost:6379")


def run_metrics(out) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("runs/*/*/metrics.json")}


def record_metrics(out) -> dict[str, list]:
    from robustrec.records import read_records

    return {p.name: [(r.severity, r.repeat, r.metrics) for r in read_records(p)] for p in out.glob("audits/*/*.jsonl")}


# several seconds (each spawned worker imports torch): kept in the default suite, as the local pool is
# the default executor for --workers > 1
def test_a_local_pool_gives_the_same_study_as_one_process(write_spec, tmp_path, stub_report):
    spec = load_spec(write_spec())
    one = run_study(spec, tmp_path / "one", progress=False)
    with LocalExecutor(2) as pool:  # one pool for both phases
        two = run_study(spec, tmp_path / "two", executor=pool, progress=False)
    metrics = run_metrics(one)
    assert len(metrics) == 4 and metrics.keys() == run_metrics(two).keys()
    for name, values in metrics.items():
        other = run_metrics(two)[name]
        assert (values["valid"], values["test"], values["best_epoch"]) == (other["valid"], other["test"], other["best_epoch"])
    assert record_metrics(one) == record_metrics(two) and len(record_metrics(one)) == 2
    assert (one / "selection.json").read_text().replace(str(one), "") == (two / "selection.json").read_text().replace(str(two), "")


def sleep_long(item: int) -> int:
    time.sleep(30)
    return item


def test_an_interrupt_stops_the_workers_at_once():
    """Ctrl-C in the driver (here: the progress callback raising it) must not wait for the running
    jobs: they resume or redo their work on the next run."""
    pool = LocalExecutor(2)

    def interrupt(item, result):
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pool.run(square_after, [(1, 0.0)] + [(n, 30.0) for n in range(2, 4)], interrupt)
    assert time.monotonic() - start < 15 and pool._pool is None


def test_ray_reserves_a_gpu_per_task_for_a_study_trained_on_cuda(write_spec, tmp_path, monkeypatch, capsys):
    """No Ray needed: the CLI's request is captured where the Ray executor would be built."""
    import sys
    import types

    from robustrec.cli import main

    asked = {}

    class FakeRay:
        def __init__(self, **options):
            asked.update(options)
            raise ConfigError("stop here")  # nothing trains

    monkeypatch.setitem(sys.modules, "robustrec.studies.ray_executor", types.SimpleNamespace(RayExecutor=FakeRay))
    spec = write_spec().read_text().replace("[train]", '[train]\ndevice = "cuda"')
    (tmp_path / "cuda.toml").write_text(spec)
    assert main(["study", "run", str(tmp_path / "cuda.toml"), "--out", str(tmp_path / "s"), "--executor", "ray"]) == 2
    assert asked["gpus_per_task"] == 1 and asked["threads"] == 1
