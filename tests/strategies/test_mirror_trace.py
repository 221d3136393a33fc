"""The mirror trace: each mirror step's losses and directions, hand-checked, and training left unchanged."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from robustrec.cli import main
from robustrec.data.mmrec import write_dataset
from robustrec.data.sampling import BPRSampler
from robustrec.errors import ConfigError
from robustrec.runs import RunSpec, TrainConfig, load_weights, open_run
from robustrec.strategies.mirror import TRACE_KEYS, summarize
from robustrec.training import train

from .strategy_helpers import make, run_epochs


def one_batch(dataset, seed=0):
    return next(iter(BPRSampler(dataset, batch_size=32).epoch(torch.Generator().manual_seed(seed))))


def log_entries(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def spec(model="vbpr", strategy="mirror", trace=True, epochs=2, **params):
    return RunSpec(model, strategy, strategy_params=params,
                   train=TrainConfig(epochs=epochs, patience=50, batch_size=64, seed=3, topk=(5, 20),
                                     mirror_trace=trace))


def test_sgd_step_records_the_papers_quantities(tiny):
    """One traced step against L0, L1, L2 and ||d|| = a lr ||g|| worked out on a copy of the model."""
    lr, a1, a2 = 0.05, 1.0, 0.3
    setup = make(tiny, "mirror", optimizer="sgd", lr=lr, alpha1=a1, alpha2=a2, beta=1, variant="sgd")
    reference = setup.model.copy_with()
    setup.strategy.enable_trace()
    batch = one_batch(tiny)
    setup.strategy.step(batch)
    summary = setup.strategy.epoch_summary()

    params = list(reference.parameters())
    losses, norms = [], []
    for scale in (-a1, a2):
        loss = reference.loss(batch)
        grads = torch.autograd.grad(loss, params)
        losses.append(float(loss.detach()))
        norms.append(abs(scale) * lr * math.sqrt(sum(float(g.double().square().sum()) for g in grads)))
        with torch.no_grad():
            for p, g in zip(params, grads):
                p += scale * lr * g
    losses.append(float(reference.loss(batch).detach()))

    assert summary["steps"] == 1
    assert summary["cos_descent"] == pytest.approx(-1.0, abs=1e-5)
    assert summary["cos_ascent"] == pytest.approx(1.0, abs=1e-5)
    want = {"loss_before": losses[0], "loss_after_descent": losses[1], "loss_after_ascent": losses[2],
            "descent_change": losses[1] - losses[0], "ascent_change": losses[2] - losses[1],
            "ascended": float(losses[2] > losses[1]), "norm_descent": norms[0], "norm_ascent": norms[1]}
    for key, value in want.items():
        assert summary[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key
    assert setup.strategy.epoch_summary() is None  # the summary resets the epoch's record


@pytest.mark.parametrize("variant", ["official", "sgd"])
def test_plain_sgd_descends_and_ascends_along_the_gradient(tiny, variant):
    """Under plain SGD both variants take -g and +g moves: cosines -1 and +1 on every step."""
    setup = make(tiny, "mirror", optimizer="sgd", lr=0.05, beta=2, variant=variant)
    setup.strategy.enable_trace()
    losses = run_epochs(setup, tiny, [1], 1)
    summary = setup.strategy.epoch_summary()
    assert summary["steps"] == len(losses) // 2
    assert summary["cos_descent"] == pytest.approx(-1.0, abs=1e-5)
    assert summary["cos_ascent"] == pytest.approx(1.0, abs=1e-5)
    assert summary["norm_ascent"] < summary["norm_descent"]  # a2 < a1, similar gradients


@pytest.mark.parametrize("strategy", ["mirror", "amr+mirror"])
def test_official_under_adam_records_finite_values(tiny, strategy):
    setup = make(tiny, strategy, optimizer="adam", beta=3)
    setup.strategy.enable_trace()
    losses = run_epochs(setup, tiny, [1], 1)
    summary = setup.strategy.epoch_summary()
    assert set(summary) == {"steps", *TRACE_KEYS}
    assert summary["steps"] == len(losses) // 3 > 0
    assert all(isinstance(summary[k], float) and math.isfinite(summary[k]) for k in TRACE_KEYS)
    assert 0.0 <= summary["ascended"] <= 1.0
    assert -1.0 <= summary["cos_descent"] < 0.0  # Adam's step still goes downhill
    assert summary["descent_change"] == pytest.approx(summary["loss_after_descent"] - summary["loss_before"])


def test_nothing_is_recorded_without_trace_or_mirror_steps(tiny):
    untraced = make(tiny, "mirror", beta=1)
    run_epochs(untraced, tiny, [1], 1)
    assert untraced.strategy.epoch_summary() is None
    plain = make(tiny, "plain")
    plain.strategy.enable_trace()
    run_epochs(plain, tiny, [1], 1)
    assert plain.strategy.epoch_summary() is None
    rare = make(tiny, "mirror", beta=10_000)  # no mirror step in the epoch: no summary
    rare.strategy.enable_trace()
    run_epochs(rare, tiny, [1], 1)
    assert rare.strategy.epoch_summary() is None


def test_summary_means_by_hand():
    steps = [
        {"loss_before": 1.0, "loss_after_descent": 0.5, "loss_after_ascent": 0.75, "descent_change": -0.5,
         "ascent_change": 0.25, "ascended": 1.0, "cos_descent": -1.0, "cos_ascent": None,
         "norm_descent": 2.0, "norm_ascent": 1.0},
        {"loss_before": 2.0, "loss_after_descent": 1.5, "loss_after_ascent": 1.0, "descent_change": -0.5,
         "ascent_change": -0.5, "ascended": 0.0, "cos_descent": -0.5, "cos_ascent": None,
         "norm_descent": 4.0, "norm_ascent": math.inf},
    ]
    assert summarize(steps) == {
        "steps": 2, "loss_before": 1.5, "loss_after_descent": 1.0, "loss_after_ascent": 0.875,
        "descent_change": -0.5, "ascent_change": -0.125, "ascended": 0.5, "cos_descent": -0.75,
        "cos_ascent": None, "norm_descent": 3.0, "norm_ascent": None,  # no value / not finite: null
    }


@pytest.mark.parametrize(("model", "strategy"), [("bm3", "mirror"), ("vbpr", "amr+mirror")])
def test_tracing_leaves_training_bit_identical(tiny, tmp_path, model, strategy):
    """BM3 draws dropout masks from the model's generator in its loss: the extra pass must not."""
    runs = {trace: train(tiny, spec(model, strategy, trace, beta=1), tmp_path / str(trace), progress=False)
            for trace in (False, True)}
    plain, traced = load_weights(runs[False].path / "model.safetensors")[0], load_weights(
        runs[True].path / "model.safetensors")[0]
    assert plain.keys() == traced.keys() and all(torch.equal(plain[k], traced[k]) for k in plain)
    assert runs[False].test == runs[True].test
    logs = {trace: log_entries(runs[trace].path) for trace in runs}
    assert [e["loss"] for e in logs[False]] == [e["loss"] for e in logs[True]]
    assert all("mirror" not in e for e in logs[False]) and all(e["mirror"]["steps"] > 0 for e in logs[True])


