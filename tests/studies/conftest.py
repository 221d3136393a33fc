"""Fixtures of the study tests: a tiny dataset folder, spec files written from TOML text, and a
stand-in for the study report where a test checks only the runs, selection and audits."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from tests.test_cli import write_tiny

#: A 2 x 1 grid (alpha1 x alpha2) of VBPR with Mirror Gradient, 2 seeds, one noise audit: 4 trainings
#: of 2 epochs and 2 audits, about a second on the tiny dataset.
TINY_SPEC = """
[study]
name = "tiny"
data = "{data}"
seeds = [1, 2]

[train]
epochs = 2
batch_size = 64

[[runs]]
model = "vbpr"
strategy = "mirror"
grid = { alpha1 = [1.0, 1.5], alpha2 = [0.1] }

[[audits]]
suite = "noise"
severities = [1e-4, 1e-2]
repeats = 2
"""


@pytest.fixture(scope="session")
def study_data(tmp_path_factory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("study-data") / "tiny")


@pytest.fixture
def write_spec(tmp_path, study_data):
    """``write_spec(text, name)``: a spec file in tmp_path; ``{data}`` in the text is the tiny dataset."""

    def write(text: str = TINY_SPEC, name: str = "spec.toml") -> Path:
        path = tmp_path / name
        path.write_text(text.replace("{data}", str(study_data)))
        return path

    return write


def stub_report_module() -> types.ModuleType:
    """A stand-in for robustrec.studies.report: ``write_study_report`` writes a one-line report.md
    and remembers the folders it was called with (``calls``)."""
    module = types.ModuleType("robustrec.studies.report")
    module.calls = []

    def write_study_report(folder):
        module.calls.append(Path(folder))
        path = Path(folder) / "report.md"
        path.write_text("stub\n")
        return path

    module.write_study_report = write_study_report
    module.study_report = lambda folder, fmt="markdown", metric=None: "stub"
    return module


#: ``python -c`` code running ``robustrec`` with the stand-in report (the kill -9 test's child).
STUB_MAIN = ("import sys; from tests.studies.conftest import stub_report_module; "
             "sys.modules['robustrec.studies.report'] = stub_report_module(); "
             "from robustrec.cli import main; sys.exit(main())")


@pytest.fixture
def stub_report(monkeypatch):
    """The study report replaced by a one-line file (the report has its own tests, and its plots take
    seconds): tests of the runner check runs, selection and audits."""
    module = stub_report_module()
    monkeypatch.setitem(sys.modules, "robustrec.studies.report", module)
    import robustrec.studies

    monkeypatch.setattr(robustrec.studies, "report", module, raising=False)
    return module.calls
