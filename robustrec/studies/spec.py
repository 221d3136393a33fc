"""The study spec: one TOML file that describes a whole robustness study, validated up front.

A spec names the runs (models x strategies x hyper-parameter grids x seeds) and the audits of the
runs selected on validation. Everything is checked when the spec is loaded, before anything trains:
an unknown table, key, model, strategy, suite or parameter, and a bad value (of the training
settings, of a strategy or model parameter at every grid point, of a suite option or severity) is a
one-line :class:`~robustrec.errors.ConfigError` naming the key and, for names, the valid choices.

Tables and keys (the issue's schema, docs in README.md "Studies")::

    [study]      name (required), data, seeds = [999], select = "recall@20", threads = 1, description
    [train]      any TrainConfig field but seed, threads and valid_metric (which [study] sets)
    [[runs]]     model (required), strategy = "plain", params, strategy_params, grid, label,
                 train (this entry's [train] overrides, e.g. another optimizer)
    [[audits]]   suite (required), severities, repeats = 10, params, perturbation_seed = 0,
                 split = "test", models (default: every model), name (a display name),
                 captioner = "imagenet" and captioner_params (for suites that insert captions)

``threads`` is the torch thread count of every task. It is part of each run's identity (its config
hash: see :mod:`robustrec.numerics`), so it is a setting of the study, not of the executor: the same
spec gives the same runs with one worker or eight.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustrec import checks
from robustrec.errors import ConfigError, first_line
from robustrec.hparams import accepted
from robustrec.metrics import DEFAULT_METRIC, parse_metric
from robustrec.numerics import check_threads
from robustrec.runs import RunSpec, TrainConfig
from robustrec.studies.recipes import read_toml, resolve

DEFAULT_SEEDS = (999,)
TABLES = ("study", "train", "runs", "audits")
STUDY_KEYS = ("name", "data", "seeds", "select", "threads", "description")
RUN_KEYS = ("model", "strategy", "params", "strategy_params", "grid", "label", "train")
AUDIT_KEYS = ("suite", "severities", "repeats", "params", "perturbation_seed", "split", "models", "name",
              "captioner", "captioner_params")
DEFAULT_CAPTIONER = "imagenet"
#: TrainConfig fields that [study] sets for every run: a [train] value would contradict it.
STUDY_OWNED = {"seed": "seeds", "threads": "threads", "valid_metric": "select"}
#: Strategy constructor arguments that are not hyper-parameters (``amr+mirror`` builds the objective).
NOT_STRATEGY_PARAMS = ("objective",)


@dataclass(frozen=True)
class RunEntry:
    """One ``[[runs]]`` entry: a model and a strategy with fixed parameters and a grid over others.

    ``grid`` maps a parameter name (of the model or of the strategy, never both) to its values; the
    entry trains the cross product, in the order of the spec (the first key varies slowest).
    """

    model: str
    strategy: str = "plain"
    params: Mapping[str, Any] = field(default_factory=dict)
    strategy_params: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    label: str | None = None
    train: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The label shown in reports: ``label`` if given, else ``model-strategy``."""
        return self.label or f"{self.model}-{self.strategy}"

    def points(self) -> list[dict[str, Any]]:
        """Every grid point as ``{name: value}`` (one empty point without a grid)."""
        names = list(self.grid)
        return [dict(zip(names, values)) for values in itertools.product(*(self.grid[n] for n in names))]

    def run_spec(self, point: Mapping[str, Any], train: TrainConfig) -> RunSpec:
        """The run of one grid point: the point's values go to the model or strategy that takes them."""
        model_names = set(model_parameters(self.model))
        model_params = {**self.params, **{k: v for k, v in point.items() if k in model_names}}
        strategy_params = {**self.strategy_params, **{k: v for k, v in point.items() if k not in model_names}}
        return RunSpec(self.model, self.strategy, model_params, strategy_params, train)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "strategy": self.strategy, "params": dict(self.params),
                "strategy_params": dict(self.strategy_params),
                "grid": {k: list(v) for k, v in self.grid.items()}, "label": self.label,
                "train": _jsonable_train(self.train)}


