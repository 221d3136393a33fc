"""Diagnostics: why a training strategy does or does not make a model robust.

Flatness at a run's selected weights, on its own training loss (:mod:`.objective`): the gradient
norm, the top Hessian eigenvalues and the trace (:mod:`.measures`), SAM's sharpness, and loss
landscapes along filter-normalised random directions and between two runs (:mod:`.landscape`).
:func:`diagnose` measures run folders and writes :class:`robustrec.records.Diagnosis` records;
``robustrec report AUDITS --flatness DIAGNOSES`` sets them beside the robustness drops::

    from robustrec.diagnostics import DiagnoseConfig, diagnose

    diagnose(["runs/freedom-plain", "runs/freedom-mg"], DiagnoseConfig(seed=0), "diagnostics/",
             pairs=[("runs/freedom-plain", "runs/freedom-mg")])
"""

from .diagnose import MEASURES, DiagnoseConfig, barrier, check_pair, diagnose, diagnose_run, interpolate_runs
from .landscape import filter_normalised_direction, interpolation, landscape_1d, landscape_2d
from .measures import Trace, hessian_trace, sharpness, top_eigenvalues
from .objective import TrainingLoss

__all__ = [
    "MEASURES",
    "DiagnoseConfig",
    "Trace",
    "TrainingLoss",
    "barrier",
    "check_pair",
    "diagnose",
    "diagnose_run",
    "filter_normalised_direction",
    "hessian_trace",
    "interpolate_runs",
    "interpolation",
    "landscape_1d",
    "landscape_2d",
    "sharpness",
    "top_eigenvalues",
]
