"""Studies: what the executors buy and cost (issue 12, "Performance").

Two parts:

1. ``throughput``: the training phase of a study of 12 short trainings (VBPR and FREEDOM, plain and
   Mirror Gradient, 3 seeds; ``--epochs`` epochs each, no early stop) run sequentially and with a
   local pool of ``--workers`` processes, in A B A order (sequential, pool, sequential), each trial
   in a fresh process with a fresh study folder, as ``robustrec study run`` would run it. The
   throughput ratio is the mean sequential time over the pool's.
2. ``ray-cost``: what Ray adds. Trivial tasks (return the argument) through the local pool and
   through a local Ray, each after a warm-up run: the wall time per task. Then the same 12 trainings
   through the local pool and through Ray, in A B A order (pool, Ray, pool), two passes each as
   above: Ray's time less the pool's, per training task, pass by pass. ``ray.init`` is timed on
   its own.

Every trial checks that its trainings give the same test metrics as the first trial's (the executors
must not change a number).

    python benchmarks/studies.py throughput --data /work/data/ml100k-mmrec [--epochs 5] [--workers 2]
    python benchmarks/studies.py ray-cost --data /work/data/ml100k-mmrec [--epochs 5] [--tasks 100]

Without --data the MMRec split of ml100k-mm is built once under $ROBUSTREC_CACHE (needs ../shared).
The study folders are temporary (outside the repository) and removed at the end.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, mmrec_split  # noqa: E402

#: The 12 trainings: 2 models x 2 strategies x 3 seeds, a fixed number of epochs each.
SPEC = """
[study]
name = "bench-12"
data = "{data}"
seeds = [1, 2, 3]

[train]
epochs = {epochs}
patience = 1000

[[runs]]
model = "vbpr"
strategy = "plain"

[[runs]]
model = "vbpr"
strategy = "mirror"

[[runs]]
model = "freedom"
strategy = "plain"

[[runs]]
model = "freedom"
strategy = "mirror"
"""


def identity(x):
    """A trivial task: what is left of a task's time is the executor's cost."""
    return x


# ---- one trial (run in a fresh process) -------------------------------------------------------------
def make_executor(name: str, workers: int):
    from robustrec.studies.executors import LocalExecutor, SequentialExecutor

    if name == "sequential":
        return SequentialExecutor()
    if name == "local":
        return LocalExecutor(workers)
    from robustrec.studies.ray_executor import RayExecutor

    return RayExecutor(workers)


def train_phase(spec_file: Path, out: Path, executor) -> tuple[float, list[dict]]:
    """The training phase of :func:`robustrec.studies.run_study` (plan, then every training through
    the executor) into the fresh folder ``out``: its wall time and the trainings' results."""
    from robustrec.studies.plan import plan_groups, train_job, train_tasks
    from robustrec.studies.runner import open_study_dataset
    from robustrec.studies.spec import load_spec

    spec = load_spec(spec_file)
    data_path, dataset = open_study_dataset(spec, progress=False)
    tasks = train_tasks(plan_groups(spec, out, dataset.fingerprint))
    start = time.perf_counter()
    results = executor.run(functools.partial(train_job, data_path=data_path, threads=spec.threads), tasks)
    seconds = time.perf_counter() - start
    if not all(r["trained"] for r in results):
        raise SystemExit(f"{out} was not empty: a trial must train everything")
    return seconds, results


def trial(args: argparse.Namespace) -> None:
    """One trial in this (fresh) process; prints one JSON line of timings and the test metrics."""
    report: dict = {"executor": args.executor, "workers": args.workers, "load": os.getloadavg()[0]}
    start = time.perf_counter()
    executor = make_executor(args.executor, args.workers)
    report["start_seconds"] = time.perf_counter() - start
    try:
        if args.tasks:
            executor.run(identity, list(range(2 * args.workers)))  # warm-up: workers started
            start = time.perf_counter()
            assert executor.run(identity, list(range(args.tasks))) == list(range(args.tasks))
            report["trivial_seconds"] = time.perf_counter() - start
        else:
            passes = []
            for n in range(args.passes):
                seconds, results = train_phase(args.spec, args.out / f"pass{n}", executor)
                passes.append(seconds)
            report["train_seconds"] = passes
            report["test"] = [r["test"] for r in results]
    finally:
        close = getattr(executor, "close", None)
        if close is not None:
            close()
    print(json.dumps(report))


