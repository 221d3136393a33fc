"""Robustness audits: evaluate saved runs clean once, then under a suite at each severity R times.

No retraining happens: a noise audit of S severities x R repeats costs about S x R + 1 evaluations.
Repeat r of every severity and every run uses the same perturbation seed, so runs are compared on
identical noise draws (common random numbers) and severities along one noise direction.

An audit is an :class:`AuditConfig`: a suite name and its options (checked against the suite's
constructor, as a run's model parameters are), severities (default: the suite's), repeats and the
perturbation seed. Nothing here switches on suite names: each suite's class says what it needs.

Results are :class:`robustrec.records.Record` lines written to ``out_dir``, one file per audited run
and suite (with per-user metric values beside it for paired tests over users).

Only finished runs are audited by default: a run folder without ``metrics.json`` was killed or is
still training, and its checkpoint is merely the best so far. ``allow_unfinished`` audits it anyway
and the records say so (``provenance["run_finished"]``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbations.base import PERTURBATIONS, CaptionSource, Perturbation, SuiteContext
from robustrec.data.dataset import Dataset
from robustrec.devices import resolve_device
from robustrec.errors import ConfigError
from robustrec.evaluate import Evaluator
from robustrec.hparams import parse_params
from robustrec.io import check_output_folder
from robustrec.models.base import Recommender
from robustrec.progress import progress as report_progress
from robustrec.records import CLEAN_REPEAT, Record, write_records
from robustrec.runs import METRICS_FILE, Run, open_run, provenance

#: The seeds torch.Generator.manual_seed accepts.
SEED_RANGE = (-(2**63), 2**64 - 1)


@dataclass(frozen=True)
class AuditConfig:
    """One audit: a suite and its options, like a run's model and its parameters.

    ``params`` are the suite's options (:meth:`Perturbation.options`), checked against its
    constructor when the config is made, as is every severity. Without ``severities`` the suite's
    default is used. ``perturbation_seed`` seeds the perturbation draws (not the model: the runs
    keep their own training seeds).
    """

    suite: str
    params: dict[str, Any] = field(default_factory=dict)
    severities: tuple[float, ...] = ()
    repeats: int = 10
    perturbation_seed: int = 0
    device: str = "cpu"
    split: str = "test"
    per_user: bool = True

    def __post_init__(self) -> None:
        factory = PERTURBATIONS.get(self.suite)  # an unknown suite lists the known ones
        check_option_names(self.suite, self.params)
        object.__setattr__(self, "params", dict(self.params))
        seed = self.perturbation_seed
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"perturbation seed must be an integer, got {seed!r}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
        if not self.severities:
            object.__setattr__(self, "severities", (factory.default_severity_for(self.params),))
        object.__setattr__(self, "severities", tuple(self.severities))
        if len(set(self.severities)) != len(self.severities):
            raise ConfigError("severities must be distinct")
        for severity in self.severities:  # the suite checks its options and each severity
            self.perturbation(severity)
        low, high = repeat_seed(seed, 0), repeat_seed(seed, self.repeats - 1)
        if not SEED_RANGE[0] <= min(low, high) <= max(low, high) <= SEED_RANGE[1]:
            raise ConfigError(f"perturbation seed {str(seed)[:40]} with {str(self.repeats)[:40]} repeats is "
                              f"out of range: the repeat seeds seed * 1000003 + repeat must lie in "
                              f"[{SEED_RANGE[0]}, {SEED_RANGE[1]}]")

    @property
    def severity_name(self) -> str:
        """What the severities measure under these options (e.g. sigma2, or scale for relative noise)."""
        return PERTURBATIONS.get(self.suite).severity_name_for(self.params)

    def perturbation(self, severity: float) -> Perturbation:
        """The suite at ``severity`` with these options (not yet prepared)."""
        return PERTURBATIONS.get(self.suite)(severity, **self.params)

    def digest(self) -> str:
        data = asdict(self)
        data.pop("device")
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def check_option_names(suite: str, names: Iterable[str]) -> None:
    """ConfigError unless every name is one of ``suite``'s options (the severity is not one)."""
    names = set(names)
    if "severity" in names:
        raise ConfigError("severity is not an option of a suite: give severities with --severity "
                          "(AuditConfig(severities=...) in Python)")
    known = PERTURBATIONS.get(suite).options()
    unknown = sorted(names - set(known))
    if unknown:
        raise ConfigError(f"suite {suite!r} has no parameter {unknown[0]!r}; known: {', '.join(sorted(known)) or 'none'}")


