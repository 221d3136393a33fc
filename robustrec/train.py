"""The trainer: epochs of prepared batches handed to a strategy, early stopping on validation.

Model selection uses the validation metric only; the test metrics reported are those of the
best-validation weights. Every random number comes from two generators seeded from the run's seed
(one for sampling, one for the model's own randomness), and both are checkpointed, so the same seed
on the same device gives identical metrics, and a resumed run ends exactly where an uninterrupted
one would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from robustrec.data.dataset import Dataset
from robustrec.data.sampling import BPRSampler
from robustrec.errors import ConfigError, DataError, RobustRecError
from robustrec.evaluate import Evaluator
from robustrec.io import write_json, write_jsonl
from robustrec.models import build_model
from robustrec.optim import build_optimizer
from robustrec.runs import (
    LOG_FILE,
    METRICS_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    RunSpec,
    load_weights,
    open_run,
    save_weights,
    write_run_file,
)
from robustrec.strategies import build_strategy, with_run_seed


@dataclass(frozen=True)
class TrainResult:
    path: Path
    valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_seconds_per_epoch: float


def resolve_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but CUDA is not available on this machine")
    return dev


def _prepare_folder(out: Path, spec: RunSpec, dataset: Dataset, overwrite: bool, resume: bool) -> bool:
    """Create or validate the run folder; return True when a resume state should be loaded."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if overwrite and out.exists():
        for name in ("run.json", WEIGHTS_FILE, STATE_FILE, LOG_FILE, METRICS_FILE):
            (out / name).unlink(missing_ok=True)
    if (out / "run.json").is_file():
        run = open_run(out)
        if run.info.get("config_hash") != spec.config_hash():
            raise ConfigError(f"{out} holds a run with another configuration; choose another --out or pass --overwrite")
        run.check_dataset(dataset)
        if (out / METRICS_FILE).is_file():
            raise ConfigError(f"{out} holds a finished run; pass --overwrite to train again")
        return resume and (out / STATE_FILE).is_file()
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is a non-empty folder that is not a run; choose another")
    return False


def train(
    dataset: Dataset,
    spec: RunSpec,
    out: str | Path,
    *,
    progress: bool = True,
    resume: bool = True,
    overwrite: bool = False,
    max_epochs_this_call: int | None = None,
) -> TrainResult | None:
    """Train ``spec`` on ``dataset`` into the run folder ``out``.

    An interrupted run in ``out`` with the same configuration is resumed from its last finished
    epoch. ``max_epochs_this_call`` stops after that many epochs without finishing the run (returns
    ``None``); it exists to test resuming.
    """
    cfg = spec.train
    out = Path(out)
    device = resolve_device(cfg.device)
    resuming = _prepare_folder(out, spec, dataset, overwrite, resume)
    out.mkdir(parents=True, exist_ok=True)

    init_gen = torch.Generator().manual_seed(cfg.seed)
    model = build_model(spec.model, dataset, generator=init_gen, **spec.model_params).to(device)
    strategy = build_strategy(spec.strategy, **with_run_seed(spec.strategy, spec.strategy_params, cfg.seed))
    if not resuming:
        write_run_file(out, spec, dataset, strategy.label(), model.hparams)
    valid_eval = Evaluator(dataset, "valid", cfg.topk, device)
    test_eval = Evaluator(dataset, "test", cfg.topk, device)
    metadata = {"config_hash": spec.config_hash(), "dataset_fingerprint": dataset.fingerprint}

    if not model.trainable or cfg.epochs == 0:
        save_weights(out / WEIGHTS_FILE, model, metadata)
        valid = valid_eval.evaluate(model).metrics
        return _finish(out, model, test_eval, valid, best_epoch=0, epochs_run=0, stopped_early=False, log=[])

    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    strategy.setup(model, optimizer)
    sampler = BPRSampler(dataset, cfg.batch_size, device)
    sample_gen = torch.Generator().manual_seed(cfg.seed)
    model_gen = torch.Generator(device).manual_seed(cfg.seed + 1)

    state: dict[str, Any] = {"epoch": 0, "best_value": -math.inf, "best_epoch": 0, "bad": 0, "best_valid": {}}
    log: list[dict[str, Any]] = []
    if resuming:
        state, log = _load_state(out, model, optimizer, strategy, sample_gen, model_gen)

    valid_key = cfg.valid_metric.lower()
    epochs_this_call = 0
    bar = tqdm(
        range(state["epoch"] + 1, cfg.epochs + 1),
        desc=f"{spec.model}/{spec.strategy}",
        unit="epoch",
        disable=not progress,
        initial=state["epoch"],
        total=cfg.epochs,
    )
    stopped_early = False
    for epoch in bar:
        model.train()
        start = time.perf_counter()
        model.pre_epoch(model_gen)
        strategy.on_epoch_start(epoch, cfg.epochs)
        total, batches = 0.0, 0
        for batch in sampler.epoch(sample_gen, model_gen):
            total += strategy.step(batch)
            batches += 1
        train_seconds = time.perf_counter() - start
        loss = total / max(batches, 1)
        if not math.isfinite(loss):
            raise RobustRecError(f"training diverged: loss is {loss} at epoch {epoch}; try a lower --lr")
        entry: dict[str, Any] = {"epoch": epoch, "loss": loss, "train_seconds": train_seconds, "eval_seconds": 0.0}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            start = time.perf_counter()
            valid = valid_eval.evaluate(model).metrics
            entry["eval_seconds"] = time.perf_counter() - start
            entry["valid"] = valid
            if valid[valid_key] > state["best_value"]:
                state.update(best_value=valid[valid_key], best_epoch=epoch, bad=0, best_valid=valid)
                save_weights(out / WEIGHTS_FILE, model, metadata)
                entry["best"] = True
            else:
                state["bad"] += 1
            bar.set_postfix(loss=f"{loss:.4f}", **{valid_key: f"{valid[valid_key]:.4f}"})
        log.append(entry)
        state["epoch"] = epoch
        _save_state(out, state, log, model, optimizer, strategy, sample_gen, model_gen)
        epochs_this_call += 1
        if state["bad"] >= cfg.patience:
            stopped_early = True
            break
        if max_epochs_this_call is not None and epochs_this_call >= max_epochs_this_call and epoch < cfg.epochs:
            bar.close()
            return None
    bar.close()

    tensors, _ = load_weights(out / WEIGHTS_FILE)
    model.load_state_dict(tensors)
    return _finish(
        out, model, test_eval, state["best_valid"], state["best_epoch"], state["epoch"], stopped_early, log
    )


