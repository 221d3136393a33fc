"""The trainer: epochs of prepared batches handed to a strategy, early stopping on validation.

Model selection uses the validation metric only; the test metrics reported are those of the
best-validation weights; training stops as MMRec's does, at the first evaluation after ``patience``
evaluations without a gain. Every random number comes from two generators seeded from the run's seed
(one for sampling, one for the model's own randomness), and both are checkpointed; torch runs its
deterministic kernels (robustrec/numerics.py). So the same seed on the same device and thread count
gives identical metrics, and a resumed run ends exactly where an uninterrupted one would: the
thread count is recorded in the run's configuration, and a resume on another one is refused.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustrec.data.dataset import Dataset
from robustrec.data.sampling import BPRSampler
from robustrec.devices import resolve_device
from robustrec.errors import ConfigError, DataError, RobustRecError, first_line
from robustrec.evaluate import Evaluator
from robustrec.io import atomic_path, check_output_folder, write_json, write_jsonl, write_text
from robustrec.metrics import METRICS, metric_key, parse_metric
from robustrec.models import build_model
from robustrec.numerics import reproducible
from robustrec.optim import build_optimizer
from robustrec.progress import progress as progress_report
from robustrec.runs import (
    EVALUATION_FILE,
    LOG_FILE,
    METRICS_FILE,
    RUN_FILE,
    STATE_FILE,
    TEXT_LOG_FILE,
    WEIGHTS_FILE,
    RunResults,
    RunSpec,
    TrainConfig,
    check_finite,
    load_weights,
    open_run,
    save_weights,
    write_run_file,
)
from robustrec.strategies import build_strategy, resolved_params, with_run_seed


@dataclass(frozen=True)
class TrainResult(RunResults):
    """What :func:`train` returns: the run's results (as in ``metrics.json``) and its folder."""

    path: Path


#: Everything a run folder may hold; ``--overwrite`` removes these (and nothing else).
RUN_FILES = (RUN_FILE, WEIGHTS_FILE, STATE_FILE, LOG_FILE, TEXT_LOG_FILE, METRICS_FILE, EVALUATION_FILE)


def check_run_folder(out: Path, spec: RunSpec, dataset: Dataset, overwrite: bool = False, resume: bool = True) -> bool:
    """Validate the run folder for ``spec`` without changing it (ConfigError); return True when a
    resume state will be loaded."""
    check_output_folder(out)  # an existing file, or a folder that cannot be written, is refused
    if not out.is_dir():
        return False
    if not (out / RUN_FILE).is_file():
        leftovers = [p for p in out.iterdir() if p.name not in RUN_FILES and not _is_temporary(p)]
        if leftovers:
            raise ConfigError(f"--out {out} is a non-empty folder that is not a run; choose another")
        return False
    if overwrite:
        return False
    run = open_run(out)
    run.check_dataset(dataset)
    if run.info.get("config_hash") != spec.config_hash():
        raise ConfigError(f"{out} holds a run with another configuration{_what_differs(run.spec, spec)}; "
                          "choose another --out or pass --overwrite")
    if (out / METRICS_FILE).is_file():
        raise ConfigError(f"{out} holds a finished run; pass --overwrite to train again")
    if resume and (out / STATE_FILE).is_file() and run.spec.train.device != spec.train.device:
        raise ConfigError(f"{out} was started on {run.spec.train.device}; resume it there (--device "
                          f"{run.spec.train.device}): another device changes the numbers")
    return resume and (out / STATE_FILE).is_file()


def _what_differs(saved: RunSpec, wanted: RunSpec) -> str:
    """Say so when only the thread count differs: the usual reason a resume is refused."""
    if saved.train.threads is not None and saved.train.threads != wanted.train.threads:
        if saved.with_threads(wanted.train.threads).config_hash() == wanted.config_hash():
            return (f" (it was trained with {saved.train.threads} threads, this call uses "
                    f"{wanted.train.threads}; the thread count can change the numbers, so resume it with "
                    f"--threads {saved.train.threads})")
    return ""


def _is_temporary(path: Path) -> bool:
    """A temporary that an atomic write of one of the run's files left behind when killed."""
    return path.name.endswith(".tmp") and any(path.name.startswith(f".{name}.") for name in RUN_FILES)


