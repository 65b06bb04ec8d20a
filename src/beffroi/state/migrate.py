"""Move an embedded site's state files into PostgreSQL, every row, checked after.

Each DuckDB file becomes its store's schema: the schema is made by the store's own migrations,
then every table is copied in batches (Arrow, COPY), sequences set past the copied ids, and the
copy checked: the row count of every table, and the audit chain verified again where it landed,
ending at the same head. A target that already holds rows is refused: a migration never merges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from beffroi.core.errors import BeffroiError
from beffroi.state.config import PgPlace
from beffroi.state.postgres import PgStore
from beffroi.state.sql import Migrations

log = logging.getLogger(__name__)

BATCH_ROWS = 50_000


class MigrationError(BeffroiError):
    """A migration that cannot start or whose copy does not match its source."""


@dataclass(frozen=True, slots=True)
class StoreFile:
    """One store to move: its file, its schema in PostgreSQL, and the DDL that makes it."""

    what: str
    path: Path
    schema: str
    migrations: Migrations
    # Sequences that number a table's ids: (sequence, table, column).
    sequences: tuple[tuple[str, str, str], ...] = ()


@dataclass(slots=True)
class Moved:
    """What became of one store: rows per table, and what was checked."""

    what: str
    schema: str
    tables: dict[str, int] = field(default_factory=dict)
    skipped: str = ""
    checked: list[str] = field(default_factory=list)


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_type = 'BASE TABLE' ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows if r[0] != "schema_migrations"]


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()]


def _batches(con: duckdb.DuckDBPyConnection, table: str) -> Iterator[pa.Table]:
    """Yield a table's rows as Arrow tables of at most BATCH_ROWS."""
    for batch in con.sql(f'SELECT * FROM "{table}"').to_arrow_reader(BATCH_ROWS):
        yield pa.Table.from_batches([batch])


def migrate(
    stores: Sequence[StoreFile],
    url: str,
    *,
    verify: Callable[[PgPlace, Path], list[str]] | None = None,
    progress: Callable[[str, str, int], None] = lambda what, table, n: None,
) -> list[Moved]:
    """Copy every store file into its schema; check counts (and `verify`); return what moved."""
    out = []
    targets = []
    for store in stores:
        if not store.path.exists():
            out.append(Moved(store.what, store.schema, skipped=f"no file {store.path}"))
            continue
        place = PgPlace(url, store.schema)
        target = PgStore(place, store.migrations, what=store.what)
        targets.append((store, place, target))
    try:
        for store, _, target in targets:  # all checked before anything is written
            for table in _pg_tables(target):
                n = int(target.one(f'SELECT count(*) FROM "{table}"'))
                if n:
                    raise MigrationError(
                        f"{store.what}: PostgreSQL's {store.schema}.{table} already holds {n} "
                        "rows; migrate into an empty database (a migration never merges)"
                    )
        for store, place, target in targets:
            moved = Moved(store.what, store.schema)
            source = duckdb.connect(str(store.path), read_only=True)
            try:
                with target.transaction():  # a store lands whole or not at all
                    for table in _tables(source):
                        copied = 0
                        # By name: a file made by an older version may order its columns apart.
                        names = ", ".join(f'"{c}"' for c in _columns(source, table))
                        for batch in _batches(source, table):
                            target.run(
                                f"INSERT INTO {table} ({names}) SELECT {names} FROM incoming",
                                views={"incoming": batch},
                            )
                            copied += batch.num_rows
                            progress(store.what, table, copied)
                        moved.tables[table] = copied
                    for sequence, table, column in store.sequences:
                        target.run(
                            f"SELECT setval('{sequence}', "
                            f'(SELECT coalesce(max("{column}"), 0) + 1 FROM "{table}"), false)'
                        )
                for table, n in moved.tables.items():
                    landed = int(target.one(f'SELECT count(*) FROM "{table}"'))
                    if landed != n:
                        raise MigrationError(
                            f"{store.what}: {table} has {n} rows in {store.path} but {landed} "
                            f"in PostgreSQL"
                        )
                moved.checked.append(f"{sum(moved.tables.values())} rows, counts equal")
                if verify is not None:
                    moved.checked += verify(place, store.path)
            finally:
                source.close()
            out.append(moved)
    finally:
        for _, _, target in targets:
            target.close()
    return out


def _pg_tables(store: PgStore) -> list[str]:
    rows = store.rows(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
        "AND table_type = 'BASE TABLE'",
        [store.place.schema],
    )
    return [r[0] for r in rows if r[0] != "schema_migrations"]
