"""SQL both state back ends share: log filters, and the versioned migrations of a store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from beffroi.core.model import naive_utc

# Each store's schema is a list of SQL scripts: script i is version i + 1, applied once, in
# order, in one transaction with its record in `schema_migrations`. The SQL is written for both
# DuckDB and PostgreSQL (portable types, ON CONFLICT rather than INSERT OR REPLACE…).
Migrations = tuple[str, ...]

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL
)
"""


def event_filter(
    time: str,
    start: datetime | None = None,
    end: datetime | None = None,
    matching: Mapping[str, Sequence[Any]] | None = None,
) -> tuple[str, list[Any]]:
    """Return a WHERE clause and its parameters: `time` in [start, end), columns IN their lists."""
    where: list[str] = []
    params: list[Any] = []
    if start is not None:
        where.append(f"{time} >= ?")
        params.append(naive_utc(start))
    if end is not None:
        where.append(f"{time} < ?")
        params.append(naive_utc(end))
    for column, values in (matching or {}).items():
        # An empty list is no filter at all: it is how callers ask for every commune, user…
        if values:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    return " AND ".join(where) or "TRUE", params


def events_query(
    table: str,
    key: str,
    time: str,
    start: datetime | None,
    end: datetime | None,
    matching: Mapping[str, Sequence[Any]] | None,
    limit: int | None,
) -> tuple[str, list[Any]]:
    """Return the query of a log's rows in [start, end) by `key`, the newest `limit` of them."""
    where, params = event_filter(time, start, end, matching)
    sql = f"SELECT * FROM {table} WHERE {where} ORDER BY {key}"
    if limit is not None:
        sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) AS newest ORDER BY {key}"
    return sql, params


DUE_COLUMNS = "id, message_id, recipients, message, attempts"


def due_query(table: str, limit: int, shared: bool) -> str:
    """Return the query of an outbox's e-mails due, oldest first.

    Shared (PostgreSQL, a pair): the rows are claimed as they are read (`sending`), each by one
    reader only (FOR UPDATE SKIP LOCKED): a second sender, should one run, takes other rows or
    none, never the same e-mail. `release_query` gives back what a dead sender had claimed.
    """
    if not shared:
        return (
            f"SELECT {DUE_COLUMNS} FROM {table} WHERE status = 'pending' "
            f"ORDER BY id LIMIT {int(limit)}"
        )
    return (
        f"UPDATE {table} SET status = 'sending' WHERE id IN (SELECT id FROM {table} "
        f"WHERE status = 'pending' ORDER BY id LIMIT {int(limit)} FOR UPDATE SKIP LOCKED) "
        f"RETURNING {DUE_COLUMNS}"
    )


def release_query(table: str, ids: Sequence[int] | None = None) -> str:
    """Return the statement giving back to `pending` what a sender claimed and never settled
    (these rows, or all of them)."""
    among = f" AND id IN ({', '.join(str(int(i)) for i in ids)})" if ids else ""
    return f"UPDATE {table} SET status = 'pending' WHERE status = 'sending'{among}"


class EventReader:
    """The reading of a log by time that both back ends share (each has its own `frame`)."""

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Return the result of a query as a DataFrame."""
        raise NotImplementedError

    def events(
        self,
        table: str,
        key: str,
        time: str,
        start: datetime | None = None,
        end: datetime | None = None,
        matching: Mapping[str, Sequence[Any]] | None = None,
        *,
        limit: int | None = None,
        aware: Sequence[str] = (),
    ) -> pd.DataFrame:
        """Return a log's rows in [start, end) matching the lists, by `key` (the newest `limit`)."""
        sql, params = events_query(table, key, time, start, end, matching, limit)
        df = self.frame(sql, params)
        for column in aware:  # stored naive UTC; inside the program times are aware UTC
            df[column] = pd.to_datetime(df[column]).dt.tz_localize(UTC)
        return df