def parse_suite_params(suite: str, pairs: Sequence[str]) -> dict[str, Any]:
    """``["noise_scale=relative", "target=embeddings"]`` -> ``suite``'s options, typed by the
    annotations of its constructor (as ``--suite-param KEY=VALUE`` gives them)."""
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--suite-param expects KEY=VALUE, got {pair[:40]!r}")
    check_option_names(suite, (pair.split("=", 1)[0].strip().replace("-", "_") for pair in pairs))
    return parse_params(PERTURBATIONS.get(suite), pairs, f"suite {suite!r}")


def repeat_seed(seed: int, repeat: int) -> int:
    """The perturbation seed of repeat ``repeat`` (shared by every run and severity)."""
    return seed * 1_000_003 + repeat


def records_path(out_dir: str | Path, run_path: str | Path, config: AuditConfig) -> Path:
    """Where the audit of the run at ``run_path`` under ``config`` writes its records."""
    return Path(out_dir) / f"{run_name(Path(run_path))}-{config.suite}-{config.digest()}.jsonl"


def run_name(path: Path) -> str:
    """A readable, file-system-safe name for a run folder (its last two path components)."""
    parts = path.resolve().parts[-2:]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)).strip("-")


def require_finished(run: Run, allow_unfinished: bool = False) -> None:
    """Refuse a run whose training has not finished (killed mid-training, or still running): its
    checkpoint is only the best so far, and auditing it silently would mislabel the results."""
    if not allow_unfinished and not run.finished:
        raise ConfigError(
            f"run {run.path} has not finished training (no {METRICS_FILE}); finish it first (`robustrec train "
            f"... --out {run.path}` resumes it), or pass --allow-unfinished to audit its best checkpoint so far"
        )


def prepared(config: AuditConfig, context: SuiteContext, model: Recommender) -> list[Perturbation]:
    """One perturbation per severity, prepared from ``context`` and checked against ``model``."""
    perturbations = [config.perturbation(s).prepare(context) for s in config.severities]
    for perturbation in perturbations:
        perturbation.check(model, context.dataset)
    return perturbations


def clean_details(perturbation: Perturbation) -> dict[str, Any]:
    """The clean record's details: the suite's settings without its severity (e.g. relative noise's
    ``noise_scale``), so that reports pair the clean record with its own audit when audits of one
    run with other settings share a folder."""
    settings = perturbation.describe()
    return {"clean": True, **{k: v for k, v in settings.items() if k not in ("suite", perturbation.severity_name)}}


