"""The study spec: every bad spec is a one-line error (exit 2) naming the key, before anything is made."""

from __future__ import annotations

import pytest

from robustrec.cli import main
from robustrec.errors import ConfigError
from robustrec.studies.spec import load_spec, parse_spec
from tests.studies.conftest import TINY_SPEC


def edited(old: str, new: str) -> str:
    assert old in TINY_SPEC, old  # the edit must apply, or the case tests nothing
    return TINY_SPEC.replace(old, new, 1)


BAD = [
    ("unknown table", TINY_SPEC + "\n[trian]\nepochs = 1\n", "unknown key 'trian'; valid: study, train, runs, audits"),
    ("unknown study key", edited('name = "tiny"', 'name = "tiny"\nseed = 3'), "[study]: unknown key 'seed'; valid: name"),
    ("unknown train key", edited("epochs = 2", "epoch = 2"), "[train]: unknown key 'epoch'; valid: epochs"),
    ("seed in train", edited("epochs = 2", "epochs = 2\nseed = 1"), "[train].seed is set by [study].seeds"),
    ("unknown run key", edited('model = "vbpr"', 'model = "vbpr"\nmodle = 1'), "runs[1]: unknown key 'modle'"),
    ("unknown model", edited('model = "vbpr"', 'model = "vbrp"'), "unknown model 'vbrp'; known: bm3, bpr,"),
    ("unknown strategy", edited('strategy = "mirror"', 'strategy = "mirorr"'), "unknown strategy 'mirorr'; known:"),
    ("unknown suite", edited('suite = "noise"', 'suite = "noize"'), "unknown suite 'noize'; known:"),
    ("unknown grid parameter", edited("alpha2 = [0.1]", "alpha3 = [0.1]"),
     "runs[1].grid.alpha3: unknown parameter 'alpha3'; valid: "),
    ("unknown model parameter", edited('strategy = "mirror"', 'strategy = "mirror"\nparams = { dropuot = 0.1 }'),
     "model 'vbpr' has no parameter 'dropuot'; valid: "),
    ("unknown strategy parameter", edited('strategy = "mirror"', 'strategy = "mirror"\nstrategy_params = { rho = 1 }'),
     "strategy 'mirror' has no parameter 'rho'; valid: alpha1, alpha2, beta, variant"),
    ("unknown suite parameter", edited("repeats = 2", "repeats = 2\nparams = { sigma = 1 }"),
     "suite 'noise' has no parameter 'sigma'"),
    ("bad grid value at one point", edited("alpha2 = [0.1]", "alpha2 = [1.2]"), "alpha1 > alpha2 > 0 is required"),
    ("nan in a grid", edited("alpha2 = [0.1]", "alpha2 = [nan]"), "NaN and infinity are not valid"),
    ("inf severity", edited("severities = [1e-4, 1e-2]", "severities = [inf]"), "NaN and infinity"),
    ("bad model value", edited('strategy = "mirror"', 'strategy = "mirror"\nparams = { embedding_size = -1 }'),
     "embedding_size must be an integer >= 1"),
    ("unknown device", edited("epochs = 2", 'epochs = 2\ndevice = "tpu"'), "unknown device 'tpu'; use cpu, cuda or cuda:N"),
    ("bad epochs", edited("epochs = 2", "epochs = -1"), "epochs must be an integer >= 0"),
    ("bad select metric", edited('seeds = [1, 2]', 'seeds = [1, 2]\nselect = "recal@20"'), "unknown metric"),
    ("select k not measured", edited('seeds = [1, 2]', 'seeds = [1, 2]\nselect = "recall@7"'), "k=7"),
    ("repeated seeds", edited("seeds = [1, 2]", "seeds = [1, 1]"), "seeds must be distinct"),
    ("no runs", TINY_SPEC.split("[[runs]]")[0], "at least one [[runs]]"),
    ("missing name", edited('name = "tiny"', ""), "[study].name is required"),
    ("audit of a model not trained", edited("repeats = 2", 'repeats = 2\nmodels = ["bm3"]'),
     "'bm3' has no [[runs]] entry"),
    ("negative severity", edited("severities = [1e-4, 1e-2]", "severities = [-1.0]"), "audits[1]"),
    ("not TOML", "[study\nname=", "not valid TOML"),
    ("parameter in model and grid", edited('strategy = "mirror"', 'strategy = "mirror"\nstrategy_params = { alpha2 = 0.1 }'),
     "also fixed in params or strategy_params"),
    ("missing dataset folder", edited('data = "{data}"', 'data = "nowhere"'), "nowhere does not exist"),
    ("two entries of one name", TINY_SPEC + '\n[[runs]]\nmodel = "vbpr"\nstrategy = "mirror"\n',
     "runs[2] is named 'vbpr-mirror' as runs[1] is; give one of them a label"),
    ("a suite that cannot apply to a model", TINY_SPEC + '\n[[runs]]\nmodel = "pop"\n',
     "audits[1] of runs[2]: model 'pop' has no"),
    ("unknown captioner", edited("repeats = 2", 'repeats = 2\ncaptioner = "nope"'), "unknown captioner 'nope'"),
]


