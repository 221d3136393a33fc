"""Grid selection on validation only: per (run entry, seed), the grid point with the best validation value.

The value of a point is its run's validation metric at its best epoch (``metrics.json`` "valid",
the epoch early stopping kept), for the study's ``select`` metric: the same metric that chose the
epoch chooses the point. Test metrics are never read here. (MMRec's grid search keeps the best TEST
score, seeds included: a leak this module exists to avoid.) Ties go to the first point in spec order.

The whole validation surface is kept in ``DIR/selection.json``::

    {"select": "recall@20",
     "groups": [{"model": "freedom", "strategy": "mirror", "label": "freedom-mirror", "seed": 1,
                 "points": [{"grid": {"alpha2": 0.1}, "run": "runs/freedom-mirror/<hash>-<fp>", "valid": 0.0812},
                            ...],
                 "chosen": 0}]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustrec.errors import DataError
from robustrec.io import write_json
from robustrec.runs import open_run
from robustrec.studies.plan import Group, TrainTask

SELECTION_FILE = "selection.json"


def validation_value(task: TrainTask, metric: str) -> float:
    """The validation ``metric`` of a finished run at its best epoch."""
    results = open_run(task.folder).results()
    if results is None:
        raise DataError(f"{task.folder}: the run has not finished training; run the study again to finish it")
    if metric not in results.valid:
        raise DataError(f"{task.folder}: metrics.json has no validation {metric}")
    return results.valid[metric]


def best_index(values: list[float]) -> int:
    """The index of the largest value; the first one on ties (spec order decides, never chance)."""
    best = 0
    for n, value in enumerate(values):
        if value > values[best]:
            best = n
    return best


def select(groups: list[Group], metric: str) -> dict[str, Any]:
    """The selection document: every group's points with their validation values, and its choice."""
    documents = []
    for group in groups:
        values = [validation_value(task, metric) for task in group.tasks]
        documents.append({
            "model": group.entry.model,
            "strategy": group.entry.strategy,
            "label": group.entry.name,
            "seed": group.seed,
            "points": [{"grid": dict(task.grid), "run": task.key, "valid": value}
                       for task, value in zip(group.tasks, values)],
            "chosen": best_index(values),
        })
    return {"select": metric, "groups": documents}


def chosen(groups: list[Group], document: dict[str, Any]) -> list[tuple[Group, TrainTask]]:
    """Each group with the task of its chosen point (``document`` as :func:`select` made it)."""
    return [(group, group.tasks[entry["chosen"]]) for group, entry in zip(groups, document["groups"])]


def write_selection(out: Path, document: dict[str, Any]) -> Path:
    """Write ``out/selection.json`` atomically."""
    path = Path(out) / SELECTION_FILE
    write_json(path, document)
    return path
