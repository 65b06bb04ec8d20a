"""The KPI engine's own DuckDB file: hourly cells, what each hour was computed from, changes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from beffroi.core.model import aware_utc, naive_utc
from beffroi.core.seams import SmallStore
from beffroi.state import open_store
from beffroi.state.config import Place

log = logging.getLogger(__name__)

SCHEMA = """
-- Additive components per scope and UTC hour; days and months are sums of them.
CREATE TABLE IF NOT EXISTS cells (
    component VARCHAR NOT NULL, scope VARCHAR NOT NULL, hour TIMESTAMP NOT NULL,
    value DOUBLE PRECISION, covered DOUBLE PRECISION, expected DOUBLE PRECISION,
    filled BOOLEAN
);
-- When each hour was computed, whether it was closed then, and a fingerprint of its inputs
-- (sample count, sum of values, tag-hours holding a NaN, alarm events) to notice late data.
CREATE TABLE IF NOT EXISTS hours (
    hour TIMESTAMP PRIMARY KEY, computed_at TIMESTAMP NOT NULL, final BOOLEAN NOT NULL,
    fp_n DOUBLE PRECISION, fp_sum DOUBLE PRECISION, fp_nan BIGINT, fp_events BIGINT
);
-- Every change of a KPI value of a closed period, with the reason.
CREATE SEQUENCE IF NOT EXISTS change_ids START 1;
CREATE TABLE IF NOT EXISTS kpi_changes (
    id BIGINT PRIMARY KEY DEFAULT nextval('change_ids'), detected_at TIMESTAMP NOT NULL,
    kpi VARCHAR NOT NULL, resolution VARCHAR NOT NULL, scope VARCHAR NOT NULL,
    period_start TIMESTAMP NOT NULL, old_value DOUBLE PRECISION,
    new_value DOUBLE PRECISION, old_coverage DOUBLE PRECISION, new_coverage DOUBLE PRECISION,
    reason VARCHAR NOT NULL
);
"""
MIGRATIONS = (SCHEMA,)
CHANGE_COLUMNS = [
    "detected_at", "kpi", "resolution", "scope", "period_start", "old_value", "new_value",
    "old_coverage", "new_coverage", "reason",
]  # fmt: skip


naive = naive_utc
aware = aware_utc


class KpiStore:
    """Cells, hour states and the change journal in one DuckDB file, safe across threads."""

    def __init__(self, where: Place | str, read_only: bool = False):
        self._db: SmallStore = open_store(where, MIGRATIONS, read_only=read_only, what="KPI store")
        self.path = self._db.path

    def replace_cells(self, start: datetime, end: datetime, cells: pd.DataFrame) -> None:
        """Replace every cell of the hours in [start, end) in one transaction."""
        with self._db.transaction():
            self._db.run(
                "DELETE FROM cells WHERE hour >= ? AND hour < ?", [naive(start), naive(end)]
            )
            if not cells.empty:
                self._db.run(
                    "INSERT INTO cells SELECT component, scope, hour, value, covered, expected, "
                    "filled FROM _cells",
                    views={"_cells": cells},
                )

    def sums(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Return components summed per scope over [start, end)."""
        return self._db.frame(
            "SELECT component, scope, sum(value) AS value, sum(covered) AS covered, "
            "sum(expected) AS expected, bool_or(filled) AS filled, count(*) AS hours "
            "FROM cells WHERE hour >= ? AND hour < ? GROUP BY component, scope",
            [naive(start), naive(end)],
        )

    def hourly(self, start: datetime, end: datetime, components: Sequence[str]) -> pd.DataFrame:
        """Return cells of some components per hour over [start, end)."""
        among = ", ".join("?" * len(components)) or "NULL"  # none asked: no row
        return self._db.frame(
            "SELECT component, scope, hour, value, covered, expected, filled FROM cells "
            f"WHERE hour >= ? AND hour < ? AND component IN ({among}) ORDER BY hour",
            [naive(start), naive(end), *components],
        )

    def hour_states(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Return the recorded state of the hours in [start, end)."""
        return self._db.frame(
            "SELECT * FROM hours WHERE hour >= ? AND hour < ? ORDER BY hour",
            [naive(start), naive(end)],
        )

    def last_hour(self) -> datetime | None:
        """Return the newest hour ever computed."""
        return aware(self._db.one("SELECT max(hour) FROM hours"))

    def mark_hours(self, rows: pd.DataFrame) -> None:
        """Record hours as computed: hour, computed_at, final, fp_n, fp_sum, fp_nan, fp_events."""
        if rows.empty:
            return
        self._db.run(
            "INSERT INTO hours SELECT hour, computed_at, final, fp_n, fp_sum, fp_nan, fp_events "
            "FROM _hours ON CONFLICT (hour) DO UPDATE SET computed_at = excluded.computed_at, "
            "final = excluded.final, fp_n = excluded.fp_n, fp_sum = excluded.fp_sum, "
            "fp_nan = excluded.fp_nan, fp_events = excluded.fp_events",
            views={"_hours": rows},
        )

    def record_changes(self, rows: pd.DataFrame) -> int:
        """Append changes of KPI values of closed periods; return how many."""
        if rows.empty:
            return 0
        self._db.run(
            f"INSERT INTO kpi_changes ({', '.join(CHANGE_COLUMNS)}) "
            f"SELECT {', '.join(CHANGE_COLUMNS)} FROM _changes",
            views={"_changes": rows[CHANGE_COLUMNS]},
        )
        return len(rows)

    def changes(self, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Return recorded changes of periods starting in [start, end), oldest first."""
        return self._db.events("kpi_changes", "id", "period_start", start, end)

    def prune(self, before: datetime) -> None:
        """Forget cells and hour states older than a time (their KPI series stay stored)."""
        with self._db.locked():
            for table in ("cells", "hours"):
                self._db.run(f"DELETE FROM {table} WHERE hour < ?", [naive(before)])

    def close(self) -> None:
        """Checkpoint and close the file."""
        self._db.close()
