"""Exactness and safety of training runs: determinism at any thread count, validation before anything
is written, recovery after kill -9, untrusted resume states and non-finite weights."""

from __future__ import annotations

import hashlib
import json
import math
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from robustrec import numerics
from robustrec.cli import main
from robustrec.devices import resolve_device
from robustrec.errors import ConfigError, DataError
from robustrec.evaluate import Evaluator
from robustrec.numerics import default_threads
from robustrec.runs import RunSpec, TrainConfig, open_run
from robustrec.training import train
from tests.conftest import make_tiny_dataset

TOPK = (5, 10, 20)


@pytest.fixture(scope="module")
def mid():
    """Large enough that a batch's gradients exceed torch's parallel grain (32,768 entries), where the
    multi-threaded kernels, and their float atomics, take over."""
    return make_tiny_dataset(n_users=400, n_items=120, seed=5)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """The tiny dataset as an MMRec folder, for the CLI."""
    from robustrec.data.mmrec import write_dataset

    ds = make_tiny_dataset()
    pairs = np.concatenate([ds.train, ds.valid, ds.test])
    labels = np.repeat([0, 1, 2], [len(ds.train), len(ds.valid), len(ds.test)])
    feats = {"image": ds.features.image.numpy(), "text": ds.features.text.numpy()}
    return write_dataset(tmp_path_factory.mktemp("trust") / "tiny", pairs, labels, feats)


