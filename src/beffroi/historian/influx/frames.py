"""InfluxDB answers as frames: a series' columns, rows gathered per tag, the contract's frame."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from beffroi.historian.base import COLUMNS, empty_result
from beffroi.historian.influx.layout import NULL, Location, read_status

# A cell of an InfluxDB answer, a JSON scalar: None where the field has no value.
Cell = str | int | float | bool | None


def columns_of(series: dict) -> dict[str, np.ndarray]:
    """Return a series' columns as object arrays (None where InfluxDB sent null)."""
    rows = series["values"]
    cells = np.empty((len(rows), len(series["columns"])), dtype=object)
    for i, row in enumerate(rows):
        cells[i] = row
    return {c: cells[:, i] for i, c in enumerate(series["columns"])}


def present(column: np.ndarray) -> np.ndarray:
    """Return where a column holds a value."""
    return np.not_equal(column, NULL)


def field_column(cols: Mapping[str, np.ndarray], field: str | None) -> np.ndarray | None:
    """Return a field's column, or None when the answer has none or the tag no such field."""
    return None if field is None else cols.get(field)


def first_cell(column: np.ndarray | None) -> Cell:
    """Return a column's first non-null cell, or None."""
    if column is None:
        return None
    return next((c for c in column if c is not None), None)


def floats(column: np.ndarray | None, sel: np.ndarray) -> np.ndarray:
    """Return a column's selected cells as floats, NaN where absent."""
    n = int(sel.sum())
    if column is None:
        return np.full(n, np.nan)
    cells = column[sel]
    try:
        return np.where(present(cells), cells, np.nan).astype(np.float64)
    except (TypeError, ValueError):  # text in a numeric column (a tag without kind)
        return pd.to_numeric(pd.Series(cells), errors="coerce").to_numpy(np.float64, copy=True)


def add_samples(rows: Rows, cols: dict[str, np.ndarray], loc: Location) -> None:
    """Add one tag's samples from the columns of its series: rows where its quality is set."""
    if loc.quality not in cols:
        return
    sel = present(cols[loc.quality])
    if not sel.any():
        return
    codes = cols[loc.quality][sel].astype(np.int64)
    values: np.ndarray = floats(field_column(cols, loc.number), sel)
    if loc.text and loc.text in cols:
        cells = cols[loc.text][sel]
        is_text = np.fromiter((isinstance(c, str) for c in cells), bool, len(cells))
        if is_text.any():
            values = values.astype(object)
            values[is_text] = cells[is_text]
    values[(codes & 1).astype(bool)] = np.nan  # stored without a value
    quality = codes >> 1
    rows.add(
        loc.tag, cols["time"][sel], values, quality, read_status(cols.get(loc.status), sel, quality)
    )


class Rows:
    """Collect answer rows per tag as arrays; build one frame at the end."""

    def __init__(self) -> None:
        self._parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []

    def add(
        self,
        tag: str,
        ts: np.ndarray,
        values: np.ndarray,
        quality: np.ndarray,
        status: np.ndarray | None = None,
    ) -> None:
        """Add one tag's rows (none when `ts` is empty)."""
        if len(ts):
            self._parts.append((tag, ts, values, quality, status))

    def frame(self) -> pd.DataFrame:
        """Return tag, ts (µs), value, quality, and status when the rows have one."""
        parts = self._parts
        if not parts:
            return pd.DataFrame(columns=["tag", "ts", "value", "quality"])
        text = any(p[2].dtype == object for p in parts)
        out = pd.DataFrame(
            {
                "tag": np.repeat(
                    np.array([p[0] for p in parts], dtype=object), [len(p[1]) for p in parts]
                ),
                "ts": np.concatenate([p[1] for p in parts]).astype(np.int64),
                "value": np.concatenate([p[2].astype(object) if text else p[2] for p in parts]),
                "quality": np.concatenate([p[3] for p in parts]).astype(np.int64),
            }
        )
        if all(p[4] is not None for p in parts):
            out["status"] = np.concatenate([p[4] for p in parts]).astype(np.int64)
        return out


def contract_frame(df: pd.DataFrame, columns: list[str] = COLUMNS) -> pd.DataFrame:
    """Return the contract's columns: aware UTC ts, tag, value, int quality[, status]; sorted."""
    if df.empty:
        return empty_result(columns)
    out = df.copy()
    out["ts"] = pd.to_datetime(out["ts"].astype("int64"), unit="us", utc=True).dt.as_unit("us")
    out["quality"] = out["quality"].astype("int64")
    if out["value"].dtype == object and not out["value"].map(lambda v: type(v) is str).any():
        out["value"] = out["value"].astype("float64")
    if "status" in columns:
        out["status"] = out["status"].astype("int64")
    return out[columns].sort_values(["tag", "ts"], kind="stable").reset_index(drop=True)