def _finish(out, model, test_eval, valid, best_epoch, epochs_run, stopped_early, log) -> TrainResult:
    test = test_eval.evaluate(model).metrics
    train_times = [e["train_seconds"] for e in log]
    per_epoch = sum(train_times) / len(train_times) if train_times else 0.0
    write_jsonl(out / LOG_FILE, log)
    write_json(
        out / METRICS_FILE,
        {
            "valid": valid,
            "test": test,
            "best_epoch": best_epoch,
            "epochs_run": epochs_run,
            "stopped_early": stopped_early,
            "train_seconds_per_epoch": per_epoch,
            "eval_seconds_per_epoch": (sum(e["eval_seconds"] for e in log) / len(log)) if log else 0.0,
        },
    )
    (out / STATE_FILE).unlink(missing_ok=True)
    return TrainResult(out, valid, test, best_epoch, epochs_run, stopped_early, per_epoch)


def _save_state(out, state, log, model, optimizer, strategy, sample_gen, model_gen) -> None:
    from robustrec.io import atomic_path

    payload = {
        "trainer": {k: v for k, v in state.items() if k != "best_valid"},
        "best_valid": json.dumps(state["best_valid"]),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "strategy": strategy.state_dict(),
        "sample_gen": sample_gen.get_state(),
        "model_gen": model_gen.get_state(),
    }
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save(payload, tmp)
    write_jsonl(out / LOG_FILE, log)


def _load_state(out, model, optimizer, strategy, sample_gen, model_gen):
    path = out / STATE_FILE
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        strategy.load_state_dict(payload["strategy"])
        sample_gen.set_state(payload["sample_gen"])
        model_gen.set_state(payload["model_gen"])
        state = dict(payload["trainer"])
        state["best_valid"] = json.loads(payload["best_valid"])
    except (RuntimeError, KeyError, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: corrupt resume state ({str(exc).splitlines()[0] if str(exc) else exc}); "
                        "delete it or pass --overwrite") from None
    log = []
    if (out / LOG_FILE).is_file():
        log = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines() if line.strip()]
    return state, [e for e in log if e["epoch"] <= state["epoch"]]
