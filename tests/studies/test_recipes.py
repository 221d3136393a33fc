"""The recipes shipped with the package (robustrec/studies/recipes/*.toml) and the --quick override."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

from robustrec.errors import ConfigError, DataError
from robustrec.studies import recipes
from robustrec.studies.recipes import (
    RECIPES_DIR,
    quick,
    read_toml,
    recipe_names,
    recipe_path,
    recipe_summary,
    resolve,
)
from robustrec.studies.spec import AUDIT_KEYS, RUN_KEYS, STUDY_KEYS, TABLES, load_spec

# The list: one recipe per table or figure of the paper, plus the demo.
PAPER_RECIPES = ("table3_overall", "table4_noise", "table5_adjustment", "table6_optimizers", "table7_sam",
                 "table8_amr", "table9_general", "table10_beta", "fig4_convergence", "fig5_alpha")
REPO = Path(__file__).resolve().parents[2]


def raw(name: str) -> dict:
    return read_toml(RECIPES_DIR / f"{name}.toml")


def test_every_paper_recipe_and_the_demo_is_shipped_in_natural_order():
    assert recipe_names() == ["demo", "fig4_convergence", "fig5_alpha", "table3_overall", "table4_noise",
                              "table5_adjustment", "table6_optimizers", "table7_sam", "table8_amr", "table9_general",
                              "table10_beta"]
    assert set(recipe_names()) == {*PAPER_RECIPES, "demo"}


@pytest.mark.parametrize("name", recipe_names())
def test_a_recipe_is_a_spec_named_after_its_file_with_a_one_line_summary(name):
    spec = raw(name)
    assert set(spec) <= set(TABLES)
    assert set(spec["study"]) <= set(STUDY_KEYS)
    assert spec["study"]["name"] == name
    assert all(set(run) <= set(RUN_KEYS) for run in spec["runs"])
    assert all(set(audit) <= set(AUDIT_KEYS) for audit in spec.get("audits", []))
    summary = recipe_summary(name)
    assert summary == spec["study"]["description"] and summary and "\n" not in summary
    # it says where it departs from the paper (dataset at least), in comments
    assert "Departures from the paper" in recipe_path(name).read_text()


@pytest.mark.parametrize("name", recipe_names())
@pytest.mark.parametrize("is_quick", [False, True])
def test_every_recipe_validates_full_and_quick(name, is_quick):
    spec = load_spec(name, quick=is_quick)
    assert spec.name == name and spec.data is None  # the embedded default unless --data
    assert spec.source == recipe_path(name)
    if is_quick:
        assert len(spec.seeds) == 1
        assert all(len(values) <= 2 for run in spec.runs for values in run.grid.values())
        assert all(a.repeats == 1 and len(a.severities) <= 2 for a in spec.audits)


@pytest.mark.parametrize("name", recipe_names())
def test_quick_keeps_the_papers_setting_first(name):
    """The first severity of each audit is the paper's single setting, so --quick (which keeps the
    first two) still measures it; likewise the first grid values are the defaults."""
    papers = {"noise": {"absolute": 1e-6}, "caption": {None: 0.01}}
    for audit in raw(name).get("audits", []):
        scale = audit.get("params", {}).get("noise_scale", "absolute" if audit["suite"] == "noise" else None)
        if scale in papers.get(audit["suite"], {}):
            assert audit["severities"][0] == papers[audit["suite"]][scale]


def test_recipe_path_and_an_unknown_name():
    assert recipe_path("table4_noise") == RECIPES_DIR / "table4_noise.toml"
    with pytest.raises(ConfigError, match="unknown recipe 'table4'; known: demo, fig4_convergence, fig5_alpha, table3_overall") as info:
        recipe_path("table4")
    assert "\n" not in str(info.value)


def test_resolve_prefers_an_existing_file(tmp_path, monkeypatch):
    assert resolve("fig5_alpha") == RECIPES_DIR / "fig5_alpha.toml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fig5_alpha").write_text("[study]\nname = 'mine'\n")
    assert resolve("fig5_alpha") == Path("fig5_alpha")  # a file of that name wins over the recipe
    own = tmp_path / "own.toml"
    own.write_text("[study]\nname = 'own'\n")
    assert resolve(own) == own
    for missing in ("missing.toml", "specs/table4_noise"):
        with pytest.raises(ConfigError, match=f"no spec file {missing}"):
            resolve(missing)


def test_recipe_summary_of_a_broken_recipe_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "broken.toml").write_text("[study\nname = 'broken'\n")
    monkeypatch.setattr(recipes, "RECIPES_DIR", tmp_path)
    with pytest.raises(DataError, match="broken.toml: not valid TOML") as info:
        recipe_summary("broken")
    assert "\n" not in str(info.value)


def full_spec() -> dict:
    return {
        "study": {"name": "s", "seeds": [3, 1, 2], "description": "d"},
        "train": {"epochs": 300, "patience": 20, "lr": 0.01},
        "runs": [{"model": "freedom"},
                 {"model": "freedom", "strategy": "mirror", "grid": {"alpha1": [1.5, 1.0, 2.0], "alpha2": [0.3]}}],
        "audits": [{"suite": "noise", "severities": [1e-6, 1e-4, 1e-2], "repeats": 10},
                   {"suite": "caption"}],
    }


def test_quick_shrinks_a_copy():
    spec = full_spec()
    before = copy.deepcopy(spec)
    small = quick(spec)
    assert spec == before  # the input is not changed
    assert small["train"] == {"epochs": 2, "patience": 1, "lr": 0.01}  # other settings kept
    assert small["study"] == {"name": "s", "seeds": [3], "description": "d"}  # the first seed, not the smallest
    assert small["runs"][0] == {"model": "freedom"}
    assert small["runs"][1]["grid"] == {"alpha1": [1.5, 1.0], "alpha2": [0.3]}  # the first two, in order
    assert small["audits"] == [{"suite": "noise", "severities": [1e-6, 1e-4], "repeats": 1},
                               {"suite": "caption", "repeats": 1}]  # no severities: the suite's default
    small["runs"][1]["grid"]["alpha2"].append(0.1)
    assert spec == before  # a deep copy: nothing shared
    assert quick(small) == small  # shrinking twice changes nothing more


def test_quick_adds_train_and_leaves_bad_shapes_to_the_validation():
    assert quick({})["train"] == {"epochs": 2, "patience": 1}
    odd = {"study": {"seeds": 5}, "train": 3, "runs": [{"grid": [1, 2, 3]}, "x"], "audits": {"suite": "noise"}}
    assert quick(odd) == odd  # nothing to shrink in values of the wrong shape: the spec reports them


def test_the_recipes_are_package_data():
    """pyproject.toml ships every recipe with the package (a wheel without them would have no
    `robustrec study list`)."""
    package_data = read_toml(REPO / "pyproject.toml")["tool"]["setuptools"]["package-data"]
    shipped = {p for pattern in package_data["robustrec.studies"]
               for p in (REPO / "robustrec" / "studies").glob(pattern)}
    assert shipped == set(RECIPES_DIR.glob("*.toml")) and shipped


# ---- every recipe runs with --quick ------------------------------------------------------------------
@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A small synthetic shop with item texts and images (caption audits need them): the recipes'
    --data in these tests, in place of the embedded default (800 x 500, a minute to build)."""
    from robustrec.data.synthetic import make_synthetic

    tmp = tmp_path_factory.mktemp("recipe-shop")
    return make_synthetic(tmp / "shop", n_users=60, n_items=40, seed=1, text_encoder="hashing",
                          image_encoder="pixels", cache_dir=tmp / "cache", progress=False)


