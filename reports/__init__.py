"""Reports over result records: relative drops, significance, tables, plots and the CI regression gate.

Reports read result records only (:mod:`robustrec.records`), never models or perturbations::

    from reports import load_results, render, check

    results = load_results("results/noise")
    print(render(results, "markdown"))                 # recall@20, the default metric
    print(render(results, "latex", ["recall@5"]))      # the paper's metric, as LaTeX table floats
    outcome = check("results/noise", max_drop=0.05, junit="robustness.xml")
"""

from .check import CheckItem, CheckResult, Violation, check, junit_xml, parse_max_drop, parse_min_clean
from .drops import (
    AuditResults,
    Cell,
    GroupKey,
    RunAudit,
    SeedDrop,
    SuiteKey,
    load_results,
    relative_drop,
    row_label,
)
from .plots import plot_drops
from .stats import (
    Comparison,
    PairedTest,
    compare,
    compare_seeds,
    compare_users,
    holm,
    holm_correct,
    paired_test,
    verdict,
)
from .tables import FORMATS, Report, Table, build_report, render, to_dict

__all__ = [
    "FORMATS",
    "AuditResults",
    "Cell",
    "CheckItem",
    "CheckResult",
    "Comparison",
    "GroupKey",
    "PairedTest",
    "Report",
    "RunAudit",
    "SeedDrop",
    "SuiteKey",
    "Table",
    "Violation",
    "build_report",
    "check",
    "compare",
    "compare_seeds",
    "compare_users",
    "holm",
    "holm_correct",
    "junit_xml",
    "load_results",
    "paired_test",
    "parse_max_drop",
    "parse_min_clean",
    "plot_drops",
    "relative_drop",
    "render",
    "row_label",
    "to_dict",
    "verdict",
]