@dataclass(frozen=True)
class AuditEntry:
    """One ``[[audits]]`` entry: a suite audit of the selected runs (of ``models``, default all)."""

    suite: str
    severities: tuple[float, ...] = ()
    repeats: int = 10
    params: Mapping[str, Any] = field(default_factory=dict)
    perturbation_seed: int = 0
    split: str = "test"
    models: tuple[str, ...] | None = None
    name: str | None = None
    captioner: str = DEFAULT_CAPTIONER
    captioner_params: Mapping[str, Any] = field(default_factory=dict)

    def config(self, device: str = "cpu"):
        """The :class:`perturbations.AuditConfig` (which checks the suite, its options and severities)."""
        from perturbations import AuditConfig

        return AuditConfig(self.suite, params=dict(self.params), severities=tuple(self.severities),
                           repeats=self.repeats, perturbation_seed=self.perturbation_seed, device=device,
                           split=self.split)

    def audits(self, model: str) -> bool:
        return self.models is None or model in self.models

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "severities": list(self.severities), "repeats": self.repeats,
                "params": dict(self.params), "perturbation_seed": self.perturbation_seed, "split": self.split,
                "models": None if self.models is None else list(self.models), "name": self.name,
                "captioner": self.captioner, "captioner_params": dict(self.captioner_params)}


@dataclass(frozen=True)
class StudySpec:
    """A validated study spec (see the module docstring); ``train`` holds the [train] table."""

    name: str
    data: str | None = None
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    select: str = DEFAULT_METRIC
    threads: int = 1
    train: Mapping[str, Any] = field(default_factory=dict)
    runs: tuple[RunEntry, ...] = ()
    audits: tuple[AuditEntry, ...] = ()
    description: str | None = None
    source: Path | None = None

    def train_config(self, seed: int, entry: RunEntry | None = None) -> TrainConfig:
        """The training settings of the runs of ``entry`` with ``seed``: [train] and the entry's own
        overrides, plus the study's seed, thread count and selection metric (early stopping and grid
        selection use the same metric)."""
        fields = {**self.train, **(entry.train if entry is not None else {})}
        return TrainConfig(**_train_fields(fields), seed=seed, threads=self.threads, valid_metric=self.select)

    @property
    def device(self) -> str:
        return self.train_config(self.seeds[0]).device

    def to_json(self) -> dict[str, Any]:
        """The resolved spec (what study.json records; ``source`` is left out: a copy of the spec file
        elsewhere is the same study)."""
        return {"name": self.name, "description": self.description, "data": self.data,
                "seeds": list(self.seeds), "select": self.select, "threads": self.threads,
                "train": _jsonable_train(self.train),
                "runs": [r.to_json() for r in self.runs], "audits": [a.to_json() for a in self.audits]}


# ---- loading ---------------------------------------------------------------------------------------
def load_spec(path_or_recipe: str | Path, data: str | None = None, quick: bool = False) -> StudySpec:
    """Read and validate a spec file, or a shipped recipe by name (:mod:`robustrec.studies.recipes`).

    ``data`` replaces [study].data (a path as the user typed it: relative to the working folder);
    ``quick`` shrinks the study first (:func:`robustrec.studies.recipes.quick`: a few epochs, one
    seed, small grids) so that any spec runs in seconds.
    """
    path = resolve(path_or_recipe)
    raw = read_toml(path)
    if quick:
        from robustrec.studies.recipes import quick as shrink

        raw = shrink(raw)
    spec = parse_spec(raw, base=path.parent, source=path)
    if data is not None:
        spec = dataclasses.replace(spec, data=str(Path(data).expanduser().resolve()))
    return spec


