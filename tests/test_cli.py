"""The CLI in-process: contract names, one-line errors with exit status 2, nothing half-written."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from robustrec.cli import COMMANDS, build_parser, main
from robustrec.data.mmrec import write_dataset
from tests.conftest import make_tiny_dataset


def write_tiny(folder, **overrides):
    ds = make_tiny_dataset()
    pairs = np.concatenate([ds.train, ds.valid, ds.test])
    labels = np.repeat([0, 1, 2], [len(ds.train), len(ds.valid), len(ds.test)])
    feats = {"image": ds.features.image.numpy(), "text": ds.features.text.numpy()}
    feats.update(overrides)
    return write_dataset(folder, pairs, labels, feats)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("cli") / "tiny")


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vbpr"
    code = main(["train", "--data", str(data_dir), "--model", "vbpr", "--strategy", "mirror", "--alpha1", "1.0",
                 "--alpha2", "0.2", "--beta", "3", "--epochs", "3", "--batch-size", "64", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    return out


def one_line_error(capsys, argv, match):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert match in err, err
    return err


@pytest.mark.parametrize("command", COMMANDS)
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    assert command in capsys.readouterr().out


def test_train_writes_the_contract(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"valid", "test", "best_epoch"} <= set(metrics)
    assert "recall@20" in metrics["test"] and "ndcg@5" in metrics["test"]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert {"epoch", "loss", "train_seconds", "eval_seconds"} <= set(log[0])
    assert (run_dir / "model.safetensors").is_file()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["spec"]["strategy_params"] == {"alpha1": 1.0, "alpha2": 0.2, "beta": 3}


def test_evaluate_reproduces_the_test_metrics(run_dir, capsys):
    assert main(["evaluate", str(run_dir)]) == 0
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert saved["test"] == json.loads((run_dir / "metrics.json").read_text())["test"]


def test_seeds_write_one_run_per_seed(data_dir, tmp_path):
    out = tmp_path / "seeds"
    assert main(["train", "--data", str(data_dir), "--model", "pop", "--seeds", "1,2", "--out", str(out),
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed-1", "seed-2"]


def test_model_param_is_typed(data_dir, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", str(data_dir), "--model", "vbpr", "--param", "embedding_size=8",
                 "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "run.json").read_text())["spec"]["model_params"] == {"embedding_size": 8}
    one_line_error(capsys, ["train", "--data", str(data_dir), "--model", "vbpr", "--param", "knn_k=3",
                            "--out", str(tmp_path / "x")], "no parameter 'knn_k'")


def test_unknown_names_list_the_valid_ones(data_dir, tmp_path, capsys):
    err = one_line_error(capsys, ["train", "--data", str(data_dir), "--model", "nope", "--out", str(tmp_path / "a")],
                         "unknown model 'nope'")
    assert "vbpr" in err and "freedom" in err
    err = one_line_error(capsys, ["train", "--data", str(data_dir), "--model", "vbpr", "--strategy", "magic",
                                  "--out", str(tmp_path / "b")], "unknown strategy 'magic'")
    assert "mirror" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_alpha1_not_above_alpha2(data_dir, tmp_path, capsys):
    one_line_error(capsys, ["train", "--data", str(data_dir), "--model", "vbpr", "--strategy", "mirror",
                            "--alpha1", "0.2", "--alpha2", "0.5", "--out", str(tmp_path / "r")], "alpha1 > alpha2")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "breakage, match",
    [
        ("missing", "does not exist"),
        ("malformed", "expected 3 tab-separated fields"),
        ("not_int", "must be integers"),
        ("label", "x_label must be 0, 1 or 2"),
        ("out_of_range", "out of range"),
        ("rows", "disagree on the item count"),
        ("nan", "NaN or inf"),
    ],
)
def test_bad_datasets(tmp_path, capsys, breakage, match):
    folder = tmp_path / "ds"
    if breakage == "rows":
        write_tiny(folder, text=np.zeros((7, 8), dtype=np.float32))
    elif breakage == "nan":
        image = make_tiny_dataset().features.image.numpy().copy()
        image[3, 2] = np.nan
        write_tiny(folder, image=image)
    elif breakage != "missing":
        write_tiny(folder)
        inter = folder / "ds.inter"
        lines = inter.read_text().splitlines()
        lines[5] = {
            "malformed": "1\t2",
            "not_int": "1\tx\t0",
            "label": "1\t2\t7",
            "out_of_range": "1\t999\t0",
        }[breakage]
        inter.write_text("\n".join(lines) + "\n")
    one_line_error(capsys, ["train", "--data", str(folder), "--model", "vbpr", "--out", str(tmp_path / "run"),
                            "--no-progress"], match)
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_and_foreign_dataset(run_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 40)
    one_line_error(capsys, ["evaluate", str(broken)], "corrupt")
    other = write_tiny(tmp_path / "other", text=np.ones((30, 8), dtype=np.float32))
    one_line_error(capsys, ["evaluate", str(run_dir), "--data", str(other)], "was trained on dataset")
    one_line_error(capsys, ["evaluate", str(tmp_path)], "not a robustrec run folder")


def test_audit_noise_and_bad_input(run_dir, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["audit", str(run_dir), "--suite", "noise", "--sigma2", "0,1e-2", "--repeats", "2",
                 "--out", str(out), "--no-progress"]) == 0
    (records,) = out.glob("*.jsonl")
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(rows) == 1 + 2 * 2
    clean = rows[0]["metrics"]
    zero = [r for r in rows if r["severity"] == 0.0 and r["repeat"] >= 0]
    assert all(r["metrics"] == clean for r in zero)  # sigma^2 = 0 is exactly the clean model
    assert rows[0]["provenance"]["robustrec_version"] and rows[0]["dataset_fingerprint"]
    for argv, match in [
        (["--suite", "noise", "--sigma2", "-1"], ">= 0"),
        (["--suite", "caption", "--prob", "1.5"], "[0, 1]"),
        (["--suite", "noise", "--repeats", "0"], "repeats must be >= 1"),
        (["--suite", "caption", "--captioner", "file", "--captions", str(tmp_path / "none.csv")], "none.csv"),
    ]:
        one_line_error(capsys, ["audit", str(run_dir), "--out", str(tmp_path / "bad"), *argv], match)
    one_line_error(capsys, ["audit", str(tmp_path), "--suite", "noise", "--out", str(tmp_path / "bad")],
                   "not a robustrec run folder")
    assert not (tmp_path / "bad").exists()


def test_audit_caption_with_a_captions_file(tmp_path, capsys):
    from robustrec.data import load_dataset
    from robustrec.data.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "shop", n_users=50, n_items=30, seed=2, text_encoder="hashing",
                          image_encoder="pixels", cache_dir=tmp_path / "cache")
    items = load_dataset(data).items
    captions = tmp_path / "captions.csv"
    captions.write_text("item_id,caption\n" + "".join(f"{it.orig_id},a photo of thing {n}\n"
                                                       for n, it in enumerate(items)))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "vbpr", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0
    out = tmp_path / "audit"
    assert main(["audit", str(run), "--suite", "caption", "--captioner", "file", "--captions",
                 str(captions), "--prob", "0,1", "--repeats", "2", "--out", str(out), "--no-progress"]) == 0
    (path,) = out.glob("*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    clean = rows[0]["metrics"]
    assert all(r["metrics"] == clean for r in rows if r["severity"] == 0.0)
    full = [r for r in rows if r["severity"] == 1.0]
    with_image = sum(it.image is not None for it in items)
    assert all(r["details"]["changed_items"] == with_image for r in full)
    capsys.readouterr()  # the progress lines of building the shop
    one_line_error(capsys, ["audit", str(run), "--suite", "caption", "--captioner", "nope",
                            "--out", str(tmp_path / "x")], "unknown captioner 'nope'")
    one_line_error(capsys, ["audit", str(run), "--suite", "text-noise", "--out", str(tmp_path / "x"),
                            "--data", str(tmp_path)], "no .inter file")


# -- every bad input a clear error ---------------------------------------------------------
def parse_error(capsys, argv, match):
    """argparse refuses ``argv``: exit status 2 and ``match`` in its message (usage + one error line)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err and match in err, err


