r"""LaTeX tables ready for a paper: complete ``table`` floats with booktabs rules.

Every table is a ``table`` float with a ``\caption`` and a ``\label`` unique in the document. The
layout follows common typesetting advice for tables of numbers:

- numbers are set in math mode (so a negative drop gets a real minus sign, not a hyphen) with the
  same decimals throughout a column (4 for metric values, 2 for percentages);
- a "mean ± std" column is split into two tabular columns, ``r@{}l``: the mean right-aligned, then
  ``± std`` left-aligned. The ± signs, and with them the decimal points, line up from row to row.
  This is what siunitx's ``S`` columns would do, without needing siunitx;
- text columns (model names, verdicts) are left-aligned, numbers right-aligned;
- severities are written as math: ``$\sigma^2 = 10^{-6}$``, ``$p = 0.01$``.

The output needs only ``\usepackage{booktabs}`` in the document's preamble.

Tables come from :mod:`reports.tables` (format-neutral rows of strings). A cell that has a LaTeX form
of its own is a :class:`Tex`; any other cell is a number (set in math) or text (escaped).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .drops import format_severity

if TYPE_CHECKING:  # the tables module imports this one
    from .tables import Table


class Tex(str):
    r"""Text (as shown in markdown and CSV) that has a LaTeX form of its own.

    ``span`` is how many tabular columns the LaTeX form fills: 2 for a "mean ± std" value, whose
    form is ``$mean$ & ${}\pm std$`` (see the module docstring).
    """

    tex: str
    span: int

    def __new__(cls, text: str, tex: str, span: int = 1) -> Tex:
        obj = super().__new__(cls, text)
        obj.tex = tex
        obj.span = span
        return obj


_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
            "Δ": r"$\Delta$", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and write ± and Δ in math mode)."""
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


#: Math symbols of the suites' severity names; other names are written upright (``\mathrm{name}``).
SEVERITY_SYMBOLS = {"sigma2": r"\sigma^2", "prob": "p", "scale": "s"}

_NUMBER = re.compile(r"([+-]?)(\d+(?:\.\d+)?)(?:e([+-]?\d+))?")
_BELOW = re.compile(r"<(\d+(?:\.\d+)?(?:e[+-]?\d+)?)")  # "<1e-4", as format_p writes a tiny p-value
_RANGE = re.compile(r"\d+-\d+")  # "1-3" seeds


def math_number(text: str) -> str:
    r"""A number written by Python (``"-36.67"``, ``"1e-06"``, ``"2.5e-05"``) as math-mode content:
    ``-36.67``, ``10^{-6}``, ``2.5 \times 10^{-5}``."""
    found = _NUMBER.fullmatch(text)
    if found is None:
        raise ValueError(f"not a number: {text!r}")
    sign, mantissa, exponent = found.groups()
    if exponent is None:
        return sign + mantissa
    power = f"10^{{{int(exponent)}}}"
    return sign + (power if float(mantissa) == 1 else rf"{mantissa} \times {power}")


def severity_symbol(name: str) -> str:
    r"""``"sigma2"`` -> ``\sigma^2`` (math-mode content)."""
    return SEVERITY_SYMBOLS.get(name) or rf"\mathrm{{{latex_escape(name or 'severity')}}}"


def severity_number(value: float) -> str:
    r"""A severity as math-mode content: powers of ten below 0.01 (and from 10^4) as ``10^{-4}`` or
    ``2.5 \times 10^{-5}``, others as written by :func:`~reports.drops.format_severity`."""
    if value != 0 and not 1e-2 <= abs(value) < 1e4:
        mantissa, exponent = f"{value:.6e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return math_number(f"{mantissa}e{int(exponent)}")
    return math_number(format_severity(value))


def severity_tex(name: str, value: float) -> str:
    r"""``severity_tex("sigma2", 1e-6) == "$\sigma^2 = 10^{-6}$"``."""
    return f"${severity_symbol(name)} = {severity_number(value)}$"


def pm_tex(mean: str, std: str = "") -> str:
    """The two tabular cells of a "mean ± std" value; the second is empty without a std."""
    return f"${math_number(mean)}$ & " + (rf"${{}}\pm {math_number(std)}$" if std else "")