def test_log_has_no_mirror_key_for_plain_runs(tiny, tmp_path):
    result = train(tiny, spec(strategy="plain", trace=True), tmp_path / "plain", progress=False)
    assert all("mirror" not in entry for entry in log_entries(result.path))
    assert "mirror" not in (result.path / "train.log").read_text()


def test_traced_run_resumes_with_the_same_log(tiny, tmp_path):
    full = train(tiny, spec(epochs=3), tmp_path / "full", progress=False)
    assert train(tiny, spec(epochs=3), tmp_path / "part", progress=False, max_epochs_this_call=1) is None
    resumed = train(tiny, spec(epochs=3), tmp_path / "part", progress=False)
    strip = [{k: v for k, v in e.items() if not k.endswith("_seconds")} for e in log_entries(full.path)]
    again = [{k: v for k, v in e.items() if not k.endswith("_seconds")} for e in log_entries(resumed.path)]
    assert strip == again and all("mirror" in e for e in again)


def test_trace_setting_keeps_old_hashes_and_is_checked():
    untraced = RunSpec("vbpr", train=TrainConfig(seed=3))
    data = untraced.to_json()
    for later in ("device", "threads", "lr_decay", "lr_decay_epochs", "mirror_trace"):
        data["train"].pop(later)
    assert untraced.config_hash() == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    traced = RunSpec("vbpr", train=TrainConfig(seed=3, mirror_trace=True))
    assert traced.config_hash() != untraced.config_hash()
    assert RunSpec.from_json(traced.to_json()) == traced
    with pytest.raises(ConfigError, match="mirror_trace"):
        TrainConfig(mirror_trace="yes")


@pytest.fixture(scope="module")
def data_dir(tiny, tmp_path_factory):
    pairs = torch.cat([torch.as_tensor(tiny.train), torch.as_tensor(tiny.valid), torch.as_tensor(tiny.test)]).numpy()
    labels = [0] * len(tiny.train) + [1] * len(tiny.valid) + [2] * len(tiny.test)
    feats = {"image": tiny.features.image.numpy(), "text": tiny.features.text.numpy()}
    return write_dataset(tmp_path_factory.mktemp("trace-cli") / "tiny", pairs, labels, feats)


def test_cli_flag_reaches_the_run(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(data_dir), "--model", "vbpr", "--strategy", "mirror", "--mirror-trace",
                 "--epochs", "2", "--batch-size", "64", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert open_run(out).spec.train.mirror_trace is True
    assert all(entry["mirror"]["steps"] > 0 for entry in log_entries(out))
    epoch_lines = [line for line in (out / "train.log").read_text().splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("; mirror " in line and " cos " in line for line in epoch_lines)


def test_cli_refuses_the_flag_without_a_mirror_strategy(data_dir, tmp_path, capsys):
    code = main(["train", "--data", str(data_dir), "--model", "vbpr", "--strategy", "amr", "--mirror-trace",
                 "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--mirror-trace" in err and "amr+mirror" in err
    assert not (tmp_path / "run").exists()