def run_quick(name: str, data: Path, out: Path) -> Path:
    from robustrec.studies import run_study

    return run_study(load_spec(name, data=str(data), quick=True), out, progress=False)


def check_quick_study(name: str, folder: Path) -> None:
    """The study trained every grid point of every entry for the one quick seed, chose one per group,
    audited the chosen runs, and wrote its report."""
    import json

    spec = load_spec(name, quick=True)
    selection = json.loads((folder / "selection.json").read_text())
    assert len(selection["groups"]) == len(spec.runs)  # one seed
    for group, entry in zip(selection["groups"], spec.runs):
        assert len(group["points"]) == len(entry.points()) and 0 <= group["chosen"] < len(group["points"])
        for point in group["points"]:
            assert (folder / point["run"] / "metrics.json").is_file()
    audited = [d for d in (folder / "audits").iterdir()] if spec.audits else []
    assert len(audited) == len(spec.audits) and all(any(d.glob("*.jsonl")) for d in audited)
    assert (folder / "report.md").read_text().startswith(f"# Study {name}")


# The smallest recipe (4 trainings of VBPR, AMR and AMR + MG) runs in the default suite; the others
# take 5 to 20 s each with their reports' plots.
SMALLEST = "table8_amr"


def test_the_smallest_recipe_runs_quick(shop, tmp_path):
    check_quick_study(SMALLEST, run_quick(SMALLEST, shop, tmp_path / SMALLEST))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in recipe_names() if n != SMALLEST])
def test_every_recipe_runs_quick(name, shop, tmp_path):
    if name in ("table5_adjustment", "demo") and importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        pytest.skip("the imagenet captioner needs robustrec[encoders]")
    check_quick_study(name, run_quick(name, shop, tmp_path / name))