def audit_argv(run_dir, out, *extra):
    repeats = [] if "--repeats" in extra else ["--repeats", "1"]
    return ["audit", str(run_dir), *repeats, "--out", str(out), "--no-progress", *extra]


@pytest.mark.parametrize("flags", [
    ["--suite", "noise", "--sigma2", "inf"],
    ["--suite", "noise", "--sigma2", "1e-4,nan"],
    ["--suite", "noise", "--noise-scale", "relative", "--scale", "Infinity"],
    ["--suite", "caption", "--prob", "nan"],
])
def test_float_options_refuse_nan_and_inf(run_dir, tmp_path, capsys, flags):
    """``--sigma2 inf`` used to run, write non-standard ``Infinity`` records and report an 83% drop."""
    parse_error(capsys, audit_argv(run_dir, tmp_path / "out", *flags), "expected a finite number")
    assert not (tmp_path / "out").exists()


def test_integer_options_refuse_what_torch_cannot_hold(run_dir, tmp_path, capsys):
    one_line_error(capsys, audit_argv(run_dir, tmp_path / "out", "--suite", "noise", "--suite-param",
                                      "item_ids=" + "9" * 30), "out of range")
    one_line_error(capsys, audit_argv(run_dir, tmp_path / "out", "--suite", "noise", "--perturbation-seed", "9" * 30),
                   "perturbation seed 999999999999999999999999999999 with 1 repeats is out of range")
    one_line_error(capsys, audit_argv(run_dir, tmp_path / "out", "--suite", "noise", "--perturbation-seed", "0",
                                      "--repeats", "9" * 30), "out of range")
    one_line_error(capsys, audit_argv(run_dir, tmp_path / "out", "--suite", "noise", "--suite-param",
                                      "item_ids=1,10000"), "item id 10000 is out of range")
    assert not (tmp_path / "out").exists()


