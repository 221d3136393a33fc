"""The public API: every exported name resolves, and light imports stay light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import captioning
import perturbations
import reports
import robustrec


@pytest.mark.parametrize("package", [robustrec, perturbations, captioning, reports])
def test_every_exported_name_resolves(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, f"{package.__name__}.{name}"


def test_reports_do_not_import_torch():
    code = "import sys, reports, robustrec; reports.load_results; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_from_robustrec_import_train_is_the_function_even_after_its_module_is_imported():
    import importlib
    import inspect

    importlib.import_module("robustrec.training")  # the module no longer shadows the function
    from robustrec import train

    assert inspect.isfunction(train) and train.__module__ == "robustrec.training"
