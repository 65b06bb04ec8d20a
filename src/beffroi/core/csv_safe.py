"""Cells of the CSV files Beffroi writes, safe to open in a spreadsheet (CSV injection).

A cell whose text starts with `=`, `+`, `-`, `@`, a tab or a carriage return is read by
spreadsheet programs as a formula (`=HYPERLINK(…)` runs when clicked). OWASP's rule: such text
gets a leading apostrophe, which spreadsheets show as a plain text marker. Only text written by
people or equipment (messages, comments, names) goes through here: numbers and times are
formatted by Beffroi and cannot start a formula, and a negative number stays a number.
"""

from __future__ import annotations

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """Return text a spreadsheet would take for a formula with a leading `'`; else the value."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def safe_text(value: str) -> str:
    """Return a text cell safe for spreadsheets (see `safe_cell`)."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value