def parse_spec(raw: Mapping[str, Any], base: Path | None = None, source: Path | None = None) -> StudySpec:
    """Validate a spec given as a TOML-like dict (``base``: the folder relative data paths resolve
    against). Every problem is one ConfigError naming the key."""
    _table(raw, "the spec", TABLES)
    study = _table(raw.get("study"), "[study]", STUDY_KEYS, required=True)
    name = _string(study.get("name"), "[study].name", required=True)
    seeds = _seeds(study.get("seeds", list(DEFAULT_SEEDS)))
    select = _string(study.get("select", DEFAULT_METRIC), "[study].select")
    parse_metric(select)
    threads = _integer(study.get("threads", 1), "[study].threads")
    check_threads(threads, "[study].threads")
    data = study.get("data")
    if data is not None:
        data = _string(data, "[study].data")
        data = str(((base or Path.cwd()) / Path(data).expanduser()).resolve())
    description = study.get("description")
    if description is not None:
        description = _string(description, "[study].description")

    train = _train_table(raw.get("train", {}), "[train]")
    runs = tuple(_run_entry(entry, f"runs[{n}]") for n, entry in enumerate(_array(raw, "runs", required=True), 1))
    _check_names(runs)
    audits = tuple(_audit_entry(entry, f"audits[{n}]") for n, entry in enumerate(_array(raw, "audits"), 1))
    spec = StudySpec(name=name, data=data, seeds=seeds, select=select.lower(), threads=threads, train=train,
                     runs=runs, audits=audits, description=description, source=source)
    _check_values(spec)
    return spec


def _train_keys() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in STUDY_OWNED)


def _jsonable_train(train: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in train.items()}


def _train_table(raw: Any, where: str) -> dict[str, Any]:
    """A [train] table: TrainConfig's fields but those [study] sets."""
    table = _table(raw, where, None)
    for key, owner in STUDY_OWNED.items():
        if key in table:
            raise ConfigError(f"{where}.{key} is set by [study].{owner}; move it there")
    return dict(_table(table, where, _train_keys()))


def _train_fields(train: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if k == "topk" and isinstance(v, list) else v for k, v in train.items()}


def _run_entry(raw: Any, where: str) -> RunEntry:
    from robustrec.models import MODELS

    entry = _table(raw, where, RUN_KEYS)
    model = _string(entry.get("model"), f"{where}.model", required=True)
    MODELS.get(model)  # an unknown model lists the known ones
    strategy = _string(entry.get("strategy", "plain"), f"{where}.strategy")
    strategy_names = strategy_parameters(strategy)  # an unknown strategy lists the known ones
    model_names = model_parameters(model)
    params = _params(entry.get("params", {}), f"{where}.params", model_names, f"model {model!r}")
    strategy_params = _params(entry.get("strategy_params", {}), f"{where}.strategy_params", strategy_names,
                              f"strategy {strategy!r}")
    grid = _grid(entry.get("grid", {}), where, model_names, strategy_names, params, strategy_params)
    label = entry.get("label")
    if label is not None:
        label = _string(label, f"{where}.label")
    train = _train_table(entry.get("train", {}), f"{where}.train")
    return RunEntry(model, strategy, params, strategy_params, grid, label, train)


def _grid(raw: Any, where: str, model_names: tuple[str, ...], strategy_names: tuple[str, ...],
          params: Mapping[str, Any], strategy_params: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    grid = _table(raw, f"{where}.grid", None)
    valid = sorted(set(model_names) | set(strategy_names))
    out = {}
    for name, values in grid.items():
        key = f"{where}.grid.{name}"
        if name in model_names and name in strategy_names:
            raise ConfigError(f"{key}: {name!r} is a parameter of both the model and the strategy; set it in "
                              "params or strategy_params instead")
        if name not in valid:
            raise ConfigError(f"{key}: unknown parameter {name!r}; valid: {', '.join(valid) or 'none'}")
        if name in params or name in strategy_params:
            raise ConfigError(f"{key}: {name!r} is also fixed in params or strategy_params; give it once")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{key} must be a non-empty list of values, got {_short(values)}")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{key}: the values must be distinct, got {_short(values)}")
        out[name] = tuple(_finite_value(v, f"{key}") for v in values)
    return out


