"""Diagnose trained runs: flatness measures at each run's selected weights, written as records.

:func:`diagnose` takes run folders (and pairs of runs to interpolate between), checks all of them
before any work, measures each on its own training data (:class:`~robustrec.diagnostics.objective.TrainingLoss`)
and writes one :class:`robustrec.records.Diagnosis` per run and per pair to ``out/diagnostics.jsonl``.
Reports join them to audit records on (dataset fingerprint, config hash): ``robustrec report
AUDITS --flatness DIAGNOSES``.

Every random draw (the batches' negatives and dropout masks, the Lanczos start, the Hutchinson
vectors, the landscape directions) comes from generators seeded by ``DiagnoseConfig.seed`` alone, one
per purpose: the same seed gives the same numbers, and every run of a model is measured along the
same random directions (their draws are the same; each is scaled to its own run's weights).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.devices import resolve_device
from robustrec.diagnostics.landscape import (
    filter_normalised_direction,
    interpolation,
    interpolation_grid,
    landscape_1d,
    landscape_2d,
)
from robustrec.diagnostics.measures import hessian_trace, sharpness, top_eigenvalues
from robustrec.diagnostics.objective import TrainingLoss, norm
from robustrec.errors import ConfigError
from robustrec.io import check_output_folder
from robustrec.numerics import reproducible
from robustrec.progress import progress as report_progress
from robustrec.records import DIAGNOSIS_FILE, Diagnosis, write_diagnoses
from robustrec.runs import Run, open_run, provenance

#: What a diagnosis can measure, in the order it is done.
MEASURES = ("gradient", "eigenvalues", "trace", "sharpness", "landscape", "surface")


@dataclass(frozen=True)
class DiagnoseConfig:
    """What to measure and how.

    ``batch_size`` (default: each run's own) and ``interactions`` (default: every training pair)
    define the loss measured (:class:`TrainingLoss`). ``eigenvalues`` of the Hessian come from
    ``lanczos_steps`` products, the trace from ``trace_samples``; sharpness takes ``ascent_steps``
    within radius ``rho``; the 1-D landscape and the interpolation have ``points`` points, the 2-D
    landscape ``surface_points`` x ``surface_points``, over [-span, span] in filter-normalised units.
    """

    measures: tuple[str, ...] = MEASURES
    seed: int = 0
    batch_size: int | None = None
    interactions: int | None = None
    eigenvalues: int = 3
    lanczos_steps: int = 20
    trace_samples: int = 10
    rho: float = 0.05
    ascent_steps: int = 5
    points: int = 21
    surface_points: int = 11
    span: float = 1.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        owner = "diagnose"
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown or not self.measures:
            raise ConfigError(f"{owner}: unknown measure {', '.join(map(repr, unknown)) or '(none given)'}; "
                              f"choose from {', '.join(MEASURES)}")
        object.__setattr__(self, "measures", tuple(m for m in MEASURES if m in self.measures))
        checks.count(owner, "seed", self.seed, 0, 2**63 - 1)
        for name in ("batch_size", "interactions"):
            if getattr(self, name) is not None:
                checks.count(owner, name, getattr(self, name), 1)
        for name, minimum in (("eigenvalues", 1), ("lanczos_steps", 1), ("trace_samples", 2), ("ascent_steps", 1),
                              ("points", 2), ("surface_points", 2)):
            checks.count(owner, name, getattr(self, name), minimum)
        if self.eigenvalues > self.lanczos_steps:
            raise ConfigError(f"{owner}: {self.eigenvalues} eigenvalues need at least as many Lanczos steps "
                              f"(got {self.lanczos_steps})")
        checks.positive(owner, "rho", self.rho)
        checks.positive(owner, "span", self.span)

    def settings(self, objective: TrainingLoss) -> dict[str, Any]:
        """The settings a record keeps: this config with the loss actually measured filled in."""
        out = asdict(self)
        out["measures"] = list(self.measures)
        out.pop("device")
        out["batch_size"] = len(objective.batches[0])
        out["interactions"] = objective.interactions
        out["parameters"] = objective.size
        out["hvp"] = objective.hvp_method
        return out


def diagnose(
    run_paths: Sequence[str | Path],
    config: DiagnoseConfig,
    out_dir: str | Path,
    *,
    pairs: Sequence[tuple[str | Path, str | Path]] = (),
    data: str | Path | None = None,
    progress: bool = True,
    allow_unfinished: bool = False,
) -> list[Diagnosis]:
    """Diagnose every run in ``run_paths`` and interpolate every pair in ``pairs``; write the
    records to ``out_dir/diagnostics.jsonl`` (replacing it) and return them."""
    from robustrec.data import open_dataset

    if not run_paths and not pairs:
        raise ConfigError("give at least one run folder (or a pair to interpolate)")
    check_output_folder(out_dir)
    resolve_device(config.device)
    runs = {str(p): open_run(p) for p in [*run_paths, *(p for pair in pairs for p in pair)]}
    for run in runs.values():
        if not allow_unfinished and not run.finished:
            raise ConfigError(f"run {run.path} has not finished training; finish it first, or pass "
                              "--allow-unfinished to diagnose its best checkpoint so far")
    for a, b in pairs:
        check_pair(runs[str(a)], runs[str(b)])
    datasets: dict[str, Dataset] = {}
    for run in runs.values():  # load and check every dataset before the first measurement
        key = str(data or run.dataset_path)
        if key not in datasets:
            datasets[key] = open_dataset(data or run.dataset_path, progress=progress)
        run.check_dataset(datasets[key])

    def dataset_of(run: Run) -> Dataset:
        return datasets[str(data or run.dataset_path)]

    out = Path(out_dir)
    results = []
    with reproducible() as threads:
        for path in run_paths:
            run = runs[str(path)]
            results.append(diagnose_run(run, dataset_of(run), config, progress=progress, threads=threads))
        for a, b in pairs:
            run, other = runs[str(a)], runs[str(b)]
            results.append(interpolate_runs(run, other, dataset_of(run), config, progress=progress, threads=threads))
    out.mkdir(parents=True, exist_ok=True)
    write_diagnoses(out / DIAGNOSIS_FILE, results)
    return results


def check_pair(run: Run, other: Run) -> None:
    """Two runs can be interpolated when they are the same model on the same data with the same shapes."""
    if run.spec.model != other.spec.model or dict(run.spec.model_params) != dict(other.spec.model_params):
        raise ConfigError(f"cannot interpolate between {run.path} ({run.spec.model} {dict(run.spec.model_params)}) "
                          f"and {other.path} ({other.spec.model} {dict(other.spec.model_params)}): "
                          "they must be the same model with the same hyper-parameters")
    if run.dataset_fingerprint != other.dataset_fingerprint:
        raise ConfigError(f"cannot interpolate between {run.path} and {other.path}: they were trained on "
                          "different datasets")


def diagnose_run(run: Run, dataset: Dataset, config: DiagnoseConfig, *, progress: bool = True,
                 threads: int | None = None) -> Diagnosis:
    """The flatness measures of one run (see :class:`DiagnoseConfig`)."""
    start = time.perf_counter()
    objective = _objective(run, dataset, config)
    chosen = set(config.measures)
    bar = report_progress(_cost(config), desc=f"diagnose {run.spec.model}/{run.spec.strategy} seed "
                          f"{run.spec.train.seed}", unit="evaluations", enabled=progress)
    measures: dict[str, float | None] = {}
    eigenvalues: list[float] = []
    curves: dict[str, dict[str, list[float]]] = {}
    surfaces: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    with bar:
        def step(name: str, cost: int, fn):
            began = time.perf_counter()
            value = fn()
            timings[name] = round(time.perf_counter() - began, 3)
            bar.update(cost)
            return value

        loss, grad = step("gradient", 1, objective.gradient)
        measures["loss"] = loss
        if "gradient" in chosen:
            measures["grad_norm"] = norm(grad)
        del grad
        if "eigenvalues" in chosen:
            eigenvalues = step("eigenvalues", config.lanczos_steps, lambda: top_eigenvalues(
                objective, config.eigenvalues, config.lanczos_steps, _generator(config.seed, "lanczos")))
            measures["top_eigenvalue"] = eigenvalues[0]
        if "trace" in chosen:
            trace = step("trace", config.trace_samples,
                         lambda: hessian_trace(objective, config.trace_samples, _generator(config.seed, "trace")))
            measures["hessian_trace"], measures["hessian_trace_stderr"] = trace.value, trace.stderr
        if "sharpness" in chosen:
            measures["sharpness"] = step("sharpness", config.ascent_steps,
                                         lambda: sharpness(objective, config.rho, config.ascent_steps))
        if "landscape" in chosen or "surface" in chosen:
            generator = _generator(config.seed, "landscape")
            first = filter_normalised_direction(objective.params, generator)
            second = filter_normalised_direction(objective.params, generator)
            if "landscape" in chosen:
                xs, ys = step("landscape", 0, lambda: landscape_1d(objective, first, config.points, config.span,
                                                                   lambda: bar.update(1)))
                curves["landscape_1d"] = {"x": xs, "y": ys}
            if "surface" in chosen:
                xs, ys, z = step("surface", 0, lambda: landscape_2d(objective, first, second, config.surface_points,
                                                                    config.span, lambda: bar.update(1)))
                surfaces["landscape_2d"] = {"x": xs, "y": ys, "z": z}
    return _diagnosis(run, dataset, "run", None, config.settings(objective), measures, eigenvalues,
                      curves, surfaces, time.perf_counter() - start, config, threads, timings)


def interpolate_runs(run: Run, other: Run, dataset: Dataset, config: DiagnoseConfig, *, progress: bool = True,
                     threads: int | None = None) -> Diagnosis:
    """The loss along the straight line from ``run``'s weights (t = 0) to ``other``'s (t = 1), with
    the barrier: the largest excess over the straight line between the ends' losses, for t in [0, 1]."""
    start = time.perf_counter()
    check_pair(run, other)
    objective = _objective(run, dataset, config)
    names = [name for name, p in objective.model.named_parameters() if p.requires_grad]
    theirs = dict(other.load_model(dataset, config.device).named_parameters())
    target = [theirs[name].detach() for name in names]
    with report_progress(len(interpolation_grid(config.points)), desc=f"interpolate {run.spec.model} seed {run.spec.train.seed}",
                         unit="evaluations", enabled=progress) as bar:
        xs, ys = interpolation(objective, target, config.points, on_point=lambda: bar.update(1))
    measures = {"loss": ys[xs.index(0.0)], "barrier": barrier(xs, ys)}
    return _diagnosis(run, dataset, "interpolation", str(other.path), config.settings(objective), measures,
                      [], {"interpolation": {"x": xs, "y": ys}}, {}, time.perf_counter() - start, config, threads,
                      {}, other_label=other.info.get("strategy_label", other.spec.strategy))


def barrier(ts: Sequence[float], losses: Sequence[float]) -> float:
    """max over t in [0, 1] of L(t) - ((1 - t) L(0) + t L(1)), with L(0), L(1) read off the nearest points."""
    inside = [(t, y) for t, y in zip(ts, losses) if 0.0 <= t <= 1.0]
    (t0, y0), (t1, y1) = inside[0], inside[-1]
    return max(y - (y0 + (t - t0) / (t1 - t0) * (y1 - y0)) for t, y in inside)


def _objective(run: Run, dataset: Dataset, config: DiagnoseConfig) -> TrainingLoss:
    model = run.load_model(dataset, config.device)
    return TrainingLoss(model, dataset, batch_size=config.batch_size or run.spec.train.batch_size,
                        interactions=config.interactions, seed=config.seed)


def _cost(config: DiagnoseConfig) -> int:
    """Progress units: about one per loss, gradient or Hessian-vector product."""
    chosen = set(config.measures)
    return (1 + config.lanczos_steps * ("eigenvalues" in chosen) + config.trace_samples * ("trace" in chosen)
            + config.ascent_steps * ("sharpness" in chosen) + config.points * ("landscape" in chosen)
            + config.surface_points**2 * ("surface" in chosen))


def _generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator for one purpose, seeded from ``seed`` and the purpose's name."""
    digest = hashlib.sha256(f"{seed}/{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _diagnosis(run, dataset, kind, other, settings, measures, eigenvalues, curves, surfaces, seconds, config,
               threads, timings, other_label=None) -> Diagnosis:
    return Diagnosis(
        dataset=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
        model=run.spec.model,
        strategy=run.spec.strategy,
        strategy_label=run.info.get("strategy_label", run.spec.strategy),
        run=str(run.path),
        run_seed=run.spec.train.seed,
        config_hash=run.info.get("config_hash", run.spec.config_hash()),
        kind=kind,
        other=other,
        settings={**settings, **({"other_label": other_label} if other_label else {})},
        measures=measures,
        eigenvalues=eigenvalues,
        curves=curves,
        surfaces=surfaces,
        seconds=round(seconds, 3),
        provenance={**provenance(config.device), "threads": threads, "seconds_by_measure": timings,
                    "run_finished": run.finished},
    )
