"""The ``ray`` executor (robustrec/studies/ray_executor.py) on a local Ray with 2 workers.

One local Ray serves the whole module (starting one takes about 3 s, and each of its two workers
imports torch and robustrec on its first task). The jobs below are top-level functions of this
module, so Ray's workers import them by name (``tests.studies.test_ray``: a local Ray puts the
driver's working folder, the repository, on its workers' path), as they import robustrec's jobs.
Without Ray installed these tests skip with the reason, except those that need no Ray: nothing else
imports it, asking for it without it is a one-line error, and bad arguments are refused first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robustrec.errors import ConfigError
from robustrec.numerics import threads_default
from robustrec.runs import METRICS_FILE, WEIGHTS_FILE, RunSpec, TrainConfig

REPO = Path(__file__).resolve().parents[2]
RAY_MODULE = REPO / "robustrec" / "studies" / "ray_executor.py"


# ---- jobs run in Ray's workers ----------------------------------------------------------------------
def double(x: int) -> int:
    return 2 * x


def sleep_then(item: tuple[float, int]) -> int:
    """Sleep ``item[0]`` seconds, return ``item[1]``."""
    time.sleep(item[0])
    return item[1]


def after(item: tuple[str, int, int | None]) -> int:
    """Return ``item[1]``, but only once the task of index ``item[2]`` (if any) has finished: a
    finishing order that does not depend on how fast the workers start."""
    folder, index, wait_for = Path(item[0]), item[1], item[2]
    deadline = time.monotonic() + 60
    while wait_for is not None and not (folder / f"finished-{wait_for}").exists():
        assert time.monotonic() < deadline, f"task {wait_for} never finished"
        time.sleep(0.01)
    (folder / f"finished-{index}").write_text("")
    return index


def mark_or_fail(item: tuple[str, int, float, str | None]) -> int:
    """Leave a marker file (the task ran), sleep, then fail with ``item[3]`` if given."""
    folder, index, seconds, error = item
    (Path(folder) / f"started-{index}").write_text("")
    time.sleep(seconds)
    if error == "config":
        raise ConfigError(f"item {index} is bad input")
    if error == "value":
        raise ValueError(f"item {index} hit a bug")
    return index


def torch_digest(seed: int) -> tuple[int, str]:
    """Torch's thread count in the task and the bytes of a seeded matrix product at one thread."""
    with threads_default(1):
        gen = torch.Generator().manual_seed(seed)
        a, b = torch.randn(300, 200, generator=gen), torch.randn(200, 100, generator=gen)
        return torch.get_num_threads(), (a @ b).tanh().sum(0).numpy().tobytes().hex()


def train_tiny(item: tuple[str, str, int]) -> tuple[dict, str]:
    """Train VBPR with Mirror Gradient on the tiny dataset at ``item[0]`` into ``item[1]`` (seed
    ``item[2]``, one thread); the numbers of its metrics.json and the digest of its weights."""
    from robustrec.data.mmrec import load_dataset
    from robustrec.training import train

    data, out, seed = item
    spec = RunSpec("vbpr", "mirror", train=TrainConfig(epochs=3, batch_size=64, seed=seed, threads=1))
    train(load_dataset(data), spec, out, progress=False)
    return numbers(Path(out) / METRICS_FILE), weights_digest(Path(out) / WEIGHTS_FILE)


def weights_digest(weights_file: Path) -> str:
    """A digest of the tensors (not of the file: safetensors writes its metadata in any order)."""
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(weights_file).items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    return digest.hexdigest()


def numbers(metrics_file: Path) -> dict:
    """metrics.json without its timings (``*_seconds_*``), which differ from run to run."""
    return {key: value for key, value in json.loads(metrics_file.read_text()).items() if "seconds" not in key}


