"""Run a study: validate, train every run, select on validation, audit the selected runs, report.

:func:`run_study` drives four phases, each finished before the next starts:

1. every training of the plan (:func:`robustrec.studies.plan.train_job`), through the executor;
2. selection on validation, in the driver (:mod:`robustrec.studies.selection`), written to
   ``DIR/selection.json``;
3. the audits of the selected runs (:func:`robustrec.studies.plan.audit_job`), through the executor;
4. the report (:func:`robustrec.studies.report.write_study_report`), from the files in ``DIR`` alone.

The issue describes audits as tasks that depend on their runs. Phases give the same records: an
audit needs the selection, and the selection needs every grid point of its group, so an audit
could start at best when its group's trainings end. Phases keep the executors simple (no task
graph) at the cost of some idle workers near the end of the training phase.

Everything is content-addressed (:mod:`robustrec.studies.plan`), so a rerun after an interruption,
kill -9 included, redoes only what is missing: finished runs and audits are reused, an interrupted
training resumes from its last finished epoch, and an audit's records appear whole or not at all.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Any

from robustrec import __version__
from robustrec.errors import ConfigError, RobustRecError
from robustrec.io import check_output_folder, read_json, write_json
from robustrec.progress import progress as progress_report
from robustrec.runs import METRICS_FILE
from robustrec.studies.executors import Executor, SequentialExecutor
from robustrec.studies.plan import AUDITS_DIR, audit_job, audit_tasks, plan_groups, train_job, train_tasks
from robustrec.studies.selection import chosen, select, write_selection
from robustrec.studies.spec import StudySpec, load_spec

STUDY_FILE = "study.json"


def run_study(spec: StudySpec | str | Path, out: str | Path, executor: Executor | None = None,
              progress: bool = True) -> Path:
    """Run (or finish, or extend) the study ``spec`` in the folder ``out``; return the folder.

    ``spec`` is a :class:`StudySpec`, a spec file or a recipe name. ``executor`` defaults to running
    every job in this process (:func:`robustrec.studies.executors.build_executor` makes the others).
    ``out`` may hold this study already (from an interrupted or older run of the same spec name on
    the same dataset): what matches is reused, what is new is added. A folder holding another study
    or anything else is refused before any work.
    """
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    out = check_output_folder(out)
    executor = executor or SequentialExecutor()
    data_path, dataset = open_study_dataset(spec, progress)
    identity = dataset_identity(data_path, dataset)
    check_audits(spec, dataset)
    check_study_folder(out, spec, identity)
    remove_stale_temporaries(out)
    write_json(out / STUDY_FILE, {"spec": spec.to_json(), "source": str(spec.source) if spec.source else None,
                                  "dataset": identity, "robustrec_version": __version__})

    groups = plan_groups(spec, out, dataset.fingerprint)
    trainings = train_tasks(groups)
    audited_groups = sum(1 for a in spec.audits for g in groups if a.audits(g.entry.model))
    job_options = {"data_path": data_path, "threads": spec.threads, "progress": job_bars(executor, progress)}
    with StudyProgress(len(trainings) + audited_groups, progress) as bar:
        todo = [task for task in trainings if not (task.folder / METRICS_FILE).is_file()]
        bar.skip(len(trainings) - len(todo))
        executor.run(functools.partial(train_job, **job_options), todo, bar.done)

        document = select(groups, spec.select)
        write_selection(out, document)

        audits = audit_tasks(spec, out, chosen(groups, document))
        bar.resize(len(trainings) + len(audits))  # two groups that chose the same run share its audit
        todo = [task for task in audits if not task.records_file.is_file()]
        bar.skip(len(audits) - len(todo))
        executor.run(functools.partial(audit_job, **job_options), todo, bar.done)

    from robustrec.studies.report import write_study_report

    write_study_report(out)
    return out


def job_bars(executor: Executor, progress: bool) -> bool:
    """Whether each job shows its own bar under the study's line: only in this process (one job at a
    time) and on a terminal. In a log, or with parallel workers, the study's line alone is shown."""
    return progress and isinstance(executor, SequentialExecutor) and sys.stderr.isatty()


def open_study_dataset(spec: StudySpec, progress: bool = True):
    """The dataset's folder (the embedded default resolved to its folder, built on first use) and
    the dataset, loaded once here to check it and take its fingerprint."""
    from robustrec.data import load_dataset

    if spec.data is None:
        from robustrec.data import synthetic

        folder = synthetic.default_dataset_dir(progress=progress)
    else:
        folder = Path(spec.data)
    return str(folder), load_dataset(folder)


