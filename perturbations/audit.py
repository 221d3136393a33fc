"""Robustness audits: evaluate saved runs clean once, then under a suite at each severity R times.

No retraining happens: a noise audit of S severities x R repeats costs about S x R + 1 evaluations.
Repeat r of every severity and every run uses the same perturbation seed, so runs are compared on
identical noise draws (common random numbers) and severities along one noise direction.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from perturbations.base import PERTURBATIONS, Perturbation
from perturbations.caption import CaptionSource
from robustrec.data.dataset import Dataset
from robustrec.devices import resolve_device
from robustrec.errors import ConfigError
from robustrec.evaluate import Evaluator
from robustrec.io import check_output_folder
from robustrec.models.base import Recommender
from robustrec.records import CLEAN_REPEAT, Record, write_records
from robustrec.runs import METRICS_FILE, Run, open_run, provenance

SUITES = ("noise", "caption", "image-noise", "text-noise")
#: The seeds torch.Generator.manual_seed accepts.
SEED_RANGE = (-(2**63), 2**64 - 1)
DEFAULT_SEVERITY = {"noise": 1e-6, "caption": 0.01, "image-noise": 0.1, "text-noise": 0.1}


@dataclass(frozen=True)
class AuditConfig:
    suite: str
    severities: tuple[float, ...] = ()
    repeats: int = 10
    seed: int = 0
    device: str = "cpu"
    split: str = "test"
    noise_scale: str = "absolute"
    target: str = "items"
    item_ids: tuple[int, ...] | None = None
    position: str = "append"
    per_user: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ConfigError(f"unknown suite {self.suite!r}; known: {', '.join(SUITES)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"perturbation seed must be an integer, got {self.seed!r}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
        if not self.severities:
            object.__setattr__(self, "severities", (DEFAULT_SEVERITY[self.suite],))
        if len(set(self.severities)) != len(self.severities):
            raise ConfigError("severities must be distinct")
        low, high = repeat_seed(self.seed, 0), repeat_seed(self.seed, self.repeats - 1)
        if not SEED_RANGE[0] <= min(low, high) <= max(low, high) <= SEED_RANGE[1]:
            raise ConfigError(f"perturbation seed {str(self.seed)[:40]} with {str(self.repeats)[:40]} repeats is "
                              f"out of range: the repeat seeds seed * 1000003 + repeat must lie in "
                              f"[{SEED_RANGE[0]}, {SEED_RANGE[1]}]")

    def digest(self) -> str:
        data = asdict(self)
        data.pop("device")
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def repeat_seed(seed: int, repeat: int) -> int:
    """The perturbation seed of repeat ``repeat`` (shared by every run and severity)."""
    return seed * 1_000_003 + repeat


def make_perturbation(
    config: AuditConfig, severity: float, captions: CaptionSource | None = None, text_encoder: Any = None
) -> Perturbation:
    factory = PERTURBATIONS.get(config.suite)
    if config.suite == "noise":
        return factory(severity, scale=config.noise_scale, target=config.target, item_ids=config.item_ids)
    if config.suite == "caption":
        return factory(severity, captions=captions, text_encoder=text_encoder, position=config.position)
    return factory(severity)


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


def audit_run(
    run: Run,
    dataset: Dataset,
    config: AuditConfig,
    out_dir: str | Path,
    captions: CaptionSource | None = None,
    text_encoder: Any = None,
    progress: bool = True,
    model: Recommender | None = None,
    allow_unfinished: bool = False,
) -> Path:
    """Audit one run; write and return its records file.

    An unfinished run is refused unless ``allow_unfinished``; the records say which it was
    (``provenance["run_finished"]``).
    """
    check_output_folder(out_dir)
    require_finished(run, allow_unfinished)
    device = resolve_device(config.device)
    if model is None:
        model = run.load_model(dataset, device)
    perturbations = [make_perturbation(config, s, captions, text_encoder) for s in config.severities]
    for p in perturbations:  # fail before any evaluation
        p.check(model, dataset)
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
    add(clean, time.perf_counter() - start, severity=0.0, severity_name=perturbations[0].severity_name,
        repeat=CLEAN_REPEAT, seed=None, details={"clean": True})

    total = len(perturbations) * config.repeats
    bar = tqdm(total=total, desc=f"{run.spec.model}/{run.spec.strategy} {config.suite}", disable=not progress)
    for perturbation in perturbations:
        for repeat in range(config.repeats):
            seed = repeat_seed(config.seed, repeat)
            start = time.perf_counter()
            view = perturbation.apply(model, dataset, torch.Generator().manual_seed(seed))
            result = evaluator.evaluate(view.model, per_user=config.per_user)
            add(result, time.perf_counter() - start, severity=perturbation.severity,
                severity_name=perturbation.severity_name, repeat=repeat, seed=seed,
                details={**perturbation.describe(), **view.details})
            bar.update()
    bar.close()
    out = Path(out_dir) / f"{run_name(run.path)}-{config.suite}-{config.digest()}.jsonl"
    return write_records(out, records, per_user)


def audit(
    run_paths: Sequence[str | Path],
    config: AuditConfig,
    out_dir: str | Path,
    data: str | Path | None = None,
    captions_factory=None,
    text_encoder: Any = None,
    progress: bool = True,
    images_root: str | Path | None = None,
    allow_unfinished: bool = False,
) -> list[Path]:
    """Audit several runs (e.g. one per seed and strategy). ``captions_factory(dataset)`` builds the
    caption source for the caption suite. Datasets are loaded once per path.

    Everything is checked before the first evaluation: the output folder, the device, that every run
    finished training (unless ``allow_unfinished``), and that every perturbation applies.
    """
    from robustrec.data import open_dataset
    from robustrec.data.mmrec import load_dataset

    if not run_paths:
        raise ConfigError("give at least one --run")
    check_output_folder(out_dir)
    device = resolve_device(config.device)
    runs = [open_run(p) for p in run_paths]
    for run in runs:
        require_finished(run, allow_unfinished)
    datasets: dict[str, Dataset] = {}
    sources: dict[str, CaptionSource | None] = {}
    prepared = []
    for run in runs:  # load and check everything before the first evaluation
        key = str(data or run.dataset_path)
        if key not in datasets:
            path = data or run.dataset_path
            datasets[key] = load_dataset(path, images_root) if images_root and path else open_dataset(path)
            wants_captions = captions_factory is not None and config.suite == "caption"
            sources[key] = captions_factory(datasets[key]) if wants_captions else None
        model = run.load_model(datasets[key], device)
        for severity in config.severities:
            make_perturbation(config, severity, sources[key], text_encoder).check(model, datasets[key])
        prepared.append((run, key, model))
    return [
        audit_run(run, datasets[key], config, out_dir, sources[key], text_encoder, progress, model, allow_unfinished)
        for run, key, model in prepared
    ]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