def cli(argv, capsys) -> tuple[int, str]:
    """Exit status and stderr of the CLI run in-process (argparse's own errors exit via SystemExit)."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def one_line(err: str) -> bool:
    """One error line (after argparse's usage lines, if any) and no traceback."""
    lines = [x for x in err.strip().splitlines() if not x.startswith(("usage:", " "))]
    return len(lines) == 1 and "error" in lines[0] and "Traceback" not in err


def weights_digest(run) -> str:
    tensors = load_file(str(run / "model.safetensors"))
    return hashlib.sha256(b"".join(tensors[k].numpy().tobytes() for k in sorted(tensors))).hexdigest()


def mid_spec(model, threads, epochs=2, **train_kw):
    return RunSpec(model, train=TrainConfig(epochs=epochs, patience=50, batch_size=2048, seed=7, topk=TOPK,
                                            threads=threads, **train_kw))


# ---- 1. determinism --------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["mmgcn", "bm3"])
def test_same_seed_same_numbers_at_two_threads(mid, tmp_path, model):
    """Three trainings at two threads: identical weights and metrics (MMGCN differed run to run before
    torch's deterministic kernels were switched on)."""
    results = [train(mid, mid_spec(model, threads=2), tmp_path / str(i), progress=False) for i in range(3)]
    assert len({weights_digest(tmp_path / str(i)) for i in range(3)}) == 1
    assert results[0].test == results[1].test == results[2].test


@pytest.mark.skipif(numerics.mkl_cbwr() != "strict", reason="needs MKL in strict reproducibility mode")
@pytest.mark.parametrize("model", ["vbpr", "mmgcn"])
def test_same_numbers_at_one_and_two_threads(tmp_path, model):
    """With MKL's strict reproducibility the thread count no longer changes matrix products (VBPR at
    2 threads differed from 1 thread before). Features wide enough for MKL to split the products."""
    data = make_tiny_dataset(n_users=400, n_items=120, seed=5)
    rng = np.random.default_rng(0)
    wide = data.features.replace(image=torch.tensor(rng.normal(size=(120, 2048)), dtype=torch.float32))
    data = data.with_features(wide)
    for threads in (1, 2):
        train(data, mid_spec(model, threads=threads), tmp_path / str(threads), progress=False)
    assert weights_digest(tmp_path / "1") == weights_digest(tmp_path / "2")


def test_training_restores_the_callers_torch_settings(tiny, tmp_path):
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train(tiny, mid_spec("vbpr", threads=2, epochs=1), tmp_path / "run", progress=False)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_thread_count_is_recorded_and_part_of_the_identity(tiny, tmp_path):
    train(tiny, mid_spec("vbpr", threads=None, epochs=1), tmp_path / "run", progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    # no thread count: robustrec's default (1, or $ROBUSTREC_THREADS), as on the command line
    assert info["spec"]["train"]["threads"] == default_threads()
    assert info["provenance"]["numerics"]["threads"] == default_threads()
    assert info["provenance"]["numerics"]["deterministic_kernels"] is True
    one, two = mid_spec("vbpr", threads=1), mid_spec("vbpr", threads=2)
    assert one.config_hash() != two.config_hash()
    assert info["config_hash"] == mid_spec("vbpr", threads=default_threads(), epochs=1).config_hash()


def test_spec_without_thread_count_keeps_its_old_hash():
    """Run folders written before the thread count and the learning-rate decay were recorded keep
    their configuration hash; a decay that is on changes it."""
    spec = RunSpec("vbpr", train=TrainConfig(seed=3))
    data = spec.to_json()
    for later in ("device", "threads", "lr_decay", "lr_decay_epochs", "mirror_trace"):
        data["train"].pop(later)
    old = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    assert spec.config_hash() == old
    decayed = RunSpec("vbpr", train=TrainConfig(seed=3, lr_decay=0.96))
    assert decayed.config_hash() != old
    assert RunSpec.from_json(decayed.to_json()).config_hash() == decayed.config_hash()


def test_resume_refuses_another_thread_count(tiny, tmp_path):
    assert train(tiny, mid_spec("vbpr", threads=1, epochs=3), tmp_path / "run", progress=False,
                 max_epochs_this_call=1) is None
    with pytest.raises(ConfigError, match="trained with 1 threads.*--threads 1"):
        train(tiny, mid_spec("vbpr", threads=2, epochs=3), tmp_path / "run", progress=False)
    assert train(tiny, mid_spec("vbpr", threads=1, epochs=3), tmp_path / "run", progress=False) is not None


# ---- 15. early stopping as MMRec -------------------------------------------------------------------
@pytest.mark.parametrize("patience,every", [(2, 1), (0, 1), (1, 2)])
def test_early_stopping_after_patience_plus_one_evaluations(tiny, tmp_path, patience, every):
    """MMRec stops when cur_step > stopping_step: with patience P the run ends at the (P + 1)-th
    evaluation without a gain (lr so small that nothing improves after the first evaluation)."""
    cfg = TrainConfig(epochs=200, patience=patience, batch_size=64, lr=1e-12, topk=TOPK, eval_every=every)
    result = train(tiny, RunSpec("vbpr", train=cfg), tmp_path / "run", progress=False)
    assert result.stopped_early and result.best_epoch == every
    assert result.epochs_run - result.best_epoch == (patience + 1) * every


# ---- 5. a rejected option leaves nothing behind ---------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["--lr", "-1"],
        ["--lr", "nan"],
        ["--weight-decay", "nan"],
        ["--weight-decay", "inf"],
        ["--momentum", "0.5"],  # momentum does not apply to adam: refused by the optimizer factory
        ["--device", "foo"],
        ["--topk", "5,10,100000"],
        ["--strategy", "nosuch"],
        ["--param", "nosuch=1"],
    ],
)
def test_rejected_option_leaves_no_folder(tiny_folder, tmp_path, capsys, args):
    out = tmp_path / "R"
    code, err = cli(["train", "--data", str(tiny_folder), "--model", "vbpr", "--epochs", "1", "--out", str(out),
                     "--no-progress", *args], capsys)
    assert code == 2 and one_line(err), err
    assert not out.exists()
    # the corrected call then trains (no "holds a run with another configuration")
    assert main(["train", "--data", str(tiny_folder), "--model", "vbpr", "--epochs", "1", "--out", str(out),
                 "--no-progress"]) == 0


