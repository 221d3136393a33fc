"""The plan of a study: the trainings and audits a spec needs, each in a content-addressed folder.

A study folder ``DIR`` holds::

    DIR/study.json                                     the resolved spec, the dataset and its fingerprint
    DIR/runs/<model>-<strategy>/<hash12>-<fp8>/        one run folder per (run entry, grid point, seed)
    DIR/selection.json                                 every grid point's validation value, and the choice
    DIR/audits/<suite>-<digest>/                       the records of each selected run's audit
    DIR/report.md                                      the report

A run folder's name is its configuration hash (:meth:`robustrec.runs.RunSpec.config_hash`: model,
strategy, every parameter, the training settings, the seed and the thread count) and the first
characters of the dataset fingerprint. So the same configuration on the same data is the same folder:
a rerun, a spec that gained a seed or a grid point, or a second entry that names the same run, finds
what is finished and trains only what is new. An audit is identified by its config digest (its
folder) and the run it audits (the records file's name holds the run folder's name).

The jobs, :func:`train_job` and :func:`audit_job`, are top-level functions of picklable arguments
so that any executor (a process pool, Ray) can run them. Each opens the dataset itself and is
idempotent: a finished run or audit is skipped, an interrupted training resumes from its last
finished epoch (:func:`robustrec.training.train`), and an audit's records file is written
atomically (a file that exists is complete).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustrec.errors import DataError
from robustrec.runs import METRICS_FILE, RunSpec
from robustrec.studies.spec import DEFAULT_CAPTIONER, AuditEntry, RunEntry, StudySpec

if TYPE_CHECKING:
    from perturbations import AuditConfig

RUNS_DIR = "runs"
AUDITS_DIR = "audits"
CAPTION_CACHE_DIR = "caption-cache"


@dataclass(frozen=True)
class TrainTask:
    """One training: ``spec`` into ``folder``. ``group`` is (run entry index, seed): the points of
    one group compete in the grid selection; ``grid`` is this task's grid point."""

    key: str
    spec: RunSpec
    folder: Path
    group: tuple[int, int]
    grid: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditTask:
    """One audit of one run: ``config`` applied to ``run_folder``, records written to ``out_dir``."""

    key: str
    config: AuditConfig
    run_folder: Path
    out_dir: Path
    captioner: str = DEFAULT_CAPTIONER
    captioner_params: dict[str, Any] = field(default_factory=dict)

    @property
    def records_file(self) -> Path:
        """Where :func:`perturbations.audit_run` writes this audit's records."""
        from perturbations.audit import records_path

        return records_path(self.out_dir, self.run_folder, self.config)


@dataclass(frozen=True)
class Group:
    """The grid points of one run entry for one seed; selection picks one of ``tasks``."""

    index: int
    entry: RunEntry
    seed: int
    tasks: tuple[TrainTask, ...]


def run_folder(out: Path, spec: RunSpec, fingerprint: str) -> Path:
    """``out/runs/<model>-<strategy>/<config hash>-<fingerprint[:8]>``."""
    return Path(out) / RUNS_DIR / f"{spec.model}-{spec.strategy}" / f"{spec.config_hash()[:12]}-{fingerprint[:8]}"


def plan_groups(study: StudySpec, out: Path, fingerprint: str) -> list[Group]:
    """One group per (run entry, seed), in spec order, each with its grid points in grid order."""
    groups = []
    for index, entry in enumerate(study.runs):
        for seed in study.seeds:
            train = study.train_config(seed, entry)
            tasks = []
            for point in entry.points():
                spec = entry.run_spec(point, train)
                folder = run_folder(out, spec, fingerprint)
                tasks.append(TrainTask(str(folder.relative_to(out)), spec, folder, (index, seed), point))
            groups.append(Group(index, entry, seed, tuple(tasks)))
    return groups


def train_tasks(groups: list[Group]) -> list[TrainTask]:
    """Every distinct training of the groups (two entries that name the same run train it once)."""
    unique: dict[Path, TrainTask] = {}
    for group in groups:
        for task in group.tasks:
            unique.setdefault(task.folder, task)
    return list(unique.values())