def is_number(text: str) -> bool:
    """Whether a plain cell is a number (or a placeholder in a column of numbers)."""
    return (text in ("n/a", "-", "") or _NUMBER.fullmatch(text) is not None
            or _BELOW.fullmatch(text) is not None or _RANGE.fullmatch(text) is not None)


def cell_tex(cell: str) -> str:
    """One cell's LaTeX: its own form (:class:`Tex`), a number in math, or escaped text."""
    if isinstance(cell, Tex):
        return cell.tex
    if cell == "-":
        return "--"
    if _NUMBER.fullmatch(cell):
        return f"${math_number(cell)}$"
    below = _BELOW.fullmatch(cell)
    if below:
        return f"$<{math_number(below.group(1))}$"
    if _RANGE.fullmatch(cell):
        return cell.replace("-", "--")  # an en dash
    return latex_escape(cell)


# -- one table -----------------------------------------------------------------------------------
TEXT, NUMBER, MEAN_STD = "l", "r", r"r@{}l"


def column_kinds(table: Table) -> list[str]:
    """Per column: TEXT (left), NUMBER (right) or MEAN_STD (two columns aligned at the ±). The first
    column always holds names."""
    kinds = []
    for i in range(len(table.columns)):
        cells = [row[i] for row in table.rows]
        if i == 0 or not all(isinstance(c, Tex) or is_number(c) for c in cells):
            kinds.append(TEXT)
        elif any(isinstance(c, Tex) and c.span == 2 for c in cells):
            kinds.append(MEAN_STD)
        else:
            kinds.append(NUMBER)
    return kinds


def _width(kind: str) -> int:
    return 2 if kind == MEAN_STD else 1


def _row(cells: Sequence[str], kinds: Sequence[str]) -> str:
    out = []
    for cell, kind in zip(cells, kinds):
        text = cell_tex(cell)
        spans_two = isinstance(cell, Tex) and cell.span == 2
        out.append(text if spans_two or kind != MEAN_STD else text + " & ")  # a lone value: no ± part
    return " & ".join(out) + r" \\"


def _group_rows(table: Table, kinds: Sequence[str]) -> list[str]:
    r"""The column-group header (``\multicolumn`` over its columns, with ``\cmidrule`` under it)."""
    if not any(label for label, _ in table.groups):
        return []
    cells, rules, column, logical = [], [], 1, 0
    for label, span in table.groups:
        width = sum(_width(k) for k in kinds[logical:logical + span])
        if label:
            cells.append(rf"\multicolumn{{{width}}}{{c}}{{{cell_tex(label)}}}")
            rules.append(rf"\cmidrule(lr){{{column}-{column + width - 1}}}")
        else:
            cells += [""] * width
        column += width
        logical += span
    return [" & ".join(cells) + r" \\", " ".join(rules)]


def _header_row(table: Table, kinds: Sequence[str]) -> str:
    cells = []
    for name, kind in zip(table.columns, kinds):
        text = cell_tex(name)
        cells.append(rf"\multicolumn{{2}}{{c}}{{{text}}}" if kind == MEAN_STD else text)
    return " & ".join(cells) + r" \\"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "x"


def latex_table(table: Table, label: str) -> list[str]:
    """One ``table`` float: caption and label above a booktabs tabular."""
    kinds = column_kinds(table)
    caption = cell_tex(table.caption or table.title)
    out = [r"\begin{table}[tbp]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
           r"\begin{tabular}{" + " ".join(kinds) + "}", r"\toprule"]
    out += _group_rows(table, kinds)
    out += [_header_row(table, kinds), r"\midrule"]
    out += [_row(row, kinds) for row in table.rows]
    return out + [r"\bottomrule", r"\end{tabular}", r"\end{table}"]


def latex_document(comments: Sequence[str], tables: Sequence[Table]) -> str:
    """The tables one after another, preceded by ``%`` comment lines; labels made unique
    (``tab:`` followed by the table's key, ``-2``, ``-3``... on a repeat)."""
    lines = [f"% {line}" for text in comments for line in text.splitlines()]
    lines.append(r"% needs \usepackage{booktabs}")
    used: set[str] = set()
    for table in tables:
        label = "tab:" + ":".join(_slug(part) for part in table.key or (table.title,))
        base, n = label, 1
        while label in used:
            n += 1
            label = f"{base}-{n}"
        used.add(label)
        lines += [""] + latex_table(table, label)
    return "\n".join(lines) + "\n"