def check_audits(spec: StudySpec, dataset) -> None:
    """Refuse, before anything trains, an audit whose suite cannot apply to a model it covers (e.g.
    embedding noise on a model without embeddings): each audited model is built once on the dataset
    and checked by every severity's perturbation. Suites that need more than their options (a
    caption source: :meth:`Perturbation.prepare`) are checked when their audit starts."""
    from perturbations.base import Perturbation
    from robustrec.models import build_model

    models: dict[str, Any] = {}  # built once per model and parameters
    for a, audit in enumerate(spec.audits, 1):
        config = audit.config(spec.device)
        perturbations = [config.perturbation(s) for s in config.severities]
        if any(type(p).prepare is not Perturbation.prepare for p in perturbations):
            continue
        for r, entry in enumerate(spec.runs, 1):
            if not audit.audits(entry.model):
                continue
            run = entry.run_spec(entry.points()[0], spec.train_config(spec.seeds[0], entry))
            key = repr((run.model, sorted(run.model_params.items())))
            if key not in models:
                models[key] = build_model(run.model, dataset, **run.model_params)
            model = models[key]
            try:
                for perturbation in perturbations:
                    perturbation.check(model, dataset)
            except RobustRecError as exc:
                raise type(exc)(f"audits[{a}] of runs[{r}]: {exc}") from None


def dataset_identity(data_path: str, dataset) -> dict[str, Any]:
    return {"name": dataset.name, "path": data_path, "fingerprint": dataset.fingerprint,
            "n_users": dataset.n_users, "n_items": dataset.n_items}


def check_study_folder(out: Path, spec: StudySpec, identity: dict[str, Any]) -> None:
    """Refuse an ``out`` that holds another study (another name or dataset) or is not a study folder.
    A rerun, or a changed spec of the same name on the same data, reuses the folder."""
    path = out / STUDY_FILE
    if not path.is_file():
        if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(f".{STUDY_FILE}.")):
            raise ConfigError(f"--out {out} is a non-empty folder that is not a study; choose another")
        return
    saved = read_json(path, "study file")
    try:
        name, fingerprint = saved["spec"]["name"], saved["dataset"]["fingerprint"]
    except (KeyError, TypeError):
        raise ConfigError(f"{path}: not a study file; choose another --out") from None
    if name != spec.name:
        raise ConfigError(f"--out {out} holds study {str(name)[:60]!r}, not {spec.name!r}; choose another --out")
    if fingerprint != identity["fingerprint"]:
        raise ConfigError(f"--out {out} holds study {spec.name!r} on another dataset ({saved['dataset'].get('path')}, "
                          f"fingerprint {str(fingerprint)[:24]}); choose another --out")


def remove_stale_temporaries(out: Path) -> None:
    """Remove what atomic writes killed midway left in the study folder and its audit folders
    (``.NAME.<random>.tmp``; a run folder's own are removed when its training resumes)."""
    for folder in (out, *sorted((out / AUDITS_DIR).glob("*"))):
        if folder.is_dir():
            for path in folder.glob(".*.tmp"):
                if path.is_file():
                    path.unlink(missing_ok=True)


class StudyProgress:
    """The study's one overall line: tasks done of total, elapsed time and an estimate of the rest.

    The estimate is the mean time of the tasks this call has run, times the tasks left (finished
    tasks found on disk count as done but not in the mean). Trainings and audits are counted alike,
    so the estimate is rough while the phases differ in cost. Each job's own bar is shown under it
    only in one process on a terminal (:func:`job_bars`).
    """

    def __init__(self, total: int, enabled: bool) -> None:
        self.report = progress_report(total, desc="study", unit="tasks", enabled=enabled)
        self.start = time.monotonic()
        self.ran = 0

    def skip(self, n: int) -> None:
        """Count ``n`` tasks found finished."""
        if n:
            self.report.update(n)

    def done(self, item: Any = None, result: Any = None) -> None:
        """Count one task this call ran (an executor's ``on_done``)."""
        self.ran += 1
        elapsed = time.monotonic() - self.start
        left = (self.report.total or 0) - self.report.n - 1
        self.report.set_postfix(left=f"~{elapsed / self.ran * max(left, 0):.0f} s")
        self.report.update()

    def resize(self, total: int) -> None:
        self.report.total = total
        bar = getattr(self.report, "bar", None)
        if bar is not None:
            bar.total = total
            bar.refresh()

    def __enter__(self) -> StudyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.report.close()