def audit_run(
    run: Run,
    dataset: Dataset,
    config: AuditConfig,
    out_dir: str | Path,
    context: SuiteContext | None = None,
    progress: bool = True,
    model: Recommender | None = None,
    allow_unfinished: bool = False,
) -> Path:
    """Audit one run; write and return its records file.

    ``context`` holds what a suite needs besides its options (the caption suite: a caption source;
    see :class:`SuiteContext`); by default it holds only ``dataset``. An unfinished run is refused
    unless ``allow_unfinished``; the records say which it was (``provenance["run_finished"]``).
    """
    check_output_folder(out_dir)
    require_finished(run, allow_unfinished)
    device = resolve_device(config.device)
    if model is None:
        model = run.load_model(dataset, device)
    perturbations = prepared(config, context or SuiteContext(dataset), model)  # fails before any evaluation
    evaluator = Evaluator(dataset, config.split, run.spec.train.topk, device)
    base = {
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "model": run.spec.model,
        "strategy": run.spec.strategy,
        "strategy_label": run.info.get("strategy_label", run.spec.strategy),
        "run": str(run.path),
        "run_seed": run.spec.train.seed,
        "config_hash": run.info.get("config_hash", run.spec.config_hash()),
        "suite": config.suite,
        "split": config.split,
        "provenance": {**provenance(device), "audit": _jsonable(asdict(config)), "run_finished": run.finished},
    }
    records: list[Record] = []
    per_user: dict[int, dict[str, np.ndarray]] = {}

    def add(result, seconds: float, **fields: Any) -> None:
        details = dict(fields.pop("details", {}), seconds=round(seconds, 4))
        records.append(Record(**base, **fields, metrics=result.metrics, details=details))
        if config.per_user and result.per_user is not None:
            arrays = {k: v.astype(np.float32) for k, v in result.per_user.items()}
            per_user[len(records) - 1] = {"users": result.users.astype(np.int64), **arrays}

    start = time.perf_counter()
    clean = evaluator.evaluate(model, per_user=config.per_user)
    add(clean, time.perf_counter() - start, severity=0.0, severity_name=config.severity_name,
        repeat=CLEAN_REPEAT, seed=None, details=clean_details(perturbations[0]))

    total = len(perturbations) * config.repeats
    bar = report_progress(total, desc=f"audit {run.spec.model}/{run.spec.strategy} {config.suite}",
                          unit="evaluations", enabled=progress)
    for perturbation in perturbations:
        for repeat in range(config.repeats):
            seed = repeat_seed(config.perturbation_seed, repeat)
            start = time.perf_counter()
            view = perturbation.apply(model, dataset, torch.Generator().manual_seed(seed))
            result = evaluator.evaluate(view.model, per_user=config.per_user)
            add(result, time.perf_counter() - start, severity=perturbation.severity,
                severity_name=perturbation.severity_name, repeat=repeat, seed=seed,
                details={**perturbation.describe(), **view.details})
            bar.update()
    bar.close()
    out = records_path(out_dir, run.path, config)
    return write_records(out, records, per_user)


def audit(
    run_paths: Sequence[str | Path],
    config: AuditConfig,
    out_dir: str | Path,
    data: str | Path | None = None,
    captions_factory: Callable[[Dataset], CaptionSource] | None = None,
    text_encoder: Any = None,
    progress: bool = True,
    images_root: str | Path | None = None,
    allow_unfinished: bool = False,
) -> list[Path]:
    """Audit several runs (e.g. one per seed and strategy). Datasets are loaded once per path, each
    with one :class:`SuiteContext`: ``captions_factory(dataset)`` builds the caption source when a
    suite asks for one (the caption suite), ``text_encoder`` re-encodes texts (default: the
    dataset's own encoder).

    Everything is checked before the first evaluation: the output folder, the device, that every run
    finished training (unless ``allow_unfinished``), and that every perturbation applies.
    """
    from robustrec.data import open_dataset
    from robustrec.data.mmrec import load_dataset

    if not run_paths:
        raise ConfigError("give at least one run folder")
    check_output_folder(out_dir)
    device = resolve_device(config.device)
    runs = [open_run(p) for p in run_paths]
    for run in runs:
        require_finished(run, allow_unfinished)
    contexts: dict[str, SuiteContext] = {}
    loaded = []
    for run in runs:  # load and check everything before the first evaluation
        key = str(data or run.dataset_path)
        if key not in contexts:
            path = data or run.dataset_path
            dataset = load_dataset(path, images_root) if images_root and path else open_dataset(path, progress=progress)
            contexts[key] = SuiteContext(dataset, captions_factory, text_encoder)
        model = run.load_model(contexts[key].dataset, device)
        prepared(config, contexts[key], model)
        loaded.append((run, contexts[key], model))
    return [
        audit_run(run, context.dataset, config, out_dir, context, progress, model, allow_unfinished)
        for run, context, model in loaded
    ]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