def audit_folder(out: Path, entry: AuditEntry, config: AuditConfig) -> Path:
    """``out/audits/<suite>-<config digest>``; with another captioner than the default, its name and
    a digest of its options are added (the audit config does not hold the captioner, the records do)."""
    name = f"{config.suite}-{config.digest()}"
    if entry.captioner != DEFAULT_CAPTIONER or entry.captioner_params:
        options = json.dumps(dict(entry.captioner_params), sort_keys=True, default=str)
        name += f"-{entry.captioner}-{hashlib.sha256(options.encode()).hexdigest()[:6]}"
    return Path(out) / AUDITS_DIR / name


def audit_tasks(study: StudySpec, out: Path, chosen: list[tuple[Group, TrainTask]]) -> list[AuditTask]:
    """One audit task per (audit entry, chosen run of a model the audit covers), without repeats."""
    tasks: dict[tuple[Path, Path], AuditTask] = {}
    for entry in study.audits:
        config = entry.config(study.device)
        out_dir = audit_folder(out, entry, config)
        for group, task in chosen:
            if entry.audits(group.entry.model):
                audit = AuditTask(f"{out_dir.relative_to(out)}/{task.folder.name}", config, task.folder, out_dir,
                                  entry.captioner, dict(entry.captioner_params))
                tasks.setdefault((out_dir, task.folder), audit)
    return list(tasks.values())


# ---- the jobs (run by an executor, possibly in another process) --------------------------------------
@functools.lru_cache(maxsize=2)
def _dataset(data_path: str):
    """The dataset, loaded once per worker process (jobs never change it: perturbations make views)."""
    from robustrec.data.mmrec import load_dataset

    return load_dataset(data_path)


def train_job(task: TrainTask, data_path: str, threads: int, progress: bool = False) -> dict[str, Any]:
    """Train ``task`` (or find it finished); its results as ``metrics.json`` holds them, plus
    ``key`` and ``trained`` (whether this call trained anything). ``progress``: the run's own
    progress bar (only in the driver's process: the lines of parallel jobs would interleave)."""
    from robustrec.numerics import threads_default
    from robustrec.runs import open_run
    from robustrec.training import train

    with threads_default(threads):
        trained = not (task.folder / METRICS_FILE).is_file()
        if trained:
            dataset = _dataset(data_path)
            check_planned_dataset(task.folder, dataset)
            train(dataset, task.spec, task.folder, progress=progress)
        results = open_run(task.folder).results()
    return {"key": task.key, "trained": trained, "valid": results.valid, "test": results.test,
            "best_epoch": results.best_epoch, "epochs_run": results.epochs_run}


def check_planned_dataset(folder: Path, dataset) -> None:
    """DataError unless ``dataset`` is the one the run folder was planned for (its name ends with the
    first characters of the fingerprint): the dataset may have changed on disk since."""
    if not folder.name.endswith(f"-{dataset.fingerprint[:8]}"):
        raise DataError(f"{dataset.root or dataset.name} is not the dataset this study was planned for "
                        f"(fingerprint {dataset.fingerprint[:8]}, run folder {folder.name}); was it changed?")


def audit_job(task: AuditTask, data_path: str, threads: int, progress: bool = False) -> str:
    """Audit ``task`` (or find its records written); the records file's path. ``progress`` as in
    :func:`train_job`."""
    from perturbations import SuiteContext, audit_run
    from robustrec.numerics import threads_default
    from robustrec.runs import open_run

    path = task.records_file
    if path.is_file():
        return str(path)
    with threads_default(threads):
        dataset = _dataset(data_path)
        run = open_run(task.run_folder)
        cache = task.out_dir.parent.parent / CAPTION_CACHE_DIR
        context = SuiteContext(dataset, _captions_factory(task.captioner, task.captioner_params, cache))
        written = audit_run(run, dataset, task.config, task.out_dir, context, progress=progress)
    return str(written)


def _captions_factory(captioner: str, params: dict[str, Any], cache_dir: Path):
    """For suites that insert captions: the audit's captioner (default the offline ImageNet one),
    cached in the study folder so that the study captions each image once. Built only if a suite
    asks for captions."""

    def factory(dataset):
        from captioning import CaptionCache, build_captioner
        from perturbations.caption import caption_source

        built = build_captioner(captioner, **params)
        return caption_source(built, CaptionCache(cache_dir), dataset, progress=False)

    return factory
