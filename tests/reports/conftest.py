"""Fabricated audit records for the reports tests (no models are trained)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robustrec.records import CLEAN_REPEAT, Record, write_records


def metrics_of(value: float) -> dict[str, float]:
    """Every record carries recall@20 = value, recall@5 = value / 2 and ndcg@20 = 0.8 * value."""
    return {"recall@5": value / 2, "recall@20": value, "ndcg@20": 0.8 * value}


def make_audit(
    model: str = "freedom",
    strategy: str = "plain",
    seed: int = 1,
    clean: float = 0.2,
    perturbed: Mapping[float, Sequence[float]] | None = None,
    *,
    suite: str = "noise",
    severity_name: str = "sigma2",
    label: str = "",
    dataset: str = "baby",
    fingerprint: str = "fp-baby",
    details: dict[str, Any] | None = None,
) -> list[Record]:
    """One run's audit: a clean record and, per severity, one record per repeat (values = recall@20)."""
    perturbed = {1e-6: [0.18, 0.17, 0.19]} if perturbed is None else perturbed
    common = dict(dataset=dataset, dataset_fingerprint=fingerprint, model=model, strategy=strategy,
                  strategy_label=label, run=f"{model}-{strategy}-s{seed}", run_seed=seed, config_hash="cfg",
                  suite=suite, severity_name=severity_name, split="test", details=dict(details or {}))
    records = [Record(severity=0.0, repeat=CLEAN_REPEAT, seed=None, metrics=metrics_of(clean), **common)]
    for severity, values in perturbed.items():
        records += [Record(severity=severity, repeat=r, seed=1000 + r, metrics=metrics_of(v), **common)
                    for r, v in enumerate(values)]
    return records


def user_arrays(users: np.ndarray, recall20: np.ndarray) -> dict[str, np.ndarray]:
    return {"users": users, "recall@20": recall20, "recall@5": recall20 / 2, "ndcg@20": 0.8 * recall20}


WriteAudit = Callable[..., Path]


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture
def write_audit(audit_dir: Path) -> WriteAudit:
    """``write_audit(name, records, per_user=None, folder=None)`` writes ``<folder>/<name>.jsonl``."""

    def write(name: str, records: list[Record], per_user: dict[int, dict[str, np.ndarray]] | None = None,
              folder: Path | None = None) -> Path:
        return write_records((folder or audit_dir) / f"{name}.jsonl", records, per_user)

    return write


@pytest.fixture
def make() -> Callable[..., list[Record]]:
    return make_audit


@pytest.fixture
def arrays() -> Callable[..., dict[str, np.ndarray]]:
    return user_arrays


@pytest.fixture
def paper_like(write_audit: WriteAudit, audit_dir: Path) -> Path:
    """FREEDOM plain vs mirror, 3 seeds, 2 severities, 3 repeats; VBPR plain only, 1 seed.

    recall@20 values (recall@5 is half of them, so its relative drops are the same):
      FREEDOM plain   seed 1: clean 0.20, 1e-6 -> [0.18, 0.17, 0.19], 1e-4 -> [0.10, 0.10, 0.10]
                      seed 2: clean 0.25, 1e-6 -> [0.20, 0.20, 0.20], 1e-4 -> [0.15, 0.15, 0.15]
                      seed 3: clean 0.30, 1e-6 -> [0.27, 0.27, 0.27], 1e-4 -> [0.15, 0.15, 0.15]
      FREEDOM mirror  seed s: clean as plain, 1e-6 -> clean * 0.98, 1e-4 -> clean * 0.9 (all repeats)
    """
    plain = {1: (0.20, [0.18, 0.17, 0.19], [0.10] * 3), 2: (0.25, [0.20] * 3, [0.15] * 3),
             3: (0.30, [0.27] * 3, [0.15] * 3)}
    for seed, (clean, low, high) in plain.items():
        write_audit(f"freedom-plain-{seed}", make_audit("freedom", "plain", seed, clean, {1e-6: low, 1e-4: high}))
        mirror = {1e-6: [clean * 0.98] * 3, 1e-4: [clean * 0.9] * 3}
        write_audit(f"freedom-mirror-{seed}", make_audit("freedom", "mirror", seed, clean, mirror, label="MG"))
    write_audit("vbpr-plain-1", make_audit("vbpr", "plain", 1, 0.4, {1e-6: [0.4, 0.38], 1e-4: [0.3, 0.3]}))
    return audit_dir