def _audit_entry(raw: Any, where: str) -> AuditEntry:
    from perturbations import PERTURBATIONS
    from perturbations.audit import check_option_names

    entry = _table(raw, where, AUDIT_KEYS)
    suite = _string(entry.get("suite"), f"{where}.suite", required=True)
    PERTURBATIONS.get(suite)  # an unknown suite lists the known ones
    params = dict(_table(entry.get("params", {}), f"{where}.params", None))
    try:
        check_option_names(suite, params)
    except ConfigError as exc:
        raise ConfigError(f"{where}.params: {exc}") from None
    severities = entry.get("severities", [])
    if not isinstance(severities, list):
        raise ConfigError(f"{where}.severities must be a list of numbers, got {_short(severities)}")
    severities = tuple(_finite_value(v, f"{where}.severities") for v in severities)
    models = entry.get("models")
    if models is not None:
        from robustrec.models import MODELS

        if not isinstance(models, list) or not models:
            raise ConfigError(f"{where}.models must be a non-empty list of model names, got {_short(models)}")
        for model in models:
            MODELS.get(_string(model, f"{where}.models"))
        models = tuple(models)
    split = _string(entry.get("split", "test"), f"{where}.split")
    if split not in ("test", "valid"):
        raise ConfigError(f"{where}.split must be test or valid, got {split!r}")
    name = entry.get("name")
    if name is not None:
        name = _string(name, f"{where}.name")
    captioner = _captioner(entry, where)
    audit = AuditEntry(suite, severities, _integer(entry.get("repeats", 10), f"{where}.repeats"), params,
                       _integer(entry.get("perturbation_seed", 0), f"{where}.perturbation_seed"), split, models,
                       name, captioner, dict(_table(entry.get("captioner_params", {}), f"{where}.captioner_params",
                                                    None)))
    try:
        audit.config()  # the suite's own checks: options' values, severities, repeats, seed range
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return audit


def _captioner(entry: Mapping[str, Any], where: str) -> str:
    """The captioner's name, checked against the registry (it is built only if a suite needs captions)."""
    from captioning import CAPTIONERS

    name = _string(entry.get("captioner", DEFAULT_CAPTIONER), f"{where}.captioner")
    factory = CAPTIONERS.get(name)  # an unknown captioner lists the known ones
    params = _table(entry.get("captioner_params", {}), f"{where}.captioner_params", None)
    _params(params, f"{where}.captioner_params", tuple(sorted(accepted(factory))), f"captioner {name!r}")
    return name


def _check_names(runs: tuple[RunEntry, ...]) -> None:
    """Each entry's name (its label, or model-strategy) is its row in the selection and the report:
    two entries of one name would be mixed up there."""
    seen: dict[str, int] = {}
    for n, entry in enumerate(runs, 1):
        if entry.name in seen:
            raise ConfigError(f"runs[{n}] is named {entry.name!r} as runs[{seen[entry.name]}] is; give one of them "
                              "a label")
        seen[entry.name] = n