# ---- fixtures ---------------------------------------------------------------------------------------
def needs_ray() -> None:
    """Skip the calling test, with the reason, where Ray is not installed."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def executor():
    needs_ray()
    from robustrec.studies.ray_executor import RayExecutor

    with RayExecutor(workers=2) as ex:
        yield ex


# ---- without Ray ------------------------------------------------------------------------------------
IMPORT_RAY = re.compile(r"^\s*(import ray\b|from ray(\.\w+)* import\b)", re.MULTILINE)


def test_nothing_else_imports_ray():
    """Ray is optional: only ray_executor.py may import it (tests ask for it with importorskip)."""
    offenders = []
    for folder in ("robustrec", "perturbations", "captioning", "reports", "benchmarks", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path != RAY_MODULE and IMPORT_RAY.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    assert IMPORT_RAY.search(RAY_MODULE.read_text(encoding="utf-8"))  # the pattern does find an import


def test_missing_ray_is_one_line_config_error(monkeypatch):
    from robustrec.studies import ray_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"needs Ray.*pip install") as info:
        ray_executor.RayExecutor(workers=2)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"workers": True}, {"workers": 2, "gpus_per_task": float("nan")},
                                    {"workers": 2, "gpus_per_task": -1}, {"workers": 2, "threads": 0}])
def test_bad_arguments_refused_before_ray_starts(kwargs, monkeypatch):
    from robustrec.studies import ray_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # reaching the import would be a different error
    with pytest.raises(ConfigError) as info:
        ray_executor.RayExecutor(**kwargs)
    assert "needs Ray" not in str(info.value)


# ---- on a local Ray ---------------------------------------------------------------------------------
def test_results_in_item_order_and_on_done_per_item(executor, tmp_path):
    # item 0 waits for item 1 to finish (both run at once on the 2 workers); items 2-4 follow
    items = [(str(tmp_path), 0, 1), (str(tmp_path), 1, None)] + [(str(tmp_path), i, None) for i in (2, 3, 4)]
    done = []
    assert executor.run(after, items, on_done=lambda item, result: done.append((item, result))) == [0, 1, 2, 3, 4]
    assert sorted(done) == sorted((item, item[1]) for item in items)  # once each, with its own result
    assert done[0][1] == 1  # reported as they finish, not in item order
    assert executor.run(double, []) == []


def test_config_error_keeps_type_and_message_after_running_tasks_finish(executor, tmp_path):
    # item 0 fails at once while item 1 runs; items 2-4 must not start after the failure
    items = [(str(tmp_path), 0, 0.0, "config"), (str(tmp_path), 1, 1.0, None)]
    items += [(str(tmp_path), i, 0.0, None) for i in (2, 3, 4)]
    done = []
    with pytest.raises(ConfigError) as info:
        executor.run(mark_or_fail, items, on_done=lambda item, result: done.append(result))
    assert type(info.value) is ConfigError and str(info.value) == "item 0 is bad input"
    assert done == [1]  # the running task finished and was reported before the error was raised
    assert sorted(p.name for p in tmp_path.iterdir()) == ["started-0", "started-1"]


def test_other_errors_keep_their_type_with_the_worker_traceback(executor, tmp_path):
    with pytest.raises(ValueError, match="item 0 hit a bug") as info:
        executor.run(mark_or_fail, [(str(tmp_path), 0, 0.0, "value")])
    assert "mark_or_fail" in str(info.value)  # where in the worker it failed
    assert executor.run(double, [1, 2]) == [2, 4]  # the executor still works afterwards


def test_on_done_failure_propagates(executor):
    def explode(item, result):
        raise RuntimeError("progress display broke")

    with pytest.raises(RuntimeError, match="progress display broke"):
        executor.run(sleep_then, [(0.0, 1), (0.5, 2)], on_done=explode)
    assert executor.run(double, [3]) == [6]


def test_task_needing_more_than_a_node_has_is_refused(executor):
    from robustrec.studies.ray_executor import RayExecutor

    with pytest.raises(ConfigError, match="no Ray node can run a task that needs 1 CPUs and 1 GPUs"):
        RayExecutor(workers=1, gpus_per_task=1)  # the local Ray has no GPU: Ray would wait forever
    assert executor.run(double, [1]) == [2]  # the refused executor did not shut the shared Ray down


def test_torch_in_a_task_matches_this_process(executor):
    remote = executor.run(torch_digest, [7, 7, 8])
    local = [torch_digest(seed) for seed in (7, 7, 8)]
    assert remote == local
    assert remote[0][0] == 1 and remote[0][1] != remote[2][1]  # one thread; the seed matters


@pytest.mark.slow  # the study test below checks the same through run_study
def test_training_in_ray_gives_identical_metrics(executor, study_data, tmp_path):
    """The same run trained in a Ray worker and in this process: the same metrics to the last bit,
    and the same weights."""
    items = [(str(study_data), str(tmp_path / f"ray-{seed}"), seed) for seed in (1, 2)]
    remote = executor.run(train_tiny, items)
    local = [train_tiny((str(study_data), str(tmp_path / f"local-{seed}"), seed)) for seed in (1, 2)]
    assert remote == local
    assert remote[0][0]["epochs_run"] == 3 and remote[0][0]["test"]
    assert remote[0][1] != remote[1][1]  # the two seeds did train differently


# ---- a whole study: the CI check that both executors give the same records ---------------------------
def test_study_records_identical_under_ray_and_local(executor, write_spec, stub_report, tmp_path):
    """The tiny study (2 grid points x 2 seeds, one noise audit) run in this process and on Ray: the
    same run folders with the same metrics and weights, the same selection and the same audit
    records, number for number (timings, timestamps and absolute paths aside)."""
    from robustrec.studies.runner import run_study

    spec = write_spec()
    local = run_study(spec, tmp_path / "local", progress=False)
    remote = run_study(spec, tmp_path / "ray", executor=executor, progress=False)

    runs = sorted(p.parent.relative_to(local) for p in local.glob("runs/*/*/" + METRICS_FILE))
    assert len(runs) == 4
    assert runs == sorted(p.parent.relative_to(remote) for p in remote.glob("runs/*/*/" + METRICS_FILE))
    for run in runs:
        assert numbers(remote / run / METRICS_FILE) == numbers(local / run / METRICS_FILE)
        assert weights_digest(remote / run / WEIGHTS_FILE) == weights_digest(local / run / WEIGHTS_FILE)
    selection = json.loads((local / "selection.json").read_text())
    assert json.loads((remote / "selection.json").read_text()) == selection

    records = sorted(p.relative_to(local) for p in local.glob("audits/*/*.jsonl"))
    assert len(records) == len(selection["groups"]) == 2
    assert records == sorted(p.relative_to(remote) for p in remote.glob("audits/*/*.jsonl"))
    for name in records:
        ours, theirs = audit_numbers(local / name), audit_numbers(remote / name)
        assert len(ours) == 1 + 2 * 2  # clean + 2 severities x 2 repeats
        assert theirs == ours
        assert len({json.dumps(r["metrics"], sort_keys=True) for r in ours}) > 1  # the noise changed something
    for npz in sorted(local.glob("audits/*/*.npz")):
        with np.load(npz) as ours, np.load(remote / npz.relative_to(local)) as theirs:
            assert sorted(ours.files) == sorted(theirs.files)
            assert all(np.array_equal(ours[key], theirs[key]) for key in ours.files)


def audit_numbers(records_file: Path) -> list[dict]:
    """Each record's identity and metrics (not its run folder's absolute path, timings or time)."""
    keep = ("model", "strategy", "run_seed", "config_hash", "suite", "severity", "repeat", "seed", "split", "metrics")
    return [{key: record[key] for key in keep}
            for record in map(json.loads, records_file.read_text().splitlines())]


@pytest.mark.parametrize("address, match", [("127.0.0.1:1", "no Ray cluster answers there"),
                                            ("ray://127.0.0.1:1", "no Ray cluster answers there"),
                                            ("head-node", "expected HOST:PORT")])
def test_unreachable_cluster_is_refused_at_once(address, match):
    needs_ray()
    from robustrec.studies.ray_executor import RayExecutor

    start = time.monotonic()
    with pytest.raises(ConfigError, match=match) as info:
        RayExecutor(workers=2, address=address)
    assert "\n" not in str(info.value) and address in str(info.value)
    assert time.monotonic() - start < 10  # Ray alone retries such an address for minutes


@pytest.mark.slow  # about a minute: a Ray head starts and stops
def test_joins_a_running_cluster_and_leaves_it_running(tmp_path):
    """``address`` joins a cluster started with ``ray start --head``; closing the executor leaves
    the cluster running (a second driver joins it again). Each driver is its own process: this one
    may hold the module's local Ray."""
    needs_ray()
    ray_cli = Path(sys.executable).with_name("ray")
    with socket.socket() as probe:  # a free port for the head
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Token authentication, set alike on the head and the drivers, as Ray asks of every node.
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen([str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2", "--block",
                             "--include-dashboard=false", "--disable-usage-stats"], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = ("from robustrec.numerics import check_threads\n"
              "from robustrec.studies.ray_executor import RayExecutor\n"
              f"with RayExecutor(2, address='127.0.0.1:{port}') as ex:\n"
              "    print(ex.run(check_threads, [1, 2, 3]))\n")
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([str(ray_cli), "status", f"--address=127.0.0.1:{port}"], env=env,
                             capture_output=True).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(1)
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True,
                                  timeout=120, cwd=tmp_path)
            assert done.returncode == 0, done.stderr[-2000:]
            assert done.stdout.strip() == "[1, 2, 3]"  # the second time: the first did not stop the cluster
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and the processes it started
        head.wait(timeout=120)
