"""The regression gate's Python API: budgets, baselines, the mirror rule and JUnit output."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from reports.check import check, parse_max_drop, parse_min_clean
from reports.drops import load_results
from reports.tables import render
from robustrec.errors import ConfigError, DataError

# paper_like recall@20 drops (mean over seeds):
#   FREEDOM plain  1e-6: 13.33%   1e-4: 46.67%
#   FREEDOM mirror 1e-6:  2.00%   1e-4: 10.00%
#   VBPR plain     1e-6:  2.50%   1e-4: 25.00%


def test_max_drop_passes_and_fails(paper_like):
    assert check(paper_like, max_drop=0.5).ok
    result = check(paper_like, max_drop=0.2)
    assert len(result.items) == 6
    failed = {(v.model, v.strategy, v.severity) for v in result.violations}
    assert failed == {("freedom", "plain", 1e-4), ("vbpr", "plain", 1e-4)}
    worst = next(v for v in result.violations if v.model == "freedom")
    assert worst.excess == pytest.approx(0.4667 - 0.2, abs=1e-4)
    assert "drop 46.67% > budget 20.00% (over by 26.67 pp)" in worst.message
    assert "FREEDOM (strategy plain), noise (sigma2) sigma2=0.0001, recall@20" in worst.message


def test_per_severity_budgets(paper_like):
    result = check(paper_like, max_drop_per_severity={1e-6: 0.1, 1e-4: 0.5})
    assert [(v.model, v.severity) for v in result.violations] == [("freedom", 1e-6)]
    only_low = check(paper_like, max_drop_per_severity={1e-6: 0.2})
    assert only_low.ok and len(only_low.items) == 6 and len(only_low.skipped) == 3
    assert {i.name.split("sigma2=")[1].split(",")[0] for i in only_low.skipped} == {"0.0001"}
    assert all(i.skipped == "no --max-drop budget for severity 0.0001" for i in only_low.skipped)
    assert "not checked" in only_low.notes[0]
    assert only_low.summary() == "all 3 checks within budget (3 skipped)"
    with pytest.raises(ConfigError, match="severity 1e-05, which no record has"):
        check(paper_like, max_drop_per_severity={1e-5: 0.2})


def test_min_clean(paper_like):
    # clean recall@20: FREEDOM 0.25 (both strategies), VBPR 0.40
    result = check(paper_like, min_clean={"recall@20": 0.3})
    assert len(result.items) == 3
    assert {v.model for v in result.violations} == {"freedom"}
    assert "clean 0.2500 < minimum 0.3000 (under by 0.0500)" in result.violations[0].message
    with pytest.raises(ConfigError, match="unknown metric"):
        check(paper_like, min_clean={"recal@20": 0.3})


def test_baseline_within_and_beyond_tolerance(paper_like, tmp_path, write_audit, make):
    saved = tmp_path / "baseline.json"
    saved.write_text(render(load_results(paper_like), "json"))
    assert check(paper_like, baseline=saved).ok  # identical results
    # VBPR gets worse: 1e-6 drop 2.5% -> 5% (0.40 -> 0.38 in both repeats)
    write_audit("vbpr-plain-1", make("vbpr", "plain", 1, 0.4, {1e-6: [0.38, 0.38], 1e-4: [0.3, 0.3]}))
    result = check(paper_like, baseline=saved, tolerance=0.01)
    [violation] = result.violations
    assert (violation.rule, violation.model, violation.severity) == ("baseline-drop", "vbpr", 1e-6)
    assert violation.excess == pytest.approx(0.05 - 0.025 - 0.01)
    assert check(paper_like, baseline=saved, tolerance=0.03).ok


def test_baseline_clean_regression(paper_like, tmp_path, write_audit, make):
    saved = tmp_path / "baseline.json"
    saved.write_text(render(load_results(paper_like), "json"))
    write_audit("vbpr-plain-1", make("vbpr", "plain", 1, 0.35, {1e-6: [0.35 * 0.975] * 2, 1e-4: [0.35 * 0.75] * 2}))
    [violation] = check(paper_like, baseline=saved, tolerance=0.01).violations
    assert violation.rule == "baseline-clean"
    assert violation.excess == pytest.approx(0.04)  # 0.40 - 0.01 - 0.35


def test_bad_baselines(paper_like, tmp_path):
    with pytest.raises(DataError, match="cannot read baseline"):
        check(paper_like, baseline=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        check(paper_like, baseline=tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"schema": "x"}')
    with pytest.raises(DataError, match="not a saved robustrec report"):
        check(paper_like, baseline=tmp_path / "other.json")
    saved = tmp_path / "r5.json"
    saved.write_text(render(load_results(paper_like), "json", ["recall@5"]))
    with pytest.raises(DataError, match="no recall@20 numbers"):
        check(paper_like, baseline=saved)


def test_mirror_not_worse(paper_like, write_audit, make):
    assert check(paper_like, require_mirror_not_worse=True).ok
    # VBPR + MG drops 5% at 1e-6, VBPR 2.5%
    write_audit("vbpr-mirror-1", make("vbpr", "mirror", 1, 0.4, {1e-6: [0.38, 0.38], 1e-4: [0.3, 0.3]}))
    [violation] = check(paper_like, require_mirror_not_worse=True).violations
    assert (violation.rule, violation.model, violation.strategy, violation.severity) == (
        "mirror-not-worse", "vbpr", "mirror", 1e-6)
    assert check(paper_like, require_mirror_not_worse=True, tolerance=0.03).ok


def test_mirror_not_worse_compares_amr_mirror_with_amr(write_audit, make, audit_dir):
    write_audit("p", make("vbpr", "plain", 1, 0.4, {1e-6: [0.2]}))  # 50%: would excuse anything
    write_audit("a", make("vbpr", "amr", 1, 0.4, {1e-6: [0.39]}))  # 2.5%
    write_audit("am", make("vbpr", "amr+mirror", 1, 0.4, {1e-6: [0.38]}))  # 5%
    [violation] = check(audit_dir, require_mirror_not_worse=True).violations
    assert violation.strategy == "amr+mirror"
    assert "VBPR + AMR's drop 2.50%" in violation.message


def test_mirror_rule_without_pairs_is_bad_input(write_audit, make, audit_dir):
    write_audit("p", make())
    with pytest.raises(DataError, match="no model has both"):
        check(audit_dir, require_mirror_not_worse=True)


def test_junit(paper_like, tmp_path):
    path = tmp_path / "out" / "check.xml"
    result = check(paper_like, max_drop=0.2, min_clean={"recall@20": 0.3}, junit=path)
    root = ET.parse(path).getroot()
    [suite] = root.findall("testsuite")
    assert suite.get("tests") == str(len(result.items)) == "9"
    assert suite.get("failures") == "4"  # two drops over 20%, two FREEDOM clean values under 0.3
    assert len(suite.findall("testcase")) == 9
    failures = suite.findall("testcase/failure")
    assert len(failures) == 4
    assert all(f.get("message") for f in failures)


def test_nothing_to_check_and_bad_budgets(paper_like):
    with pytest.raises(ConfigError, match="nothing to check"):
        check(paper_like)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        check(paper_like, max_drop=5.0)
    with pytest.raises(ConfigError, match="unknown metric"):
        check(paper_like, max_drop=0.1, metric="recall")


def test_parse_budgets():
    assert parse_max_drop("0.05") == (0.05, {})
    assert parse_max_drop("5%") == (pytest.approx(0.05), {})
    assert parse_max_drop("1e-6=0.02,1e-4=10%") == (None, {1e-6: 0.02, 1e-4: pytest.approx(0.1)})
    assert parse_max_drop(["10%", "1e-6=2%"]) == (pytest.approx(0.1), {1e-6: pytest.approx(0.02)})
    for bad in ("abc", "1e-6=", "x=0.1", "0.1,,0.2", "150%"):
        with pytest.raises(ConfigError):
            parse_max_drop(bad)
    assert parse_min_clean(["Recall@20=0.3"]) == {"recall@20": 0.3}
    for bad in (["recall@20"], ["recall@20=x"], ["foo@1=0.1"]):
        with pytest.raises(ConfigError):
            parse_min_clean(bad)


# -- a baseline or budget holding NaN, infinity or strings is bad input, never a pass ---------------
def _saved(paper_like, tmp_path, edit=None, text=None):
    """The JSON report of ``paper_like`` as a baseline, with every cell edited by ``edit(cell)``."""
    import json

    doc = json.loads(render(load_results(paper_like), "json"))
    for cell in doc["cells"]:
        if edit is not None:
            edit(cell)
    path = tmp_path / "saved.json"
    path.write_text(text if text is not None else json.dumps(doc))  # json.dumps writes NaN as a bare NaN
    return path


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c.update(drop_mean=float("nan")), "non-standard JSON number NaN"),
        (lambda c: c.update(clean=float("inf")), "non-standard JSON number Infinity"),
        (lambda c: c.update(drop_mean="x"), "drop_mean = 'x', not a finite number or null"),
        (lambda c: c.update(clean=[0.2]), "clean = \\[0.2\\], not a finite number or null"),
        (lambda c: c.update(severity="1e-6"), "lacks a finite number 'severity'"),
        (lambda c: c.update(model=None), "lacks a string 'model'"),
        (lambda c: c.clear(), "lacks a string 'model'"),
    ],
)
def test_a_baseline_with_nan_or_wrong_types_is_a_data_error(paper_like, tmp_path, edit, match):
    """A NaN budget makes ``drop > budget`` false everywhere: the gate would pass anything."""
    with pytest.raises(DataError, match=match):
        check(paper_like, baseline=_saved(paper_like, tmp_path, edit))


@pytest.mark.parametrize("text, match", [("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                                         ('{"schema": ' + "1" * 5000 + "}", "not valid JSON"),
                                         ('{"x": 1e400}', "out of range")])
def test_a_baseline_that_cannot_be_decoded_is_a_data_error(paper_like, tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        check(paper_like, baseline=_saved(paper_like, tmp_path, text=text))


def test_a_baseline_with_undefined_drops_says_what_it_skipped(paper_like, tmp_path):
    def undefined_low(cell):
        if cell["severity"] == 1e-6:
            cell["drop_mean"] = None
    result = check(paper_like, baseline=_saved(paper_like, tmp_path, undefined_low))
    assert result.ok and any("3 baseline group(s) have no saved drop" in n for n in result.notes)


def test_non_finite_budgets_are_config_errors(paper_like):
    with pytest.raises(ConfigError, match="not a finite number"):
        parse_min_clean(["recall@20=nan"])
    with pytest.raises(ConfigError, match="not a finite number"):
        parse_max_drop("inf=0.1")
    with pytest.raises(ConfigError, match="finite number"):
        check(paper_like, min_clean={"recall@20": float("nan")})
    with pytest.raises(ConfigError, match="finite number"):
        check(paper_like, require_mirror_not_worse=True, tolerance=float("inf"))


def _cases(path):
    suite = ET.parse(path).getroot().find("testsuite")
    return suite, {case.get("name"): case for case in suite.findall("testcase")}


def _properties(case):
    return {p.get("name"): p.get("value") for p in case.findall("properties/property")}


def test_junit_cases_carry_value_budget_and_time(paper_like, tmp_path):
    path = tmp_path / "check.xml"
    result = check(paper_like, max_drop=0.2, min_clean={"recall@20": 0.3}, junit=path)
    suite, cases = _cases(path)
    assert float(suite.get("time")) >= 0 and suite.get("timestamp")
    assert len(cases) == len(result.items) == 9
    for case in cases.values():
        assert float(case.get("time")) >= 0
        props = _properties(case)
        assert {"rule", "metric", "value", "budget"} <= set(props), props
        out = case.find("system-out").text
        assert out.startswith("value: ") and "\nbudget: " in out, out
    failing = cases["FREEDOM (strategy plain), noise (sigma2) sigma2=0.0001, recall@20"]
    assert failing.find("failure") is not None
    assert float(_properties(failing)["value"]) == pytest.approx(0.4 / 3 + 1 / 3, abs=1e-6)  # 46.67%
    assert _properties(failing)["budget"] == "0.2"
    assert failing.find("system-out").text == "value: drop 46.67%\nbudget: at most 20.00%\n"
    passing = cases["FREEDOM + MG (strategy mirror), noise (sigma2) sigma2=1e-06, recall@20"]
    assert passing.find("failure") is None
    assert passing.find("system-out").text == "value: drop 2.00%\nbudget: at most 20.00%\n"
    clean = cases["VBPR (strategy plain), noise (sigma2), recall@20"]
    assert clean.find("system-out").text == "value: clean 0.4000\nbudget: at least 0.3000\n"


def test_junit_baseline_cases_name_the_baseline(paper_like, tmp_path):
    saved, path = tmp_path / "baseline.json", tmp_path / "check.xml"
    saved.write_text(render(load_results(paper_like), "json"))
    check(paper_like, baseline=saved, tolerance=0.01, require_mirror_not_worse=True, junit=path)
    _, cases = _cases(path)
    drop = next(c for c in cases.values() if _properties(c)["rule"] == "baseline-drop")
    assert "baseline" in _properties(drop)
    assert "\nbaseline: drop " in drop.find("system-out").text
    mirror = next(c for c in cases.values() if _properties(c)["rule"] == "mirror-not-worse")
    props = _properties(mirror)
    assert float(props["budget"]) == pytest.approx(float(props["baseline"]) + 0.01)
    assert "\nbaseline: FREEDOM's drop " in mirror.find("system-out").text


def test_severities_absent_from_the_baseline_are_skipped_cases(paper_like, tmp_path, write_audit, make):
    """A severity audited now but not in the baseline is reported as skipped, with the reason."""
    saved, path = tmp_path / "baseline.json", tmp_path / "check.xml"
    saved.write_text(render(load_results(paper_like), "json"))
    write_audit("vbpr-plain-1", make("vbpr", "plain", 1, 0.4, {1e-6: [0.4, 0.38], 1e-4: [0.3, 0.3], 1e-2: [0.1]}))
    result = check(paper_like, baseline=saved, junit=path)
    assert result.ok
    [skipped] = result.skipped
    assert skipped.rule == "baseline-drop" and "sigma2=0.01" in skipped.name
    assert skipped.skipped == "not in the baseline report (no saved drop at this severity)"
    suite, cases = _cases(path)
    assert suite.get("skipped") == "1" and suite.get("failures") == "0"
    assert cases[skipped.name].find("skipped").get("message") == skipped.skipped
    assert _properties(cases[skipped.name])["value"] == "0.75"
    assert "1 skipped" in result.summary()


def test_a_baseline_written_before_the_notes_and_holm_fields_still_reads(paper_like, tmp_path):
    """The JSON report only gained fields (notes, *_holm, family): version 1 documents still work."""
    import json

    doc = json.loads(render(load_results(paper_like), "json"))
    del doc["notes"]
    for entry in doc["significance"]:
        for name in ("t_pvalue_holm", "wilcoxon_pvalue_holm", "family", "family_size"):
            del entry[name]
    saved = tmp_path / "old.json"
    saved.write_text(json.dumps(doc))
    assert check(paper_like, baseline=saved).ok