def run_trial(executor: str, workers: int, spec: Path | None, out: Path | None, passes: int = 1,
              tasks: int = 0) -> dict:
    """One trial in a child process (cold imports, a cold dataset cache, as a user's run)."""
    command = [sys.executable, __file__, "_trial", "--executor", executor, "--workers", str(workers),
               "--passes", str(passes), "--tasks", str(tasks)]
    if spec is not None:
        command += ["--spec", str(spec), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["process_seconds"] = time.perf_counter() - start
    return report


# ---- the two parts ----------------------------------------------------------------------------------
def write_spec(folder: Path, data: Path, epochs: int) -> Path:
    path = folder / "bench.toml"
    path.write_text(SPEC.format(data=data, epochs=epochs))
    return path


def check_same_metrics(reports: list[dict]) -> None:
    """Every trial's trainings gave the same test metrics (the executor changes no number)."""
    first = reports[0]["test"]
    same = all(r["test"] == first for r in reports)
    print(f"identical test metrics in every trial: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit("the executors gave different metrics")


def aba_trials(args: argparse.Namespace, a: str, b: str) -> list[dict]:
    """Executors ``a``, ``b``, ``a`` (each a fresh process, two passes) on the 12 trainings; their
    reports, after checking that all three gave the same metrics."""
    with tempfile.TemporaryDirectory(prefix="robustrec-bench-") as tmp:
        spec = write_spec(Path(tmp), args.data, args.epochs)
        reports = []
        for n, name in enumerate([a, b, a]):
            reports.append(run_trial(name, args.workers, spec, Path(tmp) / f"trial{n}", passes=2))
            print_trial(reports[-1])
    check_same_metrics(reports)
    return reports


def throughput(args: argparse.Namespace) -> None:
    reports = aba_trials(args, "sequential", "local")
    for n, what in enumerate(PASSES):
        sequential = statistics.mean(r["train_seconds"][n] for r in reports[0::2])
        print(f"{what}: {args.workers} workers against sequential: {sequential / reports[1]['train_seconds'][n]:.2f}x "
              f"throughput ({12 / reports[1]['train_seconds'][n] * 60:.1f} against {12 / sequential * 60:.1f} "
              "trainings a minute)")


#: What each of a trial's two passes measures (the second runs on the workers the first started).
PASSES = ("first pass (workers start)", "second pass (warm workers)")


def print_trial(report: dict) -> None:
    workers = 1 if report["executor"] == "sequential" else report["workers"]
    seconds = " / ".join(f"{s:.1f}" for s in report["train_seconds"])
    print(f"{report['executor']:>10} ({workers} workers): start {report['start_seconds']:.2f} s, training phase "
          f"{seconds} s (first / second pass), process {report['process_seconds']:.1f} s; load before "
          f"{report.get('load', float('nan')):.1f}", flush=True)


def ray_cost(args: argparse.Namespace) -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise SystemExit('Ray is not installed: pip install -e ".[ray]"')
    for name in ("local", "ray"):
        report = run_trial(name, args.workers, None, None, tasks=args.tasks)
        per_task = report["trivial_seconds"] / args.tasks
        print(f"{name:>10}: {args.tasks} trivial tasks, {args.workers} workers: {report['trivial_seconds']:.3f} s "
              f"({per_task * 1000:.1f} ms a task; executor start {report['start_seconds']:.2f} s)", flush=True)
    reports = aba_trials(args, "local", "ray")
    for n, what in enumerate(PASSES):
        pool = statistics.mean(r["train_seconds"][n] for r in reports[0::2])
        added = (reports[1]["train_seconds"][n] - pool) / 12
        print(f"{what}: Ray {reports[1]['train_seconds'][n]:.1f} s, local pool {pool:.1f} s: "
              f"{added:+.2f} s per training task")
    print(f"plus starting a local Ray (ray.init) once: {reports[1]['start_seconds']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    for name in ("throughput", "ray-cost"):
        part = sub.add_parser(name)
        part.add_argument("--data", type=Path, help="MMRec-format folder (default: the ml100k-mm split)")
        part.add_argument("--epochs", type=int, default=5)
        part.add_argument("--workers", type=int, default=2)
        part.add_argument("--tasks", type=int, default=100, help="trivial tasks (ray-cost)")
    hidden = sub.add_parser("_trial")  # one trial, in a child process
    hidden.add_argument("--executor", required=True)
    hidden.add_argument("--workers", type=int, required=True)
    hidden.add_argument("--passes", type=int, default=1)
    hidden.add_argument("--tasks", type=int, default=0)
    hidden.add_argument("--spec", type=Path)
    hidden.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.part == "_trial":
        trial(args)
        return
    args.data = (args.data or mmrec_split())
    if args.data is None:
        raise SystemExit("ml100k-mm is not available (no ../shared): pass --data DIR")
    args.data = args.data.resolve()
    print(machine(), flush=True)
    {"throughput": throughput, "ray-cost": ray_cost}[args.part](args)


if __name__ == "__main__":
    main()