@pytest.mark.parametrize("text, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_a_bad_spec_is_one_line_and_creates_nothing(write_spec, tmp_path, capsys, text, message):
    spec = write_spec(text)
    out = tmp_path / "out"
    code = main(["study", "run", str(spec), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not out.exists()


def test_a_missing_spec_file_is_one_line(tmp_path, capsys):
    code = main(["study", "run", str(tmp_path / "none.toml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no spec file" in err and len(err.splitlines()) == 1


def test_threads_belong_to_the_spec(write_spec, tmp_path, capsys):
    code = main(["--threads", "2", "study", "run", str(write_spec()), "--out", str(tmp_path / "out")])
    assert code == 2 and "[study].threads" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_grid_points_and_where_their_values_go(write_spec):
    text = edited('strategy = "mirror"', 'strategy = "mirror"\nparams = { reg_weight = 0.5 }')
    text = text.replace("alpha2 = [0.1] }", "alpha2 = [0.1], embedding_size = [8, 16] }")
    spec = load_spec(write_spec(text))
    entry = spec.runs[0]
    points = entry.points()
    # the first key varies slowest, in spec order
    assert points == [{"alpha1": a1, "alpha2": 0.1, "embedding_size": e} for a1 in (1.0, 1.5) for e in (8, 16)]
    run = entry.run_spec(points[3], spec.train_config(2, entry))
    assert dict(run.model_params) == {"reg_weight": 0.5, "embedding_size": 16}
    assert dict(run.strategy_params) == {"alpha1": 1.5, "alpha2": 0.1}
    assert (run.train.seed, run.train.threads, run.train.valid_metric, run.train.epochs) == (2, 1, "recall@20", 2)


def test_defaults_and_relative_data(tmp_path):
    raw = {"study": {"name": "x", "data": "d"}, "runs": [{"model": "pop"}]}
    spec = parse_spec(raw, base=tmp_path)
    assert spec.data == str((tmp_path / "d").resolve())
    assert (spec.seeds, spec.select, spec.threads, spec.audits) == ((999,), "recall@20", 1, ())
    assert spec.runs[0].strategy == "plain" and spec.runs[0].points() == [{}]


def test_a_run_entry_overrides_train_settings(tmp_path):
    raw = {"study": {"name": "x"}, "train": {"epochs": 3, "lr": 0.01},
           "runs": [{"model": "vbpr", "train": {"optimizer": "sgd"}, "label": "VBPR (SGD)"}, {"model": "vbpr"}]}
    spec = parse_spec(raw)
    first, second = (spec.train_config(999, entry) for entry in spec.runs)
    assert (first.optimizer, first.epochs, first.lr) == ("sgd", 3, 0.01)
    assert second.optimizer == "adam"
    with pytest.raises(ConfigError, match=r"runs\[1\].train.seed is set by \[study\].seeds"):
        parse_spec({**raw, "runs": [{"model": "vbpr", "train": {"seed": 1}}]})


def test_data_option_replaces_the_spec_data(write_spec, tmp_path):
    spec = load_spec(write_spec(), data=str(tmp_path / "other"))
    assert spec.data == str(tmp_path / "other")


def test_a_bad_device_is_refused_without_audits_too():
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        parse_spec({"study": {"name": "x"}, "train": {"device": "tpu"}, "runs": [{"model": "pop"}]})
    with pytest.raises(ConfigError, match=r"runs\[1\].*unknown device 'tpu'"):
        parse_spec({"study": {"name": "x"}, "runs": [{"model": "pop", "train": {"device": "tpu"}}]})