def test_seeds_into_an_existing_file_is_refused(tiny_folder, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    code, err = cli(["train", "--data", str(tiny_folder), "--model", "vbpr", "--epochs", "1", "--seeds", "1,2",
                     "--out", str(out), "--no-progress"], capsys)
    assert code == 2 and "not a folder" in err and one_line(err)
    assert out.read_text() == "x"


def test_seeds_are_all_checked_before_training(tiny_folder, tmp_path):
    """A second seed whose folder holds another run is refused before the first seed trains."""
    other = tmp_path / "runs" / "seed-2"
    assert main(["train", "--data", str(tiny_folder), "--model", "vbpr", "--epochs", "2", "--seed", "2",
                 "--out", str(other), "--no-progress"]) == 0
    code = main(["train", "--data", str(tiny_folder), "--model", "vbpr", "--epochs", "1", "--seeds", "1,2",
                 "--out", str(tmp_path / "runs"), "--no-progress"])
    assert code == 2 and not (tmp_path / "runs" / "seed-1").exists()


@pytest.mark.parametrize("bad", [{"lr": math.nan}, {"lr": math.inf}, {"weight_decay": math.nan},
                                 {"momentum": -1.0}, {"epochs": 2.5}, {"seed": "1"}, {"threads": 0},
                                 {"topk": ("5",)}, {"patience": -1}, {"lr": True}])
def test_train_config_refuses_bad_values(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


@pytest.mark.parametrize("device", ["foo", "cuda:x", "meta", "cpu:0:1", 3])
def test_unknown_device_is_a_config_error(device):
    with pytest.raises(ConfigError):
        resolve_device(device)


# ---- 6. kill -9: stale temporaries and a log that lost an epoch -----------------------------------
def test_resume_after_kill_cleans_temporaries_and_rewrites_the_log(tiny, tmp_path):
    spec = mid_spec("vbpr", threads=1, epochs=4)
    full = train(tiny, spec, tmp_path / "full", progress=False)
    part = tmp_path / "part"
    assert train(tiny, spec, part, progress=False, max_epochs_this_call=2) is None
    # what kill -9 leaves: half-written temporaries of the atomic writes, and a log one epoch short
    # (killed after state.pt was renamed, before log.jsonl was rewritten)
    (part / ".state.pt.k1ll3d.tmp").write_bytes(b"\0" * 4096)
    (part / ".model.safetensors.abcd1234.tmp").write_bytes(b"\0" * 100)
    lines = (part / "log.jsonl").read_text().splitlines()
    (part / "log.jsonl").write_text(lines[0] + "\n")
    (part / "notes.txt").write_text("the user's own file stays")

    resumed = train(tiny, spec, part, progress=False)
    assert resumed.test == full.test
    assert not list(part.glob(".*.tmp"))
    assert (part / "notes.txt").exists()
    epochs = [json.loads(x) for x in (part / "log.jsonl").read_text().splitlines()]
    expected = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert [e["loss"] for e in epochs] == [e["loss"] for e in expected]


def test_log_is_rewritten_from_the_state_at_resume(tiny, tmp_path):
    """Killed after log.jsonl was written but while the state of the next epoch was not yet renamed:
    the log has an epoch the state has not; on resume it is rewritten from the state at once."""
    spec = mid_spec("vbpr", threads=1, epochs=6)
    part = tmp_path / "part"
    train(tiny, spec, part, progress=False, max_epochs_this_call=2)
    lines = (part / "log.jsonl").read_text().splitlines()
    ghost = dict(json.loads(lines[-1]), epoch=3, loss=123.0)
    (part / "log.jsonl").write_text("\n".join([*lines, json.dumps(ghost)]) + "\n")
    train(tiny, spec, part, progress=False, max_epochs_this_call=1)
    epochs = [json.loads(x) for x in (part / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and epochs[-1]["loss"] != 123.0


# ---- 4. untrusted resume states --------------------------------------------------------------------
class _Payload:
    """Unpickling this would create a file: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("kind", ["garbage", "pickle-with-code", "wrong-structure", "empty"])
def test_invalid_state_is_a_clear_error(tiny, tmp_path, kind):
    spec = mid_spec("vbpr", threads=1, epochs=3)
    run = tmp_path / "run"
    train(tiny, spec, run, progress=False, max_epochs_this_call=1)
    marker = tmp_path / "executed"
    if kind == "garbage":
        (run / "state.pt").write_bytes(b"PK\x03\x04 definitely not a zip")
    elif kind == "pickle-with-code":
        torch.save({"model": _Payload(marker)}, run / "state.pt")
    elif kind == "wrong-structure":
        torch.save({"model": {"user_embedding": torch.zeros(2, 2)}}, run / "state.pt")
    else:
        (run / "state.pt").write_bytes(b"")
    with pytest.raises(DataError, match="not a valid resume state") as info:
        train(tiny, spec, run, progress=False)
    assert "weights_only" not in str(info.value)
    assert not marker.exists()


def test_invalid_state_via_cli_is_one_line(tiny_folder, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(tiny_folder), "--model", "vbpr", "--epochs", "3", "--out", str(run),
            "--no-progress"]
    assert main([*argv, "--epochs", "1"]) == 0  # a finished 1-epoch run cannot be resumed: start over
    (run / "metrics.json").unlink()
    (run / "state.pt").write_bytes(pickle.dumps(_Payload(tmp_path / "executed"), protocol=2))
    code, err = cli(["train", "--data", str(tiny_folder), "--model", "vbpr", "--epochs", "1", "--out", str(run),
                     "--no-progress"], capsys)
    assert code == 2 and one_line(err) and "weights_only" not in err
    assert not (tmp_path / "executed").exists()


# ---- 3. non-finite weights and scores --------------------------------------------------------------
def test_nan_weights_are_refused(tiny, tmp_path):
    train(tiny, mid_spec("vbpr", threads=1, epochs=1), tmp_path / "run", progress=False)
    path = tmp_path / "run" / "model.safetensors"
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(path), metadata={"dataset_fingerprint": tiny.fingerprint})
    with pytest.raises(DataError, match="NaN or infinite"):
        open_run(tmp_path / "run").load_model(tiny)


def test_nan_weights_evaluate_is_exit_2(tiny_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_folder), "--model", "vbpr", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0
    path = run / "model.safetensors"
    tensors = {k: torch.full_like(v, float("nan")) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path))
    code, err = cli(["evaluate", str(run)], capsys)
    assert code == 2 and "NaN" in err and one_line(err)
    assert not (run / "evaluation.json").exists()


class _NaNScores(torch.nn.Module):
    def __init__(self, n_items, bad_row):
        super().__init__()
        self.n_items, self.bad_row = n_items, bad_row

    def scorer(self):
        def score(users):
            scores = torch.arange(self.n_items, dtype=torch.float32).repeat(len(users), 1)
            scores[users == self.bad_row, self.n_items // 2] = float("nan")
            return scores

        return score


def test_evaluator_refuses_nan_scores(tiny):
    evaluator = Evaluator(tiny, "test", TOPK)
    assert evaluator.evaluate(_NaNScores(tiny.n_items, bad_row=-1)).metrics["recall@5"] >= 0
    with pytest.raises(DataError, match="NaN or infinite"):
        evaluator.evaluate(_NaNScores(tiny.n_items, bad_row=int(evaluator.users[3])))


# ---- run.json from elsewhere -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    [
        lambda info: info["dataset"].update(path=1.5),  # TypeError in the dataset loader before
        lambda info: info["dataset"].pop("name"),  # KeyError when the fingerprint did not match
        lambda info: info["dataset"].update(fingerprint=None),
        lambda info: info.update(spec=[]),
        lambda info: info["spec"].update(model=["vbpr"]),
        lambda info: info["spec"]["train"].update(lr="0.1"),
        lambda info: info["spec"]["train"].update(nosuch=1),
        lambda info: info["spec"].update(model_params="x"),
    ],
)
def test_malformed_run_file_is_a_data_error(tiny, tmp_path, change):
    run = tmp_path / "run"
    train(tiny, mid_spec("vbpr", threads=1, epochs=1), run, progress=False)
    info = json.loads((run / "run.json").read_text())
    change(info)
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="run.json"):
        open_run(run)


def test_a_model_too_large_for_memory_is_a_config_error(tiny):
    """torch reports a failed allocation as a RuntimeError: a traceback before."""
    from robustrec.models import build_model

    with pytest.raises(ConfigError, match="not enough memory"):
        build_model("vbpr", tiny, embedding_size=10**11)


def test_kill_9_then_resume_equals_uninterrupted(tiny_folder, tmp_path):
    """A real SIGKILL at whatever moment the training has reached, then a resume: the same final
    metrics and log as an uninterrupted run, and no temporaries left in the folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from robustrec.data import open_dataset

    run = tmp_path / "killed"
    argv = [sys.executable, "-c", "import sys; from robustrec.cli import main; sys.exit(main())", "--threads", "1",
            "train", "--data", str(tiny_folder),
            "--model", "bm3", "--epochs", "60", "--patience", "100", "--batch-size", "64", "--out", str(run),
            "--no-progress"]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (run / "state.pt").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # somewhere in the middle of an epoch, or of a write
    assert child.poll() is None, child.stderr.read().decode()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (run / "metrics.json").exists(), "the training ended before the kill; make it longer"

    dataset = open_dataset(tiny_folder)
    spec = RunSpec("bm3", train=TrainConfig(epochs=60, patience=100, batch_size=64, threads=1))
    resumed = train(dataset, spec, run, progress=False)
    full = train(dataset, spec, tmp_path / "full", progress=False)
    assert resumed.test == full.test and resumed.best_epoch == full.best_epoch
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    losses = [[json.loads(x)["loss"] for x in (d / "log.jsonl").read_text().splitlines()] for d in (run, tmp_path / "full")]
    assert losses[0] == losses[1] and len(losses[0]) == 60
