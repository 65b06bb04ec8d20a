"""SQL both state back ends share: log filters, and the versioned migrations of a store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

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