def _prepare_folder(out: Path, overwrite: bool) -> None:
    """Create the run folder; remove a replaced run's files (``overwrite``) and stale temporaries."""
    out.mkdir(parents=True, exist_ok=True)
    for path in out.iterdir():
        if _is_temporary(path) or (overwrite and path.name in RUN_FILES):
            path.unlink(missing_ok=True)


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

    An interrupted run in ``out`` with the same configuration (thread count included) is resumed from
    its last finished epoch. Everything is validated and built before ``out`` is touched, so a
    rejected option leaves nothing behind. Torch runs deterministic kernels on ``spec.train.threads``
    threads (default: 1, or $ROBUSTREC_THREADS, as in the CLI), see :mod:`robustrec.numerics`.
    ``progress`` reports the epochs on stderr (:mod:`robustrec.progress`: a bar on a terminal, plain
    lines otherwise); ``out/train.log`` gets one readable line per epoch either way. ``max_epochs_this_call``
    stops after that many epochs without finishing the run (returns ``None``); it exists to test
    resuming.
    """
    with reproducible(spec.train.threads) as threads:
        return _train(dataset, spec.with_threads(threads), Path(out), progress, resume, overwrite,
                      max_epochs_this_call)


def _train(dataset, spec, out, progress, resume, overwrite, max_epochs_this_call) -> TrainResult | None:
    cfg = spec.train
    device = resolve_device(cfg.device)
    resuming = check_run_folder(out, spec, dataset, overwrite, resume)

    # Build everything that can refuse an option before the folder is created or changed.
    init_gen = torch.Generator().manual_seed(cfg.seed)
    model = build_model(spec.model, dataset, generator=init_gen, **spec.model_params).to(device)
    strategy_params = with_run_seed(spec.strategy, spec.strategy_params, cfg.seed)
    strategy = build_strategy(spec.strategy, **strategy_params)
    valid_eval = Evaluator(dataset, "valid", cfg.topk, device)
    test_eval = Evaluator(dataset, "test", cfg.topk, device)
    trains = model.trainable and cfg.epochs > 0
    if trains:
        optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
        strategy.setup(model, optimizer)
        if cfg.mirror_trace:
            strategy.enable_trace()

    _prepare_folder(out, overwrite)
    if not resuming:
        write_run_file(out, spec, dataset, strategy.label(), model.hparams,
                       resolved_params(spec.strategy, strategy_params), model.derived)
    metadata = {"config_hash": spec.config_hash(), "dataset_fingerprint": dataset.fingerprint}

    if not trains:
        save_weights(out / WEIGHTS_FILE, model, metadata)
        valid = valid_eval.evaluate(model).metrics
        return _finish(out, model, test_eval, valid, best_epoch=0, epochs_run=0, stopped_early=False, log=[], cfg=cfg)

    sampler = BPRSampler(dataset, cfg.batch_size, device)
    sample_gen = torch.Generator().manual_seed(cfg.seed)
    model_gen = torch.Generator(device).manual_seed(cfg.seed + 1)

    state: dict[str, Any] = {"epoch": 0, "best_value": -math.inf, "best_epoch": 0, "bad": 0, "best_valid": {}}
    log: list[dict[str, Any]] = []
    if resuming:
        state, log = _load_state(out, model, optimizer, strategy, sample_gen, model_gen)
        _write_logs(out, log, cfg)  # the logs of the state resumed from, whatever was written after it

    valid_key = cfg.valid_metric.lower()
    epochs_this_call = 0
    report = progress_report(cfg.epochs, desc=f"train {spec.model}/{spec.strategy}", unit="epochs",
                             enabled=progress, initial=state["epoch"])
    stopped_early = False
    with report as bar:  # closed (its last line printed) however the loop ends
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            model.train()
            start = time.perf_counter()
            set_learning_rate(optimizer, epoch_learning_rate(cfg, epoch))
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
            mirror = strategy.epoch_summary()
            if mirror is not None:
                entry["mirror"] = mirror
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
            _write_logs(out, log, cfg)
            bar.update()
            epochs_this_call += 1
            # MMRec stops when cur_step > stopping_step: `patience` evaluations without a gain are
            # tolerated, and the next one without a gain ends the run.
            if state["bad"] > cfg.patience:
                stopped_early = True
                break
            if max_epochs_this_call is not None and epochs_this_call >= max_epochs_this_call and epoch < cfg.epochs:
                return None

    tensors, _ = load_weights(out / WEIGHTS_FILE)
    model.load_state_dict(tensors)
    return _finish(
        out, model, test_eval, state["best_valid"], state["best_epoch"], state["epoch"], stopped_early, log, cfg
    )


def epoch_learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (from 1): MMRec's LambdaLR ``lr * decay ** (e / step)``, e from 0,
    stepped after every epoch. Set from the epoch number, so a resumed run needs no scheduler state."""
    return cfg.lr * cfg.lr_decay ** ((epoch - 1) / cfg.lr_decay_epochs)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _finish(out, model, test_eval, valid, best_epoch, epochs_run, stopped_early, log, cfg) -> TrainResult:
    test = test_eval.evaluate(model).metrics
    train_times = [e["train_seconds"] for e in log]
    per_epoch = sum(train_times) / len(train_times) if train_times else 0.0
    ending = "stopped early" if stopped_early else "finished"
    _write_logs(out, log, cfg, f"{ending}: best epoch {best_epoch} of {epochs_run}, {per_epoch:.2f} s/epoch; "
                f"test {_metric_text(test, cfg.valid_metric)}")
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
    return TrainResult(valid=valid, test=test, best_epoch=best_epoch, epochs_run=epochs_run,
                       stopped_early=stopped_early, train_seconds_per_epoch=per_epoch, path=out)