def _check_values(spec: StudySpec) -> None:
    """Build what every run needs, for every grid point and seed, so a bad value fails now rather
    than after hours of training: the training settings, the strategy, and the model itself (on a
    tiny probe dataset: the constructors check their values before using the data)."""
    from robustrec.devices import parse_device
    from robustrec.models import build_model
    from robustrec.strategies import build_strategy, with_run_seed

    for n, entry in enumerate(spec.runs, 1):
        try:
            config = spec.train_config(spec.seeds[0], entry)
            parse_device(config.device)  # whether it exists is checked where the jobs run
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"[train] of runs[{n}]: {first_line(exc)}") from None
        checked: set[str] = set()
        for point in entry.points():
            run = entry.run_spec(point, config)
            where = f"runs[{n}]" + (f" at grid point {point}" if point else "")
            try:
                build_strategy(run.strategy, **with_run_seed(run.strategy, dict(run.strategy_params), config.seed))
                key = repr(sorted(run.model_params.items()))
                if key not in checked:
                    checked.add(key)
                    build_model(run.model, _probe_dataset(), **run.model_params)
            except (ConfigError, TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: {first_line(exc)}") from None
    models = {entry.model for entry in spec.runs}
    for n, audit in enumerate(spec.audits, 1):
        if audit.models is not None:
            missing = sorted(set(audit.models) - models)
            if missing:
                raise ConfigError(f"audits[{n}].models: {missing[0]!r} has no [[runs]] entry; the study trains "
                                  f"{', '.join(sorted(models))}")


@functools.lru_cache(maxsize=1)
def _probe_dataset():
    """A 6-user, 5-item dataset with image and text features: enough to construct every model."""
    import numpy as np
    import torch

    from robustrec.data.dataset import Dataset, ItemFeatures

    generator = torch.Generator().manual_seed(0)
    users = np.repeat(np.arange(6), 3)
    items = np.array([(u + j) % 5 for u in range(6) for j in range(3)])
    pairs = np.stack([users, items], axis=1).astype(np.int64)
    train, valid, test = pairs[0::3], pairs[1::3], pairs[2::3]
    features = ItemFeatures(image=torch.randn(5, 4, generator=generator), text=torch.randn(5, 3, generator=generator))
    return Dataset(name="probe", n_users=6, n_items=5, train=train, valid=valid, test=test, features=features)


# ---- the registries' parameter names ---------------------------------------------------------------
def model_parameters(model: str) -> tuple[str, ...]:
    from robustrec.models import MODELS

    return tuple(sorted(accepted(MODELS.get(model))))


def strategy_parameters(strategy: str) -> tuple[str, ...]:
    """The parameters of a strategy; of both parts for ``objective+rule`` (e.g. amr+mirror)."""
    from robustrec.strategies import STRATEGIES

    names: set[str] = set()
    for part in strategy.split("+"):
        names |= set(accepted(STRATEGIES.get(part)))
    return tuple(sorted(names - set(NOT_STRATEGY_PARAMS)))


# ---- small validators, each a one-line error naming the key ----------------------------------------
def _table(raw: Any, where: str, keys: tuple[str, ...] | None, required: bool = False) -> Mapping[str, Any]:
    """``raw`` as a table whose keys are all in ``keys`` (any key when None)."""
    if raw is None and required:
        raise ConfigError(f"{where} is missing")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table, got {_short(raw)}")
    if keys is not None:
        for key in raw:
            if key not in keys:
                raise ConfigError(f"{where}: unknown key {str(key)[:40]!r}; valid: {', '.join(keys)}")
    return raw


def _array(raw: Mapping[str, Any], name: str, required: bool = False) -> list[Any]:
    value = raw.get(name, [])
    if not isinstance(value, list) or (required and not value):
        raise ConfigError(f"the spec needs at least one [[{name}]] table" if required and value == []
                          else f"{name} must be an array of tables ([[{name}]])")
    return value


def _params(raw: Any, where: str, names: tuple[str, ...], owner: str) -> dict[str, Any]:
    params = _table(raw, where, None)
    for key, value in params.items():
        if key not in names:
            raise ConfigError(f"{where}: {owner} has no parameter {key!r}; valid: {', '.join(names) or 'none'}")
        _finite_value(value, f"{where}.{key}")
    return dict(params)


def _string(value: Any, where: str, required: bool = False) -> str:
    if value is None and required:
        raise ConfigError(f"{where} is required")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string, got {_short(value)}")
    return value


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {_short(value)}")
    return value


def _seeds(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"[study].seeds must be a non-empty list of integers, got {_short(value)}")
    seeds = tuple(checks.count("[study]", "seeds", _integer(v, "[study].seeds"), 0, 2**63 - 1) for v in value)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"[study].seeds must be distinct, got {list(seeds)}")
    return seeds


def _finite_value(value: Any, where: str) -> Any:
    """TOML reads ``nan`` and ``inf`` as floats; no parameter means them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: NaN and infinity are not valid values")
    if isinstance(value, (list, tuple)):
        for v in value:
            _finite_value(v, where)
    return value


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
