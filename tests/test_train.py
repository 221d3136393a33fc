"""Trainer invariants: determinism, resume, early stopping, checkpoints."""

from __future__ import annotations

import json
import re

import pytest
import torch

from robustrec.errors import ConfigError, DataError
from robustrec.runs import RunSpec, TrainConfig, open_run
from robustrec.training import train
from tests.conftest import make_tiny_dataset


def spec(model="vbpr", strategy="plain", epochs=4, seed=3, **params):
    return RunSpec(model, strategy, strategy_params=params,
                   train=TrainConfig(epochs=epochs, patience=50, batch_size=64, seed=seed, topk=(5, 10, 20)))


def test_same_seed_same_metrics(tiny, tmp_path):
    a = train(tiny, spec(), tmp_path / "a", progress=False)
    b = train(tiny, spec(), tmp_path / "b", progress=False)
    train(tiny, spec(seed=4), tmp_path / "c", progress=False)
    assert a.test == b.test and a.valid == b.valid
    log_a = [json.loads(x)["loss"] for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    log_c = [json.loads(x)["loss"] for x in (tmp_path / "c" / "log.jsonl").read_text().splitlines()]
    assert log_a != log_c


@pytest.mark.parametrize("strategy", ["plain", "mirror"])
def test_resume_equals_uninterrupted(tiny, tmp_path, strategy):
    full = train(tiny, spec(strategy=strategy, epochs=5), tmp_path / "full", progress=False)
    partial = train(tiny, spec(strategy=strategy, epochs=5), tmp_path / "part", progress=False, max_epochs_this_call=2)
    assert partial is None and (tmp_path / "part" / "state.pt").is_file()
    resumed = train(tiny, spec(strategy=strategy, epochs=5), tmp_path / "part", progress=False)
    assert resumed.test == full.test
    assert resumed.best_epoch == full.best_epoch
    logs = [(tmp_path / d / "log.jsonl").read_text().splitlines() for d in ("full", "part")]
    assert [json.loads(x)["loss"] for x in logs[0]] == [json.loads(x)["loss"] for x in logs[1]]
    assert not (tmp_path / "part" / "state.pt").exists()
    texts = [without_times((tmp_path / d / "train.log").read_text()) for d in ("full", "part")]
    assert texts[0] == texts[1]  # the readable log is rebuilt from the resumed state too


def without_times(text):
    return re.sub(r"[0-9.]+ s\b", "T s", text)


def test_a_readable_log_beside_log_jsonl(tiny, tmp_path):
    result = train(tiny, spec(epochs=3), tmp_path / "run", progress=False)
    entries = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    lines = (tmp_path / "run" / "train.log").read_text().splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == len(entries) == 3
    for line, entry in zip(epoch_lines, entries):
        assert line.startswith(f"epoch {entry['epoch']}/3: loss={entry['loss']:.4f}"), line
        assert f"recall@20={entry['valid']['recall@20']:.4f}" in line and "ndcg@20=" in line
        assert ("best so far" in line) == bool(entry.get("best"))
    assert lines[-1].startswith(f"finished: best epoch {result.best_epoch} of 3")
    assert f"test recall@20={result.test['recall@20']:.4f}" in lines[-1]


def test_training_progress_is_plain_lines_off_a_terminal(tiny, tmp_path, capsys):
    train(tiny, spec(epochs=2), tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    assert "train vbpr/plain: 2/2 epochs (100%)" in err and "loss=" in err and "recall@20=" in err
    assert "\r" not in err  # no bar redraws in a log


def test_outputs_and_metric_keys(tiny, tmp_path):
    result = train(tiny, spec(epochs=2), tmp_path / "run", progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) >= {"valid", "test", "best_epoch"}
    assert {"recall@20", "ndcg@5", "precision@10", "map@5", "hit@20"} <= set(metrics["test"])
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert {"epoch", "loss", "train_seconds", "eval_seconds"} <= set(lines[0])
    assert result.best_epoch in (1, 2)


def test_pop_is_evaluated_without_training(tiny, tmp_path):
    result = train(tiny, RunSpec("pop", train=TrainConfig(topk=(5, 10, 20))), tmp_path / "pop", progress=False)
    assert result.epochs_run == 0 and result.test["recall@20"] > 0


def test_loaded_checkpoint_reproduces_test_metrics(tiny, tmp_path):
    result = train(tiny, spec(epochs=3), tmp_path / "run", progress=False)
    from robustrec.evaluate import Evaluator

    model = open_run(tmp_path / "run").load_model(tiny)
    assert Evaluator(tiny, "test", (5, 10, 20)).evaluate(model).metrics == result.test


def test_checkpoint_from_another_dataset_is_refused(tiny, tmp_path):
    train(tiny, spec(epochs=1), tmp_path / "run", progress=False)
    other = make_tiny_dataset(seed=1)
    with pytest.raises(DataError, match="trained on dataset"):
        open_run(tmp_path / "run").load_model(other)


def test_corrupt_checkpoint_is_a_clear_error(tiny, tmp_path):
    train(tiny, spec(epochs=1), tmp_path / "run", progress=False)
    (tmp_path / "run" / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="corrupt"):
        open_run(tmp_path / "run").load_model(tiny)


def test_finished_run_is_not_overwritten_silently(tiny, tmp_path):
    train(tiny, spec(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="finished run"):
        train(tiny, spec(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="another configuration"):
        train(tiny, spec(epochs=2), tmp_path / "run", progress=False)
    assert train(tiny, spec(epochs=1), tmp_path / "run", progress=False, overwrite=True) is not None


def test_cuda_request_without_cuda_is_clear(tiny, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    cfg = TrainConfig(device="cuda", topk=(5, 10, 20))
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train(tiny, RunSpec("vbpr", train=cfg), tmp_path / "run", progress=False)


# ---- learning-rate decay (MMRec's learning_rate_scheduler) ---------------------------------------


def test_epoch_learning_rate_is_mmrecs_lambda_schedule():
    from robustrec.training import epoch_learning_rate

    cfg = TrainConfig(lr=1e-3, lr_decay=0.96, lr_decay_epochs=50)
    assert epoch_learning_rate(cfg, 1) == 1e-3  # LambdaLR starts at factor 0.96 ** 0
    assert epoch_learning_rate(cfg, 51) == pytest.approx(1e-3 * 0.96)
    assert epoch_learning_rate(cfg, 26) == pytest.approx(1e-3 * 0.96 ** 0.5)
    assert epoch_learning_rate(TrainConfig(lr=1e-3), 400) == 1e-3  # no decay by default


def test_lr_decay_changes_training_and_resumes_exactly(tiny, tmp_path):
    decayed = RunSpec("vbpr", train=TrainConfig(epochs=4, batch_size=64, seed=3, lr=1e-2, lr_decay=0.01,
                                                lr_decay_epochs=1))
    plain = RunSpec("vbpr", train=TrainConfig(epochs=4, batch_size=64, seed=3, lr=1e-2))
    losses = {}
    for name, run_spec in (("decayed", decayed), ("plain", plain)):
        train(tiny, run_spec, tmp_path / name, progress=False)
        losses[name] = [json.loads(x)["loss"] for x in (tmp_path / name / "log.jsonl").read_text().splitlines()]
    assert losses["decayed"][0] == losses["plain"][0] and losses["decayed"][1:] != losses["plain"][1:]
    assert train(tiny, decayed, tmp_path / "part", progress=False, max_epochs_this_call=2) is None
    train(tiny, decayed, tmp_path / "part", progress=False)
    resumed = [json.loads(x)["loss"] for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert resumed == losses["decayed"]


@pytest.mark.parametrize("bad", [{"lr_decay": 0.0}, {"lr_decay": float("nan")}, {"lr_decay_epochs": 0}])
def test_bad_lr_decay_is_refused(bad):
    with pytest.raises(ConfigError, match="lr_decay"):
        TrainConfig(**bad)
