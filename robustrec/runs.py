"""Run folders: what a training run writes and how a saved run is loaded back.

A run folder holds

- ``run.json``        the run's specification, dataset identity and provenance;
- ``model.safetensors`` the best-validation weights (safetensors: no pickle), with the config hash
  and dataset fingerprint in its metadata;
- ``state.pt``        the resume state after the last finished epoch (tensors and numbers only,
  read with ``torch.load(weights_only=True)``); removed when the run completes;
- ``log.jsonl``       one line per epoch (JSON, for machines; with ``mirror_trace``, a "mirror" entry);
- ``train.log``       the same epochs as readable lines (loss, times, validation metrics) and, once
  the run has finished, a last line with the best epoch and its test metrics;
- ``metrics.json``    the final metrics: best validation and the test metrics at that epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustrec import __version__, checks, numerics
from robustrec.errors import ConfigError, DataError, first_line
from robustrec.io import atomic_path, read_json, write_json
from robustrec.metrics import DEFAULT_METRIC, DEFAULT_TOPK, is_metric_key, parse_metric

# torch, safetensors and the models are imported where weights are read or written, so that reading
# a run's configuration and metrics (``robustrec compare``) does not load torch.
if TYPE_CHECKING:
    import torch

    from robustrec.data.dataset import Dataset
    from robustrec.models import Recommender

RUN_FILE = "run.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
LOG_FILE = "log.jsonl"
TEXT_LOG_FILE = "train.log"
METRICS_FILE = "metrics.json"
EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class TrainConfig:
    """Trainer settings with MMRec's defaults.

    ``threads`` is the number of torch CPU threads. It is part of the run's identity because it can
    change the last bits of the numbers (robustrec/numerics.py); ``None`` means the default (the CLI's
    ``--threads``, else ``$ROBUSTREC_THREADS``, else 1: :func:`robustrec.numerics.default_threads`),
    which :func:`robustrec.training.train` resolves and records.
    """

    epochs: int = 1000
    patience: int = 20
    batch_size: int = 2048
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    #: MMRec's ``learning_rate_scheduler [lr_decay, lr_decay_epochs]``: epoch e (from 1) trains at
    #: ``lr * lr_decay ** ((e - 1) / lr_decay_epochs)`` (LATTICE and MGCN use 0.96 and 50).
    lr_decay: float = 1.0
    lr_decay_epochs: int = 50
    seed: int = 999
    device: str = "cpu"
    topk: tuple[int, ...] = DEFAULT_TOPK
    valid_metric: str = DEFAULT_METRIC
    eval_every: int = 1
    threads: int | None = None
    #: Record what each Mirror Gradient step does (losses, cosines, step norms) in the log's "mirror"
    #: entry of each epoch (:meth:`robustrec.strategies.Strategy.enable_trace`); training is unchanged.
    mirror_trace: bool = False

    def __post_init__(self) -> None:
        owner = "train"
        for name, minimum in (("epochs", 0), ("patience", 0), ("batch_size", 1), ("eval_every", 1),
                              ("lr_decay_epochs", 1)):
            checks.count(owner, name, getattr(self, name), minimum)
        checks.count(owner, "seed", self.seed, 0, 2**63 - 1)
        checks.positive(owner, "lr", self.lr)
        checks.non_negative(owner, "momentum", self.momentum)
        checks.non_negative(owner, "weight_decay", self.weight_decay)
        checks.positive(owner, "lr_decay", self.lr_decay)
        checks.flag(owner, "mirror_trace", self.mirror_trace)
        if self.threads is not None:
            checks.count(owner, "threads", self.threads, 1)
        for name in ("optimizer", "device", "valid_metric"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{owner}: {name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.topk, (tuple, list)) or not self.topk:
            raise ConfigError(f"{owner}: topk must be a non-empty list of integers, got {self.topk!r}")
        object.__setattr__(self, "topk", tuple(checks.count(owner, "each top-k value", k) for k in self.topk))
        _, k = parse_metric(self.valid_metric)
        if k not in self.topk:
            raise ConfigError(f"valid metric {self.valid_metric} needs k={k} among the top-k values {self.topk}")


#: Trainer settings added after run folders existed, with the defaults under which they leave a run's hash alone.
_LATER_SETTINGS = {"lr_decay": 1.0, "lr_decay_epochs": 50, "mirror_trace": False}


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a training run (except the dataset, identified by fingerprint)."""

    model: str
    strategy: str = "plain"
    model_params: Mapping[str, Any] = field(default_factory=dict)
    strategy_params: Mapping[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name in ("model", "strategy"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a name, got {getattr(self, name)!r}")
        for name in ("model_params", "strategy_params"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"{name} must be a mapping of names to values, got {getattr(self, name)!r}")
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train must be a TrainConfig, got {type(self.train).__name__}")

    def with_threads(self, threads: int) -> RunSpec:
        """This spec with the thread count it is trained with."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, threads=threads))

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model_params"] = dict(self.model_params)
        out["strategy_params"] = dict(self.strategy_params)
        out["train"]["topk"] = list(self.train.topk)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        if not isinstance(data, dict):
            raise TypeError("the spec is not an object")
        train = dict(data.get("train", {}))
        if "topk" in train:
            train["topk"] = tuple(train["topk"])
        return cls(
            model=data["model"],
            strategy=data.get("strategy", "plain"),
            model_params=dict(data.get("model_params", {})),
            strategy_params=dict(data.get("strategy_params", {})),
            train=TrainConfig(**train),
        )

    def config_hash(self) -> str:
        """Hash of everything that changes the trained weights, the thread count included (the device
        is left out: a run trained on a GPU is evaluated anywhere; resuming checks it separately).
        A spec without a thread count (runs from before it was recorded) hashes as it always did, and
        so do settings added later while they keep their defaults (the learning-rate decay; the mirror
        trace, which changes what the log holds, not the weights, so a resume keeps the log whole)."""
        data = self.to_json()
        data["train"].pop("device")
        if data["train"]["threads"] is None:
            data["train"].pop("threads")
        for name, default in _LATER_SETTINGS.items():
            if data["train"][name] == default:
                data["train"].pop(name)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def provenance(device: str | torch.device) -> dict[str, Any]:
    import torch

    return {
        "robustrec_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "numerics": numerics.identity(device),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the robustrec source tree, if it is a git checkout (asked once per process)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def dataset_identity(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "path": str(dataset.root) if dataset.root else None,
        "fingerprint": dataset.fingerprint,
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
    }


def save_weights(path: Path, model: Recommender, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or unreadable checkpoint ({exc})") from None


@dataclass(frozen=True)
class Run:
    """A finished (or interrupted) run folder, read back."""

    path: Path
    spec: RunSpec
    info: dict[str, Any]

    @property
    def dataset_path(self) -> str | None:
        return self.info["dataset"].get("path")

    @property
    def dataset_fingerprint(self) -> str:
        return self.info["dataset"]["fingerprint"]

    @property
    def finished(self) -> bool:
        """Whether training ended (``metrics.json`` is written last); an unfinished run's checkpoint
        is only the best of the epochs done so far."""
        return (self.path / METRICS_FILE).is_file()

    @property
    def metrics(self) -> dict[str, Any] | None:
        path = self.path / METRICS_FILE
        return read_json(path, "run metrics") if path.is_file() else None

    def results(self) -> RunResults | None:
        """The metrics training wrote (``metrics.json``), checked; ``None`` while training has not finished."""
        raw = self.metrics
        return None if raw is None else RunResults.from_json(raw, self.path / METRICS_FILE)

    def check_dataset(self, dataset: Dataset) -> None:
        if dataset.fingerprint != self.dataset_fingerprint:
            raise DataError(
                f"run {self.path} was trained on dataset {self.info['dataset']['name']!r} "
                f"(fingerprint {self.dataset_fingerprint}), not on {dataset.name!r} ({dataset.fingerprint})"
            )

    def load_model(self, dataset: Dataset, device: str | torch.device = "cpu") -> Recommender:
        """The best-validation model, rebuilt on ``dataset`` (which must be the training dataset)."""
        from robustrec.models import build_model

        self.check_dataset(dataset)
        model = build_model(self.spec.model, dataset, **self.spec.model_params)
        path = self.path / WEIGHTS_FILE
        if not path.is_file():
            raise DataError(f"{self.path}: no checkpoint ({WEIGHTS_FILE}); the run has not finished an epoch")
        tensors, metadata = load_weights(path)
        if metadata.get("dataset_fingerprint", dataset.fingerprint) != dataset.fingerprint:
            raise DataError(f"{path}: checkpoint is from another dataset ({metadata['dataset_fingerprint']})")
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise DataError(f"{path}: checkpoint does not match model {self.spec.model!r}: {first_line(exc)}") from None
        check_finite(tensors, path)
        return model.to(device)


@dataclass(frozen=True)
class RunResults:
    """What a finished training wrote to ``metrics.json``: the best validation metrics and the test
    metrics at that epoch."""

    valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_seconds_per_epoch: float

    @classmethod
    def from_json(cls, data: Any, where: Path) -> RunResults:
        """Checked: metric values are finite numbers in [0, 1] and counts are non-negative integers;
        anything else is a DataError naming the file (it may have been edited or truncated)."""
        try:
            if not isinstance(data, dict):
                raise TypeError("not an object")
            splits = {split: _metric_values(data[split], split) for split in ("valid", "test")}
            counts = {key: data[key] for key in ("best_epoch", "epochs_run")}
            for key, value in counts.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{key} is {value!r}")
            seconds = data.get("train_seconds_per_epoch", 0.0)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
                raise ValueError(f"train_seconds_per_epoch is {seconds!r}")
            stopped = data.get("stopped_early", False)
            if not isinstance(stopped, bool):
                raise ValueError(f"stopped_early is {stopped!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: malformed run metrics ({type(exc).__name__}: {str(exc)[:120]})") from None
        return cls(splits["valid"], splits["test"], counts["best_epoch"], counts["epochs_run"], stopped, float(seconds))


def _metric_values(values: Any, split: str) -> dict[str, float]:
    if not isinstance(values, dict):
        raise TypeError(f"{split} is not an object")
    for key, value in values.items():
        if not is_metric_key(key):
            raise ValueError(f"{split} has an unknown metric {str(key)[:40]!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{split} {key} is {str(value)[:40]}, not a number in [0, 1]")
    return {key.lower(): float(value) for key, value in values.items()}


def check_finite(tensors: Mapping[str, torch.Tensor], where: str | Path) -> None:
    """Refuse weights holding NaN or inf: every score computed from them would be made up."""
    import torch

    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise DataError(f"{where}: {name} holds {bad} NaN or infinite values; the weights are unusable")


def open_run(path: str | Path) -> Run:
    path = Path(path)
    run_file = path / RUN_FILE
    if not run_file.is_file():
        raise DataError(f"{path} is not a robustrec run folder (no {RUN_FILE})")
    info = read_json(run_file, "run file")
    try:
        spec = RunSpec.from_json(info["spec"])
        dataset = info["dataset"]
        for key, types in (("fingerprint", str), ("name", str), ("path", (str, type(None)))):
            if not isinstance(dataset.get(key), types):
                raise TypeError(f"the dataset's {key} is {dataset.get(key)!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{run_file}: malformed run file ({type(exc).__name__}: {exc})") from None
    except ConfigError as exc:
        raise DataError(f"{run_file}: invalid run configuration ({exc})") from None
    return Run(path, spec, info)


def write_run_file(
    path: Path,
    spec: RunSpec,
    dataset: Dataset,
    strategy_label: str,
    model_hparams: dict[str, Any],
    strategy_hparams: dict[str, Any] | None = None,
    model_derived: dict[str, str] | None = None,
) -> None:
    """run.json: the spec, and what it resolved to: every model and strategy hyper-parameter with the
    defaults filled in, and what the model derived and from where (e.g. which user-user graph)."""
    write_json(
        path / RUN_FILE,
        {
            "spec": spec.to_json(),
            "model_hparams": _jsonable(model_hparams),
            "strategy_hparams": _jsonable(strategy_hparams or {}),
            "model_derived": _jsonable(model_derived or {}),
            "config_hash": spec.config_hash(),
            "strategy_label": strategy_label,
            "dataset": dataset_identity(dataset),
            "provenance": provenance(spec.train.device),
        },
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