def _save_state(out, state, log, model, optimizer, strategy, sample_gen, model_gen) -> None:
    """The resume state after an epoch, the log included: a kill at any moment leaves a state.pt
    and a log that agree (the log file is rewritten from the state on resume)."""
    payload = {
        "trainer": {k: v for k, v in state.items() if k != "best_valid"},
        "best_valid": json.dumps(state["best_valid"]),
        "log": json.dumps(log),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "strategy": strategy.state_dict(),
        "sample_gen": sample_gen.get_state(),
        "model_gen": model_gen.get_state(),
    }
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save(payload, tmp)


def _write_logs(out: Path, log: list[dict[str, Any]], cfg, last_line: str | None = None) -> None:
    """Rewrite the run's two logs from ``log``: ``log.jsonl`` for machines and ``train.log`` for
    people (one line per epoch, and ``last_line`` once the run has finished)."""
    write_jsonl(out / LOG_FILE, log)
    lines = [_epoch_line(entry, cfg) for entry in log]
    write_text(out / TEXT_LOG_FILE, "".join(f"{line}\n" for line in [*lines, *([last_line] if last_line else [])]))


def _epoch_line(entry: dict[str, Any], cfg) -> str:
    """``epoch 3/60: loss=0.5012, 1.20 s train, 0.10 s eval; valid recall@20=0.0761 ... (best so far)``:
    what the progress line shows, plus the validation metrics."""
    line = (f"epoch {entry['epoch']}/{cfg.epochs}: loss={entry['loss']:.4f}, {entry['train_seconds']:.2f} s train, "
            f"{entry['eval_seconds']:.2f} s eval")
    if "mirror" in entry:
        line += f"; {_mirror_text(entry['mirror'])}"
    if "valid" in entry:
        line += f"; valid {_metric_text(entry['valid'], cfg.valid_metric)}"
    return line + (" (best so far)" if entry.get("best") else "")


def _mirror_text(trace: dict[str, Any]) -> str:
    """``mirror 4 steps: loss -0.0123 descent, +0.0031 ascent (ascended 75%), cos -1.000/+1.000``."""
    def num(key: str, form: str) -> str:
        return "n/a" if trace[key] is None else format(trace[key], form)

    return (f"mirror {trace['steps']} steps: loss {num('descent_change', '+.4f')} descent, "
            f"{num('ascent_change', '+.4f')} ascent (ascended {num('ascended', '.0%')}), "
            f"cos {num('cos_descent', '+.3f')}/{num('cos_ascent', '+.3f')}")


def _metric_text(metrics: dict[str, float], valid_metric: str) -> str:
    """The selection metric first, then every other metric at its cut-off (``recall@20=0.0761 ...``)."""
    _, k = parse_metric(valid_metric)
    keys = [valid_metric.lower()] + [metric_key(m, k) for m in METRICS if metric_key(m, k) != valid_metric.lower()]
    return " ".join(f"{key}={metrics[key]:.4f}" for key in keys if key in metrics)


def _load_state(out, model, optimizer, strategy, sample_gen, model_gen):
    """Restore a resume state. It is read without unpickling code (``weights_only=True``); anything
    that is not a state this trainer wrote is refused with one line (and never with torch's advice
    to load it with ``weights_only=False``)."""
    path = out / STATE_FILE
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(payload["model"])
        check_finite(payload["model"], path)
        optimizer.load_state_dict(payload["optimizer"])
        strategy.load_state_dict(payload["strategy"])
        sample_gen.set_state(payload["sample_gen"])
        model_gen.set_state(payload["model_gen"])
        state = dict(payload["trainer"])
        state["best_valid"] = json.loads(payload["best_valid"])
        log = json.loads(payload["log"])
        if not isinstance(log, list) or not all(isinstance(e, dict) and "epoch" in e for e in log):
            raise ValueError("malformed log")
        int(state["epoch"]), float(state["best_value"]), int(state["best_epoch"]), int(state["bad"])
    except DataError:
        raise
    except Exception as exc:  # untrusted bytes: whatever fails to parse is a corrupt state
        reason = type(exc).__name__ if "weights_only" in str(exc) else first_line(exc, 120)
        raise DataError(f"{path}: not a valid resume state ({reason}); delete it or pass --overwrite") from None
    return state, [e for e in log if e["epoch"] <= state["epoch"]]
