"""Cells a spreadsheet would run as formulas, and how the results CSV writes them."""

from __future__ import annotations

import re

# OWASP's CSV injection guidance: a cell a spreadsheet reads as a formula starts with one of
# these. The results CSV writes such a cell after an apostrophe, which spreadsheets show as
# text and never run. A plain number (a sign, digits, spaces, a decimal part: "+1 415 555
# 0100", "-12.5") is no formula that calls anything and is written as it is.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d ]*(?:\.\d+)?")


def is_formula(cell: str) -> bool:
    return cell.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(cell)


def neutralised(cell: str) -> str:
    """A cell as the results CSV writes it: a would-be formula as text (``is_formula``)."""
    return f"'{cell}" if is_formula(cell) else cell


def csv_cells(cells: list[str]) -> tuple[list[str], bool]:
    """The cells to write, and whether any was neutralised."""
    return [neutralised(cell) for cell in cells], any(is_formula(cell) for cell in cells)
