"""Every model refuses bad hyper-parameters in its constructor with a one-line ConfigError naming them.

The cases are derived from the registry and the constructors' signatures, so a model or a numeric
hyper-parameter added later is checked without editing this file.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustrec.cli import main
from robustrec.data.mmrec import write_dataset
from robustrec.errors import ConfigError
from robustrec.hparams import accepted, numeric_params
from robustrec.models import MODELS, build_model
from tests.conftest import make_tiny_dataset

#: Wrong for every numeric hyper-parameter of every model (all are sizes, counts, weights or rates).
ALWAYS_BAD = {
    int: [-1, 2.5, math.nan, math.inf, "8", True],
    float: [-1.0, math.nan, math.inf, -math.inf, "0.1"],
}
#: Values that are wrong for some parameters only.
SPECIFIC_BAD = {
    "embedding_size": [0],
    "feat_embed_dim": [0],
    "latent_embedding": [0],
    "image_latent": [0],
    "text_latent": [0],
    "knn_k": [0],
    "dropout": [1.0, 1.5],
    "mm_image_weight": [1.5],
    "lambda_coeff": [1.5],
}
CASES = [
    (model, name, bad)
    for model in MODELS.names()
    for name, kind in numeric_params(MODELS.get(model))
    for bad in ALWAYS_BAD[kind] + SPECIFIC_BAD.get(name, [])
]


def test_every_trainable_model_has_cases():
    covered = {model for model, _, _ in CASES}
    assert covered == {m for m in MODELS.names() if MODELS.get(m).trainable}


@pytest.mark.parametrize(("model", "name", "bad"), CASES, ids=[f"{m}-{n}={b!r}" for m, n, b in CASES])
def test_bad_hyperparameter_is_a_one_line_config_error_naming_it(tiny, model, name, bad):
    with pytest.raises(ConfigError, match=rf"{model}: {name} must be") as caught:
        build_model(model, tiny, **{name: bad})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("vbpr", {"embedding_size": 1, "reg_weight": 0.0}),
        ("bm3", {"n_layers": 0, "dropout": 0.0, "cl_weight": 0.0}),
        ("freedom", {"knn_k": 1, "n_mm_layers": 0, "mm_image_weight": 1.0, "dropout": 0.0}),
        ("mmgcn", {"image_latent": None, "text_latent": 4, "n_layers": 1}),
        ("grcn", {"n_layers": 0, "embedding_size": 2.0}),  # an integral float is an integer
    ],
)
def test_boundary_values_are_accepted(tiny, model, params):
    net = build_model(model, tiny, **params)
    assert net.hparams.items() >= params.items()


def test_cli_reports_a_bad_model_parameter_on_one_line(tmp_path, capsys):
    ds = make_tiny_dataset()
    pairs = np.concatenate([ds.train, ds.valid, ds.test])
    labels = np.repeat([0, 1, 2], [len(ds.train), len(ds.valid), len(ds.test)])
    feats = {"image": ds.features.image.numpy(), "text": ds.features.text.numpy()}
    data = write_dataset(tmp_path / "tiny", pairs, labels, feats)
    code = main(["train", "--data", str(data), "--model", "vbpr", "--param", "embedding_size=-1",
                 "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "embedding_size must be an integer >= 1, got -1" in err


def test_models_build_with_their_defaults(tiny):
    """The checks must not refuse the papers' defaults."""
    for model in MODELS.names():
        net = build_model(model, tiny, generator=torch.Generator().manual_seed(0))
        assert net.hparams.keys() == set(accepted(MODELS.get(model)))
