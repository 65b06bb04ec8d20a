"""Cells of the CSV files Beffroi writes, safe to open in a spreadsheet (CSV injection).

A cell whose text starts with `=`, `+`, `-`, `@`, a tab or a carriage return is read by
spreadsheet programs as a formula (`=HYPERLINK(…)` runs when clicked). OWASP's rule: such text
gets a leading apostrophe, which spreadsheets show as a plain text marker. Only text written by
people or equipment (messages, comments, names) goes through here: numbers and times are
formatted by Beffroi and cannot start a formula, and a negative number stays a number.

A text's own line breaks must stay inside its cell: a row break would start a new row whose
first cell is the rest of the text, unchecked. Python's csv writer (under pandas' `to_csv`)
quotes a cell holding a character of its line terminator: with `\n` lines, a bare `\r` goes
out unquoted, and spreadsheets break the row there. Beffroi's CSVs end lines with `CRLF`
(RFC 4180), so both are quoted.
"""

from __future__ import annotations

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The line end of every CSV Beffroi writes (`to_csv(lineterminator=CRLF)`).
CRLF = "\r\n"


def safe_cell(value: object) -> object:
    """Return text a spreadsheet would take for a formula with a leading `'`; else the value."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def safe_text(value: str) -> str:
    """Return a text cell safe for spreadsheets (see `safe_cell`)."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value
