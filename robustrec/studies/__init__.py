"""Studies: a whole robustness study (models x strategies x grids x seeds x audits) from one spec file.

A study is an object, as Cornac's Experiment is: a spec (:mod:`.spec`, TOML) becomes a plan
(:mod:`.plan`: the runs and audits it needs, each in a content-addressed folder), an executor
(:mod:`.executors`: in process, a local pool of processes, or Ray) carries the plan out, grid points
are selected on validation only (:mod:`.selection`), and the report reads only the study folder::

    from robustrec.studies import build_executor, load_spec, run_study

    spec = load_spec("study.toml")                 # or a shipped recipe: load_spec("table4_noise")
    folder = run_study(spec, "out/noise", executor=build_executor("local", workers=2))

``robustrec study run|report|list`` is a thin shell over these functions.
"""

from robustrec.studies.executors import Executor, LocalExecutor, SequentialExecutor, build_executor
from robustrec.studies.runner import run_study
from robustrec.studies.spec import AuditEntry, RunEntry, StudySpec, load_spec, parse_spec

__all__ = [
    "AuditEntry",
    "Executor",
    "LocalExecutor",
    "RunEntry",
    "SequentialExecutor",
    "StudySpec",
    "build_executor",
    "load_spec",
    "parse_spec",
    "run_study",
]
