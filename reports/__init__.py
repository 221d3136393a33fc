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
from .flatness import Flatness, build_flatness, plot_flatness, render_flatness, render_with_flatness, spearman
from .landscape import plot_interpolation, plot_landscapes, plot_surface
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
from .trace import Trace, load_trace, plot_trace, read_trace, trace_table

__all__ = [
    "FORMATS",
    "AuditResults",
    "Cell",
    "CheckItem",
    "CheckResult",
    "Comparison",
    "Flatness",
    "GroupKey",
    "PairedTest",
    "Report",
    "RunAudit",
    "SeedDrop",
    "SuiteKey",
    "Table",
    "Trace",
    "Violation",
    "build_flatness",
    "build_report",
    "check",
    "compare",
    "compare_seeds",
    "compare_users",
    "holm",
    "holm_correct",
    "junit_xml",
    "load_results",
    "load_trace",
    "paired_test",
    "parse_max_drop",
    "parse_min_clean",
    "plot_drops",
    "plot_flatness",
    "plot_interpolation",
    "plot_landscapes",
    "plot_surface",
    "plot_trace",
    "read_trace",
    "relative_drop",
    "render",
    "render_flatness",
    "render_with_flatness",
    "row_label",
    "spearman",
    "to_dict",
    "trace_table",
    "verdict",
]