def test_an_unknown_device_is_a_parse_error(run_dir, tmp_path, capsys):
    parse_error(capsys, ["evaluate", str(run_dir), "--device", "nope"], "unknown device 'nope'")
    parse_error(capsys, audit_argv(run_dir, tmp_path / "out", "--suite", "noise", "--device", "gpu:x"),
                "unknown device")


def test_noise_that_overflows_the_weights_is_refused(run_dir, tmp_path, capsys):
    """sigma^2 = 1e80 is finite, but sigma = 1e40 is beyond float32: the weights (and scores) would be
    inf / NaN and every metric made up."""
    one_line_error(capsys, audit_argv(run_dir, tmp_path / "out", "--suite", "noise", "--sigma2", "1e80"),
                   "overflows item_embedding")
    assert not list(tmp_path.rglob("*.jsonl"))


def test_audit_out_is_checked_before_any_work(run_dir, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("a run was opened before --out was checked")

    monkeypatch.setattr(importlib.import_module("perturbations.audit"), "open_run", no_work)
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, audit_argv(run_dir, tmp_path / "file", "--suite", "noise"),
                   "--out " + str(tmp_path / "file") + " exists and is not a folder")
    one_line_error(capsys, audit_argv(run_dir, tmp_path / "file" / "sub", "--suite", "noise"), "is not a folder")
    one_line_error(capsys, audit_argv(run_dir, "/proc/robustrec-audit", "--suite", "noise"), "cannot write in /proc")
    one_line_error(capsys, audit_argv(run_dir, tmp_path / "out", "--suite", "caption", "--caption-cache",
                                      str(tmp_path / "file")), "--caption-cache")
    assert (tmp_path / "file").read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_demo_checks_everything_before_training(tmp_path, capsys, monkeypatch):
    import robustrec.training

    def no_training(*args, **kwargs):
        raise AssertionError("the demo trained before checking its options")

    monkeypatch.setattr(robustrec.training, "train", no_training)
    (tmp_path / "file").write_text("x")
    out = str(tmp_path / "demo")
    for argv, match in [
        (["--out", str(tmp_path / "file")], "exists and is not a folder"),
        (["--out", out, "--captioner", "file"], "the demo has no captions file"),
        (["--out", out, "--captioner", "nope"], "unknown captioner 'nope'"),
        (["--out", out, "--metric", "recall@7"], "the demo's runs measure k = 5, 10, 20"),
        (["--out", out, "--metric", "recall"], "unknown metric"),
        (["--out", out, "--prob", "1.5"], "must be in [0, 1], got 1.5"),
        (["--out", out, "--sigma2", "-1"], "must be >= 0"),
        (["--out", out, "--patience", "-1"], "patience"),
        (["--out", out, "--seeds", "1,1"], "--seeds must be distinct"),
    ]:
        one_line_error(capsys, ["demo", "--no-progress", *argv], match)
    parse_error(capsys, ["demo", "--out", out, "--scale", "nan"], "expected a finite number")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("exc, match", [
    (PermissionError(13, "Permission denied", "/data/x.jsonl"), "Permission denied: '/data/x.jsonl'"),
    (OSError(28, "No space left on device"), "No space left on device"),
    (MemoryError(), "out of memory"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
])
def test_the_users_environment_is_one_line_not_a_traceback(capsys, monkeypatch, exc, match):
    import robustrec.cli.report

    def fails(args):
        raise exc

    monkeypatch.setattr(robustrec.cli.report, "run", fails)
    err = one_line_error(capsys, ["report", "anything"], match)
    assert err.startswith("robustrec report: error: ")


def test_programming_errors_keep_their_traceback(monkeypatch):
    import robustrec.cli.report

    def fails(args):
        raise ValueError("a bug")

    monkeypatch.setattr(robustrec.cli.report, "run", fails)
    with pytest.raises(ValueError, match="a bug"):
        main(["report", "anything"])


@pytest.mark.parametrize("value, match", [("x", "must be an integer, got 'x'"), ("0", "must be between 1 and 1024"),
                                          ("99999999999", "must be between 1 and 1024")])
def test_a_bad_threads_environment_variable_is_one_line(tmp_path, capsys, monkeypatch, value, match):
    """It used to be read with int() while the parser was built: a traceback, even for --help."""
    monkeypatch.setenv("ROBUSTREC_THREADS", value)
    one_line_error(capsys, ["report", str(tmp_path)], "$ROBUSTREC_THREADS " + match)
    one_line_error(capsys, ["--threads", "0", "report", str(tmp_path)], "--threads must be between 1 and 1024")
    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    assert exc.value.code == 0


@pytest.fixture
def unfinished_run(run_dir, tmp_path):
    """A copy of ``run_dir`` as a run killed mid-training leaves it: a checkpoint, no metrics.json."""
    import shutil

    out = tmp_path / "unfinished"
    shutil.copytree(run_dir, out)
    (out / "metrics.json").unlink()
    return out


def test_auditing_an_unfinished_run_needs_an_opt_in(unfinished_run, run_dir, tmp_path, capsys):
    argv = ["audit", str(run_dir), str(unfinished_run), "--suite", "noise", "--sigma2", "1e-4",
            "--repeats", "1", "--out", str(tmp_path / "out"), "--no-progress"]
    err = one_line_error(capsys, argv, f"run {unfinished_run} has not finished training (no metrics.json)")
    assert "--allow-unfinished" in err and "robustrec train" in err
    assert not (tmp_path / "out").exists()  # refused before any evaluation, the finished run's included
    assert main([*argv, "--allow-unfinished"]) == 0
    finished = {}
    for path in (tmp_path / "out").glob("*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len({r["provenance"]["run_finished"] for r in rows}) == 1
        finished[rows[0]["run"]] = rows[0]["provenance"]["run_finished"]
    assert finished == {str(run_dir): True, str(unfinished_run): False}


def test_evaluating_an_unfinished_run_warns(unfinished_run, capsys):
    assert main(["evaluate", str(unfinished_run)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "has not finished training" in err
    assert (unfinished_run / "evaluation.json").is_file()


def test_evaluate_checks_its_output_before_evaluating(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "evaluation.json").unlink(missing_ok=True)
    (run / "evaluation.json").mkdir()
    one_line_error(capsys, ["evaluate", str(run)], "evaluation.json is a folder")
    assert capsys.readouterr().out == ""


@pytest.mark.slow  # a fresh interpreter imports torch: about 3 s
def test_a_closed_stdout_ends_quietly_in_a_real_process(tmp_path):
    """``robustrec report ... | head -1``: exit 141, and no "Exception ignored ... BrokenPipeError" from
    the flush at interpreter exit (which only a separate process shows)."""
    import subprocess
    import sys

    from robustrec.records import write_records
    from tests.reports.conftest import make_audit

    write_records(tmp_path / "a.jsonl", make_audit())
    proc = subprocess.Popen([sys.executable, "-m", "robustrec", "report", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""
